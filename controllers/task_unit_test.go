package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/metrics"
	"github.com/aihub-dev/hive-operator/test/builder"
)

// These tests drive one reconcile of the task controller at a time against a fake API
// server, for the reads and writes an API server does not fail on demand.

func newUnitTaskReconciler(c client.Client) (*TaskReconciler, *events.FakeRecorder) {
	rec := events.NewFakeRecorder(100)
	return NewTaskReconciler(c, c, rec, TaskOptions{
		Now:            func() time.Time { return unitNow },
		AgentLostGrace: 15 * time.Second, TimeoutGrace: 2 * time.Second, MissingDependencyTimeout: 5 * time.Minute,
		Metrics: prometheusMetrics{},
	}), rec
}

// counterValue reads a counter of the operator's metrics.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	m := &dto.Metric{}
	if err := c.Write(m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func reconcileUnitTask(r *TaskReconciler, name string) (ctrl.Result, error) {
	return r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: "ns", Name: name}})
}

// finishedTask is a task that succeeded at finishedAt.
func finishedTask(b *builder.TaskBuilder, finishedAt time.Time) *swarmv1alpha1.Task {
	t := b.Obj()
	t.Status.Phase, t.Status.Attempt = swarmv1alpha1.TaskSucceeded, 1
	t.Status.FinishedAt = ptrMicro(finishedAt)
	return t
}

func TestTaskControllerReportsWhatItCouldNotRead(t *testing.T) {
	bound := builder.Task("ns", "bound").Hive("h").Bound("agent-1", 1, unitNow).Obj()
	cases := map[string]struct {
		objs  []client.Object
		task  string
		funcs interceptor.Funcs
		want  string
	}{
		"the task": {
			objs: []client.Object{builder.Task("ns", "t").Hive("h").Obj()}, task: "t",
			funcs: refuse("get", &swarmv1alpha1.Task{}, "t", internalError()), want: "reading task",
		},
		"the agent of a bound task": {
			objs: []client.Object{bound}, task: "bound",
			funcs: refuse("get", &corev1.Pod{}, "", internalError()), want: "reading agent pod agent-1",
		},
		"the hive of a queued task": {
			objs: []client.Object{builder.Task("ns", "t").Hive("h").Obj()}, task: "t",
			funcs: refuse("get", &swarmv1alpha1.Hive{}, "", internalError()), want: "reading hive h",
		},
		"a dependency": {
			objs:  []client.Object{builder.Hive("ns", "h").Obj(), builder.Task("ns", "t").Hive("h").DependsOn("up").Obj(), builder.Task("ns", "up").Hive("h").Obj()},
			task:  "t",
			funcs: refuse("get", &swarmv1alpha1.Task{}, "up", internalError()), want: "reading dependency up of task t",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r, _ := newUnitTaskReconciler(fakeClient(tc.funcs, tc.objs...))
			_, err := reconcileUnitTask(r, tc.task)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("reconcile = %v; want an error saying %q", err, tc.want)
			}
		})
	}
}

func TestATaskStatusWriteThatLosesARaceIsDecidedAgain(t *testing.T) {
	cases := map[string]struct {
		answer    error // the API server's answer to the status write; nil carries it out
		wantErr   string
		wantWrite bool
	}{
		"written": {wantWrite: true},
		// The agent finished the task (or the user deleted it) since the cache showed it:
		// the watch delivers the new version, decided afresh.
		"the task changed":      {answer: conflictError("lost")},
		"the task was deleted":  {answer: notFoundError("lost")},
		"the write was refused": {answer: internalError(), wantErr: "writing task status"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			// A hive of its own, so that the loss metric counts only this case.
			hiveLabel := "lost-" + strings.ReplaceAll(name, " ", "-")
			task := builder.Task("ns", "lost").Hive(hiveLabel).Bound("agent-gone", 1, unitNow.Add(-time.Minute)).Obj()
			funcs := interceptor.Funcs{}
			if tc.answer != nil {
				funcs = refuse("status", &swarmv1alpha1.Task{}, "lost", tc.answer)
			}
			c := fakeClient(funcs, task)
			r, rec := newUnitTaskReconciler(c)
			before := getTask(t, c, "lost")
			losses := counterValue(t, metrics.AgentLosses.WithLabelValues("ns", hiveLabel))

			_, err := reconcileUnitTask(r, "lost")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("reconcile = %v; want an error saying %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}

			after := getTask(t, c, "lost")
			evs := recorded(rec)
			counted := counterValue(t, metrics.AgentLosses.WithLabelValues("ns", hiveLabel)) - losses
			if tc.wantWrite {
				c := meta.FindStatusCondition(after.Status.Conditions, swarmv1alpha1.TaskAttemptFailed)
				if after.Status.Phase != swarmv1alpha1.TaskPending || c == nil || c.Reason != swarmv1alpha1.ReasonAgentLost {
					t.Errorf("status %+v; want the task of a lost agent requeued", after.Status)
				}
				if !anyContains(evs, "Warning AgentLost") || counted != 1 {
					t.Errorf("events %q, losses counted %v; want the loss reported once", evs, counted)
				}
				return
			}
			if diff := cmp.Diff(before.Status, after.Status); diff != "" {
				t.Errorf("the status changed although the write did not land (-before +after):\n%s", diff)
			}
			if len(evs) != 0 || counted != 0 {
				t.Errorf("events %q, losses counted %v for a write that did not land", evs, counted)
			}
		})
	}
}

func TestATaskRecreatedUnderTheNameOfAMetDependencyIsNoCycle(t *testing.T) {
	// "report" depended on "fetch", which succeeded; report recorded it and now runs.
	// Then fetch was deleted and created again, depending on report: no cycle, since
	// report no longer waits for anything.
	report := builder.Task("ns", "report").Hive("h").DependsOn("fetch").Bound("agent-1", 1, unitNow).Obj()
	report.Status.Phase = swarmv1alpha1.TaskRunning
	report.Status.Conditions = []metav1.Condition{{
		Type: swarmv1alpha1.TaskDependenciesReady, Status: metav1.ConditionTrue,
		Reason: swarmv1alpha1.ReasonDependenciesSucceeded, LastTransitionTime: metav1.NewTime(unitNow),
	}}
	fetch := builder.Task("ns", "fetch").Hive("h").DependsOn("report").Obj()
	c := fakeClient(interceptor.Funcs{}, builder.Hive("ns", "h").Obj(), report, fetch)
	r, _ := newUnitTaskReconciler(c)
	if _, err := reconcileUnitTask(r, "fetch"); err != nil {
		t.Fatal(err)
	}
	got := getTask(t, c, "fetch")
	cond := meta.FindStatusCondition(got.Status.Conditions, swarmv1alpha1.TaskDependenciesReady)
	if got.Status.Phase != swarmv1alpha1.TaskBlocked || cond == nil || cond.Reason != swarmv1alpha1.ReasonWaitingForDependencies {
		t.Errorf("status %+v; want fetch blocked waiting for report, not failed as a cycle", got.Status)
	}
}
