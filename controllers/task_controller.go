package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/internal/lifecycle"
	"github.com/aihub-dev/hive-operator/internal/statuspatch"
)

// TaskReconciler runs the parts of a task's life that are the operator's: it reports tasks
// their hive cannot run, holds tasks behind their dependencies, times out attempts,
// requeues the tasks of lost agents, cancels queued tasks, and deletes finished tasks past
// their TTL. Binding is the Dispatcher's; running and finishing are the agent's.
type TaskReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// AgentLostGrace is how long an agent may stay not ready before its tasks are requeued.
	// Default 15s.
	AgentLostGrace time.Duration
	// TimeoutGrace lets an agent report its own timeout before the operator does. Default 2s.
	TimeoutGrace time.Duration
	// MaxConcurrentReconciles is the number of tasks reconciled at once. Default 8.
	MaxConcurrentReconciles int
	// Observer, when set, is told of attempts that failed or were requeued (for metrics).
	Observer TaskObserver
}

// TaskObserver is told of the operator's task decisions, for metrics.
type TaskObserver interface {
	// AttemptFailed is called when the operator fails an attempt (TimedOut, AgentLost).
	AttemptFailed(namespace, hive, reason string)
}

// +kubebuilder:rbac:groups=swarm.aihub.dev,resources=tasks,verbs=get;list;watch;delete

// Reconcile applies the operator's rules to one task.
func (r *TaskReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	task := &swarmv1alpha1.Task{}
	if err := r.Client.Get(ctx, req.NamespacedName, task); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("reading task: %w", err)
	}
	obs, err := r.observe(ctx, task)
	if err != nil {
		return ctrl.Result{}, err
	}
	d := lifecycle.Decide(task, obs)

	if d.Delete {
		uid, rv := task.UID, task.ResourceVersion
		if err := r.Client.Delete(ctx, task, client.Preconditions{UID: &uid, ResourceVersion: &rv}); err != nil && !apierrors.IsNotFound(err) {
			if apierrors.IsConflict(err) {
				return ctrl.Result{RequeueAfter: time.Second}, nil
			}
			return ctrl.Result{}, fmt.Errorf("deleting expired task: %w", err)
		}
		return ctrl.Result{}, nil
	}
	if d.Status != nil {
		next := task.DeepCopy()
		next.Status = *d.Status
		patch, err := statuspatch.Guarded(task.ResourceVersion, &task.Status, &next.Status)
		if err != nil {
			return ctrl.Result{}, fmt.Errorf("writing task status: %w", err)
		}
		if err := r.Client.Status().Patch(ctx, next, patch); err != nil {
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				// The task changed (often its agent finished it): decide again from the
				// new version, which the watch delivers.
				return ctrl.Result{}, nil
			}
			return ctrl.Result{}, fmt.Errorf("writing task status: %w", err)
		}
		if r.Observer != nil && d.Event != nil && (d.Event.Reason == swarmv1alpha1.ReasonTimedOut || d.Event.Reason == swarmv1alpha1.ReasonAgentLost) {
			r.Observer.AttemptFailed(task.Namespace, task.Spec.Hive, d.Event.Reason)
		}
	}
	if d.Event != nil {
		r.Recorder.Eventf(task, nil, d.Event.Type, d.Event.Reason, "Reconcile", "%s", d.Event.Message)
	}
	return ctrl.Result{RequeueAfter: d.RequeueAfter}, nil
}

// observe gathers what the decision needs from the cache.
func (r *TaskReconciler) observe(ctx context.Context, task *swarmv1alpha1.Task) (lifecycle.Observed, error) {
	obs := lifecycle.Observed{Now: r.Now(), AgentLostGrace: r.AgentLostGrace, TimeoutGrace: r.TimeoutGrace}
	if task.Status.Phase.Finished() {
		return obs, nil
	}
	if task.Status.Phase.Bound() {
		pod := &corev1.Pod{}
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: task.Namespace, Name: task.Status.Agent}, pod)
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
	hive := &swarmv1alpha1.Hive{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: task.Namespace, Name: task.Spec.Hive}, hive)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return obs, fmt.Errorf("reading hive %s: %w", task.Spec.Hive, err)
	default:
		obs.Hive = hive
	}
	if len(task.Spec.DependsOn) > 0 {
		obs.Dependencies = map[string]*swarmv1alpha1.Task{}
		for _, name := range task.Spec.DependsOn {
			dep := &swarmv1alpha1.Task{}
			err := r.Client.Get(ctx, client.ObjectKey{Namespace: task.Namespace, Name: name}, dep)
			switch {
			case apierrors.IsNotFound(err):
				obs.Dependencies[name] = nil
			case err != nil:
				return obs, fmt.Errorf("reading dependency %s: %w", name, err)
			default:
				obs.Dependencies[name] = dep
			}
		}
	}
	return obs, nil
}

func agentState(pod *corev1.Pod) lifecycle.AgentState {
	// A terminating agent is still found: it may be finishing its tasks within its grace
	// period. Its tasks are requeued once the pod is gone.
	s := lifecycle.AgentState{Found: true, Ready: agentpod.IsReady(pod), Finished: agentpod.IsFinished(pod)}
	if !s.Ready {
		// Pod timestamps carry whole seconds: count from the end of that second, so the
		// grace is never cut short.
		s.NotReadySince = pod.CreationTimestamp.Add(time.Second)
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodReady && !c.LastTransitionTime.IsZero() {
				s.NotReadySince = c.LastTransitionTime.Add(time.Second)
			}
		}
	}
	return s
}

// SetupWithManager registers the controller and its watches.
func (r *TaskReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.AgentLostGrace <= 0 {
		r.AgentLostGrace = 15 * time.Second
	}
	if r.TimeoutGrace <= 0 {
		r.TimeoutGrace = 2 * time.Second
	}
	if r.MaxConcurrentReconciles <= 0 {
		r.MaxConcurrentReconciles = 8
	}
	err := ctrl.NewControllerManagedBy(mgr).
		Named("task").
		For(&swarmv1alpha1.Task{}).
		Watches(&swarmv1alpha1.Hive{}, handler.EnqueueRequestsFromMapFunc(r.queuedTasksOfHive),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.tasksOfAgent), builder.WithPredicates(agentHealthChanged())).
		Watches(&swarmv1alpha1.Task{}, handler.EnqueueRequestsFromMapFunc(r.dependents), builder.WithPredicates(taskFinished())).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
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
	if err := r.Client.List(ctx, list, client.InNamespace(obj.GetNamespace()), client.MatchingFields{IndexTaskActiveHive: obj.GetName()}); err != nil {
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
	if err := r.Client.List(ctx, list, client.InNamespace(obj.GetNamespace()), client.MatchingFields{IndexTaskAgent: obj.GetName()}); err != nil {
		return nil
	}
	out := make([]ctrl.Request, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: list.Items[i].Namespace, Name: list.Items[i].Name}})
	}
	return out
}

// dependents maps a task that finished to the tasks that depend on it.
func (r *TaskReconciler) dependents(ctx context.Context, obj client.Object) []ctrl.Request {
	list := &swarmv1alpha1.TaskList{}
	if err := r.Client.List(ctx, list, client.InNamespace(obj.GetNamespace()), client.MatchingFields{IndexTaskDependsOn: obj.GetName()}); err != nil {
		return nil
	}
	out := make([]ctrl.Request, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: list.Items[i].Namespace, Name: list.Items[i].Name}})
	}
	return out
}

// agentHealthChanged passes pod events that can make an agent lost: deletion, readiness
// changes, the pod stopping.
func agentHealthChanged() predicate.Predicate {
	p := updatesWhere(func(o, n *corev1.Pod) bool {
		return agentpod.IsReady(o) != agentpod.IsReady(n) || agentpod.IsFinished(o) != agentpod.IsFinished(n)
	})
	p.CreateFunc = func(event.CreateEvent) bool { return false }
	return p
}

// taskFinished passes task events where a task finished or was deleted: its dependents may
// now run or fail.
func taskFinished() predicate.Predicate {
	p := updatesWhere(func(o, n *swarmv1alpha1.Task) bool {
		return !o.Status.Phase.Finished() && n.Status.Phase.Finished()
	})
	p.CreateFunc = func(e event.CreateEvent) bool {
		t, ok := e.Object.(*swarmv1alpha1.Task)
		return ok && t.Status.Phase.Finished()
	}
	return p
}
