package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/autoscale"
	"github.com/aihub-dev/hive-operator/internal/hivestatus"
)

// autoscaleDecision sizes an autoscaled hive from its load (internal/autoscale) and
// remembers the decision's history for the next one.
func (r *HiveReconciler) autoscaleDecision(hive *swarmv1alpha1.Hive, l load, now time.Time) autoscale.Decision {
	as := hive.Spec.Autoscaling
	key := hiveKey(hive)
	st, _ := r.scaling.get(key)
	var servingSlots int32
	if hive.Spec.Serving != nil {
		servingSlots = hive.Spec.Serving.ConcurrencyOrDefault()
	}
	d := autoscale.Decide(autoscale.Input{
		Now:                now,
		Current:            hive.Spec.ReplicasOrDefault(),
		Min:                as.MinReplicasOrDefault(),
		Max:                as.MaxReplicas,
		Target:             as.TargetUtilizationPercentOrDefault(),
		Concurrency:        hive.Spec.Agent.ConcurrencyOrDefault(),
		MaxStep:            as.MaxScaleUpStepOrDefault(),
		UpWindow:           as.ScaleUpWindowOrDefault(),
		DownWindow:         as.ScaleDownWindowOrDefault(),
		IdleTimeout:        as.IdleTimeoutOrDefault(),
		Queued:             l.queued,
		Running:            l.running,
		Requests:           l.requests,
		ServingConcurrency: servingSlots,
		Busy:               len(l.busy),
		LastActive:         st.lastActive,
		History:            st.history,
	})
	r.scaling.set(key, scaleState{history: d.History, lastActive: d.LastActive})
	return d
}

// applyScale writes the autoscaler's decision to spec.replicas when it changes them, and
// returns the verdict for the status.
func (r *HiveReconciler) applyScale(ctx context.Context, hive *swarmv1alpha1.Hive, d autoscale.Decision, now time.Time) (*hivestatus.Scaling, error) {
	verdict := &hivestatus.Scaling{Reason: string(d.Limit), Message: d.Message}
	current := hive.Spec.ReplicasOrDefault()
	if d.Replicas == current {
		return verdict, nil
	}
	base := hive.DeepCopy()
	hive.Spec.Replicas = &d.Replicas
	if err := r.client.Patch(ctx, hive, client.MergeFrom(base)); err != nil {
		hive.Spec.Replicas = base.Spec.Replicas
		return verdict, fmt.Errorf("scaling the hive to %d agents: %w", d.Replicas, err)
	}
	verdict.ScaledAt = &now
	direction, reason := "up", "ScaledUp"
	if d.Replicas < current {
		direction, reason = "down", "ScaledDown"
	}
	log.FromContext(ctx).V(2).Info("scaled the hive", "hive", klog.KObj(hive), "from", current, "to", d.Replicas, "why", d.Message)
	r.recorder.Eventf(hive, nil, corev1.EventTypeNormal, reason, "Autoscale", "Scaled %s from %d to %d agents: %s", direction, current, d.Replicas, d.Message)
	if r.opts.Metrics != nil {
		r.opts.Metrics.Scaled(hive.Namespace, hive.Name, direction)
	}
	return verdict, nil
}
