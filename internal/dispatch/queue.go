// Package dispatch decides which queued tasks go to which agents: the order of a hive's
// queue, the spreading of tasks over agents with free slots, and the slot ledger that keeps
// a stale cache from binding more tasks to an agent than it has slots.
//
// docs/architecture.md shows where it fits among the operator's parts.
package dispatch

import (
	"cmp"
	"container/heap"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Item is a queued task, ready to be bound.
type Item struct {
	Name     string
	UID      types.UID
	Priority int32
	// Queued orders tasks of equal priority: older first. It is the task's creation time,
	// so a retried task keeps its place.
	Queued time.Time
	// Requires lists the capabilities the task requires.
	Requires []string
}

// Order sorts a queue: higher priority first, then older first, then by name.
func Order(items []Item) {
	slices.SortFunc(items, func(a, b Item) int {
		return cmp.Or(
			cmp.Compare(b.Priority, a.Priority),
			a.Queued.Compare(b.Queued),
			cmp.Compare(a.Name, b.Name),
		)
	})
}

// Agent is an agent that can take tasks, with its free slots and the capabilities it
// offers. During a rollout agents of different revisions may have different slots and
// capabilities: each is used with its own.
type Agent struct {
	Name string
	Free int
	// Offers lists the agent's capabilities.
	Offers []string
}

// Binding is one task bound to one agent.
type Binding struct {
	Task  Item
	Agent string
}

// Assign binds tasks, in queue order, to the agent with the most free slots among those
// that offer every capability the task requires, so load spreads evenly; ties go to the
// agent whose name sorts first. A task no agent with a free slot can run is passed over,
// and the tasks after it may still be bound. It stops when no slot is left. items must
// already be in queue order.
func Assign(items []Item, agents []Agent) []Binding {
	// Agents that offer the same capabilities form a group with one heap: usually there
	// is one group, two while a rollout changes the capabilities.
	byOffer := map[string]*agentGroup{}
	free := 0
	for _, a := range agents {
		if a.Free <= 0 {
			continue
		}
		key := offerKey(a.Offers)
		g := byOffer[key]
		if g == nil {
			g = &agentGroup{offers: a.Offers}
			byOffer[key] = g
		}
		g.heap = append(g.heap, a)
		free += a.Free
	}
	groups := make([]*agentGroup, 0, len(byOffer))
	for _, g := range byOffer {
		heap.Init(&g.heap)
		groups = append(groups, g)
	}
	slices.SortFunc(groups, func(a, b *agentGroup) int { return cmp.Compare(offerKey(a.offers), offerKey(b.offers)) })

	out := make([]Binding, 0, min(len(items), free))
	for _, it := range items {
		if free == 0 {
			break
		}
		var best *agentGroup
		for _, g := range groups {
			if g.heap.Len() == 0 || !offersAll(g.offers, it.Requires) {
				continue
			}
			if best == nil || before(g.heap[0], best.heap[0]) {
				best = g
			}
		}
		if best == nil {
			continue
		}
		a := &best.heap[0]
		out = append(out, Binding{Task: it, Agent: a.Name})
		a.Free--
		free--
		if a.Free == 0 {
			heap.Pop(&best.heap)
		} else {
			heap.Fix(&best.heap, 0)
		}
	}
	return out
}

type agentGroup struct {
	offers []string
	heap   agentHeap
}

func offerKey(offers []string) string {
	s := slices.Clone(offers)
	slices.Sort(s)
	return strings.Join(slices.Compact(s), ",")
}

func offersAll(offers, required []string) bool {
	for _, c := range required {
		if !slices.Contains(offers, c) {
			return false
		}
	}
	return true
}

type agentHeap []Agent

func (h agentHeap) Len() int           { return len(h) }
func (h agentHeap) Less(i, j int) bool { return before(h[i], h[j]) }
func (h agentHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *agentHeap) Push(x any)        { *h = append(*h, x.(Agent)) }
func (h *agentHeap) Pop() any {
	old := *h
	a := old[len(old)-1]
	*h = old[:len(old)-1]
	return a
}

// before orders the agents a task may go to: the most free slots first, then by name.
func before(a, b Agent) bool {
	if a.Free != b.Free {
		return a.Free > b.Free
	}
	return a.Name < b.Name
}
