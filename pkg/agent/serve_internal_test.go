package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/ptr"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// These tests send real HTTP requests to the agent's request server, as the gateway does.

func newTestServer(t *testing.T, slots int, h Handler) (*server, string) {
	t.Helper()
	s := newServer(Options{PodName: "pod-a", Namespace: "ns", Hive: "h", ServingConcurrency: slots, Logger: logr.Discard()}, h)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv.URL + swarmv1alpha1.RequestPath
}

// answer is a response read whole.
type answer struct {
	*http.Response
	body string
}

// send posts a request and reads its whole answer.
func send(t *testing.T, url, body string, headers ...string) answer {
	t.Helper()
	resp := open(t, url, body, headers...)
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp, string(b)}
}

// open posts a request and returns its answer as it arrives; the caller closes its body.
func open(t *testing.T, url, body string, headers ...string) *http.Response {
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
	return resp
}

func TestARequestIsAnsweredByTheHandler(t *testing.T) {
	var seen *Task
	_, url := newTestServer(t, 1, func(_ context.Context, task *Task) (string, error) {
		seen = task
		return strings.ToUpper(task.Input), nil
	})
	start := time.Now()
	resp := send(t, url, "hello", swarmv1alpha1.HeaderRequestID, "r-1", swarmv1alpha1.HeaderAttempt, "2", swarmv1alpha1.HeaderTimeout, "30s")
	if resp.StatusCode != http.StatusOK || resp.body != "HELLO" {
		t.Fatalf("answer %s %q, want 200 HELLO", resp.Status, resp.body)
	}
	if o, a := resp.Header.Get(swarmv1alpha1.HeaderOutcome), resp.Header.Get(swarmv1alpha1.HeaderAgent); o != swarmv1alpha1.OutcomeSucceeded || a != "pod-a" {
		t.Errorf("Hive-Outcome %q, Hive-Agent %q", o, a)
	}
	if !seen.Request || seen.Name != "r-1" || seen.Attempt != 2 || seen.Namespace != "ns" || seen.Hive != "h" || seen.Object() != nil {
		t.Errorf("the handler saw %+v", seen)
	}
	if d := seen.Deadline.Sub(start); d < 29*time.Second || d > 31*time.Second {
		t.Errorf("the deadline is %s after the request, want 30s", d)
	}
	if deps, err := seen.DependencyResults(t.Context()); err != nil || len(deps) != 0 {
		t.Errorf("DependencyResults of a request = %v, %v", deps, err)
	}
}

func TestAFullAgentAnswers429AndNeverServesMoreThanItsSlots(t *testing.T) {
	const slots, requests = 2, 12
	var inFlight, most atomic.Int32
	release := make(chan struct{})
	_, url := newTestServer(t, slots, func(context.Context, *Task) (string, error) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		return "ok", nil
	})
	statuses := make(chan int, requests)
	var wg sync.WaitGroup
	for range requests {
		wg.Go(func() {
			resp := send(t, url, "x")
			if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
				t.Error("a 429 without Retry-After")
			}
			statuses <- resp.StatusCode
		})
	}
	// The refusals come at once; the served requests wait for release.
	got := map[int]int{}
	for range requests - slots {
		got[<-statuses]++
	}
	if got[http.StatusTooManyRequests] != requests-slots {
		t.Fatalf("before any handler returned: %v, want %d answered 429", got, requests-slots)
	}
	close(release)
	wg.Wait()
	close(statuses)
	for s := range statuses {
		got[s]++
	}
	if got[http.StatusOK] != slots || most.Load() > slots {
		t.Errorf("answers %v with at most %d handlers at once; want %d served with at most %d", got, most.Load(), slots, slots)
	}
	// The slots are free again.
	if resp := send(t, url, "x"); resp.StatusCode != http.StatusOK {
		t.Errorf("after the handlers returned: %s", resp.Status)
	}
}

func TestAStreamReachesTheCallerAsItIsWritten(t *testing.T) {
	next := make(chan struct{})
	_, url := newTestServer(t, 1, func(_ context.Context, task *Task) (string, error) {
		_, _ = io.WriteString(task.Output, "first ")
		<-next
		_, _ = io.WriteString(task.Output, "second ")
		return "last", nil
	})
	resp := open(t, url, "x")
	defer func() { _ = resp.Body.Close() }()
	r := bufio.NewReader(resp.Body)
	first := make([]byte, len("first "))
	if _, err := io.ReadFull(r, first); err != nil || string(first) != "first " {
		t.Fatalf("read %q, %v before the handler went on", first, err)
	}
	close(next)
	rest, err := io.ReadAll(r)
	if err != nil || string(rest) != "second last" {
		t.Fatalf("then %q, %v", rest, err)
	}
	if o := resp.Trailer.Get(swarmv1alpha1.HeaderOutcome); o != swarmv1alpha1.OutcomeSucceeded {
		t.Errorf("trailer Hive-Outcome %q (trailers %v)", o, resp.Trailer)
	}
}

func TestAFailureAfterStreamingIsInTheTrailer(t *testing.T) {
	_, url := newTestServer(t, 1, func(_ context.Context, task *Task) (string, error) {
		_, _ = io.WriteString(task.Output, "partial")
		return "", errors.New("the model\nwent away")
	})
	resp := send(t, url, "x")
	if resp.StatusCode != http.StatusOK || resp.body != "partial" {
		t.Fatalf("answer %s %q", resp.Status, resp.body)
	}
	if o, e := resp.Trailer.Get(swarmv1alpha1.HeaderOutcome), resp.Trailer.Get(swarmv1alpha1.HeaderError); o != swarmv1alpha1.OutcomeFailed || e != "the model went away" {
		t.Errorf("trailers Hive-Outcome %q, Hive-Error %q", o, e)
	}
}

func TestFailuresHaveTheirStatus(t *testing.T) {
	cases := map[string]struct {
		handler Handler
		headers []string
		status  int
		message string
	}{
		"an error": {
			handler: func(context.Context, *Task) (string, error) { return "", errors.New("boom") },
			status:  http.StatusInternalServerError, message: "boom",
		},
		"a permanent error": {
			handler: func(context.Context, *Task) (string, error) { return "", Permanent(errors.New("bad input")) },
			status:  http.StatusUnprocessableEntity, message: "bad input",
		},
		"a timeout": {
			handler: func(ctx context.Context, _ *Task) (string, error) { <-ctx.Done(); return "late", nil },
			headers: []string{swarmv1alpha1.HeaderTimeout, "50ms"},
			status:  http.StatusGatewayTimeout, message: "context deadline exceeded",
		},
		"a panic": {
			handler: func(context.Context, *Task) (string, error) { panic("oops") },
			status:  http.StatusInternalServerError, message: "handler panicked: oops",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, url := newTestServer(t, 1, tc.handler)
			resp := send(t, url, "x", tc.headers...)
			if resp.StatusCode != tc.status || strings.TrimSpace(resp.body) != tc.message {
				t.Errorf("answer %s %q, want %d %q", resp.Status, resp.body, tc.status, tc.message)
			}
			if o, e := resp.Header.Get(swarmv1alpha1.HeaderOutcome), resp.Header.Get(swarmv1alpha1.HeaderError); o != swarmv1alpha1.OutcomeFailed || e != tc.message {
				t.Errorf("Hive-Outcome %q, Hive-Error %q", o, e)
			}
		})
	}
}

func TestBadRequestsAreRefusedWithoutRunningTheHandler(t *testing.T) {
	var ran atomic.Bool
	s, url := newTestServer(t, 1, func(context.Context, *Task) (string, error) { ran.Store(true); return "", nil })
	get, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(get)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != http.MethodPost {
		t.Errorf("GET: %s, Allow %q", resp.Status, resp.Header.Get("Allow"))
	}
	cases := map[string]struct {
		url, body string
		headers   []string
		status    int
		message   string
	}{
		"another path":       {strings.TrimSuffix(url, swarmv1alpha1.RequestPath) + "/v1/other", "x", nil, http.StatusNotFound, "404 page not found"},
		"too large an input": {url, strings.Repeat("x", swarmv1alpha1.MaxInputLength+1), nil, http.StatusRequestEntityTooLarge, "the input exceeds the limit of 65536 bytes, as a task's does"},
		"a zero attempt":     {url, "x", []string{swarmv1alpha1.HeaderAttempt, "0"}, http.StatusBadRequest, `Hive-Attempt: "0" is not a positive number`},
		"a timeout of soon":  {url, "x", []string{swarmv1alpha1.HeaderTimeout, "soon"}, http.StatusBadRequest, `Hive-Timeout: "soon" is not a positive duration such as 30s`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			resp := send(t, tc.url, tc.body, tc.headers...)
			if body := strings.TrimSpace(resp.body); resp.StatusCode != tc.status || body != tc.message {
				t.Errorf("answer %s %q, want %d %q", resp.Status, body, tc.status, tc.message)
			}
		})
	}
	s.stop()
	if resp := send(t, url, "x"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("while stopping: %s, want 503", resp.Status)
	}
	if ran.Load() {
		t.Error("the handler ran for a request that was refused")
	}
}

func TestACallerThatGoesAwayCancelsTheHandler(t *testing.T) {
	started, cancelled := make(chan struct{}), make(chan error, 1)
	s, url := newTestServer(t, 1, func(ctx context.Context, _ *Task) (string, error) {
		close(started)
		<-ctx.Done()
		cancelled <- ctx.Err()
		return "", ctx.Err()
	})
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		<-started
		cancel()
	}()
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		_ = resp.Body.Close()
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("the request ended with %v", err)
	}
	select {
	case err := <-cancelled:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the handler's context ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's context did not end when its caller went away")
	}
	// Its slot is free again once the handler returned.
	waitFor(t, func() bool { return len(s.slots) == 1 })
}

func TestShutdownLetsRequestsFinishWithinTheGraceThenCancelsThem(t *testing.T) {
	for _, tc := range []struct {
		name   string
		work   time.Duration
		status int
	}{
		{"within the grace", 100 * time.Millisecond, http.StatusOK},
		{"beyond the grace", time.Hour, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			started := make(chan struct{})
			s := newServer(Options{PodName: "pod-a", ServingConcurrency: 1, Logger: logr.Discard()}, func(ctx context.Context, _ *Task) (string, error) {
				close(started)
				select {
				case <-time.After(tc.work):
					return "done", nil
				case <-ctx.Done():
					return "", ctx.Err()
				}
			})
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			stop := s.serve(l)
			url := "http://" + l.Addr().String() + swarmv1alpha1.RequestPath
			answered := make(chan answer, 1)
			go func() { answered <- send(t, url, "x") }()
			<-started
			stopped := make(chan struct{})
			go func() {
				defer close(stopped)
				stop(time.Second)
			}()
			select {
			case resp := <-answered:
				if resp.StatusCode != tc.status {
					t.Errorf("the request in flight was answered %s, want %d", resp.Status, tc.status)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the request in flight was not answered")
			}
			<-stopped
			if resp, err := http.Post(url, "text/plain", strings.NewReader("x")); err == nil {
				_ = resp.Body.Close()
				t.Error("a request after the shutdown was accepted")
			}
		})
	}
}

func TestATasksOutputIsTheStartOfItsResult(t *testing.T) {
	h := newHarness(t, func(_ context.Context, task *Task) (string, error) {
		_, _ = fmt.Fprint(task.Output, "streamed ")
		return "returned", nil
	}, func(o *Options) { o.RunningAfter = ptr.To(time.Hour) })
	h.r.observe(h.bound("streams"))
	if got := h.waitPhase("streams", swarmv1alpha1.TaskSucceeded); got.Status.Result != "streamed returned" {
		t.Errorf("result %q", got.Status.Result)
	}
	h.idle()

	h = newHarness(t, func(_ context.Context, task *Task) (string, error) {
		for range 3 {
			_, _ = io.WriteString(task.Output, strings.Repeat("x", swarmv1alpha1.MaxResultLength/2))
		}
		return "", nil
	})
	h.r.observe(h.bound("too-much"))
	got := h.waitPhase("too-much", swarmv1alpha1.TaskFailed)
	if want := fmt.Sprintf("the result of %d bytes exceeds the limit", 3*(swarmv1alpha1.MaxResultLength/2)); !strings.Contains(got.Status.Message, want) {
		t.Errorf("message %q, want it to say %q", got.Status.Message, want)
	}
	h.idle()
}
