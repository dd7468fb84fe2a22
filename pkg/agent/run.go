package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
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
	causeGone                // deleted, or no longer this attempt of this agent: write nothing
	causeShutdown            // the agent is stopping: release the task
)

// attempt is one task attempt this agent runs.
type attempt struct {
	uid    types.UID
	name   string
	number int32
	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	cause stopCause
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

// runner is the state of a running agent. Every map is guarded by mu.
//
// The watch is at least once and may deliver a version of a task older than one this
// agent wrote (its own Running write arriving after its final write, a label change made
// while it ran). Three records keep an attempt from running twice or being dropped:
// attempts holds the attempt running per task; handled the highest attempt number started
// per task, so an event showing an attempt already handled is recognised as stale; next a
// newer attempt bound while the previous one still unwinds, started when it has.
type runner struct {
	opts    Options
	handler Handler
	writer  client.Client
	log     logr.Logger

	slots chan struct{} // one token per free slot
	// runningAfter is Options.RunningAfter, resolved.
	runningAfter time.Duration
	// writes is the context of every status write; shutdown cancels it when it stops
	// waiting for them, which ends the backoff of a write still retrying.
	writes     context.Context
	stopWrites func()

	mu       sync.Mutex
	attempts map[types.UID]*attempt
	handled  map[types.UID]int32
	next     map[types.UID]*swarmv1alpha1.Task
	latest   map[types.UID]*swarmv1alpha1.Task // newest version of each task seen or written
	stopping bool
	ready    bool
	observed bool
	// work counts the goroutines whose writes Run waits for before it returns; idle is
	// closed when it drops to zero. A counter under mu rather than a WaitGroup: work starts
	// while Run already waits (a bind arriving during shutdown is released).
	work int
	idle chan struct{}
	// handlers counts handlers that have not returned, which Run waits for a little.
	handlers     int
	handlersIdle chan struct{}
	// stuck holds attempts whose handler ignored its cancellation for longer than
	// StopGrace, by when it was cancelled.
	stuck map[*attempt]time.Time
	// watchBroken is when the task watch last failed, zero while it works.
	watchBroken time.Time
	watchErr    error
}

func newRunner(opts Options, handler Handler) *runner {
	writes, stopWrites := context.WithCancelCause(context.Background())
	r := &runner{
		opts: opts, handler: handler, writer: opts.Client, log: opts.Logger,
		slots:        make(chan struct{}, opts.Concurrency),
		runningAfter: ptr.Deref(opts.RunningAfter, DefaultRunningAfter),
		writes:       writes, stopWrites: func() { stopWrites(errShutdownWrites) },
		attempts: map[types.UID]*attempt{},
		handled:  map[types.UID]int32{},
		next:     map[types.UID]*swarmv1alpha1.Task{},
		latest:   map[types.UID]*swarmv1alpha1.Task{},
		stuck:    map[*attempt]time.Time{},
	}
	for range opts.Concurrency {
		r.slots <- struct{}{}
	}
	return r
}

// Run runs an agent until ctx is cancelled, then shuts it down gracefully: it stops taking
// tasks, gives running handlers Options.ShutdownGrace to finish, cancels and releases the
// rest, and returns once every write is done.
func Run(ctx context.Context, opts Options, handler Handler) error {
	if err := opts.defaults(); err != nil {
		return err
	}
	r := newRunner(opts, handler)

	// The watch outlives ctx: cancellations and deletions must still reach handlers that
	// finish during the shutdown grace.
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatch()
	c, err := cache.New(opts.Config, cache.Options{
		Scheme:            scheme,
		DefaultNamespaces: map[string]cache.Config{opts.Namespace: {}},
		DefaultTransform:  cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&swarmv1alpha1.Task{}: {Field: TaskSelector(opts.PodName)},
		},
		DefaultWatchErrorHandler: r.watchFailed,
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
	if opts.serving() {
		l, err := net.Listen("tcp", opts.ServingAddr)
		if err != nil {
			return fmt.Errorf("agent: serving requests on %s: %w", opts.ServingAddr, err)
		}
		stopServing := newServer(opts, handler).serve(l)
		// Requests get the same grace as tasks, beside them: serving stops with the tasks'
		// shutdown, and Run returns once both are over (at once if it returns for another
		// reason).
		returning, stopped := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(stopped)
			select {
			case <-ctx.Done():
				stopServing(opts.ShutdownGrace)
			case <-returning:
				stopServing(0)
			}
		}()
		defer func() {
			close(returning)
			<-stopped
		}()
	}

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

// shutdown stops taking tasks, waits up to the grace for running handlers, cancels and
// releases the rest, waits up to ReleaseTimeout for those writes (interrupting the backoff
// of those still retrying then), gives back the tasks bound to it that its watch never
// delivered, and gives handlers that still run a last moment to return. Nothing is
// written once it has returned.
func (r *runner) shutdown() {
	defer r.stopWrites()
	r.mu.Lock()
	r.stopping = true
	r.ready = false
	r.mu.Unlock()
	r.log.Info("agent stopping", "grace", r.opts.ShutdownGrace)

	select {
	case <-r.whenIdle():
		r.giveBackUnseen()
		return
	case <-time.After(r.opts.ShutdownGrace):
	}
	r.mu.Lock()
	for _, a := range r.attempts {
		a.stop(causeShutdown)
	}
	r.mu.Unlock()
	select {
	case <-r.whenIdle():
		r.giveBackUnseen()
	case <-time.After(ReleaseTimeout):
		r.log.Info("giving up the task writes still retrying; the operator requeues their tasks once this agent is gone",
			"releaseTimeout", ReleaseTimeout)
		r.stopWrites()
		<-r.whenIdle()
	}
	select {
	case <-r.whenHandlersIdle():
	case <-time.After(r.opts.StopGrace):
		r.log.Info("stopping with handlers that ignored their cancellation still running")
	}
}

// giveBackUnseen releases the tasks the API server shows bound to this agent once its own
// writes are done: binds its watch had not delivered when it stopped, because the watch
// lags or was cut and is backing off, or because the operator bound the task before it
// saw this pod's deletion. Without this last read such a task would wait until the
// operator declares the agent lost, and its attempt would count as failed. A bind that
// lands after this read is still the operator's to requeue.
func (r *runner) giveBackUnseen() {
	ctx, cancel := context.WithTimeout(r.writes, ReleaseTimeout)
	defer cancel()
	list := &swarmv1alpha1.TaskList{}
	if err := r.writer.List(ctx, list, client.InNamespace(r.opts.Namespace),
		client.MatchingFieldsSelector{Selector: TaskSelector(r.opts.PodName)}); err != nil {
		r.log.Info("could not list this agent's tasks a last time; the operator requeues those bound since its watch last spoke",
			"error", err.Error())
		return
	}
	r.mu.Lock()
	for i := range list.Items {
		t := &list.Items[i]
		if t.Status.Agent != r.opts.PodName || !t.Status.Phase.Bound() || r.attempts[t.UID] != nil || t.Status.Attempt < r.handled[t.UID] {
			continue
		}
		// Marked handled first, so that the watch delivering the same bind now does not
		// release it a second time.
		r.handled[t.UID] = t.Status.Attempt
		r.remember(t)
		a := &attempt{uid: t.UID, name: t.Name, number: t.Status.Attempt}
		r.track(func() { r.writeRelease(a, "released by agent "+r.opts.PodName+", which is shutting down") })
	}
	r.mu.Unlock()
	select {
	case <-r.whenIdle():
	case <-ctx.Done():
		r.stopWrites()
		<-r.whenIdle()
	}
}

// track starts f as work Run waits for. Must hold mu.
func (r *runner) track(f func()) {
	r.work++
	go func() {
		defer r.untrack()
		f()
	}()
}

func (r *runner) untrack() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.work--
	if r.work == 0 && r.idle != nil {
		close(r.idle)
		r.idle = nil
	}
}

// whenIdle returns a channel closed once no tracked work runs.
func (r *runner) whenIdle() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.work == 0 {
		return closed
	}
	if r.idle == nil {
		r.idle = make(chan struct{})
	}
	return r.idle
}

// whenHandlersIdle returns a channel closed once every handler has returned.
func (r *runner) whenHandlersIdle() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.handlers == 0 {
		return closed
	}
	if r.handlersIdle == nil {
		r.handlersIdle = make(chan struct{})
	}
	return r.handlersIdle
}

var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

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
	if mine && t.Status.Attempt <= r.handled[t.UID] && (a == nil || t.Status.Attempt < a.number) {
		// An older version of the task than one already acted on: nothing to do.
		return
	}
	if !mine && a == nil {
		delete(r.next, t.UID)
		delete(r.latest, t.UID)
		return
	}
	r.remember(t)
	switch {
	case a != nil && !mine:
		delete(r.next, t.UID)
		a.stop(causeGone)
	case a != nil && t.Status.Attempt > a.number:
		// Bound again (a new attempt) while the previous attempt unwinds: it starts once
		// the previous handler has returned, so one task never runs twice at once here.
		a.stop(causeGone)
		r.next[t.UID] = t.DeepCopy()
	case a != nil && t.Spec.Cancel:
		a.stop(causeCancelled)
	case a == nil:
		r.begin(t)
	}
}

// begin acts on a new attempt bound to this agent: runs it, or gives it back when the
// agent is stopping, or writes Cancelled when it was cancelled before it started (an
// agent that lists its tasks after a restart finds such tasks). Must hold mu.
func (r *runner) begin(t *swarmv1alpha1.Task) {
	r.handled[t.UID] = t.Status.Attempt
	switch {
	case t.Spec.Cancel:
		a := &attempt{uid: t.UID, name: t.Name, number: t.Status.Attempt}
		r.track(func() { r.writeCancelled(a, "cancelled before it ran on agent "+r.opts.PodName) })
	case r.stopping:
		a := &attempt{uid: t.UID, name: t.Name, number: t.Status.Attempt}
		r.track(func() { r.writeRelease(a, "released by agent "+r.opts.PodName+", which is shutting down") })
	default:
		r.start(t)
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
	delete(r.next, t.UID)
	delete(r.handled, t.UID)
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
	c, err := resourceversion.CompareResourceVersion(a, b)
	return err == nil && c > 0
}

// start begins an attempt of a task bound to this agent. Must hold mu.
func (r *runner) start(t *swarmv1alpha1.Task) {
	deadline := time.Now().Add(lifecycle.Timeout(&t.Spec))
	if t.Status.AssignedAt != nil {
		deadline = t.Status.AssignedAt.Add(lifecycle.Timeout(&t.Spec))
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	a := &attempt{uid: t.UID, name: t.Name, number: t.Status.Attempt, ctx: ctx, cancel: cancel}
	r.attempts[t.UID] = a
	task := newTask(t, r.writer)
	// The attempt is work Run waits for until its outcome is written; a handler that is
	// still returning after that is waited for apart (see awaitHandler).
	r.work++
	go func() {
		written := false
		outcomeWritten := func() {
			if !written {
				written = true
				r.untrack()
			}
		}
		defer r.done(a)
		defer outcomeWritten()
		defer cancel()
		// Wait for a free slot. The operator binds no more tasks than the pod's slots, so
		// this waits only for a handler that is still returning after its task was taken
		// away or timed out: its slot is not free until it has.
		select {
		case <-r.slots:
		case <-ctx.Done():
			r.finish(a, "", ctx.Err())
			return
		}
		if pending := r.runAttempt(a, task); pending != nil {
			outcomeWritten()
			r.awaitHandler(a, pending)
		}
	}()
}

// done ends an attempt once its outcome is written, and starts the next attempt of the
// same task if one was bound meanwhile.
func (r *runner) done(a *attempt) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.attempts[a.uid] == a {
		delete(r.attempts, a.uid)
	}
	if n := r.next[a.uid]; n != nil && r.attempts[a.uid] == nil {
		delete(r.next, a.uid)
		if cur := r.latest[a.uid]; cur != nil && cur.Status.Agent == r.opts.PodName && cur.Status.Phase.Bound() && cur.Status.Attempt == n.Status.Attempt {
			r.begin(cur)
			return
		}
	}
	if t := r.latest[a.uid]; t != nil && (t.Status.Agent != r.opts.PodName || !t.Status.Phase.Bound()) {
		delete(r.latest, a.uid)
	}
}

type outcome struct {
	result string
	err    error
}

// runAttempt runs the handler in its slot and writes Running (if it outlasts
// RunningAfter) and the outcome. An outcome decided by the attempt's context (timeout,
// cancellation, shutdown) is written at once, not when the handler gets round to
// returning: then it returns the channel the handler's return arrives on, and the slot
// stays taken until it has.
func (r *runner) runAttempt(a *attempt, task *Task) <-chan outcome {
	out := make(chan outcome, 1)
	r.mu.Lock()
	r.handlers++
	r.mu.Unlock()
	go func() {
		defer r.handlerReturned()
		defer func() { r.slots <- struct{}{} }()
		defer func() {
			if p := recover(); p != nil {
				out <- outcome{err: fmt.Errorf("handler panicked: %v", p)}
			}
		}()
		res, err := r.handler(a.ctx, task)
		if o, ok := task.Output.(*taskOutput); ok && err == nil {
			var n int
			if res, n = o.result(res); n > swarmv1alpha1.MaxResultLength {
				res, err = "", resultTooLarge(n)
			}
		}
		out <- outcome{res, err}
	}()

	var running <-chan time.Time
	if r.runningAfter <= 0 {
		// At once, not by a timer: a handler that returns at once must not win the race
		// and skip the write it was asked for.
		r.markRunning(a)
	} else {
		timer := time.NewTimer(r.runningAfter)
		defer timer.Stop()
		running = timer.C
	}
	for {
		select {
		case o := <-out:
			if a.ctx.Err() != nil {
				o = outcome{err: a.ctx.Err()}
			}
			r.finish(a, o.result, o.err)
			return nil
		case <-running:
			running = nil
			r.markRunning(a)
		case <-a.ctx.Done():
			r.finish(a, "", a.ctx.Err())
			return out
		}
	}
}

// awaitHandler waits for the handler of an attempt whose context ended. One that does not
// return within StopGrace is reported: the agent stops being ready and healthy, because
// it holds a slot it cannot give back until its process restarts.
func (r *runner) awaitHandler(a *attempt, out <-chan outcome) {
	select {
	case <-out:
		return
	case <-time.After(r.opts.StopGrace):
	}
	r.mu.Lock()
	r.stuck[a] = time.Now()
	r.mu.Unlock()
	r.log.Error(errors.New("handler ignores its cancelled context"), "a handler did not return after its task was stopped; the agent reports itself unhealthy until it does",
		"task", a.name, "attempt", a.number, "stopGrace", r.opts.StopGrace)
	<-out
	r.mu.Lock()
	delete(r.stuck, a)
	r.mu.Unlock()
	r.log.Info("a stuck handler returned at last", "task", a.name, "attempt", a.number)
}

func (r *runner) handlerReturned() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handlers--
	if r.handlers == 0 && r.handlersIdle != nil {
		close(r.handlersIdle)
		r.handlersIdle = nil
	}
}

// stuckHandler returns an attempt whose handler ignored its cancellation for longer than
// StopGrace.
func (r *runner) stuckHandler() *attempt {
	r.mu.Lock()
	defer r.mu.Unlock()
	for a := range r.stuck {
		return a
	}
	return nil
}

func (r *runner) markRunning(a *attempt) {
	r.write(a, "mark running", func(t *swarmv1alpha1.Task, now time.Time) (*swarmv1alpha1.TaskStatus, bool) {
		if t.Status.Phase != swarmv1alpha1.TaskAssigned {
			return nil, false
		}
		s := lifecycle.Start(t, now)
		return &s, true
	})
}

// resultTooLarge fails an attempt whose result of n bytes status.result cannot hold. The
// same input would give the same result: another attempt cannot help.
func resultTooLarge(n int) error {
	return &permanentError{reason: swarmv1alpha1.ReasonResultTooLarge, err: fmt.Errorf(
		"the result of %d bytes exceeds the limit of %d; store large outputs elsewhere and return their address",
		n, swarmv1alpha1.MaxResultLength)}
}

// finish writes the outcome of an attempt.
func (r *runner) finish(a *attempt, result string, err error) {
	if err == nil && len(result) > swarmv1alpha1.MaxResultLength {
		err = resultTooLarge(len(result))
	}
	var permanent *permanentError
	switch cause := a.stopCause(); {
	case cause == causeGone:
		return
	case cause == causeShutdown:
		r.writeRelease(a, "released by agent "+r.opts.PodName+", which is shutting down")
	case cause == causeCancelled:
		r.writeCancelled(a, "cancelled while running on agent "+r.opts.PodName)
	case errors.As(err, &permanent):
		// Before the timeout's case: an attempt whose deadline passed reaches here with its
		// context's error alone, so a permanent error that wraps a deadline is the handler's
		// own (a call it made timed out) and keeps its meaning.
		r.write(a, "fail", func(t *swarmv1alpha1.Task, now time.Time) (*swarmv1alpha1.TaskStatus, bool) {
			s := lifecycle.FailPermanently(t, permanent.reason, lifecycle.Truncate(err.Error(), MaxErrorLength), now)
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
	default:
		r.write(a, "succeed", func(t *swarmv1alpha1.Task, now time.Time) (*swarmv1alpha1.TaskStatus, bool) {
			s := lifecycle.Succeed(t, result, now)
			return &s, true
		})
	}
}

func (r *runner) writeRelease(a *attempt, message string) {
	r.write(a, "release", func(t *swarmv1alpha1.Task, now time.Time) (*swarmv1alpha1.TaskStatus, bool) {
		s := lifecycle.Release(t, message, now)
		return &s, true
	})
}

func (r *runner) writeCancelled(a *attempt, message string) {
	r.write(a, "cancel", func(t *swarmv1alpha1.Task, now time.Time) (*swarmv1alpha1.TaskStatus, bool) {
		s := lifecycle.Cancel(t, message, now)
		return &s, true
	})
}

// Status writes that fail are retried with exponential backoff, for at most
// writeRetryTimeout: long enough to ride out an API server restart or a leader election of
// etcd, short enough that an agent cut off from the API server does not hold outcomes the
// operator will have requeued by then anyway.
const writeRetryTimeout = time.Minute

// Why a write stops retrying before it lands.
var (
	errWriteRetryTimeout = fmt.Errorf("the write failed for %s", writeRetryTimeout)
	errShutdownWrites    = errors.New("the agent stopped waiting for its writes as it shut down")
)

// writeBackoff is the wait between the tries of a failed status write: 50ms doubling up to
// 5s, then 5s until writeRetryTimeout, with jitter so that the agents of a hive do not all
// come back at the same instant after the API server was away. Steps is what lets the wait
// grow; once it reaches Cap, it stays there.
var writeBackoff = wait.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: math.MaxInt32, Cap: 5 * time.Second}

// write applies a transition to the task as a compare-and-swap on its resourceVersion. On a
// conflict it reads the task again and retries at once while the task is still this
// agent's attempt; on other errors (a lost connection) it retries with writeBackoff for up
// to writeRetryTimeout, or until shutdown stops waiting for it.
func (r *runner) write(a *attempt, what string, transition func(*swarmv1alpha1.Task, time.Time) (*swarmv1alpha1.TaskStatus, bool)) {
	r.mu.Lock()
	cur := r.latest[a.uid]
	r.mu.Unlock()
	if cur == nil {
		return
	}
	cur = cur.DeepCopy()
	ctx, cancel := context.WithTimeoutCause(r.writes, writeRetryTimeout, errWriteRetryTimeout)
	defer cancel()
	// stale says cur must be read again before the next try: a write failed or conflicted,
	// and it may even have landed although its answer was lost.
	stale := false
	var lastErr error
	try := func(ctx context.Context) (bool, error) {
		for {
			if stale {
				fresh := &swarmv1alpha1.Task{}
				if err := r.writer.Get(ctx, client.ObjectKeyFromObject(cur), fresh); err != nil {
					if apierrors.IsNotFound(err) {
						return true, nil
					}
					// The read failed too (the API server is throttling or away): wait before
					// the next try, which would only conflict again at once.
					r.log.V(1).Info("reading a task to write it again failed; retrying", "task", cur.Name, "write", what, "error", err.Error())
					lastErr = err
					return false, nil
				}
				cur, stale = fresh, false
			}
			if cur.Status.Agent != r.opts.PodName || cur.Status.Attempt != a.number || !cur.Status.Phase.Bound() {
				return true, nil // someone else took the task over: the outcome is no longer ours to write
			}
			status, ok := transition(cur, time.Now())
			if !ok {
				return true, nil
			}
			next := cur.DeepCopy()
			next.Status = *status
			patch, err := statuspatch.Guarded(cur.ResourceVersion, &cur.Status, &next.Status)
			if err == nil {
				err = r.writer.Status().Patch(ctx, next, patch)
			}
			if err == nil {
				r.mu.Lock()
				r.remember(next)
				r.mu.Unlock()
				return true, nil
			}
			lastErr, stale = err, true
			if !apierrors.IsConflict(err) {
				r.log.V(1).Info("task write failed; retrying", "task", cur.Name, "write", what, "error", err.Error())
				return false, nil
			}
			// A conflict: another writer changed the task; apply the transition to its
			// version at once.
		}
	}
	// Until fails only once its context has ended, after a try that failed: lastErr is set.
	if err := writeBackoff.DelayFunc().Until(ctx, true, true, try); err != nil {
		r.log.Error(lastErr, "giving up on a task write", "task", cur.Name, "write", what, "why", context.Cause(ctx).Error())
	}
}

// watchFailed records that the task watch failed. Until a read shows the API server
// reachable again, the agent is not ready: the operator must not bind tasks it cannot see.
func (r *runner) watchFailed(ctx context.Context, ref *toolscache.Reflector, err error) {
	if errors.Is(err, io.EOF) || apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
		// A watch that ends normally or whose resourceVersion expired is resumed by a
		// list at once: nothing is broken.
		toolscache.DefaultWatchErrorHandler(ctx, ref, err)
		return
	}
	r.mu.Lock()
	if r.watchBroken.IsZero() {
		r.watchBroken = time.Now()
	}
	r.watchErr = err
	r.mu.Unlock()
	toolscache.DefaultWatchErrorHandler(ctx, ref, err)
}

// readiness says why the agent should not take tasks, or "" when it may.
func (r *runner) readiness(ctx context.Context) string {
	if a := r.stuckHandler(); a != nil {
		return fmt.Sprintf("the handler of task %s (attempt %d) has not returned since its context was cancelled", a.name, a.number)
	}
	r.mu.Lock()
	ready, broken, werr := r.ready, r.watchBroken, r.watchErr
	r.mu.Unlock()
	if !ready {
		return "not ready"
	}
	if broken.IsZero() {
		return ""
	}
	// The watch failed: list once (cheaply, one item) to see whether the API server
	// answers again; the watch itself recovers by relisting.
	probe := &swarmv1alpha1.TaskList{}
	if err := r.writer.List(ctx, probe, client.InNamespace(r.opts.Namespace),
		client.MatchingFieldsSelector{Selector: TaskSelector(r.opts.PodName)}, client.Limit(1)); err != nil {
		return fmt.Sprintf("the task watch has failed since %s: %v", broken.Format(time.RFC3339), werr)
	}
	r.mu.Lock()
	r.watchBroken, r.watchErr = time.Time{}, nil
	r.mu.Unlock()
	return ""
}

// serveHealth serves /healthz (the process can still work) and /readyz (the agent takes
// tasks).
func (r *runner) serveHealth() (func(), error) {
	if r.opts.HealthAddr == "0" {
		return func() {}, nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if a := r.stuckHandler(); a != nil {
			http.Error(w, fmt.Sprintf("the handler of task %s (attempt %d) ignores its cancellation", a.name, a.number), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, req *http.Request) {
		if why := r.readiness(req.Context()); why != "" {
			http.Error(w, why, http.StatusServiceUnavailable)
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
