package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/lifecycle"
)

// DefaultRequestTimeout is how long a request's handler may run when the caller sets no
// Hive-Timeout: a task's default timeout.
var DefaultRequestTimeout = lifecycle.Timeout(&swarmv1alpha1.TaskSpec{})

// RetryAfterFull is the Retry-After of an agent whose serving slots are all taken: the
// gateway tries another agent at once, and a caller talking to the agent directly retries
// soon.
const RetryAfterFull = "1"

// server answers requests (POST /v1/requests) with the agent's handler, one per serving
// slot at most: an agent asked for more answers 429 at once, so that the gateway, which
// holds the queue, tries another and several gateways never push an agent past its slots.
type server struct {
	handler             Handler
	pod, namespace, hiv string
	slots               chan struct{}
	log                 logr.Logger

	// stopping is closed when the agent starts to shut down: requests that arrive then are
	// answered 503. handlers is cancelled once the shutdown grace is over.
	stopping     chan struct{}
	stopOnce     sync.Once
	handlers     context.Context
	stopHandlers context.CancelFunc
}

func newServer(opts Options, handler Handler) *server {
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{
		handler: handler, pod: opts.PodName, namespace: opts.Namespace, hiv: opts.Hive,
		slots: make(chan struct{}, opts.ServingConcurrency), log: opts.Logger,
		stopping: make(chan struct{}), handlers: ctx, stopHandlers: cancel,
	}
	for range opts.ServingConcurrency {
		s.slots <- struct{}{}
	}
	return s
}

func (s *server) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != swarmv1alpha1.RequestPath {
		http.NotFound(w, req)
		return
	}
	w.Header().Set(swarmv1alpha1.HeaderAgent, s.pod)
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "requests are POSTed", http.StatusMethodNotAllowed)
		return
	}
	select {
	case <-s.stopping:
		w.Header().Set("Connection", "close")
		http.Error(w, "agent "+s.pod+" is shutting down", http.StatusServiceUnavailable)
		return
	default:
	}
	select {
	case <-s.slots:
		defer func() { s.slots <- struct{}{} }()
	default:
		w.Header().Set("Retry-After", RetryAfterFull)
		http.Error(w, fmt.Sprintf("agent %s is serving %d requests, all its slots", s.pod, cap(s.slots)), http.StatusTooManyRequests)
		return
	}
	task, status, err := s.parse(w, req)
	if err != nil {
		http.Error(w, err.Error(), status)
		return
	}
	// The request ends when its caller goes (the gateway passes a disconnect on), when its
	// timeout passes, and when the shutdown grace is over.
	ctx, cancel := context.WithDeadline(req.Context(), task.Deadline)
	defer cancel()
	stop := context.AfterFunc(s.handlers, cancel)
	defer stop()

	out := &stream{w: w, rc: http.NewResponseController(w)}
	task.Output = out
	result, err := s.run(ctx, task)
	if err == nil && ctx.Err() != nil {
		err = ctx.Err() // what a handler returns after its context ended is discarded
	}
	if req.Context().Err() != nil {
		return // the caller is gone: nobody reads the answer
	}
	if err == nil {
		err = out.finish(swarmv1alpha1.OutcomeSucceeded, "", http.StatusOK, result)
	} else {
		err = out.finish(swarmv1alpha1.OutcomeFailed, err.Error(), statusOf(err), "")
	}
	if err != nil {
		s.log.V(1).Info("could not send a request's answer", "request", task.Name, "error", err.Error())
	}
}

// parse reads a request into the task its handler sees, or says why it cannot.
func (s *server) parse(w http.ResponseWriter, req *http.Request) (*Task, int, error) {
	attempt, timeout := int32(1), DefaultRequestTimeout
	if v := req.Header.Get(swarmv1alpha1.HeaderAttempt); v != "" {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 1 {
			return nil, http.StatusBadRequest, fmt.Errorf("%s: %q is not a positive number", swarmv1alpha1.HeaderAttempt, v)
		}
		attempt = int32(n)
	}
	if v := req.Header.Get(swarmv1alpha1.HeaderTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, http.StatusBadRequest, fmt.Errorf("%s: %q is not a positive duration such as 30s", swarmv1alpha1.HeaderTimeout, v)
		}
		timeout = d
	}
	input, err := io.ReadAll(http.MaxBytesReader(w, req.Body, swarmv1alpha1.MaxInputLength))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("the input exceeds the limit of %d bytes, as a task's does", swarmv1alpha1.MaxInputLength)
		}
		return nil, http.StatusBadRequest, fmt.Errorf("reading the input: %w", err)
	}
	return &Task{
		Name: req.Header.Get(swarmv1alpha1.HeaderRequestID), Namespace: s.namespace, Hive: s.hiv,
		Input: string(input), Attempt: attempt, Deadline: time.Now().Add(timeout), Request: true,
	}, 0, nil
}

// run runs the handler, turning a panic into the request's failure.
func (s *server) run(ctx context.Context, task *Task) (result string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return s.handler(ctx, task)
}

// statusOf is the HTTP status of a request that failed before its handler streamed.
func statusOf(err error) int {
	switch {
	case IsPermanent(err):
		return http.StatusUnprocessableEntity
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable // the shutdown grace ran out
	default:
		return http.StatusInternalServerError
	}
}

// stop makes the server answer new requests 503; handlers still running go on.
func (s *server) stop() { s.stopOnce.Do(func() { close(s.stopping) }) }

// stream is a request's Output: the first write sends the headers (200, with the outcome
// declared as a trailer) and each write is flushed to the caller at once, as a model
// server's tokens should be.
type stream struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	mu      sync.Mutex
	started bool
	done    bool
}

func (o *stream) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.done {
		return 0, errRequestAnswered
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !o.started {
		o.started = true
		o.w.Header().Set("Trailer", swarmv1alpha1.HeaderOutcome+", "+swarmv1alpha1.HeaderError)
		o.w.WriteHeader(http.StatusOK)
	}
	n, err := o.w.Write(p)
	if err == nil {
		err = o.rc.Flush()
	}
	if err != nil {
		return n, fmt.Errorf("streaming to the caller: %w", err)
	}
	return n, nil
}

var errRequestAnswered = errors.New("agent: the request has been answered; its handler can no longer write")

// finish ends the answer with what the handler returned and its outcome: as headers and
// the status when nothing was streamed yet, after the stream and as trailers otherwise.
// Writes after it fail.
func (o *stream) finish(outcome, message string, status int, result string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.done = true
	h := o.w.Header()
	h.Set(swarmv1alpha1.HeaderOutcome, outcome)
	if message != "" {
		h.Set(swarmv1alpha1.HeaderError, headerSafe(message))
	}
	body := result
	if !o.started {
		if outcome != swarmv1alpha1.OutcomeSucceeded {
			h.Set("Content-Type", "text/plain; charset=utf-8")
			h.Set("X-Content-Type-Options", "nosniff")
			body = truncate(message, MaxErrorLength) + "\n"
		}
		o.w.WriteHeader(status)
	}
	if _, err := io.WriteString(o.w, body); err != nil {
		return fmt.Errorf("answering the caller: %w", err)
	}
	return nil
}

// headerSafe makes an error's text a header value: one line, at most MaxErrorLength bytes.
func headerSafe(s string) string {
	return truncate(strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s), MaxErrorLength)
}

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n]
}

// serve serves requests on l. The returned stop answers new requests 503 and closes the
// listener, lets running handlers finish until grace ends, then cancels them and returns
// once they have answered.
func (s *server) serve(l net.Listener) func(grace time.Duration) {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error(err, "serving requests stopped")
		}
	}()
	return func(grace time.Duration) {
		s.stop()
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			s.stopHandlers()
			// Handlers see their context end; they get ReleaseTimeout to answer before the
			// connections are closed under them.
			ctx, cancel := context.WithTimeout(context.Background(), ReleaseTimeout)
			defer cancel()
			if srv.Shutdown(ctx) != nil {
				_ = srv.Close()
			}
		}
		s.stopHandlers()
	}
}
