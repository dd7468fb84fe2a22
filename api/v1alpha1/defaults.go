package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// Defaults of the Hive spec. The schema sets them on every hive it stores (the
// +kubebuilder:default markers, which a test holds equal to these); the operator applies
// them to objects read without the schema's defaulting through the accessors below, so
// each default is written once.
const (
	DefaultReplicas    int32 = 1
	DefaultConcurrency int32 = 1
	// DefaultDrainTimeout is spec.rollout.drainTimeout's default.
	DefaultDrainTimeout = 10 * time.Minute
	// DefaultMaxUnavailable is spec.rollout.maxUnavailable's default: a rollout keeps
	// every agent until its replacement is ready.
	DefaultMaxUnavailable int32 = 0
	// DefaultDisruptionMaxUnavailable is spec.disruption.maxUnavailable's default.
	DefaultDisruptionMaxUnavailable int32 = 1

	DefaultMinReplicas              int32 = 0
	DefaultTargetUtilizationPercent int32 = 100
	DefaultMaxScaleUpStep           int32 = 10
	DefaultScaleUpWindow                  = time.Duration(0)
	DefaultScaleDownWindow                = time.Minute
	DefaultIdleTimeout                    = 5 * time.Minute
	// DefaultTaskRetention is spec.taskRetention.ttlSecondsAfterFinished's default: how long
	// a finished task that sets no TTL of its own is kept.
	DefaultTaskRetention = time.Hour

	// Defaults of spec.serving.
	DefaultServingConcurrency  int32 = 8
	DefaultServingPort         int32 = 8081
	DefaultServingQueueLength  int32 = 100
	DefaultServingQueueTimeout       = 10 * time.Second
)

// DefaultMaxSurge is spec.rollout.maxSurge's default.
var DefaultMaxSurge = intstr.FromString("25%")

// ReplicasOrDefault returns spec.replicas, or its default.
func (s *HiveSpec) ReplicasOrDefault() int32 { return ptr.Deref(s.Replicas, DefaultReplicas) }

// TaskRetentionOrDefault returns spec.taskRetention.ttlSecondsAfterFinished, or its default.
func (s *HiveSpec) TaskRetentionOrDefault() time.Duration {
	if s.TaskRetention == nil || s.TaskRetention.TTLSecondsAfterFinished == nil {
		return DefaultTaskRetention
	}
	return time.Duration(*s.TaskRetention.TTLSecondsAfterFinished) * time.Second
}

// MaxFinishedTasks returns spec.taskRetention.maxFinishedTasks, and false when it is unset.
func (s *HiveSpec) MaxFinishedTasks() (int, bool) {
	if s.TaskRetention == nil || s.TaskRetention.MaxFinishedTasks == nil {
		return 0, false
	}
	return int(*s.TaskRetention.MaxFinishedTasks), true
}

// ConcurrencyOrDefault returns spec.agent.concurrency, or its default.
func (s *AgentSpec) ConcurrencyOrDefault() int32 {
	if s.Concurrency < 1 {
		return DefaultConcurrency
	}
	return s.Concurrency
}

// DrainTimeoutOrDefault returns spec.rollout.drainTimeout, or its default.
func (r *RolloutSpec) DrainTimeoutOrDefault() time.Duration {
	return durationOr(r.DrainTimeout, DefaultDrainTimeout)
}

// MaxSurgeOrDefault returns spec.rollout.maxSurge, or its default.
func (r *RolloutSpec) MaxSurgeOrDefault() intstr.IntOrString {
	if r.MaxSurge == nil {
		return DefaultMaxSurge
	}
	return *r.MaxSurge
}

// MaxUnavailableOrDefault returns spec.rollout.maxUnavailable, or its default.
func (r *RolloutSpec) MaxUnavailableOrDefault() intstr.IntOrString {
	if r.MaxUnavailable == nil {
		return intstr.FromInt32(DefaultMaxUnavailable)
	}
	return *r.MaxUnavailable
}

// DisruptionMaxUnavailableOrDefault returns spec.disruption.maxUnavailable, or its default.
func (s *HiveSpec) DisruptionMaxUnavailableOrDefault() intstr.IntOrString {
	if s.Disruption == nil || s.Disruption.MaxUnavailable == nil {
		return intstr.FromInt32(DefaultDisruptionMaxUnavailable)
	}
	return *s.Disruption.MaxUnavailable
}

// MinReplicasOrDefault returns minReplicas, or its default.
func (a *AutoscalingSpec) MinReplicasOrDefault() int32 {
	return ptr.Deref(a.MinReplicas, DefaultMinReplicas)
}

// TargetUtilizationPercentOrDefault returns targetUtilizationPercent, or its default.
func (a *AutoscalingSpec) TargetUtilizationPercentOrDefault() int32 {
	return ptr.Deref(a.TargetUtilizationPercent, DefaultTargetUtilizationPercent)
}

// MaxScaleUpStepOrDefault returns maxScaleUpStep, or its default.
func (a *AutoscalingSpec) MaxScaleUpStepOrDefault() int32 {
	return ptr.Deref(a.MaxScaleUpStep, DefaultMaxScaleUpStep)
}

// ScaleUpWindowOrDefault returns scaleUpWindow, or its default.
func (a *AutoscalingSpec) ScaleUpWindowOrDefault() time.Duration {
	return durationOr(a.ScaleUpWindow, DefaultScaleUpWindow)
}

// ScaleDownWindowOrDefault returns scaleDownWindow, or its default.
func (a *AutoscalingSpec) ScaleDownWindowOrDefault() time.Duration {
	return durationOr(a.ScaleDownWindow, DefaultScaleDownWindow)
}

// IdleTimeoutOrDefault returns idleTimeout, or its default.
func (a *AutoscalingSpec) IdleTimeoutOrDefault() time.Duration {
	return durationOr(a.IdleTimeout, DefaultIdleTimeout)
}

// ConcurrencyOrDefault returns serving.concurrency, or its default.
func (s *ServingSpec) ConcurrencyOrDefault() int32 {
	return ptr.Deref(s.Concurrency, DefaultServingConcurrency)
}

// PortOrDefault returns serving.port, or its default.
func (s *ServingSpec) PortOrDefault() int32 { return ptr.Deref(s.Port, DefaultServingPort) }

// QueueLengthOrDefault returns serving.queueLength, or its default.
func (s *ServingSpec) QueueLengthOrDefault() int32 {
	return ptr.Deref(s.QueueLength, DefaultServingQueueLength)
}

// QueueTimeoutOrDefault returns serving.queueTimeout, or its default.
func (s *ServingSpec) QueueTimeoutOrDefault() time.Duration {
	return durationOr(s.QueueTimeout, DefaultServingQueueTimeout)
}

func durationOr(d *metav1.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.Duration
}
