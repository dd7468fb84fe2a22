package controllers

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/lifecycle"
	"github.com/aihub-dev/hive-operator/internal/metrics"
)

// prometheusMetrics turns the controllers' decisions into the operator's Prometheus
// metrics (internal/metrics).
type prometheusMetrics struct{}

func (prometheusMetrics) Bound(namespace, hive string, wait time.Duration) {
	metrics.QueueWait.WithLabelValues(namespace, hive).Observe(wait.Seconds())
}

func (prometheusMetrics) AttemptFailed(namespace, hive, reason string) {
	if reason == swarmv1alpha1.ReasonAgentLost {
		metrics.AgentLosses.WithLabelValues(namespace, hive).Inc()
	}
}

func (prometheusMetrics) Scaled(namespace, hive, direction string) {
	metrics.ScaleEvents.WithLabelValues(namespace, hive, direction).Inc()
}

func (prometheusMetrics) RolloutStarted(namespace, hive string) {
	metrics.Rollouts.WithLabelValues(namespace, hive).Inc()
}

// Finished counts a task's outcome and run time.
func (prometheusMetrics) Finished(t *swarmv1alpha1.Task) {
	metrics.Outcomes.WithLabelValues(t.Namespace, t.Spec.Hive, string(t.Status.Phase)).Inc()
	if t.Status.AssignedAt != nil && t.Status.FinishedAt != nil {
		metrics.RunTime.WithLabelValues(t.Namespace, t.Spec.Hive, string(t.Status.Phase)).
			Observe(t.Status.FinishedAt.Sub(t.Status.AssignedAt.Time).Seconds())
	}
}

// taskTransitions counts retries from the task watch; outcomes and run times come from the
// retention controller's watch of finished tasks, which the cache does not hold. It runs
// only on the leader, so that replicas do not count the same transition twice.
type taskTransitions struct {
	cache cache.Cache
}

// NeedLeaderElection makes the manager start it on the leader only.
func (taskTransitions) NeedLeaderElection() bool { return true }

// Start registers the watch handler until ctx ends.
func (t taskTransitions) Start(ctx context.Context) error {
	inf, err := t.cache.GetInformer(ctx, &swarmv1alpha1.Task{})
	if err != nil {
		return fmt.Errorf("watching tasks for metrics: %w", err)
	}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{UpdateFunc: observeTransition})
	if err != nil {
		return fmt.Errorf("watching tasks for metrics: %w", err)
	}
	<-ctx.Done()
	return inf.RemoveEventHandler(reg) //nolint:wrapcheck // shutting down
}

func observeTransition(oldObj, newObj any) {
	o, ok1 := oldObj.(*swarmv1alpha1.Task)
	n, ok2 := newObj.(*swarmv1alpha1.Task)
	if !ok1 || !ok2 {
		return
	}
	if o.Status.Phase.Bound() && lifecycle.IsQueued(n) {
		// A failed attempt counts in failedAttempts and names its reason in the
		// AttemptFailed condition; a release (an agent giving the task back) does neither.
		reason := "Released"
		if c := meta.FindStatusCondition(n.Status.Conditions, swarmv1alpha1.TaskAttemptFailed); c != nil && n.Status.FailedAttempts > o.Status.FailedAttempts {
			reason = c.Reason
		}
		metrics.Retries.WithLabelValues(n.Namespace, n.Spec.Hive, reason).Inc()
	}
}
