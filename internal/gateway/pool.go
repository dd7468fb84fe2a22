// Package gateway is the hive gateway's data plane: for each hive the agents a request may
// go to, each with its serving slots, and the hive's bounded queue of requests waiting for
// a slot; and the HTTP handler that forwards a request to the least loaded agent and
// streams its answer back. It holds no state the API server does not: the agents come from
// the pods the gateway watches, and a gateway that restarts starts empty.
//
// docs/architecture.md shows where it fits among the operator's parts.
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/aihub-dev/hive-operator/internal/requestload"
)

// Agent is an agent a request may be sent to.
type Agent struct {
	// Name is the agent's pod.
	Name string
	// Addr is where it serves requests: the pod's IP and serving port.
	Addr string
	// Slots is how many requests it serves at once.
	Slots int
}

// Settings are a hive's serving settings, from its spec.serving.
type Settings struct {
	QueueLength  int
	QueueTimeout time.Duration
}

// Errors of Acquire: the request is answered 503 with Retry-After.
var (
	ErrQueueFull    = errors.New("every serving slot of the hive is busy and its queue is full")
	ErrQueueTimeout = errors.New("no serving slot of the hive came free within its queue timeout")
	ErrNotServing   = errors.New("no such hive serves requests: it does not exist, or has no spec.serving")
)

// Pool is the agents and queues of every hive a gateway serves. It is safe for concurrent
// use.
type Pool struct {
	now   func() time.Time
	mu    sync.Mutex
	hives map[string]*hive
}

// hive is one hive's agents, by name, and the requests waiting for one of their slots.
type hive struct {
	settings Settings
	serving  bool
	agents   map[string]*agent
	queue    []*waiter // first in, first out
	// stopping are agents that answered they are shutting down: they take no request
	// until the pods the gateway watches stop listing them, however stale its cache.
	stopping map[string]bool
}

// agent is an agent and the requests this gateway has in flight to it. An agent that
// left the hive's routable agents (it drains, stops, or is gone) is kept until its last
// request is released, and takes no new one.
type agent struct {
	Agent
	inFlight int
	gone     bool
	// fullUntil is when an agent that answered 429, or could not be reached, may be
	// offered requests again.
	fullUntil time.Time
	// refusals counts the connections it refused since it last answered, for the backoff.
	refusals int
}

// waiter is a queued request; ready is closed when a slot may have come free.
type waiter struct {
	ready chan struct{}
}

// NewPool returns an empty pool; now is the clock (time.Now when nil).
func NewPool(now func() time.Time) *Pool {
	if now == nil {
		now = time.Now
	}
	return &Pool{now: now, hives: map[string]*hive{}}
}

// Set replaces the routable agents and the settings of a hive (key "namespace/name"). The
// requests in flight to agents that left are still counted until they are released; the
// queue is woken, since new agents may have free slots.
func (p *Pool) Set(key string, s Settings, agents []Agent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.hives[key]
	if h == nil {
		h = &hive{agents: map[string]*agent{}}
		p.hives[key] = h
	}
	h.settings, h.serving = s, true
	routable := make(map[string]bool, len(agents))
	for _, a := range agents {
		if h.stopping[a.Name] {
			continue
		}
		routable[a.Name] = true
		if cur := h.agents[a.Name]; cur != nil {
			cur.Agent, cur.gone = a, false
		} else {
			h.agents[a.Name] = &agent{Agent: a}
		}
	}
	for name, a := range h.agents {
		if !routable[name] {
			a.gone = true
			if a.inFlight == 0 {
				delete(h.agents, name)
			}
		}
	}
	listed := make(map[string]bool, len(agents))
	for _, a := range agents {
		listed[a.Name] = true
	}
	for name := range h.stopping {
		if !listed[name] {
			delete(h.stopping, name)
		}
	}
	h.wakeAll()
}

// Remove forgets a hive that is gone or no longer serves: its queued requests are answered
// ErrNotServing.
func (p *Pool) Remove(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h := p.hives[key]; h != nil {
		h.serving = false
		h.wakeAll()
		for name, a := range h.agents {
			a.gone = true
			if a.inFlight == 0 {
				delete(h.agents, name)
			}
		}
		if len(h.agents) == 0 {
			delete(p.hives, key)
		}
	}
}

// FullBackoff is how long an agent that answered 429 gets no request from this gateway,
// unless one of this gateway's own requests to it ends first: its slots are taken by
// another gateway's requests, which this one cannot see end.
const FullBackoff = 10 * time.Millisecond

// Acquire takes a serving slot of the least loaded routable agent of a hive and returns the
// agent and the function that gives the slot back. When no slot is free the request waits
// in the hive's queue, first in first out, until one is, until the queue timeout counted
// from arrived, or until ctx ends. again is for a request that had a slot and must try
// another (its agent was full or unreachable): it waits at the head of the queue, where its
// turn had brought it.
func (p *Pool) Acquire(ctx context.Context, key string, arrived time.Time, again bool) (Agent, func(), error) {
	p.mu.Lock()
	h := p.hives[key]
	if h == nil || !h.serving {
		p.mu.Unlock()
		return Agent{}, nil, ErrNotServing
	}
	now := p.now()
	if a := h.pick(now); a != nil && (again || len(h.queue) == 0) {
		defer p.mu.Unlock()
		return p.take(h, a)
	}
	if !again && len(h.queue) >= h.settings.QueueLength {
		p.mu.Unlock()
		return Agent{}, nil, ErrQueueFull
	}
	w := &waiter{ready: make(chan struct{})}
	if again {
		h.queue = append([]*waiter{w}, h.queue...)
	} else {
		h.queue = append(h.queue, w)
	}
	deadline := arrived.Add(h.settings.QueueTimeout)
	for {
		wait := deadline.Sub(now)
		if t, ok := h.unblocks(now); ok && t.Sub(now) < wait {
			wait = t.Sub(now)
		}
		ready := w.ready
		p.mu.Unlock()
		timer := time.NewTimer(max(wait, 0))
		select {
		case <-ready:
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
		p.mu.Lock()
		now = p.now()
		switch {
		case !h.serving:
			h.leave(w)
			p.mu.Unlock()
			return Agent{}, nil, ErrNotServing
		case ctx.Err() != nil:
			h.leave(w)
			p.mu.Unlock()
			return Agent{}, nil, fmt.Errorf("waiting for a serving slot: %w", context.Cause(ctx))
		}
		// Only the first in line takes a slot, so that the queue is served in order.
		if a := h.pick(now); a != nil && h.queue[0] == w {
			h.leave(w)
			defer p.mu.Unlock()
			return p.take(h, a)
		}
		if !now.Before(deadline) {
			h.leave(w)
			p.mu.Unlock()
			return Agent{}, nil, ErrQueueTimeout
		}
		w.ready = make(chan struct{})
	}
}

// Full records that an agent of a hive answered that its slots are all taken: it gets no
// request for FullBackoff, or until one of this gateway's requests to it ends.
func (p *Pool) Full(key, name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a := p.agent(key, name); a != nil {
		a.fullUntil = p.now().Add(FullBackoff)
	}
}

// agent returns an agent of a hive, nil when either is gone. Must hold mu.
func (p *Pool) agent(key, name string) *agent {
	if h := p.hives[key]; h != nil {
		return h.agents[name]
	}
	return nil
}

// Stopping records that an agent of a hive answered it is shutting down: it gets no new
// request, even when the gateway's cache still lists it as routable.
func (p *Pool) Stopping(key, name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.hives[key]
	if h == nil {
		return
	}
	if h.stopping == nil {
		h.stopping = map[string]bool{}
	}
	h.stopping[name] = true
	if a := h.agents[name]; a != nil {
		a.gone = true
		if a.inFlight == 0 {
			delete(h.agents, name)
		}
	}
}

// Unreachable backoff: an agent that refused a connection gets no request for 20 ms, then
// twice as long at each refusal in a row, up to a second.
const (
	firstUnreachableBackoff = 20 * time.Millisecond
	maxUnreachableBackoff   = time.Second
)

// Unreachable records that an agent of a hive could not be reached: it gets no request for
// a backoff that grows with each refusal in a row (an agent whose process is not
// listening yet, or no longer), until it answers again.
func (p *Pool) Unreachable(key, name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.agent(key, name)
	if a == nil {
		return
	}
	wait := firstUnreachableBackoff << min(a.refusals, 10)
	a.refusals++
	a.fullUntil = p.now().Add(min(wait, maxUnreachableBackoff))
}

// Reached records that an agent of a hive answered: its unreachable backoff starts again.
func (p *Pool) Reached(key, name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a := p.agent(key, name); a != nil {
		a.refusals = 0
	}
}

// take gives a slot of a to a request. Must hold mu.
func (p *Pool) take(h *hive, a *agent) (Agent, func(), error) {
	a.inFlight++
	var once sync.Once
	return a.Agent, func() { once.Do(func() { p.release(h, a) }) }, nil
}

func (p *Pool) release(h *hive, a *agent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a.inFlight--
	if a.refusals == 0 {
		a.fullUntil = time.Time{} // a slot of it is free now, whoever else holds the others
	}
	if a.gone && a.inFlight == 0 && h.agents[a.Name] == a {
		delete(h.agents, a.Name)
	}
	if len(h.queue) > 0 {
		h.queue[0].wake()
	}
}

// pick returns the routable agent with a free slot and the fewest requests in flight
// for its slots, nil when there is none. Must hold mu.
func (h *hive) pick(now time.Time) *agent {
	var best *agent
	for _, a := range h.agents {
		if a.gone || a.inFlight >= a.Slots || now.Before(a.fullUntil) {
			continue
		}
		// Least loaded by the share of its slots in use; ties go to the name, so that the
		// choice does not depend on the map's order.
		if best == nil || a.inFlight*best.Slots < best.inFlight*a.Slots ||
			(a.inFlight*best.Slots == best.inFlight*a.Slots && a.Name < best.Name) {
			best = a
		}
	}
	return best
}

// unblocks returns the earliest time after now an agent that answered 429 may be offered
// requests again. Must hold mu.
func (h *hive) unblocks(now time.Time) (time.Time, bool) {
	var first time.Time
	for _, a := range h.agents {
		if !a.gone && now.Before(a.fullUntil) && (first.IsZero() || a.fullUntil.Before(first)) {
			first = a.fullUntil
		}
	}
	return first, !first.IsZero()
}

// leave takes w out of the queue and wakes the next, which may now be first. Must hold mu.
func (h *hive) leave(w *waiter) {
	for i, q := range h.queue {
		if q == w {
			h.queue = append(h.queue[:i], h.queue[i+1:]...)
			break
		}
	}
	if len(h.queue) > 0 {
		h.queue[0].wake()
	}
}

func (h *hive) wakeAll() {
	for _, w := range h.queue {
		w.wake()
	}
}

func (w *waiter) wake() {
	select {
	case <-w.ready:
	default:
		close(w.ready)
	}
}

// Load is what a hive's requests ask of its agents, as this gateway sees them.
type Load struct {
	InFlight, Queued, Slots int
}

// Serves reports whether the pool routes requests to a hive.
func (p *Pool) Serves(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.hives[key]
	return h != nil && h.serving
}

// Loads returns the load of every hive the pool serves.
func (p *Pool) Loads() map[string]Load {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]Load, len(p.hives))
	for key, h := range p.hives {
		if h.serving {
			out[key] = h.load()
		}
	}
	return out
}

// Load returns the load of a hive.
func (p *Pool) Load(key string) Load {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.hives[key]
	if h == nil {
		return Load{}
	}
	return h.load()
}

// load is the hive's load. Must hold mu.
func (h *hive) load() Load {
	l := Load{Queued: len(h.queue)}
	for _, a := range h.agents {
		l.InFlight += a.inFlight
		if !a.gone {
			l.Slots += a.Slots
		}
	}
	return l
}

// Report returns this gateway's requests queued and in flight, by hive and agent, for the
// operator (package requestload). Hives with none are left out.
func (p *Pool) Report() requestload.Report {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := requestload.Report{Hives: map[string]requestload.Hive{}}
	for key, h := range p.hives {
		rh := requestload.Hive{Queued: len(h.queue)}
		for name, a := range h.agents {
			if a.inFlight > 0 {
				if rh.Agents == nil {
					rh.Agents = map[string]int{}
				}
				rh.Agents[name] = a.inFlight
			}
		}
		if rh.Queued > 0 || rh.Agents != nil {
			r.Hives[key] = rh
		}
	}
	return r
}

// ReportHandler serves the pool's Report as JSON.
func ReportHandler(p *Pool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(p.Report())
	})
}
