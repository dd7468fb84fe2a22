package lifecycle

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// AgentState is what the operator's cache shows of a bound task's agent pod.
type AgentState struct {
	// Found is false when the pod is gone (or no longer an agent of the hive).
	Found bool
	// Ready is the pod's Ready condition, and NotReadySince when it last became false.
	Ready         bool
	NotReadySince time.Time
	// Finished means the pod failed or succeeded.
	Finished bool
	// Terminating means the pod is being deleted gracefully; GraceEnds is when its grace
	// period ends (its deletionTimestamp), when the kubelet kills what still runs.
	Terminating bool
	GraceEnds   time.Time
}

// Observed is what the task controller saw of a task's surroundings.
type Observed struct {
	Now time.Time
	// Hive is the task's hive, nil when it does not exist.
	Hive *swarmv1alpha1.Hive
	// Agent is the state of the bound agent's pod, for a bound task.
	Agent AgentState
	// Dependencies holds the tasks named in dependsOn (nil for those not found).
	Dependencies map[string]*swarmv1alpha1.Task
	// Cycle, when not empty, is a cycle of dependencies through the task (a, b, a).
	Cycle []string
	// Dependents is the number of unfinished tasks that depend on this one, for a finished
	// task: their agents may read its result, so it is not deleted by its TTL before they
	// finish.
	Dependents int
	// Retention is how long a finished task that sets no TTL of its own is kept: its hive's
	// spec.taskRetention.
	Retention time.Duration
	// MissingDependencyTimeout is how long a task waits for a dependency that does not
	// exist before it fails.
	MissingDependencyTimeout time.Duration
	// AgentLostGrace is how long an agent may stay not ready before its tasks are requeued.
	AgentLostGrace time.Duration
	// TimeoutGrace is how long past its deadline a bound task waits for its agent to report
	// the timeout before the operator does.
	TimeoutGrace time.Duration
}

// Event is an event to emit about the task, after its status write.
type Event struct {
	Type, Reason, Message string
}

// Decision is what the task controller does for one task.
type Decision struct {
	// Status, when not nil, is the task's new status, to write with a compare-and-swap.
	Status *swarmv1alpha1.TaskStatus
	// Delete deletes the task (its TTL after finishing has passed).
	Delete bool
	// Event, when not nil, is emitted after the write.
	Event *Event
	// RequeueAfter is when to look at the task again if nothing happens first.
	RequeueAfter time.Duration
}

// Decide returns what the operator does for a task. It writes nothing in the common cases:
// a queued task the dispatcher can bind, a bound task within its deadline, a finished one.
func Decide(t *swarmv1alpha1.Task, o Observed) Decision {
	switch {
	case t.Status.Phase.Finished():
		return decideFinished(t, o)
	case t.Status.Phase.Bound():
		return decideBound(t, o)
	default:
		return decideQueued(t, o)
	}
}

// DependentsRecheck is how soon a finished task past its retention looks again while
// tasks that depend on it have not finished. A dependent's finishing wakes the task at
// once, but that news comes from the watch of finished tasks, which may be ahead of the
// cache that counted the dependent as unfinished; without another look the task would wait
// for the next sweep.
const DependentsRecheck = 5 * time.Second

func decideFinished(t *swarmv1alpha1.Task, o Observed) Decision {
	expires := Expires(t, o.Retention)
	if !o.Now.Before(expires) {
		if o.Dependents > 0 {
			return Decision{RequeueAfter: DependentsRecheck}
		}
		return Decision{Delete: true}
	}
	return Decision{RequeueAfter: expires.Sub(o.Now)}
}

// Expires returns when a finished task is deleted: its ttlSecondsAfterFinished after it
// finished, or its hive's retention when it sets none.
func Expires(t *swarmv1alpha1.Task, retention time.Duration) time.Time {
	if t.Spec.TTLSecondsAfterFinished != nil {
		retention = time.Duration(*t.Spec.TTLSecondsAfterFinished) * time.Second
	}
	return FinishedAt(t).Add(retention)
}

// FinishedAt is when a finished task finished (its creation when the time is not recorded).
func FinishedAt(t *swarmv1alpha1.Task) time.Time {
	if t.Status.FinishedAt != nil {
		return t.Status.FinishedAt.Time
	}
	return t.CreationTimestamp.Time
}

func decideBound(t *swarmv1alpha1.Task, o Observed) Decision {
	var requeue time.Duration
	lost, why := agentLost(o)
	switch {
	case lost:
	case o.Agent.Terminating:
		requeue = o.Agent.GraceEnds.Sub(o.Now)
	case !o.Agent.Ready:
		requeue = o.Agent.NotReadySince.Add(o.AgentLostGrace).Sub(o.Now)
	}
	if lost {
		if t.Spec.Cancel {
			s := Cancel(t, "cancelled; its agent "+t.Status.Agent+" "+why, o.Now)
			return Decision{Status: &s}
		}
		s := FailAttempt(t, swarmv1alpha1.ReasonAgentLost, "agent "+t.Status.Agent+" "+why, o.Now)
		return Decision{Status: &s, Event: &Event{corev1.EventTypeWarning, swarmv1alpha1.ReasonAgentLost, s.Message}}
	}

	assigned := t.CreationTimestamp.Time
	if t.Status.AssignedAt != nil {
		assigned = t.Status.AssignedAt.Time
	}
	deadline := assigned.Add(Timeout(&t.Spec)).Add(o.TimeoutGrace)
	if !o.Now.Before(deadline) {
		if t.Spec.Cancel {
			s := Cancel(t, "cancelled; its agent "+t.Status.Agent+" did not stop it in time", o.Now)
			return Decision{Status: &s}
		}
		s := FailAttempt(t, swarmv1alpha1.ReasonTimedOut,
			fmt.Sprintf("ran longer than its timeout of %s without a result from agent %s", Timeout(&t.Spec), t.Status.Agent), o.Now)
		return Decision{Status: &s, Event: &Event{corev1.EventTypeWarning, swarmv1alpha1.ReasonTimedOut, s.Message}}
	}
	untilDeadline := deadline.Sub(o.Now)
	if requeue <= 0 || untilDeadline < requeue {
		requeue = untilDeadline
	}
	return Decision{RequeueAfter: requeue}
}

// agentLost reports whether a bound task's agent is gone for good, and says how. An agent
// whose pod is being deleted gracefully is not lost while its grace period lasts, ready or
// not: it is finishing or giving back its tasks, as the agent protocol asks on SIGTERM.
func agentLost(o Observed) (bool, string) {
	switch {
	case !o.Agent.Found:
		return true, "is gone"
	case o.Agent.Finished:
		return true, "stopped"
	case o.Agent.Terminating:
		if !o.Now.Before(o.Agent.GraceEnds) {
			return true, "was still running it when its pod's termination grace period ended"
		}
		return false, ""
	case !o.Agent.Ready && !o.Now.Before(o.Agent.NotReadySince.Add(o.AgentLostGrace)):
		return true, fmt.Sprintf("has not been ready for %s", o.Now.Sub(o.Agent.NotReadySince).Round(time.Second))
	}
	return false, ""
}

func decideQueued(t *swarmv1alpha1.Task, o Observed) Decision {
	if t.Spec.Cancel {
		s := Cancel(t, "cancelled before it ran", o.Now)
		return Decision{Status: &s}
	}

	s := *t.Status.DeepCopy()
	changed := false
	var requeue time.Duration
	state, message := Dependencies(t, o.Dependencies)
	switch {
	case state == DependencyFailed:
		f := Fail(t, swarmv1alpha1.ReasonDependencyFailed, message, o.Now)
		return Decision{Status: &f, Event: &Event{corev1.EventTypeWarning, swarmv1alpha1.ReasonDependencyFailed, message}}
	case state != DependenciesMet && len(o.Cycle) > 0:
		msg := fmt.Sprintf("its dependencies form a cycle (%s), so none of them can ever run; create the tasks again without it",
			strings.Join(o.Cycle, " → "))
		f := Fail(t, swarmv1alpha1.ReasonDependencyCycle, msg, o.Now)
		return Decision{Status: &f, Event: &Event{corev1.EventTypeWarning, swarmv1alpha1.ReasonDependencyCycle, msg}}
	case state == DependencyMissing:
		// Condition times are stored to the second: count from there, so the deadline in
		// the message is the same on every pass.
		since := o.Now.Truncate(time.Second)
		if c := meta.FindStatusCondition(t.Status.Conditions, swarmv1alpha1.TaskDependenciesReady); c != nil && c.Reason == swarmv1alpha1.ReasonDependencyNotFound {
			since = c.LastTransitionTime.Time
		}
		deadline := since.Add(o.MissingDependencyTimeout)
		if !o.Now.Before(deadline) {
			msg := fmt.Sprintf("%s: a dependency did not exist within %s", message, o.MissingDependencyTimeout)
			f := Fail(t, swarmv1alpha1.ReasonDependencyNotFound, msg, o.Now)
			return Decision{Status: &f, Event: &Event{corev1.EventTypeWarning, swarmv1alpha1.ReasonDependencyNotFound, msg}}
		}
		changed = block(&s, swarmv1alpha1.ReasonDependencyNotFound,
			fmt.Sprintf("%s; the task fails if they do not exist by %s", message, deadline.UTC().Format(time.RFC3339)), message, o.Now)
		requeue = deadline.Sub(o.Now)
	case state == DependenciesWaiting:
		changed = block(&s, swarmv1alpha1.ReasonWaitingForDependencies, message, message, o.Now)
	case len(t.Spec.DependsOn) > 0 && !DependenciesSatisfied(t):
		// Record that they succeeded: the dispatcher binds a task with dependencies only
		// once this is recorded, and a dependency deleted afterwards cannot block it again.
		if s.Phase == swarmv1alpha1.TaskBlocked {
			s.Phase = swarmv1alpha1.TaskPending
			s.Message = ""
		}
		SetDependenciesReady(&s, metav1.ConditionTrue, swarmv1alpha1.ReasonDependenciesSucceeded, "Every task in dependsOn succeeded", o.Now)
		changed = true
	}
	if s.Phase == swarmv1alpha1.TaskBlocked {
		d := Decision{RequeueAfter: requeue}
		if changed {
			d.Status = &s
		}
		return d
	}

	cond, event := schedulable(t, o)
	if prev := meta.FindStatusCondition(s.Conditions, swarmv1alpha1.TaskScheduled); cond != nil || prev != nil {
		if cond == nil {
			// It was reported unschedulable and no longer is: say it waits for a slot.
			cond = &metav1.Condition{Type: swarmv1alpha1.TaskScheduled, Status: metav1.ConditionFalse,
				Reason: swarmv1alpha1.ReasonQueued, Message: "Waiting in the hive's queue for a free slot"}
			event = nil
		}
		if prev == nil || prev.Status != cond.Status || prev.Reason != cond.Reason || prev.Message != cond.Message {
			cond.LastTransitionTime = metav1.NewTime(o.Now)
			meta.SetStatusCondition(&s.Conditions, *cond)
			changed = true
		} else {
			event = nil
		}
	}
	// A task waiting for its backoff needs nothing from here: the dispatcher binds it when
	// the backoff ends.
	d := Decision{Event: event}
	if changed {
		d.Status = &s
	}
	return d
}

// block holds a task back for its dependencies: phase Blocked with message, and the
// DependenciesReady=False condition with reason and condMessage. It reports whether the
// status changed.
func block(s *swarmv1alpha1.TaskStatus, reason, condMessage, message string, now time.Time) bool {
	changed := s.Phase != swarmv1alpha1.TaskBlocked || s.Message != message
	s.Phase = swarmv1alpha1.TaskBlocked
	s.Message = message
	if SetDependenciesReady(s, metav1.ConditionFalse, reason, condMessage, now) {
		changed = true
	}
	return changed
}

// schedulable returns the Scheduled=False condition (and its event) of a queued task its
// hive cannot run, or nil when it can.
func schedulable(t *swarmv1alpha1.Task, o Observed) (*metav1.Condition, *Event) {
	if o.Hive == nil {
		msg := fmt.Sprintf("Hive %q does not exist in namespace %s; the task waits for it", t.Spec.Hive, t.Namespace)
		return &metav1.Condition{Type: swarmv1alpha1.TaskScheduled, Status: metav1.ConditionFalse, Reason: swarmv1alpha1.ReasonHiveNotFound, Message: msg},
			&Event{corev1.EventTypeWarning, swarmv1alpha1.ReasonHiveNotFound, msg}
	}
	if missing := MissingCapabilities(t.Spec.RequiredCapabilities, o.Hive.Spec.Agent.Capabilities); len(missing) > 0 {
		offered := "none"
		if len(o.Hive.Spec.Agent.Capabilities) > 0 {
			offered = strings.Join(o.Hive.Spec.Agent.Capabilities, ", ")
		}
		msg := fmt.Sprintf("No agent of hive %s offers %s (it offers %s); add them to spec.agent.capabilities or send the task to another hive",
			o.Hive.Name, strings.Join(missing, ", "), offered)
		return &metav1.Condition{Type: swarmv1alpha1.TaskScheduled, Status: metav1.ConditionFalse, Reason: swarmv1alpha1.ReasonUnschedulable, Message: msg},
			&Event{corev1.EventTypeWarning, swarmv1alpha1.ReasonUnschedulable, msg}
	}
	return nil, nil
}

// Dispatchable reports whether the dispatcher may bind a task now, given the capabilities
// its hive offers: it waits in the queue (see Waiting, with observedAt) and, if it has
// dependencies, the task controller has recorded them met (DependenciesSatisfied). The
// dispatcher never looks at the dependencies itself: one controller decides them. When
// the task only waits for its backoff, wait says how long.
func Dispatchable(t *swarmv1alpha1.Task, offered []string, now, observedAt time.Time) (ok bool, wait time.Duration) {
	waiting, retryIn := Waiting(t, offered, now, observedAt)
	if !waiting {
		return false, retryIn
	}
	if len(t.Spec.DependsOn) > 0 && !DependenciesSatisfied(t) {
		return false, 0
	}
	return true, 0
}
