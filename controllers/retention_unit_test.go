package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/lifecycle"
	"github.com/aihub-dev/hive-operator/internal/metrics"
	"github.com/aihub-dev/hive-operator/test/builder"
)

// These tests drive one reconcile of the retention controller at a time against a fake API
// server; its watch and sweeps run against a real one (test/integration).

func newUnitRetention(c client.WithWatch) *RetentionReconciler {
	return NewRetentionReconciler(c, c, c, RetentionOptions{Now: func() time.Time { return unitNow }, SweepInterval: 5 * time.Minute})
}

func reconcileRetention(r *RetentionReconciler, name string) (ctrl.Result, error) {
	return r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: "ns", Name: name}})
}

// withRetention is a hive keeping its finished tasks for ttl.
func withRetention(ttl time.Duration) *swarmv1alpha1.Hive {
	h := builder.Hive("ns", "h").Obj()
	h.Spec.TaskRetention = &swarmv1alpha1.TaskRetentionSpec{TTLSecondsAfterFinished: ptr.To(int32(ttl.Seconds()))}
	return h
}

func TestAFinishedTaskIsKeptForItsTTLElseItsHivesRetention(t *testing.T) {
	cases := map[string]struct {
		objs        []client.Object
		wantGone    bool
		wantRequeue time.Duration
	}{
		"its own TTL has passed": {
			objs:     []client.Object{finishedTask(builder.Task("ns", "t").Hive("h").TTL(time.Minute), unitNow.Add(-2*time.Minute))},
			wantGone: true,
		},
		"its own TTL comes first": {
			objs:        []client.Object{withRetention(time.Second), finishedTask(builder.Task("ns", "t").Hive("h").TTL(time.Minute), unitNow.Add(-30*time.Second))},
			wantRequeue: 30 * time.Second,
		},
		"its hive's retention has passed": {
			objs:     []client.Object{withRetention(time.Minute), finishedTask(builder.Task("ns", "t").Hive("h"), unitNow.Add(-2*time.Minute))},
			wantGone: true,
		},
		"the default retention of a hive that is gone": {
			objs:        []client.Object{finishedTask(builder.Task("ns", "t").Hive("gone"), unitNow.Add(-30*time.Minute))},
			wantRequeue: 0, // due in 30 minutes, past the next sweep, which looks again
		},
		"the default retention has passed": {
			objs:     []client.Object{finishedTask(builder.Task("ns", "t").Hive("gone"), unitNow.Add(-swarmv1alpha1.DefaultTaskRetention))},
			wantGone: true,
		},
		"a task unfinished tasks depend on is kept": {
			objs: []client.Object{
				finishedTask(builder.Task("ns", "t").Hive("h").TTL(time.Minute), unitNow.Add(-time.Hour)),
				builder.Task("ns", "dependent").Hive("h").DependsOn("t").Obj(),
			},
			wantRequeue: lifecycle.DependentsRecheck,
		},
		"a task that has not finished is not the retention's": {
			objs: []client.Object{builder.Task("ns", "t").Hive("h").TTL(0).Obj()},
		},
		"a task that is gone": {},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := fakeClient(interceptor.Funcs{}, tc.objs...)
			res, err := reconcileRetention(newUnitRetention(c), "t")
			if err != nil {
				t.Fatal(err)
			}
			if res.RequeueAfter != tc.wantRequeue {
				t.Errorf("requeue after %v, want %v", res.RequeueAfter, tc.wantRequeue)
			}
			err = c.Get(context.Background(), client.ObjectKey{Namespace: "ns", Name: "t"}, &swarmv1alpha1.Task{})
			if gone := apierrors.IsNotFound(err); gone != tc.wantGone && len(tc.objs) > 0 {
				t.Errorf("task gone: %v, want %v", gone, tc.wantGone)
			}
		})
	}
}

func TestAnExpiredTaskIsDeletedUnlessItChangedMeanwhile(t *testing.T) {
	cases := map[string]struct {
		answer      error // the API server's answer to the delete; nil carries it out
		wantGone    bool
		wantRequeue time.Duration
		wantErr     string
	}{
		"deleted":                 {wantGone: true},
		"deleted by someone else": {answer: notFoundError("t")},
		// A task that changed (its TTL edited, say) is decided again from its new version.
		"changed since it was read": {answer: conflictError("t"), wantRequeue: time.Second},
		"refused":                   {answer: internalError(), wantErr: "deleting finished task"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			funcs := interceptor.Funcs{}
			if tc.answer != nil {
				funcs = refuse("delete", &swarmv1alpha1.Task{}, "t", tc.answer)
			}
			c := fakeClient(funcs, finishedTask(builder.Task("ns", "t").Hive("h").TTL(time.Minute), unitNow.Add(-time.Hour)))
			res, err := reconcileRetention(newUnitRetention(c), "t")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("reconcile = %v; want an error saying %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if res.RequeueAfter != tc.wantRequeue {
				t.Errorf("requeue after %v, want %v", res.RequeueAfter, tc.wantRequeue)
			}
			err = c.Get(context.Background(), client.ObjectKey{Namespace: "ns", Name: "t"}, &swarmv1alpha1.Task{})
			if gone := apierrors.IsNotFound(err); gone != tc.wantGone {
				t.Errorf("task gone: %v, want %v", gone, tc.wantGone)
			}
		})
	}
}

func TestRetentionReportsWhatItCouldNotRead(t *testing.T) {
	expired := finishedTask(builder.Task("ns", "t").Hive("h").TTL(time.Minute), unitNow.Add(-time.Hour))
	cases := map[string]struct {
		funcs interceptor.Funcs
		want  string
	}{
		"the task":       {funcs: refuse("get", &swarmv1alpha1.Task{}, "t", internalError()), want: "reading finished task"},
		"its hive":       {funcs: refuse("get", &swarmv1alpha1.Hive{}, "", internalError()), want: "reading hive h"},
		"its dependents": {funcs: refuse("list", &swarmv1alpha1.TaskList{}, "", internalError()), want: "listing the tasks that depend on t"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := reconcileRetention(newUnitRetention(fakeClient(tc.funcs, expired.DeepCopy())), "t")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("reconcile = %v; want an error saying %q", err, tc.want)
			}
		})
	}
}

func TestTheNewestFinishedTasksAreKeptAndTheFirstFinishedFallOut(t *testing.T) {
	kept := &newestFinished{limit: 2}
	var out []string
	for i, name := range []string{"c", "a", "d", "b", "e"} {
		// finished at: c 3, a 1, d 4, b 2, e 0 (minutes after the epoch)
		at := map[string]time.Duration{"a": 1, "b": 2, "c": 3, "d": 4, "e": 0}[name] * time.Minute
		if r, over := kept.add(finishedTask(builder.Task("ns", name).Hive("h"), unitNow.Add(at))); over {
			out = append(out, r.name)
		} else if i >= 2 {
			t.Fatalf("adding the %d-th task kept more than the limit", i+1)
		}
	}
	if diff := cmp.Diff([]string{"a", "b", "e"}, out); diff != "" {
		t.Errorf("fell out (-want +got):\n%s", diff)
	}
	var names []string
	for _, r := range kept.heap {
		names = append(names, r.name)
	}
	if diff := cmp.Diff([]string{"c", "d"}, slices.Sorted(slices.Values(names))); diff != "" {
		t.Errorf("kept (-want +got):\n%s", diff)
	}
}

func TestFinishedTasksAreCountedByOutcome(t *testing.T) {
	task := finishedTask(builder.Task("ns", "t").Hive("outcomes").Bound("agent-1", 1, unitNow.Add(-time.Minute)), unitNow)
	before := counterValue(t, metrics.Outcomes.WithLabelValues("ns", "outcomes", string(swarmv1alpha1.TaskSucceeded)))
	runs := samples(t, metrics.RunTime.WithLabelValues("ns", "outcomes", string(swarmv1alpha1.TaskSucceeded)))
	prometheusMetrics{}.Finished(task)
	if got := counterValue(t, metrics.Outcomes.WithLabelValues("ns", "outcomes", string(swarmv1alpha1.TaskSucceeded))) - before; got != 1 {
		t.Errorf("outcomes counted %v, want 1", got)
	}
	if got := samples(t, metrics.RunTime.WithLabelValues("ns", "outcomes", string(swarmv1alpha1.TaskSucceeded))) - runs; got != 1 {
		t.Errorf("run times observed %d, want 1", got)
	}
}

// serverSideSelection lets the fake API server answer the sweep's list: it drops the field
// selector on status.phase, which the fake cannot evaluate, and keeps the finished tasks as
// the API server would.
func serverSideSelection(listErr error) interceptor.Funcs {
	return interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
		if listErr != nil {
			return listErr
		}
		lo := (&client.ListOptions{}).ApplyOptions(opts)
		if lo.FieldSelector == nil || lo.FieldSelector.String() != swarmv1alpha1.FinishedTasks().String() {
			return c.List(ctx, list, opts...)
		}
		if err := c.List(ctx, list, client.InNamespace(lo.Namespace)); err != nil {
			return err
		}
		tasks := list.(*swarmv1alpha1.TaskList)
		tasks.Items = slices.DeleteFunc(tasks.Items, func(t swarmv1alpha1.Task) bool { return !t.Status.Phase.Finished() })
		return nil
	}}
}

func TestASweepDeletesWhatIsDueAndPastTheCapAndSchedulesWhatIsDueSoon(t *testing.T) {
	capped := builder.Hive("ns", "capped").Obj()
	capped.Spec.TaskRetention = &swarmv1alpha1.TaskRetentionSpec{TTLSecondsAfterFinished: ptr.To[int32](3600), MaxFinishedTasks: ptr.To[int32](2)}
	objs := []client.Object{
		capped,
		withRetention(time.Hour),
		finishedTask(builder.Task("ns", "expired").Hive("h").TTL(time.Minute), unitNow.Add(-2*time.Minute)),
		finishedTask(builder.Task("ns", "due-soon").Hive("h").TTL(time.Minute), unitNow.Add(-30*time.Second)),
		finishedTask(builder.Task("ns", "due-later").Hive("h"), unitNow),
		builder.Task("ns", "queued").Hive("h").TTL(0).Obj(),
		finishedTask(builder.Task("ns", "capped-1").Hive("capped"), unitNow.Add(-3*time.Minute)),
		finishedTask(builder.Task("ns", "capped-2").Hive("capped"), unitNow.Add(-2*time.Minute)),
		finishedTask(builder.Task("ns", "capped-3").Hive("capped"), unitNow.Add(-time.Minute)),
		finishedTask(builder.Task("ns", "capped-4").Hive("capped"), unitNow),
		// The oldest of the capped hive, but a task that has not finished depends on it.
		finishedTask(builder.Task("ns", "capped-0").Hive("capped"), unitNow.Add(-time.Hour)),
		builder.Task("ns", "dependent").Hive("capped").DependsOn("capped-0").Obj(),
	}
	c := fakeClient(serverSideSelection(nil), objs...)
	r := newUnitRetention(c)
	q := &recordingQueue{TypedRateLimitingInterface: newQueue(t)}
	if err := r.sweep(context.Background(), q, "ns"); err != nil {
		t.Fatal(err)
	}
	want := []string{"ns/capped-0", "ns/capped-3", "ns/capped-4", "ns/dependent", "ns/due-later", "ns/due-soon", "ns/queued"}
	if diff := cmp.Diff(want, taskKeys(t, c)); diff != "" {
		t.Errorf("kept (-want +got):\n%s", diff)
	}
	// capped-0 looks again soon for its dependent, which may have finished unseen by the cache.
	if diff := cmp.Diff(map[string]time.Duration{"ns/due-soon": 30 * time.Second, "ns/capped-0": lifecycle.DependentsRecheck}, q.after); diff != "" {
		t.Errorf("scheduled (-want +got):\n%s", diff)
	}

	if err := r.sweep(context.Background(), q, "ns"); err != nil {
		t.Fatal(err)
	}
	c = fakeClient(serverSideSelection(internalError()), objs...)
	if err := newUnitRetention(c).sweep(context.Background(), q, "ns"); err == nil || !strings.Contains(err.Error(), "listing finished tasks") {
		t.Errorf("sweep = %v; want the list's error", err)
	}
}

// taskKeys lists the tasks that remain, as sorted namespace/name keys.
func taskKeys(t *testing.T, c client.Client) []string {
	t.Helper()
	list := &swarmv1alpha1.TaskList{}
	if err := c.List(context.Background(), list); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(list.Items))
	for _, task := range list.Items {
		keys = append(keys, task.Namespace+"/"+task.Name)
	}
	slices.Sort(keys)
	return keys
}

// recordingQueue records the requests added for later, and when.
type recordingQueue struct {
	workqueue.TypedRateLimitingInterface[reconcile.Request]
	after map[string]time.Duration
}

func (q *recordingQueue) AddAfter(req reconcile.Request, d time.Duration) {
	if q.after == nil {
		q.after = map[string]time.Duration{}
	}
	q.after[req.String()] = d
}

// An operator serving every namespace sweeps them together: hives of the same name in two
// namespaces keep their own retention and cap.
func TestASweepOfEveryNamespaceTellsSameNamedHivesApart(t *testing.T) {
	short := builder.Hive("a", "h").Obj()
	short.Spec.TaskRetention = &swarmv1alpha1.TaskRetentionSpec{TTLSecondsAfterFinished: ptr.To[int32](60), MaxFinishedTasks: ptr.To[int32](1)}
	long := builder.Hive("b", "h").Obj()
	long.Spec.TaskRetention = &swarmv1alpha1.TaskRetentionSpec{TTLSecondsAfterFinished: ptr.To[int32](3600)}
	objs := []client.Object{short, long}
	for _, ns := range []string{"a", "b"} {
		for i, age := range []time.Duration{2 * time.Minute, 3 * time.Minute} {
			objs = append(objs, finishedTask(builder.Task(ns, fmt.Sprintf("old-%d", i)).Hive("h"), unitNow.Add(-age)))
		}
		objs = append(objs, finishedTask(builder.Task(ns, "new").Hive("h"), unitNow))
	}
	c := fakeClient(serverSideSelection(nil), objs...)
	if err := newUnitRetention(c).sweep(context.Background(), &recordingQueue{TypedRateLimitingInterface: newQueue(t)}, metav1.NamespaceAll); err != nil {
		t.Fatal(err)
	}
	// a: past its minute, and capped at 1; b: kept for an hour, uncapped.
	if diff := cmp.Diff([]string{"a/new", "b/new", "b/old-0", "b/old-1"}, taskKeys(t, c)); diff != "" {
		t.Errorf("kept (-want +got):\n%s", diff)
	}
}
