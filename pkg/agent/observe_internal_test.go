package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

// These tests drive the runner's watch handlers by hand with the events a real watch
// delivers only in rare orders: tombstones, versions showing a task bound elsewhere, tasks
// that are not this agent's to run.

// untilCancelled is a handler that reports when its context ends, then returns a result
// that must not be written.
func untilCancelled(stopped chan<- string) Handler {
	return func(ctx context.Context, task *Task) (string, error) {
		<-ctx.Done()
		stopped <- task.Name
		return "too late", nil
	}
}

func waitStopped(t *testing.T, stopped <-chan string, name string) {
	t.Helper()
	select {
	case got := <-stopped:
		if got != name {
			t.Fatalf("the handler of %s stopped, want %s", got, name)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the handler of %s was not stopped", name)
	}
}

// setStatus writes a task's status on the API server as another writer would.
func (h *harness) setStatus(name string, mutate func(*swarmv1alpha1.TaskStatus)) *swarmv1alpha1.Task {
	h.t.Helper()
	task := h.get(name)
	mutate(&task.Status)
	if err := h.client.Status().Update(context.Background(), task); err != nil {
		h.t.Fatal(err)
	}
	return h.get(name)
}

func TestADeletionTheWatchMissedStopsTheHandler(t *testing.T) {
	stopped := make(chan string, 1)
	h := newHarness(t, untilCancelled(stopped))
	task := h.bound("missed")
	h.r.observe(task)
	waitFor(t, func() bool { return h.calls.of("missed", 1) == 1 })

	// Events that are not tasks change nothing.
	h.r.observe("not a task")
	h.r.forget(toolscache.DeletedFinalStateUnknown{Key: "ns/x", Obj: "not a task"})
	select {
	case name := <-stopped:
		t.Fatalf("an event that is not a task stopped the handler of %s", name)
	case <-time.After(20 * time.Millisecond):
	}

	// A watch that reconnects after missing a deletion hands over a tombstone.
	h.r.forget(toolscache.DeletedFinalStateUnknown{Key: "ns/missed", Obj: task})
	waitStopped(t, stopped, "missed")
	h.idle()
	if diff := cmp.Diff(task.Status, h.get("missed").Status); diff != "" {
		t.Errorf("the agent wrote a task it saw deleted (-before +after):\n%s", diff)
	}
}

func TestAVersionShowingTheTaskBoundElsewhereStopsTheHandler(t *testing.T) {
	stopped := make(chan string, 1)
	h := newHarness(t, untilCancelled(stopped))
	h.r.observe(h.bound("moved"))
	waitFor(t, func() bool { return h.calls.of("moved", 1) == 1 })

	// The operator thought this agent lost and bound the task to another.
	moved := h.setStatus("moved", func(s *swarmv1alpha1.TaskStatus) { s.Agent, s.Attempt = "pod-b", 2 })
	h.r.observe(moved)
	waitStopped(t, stopped, "moved")
	h.idle()
	if diff := cmp.Diff(moved.Status, h.get("moved").Status); diff != "" {
		t.Errorf("the agent wrote a task bound to another agent (-want +got):\n%s", diff)
	}
}

func TestATaskThatIsNotThisAgentsToRunIsNotRun(t *testing.T) {
	cases := map[string]func(*swarmv1alpha1.TaskStatus){
		"bound to another agent": func(s *swarmv1alpha1.TaskStatus) { s.Agent = "pod-b" },
		"released to the queue":  func(s *swarmv1alpha1.TaskStatus) { s.Phase, s.Agent = swarmv1alpha1.TaskPending, "" },
		"already finished here":  func(s *swarmv1alpha1.TaskStatus) { s.Phase, s.Result = swarmv1alpha1.TaskSucceeded, "earlier" },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, func(context.Context, *Task) (string, error) { return "ran", nil })
			h.bound("other")
			task := h.setStatus("other", mutate)
			h.r.observe(task)
			h.idle()
			if n := h.calls.of("other", task.Status.Attempt); n != 0 {
				t.Errorf("the handler ran %d times", n)
			}
			if diff := cmp.Diff(task.Status, h.get("other").Status); diff != "" {
				t.Errorf("the agent wrote the task (-before +after):\n%s", diff)
			}
		})
	}
}

func TestATaskWaitingForASlotAHandlerStillHoldsTimesOut(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	h := newHarness(t, func(ctx context.Context, task *Task) (string, error) {
		if task.Name == "holder" {
			<-ctx.Done()
			<-release // ignores its cancellation: its slot stays taken
		}
		return "ran", nil
	}, func(o *Options) { o.Concurrency = 1 })
	holder := h.bound("holder")
	h.r.observe(holder)
	waitFor(t, func() bool { return h.calls.of("holder", 1) == 1 })
	// The holder's task is deleted; the operator binds another one to the slot it thinks
	// free.
	h.r.forget(holder)
	h.r.observe(h.bound("waiter", func(task *swarmv1alpha1.Task) {
		task.Spec.Timeout = &metav1.Duration{Duration: 100 * time.Millisecond}
		task.Spec.MaxRetries = ptr.To[int32](0)
	}))
	failed := h.waitPhase("waiter", swarmv1alpha1.TaskFailed)
	if c := meta.FindStatusCondition(failed.Status.Conditions, swarmv1alpha1.TaskAttemptFailed); c == nil || c.Reason != swarmv1alpha1.ReasonTimedOut {
		t.Errorf("AttemptFailed %+v; want TimedOut", c)
	}
	if n := h.calls.of("waiter", 1); n != 0 {
		t.Errorf("the handler ran %d times for a task that timed out waiting for its slot", n)
	}
}

func TestShutdownWaitsForAHandlerThatReturnsWithinStopGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var returned atomic.Bool
		h := newHarness(t, func(ctx context.Context, _ *Task) (string, error) {
			<-ctx.Done()
			time.Sleep(100 * time.Millisecond) // tidies up before returning
			returned.Store(true)
			return "", ctx.Err()
		}, func(o *Options) { o.ShutdownGrace = 20 * time.Millisecond; o.StopGrace = 10 * time.Second })
		h.r.observe(h.bound("tidy"))
		waitFor(t, func() bool { return h.calls.of("tidy", 1) == 1 })
		start := time.Now()
		h.r.shutdown()
		if took := time.Since(start); !returned.Load() || took >= 10*time.Second {
			t.Errorf("shutdown returned after %v, the handler returned: %v; want it to wait for the handler and no longer", took, returned.Load())
		}
		if got := h.get("tidy"); got.Status.Phase != swarmv1alpha1.TaskPending || got.Status.Agent != "" {
			t.Errorf("status %+v; want the task released", got.Status)
		}
	})
}

func TestHealthEndpointsReportAHandlerThatIgnoresItsCancellation(t *testing.T) {
	release := make(chan struct{})
	addr := testenv.FreeAddr(t)
	h := newHarness(t, func(ctx context.Context, _ *Task) (string, error) {
		<-ctx.Done()
		<-release
		return "", nil
	}, func(o *Options) { o.StopGrace = 50 * time.Millisecond; o.HealthAddr = addr })
	h.r.mu.Lock()
	h.r.ready = true
	h.r.mu.Unlock()
	stop, err := h.r.serveHealth()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer func() { _ = resp.Body.Close() }()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	waitFor(t, func() bool { code, _ := get("/healthz"); return code == http.StatusOK })

	task := h.bound("stubborn")
	h.r.observe(task)
	waitFor(t, func() bool { return h.calls.of("stubborn", 1) == 1 })
	h.r.forget(task)
	waitFor(t, func() bool { code, _ := get("/healthz"); return code == http.StatusServiceUnavailable })
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := get(path); code != http.StatusServiceUnavailable || !strings.Contains(body, "stubborn") {
			t.Errorf("%s = %d %q while the handler of stubborn ignores its cancellation", path, code, body)
		}
	}

	close(release)
	waitFor(t, func() bool { code, _ := get("/healthz"); return code == http.StatusOK })
	if code, body := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d %q once the handler returned", code, body)
	}
}

func TestHealthServerReportsAnAddressInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	h := newHarness(t, returnsDone, func(o *Options) { o.HealthAddr = l.Addr().String() })
	stop, err := h.r.serveHealth()
	if err == nil {
		stop()
		t.Fatalf("serving health checks on %s, which is in use, did not fail", l.Addr())
	}
	if want := fmt.Sprintf("serving health checks on %s", l.Addr()); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}
