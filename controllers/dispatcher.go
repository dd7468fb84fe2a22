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
	"github.com/aihub-dev/hive-operator/internal/revision"
	"github.com/aihub-dev/hive-operator/internal/statuspatch"
)

// Dispatcher binds a hive's queued tasks to its agents with free slots. It is keyed by hive:
// one reconcile binds as many tasks as there are free slots, so a burst of task creations,
// which the workqueue folds into a few reconciles of the same key, costs few passes.
type Dispatcher struct {
	// Client reads from the manager's cache and writes to the API server.
	Client client.Client
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// BindConcurrency is the number of bind requests in flight at once. Default 16.
	BindConcurrency int
	// MaxConcurrentReconciles is the number of hives dispatched at once. Default 4.
	MaxConcurrentReconciles int
	// Observer, when set, is told of each bind and queue wait (for metrics).
	Observer BindObserver

	ledger *dispatch.Ledger
	// seen holds when the dispatcher first saw each task it has not bound yet: creation
	// timestamps have only second precision, too coarse for millisecond queue waits.
	seen sync.Map
}

// BindObserver is told about binds, for metrics.
type BindObserver interface {
	// Bound is called for each task bound, with the time it waited in the queue.
	Bound(namespace, hive string, wait time.Duration)
}

// +kubebuilder:rbac:groups=swarm.aihub.dev,resources=tasks/status,verbs=get;update;patch

// Reconcile binds the queued tasks of one hive.
func (d *Dispatcher) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	hiveKey := req.String()
	hive := &swarmv1alpha1.Hive{}
	if err := d.Client.Get(ctx, req.NamespacedName, hive); err != nil {
		if apierrors.IsNotFound(err) {
			d.ledger.Forget(hiveKey)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("reading hive: %w", err)
	}
	if hive.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}

	tasks := &swarmv1alpha1.TaskList{}
	// The listed tasks are read, and copied before any change: skip the cache's copies.
	if err := d.Client.List(ctx, tasks, client.InNamespace(hive.Namespace), client.MatchingFields{IndexTaskActiveHive: hive.Name},
		client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing the hive's tasks: %w", err)
	}
	versions := make(map[types.UID]string, len(tasks.Items))
	for i := range tasks.Items {
		versions[tasks.Items[i].UID] = tasks.Items[i].ResourceVersion
	}
	d.ledger.Settle(hiveKey, func(uid types.UID) (string, bool) {
		rv, ok := versions[uid]
		return rv, ok
	})

	now := d.Now()
	queue, byUID, wait, err := d.queue(ctx, hive, tasks.Items, now)
	if err != nil {
		return ctrl.Result{}, err
	}
	if len(queue) == 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	agents, err := d.agents(ctx, hive, tasks.Items)
	if err != nil {
		return ctrl.Result{}, err
	}
	bindings := dispatch.Assign(queue, agents)
	err = d.bind(ctx, hive, bindings, byUID, now)
	metrics.LedgerBinds.Set(float64(d.ledger.Size()))
	if err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: wait}, nil
}

// queue returns the hive's tasks that may be bound now, in queue order, and how long until
// the next one's backoff ends.
func (d *Dispatcher) queue(ctx context.Context, hive *swarmv1alpha1.Hive, tasks []swarmv1alpha1.Task, now time.Time) ([]dispatch.Item, map[types.UID]*swarmv1alpha1.Task, time.Duration, error) {
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
		deps, err := d.dependencies(ctx, t)
		if err != nil {
			return nil, nil, 0, err
		}
		ok, backoff := lifecycle.Dispatchable(t, hive, deps, now)
		if !ok {
			if backoff > 0 && (wait == 0 || backoff < wait) {
				wait = backoff
			}
			continue
		}
		queue = append(queue, dispatch.Item{Name: t.Name, UID: t.UID, Priority: t.Spec.Priority, Queued: t.CreationTimestamp.Time})
		byUID[t.UID] = t
	}
	dispatch.Order(queue)
	return queue, byUID, wait, nil
}

func (d *Dispatcher) dependencies(ctx context.Context, t *swarmv1alpha1.Task) (map[string]*swarmv1alpha1.Task, error) {
	if len(t.Spec.DependsOn) == 0 {
		return nil, nil
	}
	deps := make(map[string]*swarmv1alpha1.Task, len(t.Spec.DependsOn))
	for _, name := range t.Spec.DependsOn {
		dep := &swarmv1alpha1.Task{}
		err := d.Client.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: name}, dep)
		switch {
		case apierrors.IsNotFound(err):
			deps[name] = nil
		case err != nil:
			return nil, fmt.Errorf("reading dependency %s of task %s: %w", name, t.Name, err)
		default:
			deps[name] = dep
		}
	}
	return deps, nil
}

// agents returns the hive's agents that can take tasks, with their free slots. Agents of the
// current revision are used; older ones only while a rollout has none ready yet.
func (d *Dispatcher) agents(ctx context.Context, hive *swarmv1alpha1.Hive, tasks []swarmv1alpha1.Task) ([]dispatch.Agent, error) {
	pods := &corev1.PodList{}
	// The pods are only read: skip the cache's deep copies, which are most of a pass's cost.
	if err := d.Client.List(ctx, pods, client.InNamespace(hive.Namespace), client.MatchingFields{IndexPodHive: hive.Name},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing agent pods: %w", err)
	}
	rev := revision.Of(&hive.Spec.Template, &hive.Spec.Agent)
	var current, older []*corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		ref := metav1.GetControllerOf(p)
		if ref == nil || ref.UID != hive.UID || !agentpod.CanTakeTasks(p) {
			continue
		}
		if agentpod.Revision(p) == rev {
			current = append(current, p)
		} else {
			older = append(older, p)
		}
	}
	if len(current) == 0 {
		current = older
	}
	bound := map[string][]types.UID{}
	for i := range tasks {
		if t := &tasks[i]; t.Status.Phase.Bound() {
			bound[t.Status.Agent] = append(bound[t.Status.Agent], t.UID)
		}
	}
	concurrency := int(max(hive.Spec.Agent.Concurrency, 1))
	agents := make([]dispatch.Agent, 0, len(current))
	for _, p := range current {
		free := concurrency - d.ledger.Used(agentKey(p.Namespace, p.Name), bound[p.Name])
		if free > 0 {
			agents = append(agents, dispatch.Agent{Name: p.Name, Free: free})
		}
	}
	return agents, nil
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
				now := d.Now()
				if now.Sub(t.CreationTimestamp.Time) < 2*time.Second {
					d.seen.Store(t.UID, now)
				}
			}
			enqueue(e.Object, q)
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if t, ok := e.ObjectNew.(*swarmv1alpha1.Task); ok && t.Status.Phase.Finished() {
				d.seen.Delete(t.UID) // finished without a bind: cancelled, or its dependency failed
			}
			enqueue(e.ObjectNew, q)
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			d.seen.Delete(e.Object.GetUID())
			enqueue(e.Object, q)
		},
		GenericFunc: func(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.Object, q)
		},
	}
}

// bind writes the bindings, BindConcurrency at a time. Each is one status patch guarded by
// the task's resourceVersion, counted in the ledger from before it is sent. A conflict means
// the task changed since the cache showed it (cancelled, deleted, or the cache was stale):
// the task is left for the next pass.
func (d *Dispatcher) bind(ctx context.Context, hive *swarmv1alpha1.Hive, bindings []dispatch.Binding, tasks map[types.UID]*swarmv1alpha1.Task, now time.Time) error {
	if len(bindings) == 0 {
		return nil
	}
	hiveKey := client.ObjectKeyFromObject(hive).String()
	work := make(chan dispatch.Binding)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for range min(d.BindConcurrency, len(bindings)) {
		wg.Go(func() {
			for b := range work {
				t := tasks[b.Task.UID]
				d.ledger.Reserve(hiveKey, agentKey(hive.Namespace, b.Agent), t.UID, t.ResourceVersion)
				bound := t.DeepCopy()
				bound.Status = lifecycle.Bind(t, b.Agent, now)
				patch, err := statuspatch.Guarded(t.ResourceVersion, &t.Status, &bound.Status)
				if err == nil {
					err = d.Client.Status().Patch(ctx, bound, patch)
				}
				if err != nil {
					d.ledger.Release(t.UID)
					if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
						mu.Lock()
						errs = append(errs, fmt.Errorf("binding task %s to agent %s: %w", t.Name, b.Agent, err))
						mu.Unlock()
					}
					continue
				}
				if d.Observer != nil {
					d.Observer.Bound(hive.Namespace, hive.Name, now.Sub(d.queuedSince(t)))
				}
				d.seen.Delete(t.UID)
			}
		})
	}
	for _, b := range bindings {
		work <- b
	}
	close(work)
	wg.Wait()
	if len(errs) > 0 {
		log.FromContext(ctx).V(1).Info("some binds failed; retrying", "failed", len(errs), "bound", len(bindings)-len(errs))
	}
	return errors.Join(errs...)
}

// SetupWithManager registers the dispatcher and its watches.
func (d *Dispatcher) SetupWithManager(mgr ctrl.Manager) error {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.BindConcurrency <= 0 {
		d.BindConcurrency = 16
	}
	if d.MaxConcurrentReconciles <= 0 {
		d.MaxConcurrentReconciles = 4
	}
	d.ledger = dispatch.NewLedger()
	err := ctrl.NewControllerManagedBy(mgr).
		Named("dispatcher").
		For(&swarmv1alpha1.Hive{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&swarmv1alpha1.Task{}, d.taskHandler(), builder.WithPredicates(slotOrQueueChanged())).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(podToHive), builder.WithPredicates(agentAvailabilityChanged())).
		WithOptions(controller.Options{MaxConcurrentReconciles: d.MaxConcurrentReconciles}).
		Complete(d)
	if err != nil {
		return fmt.Errorf("setting up the dispatcher: %w", err)
	}
	return nil
}

// slotOrQueueChanged passes the task events that may let the dispatcher bind something: a
// task created, deleted, queued again, or leaving a slot; and changes of cancellation.
func slotOrQueueChanged() predicate.Predicate {
	return updatesWhere(func(o, n *swarmv1alpha1.Task) bool {
		// Assigned → Running changes nothing for the queue.
		if o.Status.Phase.Bound() && n.Status.Phase.Bound() && o.Status.Agent == n.Status.Agent {
			return false
		}
		return o.Status.Phase != n.Status.Phase || o.Status.Agent != n.Status.Agent ||
			o.Spec.Cancel != n.Spec.Cancel || !o.Status.NotBefore.Equal(n.Status.NotBefore)
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
