// Package lifecycle holds the rules of a task's life: how it is bound, when an attempt is
// retried and after how long, what an operator does about timeouts, lost agents,
// dependencies, cancellation and expiry. The operator and the agent SDK both use it, so they
// agree; it calls no API.
//
// docs/architecture.md shows where it fits among the operator's parts.
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

// Backoff is the wait after the failed-th failed attempt (from 1): spec.backoff doubled
// for each earlier failure, at most MaxBackoff. Released attempts do not count.
func Backoff(spec *swarmv1alpha1.TaskSpec, failed int32) time.Duration {
	base := DefaultBackoff
	if spec.Backoff != nil {
		base = spec.Backoff.Duration
	}
	if base <= 0 {
		return 0
	}
	d := base
	for i := int32(1); i < failed && d < MaxBackoff; i++ {
		d *= 2
	}
	return min(d, MaxBackoff)
}

// CanRetry reports whether a task gets another attempt once failed of its attempts have
// failed: while they do not exceed spec.maxRetries.
func CanRetry(spec *swarmv1alpha1.TaskSpec, failed int32) bool {
	retries := int32(DefaultMaxRetries)
	if spec.MaxRetries != nil {
		retries = *spec.MaxRetries
	}
	return failed <= retries
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

// SetDependenciesReady sets the DependenciesReady condition. Its lastTransitionTime moves
// when the status or the reason changes: a dependency that goes missing starts the wait
// after which the task fails, even if the condition was already False for another reason.
func SetDependenciesReady(s *swarmv1alpha1.TaskStatus, status metav1.ConditionStatus, reason, message string, now time.Time) bool {
	c := metav1.Condition{Type: swarmv1alpha1.TaskDependenciesReady, Status: status, Reason: reason,
		Message: truncate(message, 1024), LastTransitionTime: metav1.NewTime(now)}
	prev := meta.FindStatusCondition(s.Conditions, swarmv1alpha1.TaskDependenciesReady)
	if prev != nil && prev.Status == c.Status && prev.Reason == c.Reason {
		if prev.Message == c.Message {
			return false
		}
		c.LastTransitionTime = prev.LastTransitionTime
	}
	for i := range s.Conditions {
		if s.Conditions[i].Type == c.Type {
			s.Conditions[i] = c
			return true
		}
	}
	s.Conditions = append(s.Conditions, c)
	return true
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
// is shutting down or draining): it is queued again at once, as a new attempt that costs no
// retry and no backoff.
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
// AgentLost, AgentFailed): it counts in status.failedAttempts, and the task is queued again
// after the backoff (at once for a lost agent) if retries are left, else Failed for good.
// The reason and message land in the AttemptFailed condition and in status.message.
func FailAttempt(t *swarmv1alpha1.Task, reason, message string, now time.Time) swarmv1alpha1.TaskStatus {
	s, detail := failed(t, reason, message, now)
	if !CanRetry(&t.Spec, s.FailedAttempts) {
		return final(s, detail+"; no retries left", now)
	}
	wait := Backoff(&t.Spec, s.FailedAttempts)
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

// FailPermanently returns the status after the current attempt failed in a way another
// attempt cannot fix (the handler said so, or its result does not fit): Failed for good,
// whatever retries are left.
func FailPermanently(t *swarmv1alpha1.Task, reason, message string, now time.Time) swarmv1alpha1.TaskStatus {
	s, detail := failed(t, reason, message, now)
	return final(s, detail+"; not retried", now)
}

// failed counts the current attempt as failed and records why in the AttemptFailed
// condition; it returns the status and a sentence naming the attempt.
func failed(t *swarmv1alpha1.Task, reason, message string, now time.Time) (swarmv1alpha1.TaskStatus, string) {
	s := *t.Status.DeepCopy()
	s.FailedAttempts++
	what := fmt.Sprintf("attempt %d", s.Attempt)
	if s.Agent != "" {
		what += " on agent " + s.Agent
	}
	detail := fmt.Sprintf("%s failed (%s): %s", what, reason, message)
	meta.SetStatusCondition(&s.Conditions, metav1.Condition{
		Type: swarmv1alpha1.TaskAttemptFailed, Status: metav1.ConditionTrue, Reason: reason,
		Message: truncate(detail, 1024), LastTransitionTime: metav1.NewTime(now),
	})
	return s, detail
}

func final(s swarmv1alpha1.TaskStatus, message string, now time.Time) swarmv1alpha1.TaskStatus {
	s.Phase = swarmv1alpha1.TaskFailed
	s.FinishedAt = micro(now)
	s.Message = truncate(message, swarmv1alpha1.MaxMessageLength)
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
	// DependenciesMet means every dependency succeeded (or there are none, or the task
	// recorded so earlier).
	DependenciesMet DependencyState = iota
	// DependenciesWaiting means some dependency has not finished.
	DependenciesWaiting
	// DependencyMissing means some dependency does not exist (yet).
	DependencyMissing
	// DependencyFailed means some dependency failed or was cancelled.
	DependencyFailed
)

// DependenciesSatisfied reports whether the task recorded in its status that its
// dependencies succeeded (condition DependenciesReady=True). From then on it no longer
// waits on them: a dependency deleted afterwards (by its TTL, say) cannot block it again.
func DependenciesSatisfied(t *swarmv1alpha1.Task) bool {
	return meta.IsStatusConditionTrue(t.Status.Conditions, swarmv1alpha1.TaskDependenciesReady)
}

// Dependencies evaluates a task's dependsOn against the dependencies found (nil for a task
// that does not exist), with a message naming the ones that hold it back.
func Dependencies(t *swarmv1alpha1.Task, found map[string]*swarmv1alpha1.Task) (DependencyState, string) {
	if len(t.Spec.DependsOn) == 0 || DependenciesSatisfied(t) {
		return DependenciesMet, ""
	}
	var waiting []string
	missing := false
	for _, name := range t.Spec.DependsOn {
		dep := found[name]
		switch {
		case dep == nil:
			missing = true
			waiting = append(waiting, name+" (not found)")
		case dep.Status.Phase == swarmv1alpha1.TaskFailed:
			return DependencyFailed, fmt.Sprintf("dependency %s failed: %s", name, truncate(dep.Status.Message, 512))
		case dep.Status.Phase == swarmv1alpha1.TaskCancelled:
			return DependencyFailed, fmt.Sprintf("dependency %s was cancelled", name)
		case dep.Status.Phase != swarmv1alpha1.TaskSucceeded:
			// Only the names: the message then changes (and costs a write) when a
			// dependency appears or finishes, not each time one moves between phases.
			waiting = append(waiting, name)
		}
	}
	switch {
	case missing:
		return DependencyMissing, "waiting for tasks " + strings.Join(waiting, ", ")
	case len(waiting) > 0:
		return DependenciesWaiting, "waiting for tasks " + strings.Join(waiting, ", ")
	}
	return DependenciesMet, ""
}

// maxCycleSearch bounds the tasks FindCycle visits, so that a huge graph costs a bounded
// amount of work per reconcile; a cycle beyond it is not reported.
const maxCycleSearch = 10000

// FindCycle returns a cycle of dependencies through start, as the task names along it from
// start back to start (a, b, a), or nil when there is none. dependsOn returns the
// dependencies of a task that waits on them; false for a task that does not exist, has
// finished or recorded its dependencies satisfied, which ends every path through it.
func FindCycle(start string, dependsOn func(name string) ([]string, bool)) []string {
	const (
		unseen = iota
		onPath
		done
	)
	state := map[string]int{}
	var path []string
	visited := 0
	var walk func(name string) []string
	walk = func(name string) []string {
		if visited++; visited > maxCycleSearch {
			return nil
		}
		deps, ok := dependsOn(name)
		if !ok {
			state[name] = done
			return nil
		}
		state[name] = onPath
		path = append(path, name)
		for _, d := range deps {
			switch state[d] {
			case onPath:
				if d == start {
					return append(slices.Clone(path), start)
				}
			case unseen:
				if c := walk(d); c != nil {
					return c
				}
			}
		}
		path = path[:len(path)-1]
		state[name] = done
		return nil
	}
	return walk(start)
}

// Waiting reports whether a task waits in its hive's queue for a free slot now: queued,
// not blocked, every capability it requires offered by the hive, and its retry backoff
// over (see RetryAt, with observedAt). This is the hive's load: tasks that cannot run
// (unschedulable) or are backing off are not counted, so they neither scale a hive up nor
// keep it from scaling to zero. retryIn is how long a task backing off has left.
func Waiting(t *swarmv1alpha1.Task, offered []string, now, observedAt time.Time) (waiting bool, retryIn time.Duration) {
	if !IsQueued(t) || t.Status.Phase == swarmv1alpha1.TaskBlocked {
		return false, 0
	}
	if len(MissingCapabilities(t.Spec.RequiredCapabilities, offered)) > 0 {
		return false, 0
	}
	if at := RetryAt(t, observedAt); now.Before(at) {
		return false, at.Sub(now)
	}
	return true, 0
}

// RetryAt is when a task backing off may be bound again: status.notBefore, but never later
// than MaxBackoff after observedAt, when the operator first saw the task queued (zero when
// unknown: no cap). An agent writes notBefore when it fails an attempt; the cap keeps an
// agent that writes a time far ahead from parking a task longer than any backoff.
func RetryAt(t *swarmv1alpha1.Task, observedAt time.Time) time.Time {
	if t.Status.NotBefore == nil {
		return time.Time{}
	}
	at := t.Status.NotBefore.Time
	if !observedAt.IsZero() && at.After(observedAt.Add(MaxBackoff)) {
		at = observedAt.Add(MaxBackoff)
	}
	return at
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
