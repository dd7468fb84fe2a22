package controllers

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/event"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/internal/dispatch"
	"github.com/aihub-dev/hive-operator/internal/lifecycle"
	"github.com/aihub-dev/hive-operator/internal/revision"
	"github.com/aihub-dev/hive-operator/test/builder"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

// These tests drive one reconcile at a time against a fake API server with the cache's
// indexes, for the write paths an API server does not fail on demand.

var unitNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func fakeClient(funcs interceptor.Funcs, objs ...client.Object) client.WithWatch {
	return interceptor.NewClient(fakeAPIServer(objs...), funcs)
}

// fakeAPIServer is a fake client holding objs, with the cache's indexes. Objects get a UID
// as the API server would give them.
func fakeAPIServer(objs ...client.Object) client.WithWatch {
	for _, o := range objs {
		if o.GetUID() == "" {
			o.SetUID(types.UID("uid-" + o.GetNamespace() + "-" + o.GetName()))
		}
	}
	b := fake.NewClientBuilder().WithScheme(testenv.Scheme).
		WithStatusSubresource(&swarmv1alpha1.Task{}, &swarmv1alpha1.Hive{}, &corev1.Pod{}).
		WithObjects(objs...)
	for _, i := range cacheIndexes {
		b = b.WithIndex(i.obj, i.name, i.extract)
	}
	return b.Build()
}

// agentPodOf returns a Ready agent pod of hive built from spec at its revision (with that
// spec's slots and capabilities), as the hive controller makes it.
func agentPodOf(hive, spec *swarmv1alpha1.Hive, name string) *corev1.Pod {
	p := agentpod.Build(spec, revision.Of(&spec.Spec))
	p.GenerateName, p.Name = "", name
	p.OwnerReferences[0].UID = hive.UID
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	return p
}

func newUnitDispatcher(c client.Client) *Dispatcher {
	return NewDispatcher(c, c, dispatch.NewLedger(), DispatchOptions{Now: func() time.Time { return unitNow }, BindConcurrency: 1})
}

func reconcileHive(t *testing.T, d *Dispatcher, hive *swarmv1alpha1.Hive) (ctrl.Result, error) {
	t.Helper()
	return d.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(hive)})
}

func getTask(t *testing.T, c client.Client, name string) *swarmv1alpha1.Task {
	t.Helper()
	task := &swarmv1alpha1.Task{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "ns", Name: name}, task); err != nil {
		t.Fatal(err)
	}
	return task
}

func unitHive() *swarmv1alpha1.Hive {
	h := builder.Hive("ns", "h").Concurrency(1).Obj()
	h.UID = "hive-uid"
	return h
}

func TestDispatcherRetriesABindConflictSoon(t *testing.T) {
	hive := unitHive()
	var conflicts atomic.Int32
	c := fakeClient(interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			if conflicts.Add(1) == 1 {
				// Someone changed the task in a way no watch event of ours reports.
				return apierrors.NewConflict(schema.GroupResource{Group: "swarm.aihub.dev", Resource: "tasks"}, obj.GetName(), errors.New("the object has been modified"))
			}
			return c.SubResource(sub).Patch(ctx, obj, p, opts...)
		},
	}, hive, agentPodOf(hive, hive, "agent-1"), builder.Task("ns", "t").Hive("h").Obj())
	d := newUnitDispatcher(c)
	res, err := reconcileHive(t, d, hive)
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter <= 0 || res.RequeueAfter > time.Second {
		t.Fatalf("after a bind conflict the dispatcher comes back after %v; want soon", res.RequeueAfter)
	}
	if _, err := reconcileHive(t, d, hive); err != nil {
		t.Fatal(err)
	}
	if got := getTask(t, c, "t"); got.Status.Agent != "agent-1" || got.Status.Attempt != 1 {
		t.Errorf("the retried bind did not land: %+v", got.Status)
	}
}

func TestDispatcherKeepsTheSlotOfABindWhoseAnswerWasLost(t *testing.T) {
	lost := errors.New("http2: client connection lost")
	cases := map[string]struct {
		applied, readFails bool
		wantBound, wantErr bool
		wantHeld           bool
	}{
		"the bind went through":             {applied: true, wantBound: true, wantHeld: true},
		"the bind did not go through":       {wantErr: true},
		"the API server cannot tell at all": {readFails: true, wantErr: true, wantHeld: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			hive := unitHive()
			var patched, readFails atomic.Bool
			readFails.Store(tc.readFails)
			base := fakeAPIServer(hive, agentPodOf(hive, hive, "agent-1"), builder.Task("ns", "t").Hive("h").Obj())
			c := interceptor.NewClient(base, interceptor.Funcs{
				SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
					if patched.Swap(true) {
						return c.SubResource(sub).Patch(ctx, obj, p, opts...)
					}
					if tc.applied {
						if err := c.SubResource(sub).Patch(ctx, obj, p, opts...); err != nil {
							return err
						}
					}
					return lost
				},
			})
			apiReader := interceptor.NewClient(base, interceptor.Funcs{
				Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
					if readFails.Load() {
						return errors.New("connection refused")
					}
					return c.Get(ctx, key, obj, opts...)
				},
			})
			d := newUnitDispatcher(c)
			d.apiReader = apiReader
			_, err := reconcileHive(t, d, hive)
			task := getTask(t, c, "t")
			if (err != nil) != tc.wantErr || (task.Status.Agent != "") != tc.wantBound {
				t.Errorf("reconcile error %v, task bound to %q", err, task.Status.Agent)
			}
			if held := d.ledger.Holds(task.UID); held != tc.wantHeld {
				t.Errorf("ledger holds the bind: %v, want %v", held, tc.wantHeld)
			}
			if tc.readFails {
				// Once the API server answers, the doubt is settled: the task never
				// changed, so the bind did not happen and the slot is free again.
				readFails.Store(false)
				if _, err := reconcileHive(t, d, hive); err != nil {
					t.Fatal(err)
				}
				if got := getTask(t, c, "t"); got.Status.Agent != "agent-1" || got.Status.Attempt != 1 {
					t.Errorf("after the doubt was settled: %+v", got.Status)
				}
			}
		})
	}
}

func TestDispatcherUsesEveryRevisionWithItsOwnSlotsAndCapabilities(t *testing.T) {
	// A rollout is under way: the old revision ran 2 slots and offered cpu; the new one runs
	// 3 and offers gpu too. Both kinds of agents are ready.
	old := builder.Hive("ns", "h").Concurrency(2).Capabilities("cpu").Obj()
	hive := builder.Hive("ns", "h").Concurrency(3).Capabilities("cpu", "gpu").Image("example.com/agent:v2").Obj()
	hive.UID, old.UID = "hive-uid", "hive-uid"
	objs := []client.Object{hive, agentPodOf(hive, old, "old-1"), agentPodOf(hive, old, "old-2"), agentPodOf(hive, hive, "new-1")}
	for _, name := range []string{"p1", "p2", "p3", "p4", "p5", "p6", "p7"} {
		objs = append(objs, builder.Task("ns", name).Hive("h").Obj())
	}
	objs = append(objs, builder.Task("ns", "g1").Hive("h").Needs("gpu").Priority(10).Obj())
	c := fakeClient(interceptor.Funcs{}, objs...)
	if _, err := reconcileHive(t, newUnitDispatcher(c), hive); err != nil {
		t.Fatal(err)
	}
	list := &swarmv1alpha1.TaskList{}
	if err := c.List(context.Background(), list); err != nil {
		t.Fatal(err)
	}
	perAgent := map[string]int{}
	for _, task := range list.Items {
		if task.Name == "g1" && task.Status.Agent != "new-1" {
			t.Errorf("the task needing gpu went to %q, which does not offer it", task.Status.Agent)
		}
		if task.Status.Agent != "" {
			perAgent[task.Status.Agent]++
		}
	}
	if diff := cmp.Diff(map[string]int{"old-1": 2, "old-2": 2, "new-1": 3}, perAgent); diff != "" {
		t.Errorf("tasks per agent (-want +got):\n%s", diff)
	}
}

func TestADependentRecordsItsDependenciesMetSoItsHiveWakes(t *testing.T) {
	// The dependency ran in another hive and finished before the dependent was first
	// looked at: nothing about the dependent's own hive changed.
	dep := builder.Task("ns", "fetch").Hive("h1").Obj()
	dep.Status.Phase = swarmv1alpha1.TaskSucceeded
	dependent := builder.Task("ns", "summarise").Hive("h2").DependsOn("fetch").Obj()
	c := fakeClient(interceptor.Funcs{}, builder.Hive("ns", "h2").Obj(), dep, dependent)
	r := NewTaskReconciler(c, c, events.NewFakeRecorder(10), TaskOptions{Now: func() time.Time { return unitNow },
		AgentLostGrace: time.Second, TimeoutGrace: time.Second, MissingDependencyTimeout: time.Minute})
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(dependent)}); err != nil {
		t.Fatal(err)
	}
	got := getTask(t, c, "summarise")
	if c := meta.FindStatusCondition(got.Status.Conditions, swarmv1alpha1.TaskDependenciesReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Fatalf("the dependent did not record its dependencies met: %+v", got.Status)
	}
	// That write is what wakes the dependent's hive in the dispatcher.
	if !slotOrQueueChanged().Update(event.UpdateEvent{ObjectOld: dependent, ObjectNew: got}) {
		t.Error("the dispatcher ignores a dependent whose dependencies were recorded met")
	}
	if ok, _ := dependentDispatchable(dependent); ok {
		t.Error("a dependent whose dependencies are not recorded met is dispatchable")
	}
	if ok, _ := dependentDispatchable(got); !ok {
		t.Error("a dependent whose dependencies are recorded met is not dispatchable")
	}
}

func dependentDispatchable(t *swarmv1alpha1.Task) (bool, time.Duration) {
	return lifecycle.Dispatchable(t, nil, unitNow, time.Time{})
}

func TestCountLoad(t *testing.T) {
	task := func(name string, mutate func(*swarmv1alpha1.Task)) swarmv1alpha1.Task {
		tk := builder.Task("ns", name).Hive("h").Obj()
		tk.UID = types.UID("uid-" + name)
		if mutate != nil {
			mutate(tk)
		}
		return *tk
	}
	bound := func(agent string) func(*swarmv1alpha1.Task) {
		return func(t *swarmv1alpha1.Task) { t.Status.Phase, t.Status.Agent = swarmv1alpha1.TaskRunning, agent }
	}
	tasks := []swarmv1alpha1.Task{
		task("queued", nil),
		task("queued-2", nil),
		task("unschedulable", func(t *swarmv1alpha1.Task) { t.Spec.RequiredCapabilities = []string{"gpu"} }),
		task("backing-off", func(t *swarmv1alpha1.Task) { t.Status.NotBefore = ptrMicro(unitNow.Add(30 * time.Second)) }),
		task("blocked", func(t *swarmv1alpha1.Task) { t.Status.Phase = swarmv1alpha1.TaskBlocked }),
		task("on-a", bound("a")),
	}
	// A bind in flight the cache does not show yet: queued-2 to agent b.
	inFlight := map[string][]types.UID{"ns/b": {"uid-queued-2"}, "ns/a": {"uid-on-a"}}
	l := countLoad(tasks, inFlight, "ns", []string{"cpu"}, unitNow)
	if diff := cmp.Diff(map[string]int{"a": 1, "b": 1}, l.busy); diff != "" {
		t.Errorf("busy (-want +got):\n%s", diff)
	}
	if l.queued != 1 || l.running != 2 || l.retryIn != 30*time.Second {
		t.Errorf("queued %d, running %d, retryIn %v; want 1, 2, 30s (unschedulable, backing off and blocked tasks are no load)", l.queued, l.running, l.retryIn)
	}
}

func ptrMicro(t time.Time) *metav1.MicroTime {
	m := metav1.NewMicroTime(t)
	return &m
}

func TestAgentSubjectsKeepTheAccountsOfPodsStillThere(t *testing.T) {
	hive := builder.Hive("ns", "h").ServiceAccount("new-sa").Obj()
	oldPod := &corev1.Pod{Spec: corev1.PodSpec{ServiceAccountName: "old-sa"}}
	newPod := &corev1.Pod{Spec: corev1.PodSpec{ServiceAccountName: "new-sa"}}
	var names []string
	for _, s := range agentSubjects(hive, "new-sa", []*corev1.Pod{newPod, oldPod, newPod}) {
		names = append(names, s.Namespace+"/"+s.Name)
	}
	if got := strings.Join(names, ","); got != "ns/new-sa,ns/old-sa" {
		t.Errorf("subjects %s", got)
	}
}
