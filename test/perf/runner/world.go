package runner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr/funcr"
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
	// deletes: the hive's retention deletes finished tasks during the run, so its outcome
	// comes from the recorder, not from a list.
	deletes bool
	// The agents' requests; the agents whose task watch has synced, and their last error.
	counter requestCounter
	ready   atomic.Int64
	lastErr atomic.Value
	cancel  context.CancelFunc
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
	w = &world{r: r, c: cl.client, ns: ns, hive: hive, agents: agents, cancel: cancel, procs: spec.procs, deletes: spec.retention > 0}
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
	// logs are counted, never printed.
	cfg := rest.CopyConfig(cl.config)
	cfg.WrapTransport = w.counter.wrap
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
		Logger: funcr.New(func(_, args string) {
			switch {
			case strings.Contains(args, `"msg"="agent ready"`):
				w.ready.Add(1)
			case strings.Contains(args, `"error"=`):
				w.lastErr.Store(args)
			}
		}, funcr.Options{}),
	}
	k := &kubelet.Kubelet{
		Config: cl.config, Client: cl.client, Namespace: ns, MarkReady: spec.markReady, Runtime: w.fleet,
		Selector: labels.SelectorFromSet(labels.Set{swarmv1alpha1.LabelHive: hive}),
	}
	ready := func() int { return int(w.ready.Load()) }
	if w.procs != nil {
		k.Runtime, ready = w.procs, w.procs.Ready
	}
	if err := k.Start(ctx); err != nil {
		return nil, fmt.Errorf("starting the kubelet: %w", err)
	}
	// Ready once the agents' task watches have synced and the hive's status counts them.
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute+time.Duration(agents)*100*time.Millisecond, true,
		func(ctx context.Context) (bool, error) {
			synced := ready() >= agents && w.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: hive}, h) == nil
			return synced && int(h.Status.ReadyReplicas) >= agents, w.op.Alive()
		})
	if err != nil {
		last, _ := w.lastErr.Load().(string)
		if w.procs != nil && w.procs.Err() != nil {
			last = w.procs.Err().Error()
		}
		return nil, fmt.Errorf("%d of %d agents of hive %s ran (the hive reports %d ready; the agents' last error: %q): %w",
			ready(), agents, hive, h.Status.ReadyReplicas, last, err)
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
	pid := w.op.PID()
	scraper.ResetPeak(pid)
	cpu0, _, _, err1 := scraper.Process(pid)
	req0, err2 := w.op.Metric(ctx, "rest_client_requests_total", "method")
	agentWrites, agentReads, cpuStart, winStart := w.counter.writes.Load(), w.counter.reads.Load(), w.meter.Sample(), w.rec.Now()
	err := errors.Join(err1, err2)
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
	cpu1, peak, _, err1 := scraper.Process(pid)
	req1, err2 := w.op.Metric(ctx, "rest_client_requests_total", "method")
	if w.deletes {
		res.Outcome = tr.Outcome(n)
	} else if res.Outcome, err = outcome(ctx, w.c, w.ns, prefix, n); err != nil {
		return res, err
	}
	if err := errors.Join(err1, err2); err != nil {
		return res, err
	}
	op := &res.Operator
	op.StartupSeconds, op.PeakRSSBytes, op.CPUSeconds = stats.Round(w.startup.Seconds(), 3), peak, stats.Round((cpu1-cpu0).Seconds(), 2)
	op.Requests = scraper.Sub(req1, req0)
	op.Writes, op.Reads = scraper.Split(op.Requests)
	res.AgentWrites, res.AgentReads = float64(w.counter.writes.Load()-agentWrites), float64(w.counter.reads.Load()-agentReads)
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

// outcome lists a run's tasks and counts how they ended.
func outcome(ctx context.Context, c client.Client, ns, prefix string, submitted int) (results.Outcome, error) {
	list := &swarmv1alpha1.TaskList{}
	if err := c.List(ctx, list, client.InNamespace(ns), client.MatchingLabels{recorder.Label: prefix}); err != nil {
		return results.Outcome{}, fmt.Errorf("listing the tasks of run %s: %w", prefix, err)
	}
	o := results.Outcome{Submitted: submitted, Missing: max(submitted-len(list.Items), 0)}
	for i := range list.Items {
		switch list.Items[i].Status.Phase {
		case swarmv1alpha1.TaskSucceeded:
			o.Succeeded++
		case swarmv1alpha1.TaskFailed, swarmv1alpha1.TaskCancelled:
			o.Failed++
		default:
			o.Unfinished++
		}
	}
	return o, nil
}

// requestCounter counts HTTP requests: reads (GET: gets, lists, watches) and writes.
type requestCounter struct{ reads, writes atomic.Int64 }

func (c *requestCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return promhttp.RoundTripperFunc(func(req *http.Request) (*http.Response, error) {
		if req.Method == http.MethodGet {
			c.reads.Add(1)
		} else {
			c.writes.Add(1)
		}
		return rt.RoundTrip(req)
	})
}
