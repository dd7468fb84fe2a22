package agent

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// These tests pin how the agent writes a task's outcome when the API server does not take
// the write at once: it retries conflicts on the fresh task and other errors with backoff,
// gives up after a minute, and stops as soon as the task is no longer its own. Most run in
// a synctest bubble, where the backoff's sleeps take no real time.

// statusPatchFaults returns interceptor funcs that hand every status patch of a task to
// fault first, with the patch's number (from 1) and the fake API server behind the
// interceptor, so that fault can change the world as another writer would. An error fault
// returns answers the patch instead of the API server; nil forwards it.
func statusPatchFaults(fault func(ctx context.Context, server client.Client, n int32, obj client.Object) error) interceptor.Funcs {
	var n atomic.Int32
	return interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			if err := fault(ctx, c, n.Add(1), obj); err != nil {
				return err
			}
			return c.SubResource(sub).Patch(ctx, obj, p, opts...)
		},
	}
}

func returnsDone(context.Context, *Task) (string, error) { return "done", nil }

func serverError() error { return apierrors.NewInternalError(errors.New("etcdserver: leader changed")) }

// takeAway binds a task to another agent as its next attempt, as the operator does when it
// thinks this agent lost, straight on the API server: the agent has not seen it.
func takeAway(ctx context.Context, server client.Client, name string) error {
	task := &swarmv1alpha1.Task{}
	if err := server.Get(ctx, client.ObjectKey{Namespace: "ns", Name: name}, task); err != nil {
		return err
	}
	task.Status.Agent, task.Status.Attempt = "pod-b", task.Status.Attempt+1
	return server.Status().Update(ctx, task)
}

func TestAWriteTheAPIServerRefusesForAWhileLandsOnceItAccepts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarnessWith(t, statusPatchFaults(func(_ context.Context, _ client.Client, n int32, _ client.Object) error {
			if n <= 3 {
				return serverError()
			}
			return nil
		}), returnsDone)
		h.r.observe(h.bound("flaky"))
		h.idle()
		if got := h.get("flaky"); got.Status.Phase != swarmv1alpha1.TaskSucceeded || got.Status.Result != "done" {
			t.Errorf("after three refused writes the outcome is %+v; want Succeeded with the result", got.Status)
		}
	})
}

func TestAConflictingWriteIsReappliedToTheFreshTaskKeepingTheOtherChange(t *testing.T) {
	h := newHarnessWith(t, statusPatchFaults(func(ctx context.Context, server client.Client, n int32, obj client.Object) error {
		if n == 1 {
			// A user labels the task while the agent works on it: the agent's patch, guarded
			// by the version it saw, now conflicts.
			task := &swarmv1alpha1.Task{}
			if err := server.Get(ctx, client.ObjectKeyFromObject(obj), task); err != nil {
				return err
			}
			task.Labels = map[string]string{"team": "search"}
			return server.Update(ctx, task)
		}
		return nil
	}), returnsDone)
	h.r.observe(h.bound("labelled"))
	h.idle()
	got := h.get("labelled")
	if got.Status.Phase != swarmv1alpha1.TaskSucceeded || got.Status.Result != "done" {
		t.Errorf("status %+v; want the outcome written after the conflict", got.Status)
	}
	if got.Labels["team"] != "search" {
		t.Errorf("labels %v; the other writer's change was lost", got.Labels)
	}
}

func TestATaskTakenAwayWhileAWriteRetriesIsLeftToItsNewAgent(t *testing.T) {
	cases := map[string]struct {
		// answer is what the API server answers the agent's first write, once the task has
		// been taken away; nil forwards the write, which then conflicts.
		answer error
	}{
		"the write conflicts":      {},
		"the write fails at first": {answer: serverError()},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarnessWith(t, statusPatchFaults(func(ctx context.Context, server client.Client, n int32, obj client.Object) error {
					if n == 1 {
						if err := takeAway(ctx, server, obj.GetName()); err != nil {
							return err
						}
						return tc.answer
					}
					return nil
				}), returnsDone)
				h.r.observe(h.bound("moved"))
				h.idle()
				got := h.get("moved")
				want := swarmv1alpha1.TaskStatus{Phase: swarmv1alpha1.TaskAssigned, Agent: "pod-b", Attempt: 2, AssignedAt: got.Status.AssignedAt}
				if diff := cmp.Diff(want, got.Status); diff != "" {
					t.Errorf("the agent wrote a task taken away from it (-want +got):\n%s", diff)
				}
			})
		})
	}
}

func TestATaskDeletedWhileAWriteRetriesEndsTheRetries(t *testing.T) {
	cases := map[string]struct {
		answer error
	}{
		"the write finds the task gone":    {},
		"the write fails as the task goes": {answer: apierrors.NewServiceUnavailable("shutting down")},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarnessWith(t, statusPatchFaults(func(ctx context.Context, server client.Client, n int32, obj client.Object) error {
					if n == 1 {
						if err := server.Delete(ctx, obj); err != nil {
							return err
						}
						return tc.answer
					}
					return nil
				}), returnsDone)
				h.r.observe(h.bound("deleted"))
				start := time.Now()
				<-h.r.whenIdle()
				if took := time.Since(start); took > time.Second {
					t.Errorf("the agent went on writing a deleted task for %v", took)
				}
				err := h.client.Get(context.Background(), client.ObjectKey{Namespace: "ns", Name: "deleted"}, &swarmv1alpha1.Task{})
				if !apierrors.IsNotFound(err) {
					t.Errorf("reading the deleted task: %v; the agent brought it back", err)
				}
			})
		})
	}
}

func TestAFailedReadDuringAWriteRetryIsRetriedToo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var patchFailed, readFailed atomic.Bool
		funcs := statusPatchFaults(func(context.Context, client.Client, int32, client.Object) error {
			if !patchFailed.Swap(true) {
				return serverError()
			}
			return nil
		})
		funcs.Get = func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			// Only the agent reads while it retries: the test reads once it is idle.
			if patchFailed.Load() && !readFailed.Swap(true) {
				return errors.New("connection reset by peer")
			}
			return c.Get(ctx, key, obj, opts...)
		}
		h := newHarnessWith(t, funcs, returnsDone)
		task := h.bound("unlucky")
		h.r.observe(task)
		h.idle()
		if got := h.get("unlucky"); got.Status.Phase != swarmv1alpha1.TaskSucceeded || got.Status.Result != "done" {
			t.Errorf("status %+v; want Succeeded after a failed write and a failed read", got.Status)
		}
	})
}

// A write that conflicts is re-read at once; when that read fails too (the API server
// answers 429 Too Many Requests, say), the agent must wait before it tries again, as for
// any failed write. Real time, not a synctest bubble: a loop that never waits would never
// let a bubble's clock move.
func TestAWriteWhoseReReadFailsRetriesWithBackoff(t *testing.T) {
	var patches atomic.Int32
	var gone atomic.Bool
	funcs := statusPatchFaults(func(_ context.Context, _ client.Client, _ int32, obj client.Object) error {
		patches.Add(1)
		return apierrors.NewConflict(swarmv1alpha1.GroupVersion.WithResource("tasks").GroupResource(), obj.GetName(), errors.New("the object has been modified"))
	})
	funcs.Get = func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
		if patches.Load() == 0 {
			return c.Get(ctx, key, obj, opts...)
		}
		if gone.Load() {
			return apierrors.NewNotFound(swarmv1alpha1.GroupVersion.WithResource("tasks").GroupResource(), key.Name)
		}
		return apierrors.NewTooManyRequests("the API server is overloaded", 1)
	}
	h := newHarnessWith(t, funcs, returnsDone)
	h.r.observe(h.bound("throttled"))
	time.Sleep(300 * time.Millisecond)
	n := patches.Load()
	gone.Store(true) // ends the write
	h.idle()
	// With the backoff of failed writes (50ms, doubling) that is 3 or 4 writes.
	if n > 10 {
		t.Errorf("the agent sent %d status writes in 300ms while its re-reads failed; want it to back off", n)
	}
}

func TestAnAgentGivesUpOnAWriteAfterAMinuteOfFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarnessWith(t, statusPatchFaults(func(context.Context, client.Client, int32, client.Object) error {
			return apierrors.NewServiceUnavailable("the API server is overloaded")
		}), returnsDone)
		before := h.bound("unwritable")
		start := time.Now()
		h.r.observe(before)
		<-h.r.whenIdle()
		// The deadline is a minute; the last wait before it is at most the backoff's cap.
		if took := time.Since(start); took < time.Minute || took > time.Minute+6*time.Second {
			t.Errorf("the agent gave up after %v; want about a minute", took)
		}
		if diff := cmp.Diff(before.Status, h.get("unwritable").Status); diff != "" {
			t.Errorf("the task changed although every write failed (-before +after):\n%s", diff)
		}
	})
}

// An agent told to stop while the API server refuses its writes must not hold its process
// for the minute a write may retry: its pod is killed long before. It keeps retrying
// through its shutdown grace (the API server may come back), then gives the releases and
// the writes still retrying ReleaseTimeout, then interrupts their backoff.
func TestShutdownInterruptsTheBackoffOfAWriteStillRetrying(t *testing.T) {
	cases := map[string]struct {
		refused int32 // how many status patches the API server refuses; -1: all
		want    swarmv1alpha1.TaskPhase
		// how long shutdown takes, with a grace of 1s
		minTook, maxTook time.Duration
	}{
		// Three backoffs of about 50, 100 and 200ms.
		"the API server comes back within the grace": {refused: 3, want: swarmv1alpha1.TaskSucceeded, minTook: 300 * time.Millisecond, maxTook: 500 * time.Millisecond},
		"the API server stays away": {
			refused: -1, want: swarmv1alpha1.TaskAssigned, minTook: time.Second + ReleaseTimeout, maxTook: time.Second + ReleaseTimeout,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var patches atomic.Int32
				h := newHarnessWith(t, statusPatchFaults(func(_ context.Context, _ client.Client, n int32, _ client.Object) error {
					patches.Store(n)
					if tc.refused < 0 || n <= tc.refused {
						return apierrors.NewServiceUnavailable("the API server is restarting")
					}
					return nil
				}), returnsDone)
				h.r.observe(h.bound("unwritten"))
				synctest.Wait() // the handler has returned; its outcome's write backs off
				if patches.Load() == 0 {
					t.Fatal("the outcome was not written before shutdown")
				}
				start := time.Now()
				h.r.shutdown()
				if took := time.Since(start); took < tc.minTook || took > tc.maxTook {
					t.Errorf("shutdown took %v, want %v to %v", took, tc.minTook, tc.maxTook)
				}
				sent := patches.Load()
				time.Sleep(2 * writeRetryTimeout)
				if n := patches.Load(); n != sent {
					t.Errorf("the agent sent %d more status writes after its shutdown returned", n-sent)
				}
				if got := h.get("unwritten"); got.Status.Phase != tc.want {
					t.Errorf("phase %s, want %s", got.Status.Phase, tc.want)
				}
			})
		})
	}
}

func TestAnAgentRestartedMidTaskRunsItAgainAndKeepsItsStartTime(t *testing.T) {
	h := newHarness(t, func(_ context.Context, task *Task) (string, error) { return "again: " + task.Input, nil },
		func(o *Options) { o.RunningAfter = ptr.To[time.Duration](0) })
	h.bound("resumed")
	// The previous process marked the task Running a minute ago, then died.
	task := h.get("resumed")
	started := metav1.NewMicroTime(time.Now().Add(-time.Minute))
	task.Status.Phase, task.Status.StartedAt = swarmv1alpha1.TaskRunning, &started
	if err := h.client.Status().Update(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	running := h.get("resumed")
	h.r.observe(running)
	done := h.waitPhase("resumed", swarmv1alpha1.TaskSucceeded)
	h.idle()
	if done.Status.Result != "again: in" {
		t.Errorf("result %q", done.Status.Result)
	}
	if !done.Status.StartedAt.Equal(running.Status.StartedAt) {
		t.Errorf("startedAt moved from %v to %v; a task already Running is not started again", running.Status.StartedAt, done.Status.StartedAt)
	}
}

func TestAStaleEventWhileATaskRunsCostsNoExtraWrite(t *testing.T) {
	var patches atomic.Int32
	release := make(chan struct{})
	h := newHarnessWith(t, statusPatchFaults(func(context.Context, client.Client, int32, client.Object) error {
		patches.Add(1)
		return nil
	}), func(context.Context, *Task) (string, error) {
		<-release
		return "done", nil
	}, func(o *Options) { o.RunningAfter = ptr.To[time.Duration](0) })
	assigned := h.bound("lagging")
	h.r.observe(assigned)
	h.waitPhase("lagging", swarmv1alpha1.TaskRunning)
	// Sequencing only: wait until the agent has recorded its own Running write.
	waitFor(t, func() bool {
		h.r.mu.Lock()
		defer h.r.mu.Unlock()
		return h.r.latest[assigned.UID].Status.Phase == swarmv1alpha1.TaskRunning
	})
	// The watch lags: it delivers the bind after the agent's own Running write.
	h.r.observe(assigned)
	close(release)
	h.waitPhase("lagging", swarmv1alpha1.TaskSucceeded)
	h.idle()
	// Running and Succeeded; a final write guarded by the stale version would conflict and
	// cost a third.
	if n := patches.Load(); n != 2 {
		t.Errorf("the task cost %d status writes; want 2", n)
	}
}

func TestNewerComparesResourceVersions(t *testing.T) {
	cases := map[string]struct {
		a, b string
		want bool
	}{
		"a later version":             {a: "1000", b: "999", want: true},
		"an earlier version":          {a: "999", b: "1000"},
		"a later one of equal length": {a: "124", b: "123", want: true},
		"the same version":            {a: "123", b: "123"},
		// Versions that are not the decimal numbers of an etcd-backed server say nothing
		// about order: the version the watch delivers wins.
		"a version that is not a number": {a: "abc", b: "12"},
		"an empty version":               {a: "", b: "12"},
		"a version with a leading zero":  {a: "0124", b: "123"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := newer(tc.a, tc.b); got != tc.want {
				t.Errorf("newer(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
			}
		})
	}
}
