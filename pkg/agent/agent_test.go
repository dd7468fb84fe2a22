package agent_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/pkg/agent"
	"github.com/aihub-dev/hive-operator/test/builder"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Run(m, &env)) }

func namespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "agent-"}}
	if err := env.Client.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// bind creates a task already bound to a pod, as the dispatcher would leave it.
func bind(t *testing.T, ns, name, pod string, mutate ...func(*swarmv1alpha1.Task)) *swarmv1alpha1.Task {
	t.Helper()
	task := builder.Task(ns, name).Hive("h").Input("in:" + name).Obj()
	for _, m := range mutate {
		m(task)
	}
	if err := env.Client.Create(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	base := task.DeepCopy()
	task.Status = builder.Task(ns, name).Bound(pod, 1, time.Now()).Obj().Status
	if err := env.Client.Status().Patch(context.Background(), task, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	return task
}

func get(t *testing.T, ns, name string) *swarmv1alpha1.Task {
	t.Helper()
	task := &swarmv1alpha1.Task{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, task); err != nil {
		t.Fatalf("reading %s: %v", name, err)
	}
	return task
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, 20*time.Millisecond, func() error {
		if !f() {
			return errors.New("waiting for " + what)
		}
		return nil
	})
}

func waitPhase(t *testing.T, ns, name string, phase swarmv1alpha1.TaskPhase) *swarmv1alpha1.Task {
	t.Helper()
	var task *swarmv1alpha1.Task
	waitFor(t, name+" to be "+string(phase), func() bool {
		task = get(t, ns, name)
		return task.Status.Phase == phase
	})
	return task
}

// runAgent runs an agent for a pod until the test ends, and returns a function that stops
// it gracefully and waits.
func runAgent(t *testing.T, ns, pod string, h agent.Handler, mutate ...func(*agent.Options)) (stop func()) {
	t.Helper()
	opts := agent.Options{Config: env.Config, PodName: pod, Namespace: ns, HealthAddr: "0", Concurrency: 2}
	for _, m := range mutate {
		m(&opts)
	}
	stop, _ = testenv.Background(t, "the agent", func(ctx context.Context) error { return agent.Run(ctx, opts, h) })
	return stop
}

func TestRunNeedsAnIdentity(t *testing.T) {
	t.Setenv(swarmv1alpha1.EnvPodName, "")
	t.Setenv(swarmv1alpha1.EnvPodNamespace, "")
	if err := agent.Run(context.Background(), agent.Options{}, nil); !errors.Is(err, agent.ErrNoIdentity) {
		t.Fatalf("Run without identity = %v", err)
	}
}

func TestOutcomesAreWrittenBack(t *testing.T) {
	testenv.Require(t, env)
	ns := namespace(t)
	var reassigned atomic.Bool
	runAgent(t, ns, "pod-a", func(ctx context.Context, task *agent.Task) (string, error) {
		switch task.Name {
		case "slow":
			time.Sleep(400 * time.Millisecond)
		case "fails":
			return "", errors.New("model overloaded")
		case "panics":
			panic("boom")
		case "reassigned":
			<-ctx.Done()
			reassigned.Store(true)
			return "too late", nil
		}
		return strings.ToUpper(task.Input), nil
	}, func(o *agent.Options) { o.RunningAfter = ptr.To(100 * time.Millisecond); o.Concurrency = 4 })

	bind(t, ns, "quick", "pod-a")
	quick := waitPhase(t, ns, "quick", swarmv1alpha1.TaskSucceeded)
	if quick.Status.Result != "IN:QUICK" || quick.Status.StartedAt != nil || quick.Status.FinishedAt == nil {
		t.Errorf("quick task status %+v; a quick task skips Running", quick.Status)
	}

	bind(t, ns, "slow", "pod-a")
	slow := waitPhase(t, ns, "slow", swarmv1alpha1.TaskSucceeded)
	if slow.Status.StartedAt == nil {
		t.Error("a task that outlasted RunningAfter was never marked Running")
	}

	retry := func(task *swarmv1alpha1.Task) { task.Spec.MaxRetries = ptr.To[int32](2) }
	bind(t, ns, "fails", "pod-a", retry)
	failed := waitPhase(t, ns, "fails", swarmv1alpha1.TaskPending)
	if failed.Status.Agent != "" || failed.Status.NotBefore == nil || !strings.Contains(failed.Status.Message, "model overloaded") {
		t.Errorf("failed attempt with retries left: %+v", failed.Status)
	}

	bind(t, ns, "panics", "pod-a", func(task *swarmv1alpha1.Task) { task.Spec.MaxRetries = ptr.To[int32](0) })
	if p := waitPhase(t, ns, "panics", swarmv1alpha1.TaskFailed); !strings.Contains(p.Status.Message, "handler panicked: boom") {
		t.Errorf("panicking handler: %q", p.Status.Message)
	}

	// The operator takes a task away (its agent was thought lost): the handler is stopped
	// and its late result is not written.
	task := bind(t, ns, "reassigned", "pod-a")
	time.Sleep(300 * time.Millisecond)
	task = get(t, ns, task.Name)
	base := task.DeepCopy()
	task.Status.Phase, task.Status.Agent = swarmv1alpha1.TaskPending, ""
	if err := env.Client.Status().Patch(context.Background(), task, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reassigned handler to stop", reassigned.Load)
	time.Sleep(200 * time.Millisecond)
	if got := get(t, ns, "reassigned"); got.Status.Phase != swarmv1alpha1.TaskPending || got.Status.Result != "" {
		t.Errorf("the agent wrote a task that was no longer its own: %+v", got.Status)
	}
}

func TestFailuresARetryCannotFixEndTheTaskAfterOneAttempt(t *testing.T) {
	testenv.Require(t, env)
	ns := namespace(t)
	var mu sync.Mutex
	calls := map[string]int{}
	runAgent(t, ns, "pod-permanent", func(_ context.Context, task *agent.Task) (string, error) {
		mu.Lock()
		calls[task.Name]++
		mu.Unlock()
		if task.Name == "huge" {
			return strings.Repeat("x", swarmv1alpha1.MaxResultLength+1), nil
		}
		return "", fmt.Errorf("parsing the input: %w", agent.Permanent(errors.New("not JSON")))
	})
	cases := map[string]struct{ reason, message string }{
		"invalid": {reason: swarmv1alpha1.ReasonPermanentFailure, message: "parsing the input: not JSON"},
		"huge":    {reason: swarmv1alpha1.ReasonResultTooLarge, message: "exceeds the limit of 262144"},
	}
	for name := range cases {
		bind(t, ns, name, "pod-permanent", func(task *swarmv1alpha1.Task) { task.Spec.MaxRetries = ptr.To[int32](3) })
	}
	for name, want := range cases {
		got := waitPhase(t, ns, name, swarmv1alpha1.TaskFailed)
		c := meta.FindStatusCondition(got.Status.Conditions, swarmv1alpha1.TaskAttemptFailed)
		if c == nil || c.Reason != want.reason {
			t.Errorf("%s: AttemptFailed %+v, want reason %s", name, c, want.reason)
		}
		if got.Status.Attempt != 1 || got.Status.FailedAttempts != 1 || got.Status.Agent != "pod-permanent" || got.Status.NotBefore != nil || got.Status.Result != "" {
			t.Errorf("%s: status %+v; want Failed after its first attempt, with its three retries unused", name, got.Status)
		}
		if !strings.Contains(got.Status.Message, want.message) || !strings.Contains(got.Status.Message, "not retried") {
			t.Errorf("%s: message %q, want it to say %q and that the task is not retried", name, got.Status.Message, want.message)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if calls["invalid"] != 1 || calls["huge"] != 1 {
		t.Errorf("handler calls %v, want one per task", calls)
	}
}

func TestRunningAfterZeroMarksEvenAnInstantTaskRunning(t *testing.T) {
	testenv.Require(t, env)
	ns := namespace(t)
	instant := func(context.Context, *agent.Task) (string, error) { return "done", nil }
	runAgent(t, ns, "pod-zero", instant, func(o *agent.Options) { o.RunningAfter = ptr.To[time.Duration](0) })
	runAgent(t, ns, "pod-unset", instant)
	bind(t, ns, "zero", "pod-zero")
	bind(t, ns, "unset", "pod-unset")
	if got := waitPhase(t, ns, "zero", swarmv1alpha1.TaskSucceeded); got.Status.StartedAt == nil {
		t.Errorf("with RunningAfter 0 the task was never marked Running: %+v", got.Status)
	}
	// Unset, RunningAfter is DefaultRunningAfter: an instant task skips the Running write.
	if got := waitPhase(t, ns, "unset", swarmv1alpha1.TaskSucceeded); got.Status.StartedAt != nil {
		t.Errorf("with RunningAfter unset an instant task was marked Running: %+v", got.Status)
	}
}

func TestCancelAndDeleteStopTheHandler(t *testing.T) {
	testenv.Require(t, env)
	ns := namespace(t)
	stopped := make(chan string, 2)
	runAgent(t, ns, "pod-b", func(ctx context.Context, task *agent.Task) (string, error) {
		<-ctx.Done()
		stopped <- task.Name
		return "", ctx.Err()
	})
	bind(t, ns, "cancel-me", "pod-b")
	bind(t, ns, "delete-me", "pod-b")
	time.Sleep(300 * time.Millisecond)

	task := get(t, ns, "cancel-me")
	base := task.DeepCopy()
	task.Spec.Cancel = true
	if err := env.Client.Patch(context.Background(), task, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	if c := waitPhase(t, ns, "cancel-me", swarmv1alpha1.TaskCancelled); !strings.Contains(c.Status.Message, "cancelled while running on agent pod-b") {
		t.Errorf("cancel message %q", c.Status.Message)
	}
	if err := env.Client.Delete(context.Background(), get(t, ns, "delete-me")); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for range 2 {
		select {
		case name := <-stopped:
			got[name] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("handlers stopped: %v", got)
		}
	}
}

func TestConcurrencyIsHonoured(t *testing.T) {
	testenv.Require(t, env)
	ns := namespace(t)
	var running, peak atomic.Int32
	runAgent(t, ns, "pod-c", func(context.Context, *agent.Task) (string, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(150 * time.Millisecond)
		return "ok", nil
	}, func(o *agent.Options) { o.Concurrency = 2 })
	for i := range 6 {
		bind(t, ns, fmt.Sprintf("c-%d", i), "pod-c")
	}
	for i := range 6 {
		waitPhase(t, ns, fmt.Sprintf("c-%d", i), swarmv1alpha1.TaskSucceeded)
	}
	if p := peak.Load(); p != 2 {
		t.Errorf("peak concurrency %d, want 2", p)
	}
}

func TestShutdownFinishesOrReleasesWork(t *testing.T) {
	testenv.Require(t, env)
	ns := namespace(t)
	stop := runAgent(t, ns, "pod-d", func(ctx context.Context, task *agent.Task) (string, error) {
		d := 100 * time.Millisecond
		if task.Name == "long" {
			d = time.Hour
		}
		select {
		case <-time.After(d):
			return "finished", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}, func(o *agent.Options) {
		o.ShutdownGrace = 500 * time.Millisecond
		o.RunningAfter = ptr.To[time.Duration](0)
	})
	bind(t, ns, "short", "pod-d")
	bind(t, ns, "long", "pod-d")
	waitPhase(t, ns, "long", swarmv1alpha1.TaskRunning)
	start := time.Now()
	stop()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("shutdown took %v with a grace of 500ms", took)
	}
	if s := get(t, ns, "short"); s.Status.Phase != swarmv1alpha1.TaskSucceeded {
		t.Errorf("a task that fits in the grace was not finished: %+v", s.Status)
	}
	l := get(t, ns, "long")
	if l.Status.Phase != swarmv1alpha1.TaskPending || l.Status.Agent != "" || !strings.Contains(l.Status.Message, "shutting down") {
		t.Errorf("a task that outlasts the grace was not released: %+v", l.Status)
	}
}

func TestDependencyResults(t *testing.T) {
	testenv.Require(t, env)
	ns := namespace(t)
	for name, result := range map[string]string{"up-1": "a", "up-2": "b"} {
		task := bind(t, ns, name, "nobody")
		base := task.DeepCopy()
		task.Status.Phase, task.Status.Result = swarmv1alpha1.TaskSucceeded, result
		if err := env.Client.Status().Patch(context.Background(), task, client.MergeFrom(base)); err != nil {
			t.Fatal(err)
		}
	}
	runAgent(t, ns, "pod-e", func(ctx context.Context, task *agent.Task) (string, error) {
		res, err := task.DependencyResults(ctx)
		if err != nil {
			return "", err
		}
		return res["up-1"] + res["up-2"] + fmt.Sprint(task.Object().Spec.DependsOn), nil
	})
	bind(t, ns, "down", "pod-e", func(task *swarmv1alpha1.Task) { task.Spec.DependsOn = []string{"up-1", "up-2"} })
	if got := waitPhase(t, ns, "down", swarmv1alpha1.TaskSucceeded).Status.Result; got != "ab[up-1 up-2]" {
		t.Errorf("result %q", got)
	}
	bind(t, ns, "orphan", "pod-e", func(task *swarmv1alpha1.Task) {
		task.Spec.DependsOn = []string{"missing"}
		task.Spec.MaxRetries = ptr.To[int32](0)
	})
	if got := waitPhase(t, ns, "orphan", swarmv1alpha1.TaskFailed).Status.Message; !strings.Contains(got, "reading dependency missing") {
		t.Errorf("message %q", got)
	}
}

func TestHealthEndpoints(t *testing.T) {
	testenv.Require(t, env)
	ns := namespace(t)
	addr := testenv.FreeAddr(t)
	stop := runAgent(t, ns, "pod-f", func(context.Context, *agent.Task) (string, error) { return "", nil },
		func(o *agent.Options) { o.HealthAddr = addr })
	status := func(path string) int {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	waitFor(t, "readiness", func() bool { return status("/readyz") == http.StatusOK })
	if got := status("/healthz"); got != http.StatusOK {
		t.Errorf("/healthz = %d", got)
	}
	stop()
	if got := status("/readyz"); got == http.StatusOK {
		t.Errorf("/readyz = %d after shutdown", got)
	}
}

func TestUnreachableAPIServer(t *testing.T) {
	testenv.Require(t, env)
	cfg := *env.Config
	cfg.Host = "https://127.0.0.1:1"
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err := agent.Run(ctx, agent.Options{Config: &cfg, PodName: "p", Namespace: "n", HealthAddr: "0"}, nil)
	if err == nil || apierrors.IsNotFound(err) {
		t.Fatalf("Run against no API server = %v; want an error saying the watch did not sync", err)
	}
}

// lateWatch delays what every watch of a configuration reads by d: events reach the agent
// late, as from a busy API server, after the agent's own later writes have landed.
func lateWatch(cfg *rest.Config, d time.Duration) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(req)
			if err == nil && req.URL.Query().Get("watch") == "true" {
				resp.Body = &slowBody{ReadCloser: resp.Body, delay: d}
			}
			return resp, err
		})
	}
	return cfg
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type slowBody struct {
	io.ReadCloser
	delay time.Duration
}

func (b *slowBody) Read(p []byte) (int, error) {
	time.Sleep(b.delay)
	return b.ReadCloser.Read(p)
}

func TestALateWatchEventDoesNotRunAFinishedAttemptAgain(t *testing.T) {
	testenv.Require(t, env)
	ns := namespace(t)
	var mu sync.Mutex
	calls := map[string]int{}
	runAgent(t, ns, "pod-late", func(_ context.Context, task *agent.Task) (string, error) {
		mu.Lock()
		calls[fmt.Sprintf("%s/%d", task.Name, task.Attempt)]++
		mu.Unlock()
		return "ok", nil
	}, func(o *agent.Options) {
		o.Config = lateWatch(env.Config, 300*time.Millisecond)
		o.Client = nil
		o.RunningAfter = ptr.To[time.Duration](0) // a Running write for every task, whose event comes late
		o.Concurrency = 4
	})
	for i := range 8 {
		bind(t, ns, fmt.Sprintf("late-%d", i), "pod-late")
	}
	for i := range 8 {
		waitPhase(t, ns, fmt.Sprintf("late-%d", i), swarmv1alpha1.TaskSucceeded)
	}
	time.Sleep(2 * time.Second) // the late events arrive
	mu.Lock()
	defer mu.Unlock()
	for key, n := range calls {
		if n != 1 {
			t.Errorf("the handler ran %d times for attempt %s", n, key)
		}
	}
	if len(calls) != 8 {
		t.Errorf("%d attempts ran, want 8", len(calls))
	}
}

func TestARebindWhileTheOldAttemptStopsRunsTheNewAttempt(t *testing.T) {
	testenv.Require(t, env)
	ns := namespace(t)
	runAgent(t, ns, "pod-slow-exit", func(ctx context.Context, task *agent.Task) (string, error) {
		if task.Attempt == 1 {
			<-ctx.Done()
			time.Sleep(700 * time.Millisecond) // slow to stop, like a command given time to exit
			return "", ctx.Err()
		}
		return fmt.Sprintf("attempt %d", task.Attempt), nil
	}, func(o *agent.Options) { o.Concurrency = 1 })
	bind(t, ns, "slow-exit", "pod-slow-exit", func(task *swarmv1alpha1.Task) {
		task.Spec.Timeout = &metav1.Duration{Duration: time.Second}
		task.Spec.MaxRetries = ptr.To[int32](1)
	})
	// Past the deadline, while attempt 1's handler still returns, the operator binds
	// attempt 2 to the same agent; it starts once attempt 1's handler has returned, well
	// within its own timeout.
	time.Sleep(1200 * time.Millisecond)
	task := get(t, ns, "slow-exit")
	base := task.DeepCopy()
	now := metav1.NowMicro()
	task.Status.Phase, task.Status.Agent, task.Status.Attempt, task.Status.AssignedAt, task.Status.NotBefore =
		swarmv1alpha1.TaskAssigned, "pod-slow-exit", task.Status.Attempt+1, &now, nil
	if err := env.Client.Status().Patch(context.Background(), task, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	done := waitPhase(t, ns, "slow-exit", swarmv1alpha1.TaskSucceeded)
	if done.Status.Result != "attempt 2" || done.Status.Attempt != 2 {
		t.Errorf("status %+v", done.Status)
	}
}

func TestAnAgentWatchesOnlyItsUnfinishedTasks(t *testing.T) {
	testenv.Require(t, env)
	ns := namespace(t)
	for phase, name := range map[swarmv1alpha1.TaskPhase]string{
		swarmv1alpha1.TaskAssigned: "assigned", swarmv1alpha1.TaskRunning: "running",
		swarmv1alpha1.TaskSucceeded: "succeeded", swarmv1alpha1.TaskFailed: "failed", swarmv1alpha1.TaskCancelled: "cancelled",
	} {
		task := bind(t, ns, name, "pod-sel")
		base := task.DeepCopy()
		task.Status.Phase = phase
		if err := env.Client.Status().Patch(context.Background(), task, client.MergeFrom(base)); err != nil {
			t.Fatal(err)
		}
	}
	bind(t, ns, "someone-else", "pod-other")
	list := &swarmv1alpha1.TaskList{}
	if err := env.Client.List(context.Background(), list, client.InNamespace(ns),
		client.MatchingFieldsSelector{Selector: agent.TaskSelector("pod-sel")}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, task := range list.Items {
		names = append(names, task.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"assigned", "running"}) {
		t.Errorf("the agent's watch selects %v", names)
	}
}

// deafWatch returns a configuration whose watches fall silent once deaf is set, as a watch
// that was cut and is backing off: what they read from then on is dropped.
func deafWatch(cfg *rest.Config, deaf *atomic.Bool) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(req)
			if err == nil && req.URL.Query().Get("watch") == "true" {
				resp.Body = &deafBody{ReadCloser: resp.Body, deaf: deaf, done: req.Context().Done()}
			}
			return resp, err
		})
	}
	return cfg
}

type deafBody struct {
	io.ReadCloser
	deaf *atomic.Bool
	done <-chan struct{}
}

func (b *deafBody) Read(p []byte) (int, error) {
	if !b.deaf.Load() {
		n, err := b.ReadCloser.Read(p)
		if !b.deaf.Load() {
			return n, err
		}
	}
	<-b.done
	return 0, io.ErrUnexpectedEOF
}

func TestShutdownGivesBackTasksItsWatchNeverDelivered(t *testing.T) {
	testenv.Require(t, env)
	ns := namespace(t)
	var deaf atomic.Bool
	var ran atomic.Int32
	stop := runAgent(t, ns, "pod-deaf", func(context.Context, *agent.Task) (string, error) {
		ran.Add(1)
		return "ran", nil
	}, func(o *agent.Options) { o.Config = deafWatch(env.Config, &deaf) })
	// A task the watch delivers shows it works; then it falls silent.
	bind(t, ns, "seen", "pod-deaf")
	waitPhase(t, ns, "seen", swarmv1alpha1.TaskSucceeded)
	deaf.Store(true)
	bind(t, ns, "unseen", "pod-deaf")
	stop()
	task := get(t, ns, "unseen")
	if task.Status.Phase != swarmv1alpha1.TaskPending || task.Status.Agent != "" || !strings.Contains(task.Status.Message, "shutting down") {
		t.Errorf("a task bound while the agent's watch was silent was not given back at shutdown: %+v", task.Status)
	}
	if task.Status.FailedAttempts != 0 {
		t.Errorf("giving the task back counted %d failed attempts", task.Status.FailedAttempts)
	}
	if n := ran.Load(); n != 1 {
		t.Errorf("the handler ran %d times, want once (for the task the watch delivered)", n)
	}
}

// TestAnAgentServesRequestsAndTasksWithTheSameHandler runs an agent that serves requests,
// as one of a hive with spec.serving does: a request is answered over HTTP and a task
// through its status, by the one handler, each in its own slots.
func TestAnAgentServesRequestsAndTasksWithTheSameHandler(t *testing.T) {
	testenv.Require(t, env)
	ns := namespace(t)
	addr := testenv.FreeAddr(t)
	taskRunning := make(chan struct{})
	release := make(chan struct{})
	stop := runAgent(t, ns, "pod-s", func(_ context.Context, task *agent.Task) (string, error) {
		if !task.Request {
			close(taskRunning)
			<-release // the task holds the only task slot while the request is served
		}
		return "served " + task.Input, nil
	}, func(o *agent.Options) { o.ServingAddr, o.ServingConcurrency, o.Concurrency = addr, 1, 1 })
	bind(t, ns, "t1", "pod-s")
	<-taskRunning

	var body string
	waitFor(t, "a request to be answered", func() bool {
		resp, err := http.Post("http://"+addr+swarmv1alpha1.RequestPath, "text/plain", strings.NewReader("hello"))
		if err != nil {
			return false
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusOK
	})
	if body != "served hello" {
		t.Errorf("the request was answered %q", body)
	}
	close(release)
	if got := waitPhase(t, ns, "t1", swarmv1alpha1.TaskSucceeded); got.Status.Result != "served in:t1" {
		t.Errorf("the task's result is %q", got.Status.Result)
	}
	stop()
	if resp, err := http.Post("http://"+addr+swarmv1alpha1.RequestPath, "text/plain", strings.NewReader("late")); err == nil {
		_ = resp.Body.Close()
		t.Error("the agent still took requests after it stopped")
	}
}
