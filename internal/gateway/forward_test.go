package gateway

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// These tests put the gateway's handler in front of small HTTP servers that answer as
// agents do (docs/agent-protocol.md), so that each answer an agent may give happens when
// the test wants it. test/integration runs the gateway with real agents.

// seen is what an agent got.
type seen struct {
	path, input, id, attempt, timeout string
}

type fakeAgent struct {
	*httptest.Server
	mu   sync.Mutex
	got  []seen
	full bool
}

func newAgent(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) *fakeAgent {
	t.Helper()
	a := &fakeAgent{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.got = append(a.got, seen{r.URL.Path, string(b), r.Header.Get(swarmv1alpha1.HeaderRequestID),
			r.Header.Get(swarmv1alpha1.HeaderAttempt), r.Header.Get(swarmv1alpha1.HeaderTimeout)})
		full := a.full
		a.mu.Unlock()
		if full {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "full", http.StatusTooManyRequests)
			return
		}
		answer(w, r)
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *fakeAgent) requests() []seen {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]seen(nil), a.got...)
}

func echo(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set(swarmv1alpha1.HeaderOutcome, swarmv1alpha1.OutcomeSucceeded)
	_, _ = io.WriteString(w, "echo")
}

// gateway serves the handler over a pool holding the given agents as hive ns/h.
func gateway(t *testing.T, s Settings, agents ...*fakeAgent) (*Pool, string) {
	t.Helper()
	p := NewPool(nil)
	var list []Agent
	for i, a := range agents {
		list = append(list, Agent{Name: string(rune('a' + i)), Addr: a.Listener.Addr().String(), Slots: 1})
	}
	p.Set(key, s, list)
	srv := httptest.NewServer(NewHandler(p, Options{}))
	t.Cleanup(srv.Close)
	return p, srv.URL + "/v1/namespaces/ns/hives/h/requests"
}

// answer is what a caller got, its body read and closed.
type answer struct {
	StatusCode      int
	Status          string
	Header, Trailer http.Header
}

func send(t *testing.T, url, body string, headers ...string) (answer, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Status, resp.Header, resp.Trailer}, string(b)
}

func TestARequestIsForwardedAndItsStreamComesBack(t *testing.T) {
	a := newAgent(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Trailer", swarmv1alpha1.HeaderOutcome)
		_, _ = io.WriteString(w, "tok1 ")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "tok2")
		w.Header().Set(swarmv1alpha1.HeaderOutcome, swarmv1alpha1.OutcomeSucceeded)
	})
	p, url := gateway(t, Settings{}, a)
	resp, body := send(t, url, "hello", swarmv1alpha1.HeaderTimeout, "5s")
	if resp.StatusCode != http.StatusOK || body != "tok1 tok2" {
		t.Fatalf("answer %s %q", resp.Status, body)
	}
	if o := resp.Trailer.Get(swarmv1alpha1.HeaderOutcome); o != swarmv1alpha1.OutcomeSucceeded {
		t.Errorf("trailer Hive-Outcome %q", o)
	}
	got := a.requests()
	id := resp.Header.Get(swarmv1alpha1.HeaderRequestID)
	if len(got) != 1 || got[0] != (seen{swarmv1alpha1.RequestPath, "hello", id, "1", "5s"}) || len(id) != 32 {
		t.Errorf("the agent got %+v; the caller was told id %q", got, id)
	}
	// The proxy gives the slot back once it has closed the agent's answer, which may be
	// just after the caller read its end.
	waitFor(t, func() bool { return p.Load(key).InFlight == 0 })
}

func TestAFullOrUnreachableAgentIsSkipped(t *testing.T) {
	full := newAgent(t, echo)
	full.full = true
	// Nothing listens on port 1 (a port freed by a test may be taken by the next one).
	gone := "127.0.0.1:1"
	ok := newAgent(t, echo)

	p := NewPool(nil)
	p.Set(key, Settings{}, []Agent{{Name: "a-full", Addr: full.Listener.Addr().String(), Slots: 1}, {Name: "b-gone", Addr: gone, Slots: 1}, {Name: "c-ok", Addr: ok.Listener.Addr().String(), Slots: 1}})
	srv := httptest.NewServer(NewHandler(p, Options{}))
	defer srv.Close()
	resp, body := send(t, srv.URL+"/v1/namespaces/ns/hives/h/requests", "x")
	if resp.StatusCode != http.StatusOK || body != "echo" {
		t.Fatalf("answer %s %q", resp.Status, body)
	}
	if got := ok.requests(); len(got) != 1 || got[0].attempt != "3" {
		t.Errorf("the agent that answered got %+v, want the third try", got)
	}
	waitFor(t, func() bool { return p.Load(key).InFlight == 0 })
}

func TestRequestsNoAgentTakesAreAnswered503WithRetryAfter(t *testing.T) {
	gone := "127.0.0.1:1" // nothing listens there
	p := NewPool(nil)
	// The only agent refuses connections: the request tries it again after each backoff,
	// until its queue timeout. (Three agents that refuse end it at once: see
	// TestAFullOrUnreachableAgentIsSkipped and the metrics' test.)
	p.Set(key, Settings{QueueLength: 1, QueueTimeout: 300 * time.Millisecond}, []Agent{{Name: "gone", Addr: gone, Slots: 1}})
	srv := httptest.NewServer(NewHandler(p, Options{}))
	defer srv.Close()
	if resp, body := send(t, srv.URL+"/v1/namespaces/ns/hives/h/requests", "x"); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "no agent could be reached within the queue timeout (the last: agent gone: ") {
		t.Errorf("with the only agent unreachable: %s %q", resp.Status, body)
	}

	// Agents that are full: the request waits for a slot until its queue timeout.
	a, b := newAgent(t, echo), newAgent(t, echo)
	a.full, b.full = true, true
	_, url := gateway(t, Settings{QueueLength: 1, QueueTimeout: 200 * time.Millisecond}, a, b)
	resp, body := send(t, url, "x")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != RetryAfter || !strings.Contains(body, "no serving slot of the hive came free within its queue timeout") {
		t.Errorf("with every agent full: %s %q, Retry-After %q", resp.Status, body, resp.Header.Get("Retry-After"))
	}
	if o := resp.Header.Get(swarmv1alpha1.HeaderOutcome); o != swarmv1alpha1.OutcomeFailed {
		t.Errorf("Hive-Outcome %q", o)
	}
}

func TestTheQueueAndTheHiveDecideTheAnswer(t *testing.T) {
	release := make(chan struct{})
	a := newAgent(t, func(w http.ResponseWriter, _ *http.Request) { <-release; echo(w, nil) })
	defer close(release)
	p, url := gateway(t, Settings{QueueLength: 0}, a)
	go func() {
		if resp, err := http.Post(url, "text/plain", strings.NewReader("first")); err == nil {
			_ = resp.Body.Close()
		}
	}()
	waitFor(t, func() bool { return p.Load(key).InFlight == 1 })
	cases := map[string]struct {
		url, body string
		headers   []string
		status    int
		message   string
	}{
		"the queue is full":   {url, "x", nil, http.StatusServiceUnavailable, "hive ns/h: every serving slot of the hive is busy and its queue is full"},
		"an unknown hive":     {strings.Replace(url, "/h/", "/other/", 1), "x", nil, http.StatusNotFound, "hive ns/other: no such hive serves requests"},
		"too large an input":  {url, strings.Repeat("x", swarmv1alpha1.MaxInputLength+1), nil, http.StatusRequestEntityTooLarge, "the input exceeds the limit of 65536 bytes"},
		"a timeout of soon":   {url, "x", []string{swarmv1alpha1.HeaderTimeout, "soon"}, http.StatusBadRequest, `Hive-Timeout: "soon" is not a positive duration`},
		"another method path": {strings.TrimSuffix(url, "/requests"), "x", nil, http.StatusNotFound, "404 page not found"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			resp, body := send(t, tc.url, tc.body, tc.headers...)
			if resp.StatusCode != tc.status || !strings.HasPrefix(body, tc.message) {
				t.Errorf("answer %s %q, want %d %q", resp.Status, body, tc.status, tc.message)
			}
		})
	}
}

func TestACallerThatGoesAwayCancelsTheRequestAtTheAgent(t *testing.T) {
	started, cancelled := make(chan struct{}), make(chan struct{})
	a := newAgent(t, func(_ http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		close(cancelled)
	})
	p, url := gateway(t, Settings{}, a)
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		<-started
		cancel()
	}()
	if resp, err := http.DefaultClient.Do(req); err == nil {
		_ = resp.Body.Close()
		t.Fatal("the request was answered")
	}
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent's request was not cancelled")
	}
	waitFor(t, func() bool { return p.Load(key).InFlight == 0 })
}

func TestAnAgentShuttingDownIsLeftForAnother(t *testing.T) {
	// An agent answers 503 without Hive-Outcome to a request that arrives once it got
	// SIGTERM: nothing ran there. A gateway whose cache has not yet seen the pod go must
	// offer the request to another agent, or a rollout fails requests.
	stopping := newAgent(t, func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "agent a is shutting down", http.StatusServiceUnavailable)
	})
	ok := newAgent(t, echo)
	failed := newAgent(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set(swarmv1alpha1.HeaderOutcome, swarmv1alpha1.OutcomeFailed)
		http.Error(w, "the shutdown grace ran out", http.StatusServiceUnavailable)
	})

	p := NewPool(nil)
	p.Set(key, Settings{}, []Agent{{Name: "a-stopping", Addr: stopping.Listener.Addr().String(), Slots: 1}, {Name: "b-ok", Addr: ok.Listener.Addr().String(), Slots: 1}})
	srv := httptest.NewServer(NewHandler(p, Options{}))
	defer srv.Close()
	url := srv.URL + "/v1/namespaces/ns/hives/h/requests"
	for i := range 3 {
		resp, body := send(t, url, "x")
		if resp.StatusCode != http.StatusOK || body != "echo" {
			t.Fatalf("request %d: answer %s %q", i, resp.Status, body)
		}
	}
	if got := stopping.requests(); len(got) != 1 {
		t.Errorf("the stopping agent was offered %d requests, want 1: it said it stops", len(got))
	}
	waitFor(t, func() bool { return p.Load(key).InFlight == 0 })
	if l := p.Load(key); l.Slots != 1 {
		t.Errorf("load %+v, want the stopping agent's slot gone", l)
	}

	// A 503 with an outcome is the request's own failure: it ran, and is not offered again.
	p.Set(key, Settings{}, []Agent{{Name: "c-failed", Addr: failed.Listener.Addr().String(), Slots: 1}})
	resp, _ := send(t, url, "x")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(swarmv1alpha1.HeaderOutcome) != swarmv1alpha1.OutcomeFailed || len(failed.requests()) != 1 {
		t.Errorf("answer %s %v after %d tries, want the agent's own failure", resp.Status, resp.Header, len(failed.requests()))
	}
}

func TestAnAgentThatIsNotListeningYetIsTriedAgainWithinTheQueueTimeout(t *testing.T) {
	// An agent whose pod turned Ready a moment before its process listens (a pod without a
	// readiness probe, a restarted container) refuses connections for that moment. The
	// request waits for it, within its queue timeout, rather than failing in three quick
	// tries at one agent.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	p := NewPool(nil)
	p.Set(key, Settings{QueueLength: 10, QueueTimeout: 10 * time.Second}, []Agent{{Name: "late", Addr: addr, Slots: 1}})
	srv := httptest.NewServer(NewHandler(p, Options{}))
	defer srv.Close()

	go func() {
		time.Sleep(300 * time.Millisecond)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return // the port was taken meanwhile: the request then fails, and says so
		}
		_ = http.Serve(l, http.HandlerFunc(echo))
	}()
	resp, body := send(t, srv.URL+"/v1/namespaces/ns/hives/h/requests", "x")
	if resp.StatusCode != http.StatusOK || body != "echo" {
		t.Fatalf("answer %s %q", resp.Status, body)
	}
}

func TestTheBackoffOfAnUnreachableAgentGrowsAndResets(t *testing.T) {
	now := time.Now()
	p := NewPool(func() time.Time { return now })
	p.Set(key, Settings{}, agents(1))
	var waits []time.Duration
	for range 8 {
		p.Unreachable(key, "a0")
		waits = append(waits, p.hives[key].agents["a0"].fullUntil.Sub(now))
	}
	want := []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond, 160 * time.Millisecond,
		320 * time.Millisecond, 640 * time.Millisecond, time.Second, time.Second}
	if fmt.Sprint(waits) != fmt.Sprint(want) {
		t.Errorf("backoffs %v, want %v", waits, want)
	}
	p.Reached(key, "a0")
	p.Unreachable(key, "a0")
	if got := p.hives[key].agents["a0"].fullUntil.Sub(now); got != 20*time.Millisecond {
		t.Errorf("after an answer, the backoff starts again at %v", got)
	}
	p.Unreachable("ns/none", "a0") // a hive or agent that is gone: nothing to do
	p.Reached(key, "none")
}
