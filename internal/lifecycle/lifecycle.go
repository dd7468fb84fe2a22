// Package lifecycle holds the rules of a task's life: how it is bound, when an attempt is
// retried and after how long, what an operator does about timeouts, lost agents,
// dependencies, cancellation and expiry. The operator and the agent SDK both use it, so they
// agree; it calls no API.
package lifecycle

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// Defaults of the Task spec, for objects read without the schema's defaulting.
const (
	DefaultTimeout    = 10 * time.Minute
	DefaultMaxRetries = 3
	DefaultBackoff    = time.Second
	// MaxBackoff caps the wait between attempts.
	MaxBackoff = 10 * time.Minute
)

// Timeout is the time one attempt may take.
func Timeout(spec *swarmv1alpha1.TaskSpec) time.Duration {
	if spec.Timeout == nil || spec.Timeout.Duration <= 0 {
		return DefaultTimeout
	}
	return spec.Timeout.Duration
}

// Backoff is the wait after failed attempt number attempt (from 1): spec.backoff doubled
// for each earlier failure, at most MaxBackoff.
func Backoff(spec *swarmv1alpha1.TaskSpec, attempt int32) time.Duration {
	base := DefaultBackoff
	if spec.Backoff != nil {
		base = spec.Backoff.Duration
	}
	if base <= 0 {
		return 0
	}
	d := base
	for i := int32(1); i < attempt && d < MaxBackoff; i++ {
		d *= 2
	}
	return min(d, MaxBackoff)
}

// CanRetry reports whether a task gets another attempt after attempt number attempt failed.
func CanRetry(spec *swarmv1alpha1.TaskSpec, attempt int32) bool {
	retries := int32(DefaultMaxRetries)
	if spec.MaxRetries != nil {
		retries = *spec.MaxRetries
	}
	return attempt <= retries
}

// QueuedSince is when the task entered the queue it waits in.
func QueuedSince(t *swarmv1alpha1.Task) time.Time {
	if t.Status.QueuedAt != nil {
		return t.Status.QueuedAt.Time
	}
	return t.CreationTimestamp.Time
}

// IsQueued reports whether the task waits for a slot (or its backoff): Pending and not
// cancelled. A task the operator has not touched reads as Pending.
func IsQueued(t *swarmv1alpha1.Task) bool {
	return (t.Status.Phase == swarmv1alpha1.TaskPending || t.Status.Phase == "") && !t.Spec.Cancel
}

func micro(t time.Time) *metav1.MicroTime {
	m := metav1.NewMicroTime(t)
	return &m
}

// Bind returns the status of a task bound to an agent: the dispatcher writes it with one
// status patch guarded by the task's resourceVersion.
func Bind(t *swarmv1alpha1.Task, agent string, now time.Time) swarmv1alpha1.TaskStatus {
	s := *t.Status.DeepCopy()
	s.Phase = swarmv1alpha1.TaskAssigned
	s.Agent = agent
	s.Attempt++
	s.AssignedAt = micro(now)
	s.StartedAt = nil
	s.NotBefore = nil
	s.Message = ""
	if c := meta.FindStatusCondition(s.Conditions, swarmv1alpha1.TaskScheduled); c != nil {
		meta.SetStatusCondition(&s.Conditions, metav1.Condition{
			Type: swarmv1alpha1.TaskScheduled, Status: metav1.ConditionTrue, Reason: swarmv1alpha1.ReasonBound,
			Message: "Bound to agent " + agent, LastTransitionTime: metav1.NewTime(now),
		})
	}
	return s
}

// Start returns the status of a task its agent reports running.
func Start(t *swarmv1alpha1.Task, now time.Time) swarmv1alpha1.TaskStatus {
	s := *t.Status.DeepCopy()
	s.Phase = swarmv1alpha1.TaskRunning
	s.StartedAt = micro(now)
	return s
}

// Succeed returns the status of a task its agent finished with a result.
func Succeed(t *swarmv1alpha1.Task, result string, now time.Time) swarmv1alpha1.TaskStatus {
	s := *t.Status.DeepCopy()
	s.Phase = swarmv1alpha1.TaskSucceeded
	s.Result = result
	s.Message = ""
	s.FinishedAt = micro(now)
	return s
}

// Cancel returns the status of a cancelled task.
func Cancel(t *swarmv1alpha1.Task, message string, now time.Time) swarmv1alpha1.TaskStatus {
	s := *t.Status.DeepCopy()
	s.Phase = swarmv1alpha1.TaskCancelled
	s.Message = message
	s.FinishedAt = micro(now)
	return s
}

// Release returns the status of a task its agent gives back without failing it (the agent
// is shutting down): it is queued again at once, as a new attempt.
func Release(t *swarmv1alpha1.Task, message string, now time.Time) swarmv1alpha1.TaskStatus {
	s := *t.Status.DeepCopy()
	s.Phase = swarmv1alpha1.TaskPending
	s.Agent = ""
	s.QueuedAt = micro(now)
	s.NotBefore = nil
	s.StartedAt = nil
	s.Message = message
	return s
}

// FailAttempt returns the status after the current attempt failed for a reason (TimedOut,
// AgentLost, AgentFailed): queued again after the backoff (at once for a lost agent) if
// retries are left, else Failed for good. The reason and message land in the
// AttemptFailed condition and in status.message.
func FailAttempt(t *swarmv1alpha1.Task, reason, message string, now time.Time) swarmv1alpha1.TaskStatus {
	s := *t.Status.DeepCopy()
	attempt := s.Attempt
	what := fmt.Sprintf("attempt %d", attempt)
	if s.Agent != "" {
		what += " on agent " + s.Agent
	}
	detail := fmt.Sprintf("%s failed (%s): %s", what, reason, message)
	meta.SetStatusCondition(&s.Conditions, metav1.Condition{
		Type: swarmv1alpha1.TaskAttemptFailed, Status: metav1.ConditionTrue, Reason: reason,
		Message: truncate(detail, 1024), LastTransitionTime: metav1.NewTime(now),
	})
	if !CanRetry(&t.Spec, attempt) {
		s.Phase = swarmv1alpha1.TaskFailed
		s.FinishedAt = micro(now)
		s.Message = truncate(detail+"; no retries left", swarmv1alpha1.MaxMessageLength)
		return s
	}
	wait := Backoff(&t.Spec, attempt)
	if reason == swarmv1alpha1.ReasonAgentLost {
		wait = 0
	}
	s.Phase = swarmv1alpha1.TaskPending
	s.Agent = ""
	s.QueuedAt = micro(now)
	s.StartedAt = nil
	s.NotBefore = nil
	if wait > 0 {
		s.NotBefore = micro(now.Add(wait))
		detail += fmt.Sprintf("; retrying after %s", wait)
	} else {
		detail += "; retrying"
	}
	s.Message = truncate(detail, swarmv1alpha1.MaxMessageLength)
	return s
}

// Fail returns the status of a task that fails for good without an attempt of its own
// (a dependency failed).
func Fail(t *swarmv1alpha1.Task, reason, message string, now time.Time) swarmv1alpha1.TaskStatus {
	s := *t.Status.DeepCopy()
	s.Phase = swarmv1alpha1.TaskFailed
	s.Agent = ""
	s.Message = truncate(message, swarmv1alpha1.MaxMessageLength)
	s.FinishedAt = micro(now)
	meta.SetStatusCondition(&s.Conditions, metav1.Condition{
		Type: swarmv1alpha1.TaskScheduled, Status: metav1.ConditionFalse, Reason: reason,
		Message: truncate(message, 1024), LastTransitionTime: metav1.NewTime(now),
	})
	return s
}

// MissingCapabilities returns the required capabilities a hive does not offer.
func MissingCapabilities(required, offered []string) []string {
	var missing []string
	for _, c := range required {
		if !slices.Contains(offered, c) {
			missing = append(missing, c)
		}
	}
	return missing
}

// DependencyState is where a task stands with the tasks it depends on.
type DependencyState int

const (
	// DependenciesMet means every dependency succeeded (or there are none).
	DependenciesMet DependencyState = iota
	// DependenciesWaiting means some dependency has not finished (or does not exist yet).
	DependenciesWaiting
	// DependencyFailed means some dependency failed or was cancelled.
	DependencyFailed
)

// Dependencies evaluates a task's dependsOn against the dependencies found (nil for a task
// that does not exist), with a message naming the ones that hold it back.
func Dependencies(t *swarmv1alpha1.Task, found map[string]*swarmv1alpha1.Task) (DependencyState, string) {
	var waiting []string
	for _, name := range t.Spec.DependsOn {
		dep := found[name]
		switch {
		case dep == nil:
			waiting = append(waiting, name+" (not found)")
		case dep.Status.Phase == swarmv1alpha1.TaskFailed:
			return DependencyFailed, fmt.Sprintf("dependency %s failed: %s", name, truncate(dep.Status.Message, 512))
		case dep.Status.Phase == swarmv1alpha1.TaskCancelled:
			return DependencyFailed, fmt.Sprintf("dependency %s was cancelled", name)
		case dep.Status.Phase != swarmv1alpha1.TaskSucceeded:
			// Only the names: the message then changes (and costs a write) when a
			// dependency finishes, not each time one moves between phases.
			waiting = append(waiting, name)
		}
	}
	if len(waiting) > 0 {
		return DependenciesWaiting, "waiting for tasks " + strings.Join(waiting, ", ")
	}
	return DependenciesMet, ""
}

// truncate shortens s to at most n bytes, ending with an ellipsis when it cut, and cuts on a
// character boundary.
func truncate(s string, n int) string {
	const ellipsis = "…"
	if len(s) <= n {
		return s
	}
	n = max(0, n-len(ellipsis))
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + ellipsis
}

// Truncate shortens s to at most n bytes (plus an ellipsis), on a character boundary.
func Truncate(s string, n int) string { return truncate(s, n) }
