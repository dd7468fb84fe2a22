package runner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/pkg/agent"
	"github.com/aihub-dev/hive-operator/test/agentproc"
	"github.com/aihub-dev/hive-operator/test/builder"
	"github.com/aihub-dev/hive-operator/test/fleet"
	"github.com/aihub-dev/hive-operator/test/kubelet"
	"github.com/aihub-dev/hive-operator/test/operator"
	"github.com/aihub-dev/hive-operator/test/perf/generator"
	"github.com/aihub-dev/hive-operator/test/perf/recorder"
	"github.com/aihub-dev/hive-operator/test/perf/results"
	"github.com/aihub-dev/hive-operator/test/perf/scraper"
	"github.com/aihub-dev/hive-operator/test/perf/stats"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

// newHive returns a hive of n agents; its image is never pulled.
func (r *runner) newHive(ns, name string, replicas int) *swarmv1alpha1.Hive {
	return builder.Hive(ns, name).Replicas(int32(replicas)).Concurrency(int32(r.Workload.Concurrency)).Image("bench.invalid/noop-agent:v1").Obj()
}

func newTask(ns, hive, prefix string, i int) *swarmv1alpha1.Task {
	return builder.Task(ns, prefix+"-"+strconv.Itoa(i)).Hive(hive).Input("bench").Label(recorder.Label, prefix).Obj()
}

func createNamespace(ctx context.Context, c client.Client, name string) error {
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}

// startOperator starts a fresh operator process watching one namespace and times its
// start-up to ready (caches synced).
func (r *runner) startOperator(ctx context.Context, kubeconfig, ns string, timeout time.Duration) (*operator.Process, time.Duration, error) {
	op, err := operator.Start(operator.Options{
		Binary: r.operatorBinary, Kubeconfig: kubeconfig, Namespaces: []string{ns}, LogPath: filepath.Join(r.workDir, "operator-"+ns+".log"),
		QPS: r.Workload.OperatorQPS, Burst: r.Workload.OperatorBurst, Pprof: r.Pprof,
	})
	if err != nil {
		return nil, 0, err
	}
	if op.PprofAddr() != "" {
		r.Logf("operator for %s: pprof on http://%s/debug/pprof/", ns, op.PprofAddr())
	}
	startup, err := op.WaitReady(ctx, timeout)
	return op, startup, err
}

// world is a namespace with a hive, a fresh operator process watching only that namespace,
// the hive's agents and the recorder.
type world struct {
	r        *runner
	c        client.Client
	ns, hive string
	agents   int
	op       *operator.Process
	startup  time.Duration
	rec      *recorder.Recorder
	meter    *scraper.Meter
	fleet    *fleet.Fleet
	procs    *agentproc.Runtime
	// agentWrites counts the agents' writes: every request but a GET (gets, lists, watches).
	agentWrites atomic.Int64
	cancel      context.CancelFunc
}

// worldSpec says what a world holds. markReady: the benchmark marks the agent pods Ready
// (envtest has no kubelet; kwok does it). procs, when set, runs the agents as processes of
// their own instead of in the benchmark's. retention is the hive's for finished tasks
// (its default when 0).
type worldSpec struct {
	ns, hive  string
	agents    int
	markReady bool
	procs     *agentproc.Runtime
	retention time.Duration
}

// newWorld creates the namespace, starts the recorder and the operator, creates the hive and
// waits until its agents run.
func (r *runner) newWorld(ctx context.Context, cl *cluster, spec worldSpec) (w *world, err error) {
	ctx, cancel := context.WithCancel(ctx)
	ns, hive, agents := spec.ns, spec.hive, spec.agents
	w = &world{r: r, c: cl.client, ns: ns, hive: hive, agents: agents, cancel: cancel, procs: spec.procs}
	defer func() {
		if err != nil {
			w.close()
			w, err = nil, fmt.Errorf("setting up %s: %w", ns, err)
		}
	}()
	if err := createNamespace(ctx, cl.client, ns); err != nil {
		return nil, err
	}
	if w.rec, err = recorder.Start(ctx, cl.config, ns, r.epoch); err != nil {
		return nil, err
	}
	if w.op, w.startup, err = r.startOperator(ctx, cl.kubeconfig, ns, 2*time.Minute); err != nil {
		return nil, err
	}
	w.meter = &scraper.Meter{Cores: r.res.Machine.Cores, PIDs: maps.Clone(cl.pids)}
	w.meter.PIDs["operator"], w.meter.PIDs["bench"] = w.op.PID(), os.Getpid()
	h := r.newHive(ns, hive, agents)
	if spec.retention > 0 {
		h.Spec.TaskRetention = &swarmv1alpha1.TaskRetentionSpec{TTLSecondsAfterFinished: ptr.To(int32(spec.retention.Seconds()))}
	}
	if err := cl.client.Create(ctx, h); err != nil {
		return nil, fmt.Errorf("creating hive %s: %w", hive, err)
	}
	// The test kubelet marks the hive's pods Ready (unless kwok does) and the fleet runs a real
	// pkg/agent agent per Ready pod in this process, with a no-op handler and the SDK's
	// defaults. The kubelet watches the pods once, so a thousand agents cost the API server
	// only their own task watches; unbound pods are never deleted while the benchmark
	// measures. The agents write through one client that counts their requests, and their
	// logs are discarded.
	cfg := rest.CopyConfig(cl.config)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return promhttp.RoundTripperFunc(func(req *http.Request) (*http.Response, error) {
			if req.Method != http.MethodGet {
				w.agentWrites.Add(1)
			}
			return rt.RoundTrip(req)
		})
	}
	writer, err := client.New(cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		return nil, fmt.Errorf("creating the agents' client: %w", err)
	}
	delay := r.Workload.TaskDelay.Duration
	w.fleet = &fleet.Fleet{
		Config: cl.config,
		Handler: func(string) agent.Handler {
			return func(ctx context.Context, _ *agent.Task) (string, error) {
				generator.Sleep(ctx, delay)
				return "ok", ctx.Err()
			}
		},
		Options: func(_ *corev1.Pod, o *agent.Options) { o.Client = writer },
	}
	agentRuntime := interface {
		kubelet.Runtime
		Ready() int
		Err() error
	}(w.fleet)
	if w.procs != nil {
		agentRuntime = w.procs
	}
	k := &kubelet.Kubelet{
		Config: cl.config, Client: cl.client, Namespace: ns, MarkReady: spec.markReady, Runtime: agentRuntime,
		Selector: labels.SelectorFromSet(labels.Set{swarmv1alpha1.LabelHive: hive}),
	}
	if err := k.Start(ctx); err != nil {
		return nil, fmt.Errorf("starting the kubelet: %w", err)
	}
	// Ready once the agents' task watches have synced and the hive's status counts them.
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute+time.Duration(agents)*100*time.Millisecond, true,
		func(ctx context.Context) (bool, error) {
			synced := agentRuntime.Ready() >= agents && w.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: hive}, h) == nil
			return synced && int(h.Status.ReadyReplicas) >= agents, w.op.Alive()
		})
	if err != nil {
		return nil, fmt.Errorf("%d of %d agents of hive %s ran (the hive reports %d ready; the agents' last error: %w): %w",
			agentRuntime.Ready(), agents, hive, h.Status.ReadyReplicas, cmp.Or(agentRuntime.Err(), errors.New("none")), err)
	}
	r.Logf("%s: operator ready in %s, %d agents running", ns, w.startup.Round(time.Millisecond), agents)
	return w, nil
}

// close stops the watches and the kubelet, which kills the agents as a crash would (the
// measurements are over), then the operator.
func (w *world) close() {
	w.cancel()
	if w.procs != nil {
		w.procs.StopAll()
	}
	if w.fleet != nil {
		_ = wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 30*time.Second, true,
			func(context.Context) (bool, error) { return len(w.fleet.Running()) == 0, nil })
	}
	if w.op != nil {
		_ = w.op.Stop() // how it ended does not change the measurements
	}
}

// run creates a run's tasks with a driver, waits until every task finished (or none has
// for the stall time: the rest count as stuck), and measures it.
func (w *world) run(ctx context.Context, name, prefix, kind string, n int, drive generator.Driver) (results.Run, error) {
	res := results.Run{Name: name, Kind: kind, Tasks: n, Agents: w.agents, Concurrency: w.r.Workload.Concurrency}
	tr := w.rec.Track(prefix)
	scraper.ResetPeak(w.op.PID())
	before, _, err := operatorUse(ctx, w.op)
	agentWrites, cpuStart, winStart := w.agentWrites.Load(), w.meter.Sample(), w.rec.Now()
	if err == nil {
		err = drive(ctx, func(i int) error {
			task := newTask(w.ns, w.hive, prefix, i)
			w.rec.Created(tr, task.Name)
			if err := generator.Retry(ctx, func() error { return w.c.Create(ctx, task) }); err != nil {
				return fmt.Errorf("creating task %s: %w", task.Name, err)
			}
			return nil
		})
	}
	if err == nil {
		err = wait.PollUntilContextCancel(ctx, 20*time.Millisecond, true, func(context.Context) (bool, error) {
			done, idle := w.rec.Done(tr)
			return done || idle > w.r.Workload.Stall.Duration, w.op.Alive()
		})
	}
	if err != nil {
		return res, fmt.Errorf("%s: %w", name, err)
	}
	winEnd, cpuEnd := w.rec.Now(), w.meter.Sample()
	after, _, err := operatorUse(ctx, w.op)
	if res.Outcome = tr.Outcome(n); err != nil {
		return res, err
	}
	op := &res.Operator
	op.StartupSeconds, op.PeakRSSBytes, op.CPUSeconds = stats.Round(w.startup.Seconds(), 3), after.PeakRSSBytes, stats.Round(after.CPUSeconds-before.CPUSeconds, 2)
	op.Requests = scraper.Sub(after.Requests, before.Requests)
	op.Writes, op.Reads = scraper.Split(op.Requests)
	res.AgentWrites = float64(w.agentWrites.Load() - agentWrites)
	res.CPU = w.meter.Between(cpuStart, cpuEnd)
	tr.Fill(&res)
	t, hive := float64(n), w.rec.HiveWritesBetween(winStart, winEnd)
	res.HiveStatusWrites = hive
	res.HiveStatusWritesPerSec = stats.Round(stats.Ratio(float64(hive), time.Duration(winEnd-winStart).Seconds()), 3)
	res.WritesPerTask = stats.Round((t+op.Writes+res.AgentWrites)/t, 3)
	res.TaskWritesPerTask = stats.Round((t+op.Writes-float64(hive)+res.AgentWrites)/t, 3)
	res.OperatorWritesPerTask, res.OperatorReadsPerTask = stats.Round(op.Writes/t, 3), stats.Round(op.Reads/t, 3)
	res.AgentWritesPerTask = stats.Round(res.AgentWrites/t, 3)
	return res, nil
}

// operatorUse reads what the operator process has used since it started: CPU time, peak
// and current RSS, and API requests by method.
func operatorUse(ctx context.Context, op *operator.Process) (results.OperatorUse, uint64, error) {
	cpu, peak, rss, err1 := scraper.Process(op.PID())
	req, err2 := op.Metric(ctx, "rest_client_requests_total", "method")
	u := results.OperatorUse{PeakRSSBytes: peak, CPUSeconds: stats.Round(cpu.Seconds(), 2), Requests: req}
	u.Writes, u.Reads = scraper.Split(req)
	return u, rss, errors.Join(err1, err2)
}
