package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"

	"github.com/aihub-dev/hive-operator/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Run(m, &env)) }

// get polls url with hc until it answers want or the deadline passes, sending token as a
// bearer token when there is one. A manager that stops (done) fails the test with its
// error rather than with an endpoint that never answers.
func get(ctx context.Context, t *testing.T, hc *http.Client, url, token string, want int, done <-chan error) string {
	t.Helper()
	var last string
	for ctx.Err() == nil {
		select {
		case err := <-done:
			t.Fatalf("the manager stopped while waiting for %s: %v", url, err)
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == want {
				return string(body)
			}
			last = fmt.Sprintf("status %d: %.200s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never answered %d: %s", url, want, last)
	return ""
}

// metricsCert writes a self-signed certificate for localhost into a new folder, as a
// mounted kubernetes.io/tls Secret would hold it, and returns the folder and a pool that
// trusts the certificate.
func metricsCert(t *testing.T) (string, *x509.CertPool) {
	t.Helper()
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey("localhost", []net.IP{net.ParseIP("127.0.0.1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		t.Fatal("no certificate in the generated PEM")
	}
	return dir, pool
}

// scraperToken makes a service account that may get /metrics, as the chart's
// metrics-reader role lets Prometheus, and returns a token of it.
func scraperToken(ctx context.Context, t *testing.T) string {
	t.Helper()
	cs := kubernetes.NewForConfigOrDie(env.Config)
	const name = "metrics-scraper"
	if _, err := cs.CoreV1().ServiceAccounts("default").Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules:      []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: "default"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts("default").CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

func TestManagerServesProbesAndMetrics(t *testing.T) {
	testenv.Require(t, env)
	probe, metrics := testenv.FreeAddr(t), testenv.FreeAddr(t)
	certDir, ca := metricsCert(t)
	args := []string{
		"--health-probe-bind-address=" + probe,
		"--metrics-bind-address=" + metrics,
		"--metrics-cert-dir=" + certDir,
		"--leader-elect=false",
		"--namespaces=default,kube-system",
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		if code := start(ctx, args, func() (*rest.Config, error) { return env.Config, nil }, io.Discard, os.Stderr); code != 0 {
			done <- fmt.Errorf("exit code %d", code)
		}
		close(done)
	}()

	wait := testenv.Context(t, 30*time.Second)
	get(wait, t, http.DefaultClient, "http://"+probe+"/healthz", "", http.StatusOK, done)
	get(wait, t, http.DefaultClient, "http://"+probe+"/readyz", "", http.StatusOK, done)
	// The scraper verifies the certificate from --metrics-cert-dir (it would refuse the
	// self-signed one the manager makes without it), and the manager asks the API server
	// who the caller is and whether it may get /metrics.
	verifying := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca, ServerName: "localhost", MinVersion: tls.VersionTLS12}}}
	get(wait, t, verifying, "https://"+metrics+"/metrics", "", http.StatusUnauthorized, done)
	if body := get(wait, t, verifying, "https://"+metrics+"/metrics", scraperToken(wait, t), http.StatusOK, done); !strings.Contains(body, "rest_client_requests_total") {
		t.Errorf("metrics lack controller-runtime's client metrics:\n%.400s", body)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("manager stopped with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("manager did not stop within 30s of cancellation")
	}
}

func TestParseFlags(t *testing.T) {
	cases := map[string]struct {
		args    []string
		wantErr string
		check   func(*options) bool
	}{
		"defaults": {check: func(o *options) bool {
			return o.qps == 300 && o.burst == 600 && o.controllers.BindConcurrency == 16 && !o.leaderElect && o.metricsSecure
		}},
		"tuned": {
			args: []string{"--namespaces=a, b", "--kube-api-qps=50", "--task-concurrency=3", "--leader-elect", "--zap-log-level=debug"},
			check: func(o *options) bool {
				return o.namespaces == "a, b" && o.qps == 50 && o.controllers.TaskConcurrency == 3 && o.leaderElect
			},
		},
		"gateways": {
			args: []string{"--gateway-service=hive-system/hive-gateway", "--gateway-load-interval=2s"},
			check: func(o *options) bool {
				g := o.controllers.Gateways
				return g.Enabled() && g.Namespace == "hive-system" && g.Service == "hive-gateway" && g.Port == "metrics" && g.Interval == 2*time.Second
			},
		},
		"no gateways":                       {check: func(o *options) bool { return !o.controllers.Gateways.Enabled() }},
		"gateway service without namespace": {args: []string{"--gateway-service=hive-gateway"}, wantErr: "must be namespace/name"},
		"gateway service of three parts":    {args: []string{"--gateway-service=a/b/c"}, wantErr: "must be namespace/name"},
		"zero gateway interval":             {args: []string{"--gateway-load-interval=0s"}, wantErr: "must be positive"},
		"unknown flag":                      {args: []string{"--no-such-flag"}, wantErr: "flag provided but not defined"},
		"stray argument":                    {args: []string{"run"}, wantErr: "every setting is a --flag"},
		"zero qps":                          {args: []string{"--kube-api-qps=0"}, wantErr: "must be positive"},
		"metrics certificate missing": {
			args:    []string{"--metrics-cert-dir=" + t.TempDir()},
			wantErr: "mount a Secret with tls.crt and tls.key there",
		},
		"lease shorter than renew": {
			args:    []string{"--leader-elect", "--leader-elect-lease-duration=5s", "--leader-elect-renew-deadline=10s"},
			wantErr: "lease-duration > --leader-elect-renew-deadline",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			o, err := parseFlags(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !tc.check(o) {
				t.Fatalf("parseFlags(%v) = %+v, %v", tc.args, o, err)
			}
		})
	}
}

// The process's exit codes without a cluster: 0 for --help, 2 for flags it cannot use (with
// the reason on stderr), 1 when there is no cluster. TestManagerServesProbesAndMetrics
// sees 0 after a clean stop; a process runs one manager (controller names are global).
func TestStartExitCodes(t *testing.T) {
	noCluster := func() (*rest.Config, error) { return nil, errors.New("no kubeconfig") }
	cases := map[string]struct {
		args       []string
		wantCode   int
		wantStderr string
		wantStdout string
	}{
		"help":        {args: []string{"--help"}, wantCode: 0},
		"version":     {args: []string{"--version"}, wantCode: 0, wantStdout: "manager devel (go"},
		"a bad flag":  {args: []string{"--kube-api-qps=0"}, wantCode: 2, wantStderr: "must be positive"},
		"an argument": {args: []string{"extra"}, wantCode: 2, wantStderr: "unexpected arguments"},
		// The reason goes to the log, which controller-runtime lets a process set only once.
		"no cluster": {args: []string{"--leader-elect=false"}, wantCode: 1},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			if code := start(t.Context(), tc.args, noCluster, &stdout, &stderr); code != tc.wantCode {
				t.Fatalf("exit code %d; want %d; stderr:\n%s", code, tc.wantCode, stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.wantStdout) || (tc.wantStdout == "" && stdout.Len() > 0) {
				t.Errorf("stdout %q, want it to contain %q", stdout.String(), tc.wantStdout)
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.wantStderr, stderr.String())
			}
		})
	}
}
