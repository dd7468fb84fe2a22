package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/autoscale"
	"github.com/aihub-dev/hive-operator/internal/hivestatus"
)

// scaleState is what the autoscaler remembers of a hive between reconciles. It lives in
// memory: after a restart the autoscaler starts from the current replicas and waits full
// windows, which errs on the side of keeping agents.
type scaleState struct {
	history    []autoscale.Sample
	lastActive time.Time
}

// autoscale sizes an autoscaled hive from its load: it patches spec.replicas when the
// decision changes it and returns the replicas to plan with, the verdict for the status,
// and when to look again.
func (r *HiveReconciler) autoscale(ctx context.Context, hive *swarmv1alpha1.Hive, queued, running, busy int, now time.Time) (int32, *hivestatus.Scaling, time.Duration, error) {
	as := hive.Spec.Autoscaling
	key := client.ObjectKeyFromObject(hive)
	current := ptrValue(hive.Spec.Replicas, 1)
	r.mu.Lock()
	st := r.scale[key]
	r.mu.Unlock()

	d := autoscale.Decide(autoscale.Input{
		Now:         now,
		Current:     current,
		Min:         ptrValue(as.MinReplicas, 0),
		Max:         as.MaxReplicas,
		Target:      ptrValue(as.TargetUtilizationPercent, 100),
		Concurrency: max(hive.Spec.Agent.Concurrency, 1),
		MaxStep:     ptrValue(as.MaxScaleUpStep, 10),
		UpWindow:    durationValue(as.ScaleUpWindow, 0),
		DownWindow:  durationValue(as.ScaleDownWindow, time.Minute),
		IdleTimeout: durationValue(as.IdleTimeout, 5*time.Minute),
		Queued:      queued,
		Running:     running,
		Busy:        busy,
		LastActive:  st.lastActive,
		History:     st.history,
	})
	r.mu.Lock()
	r.scale[key] = scaleState{history: d.History, lastActive: d.LastActive}
	r.mu.Unlock()

	verdict := &hivestatus.Scaling{Reason: string(d.Limit), Message: d.Message}
	if d.Replicas == current {
		return current, verdict, d.RequeueAfter, nil
	}
	base := hive.DeepCopy()
	hive.Spec.Replicas = &d.Replicas
	if err := r.Client.Patch(ctx, hive, client.MergeFrom(base)); err != nil {
		return current, verdict, 0, fmt.Errorf("scaling the hive to %d agents: %w", d.Replicas, err)
	}
	verdict.ScaledAt = &now
	direction, reason := "up", "ScaledUp"
	if d.Replicas < current {
		direction, reason = "down", "ScaledDown"
	}
	r.Recorder.Eventf(hive, nil, corev1.EventTypeNormal, reason, "Autoscale", "Scaled %s from %d to %d agents: %s", direction, current, d.Replicas, d.Message)
	if r.Observer != nil {
		r.Observer.Scaled(hive.Namespace, hive.Name, direction)
	}
	return d.Replicas, verdict, d.RequeueAfter, nil
}

func (r *HiveReconciler) forgetScale(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.scale, key)
}
