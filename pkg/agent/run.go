package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/lifecycle"
	"github.com/aihub-dev/hive-operator/internal/statuspatch"
)

var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(swarmv1alpha1.AddToScheme(scheme))
}

// stopCause says why a handler's context was cancelled, which decides what is written.
type stopCause int

const (
	causeNone      stopCause = iota
	causeCancelled           // spec.cancel was set: write Cancelled
	causeGone                // deleted or no longer bound to this agent: write nothing
	causeShutdown            // the agent is stopping: release the task
)

// attempt is one task attempt this agent runs.
type attempt struct {
	uid     types.UID
	number  int32
	ctx     context.Context
	cancel  context.CancelFunc
	mu      sync.Mutex
	cause   stopCause
	started bool
}

func (a *attempt) stop(c stopCause) {
	a.mu.Lock()
	if a.cause == causeNone {
		a.cause = c
	}
	a.mu.Unlock()
	a.cancel()
}

func (a *attempt) stopCause() stopCause {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cause
}

type runner struct {
	opts    Options
	handler Handler
	writer  client.Client
	log     logr.Logger

	slots chan struct{} // one token per free slot

	mu       sync.Mutex
	attempts map[types.UID]*attempt
	latest   map[types.UID]*swarmv1alpha1.Task // newest version of each task seen or written
	stopping bool
	ready    bool
	observed bool
	wg       sync.WaitGroup
}

// Run runs an agent until ctx is cancelled, then shuts it down gracefully: it stops taking
// tasks, gives running handlers Options.ShutdownGrace to finish, cancels and releases the
// rest, and returns once every write is done.
func Run(ctx context.Context, opts Options, handler Handler) error {
	if err := opts.defaults(); err != nil {
		return err
	}
	cfg := opts.Config
	r := &runner{
		opts: opts, handler: handler, writer: opts.Client, log: opts.Logger,
		slots:    make(chan struct{}, opts.Concurrency),
		attempts: map[types.UID]*attempt{},
		latest:   map[types.UID]*swarmv1alpha1.Task{},
	}
	for range opts.Concurrency {
		r.slots <- struct{}{}
	}

	// The watch outlives ctx: cancellations and deletions must still reach handlers that
	// finish during the shutdown grace.
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatch()
	c, err := cache.New(cfg, cache.Options{
		Scheme:            scheme,
		DefaultNamespaces: map[string]cache.Config{opts.Namespace: {}},
		DefaultTransform:  cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&swarmv1alpha1.Task{}: {Field: fields.OneTermEqualSelector(swarmv1alpha1.TaskFieldAgent, opts.PodName)},
		},
	})
	if err != nil {
		return fmt.Errorf("agent: creating the task watch: %w", err)
	}
	inf, err := c.GetInformer(watchCtx, &swarmv1alpha1.Task{})
	if err != nil {
		return fmt.Errorf("agent: watching tasks: %w", err)
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.observe(obj) },
		UpdateFunc: func(_, obj any) { r.observe(obj) },
		DeleteFunc: func(obj any) { r.forget(obj) },
	}); err != nil {
		return fmt.Errorf("agent: watching tasks: %w", err)
	}
	go func() {
		if err := c.Start(watchCtx); err != nil {
			r.log.Error(err, "task watch stopped")
		}
	}()

	stopHealth, err := r.serveHealth()
	if err != nil {
		return err
	}
	defer stopHealth()

	if !c.WaitForCacheSync(ctx) {
		r.shutdown()
		// The watch delivers tasks before it reports itself synced; an agent stopped in
		// between has worked, and stopping is what it was asked to do.
		if inf.HasSynced() || r.hasObserved() {
			return nil
		}
		return fmt.Errorf("agent: stopped before the task watch synced (is the API server reachable?): %w", context.Cause(ctx))
	}
	r.mu.Lock()
	r.ready = true
	r.mu.Unlock()
	r.log.Info("agent ready", "pod", opts.PodName, "namespace", opts.Namespace, "concurrency", opts.Concurrency)

	<-ctx.Done()
	r.shutdown()
	return nil
}

func (r *runner) hasObserved() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.observed
}

// shutdown stops taking tasks, waits up to the grace for running handlers, cancels the
// rest and waits for their writes.
func (r *runner) shutdown() {
	r.mu.Lock()
	r.stopping = true
	r.ready = false
	r.mu.Unlock()
	r.log.Info("agent stopping", "grace", r.opts.ShutdownGrace)

	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(r.opts.ShutdownGrace):
	}
	r.mu.Lock()
	for _, a := range r.attempts {
		a.stop(causeShutdown)
	}
	r.mu.Unlock()
	<-done
}

// observe handles a task the watch shows bound to this agent (or no longer).
func (r *runner) observe(obj any) {
	t, ok := obj.(*swarmv1alpha1.Task)
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.observed = true
	a := r.attempts[t.UID]
	mine := t.Status.Agent == r.opts.PodName && t.Status.Phase.Bound()
	if !mine && a == nil {
		delete(r.latest, t.UID)
		return
	}
	r.remember(t)
	switch {
	case a != nil && (!mine || t.Status.Attempt != a.number):
		a.stop(causeGone)
	case a != nil && t.Spec.Cancel:
		a.stop(causeCancelled)
	case a == nil && mine && !r.stopping:
		r.start(t)
	case a == nil && mine && r.stopping:
		// Bound after this agent stopped being ready: hand it back at once.
		r.wg.Go(func() { r.release(t.DeepCopy(), "agent "+r.opts.PodName+" is shutting down") })
	}
}

func (r *runner) forget(obj any) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	t, ok := obj.(*swarmv1alpha1.Task)
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if a := r.attempts[t.UID]; a != nil {
		a.stop(causeGone)
	}
	delete(r.latest, t.UID)
}

// remember keeps the newest version of a task seen or written, so that writes start from
// it and rarely conflict. Must hold mu.
func (r *runner) remember(t *swarmv1alpha1.Task) {
	if cur, ok := r.latest[t.UID]; ok && newer(cur.ResourceVersion, t.ResourceVersion) {
		return
	}
	r.latest[t.UID] = t.DeepCopy()
}

// newer reports whether resourceVersion a is later than b, when both are the decimal
// numbers etcd-backed servers use; otherwise it says no, and the watch's version wins.
func newer(a, b string) bool {
	if len(a) != len(b) {
		return len(a) > len(b)
	}
	return a > b
}

// start begins an attempt of a task bound to this agent. Must hold mu.
func (r *runner) start(t *swarmv1alpha1.Task) {
	deadline := time.Now().Add(lifecycle.Timeout(&t.Spec))
	if t.Status.AssignedAt != nil {
		deadline = t.Status.AssignedAt.Add(lifecycle.Timeout(&t.Spec))
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	a := &attempt{uid: t.UID, number: t.Status.Attempt, ctx: ctx, cancel: cancel}
	r.attempts[t.UID] = a
	task := newTask(t, r.writer)
	r.wg.Go(func() {
		defer cancel()
		defer r.done(a)
		// Wait for a free slot; the operator binds no more than the concurrency, so this
		// only waits when the agent's concurrency and the hive's disagree.
		select {
		case <-r.slots:
			defer func() { r.slots <- struct{}{} }()
		case <-ctx.Done():
			r.finish(a, "", ctx.Err())
			return
		}
		r.runAttempt(a, task)
	})
}

func (r *runner) done(a *attempt) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.attempts[a.uid] == a {
		delete(r.attempts, a.uid)
	}
	if t := r.latest[a.uid]; t != nil && (t.Status.Agent != r.opts.PodName || !t.Status.Phase.Bound()) {
		delete(r.latest, a.uid)
	}
}

// runAttempt runs the handler and writes Running (if it outlasts RunningAfter) and the
// outcome.
func (r *runner) runAttempt(a *attempt, task *Task) {
	if r.opts.RunningAfter < 0 {
		r.markRunning(a)
	}
	type outcome struct {
		result string
		err    error
	}
	out := make(chan outcome, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				out <- outcome{err: fmt.Errorf("handler panicked: %v", p)}
			}
		}()
		res, err := r.handler(a.ctx, task)
		out <- outcome{res, err}
	}()
	var o outcome
	if r.opts.RunningAfter >= 0 {
		select {
		case o = <-out:
		case <-time.After(r.opts.RunningAfter):
			r.markRunning(a)
			o = <-out
		}
	} else {
		o = <-out
	}
	if o.err == nil && a.ctx.Err() != nil {
		o.err = a.ctx.Err()
	}
	r.finish(a, o.result, o.err)
}

func (r *runner) markRunning(a *attempt) {
	a.mu.Lock()
	a.started = true
	a.mu.Unlock()
	r.write(a, "mark running", func(t *swarmv1alpha1.Task, now time.Time) (*swarmv1alpha1.TaskStatus, bool) {
		if t.Status.Phase != swarmv1alpha1.TaskAssigned {
			return nil, false
		}
		s := lifecycle.Start(t, now)
		return &s, true
	})
}

// finish writes the outcome of an attempt.
func (r *runner) finish(a *attempt, result string, err error) {
	cause := a.stopCause()
	switch {
	case cause == causeGone:
		return
	case cause == causeShutdown:
		r.write(a, "release", func(t *swarmv1alpha1.Task, now time.Time) (*swarmv1alpha1.TaskStatus, bool) {
			s := lifecycle.Release(t, "released by agent "+r.opts.PodName+", which is shutting down", now)
			return &s, true
		})
	case cause == causeCancelled:
		r.write(a, "cancel", func(t *swarmv1alpha1.Task, now time.Time) (*swarmv1alpha1.TaskStatus, bool) {
			s := lifecycle.Cancel(t, "cancelled while running on agent "+r.opts.PodName, now)
			return &s, true
		})
	case errors.Is(err, context.DeadlineExceeded):
		r.write(a, "time out", func(t *swarmv1alpha1.Task, now time.Time) (*swarmv1alpha1.TaskStatus, bool) {
			s := lifecycle.FailAttempt(t, swarmv1alpha1.ReasonTimedOut, fmt.Sprintf("the handler ran longer than the timeout of %s", lifecycle.Timeout(&t.Spec)), now)
			return &s, true
		})
	case err != nil:
		r.write(a, "fail", func(t *swarmv1alpha1.Task, now time.Time) (*swarmv1alpha1.TaskStatus, bool) {
			s := lifecycle.FailAttempt(t, swarmv1alpha1.ReasonAgentFailed, lifecycle.Truncate(err.Error(), MaxErrorLength), now)
			return &s, true
		})
	case len(result) > swarmv1alpha1.MaxResultLength:
		r.write(a, "fail", func(t *swarmv1alpha1.Task, now time.Time) (*swarmv1alpha1.TaskStatus, bool) {
			s := lifecycle.FailAttempt(t, swarmv1alpha1.ReasonAgentFailed,
				fmt.Sprintf("the result of %d bytes exceeds the limit of %d; store large outputs elsewhere and return their address", len(result), swarmv1alpha1.MaxResultLength), now)
			return &s, true
		})
	default:
		r.write(a, "succeed", func(t *swarmv1alpha1.Task, now time.Time) (*swarmv1alpha1.TaskStatus, bool) {
			s := lifecycle.Succeed(t, result, now)
			return &s, true
		})
	}
}

// release hands a task that never started back to the queue.
func (r *runner) release(t *swarmv1alpha1.Task, message string) {
	a := &attempt{uid: t.UID, number: t.Status.Attempt}
	r.write(a, "release", func(t *swarmv1alpha1.Task, now time.Time) (*swarmv1alpha1.TaskStatus, bool) {
		s := lifecycle.Release(t, message, now)
		return &s, true
	})
}

// write applies a transition to the task as a compare-and-swap on its resourceVersion. On a
// conflict it reads the task again and retries while the task is still this agent's
// attempt; on other errors (a lost connection) it retries with backoff for up to a minute.
func (r *runner) write(a *attempt, what string, transition func(*swarmv1alpha1.Task, time.Time) (*swarmv1alpha1.TaskStatus, bool)) {
	r.mu.Lock()
	cur := r.latest[a.uid]
	r.mu.Unlock()
	if cur == nil {
		return
	}
	cur = cur.DeepCopy()
	backoff := 50 * time.Millisecond
	deadline := time.Now().Add(time.Minute)
	for {
		if cur.Status.Agent != r.opts.PodName || cur.Status.Attempt != a.number || !cur.Status.Phase.Bound() {
			return // someone else took the task over: the outcome is no longer ours to write
		}
		status, ok := transition(cur, time.Now())
		if !ok {
			return
		}
		next := cur.DeepCopy()
		next.Status = *status
		patch, err := statuspatch.Guarded(cur.ResourceVersion, &cur.Status, &next.Status)
		if err == nil {
			err = r.writer.Status().Patch(context.Background(), next, patch)
		}
		if err == nil {
			r.mu.Lock()
			r.remember(next)
			r.mu.Unlock()
			return
		}
		if time.Now().After(deadline) {
			r.log.Error(err, "giving up on a task write", "task", cur.Name, "write", what)
			return
		}
		if !apierrors.IsConflict(err) {
			r.log.V(1).Info("task write failed; retrying", "task", cur.Name, "write", what, "error", err.Error())
			time.Sleep(backoff)
			backoff = min(backoff*2, 5*time.Second)
		}
		fresh := &swarmv1alpha1.Task{}
		if gerr := r.writer.Get(context.Background(), client.ObjectKeyFromObject(cur), fresh); gerr != nil {
			if apierrors.IsNotFound(gerr) {
				return
			}
			continue
		}
		cur = fresh
	}
}

// serveHealth serves /healthz (the process is alive) and /readyz (the agent takes tasks).
func (r *runner) serveHealth() (func(), error) {
	if r.opts.HealthAddr == "0" {
		return func() {}, nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		r.mu.Lock()
		ready := r.ready
		r.mu.Unlock()
		if !ready {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	l, err := net.Listen("tcp", r.opts.HealthAddr)
	if err != nil {
		return nil, fmt.Errorf("agent: serving health checks on %s: %w", r.opts.HealthAddr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
