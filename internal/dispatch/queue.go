// Package dispatch decides which queued tasks go to which agents: the order of a hive's
// queue, the spreading of tasks over agents with free slots, and the slot ledger that keeps
// a stale cache from binding more tasks to an agent than it has slots.
package dispatch

import (
	"cmp"
	"container/heap"
	"slices"
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

// Agent is an agent that can take tasks, with its free slots.
type Agent struct {
	Name string
	Free int
}

// Binding is one task bound to one agent.
type Binding struct {
	Task  Item
	Agent string
}

// Assign binds tasks, in queue order, to the agent with the most free slots at each step, so
// load spreads evenly; ties go to the agent whose name sorts first. It stops when no slot
// is left. items must already be in queue order.
func Assign(items []Item, agents []Agent) []Binding {
	h := make(agentHeap, 0, len(agents))
	for _, a := range agents {
		if a.Free > 0 {
			h = append(h, a)
		}
	}
	heap.Init(&h)
	out := make([]Binding, 0, min(len(items), h.slots()))
	for _, it := range items {
		if h.Len() == 0 {
			break
		}
		a := &h[0]
		out = append(out, Binding{Task: it, Agent: a.Name})
		a.Free--
		if a.Free == 0 {
			heap.Pop(&h)
		} else {
			heap.Fix(&h, 0)
		}
	}
	return out
}

type agentHeap []Agent

func (h agentHeap) Len() int { return len(h) }
func (h agentHeap) Less(i, j int) bool {
	if h[i].Free != h[j].Free {
		return h[i].Free > h[j].Free
	}
	return h[i].Name < h[j].Name
}
func (h agentHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *agentHeap) Push(x any)   { *h = append(*h, x.(Agent)) }
func (h *agentHeap) Pop() any {
	old := *h
	a := old[len(old)-1]
	*h = old[:len(old)-1]
	return a
}

func (h agentHeap) slots() int {
	n := 0
	for _, a := range h {
		n += a.Free
	}
	return n
}
