package dispatch

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestLedger(t *testing.T) {
	l := NewLedger()
	l.Reserve("ns/h", "ns/a", "t1", "10")
	l.Reserve("ns/h", "ns/a", "t2", "20")
	l.Reserve("ns/h", "ns/b", "t3", "30")
	if got := l.Used("ns/a", nil); got != 2 {
		t.Errorf("used with an empty cache = %d, want 2", got)
	}
	// The cache shows t1 bound already: it is not counted twice.
	if got := l.Used("ns/a", []types.UID{"t1", "t9"}); got != 3 {
		t.Errorf("used = %d, want 3 (t1, t2, t9)", got)
	}
	if !l.Holds("t2") || l.Holds("t9") {
		t.Error("Holds is wrong")
	}
	// The cache caught up with t1 (a new version) and lost t3; t2 is as before the bind.
	l.Settle("ns/h", func(uid types.UID) (string, bool) {
		switch uid {
		case "t1":
			return "11", true
		case "t2":
			return "20", true
		}
		return "", false
	})
	if l.Holds("t1") || !l.Holds("t2") || l.Holds("t3") || l.Size() != 1 {
		t.Errorf("after settling: t1 %v t2 %v t3 %v size %d", l.Holds("t1"), l.Holds("t2"), l.Holds("t3"), l.Size())
	}
	l.Drop("t2")
	l.Reserve("ns/other", "ns/c", "t4", "1")
	l.Forget("ns/other")
	if l.Size() != 0 || l.Used("ns/a", nil) != 0 {
		t.Errorf("ledger not empty: %d", l.Size())
	}
	// A second bind of the same task replaces the first.
	l.Reserve("ns/h", "ns/a", "t5", "1")
	l.Reserve("ns/h", "ns/b", "t5", "2")
	if l.Used("ns/a", nil) != 0 || l.Used("ns/b", nil) != 1 {
		t.Error("a re-reserved task still counts for its old agent")
	}
}

// simTask is a task as the API server (truth) or the cache (a lagging copy) knows it.
type simTask struct {
	rv    int
	phase string // "Pending", "Bound", "Done"
	agent string
}

// simulateDispatch runs the dispatcher's bind loop against an API server whose watch events
// reach the cache late and in random batches, with agents finishing tasks and the operator
// requeueing some, and fails if the API server ever holds more tasks on an agent than its
// slots.
func simulateDispatch(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, 7))
	slots := map[string]int{"a": 1 + rng.IntN(3), "b": 1 + rng.IntN(3), "c": 1 + rng.IntN(3)}
	api := map[types.UID]simTask{}
	cache := map[types.UID]simTask{}
	type event struct {
		uid     types.UID
		task    simTask
		deleted bool
	}
	var pending []event
	nextRV := 1
	write := func(uid types.UID, task simTask, deleted bool) {
		task.rv = nextRV
		nextRV++
		if deleted {
			delete(api, uid)
		} else {
			api[uid] = task
		}
		pending = append(pending, event{uid, task, deleted})
		used := map[string]int{}
		for _, tk := range api {
			if tk.phase == "Bound" {
				used[tk.agent]++
			}
		}
		for agent, n := range used {
			if n > slots[agent] {
				t.Fatalf("seed %d: agent %s holds %d tasks, has %d slots", seed, agent, n, slots[agent])
			}
		}
	}
	ledger := NewLedger()
	taskSeq := 0

	for range steps {
		switch r := rng.IntN(10); {
		case r < 3: // new tasks
			for range 1 + rng.IntN(4) {
				taskSeq++
				write(types.UID(fmt.Sprintf("t%d", taskSeq)), simTask{phase: "Pending"}, false)
			}
		case r < 5: // the cache catches up with some events
			n := rng.IntN(len(pending) + 1)
			for _, e := range pending[:n] {
				if e.deleted {
					delete(cache, e.uid)
				} else {
					cache[e.uid] = e.task
				}
			}
			pending = pending[n:]
		case r < 7: // an agent finishes a task, or the operator requeues or deletes one
			for uid, tk := range api {
				if tk.phase != "Bound" {
					continue
				}
				switch rng.IntN(3) {
				case 0:
					write(uid, simTask{phase: "Done"}, false)
				case 1:
					write(uid, simTask{phase: "Pending"}, false)
				default:
					write(uid, tk, true)
				}
				break
			}
		default: // a dispatcher pass, from the cache
			ledger.Settle("h", func(uid types.UID) (string, bool) {
				tk, ok := cache[uid]
				return fmt.Sprint(tk.rv), ok
			})
			bound := map[string][]types.UID{}
			var queue []Item
			for uid, tk := range cache {
				switch {
				case tk.phase == "Bound":
					bound[tk.agent] = append(bound[tk.agent], uid)
				case tk.phase == "Pending" && !ledger.Holds(uid):
					queue = append(queue, Item{Name: string(uid), UID: uid})
				}
			}
			Order(queue)
			var agents []Agent
			for _, name := range []string{"a", "b", "c"} {
				agents = append(agents, Agent{Name: name, Free: slots[name] - ledger.Used(name, bound[name])})
			}
			for _, b := range Assign(queue, agents) {
				cached := cache[b.Task.UID]
				ledger.Reserve("h", b.Agent, b.Task.UID, fmt.Sprint(cached.rv))
				// The bind is a compare-and-swap on the version the cache showed.
				if cur, ok := api[b.Task.UID]; !ok || cur.rv != cached.rv {
					ledger.Drop(b.Task.UID)
					continue
				}
				write(b.Task.UID, simTask{phase: "Bound", agent: b.Agent}, false)
			}
		}
	}
}

func TestLedgerPreventsOverbindingWithAStaleCache(t *testing.T) {
	for seed := range uint64(200) {
		simulateDispatch(t, seed, 400)
	}
}

func FuzzLedgerSlots(f *testing.F) {
	for seed := range uint64(8) {
		f.Add(seed, uint16(300))
	}
	f.Fuzz(func(t *testing.T, seed uint64, steps uint16) {
		simulateDispatch(t, seed, int(steps%2000))
	})
}
