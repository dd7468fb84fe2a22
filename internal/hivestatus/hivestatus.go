// Package hivestatus computes a hive's status from what the controller observed: counts,
// revisions and the conditions Available, Progressing, Degraded and ScalingActive, each with
// a reason and a message a person can act on. It calls no API.
//
// docs/architecture.md shows where it fits among the operator's parts.
package hivestatus

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/pool"
)

// Observed is what the controller saw and decided in one reconcile.
type Observed struct {
	// Generation is the hive's metadata.generation.
	Generation int64
	// Desired is the number of agents the hive converges to.
	Desired int
	// MinAvailable is Desired minus the rollout's maxUnavailable.
	MinAvailable int
	// UpdateRevision is the revision of the current template.
	UpdateRevision string
	// Selector selects the hive's agent pods.
	Selector string
	// Plan is the pool plan, with the agent counts it was made from.
	Plan pool.Plan
	// QueuedTasks wait for a slot; RunningTasks are bound to an agent.
	QueuedTasks, RunningTasks int
	// CreateError is the API server's refusal of the last agent pod creation, if any.
	CreateError error
	// AccessError is the failure to write the agents' service account, role or role
	// binding; BudgetError the failure to write the PodDisruptionBudget.
	AccessError, BudgetError error
	// Scaling is the autoscaler's verdict when spec.autoscaling is set, nil otherwise.
	Scaling *Scaling
	// Now stamps condition transitions.
	Now time.Time
}

// Scaling is what the autoscaler decided and why.
type Scaling struct {
	// Reason is one of the ScalingActive reasons (DesiredWithinRange, TooFewReplicas,
	// TooManyReplicas, ScaledToZero); Message explains it.
	Reason, Message string
	// ScaledAt is set when the autoscaler changed spec.replicas in this reconcile.
	ScaledAt *time.Time
}

// Compute returns the new status of a hive given its previous one.
func Compute(prev *swarmv1alpha1.HiveStatus, o Observed) swarmv1alpha1.HiveStatus {
	c := o.Plan.Counts
	s := swarmv1alpha1.HiveStatus{
		ObservedGeneration: o.Generation,
		Replicas:           int32(c.Live),
		ReadyReplicas:      int32(c.Ready),
		AvailableReplicas:  int32(c.Available),
		UpdatedReplicas:    int32(c.Updated),
		DesiredReplicas:    int32(o.Desired),
		ReadySummary:       fmt.Sprintf("%d/%d", c.Ready, o.Desired),
		IdleAgents:         int32(c.Idle),
		BusyAgents:         int32(c.Busy),
		DrainingAgents:     int32(c.Draining),
		QueuedTasks:        int32(o.QueuedTasks),
		RunningTasks:       int32(o.RunningTasks),
		CurrentRevision:    prev.CurrentRevision,
		UpdateRevision:     o.UpdateRevision,
		Selector:           o.Selector,
		LastScaleTime:      prev.LastScaleTime,
		Conditions:         append([]metav1.Condition(nil), prev.Conditions...),
	}
	if c.Outdated == 0 {
		s.CurrentRevision = o.UpdateRevision
	}
	set := func(cond metav1.Condition) {
		cond.ObservedGeneration = o.Generation
		cond.LastTransitionTime = metav1.NewTime(o.Now)
		meta.SetStatusCondition(&s.Conditions, cond)
	}
	set(available(o))
	set(progressing(o, s.CurrentRevision))
	set(degraded(o))
	if o.Scaling == nil {
		set(metav1.Condition{
			Type: swarmv1alpha1.HiveScalingActive, Status: metav1.ConditionFalse, Reason: swarmv1alpha1.ReasonAutoscalingDisabled,
			Message: "spec.autoscaling is not set: spec.replicas is set by the user, or by an HPA or KEDA through the scale subresource",
		})
	} else {
		set(metav1.Condition{
			Type: swarmv1alpha1.HiveScalingActive, Status: metav1.ConditionTrue, Reason: o.Scaling.Reason, Message: o.Scaling.Message,
		})
		if o.Scaling.ScaledAt != nil {
			t := metav1.NewTime(*o.Scaling.ScaledAt)
			s.LastScaleTime = &t
		}
	}
	return s
}

func available(o Observed) metav1.Condition {
	c := o.Plan.Counts
	if c.Available >= o.MinAvailable {
		return metav1.Condition{
			Type: swarmv1alpha1.HiveAvailable, Status: metav1.ConditionTrue, Reason: swarmv1alpha1.ReasonAgentsReady,
			Message: fmt.Sprintf("%d of %d agents are ready to take tasks", c.Available, o.Desired),
		}
	}
	return metav1.Condition{
		Type: swarmv1alpha1.HiveAvailable, Status: metav1.ConditionFalse, Reason: swarmv1alpha1.ReasonAgentsUnavailable,
		Message: fmt.Sprintf("%d of %d agents are ready to take tasks; at least %d are needed", c.Available, o.Desired, o.MinAvailable),
	}
}

func progressing(o Observed, currentRevision string) metav1.Condition {
	c, p := o.Plan.Counts, o.Plan
	cond := metav1.Condition{Type: swarmv1alpha1.HiveProgressing, Status: metav1.ConditionTrue}
	switch {
	case c.Outdated > 0:
		cond.Reason = swarmv1alpha1.ReasonRolloutInProgress
		cond.Message = fmt.Sprintf("Rolling out revision %s: %d of %d agents updated, %d available",
			o.UpdateRevision, c.Updated, o.Desired, c.Available)
		if c.BusyDraining > 0 {
			cond.Message += fmt.Sprintf("; waiting for %s to finish", agents(c.BusyDraining, "busy outdated"))
		} else if c.Available < o.Desired {
			cond.Message += "; waiting for updated agents to become ready"
		}
	case p.Create > 0 || c.Live < o.Desired:
		cond.Reason = swarmv1alpha1.ReasonScalingUp
		cond.Message = fmt.Sprintf("Creating agents: %d of %d exist", c.Live, o.Desired)
	case c.Draining > 0 || c.Live > o.Desired || len(p.Drain) > 0 || len(p.Delete) > 0:
		cond.Reason = swarmv1alpha1.ReasonScalingDown
		cond.Message = fmt.Sprintf("Removing agents: %d of %d remain", c.Live, o.Desired)
		if c.BusyDraining > 0 {
			cond.Message += fmt.Sprintf("; waiting for %s to finish", agents(c.BusyDraining, "busy draining"))
		}
	case c.Available < o.Desired:
		cond.Reason = swarmv1alpha1.ReasonWaitingForReady
		cond.Message = fmt.Sprintf("Waiting for agents to become ready: %d of %d ready", c.Available, o.Desired)
	default:
		cond.Status = metav1.ConditionFalse
		cond.Reason = swarmv1alpha1.ReasonStable
		cond.Message = fmt.Sprintf("All %d agents run revision %s", o.Desired, currentRevision)
	}
	return cond
}

// agents spells a count of agents of a kind: "1 busy agent", "2 busy agents".
func agents(n int, kind string) string {
	if n == 1 {
		return "1 " + kind + " agent"
	}
	return fmt.Sprintf("%d %s agents", n, kind)
}

func degraded(o Observed) metav1.Condition {
	failed := func(reason, what string, err error) metav1.Condition {
		return metav1.Condition{Type: swarmv1alpha1.HiveDegraded, Status: metav1.ConditionTrue, Reason: reason, Message: what + ": " + err.Error()}
	}
	switch {
	case o.CreateError != nil:
		return failed(swarmv1alpha1.ReasonPodCreateFailed, "Creating an agent pod failed", o.CreateError)
	case o.AccessError != nil:
		return failed(swarmv1alpha1.ReasonAgentAccessFailed, "Writing the agents' service account, role or role binding failed", o.AccessError)
	case o.BudgetError != nil:
		return failed(swarmv1alpha1.ReasonDisruptionBudgetFailed, "Writing the hive's PodDisruptionBudget failed", o.BudgetError)
	}
	return metav1.Condition{
		Type: swarmv1alpha1.HiveDegraded, Status: metav1.ConditionFalse, Reason: swarmv1alpha1.ReasonAsExpected,
		Message: "Agent pods are created as expected",
	}
}

// OnlyCountersChanged reports whether two statuses differ only in the counts that move with
// every task (busy, idle, queued, running). Such changes may wait: the controller writes
// them at most about once a second per hive, so a fast task stream does not multiply the
// API server's writes.
func OnlyCountersChanged(a, b *swarmv1alpha1.HiveStatus) bool {
	x, y := *a, *b
	for _, s := range []*swarmv1alpha1.HiveStatus{&x, &y} {
		s.IdleAgents, s.BusyAgents, s.QueuedTasks, s.RunningTasks = 0, 0, 0, 0
	}
	return equalStatus(&x, &y)
}

// Equal reports whether two statuses say the same thing. Compute keeps a condition's
// transition time unless its status changes, so an unchanged hive compares equal.
func Equal(a, b *swarmv1alpha1.HiveStatus) bool { return equalStatus(a, b) }

func equalStatus(a, b *swarmv1alpha1.HiveStatus) bool {
	return equality.Semantic.DeepEqual(a, b)
}
