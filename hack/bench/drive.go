package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/test/builder"
)

// labelRun marks each task of the bench with its run.
const labelRun = "bench.aihub.dev/run"

// newHive returns a hive of n agents with c slots each; its image is never pulled.
func newHive(ns, name string, replicas, concurrency int) *swarmv1alpha1.Hive {
	return builder.Hive(ns, name).Replicas(int32(replicas)).Concurrency(int32(concurrency)).Image("bench.invalid/noop-agent:v1").Obj()
}

func newTask(ns, hive, prefix string, i int) *swarmv1alpha1.Task {
	return builder.Task(ns, taskName(prefix, i)).Hive(hive).Input("bench").Label(labelRun, prefix).Obj()
}

func createNamespace(ctx context.Context, c client.Client, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}

// retry runs f until it succeeds, up to 8 attempts with backoff; AlreadyExists counts as
// success (a create whose answer was lost).
func retry(ctx context.Context, f func() error) error {
	backoff := 50 * time.Millisecond
	var err error
	for range 8 {
		if err = f(); err == nil || apierrors.IsAlreadyExists(err) {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
		sleepCtx(ctx, backoff)
		backoff = min(2*backoff, 2*time.Second)
	}
	return err
}

// driver creates tasks 0..n-1 through create, in its own pattern.
type driver func(ctx context.Context, create func(i int) error) error

// burstDriver creates n tasks as fast as a pool of clients can.
func burstDriver(n, clients int) driver {
	return func(ctx context.Context, create func(i int) error) error {
		var next atomic.Int64
		var wg sync.WaitGroup
		errs := make([]error, clients)
		for k := range clients {
			wg.Go(func() {
				for ctx.Err() == nil {
					i := int(next.Add(1) - 1)
					if i >= n {
						return
					}
					if err := create(i); err != nil {
						errs[k] = err
						return
					}
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
		return context.Cause(ctx)
	}
}

// rateDriver creates n tasks at a fixed rate, whatever the completions (an open loop): task i
// is due at i/rate seconds, and its create starts then, however many are in flight.
func rateDriver(n int, rate float64) driver {
	return func(ctx context.Context, create func(i int) error) error {
		start := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		inflight := make(chan struct{}, 1024)
		for i := 0; i < n && ctx.Err() == nil; i++ {
			due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				sleepCtx(ctx, d)
			}
			inflight <- struct{}{}
			wg.Go(func() {
				defer func() { <-inflight }()
				if err := create(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
		return context.Cause(ctx)
	}
}

// runSpec describes one run in a world.
type runSpec struct {
	name, prefix, kind string
	tasks              int
	drive              driver
}

// run creates a run's tasks with its driver, waits until every task finished (or none has
// finished for the stall time), and measures it.
func (w *world) run(ctx context.Context, spec runSpec) (RunResult, error) {
	res := RunResult{Name: spec.name, Kind: spec.kind, Tasks: spec.tasks, Agents: w.agents, Concurrency: w.concurrency}
	tr := w.rec.track(spec.prefix, spec.tasks)
	op, err := beginUsage(ctx, w.op)
	if err != nil {
		return res, err
	}
	agentsBefore := w.sim.counter.snapshot()
	cpuStart := w.meter.sample()
	winStart := w.rec.now()

	err = spec.drive(ctx, func(i int) error {
		task := newTask(w.ns, w.hive, spec.prefix, i)
		w.rec.markCreated(tr, i)
		if err := retry(ctx, func() error { return w.c.Create(ctx, task) }); err != nil {
			return fmt.Errorf("creating task %s: %w", task.Name, err)
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	if err := w.waitDone(ctx, tr); err != nil {
		return res, err
	}
	winEnd := w.rec.now()
	cpuEnd := w.meter.sample()
	if res.Operator, err = op.end(ctx); err != nil {
		return res, err
	}
	res.Operator.StartupSeconds = round(w.startup.Seconds(), 3)
	agentWrites, agentReads := splitRequests(subtractCounts(w.sim.counter.snapshot(), agentsBefore))
	res.AgentWrites, res.AgentReads = agentWrites, agentReads
	res.CPU = cpuBetween(cpuStart, cpuEnd, w.cores)

	if res.Outcome, err = outcome(ctx, w.c, w.ns, spec.prefix, spec.tasks); err != nil {
		return res, err
	}
	fillTimes(&res, tr)
	n := float64(spec.tasks)
	res.HiveStatusWrites = w.rec.hiveWritesBetween(winStart, winEnd)
	window := time.Duration(winEnd - winStart).Seconds()
	res.HiveStatusWritesPerSec = round(ratio(float64(res.HiveStatusWrites), window), 3)
	res.WritesPerTask = round((n+res.Operator.Writes+agentWrites)/n, 3)
	res.TaskWritesPerTask = round((n+res.Operator.Writes-float64(res.HiveStatusWrites)+agentWrites)/n, 3)
	res.OperatorWritesPerTask = round(res.Operator.Writes/n, 3)
	res.OperatorReadsPerTask = round(res.Operator.Reads/n, 3)
	res.AgentWritesPerTask = round(agentWrites/n, 3)
	return res, nil
}

// waitDone waits until every created task of a track finished, or none has for the stall
// time.
func (w *world) waitDone(ctx context.Context, tr *track) error {
	for {
		if tr.nDone.Load() >= tr.nCreated.Load() {
			return nil
		}
		if err := w.alive(); err != nil {
			return err
		}
		if idle := time.Duration(w.rec.now() - tr.lastProgress.Load()); idle > w.stall {
			return nil // the rest are stuck: the outcome counts them
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for tasks: %w", context.Cause(ctx))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// fillTimes computes throughput and latencies from a track's times.
func fillTimes(res *RunResult, tr *track) {
	var firstCreated, lastCreated, lastFinished int64
	var waits, e2e []time.Duration
	for i := range tr.n {
		c := tr.created[i].Load()
		if c == 0 {
			continue
		}
		if firstCreated == 0 || c < firstCreated {
			firstCreated = c
		}
		lastCreated = max(lastCreated, c)
		if b := tr.bound[i].Load(); b != 0 {
			waits = append(waits, time.Duration(b-c))
		}
		if f := tr.finished[i].Load(); f != 0 {
			e2e = append(e2e, time.Duration(f-c))
			lastFinished = max(lastFinished, f)
		}
	}
	res.QueueWait, res.EndToEnd = summarise(waits), summarise(e2e)
	if lastFinished > firstCreated {
		d := time.Duration(lastFinished - firstCreated)
		res.DurationSeconds = round(d.Seconds(), 3)
		res.TasksPerSec = round(float64(len(e2e))/d.Seconds(), 1)
	}
	if lastCreated > firstCreated {
		res.ArrivalRate = round(float64(tr.nCreated.Load()-1)/time.Duration(lastCreated-firstCreated).Seconds(), 1)
	}
}

// outcome lists a run's tasks and counts how they ended.
func outcome(ctx context.Context, c client.Client, ns, prefix string, submitted int) (Outcome, error) {
	o := Outcome{Submitted: submitted}
	listed := 0
	cont := ""
	for {
		list := &swarmv1alpha1.TaskList{}
		if err := c.List(ctx, list, client.InNamespace(ns), client.MatchingLabels{labelRun: prefix}, client.Limit(2000), client.Continue(cont)); err != nil {
			return o, fmt.Errorf("listing the tasks of run %s: %w", prefix, err)
		}
		for i := range list.Items {
			listed++
			switch list.Items[i].Status.Phase {
			case swarmv1alpha1.TaskSucceeded:
				o.Succeeded++
			case swarmv1alpha1.TaskFailed, swarmv1alpha1.TaskCancelled:
				o.Failed++
			default:
				o.Unfinished++
			}
		}
		if cont = list.Continue; cont == "" {
			break
		}
	}
	o.Missing = max(submitted-listed, 0)
	return o, nil
}
