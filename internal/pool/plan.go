// Package pool decides how a hive's agents change: which agents to create, mark draining,
// bring back from draining, and delete, so that the hive reaches its replicas and current
// revision without downtime and without killing an agent in the middle of a task.
//
// It is pure: the caller observes the agents, calls Compute, and carries out the Plan.
// Because every decision is recomputed from the observed agents, a plan interrupted half
// way (the operator restarts, a write fails) is simply continued by the next one.
//
// docs/architecture.md shows where it fits among the operator's parts.
package pool

import (
	"cmp"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/aihub-dev/hive-operator/internal/agentpod"
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
	// Tasks is the number of tasks bound to the agent (Assigned or Running, or on their way).
	Tasks int
}

// state is the agent's state by the one rule status, metrics and kubectl hive share.
func (a Agent) state() agentpod.State {
	return agentpod.Facts{Ready: a.Ready, Draining: a.Draining, Stopping: a.Terminating || a.Finished, Tasks: a.Tasks}.State()
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
	// Idle, Busy and Draining count the live agents by their state (agentpod.State);
	// BusyDraining counts the draining ones still working, which a rollout or scale-down
	// waits for.
	Idle, Busy, Draining int
	BusyDraining         int
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

// Compute plans the next step for the agents of one hive at time now, in five steps: sort
// the agents out (and delete the finished and drained ones), take draining agents of the
// update revision back, drain or delete outdated and surplus agents within the
// availability budget, create what is missing within the surge, and say when to look again.
func Compute(spec Spec, agents []Agent, now time.Time) Plan {
	p := &planner{spec: spec, now: now}
	active, draining := p.classify(agents)
	p.plan.Counts = count(spec, active, draining)
	active, draining = p.undrain(active, draining)
	deletedNow := p.remove(active)
	p.create(active, draining, deletedNow)
	p.wakeForDrains(draining)
	if !p.earliest.IsZero() {
		p.plan.RequeueAfter = max(p.earliest.Sub(now), time.Millisecond)
	}
	return p.plan
}

// planner holds a plan being made and the earliest time it must be made again.
type planner struct {
	spec     Spec
	now      time.Time
	plan     Plan
	earliest time.Time
}

func (p *planner) wake(t time.Time) {
	if p.earliest.IsZero() || t.Before(p.earliest) {
		p.earliest = t
	}
}

// classify sorts the live agents into active and draining ones, deleting the finished,
// the drained and those past their drain timeout, and stamping unreadable drain marks.
func (p *planner) classify(agents []Agent) (active, draining []Agent) {
	for _, a := range agents {
		switch {
		case a.Terminating:
			continue
		case a.Finished:
			p.plan.Delete = append(p.plan.Delete, Deletion{a.Name, DeleteFinished})
			continue
		}
		if !a.Draining {
			active = append(active, a)
			continue
		}
		switch {
		case a.Tasks == 0 && !a.Ready:
			// Never ready, or no longer: the dispatcher cannot have bound anything to it.
			p.plan.Delete = append(p.plan.Delete, Deletion{a.Name, DeleteDrained})
		case a.DrainingSince.IsZero():
			p.plan.Drain = append(p.plan.Drain, a.Name)
			draining = append(draining, a)
		case a.Tasks == 0 && !p.now.Before(a.DrainingSince.Add(p.spec.DrainSettle)):
			p.plan.Delete = append(p.plan.Delete, Deletion{a.Name, DeleteDrained})
		case a.Tasks > 0 && !p.now.Before(a.DrainingSince.Add(p.spec.DrainTimeout)):
			p.plan.Delete = append(p.plan.Delete, Deletion{a.Name, DeleteDrainTimeout})
		default:
			draining = append(draining, a)
		}
	}
	return active, draining
}

// undrain takes draining agents of the update revision back into service before any new
// one is created: they are warm, and a busy one keeps its work.
func (p *planner) undrain(active, draining []Agent) ([]Agent, []Agent) {
	newActive := countWhere(active, p.updated)
	if newActive >= p.spec.Replicas {
		return active, draining
	}
	candidates := filter(draining, p.updated)
	slices.SortFunc(candidates, undrainOrder)
	for _, a := range candidates[:min(p.spec.Replicas-newActive, len(candidates))] {
		p.plan.Undrain = append(p.plan.Undrain, a.Name)
		p.plan.Drain = slices.DeleteFunc(p.plan.Drain, func(name string) bool { return name == a.Name })
		active = append(active, a)
	}
	return active, filter(draining, func(a Agent) bool { return !slices.Contains(p.plan.Undrain, a.Name) })
}

// remove drains (or deletes, when not ready and idle) outdated agents and surplus ones,
// keeping at least Replicas-MaxUnavailable ready agents in service; agents that are not
// ready cost no availability. It returns how many it deleted at once.
func (p *planner) remove(active []Agent) int {
	slices.SortFunc(active, removalOrder(p.spec.UpdateRevision))
	surplusNew := max(0, countWhere(active, p.updated)-p.spec.Replicas)
	readyBudget := countWhere(active, func(a Agent) bool { return a.Ready }) - max(0, p.spec.Replicas-p.spec.MaxUnavailable)
	deleted := 0
	for _, a := range active {
		updated := p.updated(a)
		if (updated && surplusNew == 0) || (a.Ready && readyBudget <= 0) {
			continue
		}
		if updated {
			surplusNew--
		}
		if a.Ready {
			readyBudget--
		}
		if !a.Ready && a.Tasks == 0 {
			p.plan.Delete = append(p.plan.Delete, Deletion{a.Name, DeleteNotReady})
			deleted++
		} else {
			p.plan.Drain = append(p.plan.Drain, a.Name)
			p.wake(p.now.Add(p.spec.DrainSettle))
		}
	}
	return deleted
}

// create creates agents of the update revision, within the surge while older agents
// remain. Agents deleted at once no longer count; agents being drained still do.
func (p *planner) create(active, draining []Agent, deletedNow int) {
	newActive := countWhere(active, func(a Agent) bool {
		return p.updated(a) && !slices.Contains(p.plan.Drain, a.Name) && !p.deleting(a.Name)
	})
	live := len(active) + len(draining) - deletedNow
	outdated := func(a Agent) bool { return !p.updated(a) }
	maxLive := p.spec.Replicas
	if slices.ContainsFunc(active, outdated) || slices.ContainsFunc(draining, outdated) {
		maxLive += p.spec.MaxSurge
	}
	p.plan.Create = max(0, min(p.spec.Replicas-newActive, maxLive-live))
}

// wakeForDrains asks to be woken when a drain settles or times out, unless an event comes
// first.
func (p *planner) wakeForDrains(draining []Agent) {
	for _, a := range draining {
		switch {
		case a.DrainingSince.IsZero():
		case a.Tasks == 0:
			p.wake(a.DrainingSince.Add(p.spec.DrainSettle))
		default:
			p.wake(a.DrainingSince.Add(p.spec.DrainTimeout))
		}
	}
}

func (p *planner) updated(a Agent) bool { return a.Revision == p.spec.UpdateRevision }

func (p *planner) deleting(name string) bool {
	return slices.ContainsFunc(p.plan.Delete, func(d Deletion) bool { return d.Name == name })
}

func count(spec Spec, active, draining []Agent) Counts {
	var c Counts
	c.Live = len(active) + len(draining)
	for _, a := range slices.Concat(active, draining) {
		if a.Ready {
			c.Ready++
		}
		if a.Revision != spec.UpdateRevision {
			c.Outdated++
		}
		switch a.state() {
		case agentpod.StateIdle:
			c.Idle++
		case agentpod.StateBusy:
			c.Busy++
		case agentpod.StateDraining:
			c.Draining++
			if a.Tasks > 0 {
				c.BusyDraining++
			}
		}
	}
	for _, a := range active {
		if a.Ready {
			c.Available++
		}
		if a.Revision == spec.UpdateRevision {
			c.Updated++
		}
	}
	return c
}

// removalOrder puts the agents to remove first at the front: idle before busy, not ready
// before ready, outdated before updated, newest before oldest.
func removalOrder(updateRevision string) func(a, b Agent) int {
	return func(a, b Agent) int {
		return cmp.Or(
			cmp.Compare(a.Tasks, b.Tasks),
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
		cmp.Compare(b.Tasks, a.Tasks),
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
