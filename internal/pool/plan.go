// Package pool decides how a hive's agents change: which agents to create, mark draining,
// bring back from draining, and delete, so that the hive reaches its replicas and current
// revision without downtime and without killing an agent in the middle of a task.
//
// It is pure: the caller observes the agents, calls Compute, and carries out the Plan.
// Because every decision is recomputed from the observed agents, a plan interrupted half
// way (the operator restarts, a write fails) is simply continued by the next one.
package pool

import (
	"cmp"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
)

// Agent is what the planner needs to know about one agent pod.
type Agent struct {
	Name     string
	Revision string
	Created  time.Time
	// Ready is the pod's Ready condition.
	Ready bool
	// Finished means the pod failed or succeeded: its agent is gone for good.
	Finished bool
	// Terminating means the pod is being deleted; it no longer counts.
	Terminating bool
	// Draining means the agent is marked for removal and takes no new tasks.
	Draining bool
	// DrainingSince is when the drain started; zero when the mark could not be read.
	DrainingSince time.Time
	// Busy is the number of tasks bound to the agent (Assigned or Running).
	Busy int
}

// Spec is what the hive asks for.
type Spec struct {
	Replicas       int
	UpdateRevision string
	// MaxSurge and MaxUnavailable are resolved against Replicas (see ResolveRollout).
	MaxSurge       int
	MaxUnavailable int
	// DrainTimeout is how long a busy draining agent may keep working before it is deleted.
	DrainTimeout time.Duration
	// DrainSettle is how long an idle agent stays marked draining before it is deleted. It
	// covers the time the dispatcher's cache takes to see the mark, so a task bound in that
	// window is not cut short.
	DrainSettle time.Duration
}

// DeleteReason says why an agent is deleted.
type DeleteReason string

const (
	// DeleteFinished means the pod failed or succeeded and must be replaced.
	DeleteFinished DeleteReason = "Finished"
	// DeleteDrained means the agent was draining and has no task left.
	DeleteDrained DeleteReason = "Drained"
	// DeleteDrainTimeout means the agent was draining longer than the drain timeout; its tasks
	// are requeued.
	DeleteDrainTimeout DeleteReason = "DrainTimeout"
	// DeleteNotReady means the agent is surplus, not ready and idle, so it cannot be working.
	DeleteNotReady DeleteReason = "NotReady"
)

// Deletion is one agent to delete.
type Deletion struct {
	Name   string
	Reason DeleteReason
}

// Plan is what to do now.
type Plan struct {
	// Create is the number of agents of the update revision to create.
	Create int
	// Drain lists agents to mark draining (or whose unreadable mark to stamp again).
	Drain []string
	// Undrain lists draining agents to take back into service instead of creating new ones.
	Undrain []string
	// Delete lists agents to delete.
	Delete []Deletion
	// RequeueAfter is when a drain settles or times out, if nothing else happens first;
	// 0 when nothing waits on the clock.
	RequeueAfter time.Duration

	// Observed counts, for status.
	Counts Counts
}

// Counts describe the agents as the planner saw them, before the plan is carried out.
type Counts struct {
	// Live agents exist, are not terminating and have not finished.
	Live int
	// Ready live agents.
	Ready int
	// Available agents are ready and not draining: they can take tasks.
	Available int
	// Updated live, non-draining agents of the update revision.
	Updated int
	// Outdated live agents (draining or not) of another revision.
	Outdated int
	// Draining live agents.
	Draining int
	// Busy live agents hold at least one task; Idle ones are available and hold none.
	Busy, Idle int
	// BusyDraining agents are draining and still working: the rollout or scale-down waits
	// for them.
	BusyDraining int
}

// Done reports whether the hive has reached its spec: exactly Replicas available agents, all
// of the update revision, none draining.
func (p *Plan) Done(replicas int) bool {
	c := p.Counts
	return p.Create == 0 && len(p.Drain) == 0 && len(p.Undrain) == 0 && len(p.Delete) == 0 &&
		c.Live == replicas && c.Updated == replicas && c.Available == replicas && c.Draining == 0
}

// ResolveRollout turns maxSurge and maxUnavailable into agent counts for a number of
// replicas, the way Deployments do: surge rounds up, unavailability rounds down, and if both
// come to zero one agent may be unavailable so that a rollout can always progress.
func ResolveRollout(maxSurge, maxUnavailable *intstr.IntOrString, replicas int) (surge, unavailable int, err error) {
	if maxSurge != nil {
		if surge, err = intstr.GetScaledValueFromIntOrPercent(maxSurge, replicas, true); err != nil {
			return 0, 0, err //nolint:wrapcheck // the message names the value already
		}
	}
	if maxUnavailable != nil {
		if unavailable, err = intstr.GetScaledValueFromIntOrPercent(maxUnavailable, replicas, false); err != nil {
			return 0, 0, err //nolint:wrapcheck // the message names the value already
		}
	}
	if surge == 0 && unavailable == 0 {
		unavailable = 1
	}
	return surge, unavailable, nil
}

// Compute plans the next step for the agents of one hive at time now.
func Compute(spec Spec, agents []Agent, now time.Time) Plan {
	var (
		plan     Plan
		active   []Agent // live, not draining
		draining []Agent // live, draining, not deleted by this plan
		earliest time.Time
	)
	wake := func(t time.Time) {
		if earliest.IsZero() || t.Before(earliest) {
			earliest = t
		}
	}

	for _, a := range agents {
		switch {
		case a.Terminating:
			continue
		case a.Finished:
			plan.Delete = append(plan.Delete, Deletion{a.Name, DeleteFinished})
			continue
		}
		if !a.Draining {
			active = append(active, a)
			continue
		}
		switch {
		case a.Busy == 0 && !a.Ready:
			// Never ready, or no longer: the dispatcher cannot have bound anything to it.
			plan.Delete = append(plan.Delete, Deletion{a.Name, DeleteDrained})
		case a.DrainingSince.IsZero():
			plan.Drain = append(plan.Drain, a.Name)
			draining = append(draining, a)
		case a.Busy == 0 && !now.Before(a.DrainingSince.Add(spec.DrainSettle)):
			plan.Delete = append(plan.Delete, Deletion{a.Name, DeleteDrained})
		case a.Busy > 0 && !now.Before(a.DrainingSince.Add(spec.DrainTimeout)):
			plan.Delete = append(plan.Delete, Deletion{a.Name, DeleteDrainTimeout})
		default:
			draining = append(draining, a)
		}
	}
	plan.Counts = count(spec, active, draining)

	// Take draining agents of the update revision back into service before creating new
	// ones: they are warm, and a busy one keeps its work.
	newActive := countWhere(active, func(a Agent) bool { return a.Revision == spec.UpdateRevision })
	if newActive < spec.Replicas {
		candidates := filter(draining, func(a Agent) bool { return a.Revision == spec.UpdateRevision })
		slices.SortFunc(candidates, undrainOrder)
		n := min(spec.Replicas-newActive, len(candidates))
		for _, a := range candidates[:n] {
			plan.Undrain = append(plan.Undrain, a.Name)
			plan.Drain = slices.DeleteFunc(plan.Drain, func(name string) bool { return name == a.Name })
			active = append(active, a)
		}
		newActive += n
		draining = filter(draining, func(a Agent) bool { return !slices.Contains(plan.Undrain, a.Name) })
	}

	// Remove outdated agents and surplus ones, keeping at least Replicas-MaxUnavailable
	// ready agents in service. Agents that are not ready cost no availability.
	slices.SortFunc(active, removalOrder(spec.UpdateRevision))
	surplusNew := max(0, newActive-spec.Replicas)
	readyBudget := countWhere(active, func(a Agent) bool { return a.Ready }) - max(0, spec.Replicas-spec.MaxUnavailable)
	deletedNow := 0
	for _, a := range active {
		updated := a.Revision == spec.UpdateRevision
		if (updated && surplusNew == 0) || (a.Ready && readyBudget <= 0) {
			continue
		}
		if updated {
			surplusNew--
		}
		if a.Ready {
			readyBudget--
		}
		if !a.Ready && a.Busy == 0 {
			plan.Delete = append(plan.Delete, Deletion{a.Name, DeleteNotReady})
			deletedNow++
			if updated {
				newActive--
			}
		} else {
			plan.Drain = append(plan.Drain, a.Name)
			wake(now.Add(spec.DrainSettle))
		}
	}

	// Create agents of the update revision, within the surge while older agents remain.
	// Agents deleted above no longer count; agents being drained still do.
	live := len(active) + len(draining) - deletedNow
	inRollout := slices.ContainsFunc(active, func(a Agent) bool { return a.Revision != spec.UpdateRevision }) ||
		slices.ContainsFunc(draining, func(a Agent) bool { return a.Revision != spec.UpdateRevision })
	maxLive := spec.Replicas
	if inRollout {
		maxLive += spec.MaxSurge
	}
	plan.Create = max(0, min(spec.Replicas-newActive, maxLive-live))

	// Wake up when a drain settles or times out, unless an event comes first.
	for _, a := range draining {
		if a.DrainingSince.IsZero() {
			continue
		}
		if a.Busy == 0 {
			wake(a.DrainingSince.Add(spec.DrainSettle))
		} else {
			wake(a.DrainingSince.Add(spec.DrainTimeout))
		}
	}

	if !earliest.IsZero() {
		plan.RequeueAfter = max(earliest.Sub(now), time.Millisecond)
	}
	return plan
}

func count(spec Spec, active, draining []Agent) Counts {
	var c Counts
	c.Live = len(active) + len(draining)
	c.Draining = len(draining)
	for _, a := range active {
		if a.Ready {
			c.Ready++
			c.Available++
			if a.Busy == 0 {
				c.Idle++
			}
		}
		if a.Busy > 0 {
			c.Busy++
		}
		if a.Revision == spec.UpdateRevision {
			c.Updated++
		} else {
			c.Outdated++
		}
	}
	for _, a := range draining {
		if a.Ready {
			c.Ready++
		}
		if a.Busy > 0 {
			c.Busy++
			c.BusyDraining++
		}
		if a.Revision != spec.UpdateRevision {
			c.Outdated++
		}
	}
	return c
}

// removalOrder puts the agents to remove first at the front: idle before busy, not ready
// before ready, outdated before updated, newest before oldest.
func removalOrder(updateRevision string) func(a, b Agent) int {
	return func(a, b Agent) int {
		return cmp.Or(
			cmp.Compare(a.Busy, b.Busy),
			boolFirst(!a.Ready, !b.Ready),
			boolFirst(a.Revision != updateRevision, b.Revision != updateRevision),
			b.Created.Compare(a.Created),
			cmp.Compare(a.Name, b.Name),
		)
	}
}

// undrainOrder puts the draining agents most worth keeping first: busy (their work goes on),
// then ready, then oldest.
func undrainOrder(a, b Agent) int {
	return cmp.Or(
		cmp.Compare(b.Busy, a.Busy),
		boolFirst(a.Ready, b.Ready),
		a.Created.Compare(b.Created),
		cmp.Compare(a.Name, b.Name),
	)
}

// boolFirst orders true before false.
func boolFirst(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return -1
	default:
		return 1
	}
}

func filter(agents []Agent, keep func(Agent) bool) []Agent {
	var out []Agent
	for _, a := range agents {
		if keep(a) {
			out = append(out, a)
		}
	}
	return out
}

func countWhere(agents []Agent, f func(Agent) bool) int {
	n := 0
	for _, a := range agents {
		if f(a) {
			n++
		}
	}
	return n
}
