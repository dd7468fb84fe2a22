package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// RequestsPath is the pattern of the gateway's request endpoint.
const RequestsPath = "POST /v1/namespaces/{namespace}/hives/{hive}/requests"

// RetryAfter is the Retry-After of a request answered 503 because the hive had no slot.
const RetryAfter = "1"

// Options configure the gateway's handler.
type Options struct {
	// Transport reaches the agents; a tuned http.Transport when nil.
	Transport http.RoundTripper
	// MaxTries is how many distinct agents may refuse a request (they cannot be reached, or
	// are shutting down) before it is answered 503; default 3. One agent that refuses is
	// tried again after a backoff that grows with its refusals, within the queue timeout. An agent that answers it is full (another gateway filled it) costs no try:
	// the request waits for a slot within its queue timeout.
	MaxTries int
	Logger   logr.Logger
	// Metrics, when set, count every request.
	Metrics *Metrics
}

// NewHandler returns the gateway's HTTP handler: POST
// /v1/namespaces/{namespace}/hives/{hive}/requests takes a serving slot of the hive's least
// loaded agent (waiting in the hive's queue if none is free), forwards the request to it
// and streams the answer back, trailers included. An agent that answers 429 or cannot be
// reached ran nothing: the request waits for another slot.
func NewHandler(pool *Pool, o Options) http.Handler {
	if o.Transport == nil {
		o.Transport = &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
		}
	}
	if o.MaxTries <= 0 {
		o.MaxTries = 3
	}
	if o.Logger.GetSink() == nil {
		o.Logger = logr.Discard()
	}
	f := &forwarder{pool: pool, opts: o}
	proxy := &httputil.ReverseProxy{
		Rewrite:       func(*httputil.ProxyRequest) {}, // the transport picks the agent
		Transport:     f,
		FlushInterval: -1, // a streamed answer reaches the caller as the agent sends it
		ErrorHandler:  f.failed,
	}
	mux := http.NewServeMux()
	mux.HandleFunc(RequestsPath, func(rw http.ResponseWriter, req *http.Request) {
		hive := req.PathValue("namespace") + "/" + req.PathValue("hive")
		st := &requestStats{arrived: time.Now()}
		w := &statusRecorder{ResponseWriter: rw}
		defer func() {
			st.finish(w.status, rw.Header().Get(swarmv1alpha1.HeaderOutcome), req.Context().Err())
			if !pool.Serves(hive) {
				hive = ""
			}
			o.Metrics.observe(hive, st, w.status, time.Now())
		}()
		input, err := io.ReadAll(http.MaxBytesReader(w, req.Body, swarmv1alpha1.MaxInputLength))
		if err != nil {
			st.reason = ReasonRejected
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				http.Error(w, fmt.Sprintf("the input exceeds the limit of %d bytes, as a task's does", swarmv1alpha1.MaxInputLength), http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "reading the input: "+err.Error(), http.StatusBadRequest)
			return
		}
		if v := req.Header.Get(swarmv1alpha1.HeaderTimeout); v != "" {
			if d, err := time.ParseDuration(v); err != nil || d <= 0 {
				st.reason = ReasonRejected
				http.Error(w, fmt.Sprintf("%s: %q is not a positive duration such as 30s", swarmv1alpha1.HeaderTimeout, v), http.StatusBadRequest)
				return
			}
		}
		id := newID()
		w.Header().Set(swarmv1alpha1.HeaderRequestID, id)
		out := req.WithContext(context.WithValue(req.Context(), targetKey{}, target{
			hive: hive, id: id, input: input, stats: st,
		}))
		proxy.ServeHTTP(w, out)
	})
	return mux
}

type targetKey struct{}

// target is what the forwarder needs of a request: its hive, id and input (kept, so that
// it can be offered to another agent).
type target struct {
	hive, id string
	input    []byte
	stats    *requestStats
}

// requestStats is what the metrics need of a request: when it arrived, was forwarded to
// the agent that served it, and that agent's answer ended, and why it ended as it did.
type requestStats struct {
	arrived, forwarded, answered time.Time
	reason                       string
}

// finish sets the reason of a request the gateway did not refuse itself, from its status,
// its Hive-Outcome (a header or a trailer) and whether its caller went away.
func (st *requestStats) finish(status int, outcome string, callerErr error) {
	switch {
	case st.reason != "":
	case callerErr != nil:
		st.reason = ReasonCanceled
	case status < 300 && outcome != swarmv1alpha1.OutcomeFailed:
		st.reason = ReasonSucceeded
	default:
		st.reason = ReasonFailed
	}
}

// statusRecorder keeps the status of an answer. A status never written (the caller went
// away first) is 499, as proxies log it.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b) //nolint:wrapcheck // the proxy reads it as it comes
}

// Flush and Unwrap keep the stream flowing through the recorder.
func (w *statusRecorder) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// forwarder is the proxy's transport: it offers a request to the agents of its hive.
type forwarder struct {
	pool *Pool
	opts Options
}

func (f *forwarder) RoundTrip(req *http.Request) (*http.Response, error) {
	t, ok := req.Context().Value(targetKey{}).(target)
	if !ok {
		return nil, errors.New("gateway: a request without a hive")
	}
	arrived, again := time.Now(), false
	// refused are the agents that could not be reached or were shutting down: a request
	// gives up once MaxTries of them have. One agent that refuses for a moment (its process
	// is not listening yet) is tried again after its backoff, within the queue timeout.
	refused := map[string]bool{}
	var lastRefusal error
	for try := 1; ; try++ {
		a, release, err := f.pool.Acquire(req.Context(), t.hive, arrived, again)
		if err != nil {
			if errors.Is(err, ErrQueueTimeout) && lastRefusal != nil {
				return nil, fmt.Errorf("%w within the queue timeout (the last: %w)", errAgentsUnreachable, lastRefusal)
			}
			return nil, err
		}
		again = true
		out := req.Clone(req.Context())
		out.URL.Scheme, out.URL.Host, out.URL.Path, out.URL.RawPath, out.Host = "http", a.Addr, swarmv1alpha1.RequestPath, "", a.Addr
		out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(t.input)), int64(len(t.input))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(t.input)), nil }
		out.Header.Set(swarmv1alpha1.HeaderRequestID, t.id)
		out.Header.Set(swarmv1alpha1.HeaderAttempt, strconv.Itoa(try))
		// The request is replayable: net/http may resend it on a kept-alive connection the
		// agent closed before reading it.
		out.Header.Set("Idempotency-Key", t.id)
		sent := time.Now()
		resp, err := f.opts.Transport.RoundTrip(out)
		if err == nil {
			f.pool.Reached(t.hive, a.Name)
		}
		switch {
		case err != nil && req.Context().Err() == nil && isDialError(err):
			// Nothing ran there: offer it again, to this agent after its backoff or another.
			release()
			f.pool.Unreachable(t.hive, a.Name)
			f.opts.Logger.V(2).Info("agent unreachable; offering the request again", "request", t.id, "hive", t.hive, "agent", a.Name, "error", err.Error())
			refused[a.Name], lastRefusal = true, fmt.Errorf("agent %s: %w", a.Name, err)
			if len(refused) >= f.opts.MaxTries {
				return nil, fmt.Errorf("%w: %d agents refused it (the last: %w)", errAgentsUnreachable, len(refused), lastRefusal)
			}
			continue
		case err == nil && resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(swarmv1alpha1.HeaderOutcome) == "":
			// The agent is shutting down and ran nothing (a 503 of a request it ran carries
			// its outcome): offer the request to another.
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
			_ = resp.Body.Close()
			release()
			f.pool.Stopping(t.hive, a.Name)
			f.opts.Logger.V(2).Info("agent shutting down; offering the request to another", "request", t.id, "hive", t.hive, "agent", a.Name)
			refused[a.Name], lastRefusal = true, fmt.Errorf("agent %s is shutting down", a.Name)
			if len(refused) >= f.opts.MaxTries {
				return nil, fmt.Errorf("%w: %d agents refused it (the last: %w)", errAgentsUnreachable, len(refused), lastRefusal)
			}
			continue
		case err != nil:
			release()
			return nil, fmt.Errorf("forwarding to agent %s: %w", a.Name, err)
		case resp.StatusCode == http.StatusTooManyRequests:
			// Another gateway holds its slots: wait at the head of the queue for a slot,
			// within the request's queue timeout.
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
			_ = resp.Body.Close()
			release()
			f.pool.Full(t.hive, a.Name)
			continue
		}
		t.stats.forwarded = sent
		resp.Body = &releasing{ReadCloser: resp.Body, release: func() {
			t.stats.answered = time.Now()
			release()
		}}
		return resp, nil
	}
}

var errAgentsUnreachable = errors.New("no agent could be reached")

// isDialError reports whether err happened before the request reached the agent.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// releasing gives the agent's slot back once the answer has been read or abandoned.
type releasing struct {
	io.ReadCloser
	release func()
}

func (r *releasing) Close() error {
	defer r.release()
	return r.ReadCloser.Close() //nolint:wrapcheck // the proxy reads it as it comes
}

// failed answers a request the gateway could not forward.
func (f *forwarder) failed(w http.ResponseWriter, req *http.Request, err error) {
	status, reason := http.StatusBadGateway, ReasonError
	switch {
	case errors.Is(err, ErrNotServing):
		status, reason = http.StatusNotFound, ReasonNotServing
	case errors.Is(err, ErrQueueFull):
		status, reason = http.StatusServiceUnavailable, ReasonQueueFull
	case errors.Is(err, ErrQueueTimeout):
		status, reason = http.StatusServiceUnavailable, ReasonQueueTimeout
	case errors.Is(err, errAgentsUnreachable):
		status, reason = http.StatusServiceUnavailable, ReasonUnreachable
	case req.Context().Err() != nil:
		reason = ReasonCanceled
	}
	t, _ := req.Context().Value(targetKey{}).(target)
	if t.stats != nil {
		t.stats.reason = reason
	}
	switch reason {
	case ReasonCanceled:
		return // the caller is gone
	case ReasonQueueFull, ReasonQueueTimeout, ReasonUnreachable:
		w.Header().Set("Retry-After", RetryAfter)
	}
	msg := err.Error()
	if t.hive != "" {
		msg = fmt.Sprintf("hive %s: %s", t.hive, msg)
	}
	f.opts.Logger.V(2).Info("request not forwarded", "status", status, "error", msg)
	w.Header().Set(swarmv1alpha1.HeaderOutcome, swarmv1alpha1.OutcomeFailed)
	w.Header().Set(swarmv1alpha1.HeaderError, strings.ReplaceAll(msg, "\n", " "))
	http.Error(w, msg, status)
}

// newID returns a random request id.
func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
