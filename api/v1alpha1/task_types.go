package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MaxInputLength is the largest spec.input a task may carry, in characters (64 KiB).
const MaxInputLength = 65536

// MaxResultLength is the largest status.result an agent may write, in characters
// (256 KiB): results are stored in etcd with the task, so large outputs belong in object
// storage with their address in the result.
const MaxResultLength = 262144

// MaxMessageLength is the largest status.message, in characters.
const MaxMessageLength = 32768

// TaskSpec is the desired state of a Task: which hive runs it, with what input, how urgently,
// and how failures are handled.
// +kubebuilder:validation:XValidation:rule="has(self.input) == has(oldSelf.input)",message="spec.input is immutable: create a new task to run different input"
// +kubebuilder:validation:XValidation:rule="has(self.dependsOn) == has(oldSelf.dependsOn)",message="spec.dependsOn is immutable: create a new task with different dependencies"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.cancel) || !oldSelf.cancel || (has(self.cancel) && self.cancel)",message="spec.cancel cannot be unset once a task has been cancelled"
type TaskSpec struct {
	// hive is the name of the Hive, in the task's namespace, whose agents run this task.
	// The task waits in the queue (condition Scheduled=False, reason HiveNotFound) until a
	// hive of that name exists.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="spec.hive must be a valid hive name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.hive is immutable: create a new task to run it on another hive"
	// +required
	Hive string `json:"hive"`

	// input is the work for the agent, passed to it as is (JSON is a good choice). At most
	// 65536 characters: larger inputs belong in object storage, with their address here.
	// +kubebuilder:validation:MaxLength=65536
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.input is immutable: create a new task to run different input"
	// +optional
	Input string `json:"input,omitempty"`

	// priority orders the hive's queue: higher first, then older first.
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=-1000
	// +kubebuilder:validation:Maximum=1000
	// +optional
	Priority int32 `json:"priority,omitempty"`

	// timeout is how long one attempt may run, from the moment it is bound to an agent,
	// before it fails with reason TimedOut (and is retried if retries are left).
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s') && duration(self) <= duration('168h')",message="timeout must be a duration greater than 0s and at most 168h, such as 30s or 10m"
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// maxRetries is how many more attempts a task gets after a failed one: the agent
	// reported a failure, the attempt timed out, or its agent was lost. The task fails for
	// good when its failed attempts (status.failedAttempts) exceed maxRetries. Attempts an
	// agent released on shutdown or drain do not count.
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	MaxRetries *int32 `json:"maxRetries,omitempty"`

	// backoff is the wait before the first retry; it doubles with each further retry, up to
	// 10 minutes. A task whose agent was lost is requeued without waiting.
	// +kubebuilder:default="1s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) <= duration('1h')",message="backoff must be a duration between 0s and 1h, such as 1s or 30s"
	// +optional
	Backoff *metav1.Duration `json:"backoff,omitempty"`

	// requiredCapabilities must all be offered by the hive (spec.agent.capabilities) for the
	// task to be dispatched; otherwise the task is reported Unschedulable.
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.all(c, c.matches('^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$'))",message="each required capability must be a lowercase name of letters, digits, '-', '_' and '.', starting and ending with a letter or digit, such as gpu or model.llama-3"
	// +optional
	RequiredCapabilities []string `json:"requiredCapabilities,omitempty"`

	// dependsOn names tasks in the same namespace that must succeed before this one is
	// queued. If one of them fails or is cancelled, this task fails too. The agent can read
	// their results.
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.all(d, d.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'))",message="each entry of dependsOn must be a valid task name: lowercase letters, digits, '-' and '.'"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.dependsOn is immutable: create a new task with different dependencies"
	// +optional
	DependsOn []string `json:"dependsOn,omitempty"`

	// ttlSecondsAfterFinished deletes the task this many seconds after it succeeded, failed
	// or was cancelled; unset, its hive's spec.taskRetention applies (one hour by default).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=31536000
	// +optional
	TTLSecondsAfterFinished *int32 `json:"ttlSecondsAfterFinished,omitempty"`

	// cancel, when true, stops the task: a queued task is never dispatched and a running
	// one has its handler's context cancelled. It cannot be unset.
	// +optional
	Cancel bool `json:"cancel,omitempty"`
}

// TaskPhase is where a task is in its lifecycle.
// +kubebuilder:validation:Enum=Pending;Blocked;Assigned;Running;Succeeded;Failed;Cancelled
type TaskPhase string

const (
	// TaskPending means the task waits in its hive's queue for a free slot (or for its
	// retry backoff to pass).
	TaskPending TaskPhase = "Pending"
	// TaskBlocked means the task waits for the tasks it depends on to succeed.
	TaskBlocked TaskPhase = "Blocked"
	// TaskAssigned means the task is bound to an agent, which has not reported it running.
	TaskAssigned TaskPhase = "Assigned"
	// TaskRunning means the agent is working on the task.
	TaskRunning TaskPhase = "Running"
	// TaskSucceeded means the agent finished the task; status.result holds its output.
	TaskSucceeded TaskPhase = "Succeeded"
	// TaskFailed means the task's last attempt failed and no retries are left, or a
	// dependency failed; status.message says why.
	TaskFailed TaskPhase = "Failed"
	// TaskCancelled means spec.cancel stopped the task.
	TaskCancelled TaskPhase = "Cancelled"
)

// Finished reports whether the phase is final.
func (p TaskPhase) Finished() bool {
	return p == TaskSucceeded || p == TaskFailed || p == TaskCancelled
}

// Bound reports whether a task in this phase holds a slot of its agent.
func (p TaskPhase) Bound() bool {
	return p == TaskAssigned || p == TaskRunning
}

// TaskStatus is the observed state of a Task. The operator writes the queue and binding
// fields; the bound agent writes the running, result and message fields.
// +kubebuilder:validation:XValidation:rule="!(self.phase in ['Assigned', 'Running']) || (has(self.agent) && size(self.agent) > 0)",message="status.agent must be set while a task is Assigned or Running"
type TaskStatus struct {
	// phase is where the task is in its lifecycle. A task the operator has not yet touched
	// reads as Pending.
	// +kubebuilder:default=Pending
	// +optional
	Phase TaskPhase `json:"phase,omitempty"`

	// agent is the name of the agent pod the current attempt is bound to. Agents watch their
	// tasks with the field selector status.agent=<pod name>.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Agent string `json:"agent,omitempty"`

	// attempt counts the attempts started, from 1 for the first binding, including attempts
	// an agent released on shutdown or drain. An agent sees which try it is working on:
	// delivery is at least once, and (task uid, attempt) names one try uniquely.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Attempt int32 `json:"attempt,omitempty"`

	// failedAttempts counts the attempts that failed: the agent reported a failure, the
	// attempt timed out, or its agent was lost. spec.maxRetries and the retry backoff count
	// these; an attempt an agent released (it was shutting down or draining) is not a
	// failure and costs no retry.
	// +kubebuilder:validation:Minimum=0
	// +optional
	FailedAttempts int32 `json:"failedAttempts,omitempty"`

	// queuedAt is when the task last went back to the queue; unset while it waits for its
	// first attempt, when its creation time stands for it (which saves a write per task).
	// +optional
	QueuedAt *metav1.MicroTime `json:"queuedAt,omitempty"`

	// notBefore, while Pending, is the earliest time the next attempt may be bound: the end
	// of the retry backoff.
	// +optional
	NotBefore *metav1.MicroTime `json:"notBefore,omitempty"`

	// assignedAt is when the current attempt was bound to its agent.
	// +optional
	AssignedAt *metav1.MicroTime `json:"assignedAt,omitempty"`

	// startedAt is when the agent reported the current attempt running. Quick tasks skip
	// the Running phase and leave it unset.
	// +optional
	StartedAt *metav1.MicroTime `json:"startedAt,omitempty"`

	// finishedAt is when the task reached a final phase.
	// +optional
	FinishedAt *metav1.MicroTime `json:"finishedAt,omitempty"`

	// result is the agent's output, written with phase Succeeded.
	// +kubebuilder:validation:MaxLength=262144
	// +optional
	Result string `json:"result,omitempty"`

	// message explains the phase in words: why an attempt failed, what the task waits for.
	// +kubebuilder:validation:MaxLength=32768
	// +optional
	Message string `json:"message,omitempty"`

	// conditions report Scheduled (with reasons such as HiveNotFound and Unschedulable),
	// DependenciesReady for a task with dependsOn, and the reason of the last failed attempt.
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// Task is one unit of work for a hive, queued by priority and bound to one agent.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=tk,categories=swarm
// +kubebuilder:selectablefield:JSONPath=`.spec.hive`
// +kubebuilder:selectablefield:JSONPath=`.status.agent`
// +kubebuilder:selectablefield:JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Hive",type=string,JSONPath=`.spec.hive`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Agent",type=string,JSONPath=`.status.agent`
// +kubebuilder:printcolumn:name="Attempt",type=integer,JSONPath=`.status.attempt`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Priority",type=integer,JSONPath=`.spec.priority`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.message`,priority=1
// +kubebuilder:validation:XValidation:rule="!has(self.spec.dependsOn) || !(self.metadata.name in self.spec.dependsOn)",message="a task cannot depend on itself: remove its own name from spec.dependsOn"
type Task struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the work and how to run it.
	// +required
	Spec TaskSpec `json:"spec"`

	// status is the task's progress, written by the operator and by its agent.
	// +kubebuilder:default={phase: Pending}
	// +optional
	Status TaskStatus `json:"status,omitempty"`
}

// TaskList is a list of Tasks.
// +kubebuilder:object:root=true
type TaskList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the tasks.
	Items []Task `json:"items"`
}
