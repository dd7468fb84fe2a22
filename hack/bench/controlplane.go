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

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/aihub-dev/hive-operator/test/testenv"
)

// scheme knows the built-in types, CRDs and the Hive API: the tests' scheme.
var scheme = testenv.Scheme

// Client rate limits of the bench: high enough that the API server, not the client, limits.
const (
	clientQPS   = 5000
	clientBurst = 10000
)

// controlPlane is a kube-apiserver and etcd with the CRDs installed, reached as a
// system:masters user whose kubeconfig the operator uses.
type controlPlane struct {
	env        *testenv.Env
	config     *rest.Config
	client     client.WithWatch
	kubeconfig string
	// pids of the API server and etcd, for their CPU time.
	apiserverPID, etcdPID int
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

// startControlPlane starts etcd and the API server from assets and installs the CRDs, as the
// tests do.
func startControlPlane(assets, workDir string) (*controlPlane, error) {
	env, err := testenv.StartFrom(assets)
	if err != nil {
		return nil, err
	}
	cp := &controlPlane{env: env}
	if err := cp.connect(workDir); err != nil {
		return nil, errors.Join(err, cp.stop())
	}
	return cp, nil
}

func (cp *controlPlane) connect(workDir string) error {
	user, err := cp.env.ControlPlane().AddUser(envtest.User{Name: "bench", Groups: []string{"system:masters"}}, nil)
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
	api := cp.env.ControlPlane().APIServer
	if pid, ok := findProcess("kube-apiserver", "--secure-port="+api.Port); ok {
		cp.apiserverPID = pid
	}
	if etcd := cp.env.ControlPlane().Etcd; etcd != nil && etcd.URL != nil {
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
	return cp.env.Stop()
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
