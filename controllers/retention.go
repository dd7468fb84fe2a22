package controllers

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/lifecycle"
)

// RetentionReconciler deletes finished tasks once their time is up: their own
// ttlSecondsAfterFinished, else their hive's spec.taskRetention, and the oldest first past
// the hive's maxFinishedTasks. A finished task that unfinished tasks depend on is kept
// until they finish.
//
// The manager's cache holds only unfinished tasks, so that the operator's memory and
// start-up follow the work in flight rather than the history kept. Finished tasks reach
// this controller two ways, neither of which keeps them in memory: a watch of the tasks
// that finish while it runs (which also counts their outcomes), and a sweep that lists
// every finished task a page at a time, at start and then every SweepInterval, for those
// that finished before, those due later than one interval when they finished, and the
// caps. A task due within one interval waits in the workqueue; a reconcile reads it from
// the API server and decides by the same rule (lifecycle.Decide).
type RetentionReconciler struct {
	client    client.Client
	apiReader client.Reader
	lister    client.WithWatch
	opts      RetentionOptions
	deletes   *rate.Limiter
}

// RetentionOptions configure a RetentionReconciler.
type RetentionOptions struct {
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Namespaces are the namespaces whose tasks are watched and swept; all when empty.
	Namespaces []string
	// SweepInterval is how often the finished tasks are swept. Default 5m.
	SweepInterval time.Duration
	// PageSize is the number of tasks a sweep lists at a time. Default 500.
	PageSize int64
	// DeletesPerSecond bounds the deletions of the sweeps, so that a backlog of expired
	// history does not take the API server's writes from the work in flight. Default 50.
	DeletesPerSecond float64
	// MaxConcurrentReconciles is the number of tasks reconciled at once. Default 4.
	MaxConcurrentReconciles int
	// Metrics, when set, is told of each task that finishes while the operator runs.
	Metrics FinishMetrics
}

// FinishMetrics is told of the tasks that finish.
type FinishMetrics interface {
	// Finished is called once for each task that finishes, with its final status.
	Finished(task *swarmv1alpha1.Task)
}

// NewRetentionReconciler returns a retention controller that reads hives and unfinished
// tasks from c (the manager's cache) and writes with it, reads a finished task from
// apiReader, and lists and watches finished tasks with lister.
func NewRetentionReconciler(c client.Client, apiReader client.Reader, lister client.WithWatch, opts RetentionOptions) *RetentionReconciler {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if len(opts.Namespaces) == 0 {
		opts.Namespaces = []string{metav1.NamespaceAll}
	}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = 5 * time.Minute
	}
	if opts.PageSize <= 0 {
		opts.PageSize = 500
	}
	if opts.DeletesPerSecond <= 0 {
		opts.DeletesPerSecond = 50
	}
	if opts.MaxConcurrentReconciles <= 0 {
		opts.MaxConcurrentReconciles = 4
	}
	return &RetentionReconciler{
		client: c, apiReader: apiReader, lister: lister, opts: opts,
		deletes: rate.NewLimiter(rate.Limit(opts.DeletesPerSecond), max(int(opts.DeletesPerSecond), 1)),
	}
}

// Reconcile deletes one finished task if its time is up, or looks again when it will be.
func (r *RetentionReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	task := &swarmv1alpha1.Task{}
	if err := r.apiReader.Get(ctx, req.NamespacedName, task); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("reading finished task: %w", err)
	}
	if !task.Status.Phase.Finished() {
		return ctrl.Result{}, nil
	}
	d, err := r.decide(ctx, task, nil)
	switch {
	case err != nil:
		return ctrl.Result{}, err
	case d.Delete:
		return r.delete(ctx, task, "its retention has passed")
	case r.dueWithinSweep(d):
		return ctrl.Result{RequeueAfter: d.RequeueAfter}, nil
	}
	return ctrl.Result{}, nil // a later sweep looks again
}

// decide applies lifecycle.Decide to a finished task, with its hive's retention (hives, a
// cache of the hives already read, may be nil) and, once it is due, its unfinished
// dependents: a sweep meets mostly tasks that are not due, which need no list.
func (r *RetentionReconciler) decide(ctx context.Context, task *swarmv1alpha1.Task, hives map[types.NamespacedName]*swarmv1alpha1.Hive) (lifecycle.Decision, error) {
	hive, err := r.hive(ctx, task, hives)
	if err != nil {
		return lifecycle.Decision{}, err
	}
	retention := swarmv1alpha1.DefaultTaskRetention
	if hive != nil {
		retention = hive.Spec.TaskRetentionOrDefault()
	}
	obs := lifecycle.Observed{Now: r.opts.Now(), Retention: retention}
	d := lifecycle.Decide(task, obs)
	if !d.Delete {
		return d, nil
	}
	if obs.Dependents, err = unfinishedDependents(ctx, r.client, task); err != nil {
		return lifecycle.Decision{}, err
	}
	return lifecycle.Decide(task, obs), nil
}

// hive reads a task's hive from the cache (nil when it does not exist), through hives.
// A sweep of every namespace meets hives of the same name: they are told apart by their
// namespace.
func (r *RetentionReconciler) hive(ctx context.Context, task *swarmv1alpha1.Task, hives map[types.NamespacedName]*swarmv1alpha1.Hive) (*swarmv1alpha1.Hive, error) {
	key := hiveOf(task)
	if h, ok := hives[key]; ok {
		return h, nil
	}
	h := &swarmv1alpha1.Hive{}
	err := r.client.Get(ctx, key, h)
	switch {
	case apierrors.IsNotFound(err):
		h = nil
	case err != nil:
		return nil, fmt.Errorf("reading hive %s: %w", task.Spec.Hive, err)
	}
	if hives != nil {
		hives[key] = h
	}
	return h, nil
}

// hiveOf is the key of a task's hive.
func hiveOf(task *swarmv1alpha1.Task) types.NamespacedName {
	return types.NamespacedName{Namespace: task.Namespace, Name: task.Spec.Hive}
}

// unfinishedDependents counts the tasks that depend on a task and have not finished.
func unfinishedDependents(ctx context.Context, c client.Reader, task *swarmv1alpha1.Task) (int, error) {
	list := &swarmv1alpha1.TaskList{}
	if err := c.List(ctx, list, client.InNamespace(task.Namespace), client.MatchingFields{IndexTaskDependsOn: task.Name},
		client.UnsafeDisableDeepCopy); err != nil {
		return 0, fmt.Errorf("listing the tasks that depend on %s: %w", task.Name, err)
	}
	return len(list.Items), nil
}

// delete deletes a finished task at the version it was decided on: a task that changed
// meanwhile is looked at again.
func (r *RetentionReconciler) delete(ctx context.Context, task *swarmv1alpha1.Task, why string) (ctrl.Result, error) {
	uid, rv := task.UID, task.ResourceVersion
	if err := r.client.Delete(ctx, task, client.Preconditions{UID: &uid, ResourceVersion: &rv}); err != nil && !apierrors.IsNotFound(err) {
		if apierrors.IsConflict(err) {
			return ctrl.Result{RequeueAfter: time.Second}, nil
		}
		return ctrl.Result{}, fmt.Errorf("deleting finished task: %w", err)
	}
	log.FromContext(ctx).V(2).Info("deleted a finished task", "task", klog.KObj(task), "phase", task.Status.Phase, "why", why)
	return ctrl.Result{}, nil
}

// SetupWithManager registers the controller, fed by the watch and the sweeps of every
// namespace it serves.
func (r *RetentionReconciler) SetupWithManager(mgr ctrl.Manager) error {
	err := ctrl.NewControllerManagedBy(mgr).
		Named("retention").
		WatchesRawSource(source.Func(func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
			for _, ns := range r.opts.Namespaces {
				go r.follow(ctx, q, ns)
			}
			return nil
		})).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.opts.MaxConcurrentReconciles}).
		Complete(r)
	if err != nil {
		return fmt.Errorf("setting up the retention controller: %w", err)
	}
	return nil
}

// follow watches the tasks of a namespace that finish, and sweeps its finished tasks at
// start, every SweepInterval, and whenever the watch had to start again from the present
// (its place in history was compacted away), until ctx ends.
func (r *RetentionReconciler) follow(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], ns string) {
	logger := log.FromContext(ctx).WithValues("controller", "retention", "namespace", ns)
	ctx = log.IntoContext(ctx, logger)
	resweep := make(chan struct{}, 1)
	go func() {
		timer := time.NewTimer(0)
		defer timer.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			case <-resweep:
			}
			if err := r.sweep(ctx, q, ns); err != nil && ctx.Err() == nil {
				logger.Error(err, "sweeping the finished tasks; trying again at the next sweep")
			}
			timer.Reset(wait.Jitter(r.opts.SweepInterval, 0.1))
		}
	}()
	fresh := wait.Backoff{Duration: time.Second, Factor: 2, Steps: 8, Cap: time.Minute}
	backoff := fresh
	for ctx.Err() == nil {
		started := time.Now()
		err := r.watch(ctx, q, ns)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > fresh.Cap {
			backoff = fresh // a watch that lasted starts a new series of retries
		}
		logger.V(2).Info("the watch of finished tasks starts again from the present; sweeping", "reason", err)
		select {
		case resweep <- struct{}{}:
		default:
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff.Step()):
		}
	}
}

// watch follows the tasks of a namespace that finish from the present on, until the
// watch cannot go on (its resourceVersion is gone, or listing failed).
func (r *RetentionReconciler) watch(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], ns string) error {
	finished := client.MatchingFieldsSelector{Selector: swarmv1alpha1.FinishedTasks()}
	now := &swarmv1alpha1.TaskList{}
	if err := r.lister.List(ctx, now, client.InNamespace(ns), finished, client.Limit(1)); err != nil {
		return fmt.Errorf("reading the present resourceVersion: %w", err)
	}
	w, err := watchtools.NewRetryWatcherWithContext(ctx, now.ResourceVersion, &toolscache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return r.lister.Watch(ctx, &swarmv1alpha1.TaskList{}, &client.ListOptions{Namespace: ns, FieldSelector: finished.Selector, Raw: &o})
		},
	})
	if err != nil {
		return fmt.Errorf("watching finished tasks: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				return errors.New("the watch ended")
			}
			switch ev.Type {
			case watch.Error:
				return fmt.Errorf("watching finished tasks: %w", apierrors.FromObject(ev.Object))
			case watch.Added: // a task entered a finished phase
				if task, ok := ev.Object.(*swarmv1alpha1.Task); ok {
					r.finished(ctx, q, task)
				}
			}
		}
	}
}

// finished counts a task that just finished, schedules its deletion when it is due
// within one sweep, and looks again at the tasks it depended on, whose deletion may have
// waited for it.
func (r *RetentionReconciler) finished(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], task *swarmv1alpha1.Task) {
	if r.opts.Metrics != nil {
		r.opts.Metrics.Finished(task)
	}
	d, err := r.decide(ctx, task, nil)
	if err != nil {
		log.FromContext(ctx).Error(err, "deciding the retention of a task that finished; the next sweep looks at it", "task", klog.KObj(task))
	} else {
		r.schedule(q, task, d)
	}
	for _, name := range task.Spec.DependsOn {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: task.Namespace, Name: name}})
	}
}

// dueWithinSweep reports whether a task not due yet is due before the next sweep would
// look at it: such a task waits in the workqueue, the others for a sweep.
func (r *RetentionReconciler) dueWithinSweep(d lifecycle.Decision) bool {
	return d.RequeueAfter > 0 && d.RequeueAfter <= r.opts.SweepInterval
}

// schedule puts a task due within one sweep into the workqueue at its time, and reports
// whether it did so for later.
func (r *RetentionReconciler) schedule(q workqueue.TypedRateLimitingInterface[reconcile.Request], task *swarmv1alpha1.Task, d lifecycle.Decision) bool {
	req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(task)}
	switch {
	case d.Delete:
		q.Add(req)
	case r.dueWithinSweep(d):
		q.AddAfter(req, d.RequeueAfter)
		return true
	}
	return false
}

// sweep lists the finished tasks of a namespace a page at a time: it deletes those whose
// time is up and, per hive with a maxFinishedTasks, those past the cap that finished
// first; it schedules those due within the next sweep. It holds no more than a page, and
// per capped hive as many small records as its cap.
func (r *RetentionReconciler) sweep(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], ns string) error {
	hives, kept := map[types.NamespacedName]*swarmv1alpha1.Hive{}, map[types.NamespacedName]*newestFinished{}
	var scheduled int
	opts := []client.ListOption{client.InNamespace(ns), client.MatchingFieldsSelector{Selector: swarmv1alpha1.FinishedTasks()}, client.Limit(r.opts.PageSize)}
	for cont := ""; ; {
		page := &swarmv1alpha1.TaskList{}
		if err := r.lister.List(ctx, page, append(opts, client.Continue(cont))...); err != nil {
			return fmt.Errorf("listing finished tasks: %w", err)
		}
		for i := range page.Items {
			task := &page.Items[i]
			d, err := r.decide(ctx, task, hives)
			if err != nil {
				return err
			}
			if d.Delete {
				if err := r.sweepDelete(ctx, task, "its retention has passed"); err != nil {
					return err
				}
				continue
			}
			if r.schedule(q, task, d) {
				scheduled++
			}
			if err := r.keepNewest(ctx, kept, hives[hiveOf(task)], task); err != nil {
				return err
			}
		}
		if cont = page.Continue; cont == "" {
			break
		}
	}
	log.FromContext(ctx).V(2).Info("swept the finished tasks", "scheduled", scheduled)
	return nil
}

// keepNewest counts a finished task against its hive's maxFinishedTasks, and deletes the
// task that finished first once the hive has more (unless unfinished tasks depend on it).
func (r *RetentionReconciler) keepNewest(ctx context.Context, kept map[types.NamespacedName]*newestFinished, hive *swarmv1alpha1.Hive, task *swarmv1alpha1.Task) error {
	if hive == nil {
		return nil
	}
	limit, ok := hive.Spec.MaxFinishedTasks()
	if !ok {
		return nil
	}
	key := client.ObjectKeyFromObject(hive)
	if kept[key] == nil {
		kept[key] = &newestFinished{limit: limit}
	}
	out, over := kept[key].add(task)
	if !over {
		return nil
	}
	first := out.task()
	n, err := unfinishedDependents(ctx, r.client, first)
	if err != nil || n > 0 {
		return err
	}
	return r.sweepDelete(ctx, first, fmt.Sprintf("its hive keeps its %d newest finished tasks", limit))
}

// sweepDelete deletes a finished task the sweep listed, at the pace the sweeps may delete.
func (r *RetentionReconciler) sweepDelete(ctx context.Context, task *swarmv1alpha1.Task, why string) error {
	if err := r.deletes.Wait(ctx); err != nil {
		return fmt.Errorf("waiting to delete: %w", err)
	}
	_, err := r.delete(ctx, task, why)
	return err
}

// finishedRecord is what the sweep keeps of a finished task of a capped hive.
type finishedRecord struct {
	namespace, name string
	uid             types.UID
	resourceVersion string
	finishedAt      time.Time
}

// task is the record as a task to delete, at the version the sweep saw.
func (t finishedRecord) task() *swarmv1alpha1.Task {
	return &swarmv1alpha1.Task{ObjectMeta: metav1.ObjectMeta{Namespace: t.namespace, Name: t.name, UID: t.uid, ResourceVersion: t.resourceVersion}}
}

// newestFinished keeps the limit newest finished tasks of a hive seen so far: a min-heap by
// finish time, whose top is the oldest kept.
type newestFinished struct {
	limit int
	heap  finishedHeap
}

// add keeps a task among the newest, and returns the record that falls out when there are
// more than the limit: the oldest of them.
func (n *newestFinished) add(task *swarmv1alpha1.Task) (finishedRecord, bool) {
	heap.Push(&n.heap, finishedRecord{task.Namespace, task.Name, task.UID, task.ResourceVersion, lifecycle.FinishedAt(task)})
	if n.heap.Len() <= n.limit {
		return finishedRecord{}, false
	}
	return heap.Pop(&n.heap).(finishedRecord), true
}

type finishedHeap []finishedRecord

func (h finishedHeap) Len() int { return len(h) }
func (h finishedHeap) Less(i, j int) bool {
	if !h[i].finishedAt.Equal(h[j].finishedAt) {
		return h[i].finishedAt.Before(h[j].finishedAt)
	}
	return h[i].name < h[j].name
}
func (h finishedHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *finishedHeap) Push(x any)   { *h = append(*h, x.(finishedRecord)) }
func (h *finishedHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
