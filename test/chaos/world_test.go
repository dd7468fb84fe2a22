//go:build chaos

package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/pkg/agent"
	"github.com/aihub-dev/hive-operator/test/faultproxy"
	"github.com/aihub-dev/hive-operator/test/fleet"
	"github.com/aihub-dev/hive-operator/test/kubelet"
	"github.com/aihub-dev/hive-operator/test/kwok"
	"github.com/aihub-dev/hive-operator/test/operator"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

const (
	// ns holds the hive and its tasks; releaseNS the operators' identity and lease.
	ns        = "chaos"
	releaseNS = "hive-system"
	hiveName  = "swarm"
	// operatorUser is the identity the operators act as through the proxy: the service
	// account config/rbac binds the operator's role to, which the admission policy exempts.
	operatorUser = "system:serviceaccount:" + releaseNS + ":hive-operator"
	// slowLabel marks agent pods kwok makes Ready only after a delay, as a node pulling a
	// new image would: the rollout's new revision carries it.
	slowLabel = "chaos.aihub.dev/slow"
)

// world is the chaos suite's cluster and everything running against it.
type world struct {
	root, work string
	cluster    *kwok.Cluster
	admin      client.Client // straight to the API server, never faulted
	proxy      *faultproxy.Proxy
	kubeconfig string // the operators', through the proxy

	binary string
	opMu   sync.Mutex
	ops    []*operator.Process
	opSeq  int

	fleet   *fleet.Fleet
	kubelet *kubelet.Kubelet
	runs    *invocations
	obs     *observer
	faults  *faultLog
	logf    func(format string, args ...any)
}

func newWorld(ctx context.Context, logf func(string, ...any)) (*world, error) {
	k8sDir, kwokDir, err := kwok.DirsFromEnv("make test-chaos")
	if err != nil {
		return nil, err
	}
	root, err := testenv.ModuleRoot()
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "hive-chaos-")
	if err != nil {
		return nil, fmt.Errorf("creating a work folder: %w", err)
	}
	w := &world{root: root, work: work, runs: newInvocations(), faults: &faultLog{}, logf: logf}

	built := make(chan error, 1)
	go func() {
		var err error
		w.binary, err = operator.Build(ctx, root, work)
		built <- err
	}()
	slowReady, err := kwok.PodReadyStage("agent-ready-slowly", 3*time.Second, time.Second, map[string]string{slowLabel: "true"})
	if err != nil {
		return nil, err
	}
	start := time.Now()
	w.cluster, err = kwok.Create(ctx, kwok.Options{
		WorkDir: filepath.Join(work, "kwok"), K8sDir: k8sDir, KwokDir: kwokDir, Nodes: 3,
		// kwok makes pods Ready (the new revision's after a delay); the suite's kubelet, not
		// kwok, finishes the graceful deletion of agent pods once their agent has stopped.
		Stages:            []string{slowReady, kwok.PodDeleteStage("other-pods-delete", swarmv1alpha1.LabelHive)},
		OmitDefaultStages: []string{kwok.StagePodDelete},
	})
	if err != nil {
		return nil, err
	}
	logf("cluster %s up in %s", w.cluster.Name(), time.Since(start).Round(time.Millisecond))
	if w.admin, err = client.New(w.cluster.Config(), client.Options{Scheme: testenv.Scheme}); err != nil {
		return nil, fmt.Errorf("creating a client: %w", err)
	}
	if err := w.install(ctx); err != nil {
		return nil, err
	}
	if w.proxy, err = faultproxy.Start(w.cluster.Config()); err != nil {
		return nil, err
	}
	w.kubeconfig = filepath.Join(work, "operator.kubeconfig")
	if err := w.proxy.WriteKubeconfig(w.kubeconfig, rest.ImpersonationConfig{
		UserName: operatorUser,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + releaseNS, "system:authenticated"},
	}); err != nil {
		return nil, err
	}
	if err := <-built; err != nil {
		return nil, err
	}
	w.obs = newObserver(w.admin)
	if err := w.obs.start(ctx, w.cluster.Config()); err != nil {
		return nil, err
	}
	w.startAgents(ctx)
	return w, nil
}

// install applies what an installation of the operator holds: the CRDs, the operator's
// identity and permissions, and the agents' admission policy.
func (w *world) install(ctx context.Context) error {
	for _, name := range []string{releaseNS, ns} {
		if err := w.admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); client.IgnoreAlreadyExists(err) != nil {
			return fmt.Errorf("creating namespace %s: %w", name, err)
		}
	}
	cfg := func(parts ...string) string { return filepath.Join(append([]string{w.root, "config"}, parts...)...) }
	if err := testenv.ApplyFiles(ctx, w.admin,
		cfg("crd", "bases", "swarm.aihub.dev_hives.yaml"), cfg("crd", "bases", "swarm.aihub.dev_tasks.yaml"),
		cfg("rbac", "service_account.yaml"), cfg("rbac", "role.yaml"), cfg("rbac", "role_binding.yaml"),
		cfg("rbac", "leader_election_role.yaml"), cfg("rbac", "leader_election_role_binding.yaml"),
		cfg("admission", "policy.yaml"),
	); err != nil {
		return err
	}
	return wait(ctx, 60*time.Second, func() error {
		for _, name := range []string{"hives.swarm.aihub.dev", "tasks.swarm.aihub.dev"} {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := w.admin.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
				return err
			}
			established := false
			for _, c := range crd.Status.Conditions {
				established = established || (c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue)
			}
			if !established {
				return fmt.Errorf("CRD %s not established", name)
			}
		}
		// The admission policy acts only once the API server has compiled it.
		return w.admin.List(ctx, &swarmv1alpha1.TaskList{}, client.InNamespace(ns))
	})
}

// startAgents runs the suite's kubelet for the hive's pods, with real SDK agents as their
// containers. Agents reach the API server through the proxy as their pod's service account,
// with the pod's name in their token, so the admission policy holds them to their own
// tasks; the kubelet itself goes straight to the API server.
func (w *world) startAgents(ctx context.Context) {
	w.fleet = &fleet.Fleet{
		ConfigFor: func(pod *corev1.Pod) *rest.Config {
			cfg := w.proxy.Config(rest.ImpersonationConfig{
				UserName: fmt.Sprintf("system:serviceaccount:%s:%s", pod.Namespace, pod.Spec.ServiceAccountName),
				Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + pod.Namespace, "system:authenticated"},
				Extra:    map[string][]string{"authentication.kubernetes.io/pod-name": {pod.Name}},
			})
			cfg.QPS, cfg.Burst = 100, 200
			return cfg
		},
		Handler: w.runs.handler,
		Options: func(_ *corev1.Pod, o *agent.Options) {
			o.RunningAfter = ptr.To(300 * time.Millisecond)
			o.ShutdownGrace = 5 * time.Second
			o.StopGrace = 10 * time.Second
		},
		Logger: logr.Discard(),
	}
	w.kubelet = &kubelet.Kubelet{
		Config: w.cluster.Config(), Client: w.admin, Namespace: ns,
		Selector: labels.SelectorFromSet(labels.Set{swarmv1alpha1.LabelHive: hiveName}),
		Runtime:  w.fleet,
	}
	if err := w.kubelet.Start(ctx); err != nil {
		w.logf("starting the kubelet: %v", err)
	}
}

// startOperator starts one more operator process with the given extra flags.
func (w *world) startOperator(ctx context.Context, extra ...string) (*operator.Process, error) {
	w.opMu.Lock()
	w.opSeq++
	seq := w.opSeq
	w.opMu.Unlock()
	p, err := operator.Start(operator.Options{
		Binary: w.binary, Kubeconfig: w.kubeconfig, Namespaces: []string{ns},
		LeaderElect: true, LeaderElectionNamespace: releaseNS,
		LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: time.Second,
		QPS: 200, Burst: 400, LogLevel: "info",
		LogPath:   filepath.Join(w.work, fmt.Sprintf("operator-%02d.log", seq)),
		ExtraArgs: append([]string{"--agent-lost-grace=10s"}, extra...),
	})
	if err != nil {
		return nil, err
	}
	if _, err := p.WaitReady(ctx, time.Minute); err != nil {
		// Never leave a process running that the world does not know of.
		_ = p.Kill()
		return nil, fmt.Errorf("operator %d: %w: %s", seq, err, p.LogTail(20))
	}
	w.opMu.Lock()
	w.ops = append(w.ops, p)
	w.opMu.Unlock()
	return p, nil
}

// leader returns the operator process that holds the lease: the one whose metrics say so.
func (w *world) leader(ctx context.Context) *operator.Process {
	w.opMu.Lock()
	ops := append([]*operator.Process(nil), w.ops...)
	w.opMu.Unlock()
	for _, p := range ops {
		if p.Alive() != nil {
			continue
		}
		scrapeCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		leader, err := p.Metric(scrapeCtx, "leader_election_master_status", "")
		cancel()
		if err == nil && leader[""] == 1 {
			return p
		}
	}
	return nil
}

// stopOperators stops every operator process (SIGKILL when kill).
func (w *world) stopOperators(kill bool) {
	w.opMu.Lock()
	ops := w.ops
	w.ops = nil
	w.opMu.Unlock()
	for _, p := range ops {
		if kill {
			_ = p.Kill()
		} else {
			_ = p.Stop()
		}
	}
}

// forgetOperator drops a stopped process from the world's list.
func (w *world) forgetOperator(p *operator.Process) {
	w.opMu.Lock()
	defer w.opMu.Unlock()
	for i, q := range w.ops {
		if q == p {
			w.ops = append(w.ops[:i], w.ops[i+1:]...)
			return
		}
	}
}

func (w *world) close() {
	w.stopOperators(true)
	if w.obs != nil {
		w.obs.stop()
	}
	if w.proxy != nil {
		_ = w.proxy.Close()
	}
	if w.cluster != nil {
		if err := w.cluster.Delete(); err != nil {
			w.logf("deleting the cluster: %v", err)
		}
	}
	_ = os.RemoveAll(w.work)
}

// wait polls f every 200ms until it returns nil or timeout passes.
func wait(ctx context.Context, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not reached within %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", context.Cause(ctx), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
