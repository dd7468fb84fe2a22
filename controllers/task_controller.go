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
	// MissingDependencyTimeout is how long a task waits for a task named in its dependsOn
	// that does not exist before it fails. Default 5m.
	MissingDependencyTimeout time.Duration
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
	obs := lifecycle.Observed{Now: r.Now(), AgentLostGrace: r.AgentLostGrace, TimeoutGrace: r.TimeoutGrace,
		MissingDependencyTimeout: r.MissingDependencyTimeout}
	switch {
	case task.Status.Phase.Finished():
		if task.Spec.TTLSecondsAfterFinished != nil {
			n, err := r.unfinishedDependents(ctx, task)
			if err != nil {
				return obs, err
			}
			obs.Dependents = n
		}
		return obs, nil
	case task.Status.Phase.Bound():
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
	deps, err := dependencies(ctx, r.Client, task)
	if err != nil {
		return obs, err
	}
	obs.Dependencies = deps
	if state, _ := lifecycle.Dependencies(task, deps); state == lifecycle.DependenciesWaiting || state == lifecycle.DependencyMissing {
		obs.Cycle = lifecycle.FindCycle(task.Name, func(name string) ([]string, bool) {
			t := task
			if name != task.Name {
				t = &swarmv1alpha1.Task{}
				if err := r.Client.Get(ctx, client.ObjectKey{Namespace: task.Namespace, Name: name}, t); err != nil {
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

// unfinishedDependents counts the tasks that depend on a task and have not finished.
func (r *TaskReconciler) unfinishedDependents(ctx context.Context, task *swarmv1alpha1.Task) (int, error) {
	list := &swarmv1alpha1.TaskList{}
	if err := r.Client.List(ctx, list, client.InNamespace(task.Namespace), client.MatchingFields{IndexTaskDependsOn: task.Name},
		client.UnsafeDisableDeepCopy); err != nil {
		return 0, fmt.Errorf("listing the tasks that depend on %s: %w", task.Name, err)
	}
	return len(list.Items), nil
}

// dependencies reads the tasks a task depends on from the cache (nil for those that do not
// exist), or none once the task recorded them satisfied.
func dependencies(ctx context.Context, c client.Reader, t *swarmv1alpha1.Task) (map[string]*swarmv1alpha1.Task, error) {
	if len(t.Spec.DependsOn) == 0 || lifecycle.DependenciesSatisfied(t) {
		return nil, nil
	}
	deps := make(map[string]*swarmv1alpha1.Task, len(t.Spec.DependsOn))
	for _, name := range t.Spec.DependsOn {
		dep := &swarmv1alpha1.Task{}
		err := c.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: name}, dep)
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
	s := lifecycle.AgentState{
		Found: true, Ready: agentpod.IsReady(pod), Finished: agentpod.IsFinished(pod),
		// A terminating agent may be finishing its tasks within its grace period: it is
		// lost once the pod is gone or the grace period is over.
		Terminating: agentpod.IsTerminating(pod), GraceEnds: agentpod.GraceEnds(pod),
	}
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
	if r.MissingDependencyTimeout <= 0 {
		r.MissingDependencyTimeout = 5 * time.Minute
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
		Watches(&swarmv1alpha1.Task{}, handler.EnqueueRequestsFromMapFunc(r.related), builder.WithPredicates(dependencyChanged())).
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

// related maps a task that appeared or finished to the tasks that depend on it (they may
// now run, fail, or say what they wait for), and a task that finished to the tasks it
// depends on (their TTL waits for their dependents to finish).
func (r *TaskReconciler) related(ctx context.Context, obj client.Object) []ctrl.Request {
	list := &swarmv1alpha1.TaskList{}
	if err := r.Client.List(ctx, list, client.InNamespace(obj.GetNamespace()), client.MatchingFields{IndexTaskDependsOn: obj.GetName()},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil
	}
	out := make([]ctrl.Request, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: list.Items[i].Namespace, Name: list.Items[i].Name}})
	}
	if t, ok := obj.(*swarmv1alpha1.Task); ok && t.Status.Phase.Finished() {
		for _, name := range t.Spec.DependsOn {
			out = append(out, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: t.Namespace, Name: name}})
		}
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

// dependencyChanged passes task events that matter to the tasks around it: a task created
// (a dependent's missing dependency appears), finished, or deleted.
func dependencyChanged() predicate.Predicate {
	return updatesWhere(func(o, n *swarmv1alpha1.Task) bool {
		return !o.Status.Phase.Finished() && n.Status.Phase.Finished()
	})
}
