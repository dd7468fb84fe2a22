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

func decideFinished(t *swarmv1alpha1.Task, o Observed) Decision {
	if t.Spec.TTLSecondsAfterFinished == nil {
		return Decision{}
	}
	finished := t.CreationTimestamp.Time
	if t.Status.FinishedAt != nil {
		finished = t.Status.FinishedAt.Time
	}
	expires := finished.Add(time.Duration(*t.Spec.TTLSecondsAfterFinished) * time.Second)
	if !o.Now.Before(expires) {
		return Decision{Delete: true}
	}
	return Decision{RequeueAfter: expires.Sub(o.Now)}
}

func decideBound(t *swarmv1alpha1.Task, o Observed) Decision {
	var requeue time.Duration
	lost, why := agentLost(o)
	if !lost && !o.Agent.Ready && o.Agent.Found {
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

// agentLost reports whether a bound task's agent is gone for good, and says how.
func agentLost(o Observed) (bool, string) {
	switch {
	case !o.Agent.Found:
		return true, "is gone"
	case o.Agent.Finished:
		return true, "stopped"
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

	state, message := Dependencies(t, o.Dependencies)
	switch state {
	case DependencyFailed:
		s := Fail(t, swarmv1alpha1.ReasonDependencyFailed, message, o.Now)
		return Decision{Status: &s, Event: &Event{corev1.EventTypeWarning, swarmv1alpha1.ReasonDependencyFailed, message}}
	case DependenciesWaiting:
		if t.Status.Phase == swarmv1alpha1.TaskBlocked && t.Status.Message == message {
			return Decision{}
		}
		s := *t.Status.DeepCopy()
		s.Phase = swarmv1alpha1.TaskBlocked
		s.Message = message
		return Decision{Status: &s}
	}

	s := *t.Status.DeepCopy()
	changed := false
	if t.Status.Phase == swarmv1alpha1.TaskBlocked {
		s.Phase = swarmv1alpha1.TaskPending
		s.Message = ""
		changed = true
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

// Dispatchable reports whether the dispatcher may bind a task now, given its hive and its
// dependencies. When the task only waits for its backoff, wait says how long.
func Dispatchable(t *swarmv1alpha1.Task, hive *swarmv1alpha1.Hive, deps map[string]*swarmv1alpha1.Task, now time.Time) (ok bool, wait time.Duration) {
	if !IsQueued(t) || t.Status.Phase == swarmv1alpha1.TaskBlocked {
		return false, 0
	}
	if len(MissingCapabilities(t.Spec.RequiredCapabilities, hive.Spec.Agent.Capabilities)) > 0 {
		return false, 0
	}
	if len(t.Spec.DependsOn) > 0 {
		if state, _ := Dependencies(t, deps); state != DependenciesMet {
			return false, 0
		}
	}
	if t.Status.NotBefore != nil && now.Before(t.Status.NotBefore.Time) {
		return false, t.Status.NotBefore.Sub(now)
	}
	return true, 0
}
