package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// setIdentity sets the environment the operator injects into an agent pod, and a
// kubeconfig naming server, so that no test reads the developer's own.
func setIdentity(t *testing.T, concurrency, server string) {
	t.Helper()
	t.Setenv(swarmv1alpha1.EnvPodName, "echo-7x2kq")
	t.Setenv(swarmv1alpha1.EnvPodNamespace, "team-a")
	t.Setenv(swarmv1alpha1.EnvHiveName, "echo")
	t.Setenv(swarmv1alpha1.EnvAgentConcurrency, concurrency)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	content := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "` + server + `"}}]
users: [{name: u, user: {token: t0ken}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`
	if err := os.WriteFile(kubeconfig, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", kubeconfig)
}

// settings is what defaults decides, in comparable form.
type settings struct {
	PodName, Namespace, Hive, Host, HealthAddr string
	Concurrency                                int
	ServingAddr                                string
	ServingConcurrency                         int
	ShutdownGrace, StopGrace                   time.Duration
	RunningAfter                               *time.Duration
	HasClient                                  bool
}

func settingsOf(o *Options) settings {
	s := settings{
		PodName: o.PodName, Namespace: o.Namespace, Hive: o.Hive, HealthAddr: o.HealthAddr,
		Concurrency: o.Concurrency, ServingAddr: o.ServingAddr, ServingConcurrency: o.ServingConcurrency, RunningAfter: o.RunningAfter, ShutdownGrace: o.ShutdownGrace, StopGrace: o.StopGrace,
		HasClient: o.Client != nil,
	}
	if o.Config != nil {
		s.Host = o.Config.Host
	}
	return s
}

func TestOptionsComeFromTheEnvironmentTheOperatorInjects(t *testing.T) {
	fromEnv := settings{
		PodName: "echo-7x2kq", Namespace: "team-a", Hive: "echo", Host: "https://hive.example:6443", HealthAddr: ":8080",
		Concurrency: 3, ServingConcurrency: 1, RunningAfter: ptr.To(DefaultRunningAfter), ShutdownGrace: 20 * time.Second, StopGrace: 30 * time.Second, HasClient: true,
	}
	cases := map[string]struct {
		concurrency string
		serving     []string // AGENT_SERVING_PORT and AGENT_SERVING_CONCURRENCY
		opts        Options
		want        func(settings) settings
	}{
		"everything from the environment": {concurrency: "3", want: func(s settings) settings { return s }},
		"serving from the environment": {concurrency: "3", serving: []string{"8081", "4"}, want: func(s settings) settings {
			s.ServingAddr, s.ServingConcurrency = ":8081", 4
			return s
		}},
		"an unreadable serving concurrency is one slot": {concurrency: "3", serving: []string{"8081", "many"}, want: func(s settings) settings {
			s.ServingAddr = ":8081"
			return s
		}},
		"an unreadable concurrency is one slot": {concurrency: "four", want: func(s settings) settings {
			s.Concurrency = 1
			return s
		}},
		"a concurrency below one is one slot": {concurrency: "0", want: func(s settings) settings {
			s.Concurrency = 1
			return s
		}},
		"options set win over the environment": {
			concurrency: "3",
			opts: Options{
				PodName: "local", Namespace: "dev", Hive: "mine", Concurrency: 8, Config: &rest.Config{Host: "https://other:6443"},
				RunningAfter: ptr.To[time.Duration](0), ShutdownGrace: time.Minute, StopGrace: 2 * time.Minute, HealthAddr: "0",
				ServingAddr: "127.0.0.1:9000", ServingConcurrency: 16,
			},
			serving: []string{"8081", "4"},
			want: func(settings) settings {
				return settings{
					PodName: "local", Namespace: "dev", Hive: "mine", Host: "https://other:6443", HealthAddr: "0",
					Concurrency: 8, ServingAddr: "127.0.0.1:9000", ServingConcurrency: 16, RunningAfter: ptr.To[time.Duration](0), ShutdownGrace: time.Minute, StopGrace: 2 * time.Minute, HasClient: true,
				}
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			setIdentity(t, tc.concurrency, "https://hive.example:6443")
			if tc.serving != nil {
				t.Setenv(swarmv1alpha1.EnvServingPort, tc.serving[0])
				t.Setenv(swarmv1alpha1.EnvServingConcurrency, tc.serving[1])
			}
			o := tc.opts
			if err := o.defaults(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want(fromEnv), settingsOf(&o)); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOptionsReportWhatTheyCannotSetUp(t *testing.T) {
	cases := map[string]struct {
		kubeconfig string
		opts       Options
		want       string
	}{
		"no API server anywhere": {kubeconfig: filepath.Join(t.TempDir(), "missing"), want: "agent: finding the API server"},
		"credentials that do not load": {
			opts: Options{Config: &rest.Config{Host: "https://hive.example:6443", TLSClientConfig: rest.TLSClientConfig{CAData: []byte("not a certificate")}}},
			want: "agent: creating a client",
		},
		"requests and health checks on one port": {
			opts: Options{HealthAddr: ":8081", ServingAddr: ":8081"},
			want: "agent: requests and health checks cannot both be served on :8081: give spec.serving.port another port",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			setIdentity(t, "1", "https://hive.example:6443")
			if tc.kubeconfig != "" {
				t.Setenv("KUBECONFIG", tc.kubeconfig)
			}
			o := tc.opts
			err := o.defaults()
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("defaults() = %v, want an error starting %q", err, tc.want)
			}
		})
	}
}

func TestAClientGivenInTheOptionsIsTheOneUsed(t *testing.T) {
	setIdentity(t, "1", "https://hive.example:6443")
	// Credentials no client could be built from: the given client makes it unnecessary.
	c := fake.NewClientBuilder().WithScheme(scheme).Build()
	o := Options{Client: c, Config: &rest.Config{Host: "https://hive.example:6443", TLSClientConfig: rest.TLSClientConfig{CAData: []byte("not a certificate")}}}
	if err := o.defaults(); err != nil {
		t.Fatal(err)
	}
	if o.Client != c {
		t.Error("defaults replaced the client the options gave")
	}
}
