package controllers

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/test/builder"
)

func TestDispatcherReportsWhatItCouldNotRead(t *testing.T) {
	cases := map[string]struct {
		funcs interceptor.Funcs
		want  string
	}{
		"the hive":       {funcs: refuse("get", &swarmv1alpha1.Hive{}, "", internalError()), want: "reading hive"},
		"its tasks":      {funcs: refuse("list", &swarmv1alpha1.TaskList{}, "", internalError()), want: "listing the hive's tasks"},
		"its agent pods": {funcs: refuse("list", &corev1.PodList{}, "", internalError()), want: "listing agent pods"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			hive := unitHive()
			c := fakeClient(tc.funcs, hive, agentPodOf(hive, hive, "agent-1"), builder.Task("ns", "t").Hive("h").Obj())
			_, err := reconcileHive(t, newUnitDispatcher(c), hive)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("reconcile = %v; want an error saying %q", err, tc.want)
			}
			if got := getTask(t, c, "t"); got.Status.Agent != "" {
				t.Errorf("the task was bound to %s", got.Status.Agent)
			}
		})
	}
}

func TestDispatcherBindsNothingForAHiveBeingDeleted(t *testing.T) {
	hive := unitHive()
	hive.Finalizers = []string{"example.com/hold"}
	hive.DeletionTimestamp = ptr.To(metav1.NewTime(unitNow))
	c := fakeClient(interceptor.Funcs{}, hive, agentPodOf(hive, hive, "agent-1"), builder.Task("ns", "t").Hive("h").Obj())
	if _, err := reconcileHive(t, newUnitDispatcher(c), hive); err != nil {
		t.Fatal(err)
	}
	if got := getTask(t, c, "t"); got.Status.Agent != "" {
		t.Errorf("a task of a hive being deleted was bound to %s", got.Status.Agent)
	}
}

func TestDispatcherTakesABindWhoseTaskVanishedAsNoBind(t *testing.T) {
	// The bind's answer was lost, and the API server then says the task is gone: it was
	// deleted meanwhile. Nothing to retry, no slot to hold.
	hive := unitHive()
	server := fakeAPIServer(hive, agentPodOf(hive, hive, "agent-1"), builder.Task("ns", "t").Hive("h").Obj())
	c := interceptor.NewClient(server, interceptor.Funcs{
		SubResourcePatch: func(context.Context, client.Client, string, client.Object, client.Patch, ...client.SubResourcePatchOption) error {
			return errors.New("http2: client connection lost")
		},
	})
	d := newUnitDispatcher(c)
	d.apiReader = interceptor.NewClient(server, refuse("get", &swarmv1alpha1.Task{}, "t", notFoundError("t")))
	if _, err := reconcileHive(t, d, hive); err != nil {
		t.Fatalf("reconcile = %v; a task deleted during its bind is no error", err)
	}
	if held := d.ledger.Holds(getTask(t, c, "t").UID); held {
		t.Error("the ledger holds the slot of a bind whose task is gone")
	}
}

func TestDispatcherFreesTheSlotOfADoubtfulBindOnceItsTaskIsGone(t *testing.T) {
	hive := unitHive()
	server := fakeAPIServer(hive, agentPodOf(hive, hive, "agent-1"), builder.Task("ns", "t").Hive("h").Obj())
	var deleted atomic.Bool
	c := interceptor.NewClient(server, interceptor.Funcs{
		SubResourcePatch: func(context.Context, client.Client, string, client.Object, client.Patch, ...client.SubResourcePatchOption) error {
			if deleted.Load() {
				return notFoundError("t")
			}
			return errors.New("http2: client connection lost")
		},
	})
	d := newUnitDispatcher(c)
	d.apiReader = interceptor.NewClient(server, interceptor.Funcs{
		Get: func(_ context.Context, _ client.WithWatch, key client.ObjectKey, _ client.Object, _ ...client.GetOption) error {
			if deleted.Load() {
				return notFoundError(key.Name)
			}
			return errors.New("connection refused")
		},
	})
	uid := getTask(t, c, "t").UID
	if _, err := reconcileHive(t, d, hive); err == nil {
		t.Fatal("a bind that got no answer, with the API server unable to tell, is not reported")
	}
	if !d.ledger.Holds(uid) {
		t.Fatal("the ledger does not hold the slot of a bind that may have gone through")
	}
	// The task is deleted; the cache has not seen it yet, the API server says so.
	deleted.Store(true)
	if _, err := reconcileHive(t, d, hive); err != nil {
		t.Fatal(err)
	}
	if d.ledger.Holds(uid) {
		t.Error("the ledger still holds the slot of a doubtful bind whose task is gone")
	}
}

func TestDispatcherCapsEachBackoffFromWhenItFirstSawIt(t *testing.T) {
	// An agent writes notBefore; the dispatcher holds a task at most MaxBackoff after it
	// first saw that backoff, whatever the agent wrote. Each new failed attempt (a new
	// queuedAt) is a new backoff, capped from when it is first seen.
	hive := unitHive()
	task := builder.Task("ns", "t").Hive("h").Obj()
	backOff := func(queuedAt time.Time) {
		task.Status = swarmv1alpha1.TaskStatus{Phase: swarmv1alpha1.TaskPending, Attempt: 1, FailedAttempts: 1,
			QueuedAt: ptrMicro(queuedAt), NotBefore: ptrMicro(queuedAt.Add(24 * time.Hour))}
	}
	backOff(unitNow)
	c := fakeClient(interceptor.Funcs{}, hive, task)
	d := newUnitDispatcher(c)
	now := unitNow
	d.opts.Now = func() time.Time { return now }
	steps := []struct {
		at       time.Duration
		queuedAt time.Duration // the task's queuedAt from unitNow: a new one is a new backoff
		want     time.Duration
	}{
		{at: 0, queuedAt: 0, want: 10 * time.Minute},
		{at: time.Minute, queuedAt: 0, want: 9 * time.Minute},
		{at: 5 * time.Minute, queuedAt: 5 * time.Minute, want: 10 * time.Minute},
	}
	for _, s := range steps {
		now = unitNow.Add(s.at)
		current := getTask(t, c, "t")
		if q := unitNow.Add(s.queuedAt); !current.Status.QueuedAt.Time.Equal(q) {
			backOff(q)
			current.Status = task.Status
			if err := c.Status().Update(context.Background(), current); err != nil {
				t.Fatal(err)
			}
		}
		res, err := reconcileHive(t, d, hive)
		if err != nil {
			t.Fatal(err)
		}
		if res.RequeueAfter != s.want {
			t.Errorf("%v in: the dispatcher comes back after %v, want %v", s.at, res.RequeueAfter, s.want)
		}
	}
}

func TestLostAnswerTellsErrorsAfterWhichAWriteMayHaveHappened(t *testing.T) {
	gr := swarmv1alpha1.GroupVersion.WithResource("tasks").GroupResource()
	cases := map[string]struct {
		err  error
		want bool
	}{
		"a dropped connection":  {err: errors.New("http2: client connection lost"), want: true},
		"a timeout on the way":  {err: context.DeadlineExceeded, want: true},
		"an internal error":     {err: internalError(), want: true},
		"a server timeout":      {err: apierrors.NewServerTimeout(gr, "patch", 1), want: true},
		"a gateway timeout":     {err: apierrors.NewTimeoutError("request timed out", 1), want: true},
		"an unavailable server": {err: apierrors.NewServiceUnavailable("overloaded"), want: true},
		"a conflict":            {err: conflictError("t")},
		"a refusal":             {err: apierrors.NewForbidden(gr, "t", errors.New("denied"))},
		"an invalid write":      {err: apierrors.NewBadRequest("bad patch")},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := lostAnswer(tc.err); got != tc.want {
				t.Errorf("lostAnswer(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestShortestWaitIgnoresNone(t *testing.T) {
	cases := map[string]struct{ a, b, want time.Duration }{
		"none and one":      {a: 0, b: time.Second, want: time.Second},
		"one and none":      {a: time.Second, b: 0, want: time.Second},
		"the second sooner": {a: time.Minute, b: time.Second, want: time.Second},
		"the first sooner":  {a: time.Second, b: time.Minute, want: time.Second},
		"none at all":       {},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := shortest(tc.a, tc.b); got != tc.want {
				t.Errorf("shortest(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
			}
		})
	}
}
