// Package testenv starts a real API server and etcd (controller-runtime's envtest) with the
// project's CRDs installed, for integration tests.
//
// The binaries come from KUBEBUILDER_ASSETS, set by `make test` through
// hack/setup-envtest.sh, or else from the cache folder that script fills.
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// K8sVersion is the version of the control-plane binaries hack/setup-envtest.sh provides.
const K8sVersion = "1.37.2"

// Scheme knows the built-in types, the CRD types and the Hive and Task API.
var Scheme = k8sruntime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(Scheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(Scheme))
	utilruntime.Must(swarmv1alpha1.AddToScheme(Scheme))
}

// Env is a running control plane with the CRDs installed.
type Env struct {
	// Config reaches the API server as an administrator.
	Config *rest.Config
	// Client is an uncached client with Scheme.
	Client client.Client

	env *envtest.Environment
}

// Start starts etcd and the API server from $KUBEBUILDER_ASSETS (else envtest's default
// folder) and installs the CRDs from config/crd/bases.
func Start() (*Env, error) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		dir, err := envtest.SetupEnvtestDefaultBinaryAssetsDirectory()
		if err != nil {
			return nil, fmt.Errorf("finding the envtest binaries: %w", err)
		}
		assets = filepath.Join(dir, K8sVersion+"-"+runtime.GOOS+"-"+runtime.GOARCH)
	}
	return StartFrom(assets)
}

// StartFrom starts etcd and the API server from the binaries in assets and installs the CRDs
// from config/crd/bases.
func StartFrom(assets string) (*Env, error) {
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(assets, "kube-apiserver")); err != nil {
		return nil, fmt.Errorf("no kube-apiserver in %s: run `make test` or hack/setup-envtest.sh, which provide it: %w", assets, err)
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                Scheme,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting the control plane: %w", err)
	}
	// Tests create objects in bursts; the default client rate limit (QPS 5) would make them
	// measure the limiter instead of the code.
	cfg.QPS, cfg.Burst = 500, 1000
	c, err := client.New(cfg, client.Options{Scheme: Scheme})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("creating a client: %w", err), env.Stop())
	}
	return &Env{Config: cfg, Client: c, env: env}, nil
}

// ControlPlane is the running API server and etcd, to add users or find their processes.
func (e *Env) ControlPlane() *envtest.ControlPlane { return &e.env.ControlPlane }

// Stop stops the API server and etcd.
func (e *Env) Stop() error {
	if err := e.env.Stop(); err != nil {
		return fmt.Errorf("stopping the control plane: %w", err)
	}
	return nil
}

// Run is the body of a TestMain for a package of integration tests: it starts a control
// plane, stores it in *env, runs the tests and stops it. With -short the control plane is
// not started and the tests that need it skip through Require.
func Run(m *testing.M, env **Env) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	e, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	*env = e
	code := m.Run()
	if err := e.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	return code
}

// Require skips a test when no control plane runs (go test -short).
func Require(t testing.TB, env *Env) {
	t.Helper()
	if env == nil {
		t.Skip("needs a control plane; not started with -short")
	}
}

// Context returns a context cancelled when the test ends or after d.
func Context(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// Background runs run in a goroutine until the test ends or stop is called. stop cancels
// run's context, waits for it to return and reports its error, once however often it is
// called; exited is closed when run returns, also on its own.
func Background(t testing.TB, what string, run func(context.Context) error) (stop func(), exited <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		err = run(ctx)
	}()
	stop = sync.OnceFunc(func() {
		cancel()
		<-done
		if err != nil {
			t.Errorf("%s returned %v", what, err)
		}
	})
	t.Cleanup(stop)
	return stop, done
}

// ModuleRoot returns the folder of the project's go.mod.
func ModuleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("locating the module root: no caller information")
	}
	dir := filepath.Dir(file)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("locating the module root: no go.mod above " + file)
		}
		dir = parent
	}
}

// Eventually polls f every interval until it returns nil, and fails the test with f's last
// error once timeout has passed.
func Eventually(t testing.TB, timeout, interval time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not reached within %v: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}

// FreeAddr returns a local address that nothing listens on, for a server under test.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// ApplyFiles creates or updates every object of the YAML files (server-side apply, as
// `kubectl apply --server-side --force-conflicts` does), in file order.
func ApplyFiles(ctx context.Context, c client.Client, paths ...string) error {
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := reader.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("reading %s: %w", path, err)
			}
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(doc, &u.Object); err != nil {
				return fmt.Errorf("decoding %s: %w", path, err)
			}
			if len(u.Object) == 0 {
				continue
			}
			if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("hive-tests"), client.ForceOwnership); err != nil {
				return fmt.Errorf("applying %s %s from %s: %w", u.GetKind(), u.GetName(), path, err)
			}
		}
	}
	return nil
}

// WriteKubeconfig writes a kubeconfig file that reaches the API server of cfg as cfg's
// user, for processes under test (the operator, kubectl hive, Helm).
func WriteKubeconfig(cfg *rest.Config, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["test"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test"}
	kc.CurrentContext = "test"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("writing the kubeconfig %s: %w", path, err)
	}
	return nil
}

// Watch watches kinds in a namespace, narrowed by a label selector when sel is not nil, with
// one informer each calling its handler until ctx ends, and returns once they have synced,
// within a minute. The cache it returns reads the watched objects.
func Watch(ctx context.Context, cfg *rest.Config, ns string, sel labels.Selector, handlers map[client.Object]toolscache.ResourceEventHandler) (cache.Cache, error) {
	byObject := map[client.Object]cache.ByObject{}
	for obj := range handlers {
		byObject[obj] = cache.ByObject{Label: sel}
	}
	c, err := cache.New(cfg, cache.Options{Scheme: Scheme, DefaultNamespaces: map[string]cache.Config{ns: {}},
		DefaultTransform: cache.TransformStripManagedFields(), ByObject: byObject})
	for obj, h := range handlers {
		var inf cache.Informer
		if err == nil {
			inf, err = c.GetInformer(ctx, obj)
		}
		if err == nil {
			_, err = inf.AddEventHandler(h)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("watching in %s: %w", ns, err)
	}
	go func() { _ = c.Start(ctx) }()
	syncCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if !c.WaitForCacheSync(syncCtx) {
		return nil, errors.Join(fmt.Errorf("the watches of %s did not sync within a minute", ns), context.Cause(ctx))
	}
	return c, nil
}

// Build builds the command cmd/<name> of the module at root into dir and returns the
// binary's path: the suites run the operator, the agent and the plugin as the processes
// they are.
func Build(ctx context.Context, root, dir, name string) (string, error) {
	bin := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/"+name)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %w: %s", name, err, out)
	}
	return bin, nil
}
