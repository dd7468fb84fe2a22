package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/aihub-dev/hive-operator/internal/requestload"
)

const key = "ns/h"

func agents(slots ...int) []Agent {
	out := make([]Agent, len(slots))
	for i, s := range slots {
		out[i] = Agent{Name: fmt.Sprintf("a%d", i), Addr: fmt.Sprintf("10.0.0.%d:8081", i), Slots: s}
	}
	return out
}

func acquire(t *testing.T, p *Pool) (string, func()) {
	t.Helper()
	a, release, err := p.Acquire(t.Context(), key, time.Now(), false)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	return a.Name, release
}

func TestTheLeastLoadedAgentGetsTheRequest(t *testing.T) {
	p := NewPool(nil)
	p.Set(key, Settings{QueueLength: 0}, agents(2, 4))
	// a0 has 2 slots, a1 4: by share of slots in use, a1 takes two for each of a0's.
	var got []string
	for range 6 {
		name, _ := acquire(t, p)
		got = append(got, name)
	}
	if want := "[a0 a1 a1 a0 a1 a1]"; fmt.Sprint(got) != want {
		t.Errorf("agents chosen %v, want %s", got, want)
	}
	if _, _, err := p.Acquire(t.Context(), key, time.Now(), false); !errors.Is(err, ErrQueueFull) {
		t.Errorf("with every slot taken and no queue: %v, want ErrQueueFull", err)
	}
	if l := p.Load(key); l != (Load{InFlight: 6, Slots: 6}) {
		t.Errorf("Load = %+v", l)
	}
}

func TestAnAgentThatSaidItIsFullIsSkippedForAMoment(t *testing.T) {
	p := NewPool(nil)
	p.Set(key, Settings{QueueLength: 1, QueueTimeout: time.Minute}, agents(1, 1))
	p.Full(key, "a0")
	name, release := acquire(t, p)
	if name != "a1" {
		t.Errorf("got %s, want a1", name)
	}
	// With a1 taken and a0 still full, a request that must try again waits at the head
	// of the queue until a0's backoff ends.
	start := time.Now()
	a, _, err := p.Acquire(t.Context(), key, start, true)
	if err != nil || a.Name != "a0" || time.Since(start) < FullBackoff/2 {
		t.Errorf("Acquire again = %s, %v after %s", a.Name, err, time.Since(start))
	}
	// One of this gateway's requests ending frees a slot at once.
	p.Full(key, "a1")
	release()
	if name, _ := acquire(t, p); name != "a1" {
		t.Errorf("after a1's request ended: %s", name)
	}
}

func TestQueuedRequestsAreServedInOrder(t *testing.T) {
	p := NewPool(nil)
	p.Set(key, Settings{QueueLength: 3, QueueTimeout: time.Minute}, agents(1))
	_, release := acquire(t, p)
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			_, rel := acquire(t, p)
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			rel()
		})
		waitFor(t, func() bool { return p.Load(key).Queued == i+1 }) // queued in this order
	}
	if _, _, err := p.Acquire(t.Context(), key, time.Now(), false); !errors.Is(err, ErrQueueFull) {
		t.Errorf("a fourth waiter: %v, want ErrQueueFull", err)
	}
	release()
	wg.Wait()
	if fmt.Sprint(order) != "[0 1 2]" {
		t.Errorf("served in the order %v", order)
	}
	if l := p.Load(key); l != (Load{Slots: 1}) {
		t.Errorf("Load = %+v after every request was released", l)
	}
}

func TestAQueuedRequestTimesOutOrGivesUpWithItsCaller(t *testing.T) {
	p := NewPool(nil)
	p.Set(key, Settings{QueueLength: 5, QueueTimeout: 50 * time.Millisecond}, agents(1))
	acquire(t, p)
	if _, _, err := p.Acquire(t.Context(), key, time.Now(), false); !errors.Is(err, ErrQueueTimeout) {
		t.Errorf("after the queue timeout: %v, want ErrQueueTimeout", err)
	}
	p.Set(key, Settings{QueueLength: 5, QueueTimeout: time.Hour}, agents(1))
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		waitFor(t, func() bool { return p.Load(key).Queued == 1 })
		cancel()
	}()
	if _, _, err := p.Acquire(ctx, key, time.Now(), false); !errors.Is(err, context.Canceled) {
		t.Errorf("with its caller gone: %v, want context.Canceled", err)
	}
	if l := p.Load(key); l.Queued != 0 {
		t.Errorf("%d requests still queued", l.Queued)
	}
}

func TestARequestToAHiveWithNoAgentWaitsForItsFirst(t *testing.T) {
	p := NewPool(nil)
	p.Set(key, Settings{QueueLength: 5, QueueTimeout: time.Minute}, nil)
	got := make(chan string, 1)
	go func() {
		name, _ := acquire(t, p)
		got <- name
	}()
	waitFor(t, func() bool { return p.Load(key).Queued == 1 })
	p.Set(key, Settings{QueueLength: 5, QueueTimeout: time.Minute}, agents(1))
	if name := <-got; name != "a0" {
		t.Errorf("served by %s", name)
	}
}

func TestAnAgentThatLeavesTakesNoNewRequestAndIsForgottenWhenIdle(t *testing.T) {
	p := NewPool(nil)
	p.Set(key, Settings{}, agents(2, 2))
	name, release := acquire(t, p) // a tie, to the first by name
	if name != "a0" {
		t.Fatalf("got %s", name)
	}
	p.Set(key, Settings{}, agents(2, 2)[1:]) // a0 drains
	for range 2 {
		if name, _ := acquire(t, p); name != "a1" {
			t.Errorf("a request went to %s, which drains", name)
		}
	}
	if l := p.Load(key); l != (Load{InFlight: 3, Slots: 2}) {
		t.Errorf("Load = %+v: the draining agent's request still counts, its slots do not", l)
	}
	release()
	p.mu.Lock()
	_, kept := p.hives[key].agents["a0"]
	p.mu.Unlock()
	if kept {
		t.Error("the agent that left is kept after its last request")
	}
	release() // twice is once
	if l := p.Load(key); l.InFlight != 2 {
		t.Errorf("in flight %d after a release given twice", l.InFlight)
	}
}

func TestAHiveThatStopsServingAnswersItsQueue(t *testing.T) {
	p := NewPool(nil)
	if _, _, err := p.Acquire(t.Context(), key, time.Now(), false); !errors.Is(err, ErrNotServing) {
		t.Errorf("an unknown hive: %v", err)
	}
	p.Set(key, Settings{QueueLength: 1, QueueTimeout: time.Minute}, nil)
	done := make(chan error, 1)
	go func() {
		_, _, err := p.Acquire(t.Context(), key, time.Now(), false)
		done <- err
	}()
	waitFor(t, func() bool { return p.Load(key).Queued == 1 })
	p.Remove(key)
	if err := <-done; !errors.Is(err, ErrNotServing) {
		t.Errorf("the queued request got %v, want ErrNotServing", err)
	}
	if l := p.Load(key); l != (Load{}) {
		t.Errorf("Load of a removed hive = %+v", l)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Error("timed out")
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func TestTheReportGivesWhatIsQueuedAndInFlightByAgent(t *testing.T) {
	p := NewPool(nil)
	p.Set(key, Settings{QueueLength: 5, QueueTimeout: time.Minute}, agents(2, 1))
	p.Set("ns/idle", Settings{}, agents(1))
	_, r1 := acquire(t, p)
	acquire(t, p)
	acquire(t, p)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	queued := make(chan error, 1)
	go func() {
		_, _, err := p.Acquire(ctx, key, time.Now(), false)
		queued <- err
	}()
	waitFor(t, func() bool { return p.Load(key).Queued == 1 })

	rec := httptest.NewRecorder()
	ReportHandler(p).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, requestload.Path, nil))
	var got requestload.Report
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := requestload.Report{Hives: map[string]requestload.Hive{key: {Queued: 1, Agents: map[string]int{"a0": 2, "a1": 1}}}}
	if !reflect.DeepEqual(got, want) || rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("report %+v, want %+v (an idle hive left out)", got, want)
	}

	// An agent that stops serving still reports its request until it is released.
	p.Set(key, Settings{QueueLength: 5, QueueTimeout: time.Minute}, agents(0)[:0])
	if r := p.Report().Hives[key]; r.Agents["a0"] != 2 {
		t.Errorf("report %+v after the agents left", r)
	}
	r1()
	cancel()
	if err := <-queued; !errors.Is(err, context.Canceled) {
		t.Errorf("the queued request ended with %v, want its caller's cancellation", err)
	}
	if r := p.Report().Hives[key]; r.Agents["a0"] != 1 || r.Queued != 0 {
		t.Errorf("report %+v after a release", r)
	}
}
