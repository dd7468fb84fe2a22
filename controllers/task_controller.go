package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/internal/lifecycle"
	"github.com/aihub-dev/hive-operator/internal/statuspatch"
)

// TaskReconciler runs the parts of an unfinished task's life that are the operator's: it
// reports tasks their hive cannot run, holds tasks behind their dependencies, times out
// attempts, requeues the tasks of lost agents and cancels queued tasks. Binding is the
// Dispatcher's; running and finishing are the agent's; deleting finished tasks is the
// RetentionReconciler's.
type TaskReconciler struct {
	client    client.Client
	apiReader client.Reader
	recorder  events.EventRecorder
	opts      TaskOptions
}

// TaskOptions configure a TaskReconciler.
type TaskOptions struct {
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// AgentLostGrace is how long an agent may stay not ready before its tasks are requeued.
	// Default 15s.
	AgentLostGrace time.Duration
	// TimeoutGrace lets an agent report its own timeout before the operator does. Default 2s.
	TimeoutGrace time.Duration
	// MissingDependencyTimeout is how long a task waits for a task named in its dependsOn
	// that does not exist before it fails. Default 5m.
	MissingDependencyTimeout time.Duration
	// MaxConcurrentReconciles is the number of tasks reconciled at once. Default 8.
	MaxConcurrentReconciles int
	// Metrics, when set, is told of the attempts the operator fails.
	Metrics TaskMetrics
}

// TaskMetrics is told of the operator's task decisions.
type TaskMetrics interface {
	// AttemptFailed is called when the operator fails an attempt (TimedOut, AgentLost).
	AttemptFailed(namespace, hive, reason string)
}

// NewTaskReconciler returns a task controller that reads from c (the manager's cache, which
// holds only unfinished tasks) and writes with it, and reads the dependencies the cache does
// not hold, because they finished, from apiReader (the API server).
func NewTaskReconciler(c client.Client, apiReader client.Reader, recorder events.EventRecorder, opts TaskOptions) *TaskReconciler {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.AgentLostGrace <= 0 {
		opts.AgentLostGrace = 15 * time.Second
	}
	if opts.TimeoutGrace <= 0 {
		opts.TimeoutGrace = 2 * time.Second
	}
	if opts.MissingDependencyTimeout <= 0 {
		opts.MissingDependencyTimeout = 5 * time.Minute
	}
	if opts.MaxConcurrentReconciles <= 0 {
		opts.MaxConcurrentReconciles = 8
	}
	return &TaskReconciler{client: c, apiReader: apiReader, recorder: recorder, opts: opts}
}

// +kubebuilder:rbac:groups=swarm.aihub.dev,resources=tasks,verbs=get;list;watch;delete

// Reconcile applies the operator's rules to one task: observe its surroundings in the
// cache, decide (internal/lifecycle), write the decision.
func (r *TaskReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	task := &swarmv1alpha1.Task{}
	if err := r.client.Get(ctx, req.NamespacedName, task); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("reading task: %w", err)
	}
	if task.Status.Phase.Finished() {
		return ctrl.Result{}, nil // the RetentionReconciler's
	}
	obs, err := r.observe(ctx, task)
	if err != nil {
		return ctrl.Result{}, err
	}
	return r.apply(ctx, task, lifecycle.Decide(task, obs))
}

// apply writes a decision: the task's new status (a compare-and-swap: a task that changed
// meanwhile is decided again from its new version, which the watch delivers), then the
// decision's event.
func (r *TaskReconciler) apply(ctx context.Context, task *swarmv1alpha1.Task, d lifecycle.Decision) (ctrl.Result, error) {
	logger := log.FromContext(ctx).WithValues("task", klog.KObj(task))
	if d.Status != nil {
		next := task.DeepCopy()
		next.Status = *d.Status
		patch, err := statuspatch.Guarded(task.ResourceVersion, &task.Status, &next.Status)
		if err != nil {
			return ctrl.Result{}, fmt.Errorf("writing task status: %w", err)
		}
		if err := r.client.Status().Patch(ctx, next, patch); err != nil {
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				logger.V(2).Info("the task changed before its status was written; deciding again", "phase", d.Status.Phase)
				return ctrl.Result{}, nil
			}
			return ctrl.Result{}, fmt.Errorf("writing task status: %w", err)
		}
		logger.V(2).Info("task status written", "from", task.Status.Phase, "to", d.Status.Phase,
			"attempt", d.Status.Attempt, "failedAttempts", d.Status.FailedAttempts, "message", d.Status.Message)
		if r.opts.Metrics != nil && d.Event != nil && (d.Event.Reason == swarmv1alpha1.ReasonTimedOut || d.Event.Reason == swarmv1alpha1.ReasonAgentLost) {
			r.opts.Metrics.AttemptFailed(task.Namespace, task.Spec.Hive, d.Event.Reason)
		}
	}
	if d.Event != nil {
		r.recorder.Eventf(task, nil, d.Event.Type, d.Event.Reason, "Reconcile", "%s", d.Event.Message)
	}
	return ctrl.Result{RequeueAfter: d.RequeueAfter}, nil
}

// observe gathers what the decision needs from the cache.
func (r *TaskReconciler) observe(ctx context.Context, task *swarmv1alpha1.Task) (lifecycle.Observed, error) {
	obs := lifecycle.Observed{Now: r.opts.Now(), AgentLostGrace: r.opts.AgentLostGrace, TimeoutGrace: r.opts.TimeoutGrace,
		MissingDependencyTimeout: r.opts.MissingDependencyTimeout}
	if task.Status.Phase.Bound() {
		return r.observeAgent(ctx, task, obs)
	}
	hive := &swarmv1alpha1.Hive{}
	// The decision reads the hive, never changes it: a copy of its pod template per task
	// reconciled would cost more than the rest of the reconcile.
	err := r.client.Get(ctx, client.ObjectKey{Namespace: task.Namespace, Name: task.Spec.Hive}, hive, client.UnsafeDisableDeepCopy)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return obs, fmt.Errorf("reading hive %s: %w", task.Spec.Hive, err)
	default:
		obs.Hive = hive
	}
	deps, err := dependencies(ctx, r.client, r.apiReader, task)
	if err != nil {
		return obs, err
	}
	obs.Dependencies = deps
	if state, _ := lifecycle.Dependencies(task, deps); state == lifecycle.DependenciesWaiting || state == lifecycle.DependencyMissing {
		obs.Cycle = lifecycle.FindCycle(task.Name, func(name string) ([]string, bool) {
			t := task
			if name != task.Name {
				t = &swarmv1alpha1.Task{}
				if err := r.client.Get(ctx, client.ObjectKey{Namespace: task.Namespace, Name: name}, t); err != nil {
					return nil, false
				}
			}
			if t.Status.Phase.Finished() || lifecycle.DependenciesSatisfied(t) {
				return nil, false
			}
			return t.Spec.DependsOn, true
		})
	}
	return obs, nil
}

// observeAgent adds to obs the state of a bound task's agent pod.
func (r *TaskReconciler) observeAgent(ctx context.Context, task *swarmv1alpha1.Task, obs lifecycle.Observed) (lifecycle.Observed, error) {
	pod := &corev1.Pod{}
	err := r.client.Get(ctx, client.ObjectKey{Namespace: task.Namespace, Name: task.Status.Agent}, pod)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return obs, fmt.Errorf("reading agent pod %s: %w", task.Status.Agent, err)
	default:
		if hiveName, ok := agentpod.ControllerHive(pod); ok && hiveName == task.Spec.Hive {
			obs.Agent = agentState(pod)
		}
	}
	return obs, nil
}

// dependencies reads the tasks a task depends on (nil for those that do not exist), or none
// once the task recorded them satisfied: from the cache, and from the API server for those
// the cache does not hold, because they finished. A dependent reads a finished dependency
// once: the decision its outcome leads to is recorded in the dependent's status.
func dependencies(ctx context.Context, cache, api client.Reader, t *swarmv1alpha1.Task) (map[string]*swarmv1alpha1.Task, error) {
	if len(t.Spec.DependsOn) == 0 || lifecycle.DependenciesSatisfied(t) {
		return nil, nil
	}
	deps := make(map[string]*swarmv1alpha1.Task, len(t.Spec.DependsOn))
	for _, name := range t.Spec.DependsOn {
		dep, key := &swarmv1alpha1.Task{}, client.ObjectKey{Namespace: t.Namespace, Name: name}
		err := cache.Get(ctx, key, dep)
		if apierrors.IsNotFound(err) {
			err = api.Get(ctx, key, dep)
		}
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

// agentState is what a bound task's agent pod tells of the agent.
func agentState(pod *corev1.Pod) lifecycle.AgentState {
	return lifecycle.AgentState{
		Found: true, Ready: agentpod.IsReady(pod), NotReadySince: agentpod.NotReadySince(pod), Finished: agentpod.IsFinished(pod),
		// A terminating agent may be finishing its tasks within its grace period: it is
		// lost once the pod is gone or the grace period is over.
		Terminating: agentpod.IsTerminating(pod), GraceEnds: agentpod.GraceEnds(pod),
	}
}

// SetupWithManager registers the controller and its watches.
func (r *TaskReconciler) SetupWithManager(mgr ctrl.Manager) error {
	err := ctrl.NewControllerManagedBy(mgr).
		Named("task").
		For(&swarmv1alpha1.Task{}).
		Watches(&swarmv1alpha1.Hive{}, handler.EnqueueRequestsFromMapFunc(r.queuedTasksOfHive),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.tasksOfAgent), builder.WithPredicates(agentHealthChanged())).
		Watches(&swarmv1alpha1.Task{}, handler.EnqueueRequestsFromMapFunc(r.related), builder.WithPredicates(dependencyChanged())).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.opts.MaxConcurrentReconciles}).
		Complete(r)
	if err != nil {
		return fmt.Errorf("setting up the task controller: %w", err)
	}
	return nil
}

// queuedTasksOfHive maps a hive event to its tasks that are not finished: a hive appearing
// or changing its capabilities changes whether they can be scheduled.
func (r *TaskReconciler) queuedTasksOfHive(ctx context.Context, obj client.Object) []ctrl.Request {
	list := &swarmv1alpha1.TaskList{}
	// Only names are read: a copy of every queued task per hive event would cost more than
	// the reconciles it asks for.
	if err := r.client.List(ctx, list, client.InNamespace(obj.GetNamespace()), client.MatchingFields{IndexTaskActiveHive: obj.GetName()},
		client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "listing the tasks of a hive that changed; they are looked at on their own next event", "hive", klog.KObj(obj))
		return nil
	}
	var out []ctrl.Request
	for i := range list.Items {
		if t := &list.Items[i]; !t.Status.Phase.Bound() {
			out = append(out, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: t.Namespace, Name: t.Name}})
		}
	}
	return out
}

// tasksOfAgent maps an agent pod event to the tasks bound to it.
func (r *TaskReconciler) tasksOfAgent(ctx context.Context, obj client.Object) []ctrl.Request {
	list := &swarmv1alpha1.TaskList{}
	if err := r.client.List(ctx, list, client.InNamespace(obj.GetNamespace()), client.MatchingFields{IndexTaskAgent: obj.GetName()},
		client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "listing the tasks of an agent whose pod changed; they are looked at on their own next event", "agent", klog.KObj(obj))
		return nil
	}
	out := make([]ctrl.Request, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: list.Items[i].Namespace, Name: list.Items[i].Name}})
	}
	return out
}

// related maps a task that appeared or left the cache (it finished, or was deleted) to the
// tasks that depend on it: they may now run, fail, or say what they wait for.
func (r *TaskReconciler) related(ctx context.Context, obj client.Object) []ctrl.Request {
	list := &swarmv1alpha1.TaskList{}
	if err := r.client.List(ctx, list, client.InNamespace(obj.GetNamespace()), client.MatchingFields{IndexTaskDependsOn: obj.GetName()},
		client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "listing the tasks that depend on a task that changed; they are looked at on their own next event", "task", klog.KObj(obj))
		return nil
	}
	out := make([]ctrl.Request, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: list.Items[i].Namespace, Name: list.Items[i].Name}})
	}
	return out
}

// agentHealthChanged passes pod events that can make an agent lost: deletion (graceful or
// not), readiness changes, the pod stopping.
func agentHealthChanged() predicate.Predicate {
	p := updatesWhere(func(o, n *corev1.Pod) bool {
		return agentpod.IsReady(o) != agentpod.IsReady(n) || agentpod.IsFinished(o) != agentpod.IsFinished(n) ||
			agentpod.IsTerminating(o) != agentpod.IsTerminating(n)
	})
	p.CreateFunc = func(event.CreateEvent) bool { return false }
	return p
}

// dependencyChanged passes the task events that matter to the tasks around it: a task
// created (a dependent's missing dependency appears) or gone from the cache, because it
// finished (the cache holds only unfinished tasks) or was deleted. The creates of the
// initial list do not pass: every task is reconciled after it anyway, from a cache that
// holds them all, and mapping each of them would cost a cache list per task at start-up.
func dependencyChanged() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return !e.IsInInitialList },
		UpdateFunc: func(event.UpdateEvent) bool { return false },
	}
}
