// Package autoscale decides how many agents a hive with spec.autoscaling should run, from its
// task load and its request load, the way an HPA decides from a metric: a raw recommendation from the load,
// bounded by min and max, stabilised by windows (scale up on a sustained rise, down only on
// a sustained fall), limited in its step, never below the busy agents, and to and from
// zero. It is pure: the caller keeps the history between calls and passes the clock.
//
// docs/architecture.md shows where it fits among the operator's parts.
package autoscale

import (
	"fmt"
	"time"
)

// Input is what the autoscaler knows at one moment.
type Input struct {
	Now time.Time
	// Current is spec.replicas.
	Current int32
	// Min and Max bound the result; Target is the share of slots to keep busy, in percent;
	// Concurrency is the slots per agent.
	Min, Max, Target, Concurrency int32
	// MaxStep is the most agents one decision adds.
	MaxStep int32
	// UpWindow, DownWindow and IdleTimeout: see the Hive API.
	UpWindow, DownWindow, IdleTimeout time.Duration
	// Queued and Running are the hive's tasks waiting for a slot and bound to an agent.
	Queued, Running int
	// Requests are the hive's requests queued and in flight at the gateways, and
	// ServingConcurrency the serving slots per agent. Serving slots are apart from task
	// slots, so the hive needs the agents the busier of the two asks for.
	Requests           int
	ServingConcurrency int32
	// Busy is the number of agents running at least one task or request.
	Busy int
	// LastActive is the last time the hive had tasks or requests (zero: unknown,
	// taken as now, so that a restarted operator waits a full idle period).
	LastActive time.Time
	// History holds recent recommendations, oldest first, as returned by the last call.
	History []Sample
}

// Sample is a recommendation made at a time.
type Sample struct {
	At       time.Time
	Replicas int32
}

// Limit says which bound, if any, shaped the decision.
type Limit string

const (
	// WithinRange means the load's recommendation lies between min and max.
	WithinRange Limit = "DesiredWithinRange"
	// AtMin means the load asks for fewer agents than minReplicas.
	AtMin Limit = "TooFewReplicas"
	// AtMax means the load asks for more agents than maxReplicas.
	AtMax Limit = "TooManyReplicas"
	// AtZero means the hive was idle for the idle timeout and runs no agents.
	AtZero Limit = "ScaledToZero"
)

// Decision is the autoscaler's answer.
type Decision struct {
	// Replicas is what spec.replicas should be.
	Replicas int32
	// Recommended is the load's recommendation before windows and step limits.
	Recommended int32
	// Limit and Message explain the decision, for the ScalingActive condition.
	Limit   Limit
	Message string
	// LastActive is the input's, moved to now when the hive has work.
	LastActive time.Time
	// History is the history to pass to the next call.
	History []Sample
	// RequeueAfter is when a decision may change with no new event: a window or the idle
	// timeout expiring. Zero when nothing waits.
	RequeueAfter time.Duration
}

// Decide computes the number of agents for the input.
func Decide(in Input) Decision {
	tasks := in.Queued + in.Running
	load := tasks + in.Requests
	lastActive := in.LastActive
	if load > 0 || lastActive.IsZero() {
		lastActive = in.Now
	}
	raw := max(agentsFor(tasks, in.Concurrency, in.Target), agentsFor(in.Requests, in.ServingConcurrency, in.Target))
	what := demand(tasks, in.Requests)
	slotsEach := fmt.Sprintf("%d slots each", in.Concurrency)
	if in.Requests > 0 {
		slotsEach = fmt.Sprintf("%d task and %d serving slots each", in.Concurrency, in.ServingConcurrency)
	}

	d := Decision{LastActive: lastActive}
	rec := raw
	idleFor := in.Now.Sub(lastActive)
	switch {
	case raw > in.Max:
		rec, d.Limit = in.Max, AtMax
		d.Message = fmt.Sprintf("%s need %d agents at %d%% of %s; maxReplicas is %d", what, raw, in.Target, slotsEach, in.Max)
	case raw < in.Min:
		rec, d.Limit = in.Min, AtMin
		d.Message = fmt.Sprintf("%s need %d agents; minReplicas is %d", what, raw, in.Min)
	case raw == 0 && in.Min == 0 && in.Current > 0 && idleFor < in.IdleTimeout:
		// Keep one warm agent until the hive has been idle for the idle timeout.
		rec, d.Limit = 1, WithinRange
		d.Message = fmt.Sprintf("%s; scaling to zero after %s idle (idle for %s)", what, in.IdleTimeout, idleFor.Round(time.Second))
		d.RequeueAfter = in.IdleTimeout - idleFor
	case raw == 0:
		d.Limit = AtZero
		d.Message = fmt.Sprintf("%s for %s; the first queued task or request starts an agent", what, idleFor.Round(time.Second))
	default:
		d.Limit = WithinRange
		d.Message = fmt.Sprintf("%s need %d agents at %d%% of %s", what, raw, in.Target, slotsEach)
	}
	// Scale-down drains; the busy agents stay whatever the load says.
	rec = max(rec, min(int32(in.Busy), in.Max))
	d.Recommended = rec

	// Keep the samples the longest window needs, and this one. Without history (the first
	// decision, or after a restart) the current count stands for the recent past, so a
	// restart does not skip the windows. A run of equal recommendations keeps only its
	// latest sample: the windows ask whether a value was recommended since a time, which the
	// latest sample of its run answers, so the history holds one sample per change within
	// the window, however long the window and however often the hive is reconciled.
	keep := max(in.UpWindow, in.DownWindow)
	history := in.History
	if len(history) == 0 {
		history = []Sample{{At: in.Now.Add(-time.Nanosecond), Replicas: in.Current}}
	}
	for _, s := range history {
		if in.Now.Sub(s.At) <= keep {
			d.History = append(d.History, s)
		}
	}
	if n := len(d.History); n > 0 && d.History[n-1].Replicas == rec {
		d.History[n-1].At = in.Now
	} else {
		d.History = append(d.History, Sample{At: in.Now, Replicas: rec})
	}

	target := in.Current
	switch {
	case d.Limit == AtZero:
		// The idle timeout is the stabilisation for going to zero.
		target = 0
	case in.Current == 0 && load > 0:
		// Activation: the first task or request brings an agent back at once, whatever the
		// windows.
		target = max(1, lowestSince(d.History, in.Now.Add(-in.UpWindow)))
	case rec > in.Current:
		// Scale up to what the load has asked for all through the up window.
		target = max(in.Current, lowestSince(d.History, in.Now.Add(-in.UpWindow)))
	case rec < in.Current:
		// Scale down only to the most the load asked for within the down window.
		target = min(in.Current, highestSince(d.History, in.Now.Add(-in.DownWindow)))
		if target > rec {
			if wait := firstAbove(d.History, rec, in.Now.Add(-in.DownWindow)).Add(in.DownWindow).Sub(in.Now); wait > 0 &&
				(d.RequeueAfter == 0 || wait < d.RequeueAfter) {
				d.RequeueAfter = wait
			}
		}
	}
	if target > in.Current && in.MaxStep > 0 {
		target = min(target, in.Current+in.MaxStep)
	}
	d.Replicas = min(max(target, in.Min), in.Max)
	return d
}

// agentsFor returns the agents n tasks or requests need, at target percent of slots each.
func agentsFor(n int, slots, target int32) int32 {
	if n <= 0 {
		return 0
	}
	return int32(ceilDiv(float64(n), float64(max(slots, 1))*float64(max(target, 1))/100))
}

// demand describes a load for the messages: "3 tasks", "3 tasks and 2 requests", "no tasks".
func demand(tasks, requests int) string {
	switch {
	case requests == 0 && tasks == 0:
		return "no tasks"
	case requests == 0:
		return fmt.Sprintf("%d tasks", tasks)
	case tasks == 0:
		return fmt.Sprintf("%d requests", requests)
	default:
		return fmt.Sprintf("%d tasks and %d requests", tasks, requests)
	}
}

func ceilDiv(a, b float64) int64 {
	q := a / b
	n := int64(q)
	if float64(n) < q {
		n++
	}
	return n
}

func lowestSince(h []Sample, since time.Time) int32 {
	low := int32(-1)
	for _, s := range h {
		if !s.At.Before(since) && (low < 0 || s.Replicas < low) {
			low = s.Replicas
		}
	}
	return max(low, 0)
}

func highestSince(h []Sample, since time.Time) int32 {
	high := int32(0)
	for _, s := range h {
		if !s.At.Before(since) && s.Replicas > high {
			high = s.Replicas
		}
	}
	return high
}

// firstAbove returns the time of the most recent sample above v within the window: the
// window keeps the result above v until that sample ages out.
func firstAbove(h []Sample, v int32, since time.Time) time.Time {
	var t time.Time
	for _, s := range h {
		if !s.At.Before(since) && s.Replicas > v {
			t = s.At
		}
	}
	return t
}
