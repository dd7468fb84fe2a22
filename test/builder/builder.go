// Package builder makes Hive and Task objects for tests, the unit and integration suites,
// the end-to-end and chaos suites and the benchmark alike:
//
//	hive := builder.Hive(ns, "workers").Replicas(3).Concurrency(2).Obj()
//	task := builder.Task(ns, "t1").Hive("workers").Input(`{"q": 1}`).Priority(5).Obj()
//
// A builder starts from the smallest valid object and each method sets one field; Obj
// returns a copy, so one builder can make several objects.
package builder

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// AgentImage is the image of the agent container of built hives. Nothing pulls it: test
// clusters run no containers.
const AgentImage = "example.com/agent:v1"

// HiveBuilder builds a Hive.
type HiveBuilder struct{ h swarmv1alpha1.Hive }

// Hive starts a hive of one agent with one slot, whose template has one container.
func Hive(namespace, name string) *HiveBuilder {
	return &HiveBuilder{swarmv1alpha1.Hive{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: swarmv1alpha1.HiveSpec{
			Replicas: ptr.To[int32](1),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "agent", Image: AgentImage}},
			}},
			Agent: swarmv1alpha1.AgentSpec{Concurrency: 1},
		},
	}}
}

// Replicas sets spec.replicas.
func (b *HiveBuilder) Replicas(n int32) *HiveBuilder { b.h.Spec.Replicas = ptr.To(n); return b }

// Concurrency sets spec.agent.concurrency.
func (b *HiveBuilder) Concurrency(n int32) *HiveBuilder { b.h.Spec.Agent.Concurrency = n; return b }

// Capabilities sets spec.agent.capabilities.
func (b *HiveBuilder) Capabilities(c ...string) *HiveBuilder {
	b.h.Spec.Agent.Capabilities = c
	return b
}

// Image sets the agent container's image (a new image is a new revision).
func (b *HiveBuilder) Image(image string) *HiveBuilder {
	b.h.Spec.Template.Spec.Containers[0].Image = image
	return b
}

// Args sets the agent container's arguments.
func (b *HiveBuilder) Args(args ...string) *HiveBuilder {
	b.h.Spec.Template.Spec.Containers[0].Args = args
	return b
}

// ServiceAccount sets the template's serviceAccountName.
func (b *HiveBuilder) ServiceAccount(name string) *HiveBuilder {
	b.h.Spec.Template.Spec.ServiceAccountName = name
	return b
}

// TerminationGrace sets the template's terminationGracePeriodSeconds.
func (b *HiveBuilder) TerminationGrace(d time.Duration) *HiveBuilder {
	b.h.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To(int64(d / time.Second))
	return b
}

// TemplateLabel sets a label of the template (and so of every agent pod).
func (b *HiveBuilder) TemplateLabel(key, value string) *HiveBuilder {
	if b.h.Spec.Template.Labels == nil {
		b.h.Spec.Template.Labels = map[string]string{}
	}
	b.h.Spec.Template.Labels[key] = value
	return b
}

// DrainTimeout sets spec.rollout.drainTimeout.
func (b *HiveBuilder) DrainTimeout(d time.Duration) *HiveBuilder {
	b.h.Spec.Rollout.DrainTimeout = &metav1.Duration{Duration: d}
	return b
}

// Rollout sets spec.rollout.maxSurge and maxUnavailable.
func (b *HiveBuilder) Rollout(maxSurge, maxUnavailable intstr.IntOrString) *HiveBuilder {
	b.h.Spec.Rollout.MaxSurge, b.h.Spec.Rollout.MaxUnavailable = &maxSurge, &maxUnavailable
	return b
}

// MaxUnavailableDisruptions sets spec.disruption.maxUnavailable (the PodDisruptionBudget).
func (b *HiveBuilder) MaxUnavailableDisruptions(n intstr.IntOrString) *HiveBuilder {
	b.h.Spec.Disruption = &swarmv1alpha1.DisruptionSpec{MaxUnavailable: &n}
	return b
}

// Autoscaling sets spec.autoscaling with min and max replicas; mutate sets the rest.
func (b *HiveBuilder) Autoscaling(minReplicas, maxReplicas int32, mutate ...func(*swarmv1alpha1.AutoscalingSpec)) *HiveBuilder {
	as := &swarmv1alpha1.AutoscalingSpec{MinReplicas: ptr.To(minReplicas), MaxReplicas: maxReplicas}
	for _, m := range mutate {
		m(as)
	}
	b.h.Spec.Autoscaling = as
	return b
}

// Obj returns the hive.
func (b *HiveBuilder) Obj() *swarmv1alpha1.Hive { return b.h.DeepCopy() }

// TaskBuilder builds a Task.
type TaskBuilder struct{ t swarmv1alpha1.Task }

// Task starts a task with no hive and no input.
func Task(namespace, name string) *TaskBuilder {
	return &TaskBuilder{swarmv1alpha1.Task{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}}
}

// Hive sets spec.hive.
func (b *TaskBuilder) Hive(name string) *TaskBuilder { b.t.Spec.Hive = name; return b }

// Input sets spec.input.
func (b *TaskBuilder) Input(input string) *TaskBuilder { b.t.Spec.Input = input; return b }

// Priority sets spec.priority.
func (b *TaskBuilder) Priority(p int32) *TaskBuilder { b.t.Spec.Priority = p; return b }

// Timeout sets spec.timeout.
func (b *TaskBuilder) Timeout(d time.Duration) *TaskBuilder {
	b.t.Spec.Timeout = &metav1.Duration{Duration: d}
	return b
}

// MaxRetries sets spec.maxRetries.
func (b *TaskBuilder) MaxRetries(n int32) *TaskBuilder { b.t.Spec.MaxRetries = ptr.To(n); return b }

// Backoff sets spec.backoff.
func (b *TaskBuilder) Backoff(d time.Duration) *TaskBuilder {
	b.t.Spec.Backoff = &metav1.Duration{Duration: d}
	return b
}

// Needs sets spec.requiredCapabilities.
func (b *TaskBuilder) Needs(c ...string) *TaskBuilder { b.t.Spec.RequiredCapabilities = c; return b }

// DependsOn sets spec.dependsOn.
func (b *TaskBuilder) DependsOn(names ...string) *TaskBuilder { b.t.Spec.DependsOn = names; return b }

// TTL sets spec.ttlSecondsAfterFinished.
func (b *TaskBuilder) TTL(d time.Duration) *TaskBuilder {
	b.t.Spec.TTLSecondsAfterFinished = ptr.To(int32(d / time.Second))
	return b
}

// Cancel sets spec.cancel.
func (b *TaskBuilder) Cancel() *TaskBuilder { b.t.Spec.Cancel = true; return b }

// Label sets a label.
func (b *TaskBuilder) Label(key, value string) *TaskBuilder {
	if b.t.Labels == nil {
		b.t.Labels = map[string]string{}
	}
	b.t.Labels[key] = value
	return b
}

// Bound sets the status of a task bound to agent at attempt, assigned at, as the
// dispatcher leaves it. Written with the status subresource, after the task is created.
func (b *TaskBuilder) Bound(agent string, attempt int32, at time.Time) *TaskBuilder {
	b.t.Status.Phase, b.t.Status.Agent, b.t.Status.Attempt = swarmv1alpha1.TaskAssigned, agent, attempt
	b.t.Status.AssignedAt = ptr.To(metav1.NewMicroTime(at))
	return b
}

// Obj returns the task.
func (b *TaskBuilder) Obj() *swarmv1alpha1.Task { return b.t.DeepCopy() }
