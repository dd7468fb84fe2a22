package dispatch

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"k8s.io/apimachinery/pkg/types"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func item(name string, priority int32, age time.Duration) Item {
	return Item{Name: name, UID: types.UID("uid-" + name), Priority: priority, Queued: t0.Add(-age)}
}

func names(items []Item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.Name
	}
	return out
}

func TestOrder(t *testing.T) {
	items := []Item{
		item("low-old", -5, time.Hour),
		item("mid-new", 0, time.Second),
		item("high", 100, 0),
		item("mid-old", 0, time.Minute),
		item("mid-old-b", 0, time.Minute),
	}
	Order(items)
	want := []string{"high", "mid-old", "mid-old-b", "mid-new", "low-old"}
	if diff := cmp.Diff(want, names(items)); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}

func TestAssign(t *testing.T) {
	cases := map[string]struct {
		items  []Item
		agents []Agent
		want   map[string]string // task -> agent
	}{
		"no agents": {
			items: []Item{item("a", 0, 0)},
			want:  map[string]string{},
		},
		"spreads over the freest agents": {
			items:  []Item{item("t1", 0, 3), item("t2", 0, 2), item("t3", 0, 1), item("t4", 0, 0)},
			agents: []Agent{{Name: "x", Free: 2}, {Name: "y", Free: 3}, {Name: "z", Free: 1}},
			want:   map[string]string{"t1": "y", "t2": "x", "t3": "y", "t4": "x"},
		},
		"each agent runs only what it offers, and a task nobody can run lets later ones pass": {
			items: []Item{
				{Name: "gpu-1", Priority: 9, Requires: []string{"gpu"}},
				{Name: "gpu-2", Priority: 8, Requires: []string{"gpu"}},
				{Name: "tpu", Priority: 7, Requires: []string{"tpu"}},
				{Name: "plain-1", Priority: 6},
				{Name: "plain-2", Priority: 5},
				{Name: "plain-3", Priority: 4},
			},
			agents: []Agent{
				{Name: "old-a", Free: 2, Offers: []string{"gpu", "cpu"}},
				{Name: "new-a", Free: 3, Offers: []string{"cpu"}},
			},
			want: map[string]string{"gpu-1": "old-a", "gpu-2": "old-a", "plain-1": "new-a", "plain-2": "new-a", "plain-3": "new-a"},
		},
		"agents of two revisions share the queue by free slots": {
			items:  []Item{item("t1", 0, 4), item("t2", 0, 3), item("t3", 0, 2), item("t4", 0, 1)},
			agents: []Agent{{Name: "old", Free: 1, Offers: []string{"a"}}, {Name: "new", Free: 3, Offers: []string{"a", "b"}}},
			want:   map[string]string{"t1": "new", "t2": "new", "t3": "new", "t4": "old"},
		},
		"stops when slots run out, keeping queue order": {
			items:  []Item{item("first", 0, 3), item("second", 0, 2), item("third", 0, 1)},
			agents: []Agent{{Name: "x", Free: 1}, {Name: "y", Free: 0}, {Name: "z", Free: 1}},
			want:   map[string]string{"first": "x", "second": "z"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := map[string]string{}
			for _, b := range Assign(tc.items, tc.agents) {
				got[b.Task.Name] = b.Agent
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Assign (-want +got):\n%s", diff)
			}
		})
	}
}
