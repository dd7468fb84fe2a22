package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/internal/dispatch"
	"github.com/aihub-dev/hive-operator/internal/lifecycle"
	"github.com/aihub-dev/hive-operator/internal/metrics"
	"github.com/aihub-dev/hive-operator/internal/statuspatch"
)

// Dispatcher binds a hive's queued tasks to its agents with free slots. It is keyed by hive:
// one reconcile binds as many tasks as there are free slots, so a burst of task creations,
// which the workqueue folds into a few reconciles of the same key, costs few passes.
type Dispatcher struct {
	client    client.Client
	apiReader client.Reader
	ledger    *dispatch.Ledger
	opts      DispatchOptions

	// seen holds when the dispatcher first saw each task it has not bound yet: creation
	// timestamps have only second precision, too coarse for millisecond queue waits.
	seen sync.Map
	// backoffSeen holds when the dispatcher first saw each task waiting for its retry
	// backoff (a backoffMark), which caps how long the notBefore an agent wrote can hold
	// it (lifecycle.RetryAt).
	backoffSeen sync.Map
}

// DispatchOptions configure a Dispatcher.
type DispatchOptions struct {
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// BindConcurrency is the number of bind requests in flight at once. Default 16.
	BindConcurrency int
	// MaxConcurrentReconciles is the number of hives dispatched at once. Default 4.
	MaxConcurrentReconciles int
	// Metrics, when set, is told of each bind and queue wait.
	Metrics BindMetrics
}

// BindMetrics is told about binds.
type BindMetrics interface {
	// Bound is called for each task bound, with the time it waited in the queue.
	Bound(namespace, hive string, wait time.Duration)
}

// NewDispatcher returns a dispatcher that reads from c (the manager's cache), writes with
// it, and asks apiReader (the API server) whether a bind whose answer was lost went
// through. ledger counts its binds in flight; the hive controller reads the same one.
func NewDispatcher(c client.Client, apiReader client.Reader, ledger *dispatch.Ledger, opts DispatchOptions) *Dispatcher {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.BindConcurrency <= 0 {
		opts.BindConcurrency = 16
	}
	if opts.MaxConcurrentReconciles <= 0 {
		opts.MaxConcurrentReconciles = 4
	}
	return &Dispatcher{client: c, apiReader: apiReader, ledger: ledger, opts: opts}
}

// backoffMark is when the dispatcher first saw a task backing off since it was queued at
// queuedAt.
type backoffMark struct {
	queuedAt time.Time
	at       time.Time
}

// +kubebuilder:rbac:groups=swarm.aihub.dev,resources=tasks/status,verbs=get;update;patch

// Reconcile binds the queued tasks of one hive: observe its tasks (settling the binds the
// cache now shows), decide which go to which agent (internal/dispatch), write the binds.
func (d *Dispatcher) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	hive := &swarmv1alpha1.Hive{}
	if err := d.client.Get(ctx, req.NamespacedName, hive); err != nil {
		if apierrors.IsNotFound(err) {
			d.ledger.Forget(req.String())
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("reading hive: %w", err)
	}
	if hive.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	tasks, err := d.observe(ctx, hive)
	if err != nil {
		return ctrl.Result{}, err
	}
	now := d.opts.Now()
	queue, byUID, wait := d.queue(hive, tasks, now)
	if len(queue) == 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	agents, err := d.agents(ctx, hive, tasks)
	if err != nil {
		return ctrl.Result{}, err
	}
	conflicts, err := d.bind(ctx, hive, dispatch.Assign(queue, agents), byUID, now)
	metrics.LedgerBinds.Set(float64(d.ledger.Size()))
	if err != nil {
		return ctrl.Result{}, err
	}
	if conflicts > 0 {
		// A task changed since the cache showed it. The change may be one no watch event
		// brings back here (a label edit, say), so look again shortly rather than wait.
		wait = shortest(wait, conflictRetry)
	}
	return ctrl.Result{RequeueAfter: wait}, nil
}

// observe returns the hive's unfinished tasks from the cache, after dropping the ledger's
// binds the cache now shows and asking the API server about the doubtful ones.
func (d *Dispatcher) observe(ctx context.Context, hive *swarmv1alpha1.Hive) ([]swarmv1alpha1.Task, error) {
	tasks := &swarmv1alpha1.TaskList{}
	// The listed tasks are read, and copied before any change: skip the cache's copies.
	if err := d.client.List(ctx, tasks, client.InNamespace(hive.Namespace), client.MatchingFields{IndexTaskActiveHive: hive.Name},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing the hive's tasks: %w", err)
	}
	versions := make(map[types.UID]string, len(tasks.Items))
	for i := range tasks.Items {
		versions[tasks.Items[i].UID] = tasks.Items[i].ResourceVersion
	}
	key := client.ObjectKeyFromObject(hive).String()
	d.ledger.Settle(key, func(uid types.UID) (string, bool) {
		rv, ok := versions[uid]
		return rv, ok
	})
	d.resolveDoubts(ctx, hive, key)
	return tasks.Items, nil
}

// conflictRetry is how soon the dispatcher looks at a hive again after a bind conflict.
const conflictRetry = 100 * time.Millisecond

// shortest returns the shorter of two waits, 0 meaning none.
func shortest(a, b time.Duration) time.Duration {
	if a == 0 || (b > 0 && b < a) {
		return b
	}
	return a
}

// resolveDoubts asks the API server about the hive's binds whose outcome is unknown.
func (d *Dispatcher) resolveDoubts(ctx context.Context, hive *swarmv1alpha1.Hive, hiveKey string) {
	for _, b := range d.ledger.Doubtful(hiveKey) {
		fresh := &swarmv1alpha1.Task{}
		err := d.apiReader.Get(ctx, client.ObjectKey{Namespace: hive.Namespace, Name: b.Name}, fresh)
		switch {
		case apierrors.IsNotFound(err):
			d.ledger.Drop(b.Task)
		case err == nil:
			d.ledger.Resolve(b.Task, fresh.ResourceVersion)
		}
	}
}

// queue returns the hive's tasks that may be bound now, in queue order, and how long until
// the next one's backoff ends.
func (d *Dispatcher) queue(hive *swarmv1alpha1.Hive, tasks []swarmv1alpha1.Task, now time.Time) ([]dispatch.Item, map[types.UID]*swarmv1alpha1.Task, time.Duration) {
	var (
		queue []dispatch.Item
		byUID = map[types.UID]*swarmv1alpha1.Task{}
		wait  time.Duration
	)
	for i := range tasks {
		t := &tasks[i]
		if !lifecycle.IsQueued(t) || d.ledger.Holds(t.UID) {
			continue
		}
		ok, backoff := lifecycle.Dispatchable(t, hive.Spec.Agent.Capabilities, now, d.backoffObserved(t, now))
		if !ok {
			wait = shortest(wait, backoff)
			continue
		}
		queue = append(queue, dispatch.Item{Name: t.Name, UID: t.UID, Priority: t.Spec.Priority, Queued: t.CreationTimestamp.Time,
			Requires: t.Spec.RequiredCapabilities})
		byUID[t.UID] = t
	}
	dispatch.Order(queue)
	return queue, byUID, wait
}

// backoffObserved returns when the dispatcher first saw a task waiting for its backoff
// (zero for a task that waits for none).
func (d *Dispatcher) backoffObserved(t *swarmv1alpha1.Task, now time.Time) time.Time {
	if t.Status.NotBefore == nil {
		return time.Time{}
	}
	queued := lifecycle.QueuedSince(t)
	v, loaded := d.backoffSeen.LoadOrStore(t.UID, backoffMark{queuedAt: queued, at: now})
	if m := v.(backoffMark); !loaded || m.queuedAt.Equal(queued) {
		return m.at
	}
	d.backoffSeen.Store(t.UID, backoffMark{queuedAt: queued, at: now})
	return now
}

// agents returns the hive's agents that can take tasks, with their free slots. Agents of
// every revision take tasks, each within its own revision's slots and capabilities (read
// from its pod), so a rollout keeps all the capacity that is ready.
func (d *Dispatcher) agents(ctx context.Context, hive *swarmv1alpha1.Hive, tasks []swarmv1alpha1.Task) ([]dispatch.Agent, error) {
	pods := &corev1.PodList{}
	// The pods are only read: skip the cache's deep copies, which are most of a pass's cost.
	if err := d.client.List(ctx, pods, client.InNamespace(hive.Namespace), client.MatchingFields{IndexPodHive: hive.Name},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing agent pods: %w", err)
	}
	bound := boundTasks(tasks)
	agents := make([]dispatch.Agent, 0, len(pods.Items))
	for i := range pods.Items {
		p := &pods.Items[i]
		ref := metav1.GetControllerOf(p)
		if ref == nil || ref.UID != hive.UID || !agentpod.CanTakeTasks(p) {
			continue
		}
		free := agentpod.Slots(p) - d.ledger.Used(agentKey(p.Namespace, p.Name), bound[p.Name])
		if free > 0 {
			agents = append(agents, dispatch.Agent{Name: p.Name, Free: free, Offers: agentpod.Capabilities(p)})
		}
	}
	return agents, nil
}

// boundTasks returns the tasks bound to each agent.
func boundTasks(tasks []swarmv1alpha1.Task) map[string][]types.UID {
	bound := map[string][]types.UID{}
	for i := range tasks {
		if t := &tasks[i]; t.Status.Phase.Bound() {
			bound[t.Status.Agent] = append(bound[t.Status.Agent], t.UID)
		}
	}
	return bound
}

func agentKey(namespace, pod string) string { return namespace + "/" + pod }

// queuedSince is when a task entered the queue, as precisely as the dispatcher knows it: the
// requeue time for a retry, else when the dispatcher first saw the task, else its creation.
func (d *Dispatcher) queuedSince(t *swarmv1alpha1.Task) time.Time {
	if t.Status.QueuedAt != nil {
		return t.Status.QueuedAt.Time
	}
	if v, ok := d.seen.Load(t.UID); ok {
		return v.(time.Time)
	}
	return t.CreationTimestamp.Time
}

// taskHandler enqueues a task's hive, and notes when a new task was first seen.
func (d *Dispatcher) taskHandler() handler.TypedEventHandler[client.Object, reconcile.Request] {
	enqueue := func(obj client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		for _, req := range taskToHive(context.Background(), obj) {
			q.Add(req)
		}
	}
	return handler.TypedFuncs[client.Object, reconcile.Request]{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if t, ok := e.Object.(*swarmv1alpha1.Task); ok && lifecycle.IsQueued(t) {
				// A task created within the last moments was created about now; an older one
				// is from before this dispatcher started, and its timestamp is good enough.
				now := d.opts.Now()
				if now.Sub(t.CreationTimestamp.Time) < 2*time.Second {
					d.seen.Store(t.UID, now)
				}
			}
			enqueue(e.Object, q)
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if t, ok := e.ObjectNew.(*swarmv1alpha1.Task); ok && t.Status.Phase.Finished() {
				d.seen.Delete(t.UID) // finished without a bind: cancelled, or its dependency failed
				d.backoffSeen.Delete(t.UID)
			}
			enqueue(e.ObjectNew, q)
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			d.seen.Delete(e.Object.GetUID())
			d.backoffSeen.Delete(e.Object.GetUID())
			enqueue(e.Object, q)
		},
		GenericFunc: func(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.Object, q)
		},
	}
}

// bind writes the bindings, BindConcurrency at a time, and returns how many conflicted.
// Each is one status patch guarded by the task's resourceVersion, counted in the ledger
// from before it is sent. A conflict means the task changed since the cache showed it
// (cancelled, deleted, or the cache was stale): the task is left for the next pass. A bind
// whose answer was lost may have gone through: the API server is asked, and the ledger
// keeps the slot taken until it is known.
func (d *Dispatcher) bind(ctx context.Context, hive *swarmv1alpha1.Hive, bindings []dispatch.Binding, tasks map[types.UID]*swarmv1alpha1.Task, now time.Time) (int, error) {
	if len(bindings) == 0 {
		return 0, nil
	}
	hiveKey := client.ObjectKeyFromObject(hive).String()
	work := make(chan dispatch.Binding)
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		errs      []error
		conflicts int
	)
	for range min(d.opts.BindConcurrency, len(bindings)) {
		wg.Go(func() {
			for b := range work {
				t := tasks[b.Task.UID]
				d.ledger.Reserve(hiveKey, agentKey(hive.Namespace, b.Agent), t.UID, t.ResourceVersion)
				bound := t.DeepCopy()
				bound.Status = lifecycle.Bind(t, b.Agent, now)
				patch, err := statuspatch.Guarded(t.ResourceVersion, &t.Status, &bound.Status)
				if err == nil {
					err = d.client.Status().Patch(ctx, bound, patch)
				}
				if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && lostAnswer(err) {
					err = d.confirmBind(ctx, t, bound, err)
				}
				if err != nil {
					log.FromContext(ctx).V(2).Info("a bind failed", "task", klog.KObj(t), "agent", b.Agent, "error", err.Error())
					if !d.ledger.IsDoubtful(t.UID) {
						d.ledger.Drop(t.UID)
					}
					mu.Lock()
					switch {
					case apierrors.IsConflict(err):
						conflicts++
					case apierrors.IsNotFound(err):
					default:
						errs = append(errs, fmt.Errorf("binding task %s to agent %s: %w", t.Name, b.Agent, err))
					}
					mu.Unlock()
					continue
				}
				log.FromContext(ctx).V(2).Info("bound task", "task", klog.KObj(t), "agent", b.Agent, "attempt", bound.Status.Attempt)
				if d.opts.Metrics != nil {
					d.opts.Metrics.Bound(hive.Namespace, hive.Name, now.Sub(d.queuedSince(t)))
				}
				d.seen.Delete(t.UID)
				d.backoffSeen.Delete(t.UID)
			}
		})
	}
	for _, b := range bindings {
		work <- b
	}
	close(work)
	wg.Wait()
	if len(errs) > 0 || conflicts > 0 {
		log.FromContext(ctx).V(1).Info("some binds failed; retrying", "failed", len(errs), "conflicts", conflicts, "bound", len(bindings)-len(errs)-conflicts)
	}
	return conflicts, errors.Join(errs...)
}

// lostAnswer reports whether a failed request may have been carried out: the error is not
// the API server's answer (a timeout, a connection lost on the way back) or a server error
// that may come after the write.
func lostAnswer(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return true
	}
	return apierrors.IsInternalError(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsServiceUnavailable(err)
}

// confirmBind reads a task whose bind got no answer: nil when the bind went through (the
// task is bound as the patch asked), the original error when it did not, and the read's
// error when the API server cannot tell.
func (d *Dispatcher) confirmBind(ctx context.Context, before, bound *swarmv1alpha1.Task, bindErr error) error {
	fresh := &swarmv1alpha1.Task{}
	if err := d.apiReader.Get(ctx, client.ObjectKeyFromObject(before), fresh); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("the task went away: %w", err)
		}
		// Unknown: keep the slot taken; the cache shows the truth soon and the ledger then
		// settles. Not releasing it errs on the side of an idle slot, never an over-bind.
		d.ledger.Doubt(before.UID, before.Name)
		return errors.Join(bindErr, fmt.Errorf("checking whether the bind went through: %w", err))
	}
	if fresh.ResourceVersion != before.ResourceVersion && fresh.Status.Agent == bound.Status.Agent &&
		fresh.Status.Attempt == bound.Status.Attempt && fresh.Status.Phase.Bound() {
		return nil
	}
	return bindErr
}

// SetupWithManager registers the dispatcher and its watches.
func (d *Dispatcher) SetupWithManager(mgr ctrl.Manager) error {
	err := ctrl.NewControllerManagedBy(mgr).
		Named("dispatcher").
		For(&swarmv1alpha1.Hive{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&swarmv1alpha1.Task{}, d.taskHandler(), builder.WithPredicates(slotOrQueueChanged())).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(podToHive), builder.WithPredicates(agentAvailabilityChanged())).
		WithOptions(controller.Options{MaxConcurrentReconciles: d.opts.MaxConcurrentReconciles}).
		Complete(d)
	if err != nil {
		return fmt.Errorf("setting up the dispatcher: %w", err)
	}
	return nil
}

// slotOrQueueChanged passes the task events that may let the dispatcher bind something: a
// task created, deleted, queued again, or leaving a slot; changes of cancellation; and a
// task's dependencies recorded met (its dependencies may have run in another hive, whose
// events never reach this hive's queue).
func slotOrQueueChanged() predicate.Predicate {
	return updatesWhere(func(o, n *swarmv1alpha1.Task) bool {
		// Assigned → Running changes nothing for the queue.
		if o.Status.Phase.Bound() && n.Status.Phase.Bound() && o.Status.Agent == n.Status.Agent {
			return false
		}
		return o.Status.Phase != n.Status.Phase || o.Status.Agent != n.Status.Agent ||
			o.Spec.Cancel != n.Spec.Cancel || !o.Status.NotBefore.Equal(n.Status.NotBefore) ||
			lifecycle.DependenciesSatisfied(o) != lifecycle.DependenciesSatisfied(n)
	})
}

// podToHive maps an agent pod to the hive that controls it.
func podToHive(_ context.Context, obj client.Object) []ctrl.Request {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil
	}
	name, ok := agentpod.ControllerHive(pod)
	if !ok {
		return nil
	}
	return []ctrl.Request{{NamespacedName: types.NamespacedName{Namespace: pod.Namespace, Name: name}}}
}

// agentAvailabilityChanged passes pod events that change whether an agent takes tasks.
func agentAvailabilityChanged() predicate.Predicate {
	return updatesWhere(func(o, n *corev1.Pod) bool {
		return agentpod.CanTakeTasks(o) != agentpod.CanTakeTasks(n) || agentpod.Revision(o) != agentpod.Revision(n)
	})
}
