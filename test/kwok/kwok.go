// Package kwok creates and drives a local simulated cluster for the end-to-end tests, the
// chaos tests and the benchmark: kwokctl's binary runtime runs a real etcd, kube-apiserver,
// kube-controller-manager (garbage collector, disruption controller) and kube-scheduler as
// local processes, and kwok plays the nodes and their kubelets by moving pods through their
// status phases (no container runs). One helper, so every suite creates, waits for, restarts
// and deletes its cluster the same way.
//
// What kwok does with pods is set by Stages (kwok.x-k8s.io/v1alpha1): by default a scheduled
// pod becomes Running and Ready at once, a Job's pod Succeeded at once, and a pod being
// deleted gracefully is deleted at once. Options.Stages and Options.OmitDefaultStages change
// that, e.g. with PodReadyStage (pods become Ready only after a delay) and without
// StagePodDelete (a gracefully deleted pod stays Terminating until a test's own kubelet
// deletes it with grace period 0, once its agent has stopped, as a real kubelet would).
//
// For chaos tests, RestartAPIServer, StopAPIServer and StartAPIServer take the
// kube-apiserver away and bring it back with the same etcd data, port and certificates while
// the rest of the cluster runs on, and PID finds each component's process.
//
// The binaries come from `hack/setup-envtest.sh cluster` (K8sDir) and
// `hack/setup-envtest.sh print-kwok-dir` (KwokDir); the make targets pass both to the suites
// as E2E_K8S_DIR and E2E_KWOK_DIR (DirsFromEnv).
package kwok

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// DirsFromEnv returns the folders of the cluster's binaries and of kwok from E2E_K8S_DIR and
// E2E_KWOK_DIR, or an error naming the make target that sets them.
func DirsFromEnv(target string) (k8sDir, kwokDir string, err error) {
	k8sDir, kwokDir = os.Getenv("E2E_K8S_DIR"), os.Getenv("E2E_KWOK_DIR")
	if k8sDir == "" || kwokDir == "" {
		return "", "", fmt.Errorf("E2E_K8S_DIR and E2E_KWOK_DIR are unset: run `%s`, which provides the binaries (hack/setup-envtest.sh cluster and print-kwok-dir)", target)
	}
	return k8sDir, kwokDir, nil
}

// Components of a kwokctl binary-runtime cluster, as PID and the pid files name them.
const (
	Etcd                  = "etcd"
	KubeAPIServer         = "kube-apiserver"
	KubeControllerManager = "kube-controller-manager"
	KubeScheduler         = "kube-scheduler"
	KwokController        = "kwok-controller"
)

// Options say how to create a cluster.
type Options struct {
	// Name of the cluster; default "hive-<pid>-<n>".
	Name string
	// WorkDir is kwokctl's home (KWOK_WORKDIR): the cluster's files go to
	// WorkDir/clusters/<name>, the kubeconfig to WorkDir/<name>.kubeconfig. Default: a new
	// temporary folder that Delete removes.
	WorkDir string
	// K8sDir holds etcd, kube-apiserver, kube-controller-manager and kube-scheduler.
	K8sDir string
	// KwokDir holds kwok and kwokctl.
	KwokDir string
	// Nodes is how many fake nodes to add; Create waits until they are Ready.
	Nodes int
	// Stages are extra kwok Stage documents (YAML), e.g. from PodReadyStage or
	// PodDeleteStage, added to the default stages not omitted.
	Stages []string
	// OmitDefaultStages names default stages to leave out (StagePodDelete, or
	// DefaultPodStages for all the pod stages).
	OmitDefaultStages []string
	// ExtraArgs are more arguments to `kwokctl create cluster`, e.g.
	// "--extra-args=kube-apiserver=v=2". Create already passes --extra-args turning off the
	// leader election of the controller manager and the scheduler.
	ExtraArgs []string
	// ReadyTimeout bounds the wait for the API server, the nodes and the default service
	// account after kwokctl has started the cluster. Default 2 minutes.
	ReadyTimeout time.Duration
}

// Cluster is a running kwokctl cluster.
type Cluster struct {
	name, workDir, kwokctl string
	ownWorkDir             bool
	kubeconfig             string
	config                 *rest.Config
	clientset              kubernetes.Interface

	mu        sync.Mutex
	apiserver *process // the kube-apiserver this package started, if it restarted it
	stopped   *command // the kube-apiserver's command while it is stopped
	deleted   bool
}

var clusterSeq struct {
	sync.Mutex
	n int
}

// Create creates a cluster with kwokctl's binary runtime and waits until its API server is
// ready, its nodes are Ready and the default service account exists (pods need it). On
// failure it deletes what it created.
func Create(ctx context.Context, o Options) (*Cluster, error) {
	if o.K8sDir == "" || o.KwokDir == "" {
		return nil, errors.New("creating a kwok cluster: K8sDir and KwokDir are required (hack/setup-envtest.sh cluster and print-kwok-dir print them)")
	}
	binaries := map[string]string{
		"--etcd-binary":                    filepath.Join(o.K8sDir, "etcd"),
		"--kube-apiserver-binary":          filepath.Join(o.K8sDir, "kube-apiserver"),
		"--kube-controller-manager-binary": filepath.Join(o.K8sDir, "kube-controller-manager"),
		"--kube-scheduler-binary":          filepath.Join(o.K8sDir, "kube-scheduler"),
		"--kwok-controller-binary":         filepath.Join(o.KwokDir, "kwok"),
	}
	for _, bin := range append([]string{filepath.Join(o.KwokDir, "kwokctl")}, sortedValues(binaries)...) {
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("creating a kwok cluster: run hack/setup-envtest.sh cluster, which provides the binaries: %w", err)
		}
	}
	config, custom, err := stagesConfig(o.Stages, o.OmitDefaultStages)
	if err != nil {
		return nil, err
	}

	c := &Cluster{name: o.Name, workDir: o.WorkDir, kwokctl: filepath.Join(o.KwokDir, "kwokctl")}
	if c.name == "" {
		clusterSeq.Lock()
		clusterSeq.n++
		c.name = fmt.Sprintf("hive-%d-%d", os.Getpid(), clusterSeq.n)
		clusterSeq.Unlock()
	}
	if c.workDir == "" {
		if c.workDir, err = os.MkdirTemp("", "hive-kwok-"); err != nil {
			return nil, fmt.Errorf("creating a work folder for kwok: %w", err)
		}
		c.ownWorkDir = true
	} else if err := os.MkdirAll(c.workDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the kwok work folder: %w", err)
	}
	if c.workDir, err = filepath.Abs(c.workDir); err != nil {
		return nil, c.failed(fmt.Errorf("resolving the kwok work folder: %w", err))
	}
	c.kubeconfig = filepath.Join(c.workDir, c.name+".kubeconfig")

	// Hold the machine-wide creation lock until every component listens: see lockCreation.
	unlock, err := lockCreation()
	if err != nil {
		return nil, c.failed(err)
	}
	defer unlock()

	args := []string{"create", "cluster", "--runtime", "binary",
		// kwokctl adds a context to this kubeconfig; by default it is the user's
		// ($KUBECONFIG or ~/.kube/config), which a test must not touch.
		"--kubeconfig", c.scratchKubeconfig()}
	for _, flag := range sortedKeys(binaries) {
		args = append(args, flag, binaries[flag])
	}
	if custom {
		path := c.stagesPath()
		if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
			return nil, c.failed(fmt.Errorf("writing the kwok stages: %w", err))
		}
		// --config takes kwok configuration documents; kwokctl copies the Stages among them
		// into the cluster's kwok.yaml, which its kwok controller loads.
		args = append(args, "--config", path)
	}
	// One controller manager and one scheduler need no leader election, and with it they
	// exit once the API server has been away longer than their renew deadline (10 s), which
	// StopAPIServer may well do. These come first: kwokctl v0.8.0 indexes repeated
	// --extra-args of one component wrongly when another component's come before.
	args = append(args,
		"--extra-args", KubeControllerManager+"=leader-elect=false",
		"--extra-args", KubeScheduler+"=leader-elect=false")
	args = append(args, o.ExtraArgs...)
	if _, err := c.Kwokctl(ctx, args...); err != nil {
		return nil, c.failed(err)
	}
	kubeconfig, err := c.Kwokctl(ctx, "get", "kubeconfig")
	if err != nil {
		return nil, c.failed(err)
	}
	if err := os.WriteFile(c.kubeconfig, []byte(kubeconfig), 0o600); err != nil {
		return nil, c.failed(fmt.Errorf("writing the kubeconfig: %w", err))
	}
	if c.config, err = clientcmd.RESTConfigFromKubeConfig([]byte(kubeconfig)); err != nil {
		return nil, c.failed(fmt.Errorf("loading the kubeconfig of kwok cluster %s: %w", c.name, err))
	}
	// Tests create objects in bursts: the default client rate limit (QPS 5) would make them
	// measure the limiter.
	c.config.QPS, c.config.Burst = 500, 1000
	if c.clientset, err = kubernetes.NewForConfig(c.config); err != nil {
		return nil, c.failed(fmt.Errorf("creating a client for kwok cluster %s: %w", c.name, err))
	}
	if o.Nodes > 0 {
		if err := c.ScaleNodes(ctx, o.Nodes); err != nil {
			return nil, c.failed(err)
		}
	}
	timeout := o.ReadyTimeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	if err := c.waitUsable(ctx, o.Nodes, timeout); err != nil {
		return nil, c.failed(err)
	}
	return c, nil
}

// lockCreation takes an exclusive lock on a file shared by every process of this machine,
// and returns the function that releases it. kwokctl picks a cluster's ports by probing
// downwards from 32767 in each new process, so two clusters created at the same time (the
// e2e and kwok packages run in parallel under `go test`) pick the same ports, and the second
// cluster's components fail to listen or talk to the first's. Once a cluster is usable its
// ports are taken, and the next kwokctl's probe skips them.
func lockCreation() (unlock func(), err error) {
	path := filepath.Join(os.TempDir(), "hive-kwok-create.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600) //nolint:gosec // a fixed name in the temporary folder
	if err != nil {
		return nil, fmt.Errorf("opening the kwok creation lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return nil, errors.Join(fmt.Errorf("taking the kwok creation lock %s: %w", path, err), f.Close())
	}
	// Closing the file releases the lock, also when the process dies holding it.
	return func() { _ = f.Close() }, nil
}

// failed deletes what Create made and returns err with any error of the deletion.
func (c *Cluster) failed(err error) error {
	return errors.Join(err, c.Delete())
}

// Name is the cluster's name.
func (c *Cluster) Name() string { return c.name }

// Dir is the cluster's folder (pids, logs, pki, etcd data, kwok.yaml).
func (c *Cluster) Dir() string { return filepath.Join(c.workDir, "clusters", c.name) }

// Kubeconfig is the path of an administrator's kubeconfig of the cluster.
func (c *Cluster) Kubeconfig() string { return c.kubeconfig }

// Config returns a copy of the administrator's client configuration (QPS 500, burst 1000).
func (c *Cluster) Config() *rest.Config { return rest.CopyConfig(c.config) }

// logPath is the log file of a component of the cluster.
func (c *Cluster) logPath(component string) string {
	return filepath.Join(c.Dir(), "logs", component+".log")
}

// stagesPath is the kwokctl configuration with the stages, when they are not the defaults.
func (c *Cluster) stagesPath() string { return filepath.Join(c.workDir, c.name+"-stages.yaml") }

// scratchKubeconfig is the kubeconfig kwokctl may edit on create and delete.
func (c *Cluster) scratchKubeconfig() string {
	return filepath.Join(c.workDir, c.name+".kwokctl.kubeconfig")
}

// Kwokctl runs kwokctl with args on this cluster (with --name and KWOK_WORKDIR) and
// returns its standard output.
func (c *Cluster) Kwokctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.kwokctl, append([]string{"--name", c.name}, args...)...) //nolint:gosec // the kwokctl of Options.KwokDir
	cmd.Env = append(os.Environ(), "KWOK_WORKDIR="+c.workDir)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("kwokctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

// ScaleNodes sets the number of fake nodes (kwokctl scale node). It does not wait for new
// nodes to be Ready.
func (c *Cluster) ScaleNodes(ctx context.Context, n int) error {
	_, err := c.Kwokctl(ctx, "scale", "node", "--replicas", strconv.Itoa(n))
	return err
}

// waitUsable waits until the API server is ready, nodes nodes are Ready and the default
// service account exists.
func (c *Cluster) waitUsable(ctx context.Context, nodes int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := c.usable(ctx, nodes)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kwok cluster %s not usable within %s: %w; the kwok controller's log: %s%s",
				c.name, timeout, err, c.logPath(KwokController), logTail(c.logPath(KwokController)))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *Cluster) usable(ctx context.Context, nodes int) error {
	if err := c.ready(ctx); err != nil {
		return err
	}
	list, err := c.clientset.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing nodes: %w", err)
	}
	ready := 0
	for _, n := range list.Items {
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				ready++
			}
		}
	}
	if ready < nodes {
		return fmt.Errorf("%d of %d nodes ready", ready, nodes)
	}
	if _, err := c.clientset.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{}); err != nil {
		return fmt.Errorf("the default service account: %w", err)
	}
	return nil
}

// ready asks the API server's /readyz.
func (c *Cluster) ready(ctx context.Context) error {
	body, err := c.clientset.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("the API server is not ready: %w: %s", err, bytes.TrimSpace(body))
	}
	return nil
}

// WaitAPIServer waits until the API server answers /readyz, or timeout passes.
func (c *Cluster) WaitAPIServer(ctx context.Context, timeout time.Duration) error {
	if err := c.waitReady(ctx, timeout, nil); err != nil {
		return fmt.Errorf("kwok cluster %s: %w", c.name, err)
	}
	return nil
}

// errExited says the process waited for exited first.
var errExited = errors.New("the process exited")

// waitReady polls /readyz until it answers, timeout passes, or exited (if not nil) closes.
func (c *Cluster) waitReady(ctx context.Context, timeout time.Duration, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := c.ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return errors.Join(err, context.Cause(ctx))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Delete deletes the cluster (its processes and files), and the work folder if Create made
// it, else the files Create put there. It may be called more than once.
func (c *Cluster) Delete() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.deleted {
		return nil
	}
	c.deleted = true
	var errs []error
	if _, err := os.Stat(c.Dir()); err == nil {
		// kwokctl kills the processes of the pid files, the kube-apiserver this package
		// restarted included (its pid is written there).
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := c.Kwokctl(ctx, "delete", "cluster", "--kubeconfig", c.scratchKubeconfig()); err != nil {
			errs = append(errs, err)
		}
	}
	if c.apiserver != nil {
		c.apiserver.waitExit(10 * time.Second)
	}
	if c.ownWorkDir {
		if err := os.RemoveAll(c.workDir); err != nil {
			errs = append(errs, fmt.Errorf("removing the kwok work folder: %w", err))
		}
	} else {
		for _, path := range []string{c.kubeconfig, c.scratchKubeconfig(), c.stagesPath()} {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("removing %s: %w", path, err))
			}
		}
	}
	return errors.Join(errs...)
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

func sortedValues(m map[string]string) []string {
	var out []string
	for _, k := range sortedKeys(m) {
		out = append(out, m[k])
	}
	return out
}
