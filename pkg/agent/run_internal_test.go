package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// These tests drive the runner with watch events by hand, against a fake API server, so
// that the orders a real watch produces only sometimes (a stale event after the final
// write, a re-bind while a handler unwinds) happen every time.

const pod = "pod-a"

// calls records handler invocations by task and attempt.
type calls struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *calls) add(t *Task) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[fmt.Sprintf("%s/%d", t.Name, t.Attempt)]++
}

func (c *calls) of(name string, attempt int32) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[fmt.Sprintf("%s/%d", name, attempt)]
}

type harness struct {
	t      *testing.T
	client client.Client
	r      *runner
	calls  *calls
}

func newHarness(t *testing.T, h Handler, mutate ...func(*Options)) *harness {
	t.Helper()
	return newHarnessWith(t, interceptor.Funcs{}, h, mutate...)
}

func newHarnessWith(t *testing.T, funcs interceptor.Funcs, h Handler, mutate ...func(*Options)) *harness {
	t.Helper()
	c := interceptor.NewClient(fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(&swarmv1alpha1.Task{}).Build(), funcs)
	hs := &harness{t: t, client: c, calls: &calls{}}
	opts := Options{
		Client: c, PodName: pod, Namespace: "ns", Concurrency: 2, RunningAfter: ptr.To(time.Hour),
		ShutdownGrace: time.Second, StopGrace: time.Second, Logger: logr.Discard(),
	}
	for _, m := range mutate {
		m(&opts)
	}
	hs.r = newRunner(opts, func(ctx context.Context, task *Task) (string, error) {
		hs.calls.add(task)
		return h(ctx, task)
	})
	return hs
}

// bound creates a task bound to pod at attempt 1 and returns it as the watch would show it.
func (h *harness) bound(name string, mutate ...func(*swarmv1alpha1.Task)) *swarmv1alpha1.Task {
	h.t.Helper()
	task := &swarmv1alpha1.Task{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: k8stypes.UID("uid-" + name)},
		Spec:       swarmv1alpha1.TaskSpec{Hive: "h", Input: "in"},
	}
	for _, m := range mutate {
		m(task)
	}
	status := task.Status
	if err := h.client.Create(context.Background(), task); err != nil {
		h.t.Fatal(err)
	}
	now := metav1.NowMicro()
	task.Status = status
	task.Status.Phase, task.Status.Agent, task.Status.AssignedAt = swarmv1alpha1.TaskAssigned, pod, &now
	if task.Status.Attempt == 0 {
		task.Status.Attempt = 1
	}
	if err := h.client.Status().Update(context.Background(), task); err != nil {
		h.t.Fatal(err)
	}
	return h.get(name)
}

func (h *harness) get(name string) *swarmv1alpha1.Task {
	h.t.Helper()
	task := &swarmv1alpha1.Task{}
	if err := h.client.Get(context.Background(), client.ObjectKey{Namespace: "ns", Name: name}, task); err != nil {
		h.t.Fatal(err)
	}
	return task
}

// rebind moves a task to the next attempt on pod, as the operator would after the attempt
// failed.
func (h *harness) rebind(name string) *swarmv1alpha1.Task {
	h.t.Helper()
	task := h.get(name)
	now := metav1.NowMicro()
	task.Status.Phase, task.Status.Agent, task.Status.AssignedAt = swarmv1alpha1.TaskAssigned, pod, &now
	task.Status.Attempt++
	task.Status.FinishedAt, task.Status.NotBefore = nil, nil
	if err := h.client.Status().Update(context.Background(), task); err != nil {
		h.t.Fatal(err)
	}
	return h.get(name)
}

func (h *harness) waitPhase(name string, phase swarmv1alpha1.TaskPhase) *swarmv1alpha1.Task {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		task := h.get(name)
		if task.Status.Phase == phase {
			return task
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("task %s is %s (%s), want %s", name, task.Status.Phase, task.Status.Message, phase)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) idle() {
	h.t.Helper()
	select {
	case <-h.r.whenIdle():
	case <-time.After(10 * time.Second):
		h.t.Fatal("the runner did not finish its work")
	}
}

func TestStaleEventDoesNotRunAnAttemptAgain(t *testing.T) {
	h := newHarness(t, func(context.Context, *Task) (string, error) { return "ok", nil }, func(o *Options) { o.RunningAfter = ptr.To[time.Duration](0) })
	assigned := h.bound("quick")
	h.r.observe(assigned)
	h.waitPhase("quick", swarmv1alpha1.TaskSucceeded)
	h.idle()

	// The watch now delivers the versions it had not yet: the bind, then the agent's own
	// Running write. Neither may start the finished attempt again.
	running := assigned.DeepCopy()
	running.Status.Phase = swarmv1alpha1.TaskRunning
	running.ResourceVersion = "999"
	h.r.observe(assigned)
	h.r.observe(running)
	time.Sleep(50 * time.Millisecond)
	h.idle()
	if n := h.calls.of("quick", 1); n != 1 {
		t.Fatalf("the handler ran %d times for attempt 1", n)
	}
	if got := h.get("quick"); got.Status.Phase != swarmv1alpha1.TaskSucceeded || got.Status.Result != "ok" {
		t.Errorf("status %+v", got.Status)
	}

	// Once the watch shows the task gone from its selector, the record goes too.
	h.r.forget(h.get("quick"))
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	if len(h.r.handled)+len(h.r.latest)+len(h.r.attempts) != 0 {
		t.Errorf("records left after the task left the watch: handled %v, latest %d, attempts %d", h.r.handled, len(h.r.latest), len(h.r.attempts))
	}
}

func TestRebindWhileTheOldAttemptUnwindsStartsTheNewOne(t *testing.T) {
	release := make(chan struct{})
	h := newHarness(t, func(ctx context.Context, task *Task) (string, error) {
		if task.Attempt == 1 {
			<-ctx.Done()
			<-release // slow to exit, like a command given seconds to stop
			return "", ctx.Err()
		}
		return fmt.Sprintf("attempt %d", task.Attempt), nil
	}, func(o *Options) { o.Concurrency = 1 })
	h.r.observe(h.bound("slow-exit"))
	waitFor(t, func() bool { return h.calls.of("slow-exit", 1) == 1 })

	// The operator timed attempt 1 out and bound attempt 2 to the same agent.
	h.r.observe(h.rebind("slow-exit"))
	time.Sleep(50 * time.Millisecond)
	if n := h.calls.of("slow-exit", 2); n != 0 {
		t.Fatalf("attempt 2 ran while attempt 1 was still returning")
	}
	close(release)
	done := h.waitPhase("slow-exit", swarmv1alpha1.TaskSucceeded)
	if done.Status.Result != "attempt 2" || done.Status.Attempt != 2 {
		t.Errorf("status %+v", done.Status)
	}
	h.idle()
}

func TestTaskCancelledBeforeItStartsIsNotRun(t *testing.T) {
	h := newHarness(t, func(context.Context, *Task) (string, error) { return "ran", nil })
	// An agent that restarts lists a task of its own that was cancelled while it was away.
	h.r.observe(h.bound("cancelled", func(task *swarmv1alpha1.Task) { task.Spec.Cancel = true }))
	got := h.waitPhase("cancelled", swarmv1alpha1.TaskCancelled)
	h.idle()
	if n := h.calls.of("cancelled", 1); n != 0 {
		t.Errorf("the handler ran %d times for a cancelled task", n)
	}
	if !strings.Contains(got.Status.Message, "before it ran") {
		t.Errorf("message %q", got.Status.Message)
	}
}

func TestTimeoutIsWrittenAtTheDeadlineAndAStuckHandlerIsReported(t *testing.T) {
	release := make(chan struct{})
	h := newHarness(t, func(ctx context.Context, _ *Task) (string, error) {
		<-ctx.Done()
		<-release // ignores its context
		return "late", nil
	}, func(o *Options) { o.StopGrace = 100 * time.Millisecond })
	h.r.mu.Lock()
	h.r.ready = true
	h.r.mu.Unlock()
	h.r.observe(h.bound("hangs", func(task *swarmv1alpha1.Task) {
		task.Spec.Timeout = &metav1.Duration{Duration: 200 * time.Millisecond}
		task.Spec.MaxRetries = ptr.To[int32](0)
	}))
	failed := h.waitPhase("hangs", swarmv1alpha1.TaskFailed)
	if c := meta.FindStatusCondition(failed.Status.Conditions, swarmv1alpha1.TaskAttemptFailed); c == nil || c.Reason != swarmv1alpha1.ReasonTimedOut {
		t.Errorf("AttemptFailed %+v", c)
	}
	if failed.Status.FailedAttempts != 1 {
		t.Errorf("failedAttempts %d, want 1", failed.Status.FailedAttempts)
	}
	waitFor(t, func() bool { return h.r.readiness(context.Background()) != "" })
	if why := h.r.readiness(context.Background()); !strings.Contains(why, "has not returned") {
		t.Errorf("readiness %q", why)
	}
	close(release)
	waitFor(t, func() bool { return h.r.readiness(context.Background()) == "" })
	if got := h.get("hangs"); got.Status.Result != "" {
		t.Errorf("the late result was written: %+v", got.Status)
	}
}

func TestAPermanentErrorKeepsItsMeaningAndItsContext(t *testing.T) {
	cases := map[string]struct {
		err     error
		message string
	}{
		// The task's message is the whole error, not only the part marked permanent.
		"wrapped after the mark": {
			err:     fmt.Errorf("parsing the input: %w", Permanent(errors.New("not JSON"))),
			message: "parsing the input: not JSON",
		},
		// A call the handler made timed out, well before the attempt's own deadline: the
		// handler's verdict stands, and the attempt is not reported timed out and retried.
		"wrapping a deadline of the handler's own": {
			err:     Permanent(fmt.Errorf("calling the model: %w", context.DeadlineExceeded)),
			message: "calling the model: context deadline exceeded",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, func(context.Context, *Task) (string, error) { return "", tc.err })
			h.r.observe(h.bound("permanent")) // default maxRetries: 3
			got := h.waitPhase("permanent", swarmv1alpha1.TaskFailed)
			h.idle()
			c := meta.FindStatusCondition(got.Status.Conditions, swarmv1alpha1.TaskAttemptFailed)
			if c == nil || c.Reason != swarmv1alpha1.ReasonPermanentFailure || got.Status.FailedAttempts != 1 {
				t.Errorf("condition %+v, status %+v; want Failed with reason PermanentFailure after one attempt", c, got.Status)
			}
			if !strings.Contains(got.Status.Message, tc.message) {
				t.Errorf("message %q, want it to hold %q", got.Status.Message, tc.message)
			}
		})
	}
}

func TestShutdownReleasesWithoutWaitingForAStuckHandler(t *testing.T) {
	h := newHarness(t, func(ctx context.Context, _ *Task) (string, error) {
		<-ctx.Done()
		select {} // never returns
	}, func(o *Options) { o.ShutdownGrace = 50 * time.Millisecond; o.StopGrace = 50 * time.Millisecond })
	h.r.observe(h.bound("forever"))
	waitFor(t, func() bool { return h.calls.of("forever", 1) == 1 })
	done := make(chan struct{})
	go func() { h.r.shutdown(); close(done) }()
	waitFor(t, func() bool { h.r.mu.Lock(); defer h.r.mu.Unlock(); return h.r.stopping })
	// A task bound while the agent stops is given back, not run: the work starts while
	// shutdown already waits.
	h.r.observe(h.bound("late-bind"))
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown waits for a handler that never returns")
	}
	for _, name := range []string{"forever", "late-bind"} {
		got := h.get(name)
		if got.Status.Phase != swarmv1alpha1.TaskPending || got.Status.FailedAttempts != 0 || !strings.Contains(got.Status.Message, "shutting down") {
			t.Errorf("%s: %+v", name, got.Status)
		}
	}
	if h.calls.of("late-bind", 1) != 0 {
		t.Error("a task bound during shutdown ran")
	}
}

func TestABrokenWatchMakesTheAgentNotReady(t *testing.T) {
	var unreachable atomic.Bool
	h := newHarnessWith(t, interceptor.Funcs{
		List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
			if unreachable.Load() {
				return errors.New("connection refused")
			}
			return nil // the fake client cannot evaluate the agent's field selector
		},
	}, func(context.Context, *Task) (string, error) { return "", nil })
	h.r.mu.Lock()
	h.r.ready = true
	h.r.mu.Unlock()
	if why := h.r.readiness(context.Background()); why != "" {
		t.Fatalf("readiness %q before any failure", why)
	}
	ref := toolscache.NewNamedReflector("tasks", &toolscache.ListWatch{}, &swarmv1alpha1.Task{}, toolscache.NewStore(toolscache.MetaNamespaceKeyFunc), 0)
	// A watch that merely ends is resumed at once: still ready.
	h.r.watchFailed(context.Background(), ref, io.EOF)
	unreachable.Store(true)
	h.r.watchFailed(context.Background(), ref, errors.New("dial tcp: connection refused"))
	if why := h.r.readiness(context.Background()); !strings.Contains(why, "task watch has failed") {
		t.Errorf("readiness %q with the watch failing and the API server unreachable", why)
	}
	unreachable.Store(false)
	if why := h.r.readiness(context.Background()); why != "" {
		t.Errorf("readiness %q once the API server answers again", why)
	}
}

func waitFor(t *testing.T, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
