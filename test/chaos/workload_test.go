//go:build chaos

package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/pkg/agent"
	"github.com/aihub-dev/hive-operator/test/builder"
)

// work is what a task asks its handler to do, as its input.
type work struct {
	// Kind is quick, long, fail-once or dependent.
	Kind string `json:"kind"`
	// Millis is how long the handler works.
	Millis int `json:"millis"`
}

// Outcomes of a handler invocation.
const (
	outcomeOK       = "ok"        // returned a result
	outcomeFailed   = "failed"    // returned an error by design (fail-once)
	outcomeStopped  = "stopped"   // its context ended: cancelled, taken away, released
	outcomeTimedOut = "timed out" // its context's deadline passed
)

// invocation is one call of a handler: the agents' own record of what they ran.
type invocation struct {
	task    types.UID
	name    string
	attempt int32
	agent   string
	start   time.Time
	end     time.Time
	outcome string
}

// invocations records every handler call of every agent.
type invocations struct {
	mu    sync.Mutex
	calls []*invocation
}

func newInvocations() *invocations { return &invocations{} }

// handler is the handler of the agent of a pod: it does what the task's input says and
// records the call.
func (r *invocations) handler(pod string) agent.Handler {
	return func(ctx context.Context, task *agent.Task) (string, error) {
		inv := &invocation{task: task.Object().UID, name: task.Name, attempt: task.Attempt, agent: pod, start: time.Now()}
		r.mu.Lock()
		r.calls = append(r.calls, inv)
		r.mu.Unlock()
		var wk work
		_ = json.Unmarshal([]byte(task.Input), &wk)
		result, err := func() (string, error) {
			if wk.Kind == "dependent" {
				res, err := task.DependencyResults(ctx)
				if err != nil {
					return "", err
				}
				if len(res) != len(task.DependsOn) {
					return "", fmt.Errorf("read %d dependency results of %d", len(res), len(task.DependsOn))
				}
			}
			select {
			case <-time.After(time.Duration(wk.Millis) * time.Millisecond):
			case <-ctx.Done():
				return "", ctx.Err()
			}
			if wk.Kind == "fail-once" && task.Attempt == 1 {
				return "", errors.New("failing the first attempt, as designed")
			}
			return fmt.Sprintf("done by %s", pod), nil
		}()
		r.mu.Lock()
		inv.end = time.Now()
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			inv.outcome = outcomeTimedOut
		case ctx.Err() != nil:
			inv.outcome = outcomeStopped
		case err != nil:
			inv.outcome = outcomeFailed
		default:
			inv.outcome = outcomeOK
		}
		r.mu.Unlock()
		return result, err
	}
}

func (r *invocations) all() []invocation {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]invocation, len(r.calls))
	for i, c := range r.calls {
		out[i] = *c
	}
	return out
}

// workload creates the mixed stream of tasks of the suite.
type workload struct {
	c       client.Client
	rng     *rand.Rand
	mu      sync.Mutex
	created map[string]bool
	seq     atomic.Int64
	errs    atomic.Int64
	cancels atomic.Int64
}

func newWorkload(c client.Client, seed uint64) *workload {
	return &workload{c: c, rng: rand.New(rand.NewPCG(seed, seed+1)), created: map[string]bool{}}
}

// intn draws from the workload's random source.
func (wl *workload) intn(n int) int {
	wl.mu.Lock()
	defer wl.mu.Unlock()
	return wl.rng.IntN(n)
}

// run creates about rate tasks a second until ctx ends.
func (wl *workload) run(ctx context.Context, rate float64) {
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			wl.next(ctx)
		}
	}
}

// next creates the next task (or pair) of the mix: mostly quick tasks, some long (a few
// longer than an agent's shutdown grace), some that fail once, some with dependencies, some cancelled while queued or running, some
// with a TTL; priorities from -5 to 5.
func (wl *workload) next(ctx context.Context) {
	n := wl.seq.Add(1)
	name := fmt.Sprintf("t-%05d", n)
	roll := wl.intn(100)
	t := builder.Task(ns, name).Hive(hiveName).Priority(int32(wl.intn(11) - 5)).MaxRetries(8).
		Backoff(200 * time.Millisecond).Timeout(2 * time.Minute)
	switch {
	case roll < 55:
		t.Input(input("quick", 10+wl.intn(50)))
	case roll < 64:
		t.Input(input("long", 1500+wl.intn(2500)))
	case roll < 70:
		// Longer than an agent's shutdown grace: an agent stopped gracefully gives it back.
		t.Input(input("long", 6000+wl.intn(3000)))
	case roll < 77:
		t.Input(input("fail-once", 20))
	case roll < 87:
		parent := name + "-up"
		if wl.create(ctx, builder.Task(ns, parent).Hive(hiveName).Input(input("quick", 20)).MaxRetries(8).Obj()) {
			t.Input(input("dependent", 20)).DependsOn(parent)
		} else {
			t.Input(input("quick", 20))
		}
	case roll < 93:
		t.Input(input("long", 3000))
		if wl.create(ctx, t.Obj()) {
			go wl.cancelLater(ctx, name, time.Duration(200+wl.intn(2500))*time.Millisecond)
		}
		return
	default:
		t.Input(input("quick", 20)).TTL(5 * time.Second)
	}
	wl.create(ctx, t.Obj())
}

func input(kind string, millis int) string {
	b, _ := json.Marshal(work{Kind: kind, Millis: millis})
	return string(b)
}

// create creates a task, retrying a few times: the API server may be restarting.
func (wl *workload) create(ctx context.Context, task *swarmv1alpha1.Task) bool {
	for range 20 {
		err := wl.c.Create(ctx, task.DeepCopy())
		if err == nil || client.IgnoreAlreadyExists(err) == nil {
			wl.mu.Lock()
			wl.created[task.Name] = true
			wl.mu.Unlock()
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		time.Sleep(500 * time.Millisecond)
	}
	wl.errs.Add(1)
	return false
}

// cancelLater sets spec.cancel on a task after a while, wherever it then is.
func (wl *workload) cancelLater(ctx context.Context, name string, after time.Duration) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(after):
	}
	for range 20 {
		patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"cancel":true}}`))
		task := &swarmv1alpha1.Task{}
		task.Namespace, task.Name = ns, name
		if err := wl.c.Patch(context.Background(), task, patch); err == nil || client.IgnoreNotFound(err) == nil {
			wl.cancels.Add(1)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// names returns the tasks created.
func (wl *workload) names() map[string]bool {
	wl.mu.Lock()
	defer wl.mu.Unlock()
	out := make(map[string]bool, len(wl.created))
	for k := range wl.created {
		out[k] = true
	}
	return out
}
