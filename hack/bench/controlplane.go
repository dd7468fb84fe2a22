package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// scheme knows the built-in types, CRDs and the Hive API.
var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(scheme))
	utilruntime.Must(swarmv1alpha1.AddToScheme(scheme))
}

// Client rate limits of the bench: high enough that the API server, not the client, limits.
const (
	clientQPS   = 5000
	clientBurst = 10000
)

// controlPlane is a kube-apiserver and etcd with the CRDs installed, reached as a
// system:masters user whose kubeconfig the operator uses.
type controlPlane struct {
	env        *envtest.Environment
	config     *rest.Config
	client     client.WithWatch
	kubeconfig string
	// pids of the API server and etcd, for their CPU time.
	apiserverPID, etcdPID int
}

// moduleRoot returns the folder of the project's go.mod, from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the working directory: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/aihub-dev/hive-operator\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run the benchmark from the hive-operator repository (no go.mod of github.com/aihub-dev/hive-operator above the working directory)")
		}
		dir = parent
	}
}

// setupEnvtest runs hack/setup-envtest.sh with an argument and returns the last line it
// prints.
func setupEnvtest(ctx context.Context, root, arg string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "setup-envtest.sh"), arg)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/setup-envtest.sh %s: %w: %s", arg, err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	if last == "" {
		return "", fmt.Errorf("hack/setup-envtest.sh %s printed no folder", arg)
	}
	return last, nil
}

// startControlPlane starts etcd and the API server from assets and installs the CRDs.
func startControlPlane(root, assets, workDir string) (*controlPlane, error) {
	if _, err := os.Stat(filepath.Join(assets, "kube-apiserver")); err != nil {
		return nil, fmt.Errorf("no kube-apiserver in %s: %w", assets, err)
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}
	if _, err := env.Start(); err != nil {
		return nil, fmt.Errorf("starting the control plane: %w", err)
	}
	cp := &controlPlane{env: env}
	if err := cp.connect(workDir); err != nil {
		return nil, errors.Join(err, cp.stop())
	}
	return cp, nil
}

func (cp *controlPlane) connect(workDir string) error {
	user, err := cp.env.ControlPlane.AddUser(envtest.User{Name: "bench", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("adding the bench user: %w", err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return fmt.Errorf("writing the kubeconfig: %w", err)
	}
	cp.kubeconfig = filepath.Join(workDir, "kubeconfig")
	if err := os.WriteFile(cp.kubeconfig, kubeconfig, 0o600); err != nil {
		return fmt.Errorf("writing the kubeconfig: %w", err)
	}
	cp.config = rest.CopyConfig(user.Config())
	cp.config.QPS, cp.config.Burst = clientQPS, clientBurst
	if cp.client, err = client.NewWithWatch(cp.config, client.Options{Scheme: scheme}); err != nil {
		return fmt.Errorf("creating a client: %w", err)
	}
	api := cp.env.ControlPlane.APIServer
	if pid, ok := findProcess("kube-apiserver", "--secure-port="+api.Port); ok {
		cp.apiserverPID = pid
	}
	if etcd := cp.env.ControlPlane.Etcd; etcd != nil && etcd.URL != nil {
		if pid, ok := findProcess("etcd", "--listen-client-urls="+etcd.URL.String()); ok {
			cp.etcdPID = pid
		}
	}
	return nil
}

func (cp *controlPlane) stop() error {
	if cp == nil || cp.env == nil {
		return nil
	}
	if err := cp.env.Stop(); err != nil {
		return fmt.Errorf("stopping the control plane: %w", err)
	}
	return nil
}

// serverVersion returns the API server's version.
func serverVersion(cfg *rest.Config) string {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return "unknown"
	}
	v, err := dc.ServerVersion()
	if err != nil {
		return "unknown"
	}
	return v.GitVersion
}
