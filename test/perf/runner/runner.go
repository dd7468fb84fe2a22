// Package runner runs the benchmark's phases on real control planes: envtest's API server
// and etcd for the bursts, the open-loop rates, the agent sweep and the stored tasks, then a
// kwok cluster for the baseline. The operator runs as its own process (test/operator); the
// shared test support plays the kubelet and the agents' containers (test/kubelet,
// test/fleet). Whatever Run starts is stopped before it returns, also when interrupted.
package runner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/lifecycle"
	"github.com/aihub-dev/hive-operator/internal/statuspatch"
	"github.com/aihub-dev/hive-operator/test/agentproc"
	"github.com/aihub-dev/hive-operator/test/kwok"
	"github.com/aihub-dev/hive-operator/test/operator"
	"github.com/aihub-dev/hive-operator/test/perf/config"
	"github.com/aihub-dev/hive-operator/test/perf/generator"
	"github.com/aihub-dev/hive-operator/test/perf/recorder"
	"github.com/aihub-dev/hive-operator/test/perf/results"
	"github.com/aihub-dev/hive-operator/test/perf/scraper"
	"github.com/aihub-dev/hive-operator/test/perf/stats"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

// Options say what to run. The binaries come from the environment, as the tests' do
// (KUBEBUILDER_ASSETS, E2E_K8S_DIR and E2E_KWOK_DIR); make bench sets them. Keep keeps the
// work folder (kubeconfig, operator logs); Pprof serves the operator's profiles.
type Options struct {
	Workload    config.Workload
	Keep, Pprof bool
	Logf        func(format string, args ...any)
}

type runner struct {
	Options
	res                    *results.Results
	root, workDir          string
	operatorBinary         string
	agentBinary            string
	clusterAssets, kwokDir string
	epoch                  time.Time
}

// cluster is an API server the benchmark drives, envtest's or kwok's, with the pids of its
// processes metered for CPU (apiserver, etcd) and etcd's metrics URL, when known.
type cluster struct {
	config                  *rest.Config
	client                  client.Client
	kubeconfig, etcdMetrics string
	pids                    map[string]int
}

// Run runs every phase and records what it measured in res, also when a phase fails.
func Run(ctx context.Context, o Options, res *results.Results) (err error) {
	r := &runner{Options: o, res: res, epoch: time.Now()}
	if r.root, err = testenv.ModuleRoot(); err != nil {
		return err
	}
	if r.workDir, err = os.MkdirTemp("", "hive-bench-"); err != nil {
		return fmt.Errorf("creating a work folder: %w", err)
	}
	defer func() {
		if r.Keep {
			r.Logf("work folder kept: %s", r.workDir)
		} else {
			_ = os.RemoveAll(r.workDir)
		}
	}()
	built := make(chan error, 1)
	go func() {
		var err error
		if r.operatorBinary, err = operator.Build(ctx, r.root, r.workDir); err == nil && r.Workload.Steady.Duration.Duration > 0 {
			r.agentBinary, err = agentproc.Build(ctx, r.root, r.workDir)
		}
		built <- err
	}()
	jobs := r.Workload.Baseline.Jobs > 0
	if jobs {
		if r.clusterAssets, r.kwokDir, err = kwok.DirsFromEnv("make bench"); err != nil {
			return err
		}
		res.Machine.KwokVersion = scraper.ToolVersion(filepath.Join(r.kwokDir, "kwokctl"))
	}
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	stop := sync.OnceValue(env.Stop)
	defer func() { _ = stop() }()
	cl, err := connect(env, r.workDir)
	if err != nil {
		return err
	}
	res.Machine.KubernetesVersion = "unknown"
	if v, err := discovery.NewDiscoveryClientForConfigOrDie(cl.config).ServerVersion(); err == nil {
		res.Machine.KubernetesVersion = v.GitVersion
	}
	if err := <-built; err != nil {
		return err
	}
	if err := r.envtestPhases(ctx, cl); err != nil {
		return err
	}
	// The control plane stops before the kwok cluster runs: they share the cores.
	if err := stop(); err != nil || !jobs {
		return err
	}
	return r.baseline(ctx)
}

// connect writes the administrator's kubeconfig of envtest's control plane, which the
// operator uses, and finds its processes.
func connect(env *testenv.Env, workDir string) (*cluster, error) {
	cl := &cluster{kubeconfig: filepath.Join(workDir, "kubeconfig"), pids: map[string]int{}}
	if err := testenv.WriteKubeconfig(env.Config, cl.kubeconfig); err != nil {
		return nil, err
	}
	var err error
	if cl.config, cl.client, err = newClient(env.Config); err != nil {
		return nil, err
	}
	cp := env.ControlPlane()
	if pid, ok := scraper.FindProcess("kube-apiserver", "--secure-port="+cp.APIServer.Port); ok {
		cl.pids["apiserver"] = pid
	}
	if cp.Etcd != nil && cp.Etcd.URL != nil {
		if pid, ok := scraper.FindProcess("etcd", "--listen-client-urls="+cp.Etcd.URL.String()); ok {
			cl.pids["etcd"] = pid
		}
		cl.etcdMetrics = cp.Etcd.URL.JoinPath("metrics").String()
	}
	return cl, nil
}

// newClient returns a client whose rate limits are high enough that the API server, not
// the client, limits.
func newClient(cfg *rest.Config) (*rest.Config, client.Client, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 5000, 10000
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		return nil, nil, fmt.Errorf("creating a client: %w", err)
	}
	return cfg, c, nil
}

// envtestPhases runs the bursts and the rates with bursts.agents agents, the rest of the
// agent sweep, the steady run, then the stored tasks. The watches they start end with them.
func (r *runner) envtestPhases(ctx context.Context, cl *cluster) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := r.Workload
	if err := createNamespace(ctx, cl.client, ceilingNS); err != nil {
		return err
	}
	if _, err := recorder.Start(ctx, cl.config, ceilingNS, r.epoch); err != nil {
		return err
	}
	// The agent sweep's burst with bursts.agents agents runs with the task-count sweep.
	sizes := slices.Clone(w.Bursts.Tasks)
	if slices.Contains(w.AgentSweep.Agents, w.Bursts.Agents) && !slices.Contains(sizes, w.AgentSweep.Tasks) {
		sizes = append(sizes, w.AgentSweep.Tasks)
	}
	slices.Sort(sizes)
	var ceiling *results.Ceiling
	err := r.withWorld(ctx, cl, w.Bursts.Agents, func(wd *world) error {
		var err error
		for _, n := range sizes {
			if ceiling, err = r.burst(ctx, cl, wd, n); err != nil {
				return err
			}
		}
		for _, pct := range w.OpenLoop.RatePercents {
			if err := r.openLoop(ctx, wd, pct, ceiling); err != nil {
				return err
			}
		}
		return nil
	})
	for _, agents := range w.AgentSweep.Agents {
		if err == nil && agents != w.Bursts.Agents {
			err = r.withWorld(ctx, cl, agents, func(wd *world) error {
				_, err := r.burst(ctx, cl, wd, w.AgentSweep.Tasks)
				return err
			})
		}
	}
	if err == nil && w.Steady.Duration.Duration > 0 {
		err = r.steady(ctx, cl, ceiling)
	}
	if err == nil && w.Stored.Tasks > 0 {
		r.res.Stored, err = r.stored(ctx, cl, "bench-stored", w.Stored.Tasks, false)
	}
	if err == nil && w.Stored.FinishedTasks > 0 {
		r.res.Finished, err = r.stored(ctx, cl, "bench-finished", w.Stored.FinishedTasks, true)
	}
	return err
}

// withWorld sets up a world of n agents, runs f in it and tears it down.
func (r *runner) withWorld(ctx context.Context, cl *cluster, agents int, f func(*world) error) error {
	wd, err := r.newWorld(ctx, cl, worldSpec{ns: fmt.Sprintf("bench-a%d", agents), hive: "bench", agents: agents, markReady: true})
	if err != nil {
		return err
	}
	defer wd.close()
	return f(wd)
}

// burst runs the ceiling of n tasks, then a burst of n tasks through the operator, and
// returns the ceiling.
func (r *runner) burst(ctx context.Context, cl *cluster, wd *world, n int) (*results.Ceiling, error) {
	ceiling, err := r.ceiling(ctx, cl.client, wd.meter, fmt.Sprintf("ceiling-%dx%d", n, wd.agents), n)
	if err != nil {
		return nil, err
	}
	r.Logf("ceiling: %d tasks from %d plain clients, %.0f tasks/s", n, r.Workload.Clients, ceiling.TasksPerSec)
	run, err := wd.run(ctx, fmt.Sprintf("burst %d tasks, %d agents", n, wd.agents), fmt.Sprintf("burst-%dx%d", n, wd.agents),
		results.KindBurst, n, generator.Burst(n, r.Workload.Clients))
	if err != nil {
		return nil, err
	}
	run.Ceiling, run.CeilingRatio = ceiling, stats.Round(stats.Ratio(run.TasksPerSec, ceiling.TasksPerSec), 3)
	r.res.Runs = append(r.res.Runs, run)
	r.Logf("burst: %d tasks for %d agents: %s succeeded, %.0f tasks/s (%.0f %% of the ceiling), queue wait p99 %.1f ms",
		n, wd.agents, run.Outcome, run.TasksPerSec, 100*run.CeilingRatio, run.QueueWait.P99)
	return ceiling, nil
}

// openLoop runs tasks arriving at pct % of the ceiling for the rate duration.
func (r *runner) openLoop(ctx context.Context, wd *world, pct int, ceiling *results.Ceiling) error {
	if ceiling == nil || ceiling.TasksPerSec <= 0 {
		return errors.New("no ceiling was measured for the open-loop rates")
	}
	rate := ceiling.TasksPerSec * float64(pct) / 100
	n := max(int(rate*r.Workload.OpenLoop.Duration.Seconds()), 1)
	run, err := wd.run(ctx, fmt.Sprintf("open loop %d %%", pct), fmt.Sprintf("rate-%d", pct), results.KindOpenLoop, n, generator.Rate(n, rate))
	if err != nil {
		return err
	}
	run.RatePercent, run.TargetRate, run.Ceiling = float64(pct), stats.Round(rate, 1), ceiling // the reference the rate was set from
	r.res.Runs = append(r.res.Runs, run)
	r.Logf("open loop: %d tasks at %.0f tasks/s (%d %% of the ceiling): %s succeeded, queue wait p50/p95/p99 %.1f / %.1f / %.1f ms",
		n, rate, pct, run.Outcome, run.QueueWait.P50, run.QueueWait.P95, run.QueueWait.P99)
	return nil
}

// ceilingNS is where the ceiling writes: no operator watches it, and its tasks name a hive
// that does not exist.
const ceilingNS = "bench-ceiling"

// ceiling makes the writes of n quick tasks with no operator: create, a status patch binding
// the task (phase Assigned, agent, attempt 1) and one finishing it (Succeeded, result), each
// guarded by the task's resourceVersion as the operator's and the agents' are, from as many
// clients as the bursts. A recorder watches the namespace as it does the bursts', so the API
// server serves the same watch. Its tasks per second are what the API server allows alone.
func (r *runner) ceiling(ctx context.Context, c client.Client, meter *scraper.Meter, prefix string, n int) (*results.Ceiling, error) {
	lat := make([]time.Duration, 3*n)
	cpuStart, start := meter.Sample(), time.Now()
	err := generator.Burst(n, r.Workload.Clients)(ctx, func(i int) error {
		task := newTask(ceilingNS, "ceiling", prefix, i)
		write := func(k int, what string, f func() error) error {
			t0 := time.Now()
			if err := generator.Retry(ctx, f); err != nil {
				return fmt.Errorf("ceiling: %s task %s: %w", what, task.Name, err)
			}
			lat[3*i+k] = time.Since(t0)
			return nil
		}
		patch := func(k int, what string, next swarmv1alpha1.TaskStatus) error {
			p, err := statuspatch.Guarded(task.ResourceVersion, &task.Status, &next)
			if err != nil {
				return fmt.Errorf("ceiling: %s task %s: %w", what, task.Name, err)
			}
			return write(k, what, func() error { return c.Status().Patch(ctx, task, p) })
		}
		err := write(0, "creating", func() error { return c.Create(ctx, task) })
		if err == nil {
			err = patch(1, "binding", lifecycle.Bind(task, "ceiling-agent-"+strconv.Itoa(i%100), time.Now()))
		}
		if err == nil {
			err = patch(2, "finishing", lifecycle.Succeed(task, "ok", time.Now()))
		}
		return err
	})
	d, cpuEnd := time.Since(start).Seconds(), meter.Sample()
	if err != nil {
		return nil, fmt.Errorf("the ceiling run: %w", err)
	}
	return &results.Ceiling{
		Tasks: n, DurationSeconds: stats.Round(d, 3), TasksPerSec: stats.Round(float64(n)/d, 1),
		WriteLatency: stats.Summarise(lat), CPU: meter.Between(cpuStart, cpuEnd),
	}, nil
}

// stored stores n tasks (for a hive of 0 replicas, so none runs) in a namespace of its own,
// queued or finished as an agent leaves them (a create and a status write each), before a
// fresh operator process starts, then measures its start-up to ready and its memory once
// it has synced and settled.
func (r *runner) stored(ctx context.Context, cl *cluster, ns string, n int, finished bool) (*results.Stored, error) {
	const hive = "stored"
	w := r.Workload.Stored
	// The hive first: a task of a missing hive would get a condition written.
	if err := errors.Join(createNamespace(ctx, cl.client, ns), cl.client.Create(ctx, r.newHive(ns, hive, 0))); err != nil {
		return nil, fmt.Errorf("stored tasks: %w", err)
	}
	input := strings.Repeat("x", w.InputBytes)
	etcdBefore := r.etcdInUse(ctx, cl)
	start := time.Now()
	var created atomic.Int64
	err := generator.Burst(n, w.Clients)(ctx, func(i int) error {
		task := newTask(ns, hive, "stored", i)
		task.Spec.Input = input
		err := generator.Retry(ctx, func() error { return cl.client.Create(ctx, task) })
		if err == nil && finished {
			task.Status = swarmv1alpha1.TaskStatus{Phase: swarmv1alpha1.TaskSucceeded, Attempt: 1, Result: "ok", FinishedAt: ptr.To(metav1.NowMicro())}
			err = generator.Retry(ctx, func() error { return cl.client.Status().Update(ctx, task) })
		}
		if err != nil {
			return fmt.Errorf("storing task %s: %w", task.Name, err)
		}
		if done := created.Add(1); done%10000 == 0 {
			r.Logf("%s: %d of %d stored (%.0f/s)", ns, done, n, float64(done)/time.Since(start).Seconds())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res := &results.Stored{Tasks: n, InputBytes: w.InputBytes, SettleSeconds: w.Settle.Seconds(), CreateSeconds: stats.Round(time.Since(start).Seconds(), 1)}
	if etcdBefore > 0 {
		res.EtcdBytesPerTask = stats.Round((r.etcdInUse(ctx, cl)-etcdBefore)/float64(n), 0)
	}
	op, startup, err := r.startOperator(ctx, cl.kubeconfig, ns, 5*time.Minute)
	if op != nil {
		defer func() { _ = op.Stop() }()
	}
	if err != nil {
		return nil, err
	}
	r.Logf("%s: %d tasks stored in %.0f s; a fresh operator was ready in %s; settling for %s", ns, n, res.CreateSeconds, startup.Round(time.Millisecond), w.Settle.Duration)
	generator.Sleep(ctx, w.Settle.Duration)
	if err := errors.Join(op.Alive(), context.Cause(ctx)); err != nil {
		return nil, fmt.Errorf("stored tasks: %w", err)
	}
	if res.OperatorUse, res.RSSBytes, err = operatorUse(ctx, op); err != nil {
		return nil, err
	}
	res.StartupSeconds = stats.Round(startup.Seconds(), 3)
	h := &swarmv1alpha1.Hive{}
	if err := cl.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: hive}, h); err == nil {
		res.QueuedSeen = h.Status.QueuedTasks
	}
	r.Logf("%s: peak RSS %.0f MB, %.1f CPU s", ns, mb(res.PeakRSSBytes), res.CPUSeconds)
	return res, nil
}

// etcdInUse is the bytes of etcd's database in use (etcd_mvcc_db_total_size_in_use_in_bytes:
// what compaction and defragmentation would leave), 0 when unknown.
func (r *runner) etcdInUse(ctx context.Context, cl *cluster) float64 {
	if cl.etcdMetrics == "" {
		return 0
	}
	m, err := operator.Scrape(ctx, cl.etcdMetrics, "etcd_mvcc_db_total_size_in_use_in_bytes", "")
	if err != nil {
		r.Logf("reading etcd's size: %v", err)
		return 0
	}
	return m[""]
}

// baseline creates a kwok cluster (kwokctl's binary runtime, test/kwok: a real etcd, API
// server, scheduler and controller manager, with kwok playing the nodes and their kubelets)
// and installs the CRDs, then times Jobs from creation to their pod Running, then tasks from
// creation to bound to a warm agent.
func (r *runner) baseline(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, start := r.Workload.Baseline, time.Now()
	k, err := kwok.Create(ctx, kwok.Options{Name: fmt.Sprintf("hive-bench-%d", os.Getpid()), WorkDir: filepath.Join(r.workDir, "kwok"),
		K8sDir: r.clusterAssets, KwokDir: r.kwokDir, Nodes: w.Nodes})
	if err != nil {
		return err
	}
	defer func() { _ = k.Delete() }() // its processes end with it
	cl := &cluster{kubeconfig: k.Kubeconfig(), pids: map[string]int{}}
	if cl.config, cl.client, err = newClient(k.Config()); err == nil {
		_, err = envtest.InstallCRDs(cl.config, envtest.CRDInstallOptions{
			Paths: []string{filepath.Join(r.root, "config", "crd", "bases")}, ErrorIfPathMissing: true, Scheme: testenv.Scheme,
		})
	}
	if err != nil {
		return fmt.Errorf("installing the CRDs on kwok: %w", err)
	}
	// The API server and etcd are metered like envtest's.
	for name, component := range map[string]string{"apiserver": kwok.KubeAPIServer, "etcd": kwok.Etcd} {
		if pid, err := k.PID(component); err == nil {
			cl.pids[name] = pid
		}
	}
	res := &results.Baseline{Nodes: w.Nodes, ClusterCreateSeconds: stats.Round(time.Since(start).Seconds(), 1), Jobs: w.Jobs}
	r.res.Baseline = res
	jobs, err := measureJobs(ctx, cl, "default", w.Jobs, w.JobGap.Duration)
	if err != nil {
		return err
	}
	res.JobToRunning, res.JobsRunning = stats.Summarise(jobs), len(jobs)
	r.Logf("kwok: cluster created in %.0f s; Job → pod Running p50 %.1f ms (%d of %d)", res.ClusterCreateSeconds, res.JobToRunning.P50, len(jobs), w.Jobs)

	wd, err := r.newWorld(ctx, cl, worldSpec{ns: "default", hive: "warm", agents: 2})
	if err != nil {
		return err
	}
	defer wd.close()
	run, err := wd.run(ctx, "warm tasks on kwok", "warm", results.KindWarm, w.Jobs, generator.Rate(w.Jobs, 1/w.WarmGap.Seconds()))
	if err != nil {
		return err
	}
	r.res.Runs = append(r.res.Runs, run)
	res.WarmTasks, res.WarmSucceeded, res.WarmBind, res.WarmEndToEnd = w.Jobs, run.Outcome.Succeeded, run.QueueWait, run.EndToEnd
	res.RatioP50 = stats.Round(stats.Ratio(res.JobToRunning.P50, res.WarmBind.P50), 1)
	res.RatioP95 = stats.Round(stats.Ratio(res.JobToRunning.P95, res.WarmBind.P95), 1)
	r.Logf("kwok: task → bound p50 %.1f ms: %.0f× faster than a Job", res.WarmBind.P50, res.RatioP50)
	return nil
}

// measureJobs creates n Jobs, one every gap, and returns for each whose pod reached Running
// (or beyond) within two minutes the time from its creation.
func measureJobs(ctx context.Context, cl *cluster, ns string, n int, gap time.Duration) ([]time.Duration, error) {
	var mu sync.Mutex
	created, running := map[string]time.Time{}, map[string]time.Duration{}
	onPod := func(obj any) {
		if pod, ok := obj.(*corev1.Pod); ok && pod.Status.Phase != corev1.PodPending && pod.Status.Phase != corev1.PodUnknown {
			mu.Lock()
			defer mu.Unlock()
			if job := pod.Labels[batchv1.JobNameLabel]; running[job] == 0 {
				running[job] = time.Since(created[job])
			}
		}
	}
	hasJob, err := labels.NewRequirement(batchv1.JobNameLabel, selection.Exists, nil)
	if err == nil {
		_, err = testenv.Watch(ctx, cl.config, ns, labels.NewSelector().Add(*hasJob), map[client.Object]toolscache.ResourceEventHandler{
			&corev1.Pod{}: toolscache.ResourceEventHandlerFuncs{AddFunc: onPod, UpdateFunc: func(_, obj any) { onPod(obj) }},
		})
	}
	if err == nil {
		err = generator.Rate(n, 1/gap.Seconds())(ctx, func(i int) error {
			job := &batchv1.Job{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("bench-job-%d", i)},
				Spec: batchv1.JobSpec{BackoffLimit: ptr.To(int32(0)), Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
					RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "work", Image: "bench.invalid/job:v1"}},
				}}},
			}
			mu.Lock()
			created[job.Name] = time.Now()
			mu.Unlock()
			return cl.client.Create(ctx, job)
		})
	}
	// The jobs whose pods did not run within two minutes are left out.
	if err == nil {
		_ = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			return len(running) >= n, nil
		})
		err = context.Cause(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("timing the jobs: %w", err)
	}
	mu.Lock()
	defer mu.Unlock()
	return slices.Collect(maps.Values(running)), nil
}
