package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// HiveSpec is the desired state of a Hive: how many agents, built from which pod template,
// with how many task slots each, and how they are scaled, rolled out and protected.
type HiveSpec struct {
	// replicas is the number of agent pods the hive keeps. When spec.autoscaling is set the
	// built-in autoscaler writes this field; otherwise it belongs to the user, or to an HPA or
	// KEDA through the scale subresource.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// template is the pod template of every agent. The operator adds the hive and revision
	// labels, an owner reference, and the environment variables POD_NAME, POD_NAMESPACE,
	// HIVE_NAME, AGENT_CONCURRENCY and AGENT_CAPABILITIES to every container. A change to the
	// template starts a rollout.
	// +required
	Template corev1.PodTemplateSpec `json:"template"`

	// agent describes what each agent can do: how many tasks it runs at once and which
	// capabilities it offers.
	// +kubebuilder:default={concurrency: 1}
	// +optional
	Agent AgentSpec `json:"agent,omitempty"`

	// autoscaling, when set, lets the operator size the hive from its task queue, including
	// to and from zero. When unset, spec.replicas is left as written.
	// +optional
	Autoscaling *AutoscalingSpec `json:"autoscaling,omitempty"`

	// rollout controls how a template change replaces agents without downtime.
	// +kubebuilder:default={maxSurge: "25%", maxUnavailable: 0, drainTimeout: "10m"}
	// +optional
	Rollout RolloutSpec `json:"rollout,omitempty"`

	// disruption sets the PodDisruptionBudget the operator keeps for the hive's agents, so
	// voluntary disruptions such as node drains cannot take too many agents at once.
	// +kubebuilder:default={maxUnavailable: 1}
	// +optional
	Disruption *DisruptionSpec `json:"disruption,omitempty"`

	// taskRetention says how long the hive's finished tasks are kept, so that history does
	// not fill etcd when tasks set no ttlSecondsAfterFinished of their own.
	// +kubebuilder:default={ttlSecondsAfterFinished: 3600}
	// +optional
	TaskRetention *TaskRetentionSpec `json:"taskRetention,omitempty"`

	// serving, when set, lets the hive answer requests as well as tasks: a request sent to
	// the hive gateway is forwarded to an agent with a free serving slot and answered
	// synchronously, with no API write per request. The operator gives the agents the port
	// and slots below as AGENT_SERVING_PORT and AGENT_SERVING_CONCURRENCY; changing either
	// starts a rollout.
	// +optional
	Serving *ServingSpec `json:"serving,omitempty"`
}

// ServingSpec sets how a hive's agents answer requests. An agent's serving slots are its
// own, apart from its task slots (spec.agent.concurrency): a request never waits for a
// task, and a task never waits for a request.
type ServingSpec struct {
	// concurrency is how many requests one agent serves at once: its serving slots. An
	// agent asked for more answers 429 and the gateway tries another.
	// +kubebuilder:default=8
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +optional
	Concurrency *int32 `json:"concurrency,omitempty"`

	// port is the container port the agents serve requests on (POST /v1/requests, see
	// docs/agent-protocol.md).
	// +kubebuilder:default=8081
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port *int32 `json:"port,omitempty"`

	// queueLength is how many requests each gateway replica holds for the hive while every
	// serving slot is busy, first in first out; one more is answered 503 with Retry-After.
	// 0 answers at once when no slot is free.
	// +kubebuilder:default=100
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000
	// +optional
	QueueLength *int32 `json:"queueLength,omitempty"`

	// queueTimeout is how long a request may wait in the queue for a free slot before it is
	// answered 503 with Retry-After. A hive scaled to zero has this long to start its first
	// agent.
	// +kubebuilder:default="10s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) <= duration('10m')",message="serving.queueTimeout must be a duration between 0s and 10m, such as 10s"
	// +optional
	QueueTimeout *metav1.Duration `json:"queueTimeout,omitempty"`
}

// TaskRetentionSpec says how long a hive's finished (Succeeded, Failed or Cancelled) tasks
// are kept.
type TaskRetentionSpec struct {
	// ttlSecondsAfterFinished is how long a finished task of the hive is kept when the task
	// sets no spec.ttlSecondsAfterFinished of its own. Default 3600 (one hour).
	// +kubebuilder:default=3600
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=31536000
	// +optional
	TTLSecondsAfterFinished *int32 `json:"ttlSecondsAfterFinished,omitempty"`

	// maxFinishedTasks, when set, caps the finished tasks kept for the hive: past it, the
	// tasks that finished first are deleted first, whatever their TTL (a task that unfinished
	// tasks depend on is kept until they finish). Unset: no cap.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxFinishedTasks *int32 `json:"maxFinishedTasks,omitempty"`
}

// AgentSpec describes the agents of a hive.
type AgentSpec struct {
	// concurrency is the number of slots of each agent: how many tasks it runs at once.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	Concurrency int32 `json:"concurrency,omitempty"`

	// capabilities lists what the agents of this hive can do. A task whose
	// requiredCapabilities are not all listed here is never bound to this hive's agents.
	// Each capability is a lowercase name of letters, digits, '-', '_' and '.', such as
	// "gpu", "python" or "model.llama-3".
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.all(c, c.matches('^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$'))",message="each capability must be a lowercase name of letters, digits, '-', '_' and '.', starting and ending with a letter or digit, such as gpu or model.llama-3"
	// +optional
	Capabilities []string `json:"capabilities,omitempty"`
}

// AutoscalingSpec sizes a hive from its task queue.
// +kubebuilder:validation:XValidation:rule="!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",message="autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas"
type AutoscalingSpec struct {
	// minReplicas is the fewest agents the autoscaler keeps. 0 lets an idle hive scale to
	// zero after idleTimeout; the first queued task brings an agent back.
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	// +optional
	MinReplicas *int32 `json:"minReplicas,omitempty"`

	// maxReplicas is the most agents the autoscaler runs.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +required
	MaxReplicas int32 `json:"maxReplicas"`

	// targetUtilizationPercent is the share of all slots the autoscaler aims to keep busy:
	// desired agents = ceil((running + queued tasks) / (concurrency × target / 100)).
	// 100 means one task per slot; lower keeps headroom for bursts; above 100 accepts that
	// tasks wait in the queue.
	// +kubebuilder:default=100
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	TargetUtilizationPercent *int32 `json:"targetUtilizationPercent,omitempty"`

	// scaleUpWindow is how long a higher load must last before the hive grows. The default,
	// 0s, scales up at once.
	// +kubebuilder:default="0s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) <= duration('1h')",message="scaleUpWindow must be a duration between 0s and 1h, such as 0s or 30s"
	// +optional
	ScaleUpWindow *metav1.Duration `json:"scaleUpWindow,omitempty"`

	// scaleDownWindow is how long the load must stay lower before the hive shrinks: the
	// autoscaler uses the highest recommendation seen within this window.
	// +kubebuilder:default="1m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) <= duration('24h')",message="scaleDownWindow must be a duration between 0s and 24h, such as 1m or 5m"
	// +optional
	ScaleDownWindow *metav1.Duration `json:"scaleDownWindow,omitempty"`

	// maxScaleUpStep is the most agents added by one scale-up decision, so that a burst of
	// tasks cannot flood the API server with pod creations.
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	MaxScaleUpStep *int32 `json:"maxScaleUpStep,omitempty"`

	// idleTimeout is how long a hive with minReplicas 0 must have no queued or running tasks
	// before it scales to zero.
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) <= duration('168h')",message="idleTimeout must be a duration between 0s and 168h, such as 5m"
	// +optional
	IdleTimeout *metav1.Duration `json:"idleTimeout,omitempty"`
}

// RolloutSpec controls how a template change replaces agents.
// +kubebuilder:validation:XValidation:rule="!(has(self.maxSurge) && has(self.maxUnavailable) && string(self.maxSurge) in ['0', '0%'] && string(self.maxUnavailable) in ['0', '0%'])",message="rollout.maxSurge and rollout.maxUnavailable must not both be 0: a rollout could never replace an agent"
type RolloutSpec struct {
	// maxSurge is how many agents above spec.replicas a rollout may create, as a number or a
	// percentage of replicas (rounded up).
	// +kubebuilder:default="25%"
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : self.matches('^(0|[1-9][0-9]*)%$')",message="maxSurge must be a non-negative number or a percentage, such as 1 or 25%"
	// +optional
	MaxSurge *intstr.IntOrString `json:"maxSurge,omitempty"`

	// maxUnavailable is how many agents below spec.replicas may be not ready during a
	// rollout, as a number or a percentage of replicas (rounded down). The default, 0, keeps
	// every agent serving until its replacement is ready.
	// +kubebuilder:default=0
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : self.matches('^(0|[1-9][0-9]?|100)%$')",message="maxUnavailable must be a non-negative number or a percentage between 0% and 100%, such as 0 or 10%"
	// +optional
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`

	// drainTimeout is how long a draining agent may keep working on its tasks before it is
	// deleted anyway; its unfinished tasks are then requeued as new attempts.
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) <= duration('168h')",message="drainTimeout must be a duration between 0s and 168h, such as 30s or 10m"
	// +optional
	DrainTimeout *metav1.Duration `json:"drainTimeout,omitempty"`
}

// DisruptionSpec sets the PodDisruptionBudget of a hive's agents.
type DisruptionSpec struct {
	// maxUnavailable is how many agents voluntary disruptions (node drains, evictions) may
	// take at once, as a number or a percentage of replicas.
	// +kubebuilder:default=1
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : self.matches('^(0|[1-9][0-9]?|100)%$')",message="disruption.maxUnavailable must be a non-negative number or a percentage between 0% and 100%, such as 1 or 20%"
	// +optional
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`
}

// HiveStatus is the observed state of a Hive.
type HiveStatus struct {
	// observedGeneration is the spec generation the status was computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// replicas is the number of agent pods that exist and are not being deleted.
	// +optional
	Replicas int32 `json:"replicas"`

	// readyReplicas is the number of agent pods whose Ready condition is true.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas"`

	// availableReplicas is the number of ready agents that are not draining: the agents
	// that can take new tasks.
	// +optional
	AvailableReplicas int32 `json:"availableReplicas"`

	// updatedReplicas is the number of agent pods of the update revision.
	// +optional
	UpdatedReplicas int32 `json:"updatedReplicas"`

	// desiredReplicas is the number of agents the hive is converging to: spec.replicas, or
	// the autoscaler's recommendation when autoscaling is set.
	// +optional
	DesiredReplicas int32 `json:"desiredReplicas"`

	// readySummary is "ready/desired" agents, for display by kubectl.
	// +optional
	ReadySummary string `json:"readySummary,omitempty"`

	// idleAgents is the number of ready, non-draining agents with no task.
	// +optional
	IdleAgents int32 `json:"idleAgents"`

	// busyAgents is the number of agents running at least one task.
	// +optional
	BusyAgents int32 `json:"busyAgents"`

	// drainingAgents is the number of agents marked for removal: they take no new tasks and
	// are deleted once idle or when the drain timeout expires.
	// +optional
	DrainingAgents int32 `json:"drainingAgents"`

	// queuedTasks is the number of tasks of this hive waiting for a slot.
	// +optional
	QueuedTasks int32 `json:"queuedTasks"`

	// runningTasks is the number of tasks of this hive bound to an agent (Assigned or
	// Running).
	// +optional
	RunningTasks int32 `json:"runningTasks"`

	// currentRevision is the template revision all agents ran when the last rollout
	// finished.
	// +optional
	CurrentRevision string `json:"currentRevision,omitempty"`

	// updateRevision is the revision of the current template: new agents are created with
	// it.
	// +optional
	UpdateRevision string `json:"updateRevision,omitempty"`

	// selector is the label selector of the hive's agent pods in string form, for the scale
	// subresource (used by HPA and KEDA).
	// +optional
	Selector string `json:"selector,omitempty"`

	// lastScaleTime is when the autoscaler last changed spec.replicas.
	// +optional
	LastScaleTime *metav1.Time `json:"lastScaleTime,omitempty"`

	// conditions report Available, Progressing, Degraded and ScalingActive.
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// Hive is a warm pool of agent pods that tasks are dispatched to.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=hv,categories=swarm
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.readySummary`,description="Ready agents / desired agents"
// +kubebuilder:printcolumn:name="Up-to-date",type=integer,JSONPath=`.status.updatedReplicas`,description="Agents of the current template"
// +kubebuilder:printcolumn:name="Busy",type=integer,JSONPath=`.status.busyAgents`,description="Agents running at least one task"
// +kubebuilder:printcolumn:name="Queued",type=integer,JSONPath=`.status.queuedTasks`,description="Tasks waiting for a slot"
// +kubebuilder:printcolumn:name="Revision",type=string,JSONPath=`.status.currentRevision`,description="Template revision of the agents"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Concurrency",type=integer,JSONPath=`.spec.agent.concurrency`,priority=1,description="Slots per agent"
// +kubebuilder:printcolumn:name="Update-revision",type=string,JSONPath=`.status.updateRevision`,priority=1,description="Revision agents are being rolled out to"
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="hive names must be at most 63 characters: the name is used as a label value on the hive's agent pods"
type Hive struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired state of the hive.
	// +required
	Spec HiveSpec `json:"spec"`

	// status is the observed state of the hive, written by the operator.
	// +optional
	Status HiveStatus `json:"status,omitempty"`
}

// HiveList is a list of Hives.
// +kubebuilder:object:root=true
type HiveList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the hives.
	Items []Hive `json:"items"`
}
