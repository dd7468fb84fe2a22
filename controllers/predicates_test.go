package controllers

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/test/builder"
)

// These tests pin which watch events wake which controller, and for what: an event
// filtered out by mistake is a reconcile that never happens.

func podWith(mutate func(*corev1.Pod)) *corev1.Pod {
	hive := unitHive()
	p := agentPodOf(hive, hive, "agent-1")
	if mutate != nil {
		mutate(p)
	}
	return p
}

func taskWith(mutate func(*swarmv1alpha1.Task)) *swarmv1alpha1.Task {
	t := builder.Task("ns", "t").Hive("h").Obj()
	if mutate != nil {
		mutate(t)
	}
	return t
}

func notReady(p *corev1.Pod) { p.Status.Conditions = nil }

func TestPredicatesPassTheUpdatesThatMatter(t *testing.T) {
	bound := func(phase swarmv1alpha1.TaskPhase, agent string) func(*swarmv1alpha1.Task) {
		return func(t *swarmv1alpha1.Task) { t.Status.Phase, t.Status.Agent = phase, agent }
	}
	relabel := func(o client.Object) { o.SetLabels(map[string]string{"team": "search"}) }
	cases := map[string]struct {
		predicate predicate.Predicate
		old, new  client.Object
		want      bool
	}{
		// The task controller: agents that may have become lost.
		"health: readiness lost":     {predicate: agentHealthChanged(), old: podWith(nil), new: podWith(notReady), want: true},
		"health: readiness regained": {predicate: agentHealthChanged(), old: podWith(notReady), new: podWith(nil), want: true},
		"health: the pod stopped":    {predicate: agentHealthChanged(), old: podWith(nil), new: podWith(func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }), want: true},
		"health: the pod is deleted": {predicate: agentHealthChanged(), old: podWith(nil), new: podWith(func(p *corev1.Pod) { p.DeletionTimestamp = ptr.To(metav1.NewTime(unitNow)) }), want: true},
		"health: a label changed":    {predicate: agentHealthChanged(), old: podWith(nil), new: podWith(func(p *corev1.Pod) { relabel(p) })},
		"health: not a pod":          {predicate: agentHealthChanged(), old: taskWith(nil), new: taskWith(bound(swarmv1alpha1.TaskRunning, "a"))},
		// The cache sees a task that finishes leave it (a delete event): no update matters.
		"dependency: a task succeeded": {predicate: dependencyChanged(), old: taskWith(bound(swarmv1alpha1.TaskRunning, "a")), new: taskWith(bound(swarmv1alpha1.TaskSucceeded, "a"))},
		"dependency: a task started":   {predicate: dependencyChanged(), old: taskWith(bound(swarmv1alpha1.TaskAssigned, "a")), new: taskWith(bound(swarmv1alpha1.TaskRunning, "a"))},
		"dependency: a finished task relabelled": {
			predicate: dependencyChanged(), old: taskWith(bound(swarmv1alpha1.TaskFailed, "a")), new: taskWith(func(t *swarmv1alpha1.Task) { bound(swarmv1alpha1.TaskFailed, "a")(t); relabel(t) }),
		},
		// The dispatcher: slots freed, tasks queued.
		"slots: a task started on its agent": {predicate: slotOrQueueChanged(), old: taskWith(bound(swarmv1alpha1.TaskAssigned, "a")), new: taskWith(bound(swarmv1alpha1.TaskRunning, "a"))},
		"slots: a task finished":             {predicate: slotOrQueueChanged(), old: taskWith(bound(swarmv1alpha1.TaskRunning, "a")), new: taskWith(bound(swarmv1alpha1.TaskSucceeded, "a")), want: true},
		"slots: a task moved to another agent": {
			predicate: slotOrQueueChanged(), old: taskWith(bound(swarmv1alpha1.TaskRunning, "a")), new: taskWith(bound(swarmv1alpha1.TaskAssigned, "b")), want: true,
		},
		"slots: a queued task cancelled": {predicate: slotOrQueueChanged(), old: taskWith(nil), new: taskWith(func(t *swarmv1alpha1.Task) { t.Spec.Cancel = true }), want: true},
		"slots: a backoff changed": {
			predicate: slotOrQueueChanged(), old: taskWith(nil), new: taskWith(func(t *swarmv1alpha1.Task) { t.Status.NotBefore = ptrMicro(unitNow) }), want: true,
		},
		"slots: a queued task relabelled": {predicate: slotOrQueueChanged(), old: taskWith(nil), new: taskWith(func(t *swarmv1alpha1.Task) { relabel(t) })},
		"slots: not a task":               {predicate: slotOrQueueChanged(), old: podWith(nil), new: podWith(notReady)},
		// The hive controller: counts and agents becoming idle.
		"binding: a task bound":     {predicate: taskBindingChanged(), old: taskWith(nil), new: taskWith(bound(swarmv1alpha1.TaskAssigned, "a")), want: true},
		"binding: a task rebound":   {predicate: taskBindingChanged(), old: taskWith(bound(swarmv1alpha1.TaskRunning, "a")), new: taskWith(bound(swarmv1alpha1.TaskRunning, "b")), want: true},
		"binding: a task cancelled": {predicate: taskBindingChanged(), old: taskWith(nil), new: taskWith(func(t *swarmv1alpha1.Task) { t.Spec.Cancel = true }), want: true},
		"binding: a message changed": {
			predicate: taskBindingChanged(), old: taskWith(nil), new: taskWith(func(t *swarmv1alpha1.Task) { t.Status.Message = "waiting" }),
		},
		// The dispatcher: agents that can or cannot take tasks.
		"availability: an agent became ready": {predicate: agentAvailabilityChanged(), old: podWith(notReady), new: podWith(nil), want: true},
		"availability: an agent is draining": {
			predicate: agentAvailabilityChanged(), old: podWith(nil), new: podWith(func(p *corev1.Pod) { drainingSince(p, unitNow) }), want: true,
		},
		"availability: an agent of another revision": {
			predicate: agentAvailabilityChanged(), old: podWith(nil), new: podWith(func(p *corev1.Pod) { p.Labels[swarmv1alpha1.LabelRevision] = "other" }), want: true,
		},
		"availability: an unrelated label": {
			predicate: agentAvailabilityChanged(), old: podWith(nil), new: podWith(func(p *corev1.Pod) { p.Labels["team"] = "search" }),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := tc.predicate.Update(event.UpdateEvent{ObjectOld: tc.old, ObjectNew: tc.new}); got != tc.want {
				t.Errorf("Update passes: %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPredicatesPassCreationsAndDeletions(t *testing.T) {
	pod, task := podWith(nil), taskWith(nil)
	cases := map[string]struct {
		predicate predicate.Predicate
		obj       client.Object
		// A new pod cannot have lost its agent: only its later changes matter.
		wantCreate bool
	}{
		"agent health":       {predicate: agentHealthChanged(), obj: pod},
		"dependencies":       {predicate: dependencyChanged(), obj: task, wantCreate: true},
		"slots and queue":    {predicate: slotOrQueueChanged(), obj: task, wantCreate: true},
		"bindings":           {predicate: taskBindingChanged(), obj: task, wantCreate: true},
		"agent availability": {predicate: agentAvailabilityChanged(), obj: pod, wantCreate: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := tc.predicate.Create(event.CreateEvent{Object: tc.obj}); got != tc.wantCreate {
				t.Errorf("Create passes: %v, want %v", got, tc.wantCreate)
			}
			if !tc.predicate.Delete(event.DeleteEvent{Object: tc.obj}) {
				t.Error("Delete is filtered out")
			}

			if !tc.predicate.Generic(event.GenericEvent{Object: tc.obj}) {
				t.Error("Generic is filtered out")
			}
		})
	}
}

// The tasks of the initial list are all reconciled once synced, from a cache that holds
// them all: none of them appears to a dependent that has looked before.
func TestTheInitialListWakesNoDependents(t *testing.T) {
	if dependencyChanged().Create(event.CreateEvent{Object: taskWith(nil), IsInInitialList: true}) {
		t.Error("a create of the initial list passes")
	}
}

func newQueue(t *testing.T) workqueue.TypedRateLimitingInterface[reconcile.Request] {
	t.Helper()
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	t.Cleanup(q.ShutDown)
	return q
}

// queued drains the requests queued so far, sorted.
func queued(q workqueue.TypedRateLimitingInterface[reconcile.Request]) []string {
	var out []string
	for q.Len() > 0 {
		r, _ := q.Get()
		out = append(out, r.String())
		q.Done(r)
	}
	slices.Sort(out)
	return out
}

func TestEventHandlersQueueTheHiveOfWhatChanged(t *testing.T) {
	hive := unitHive()
	controlled := agentPodOf(hive, hive, "agent-1")
	orphan := orphanOf(hive, "orphan")
	foreign := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"}}
	task := builder.Task("ns", "t").Hive("h").Obj()
	hiveless := builder.Task("ns", "t").Obj()
	r, _ := newUnitHiveReconciler(fakeAPIServer(), nil)
	d := newUnitDispatcher(fakeAPIServer())
	cases := map[string]struct {
		handler handler.TypedEventHandler[client.Object, reconcile.Request]
		obj     client.Object
		want    []string
		// noGeneric: the handler takes no generic events (the hive controller counts tasks
		// from their creations, updates and deletions).
		noGeneric bool
	}{
		"hive controller: a controlled pod": {handler: &podHandler{r: r}, obj: controlled, want: []string{"ns/h"}},
		// An orphan carrying the label is the hive's to adopt.
		"hive controller: an orphan with the hive's label": {handler: &podHandler{r: r}, obj: orphan, want: []string{"ns/h"}},
		"hive controller: another pod":                     {handler: &podHandler{r: r}, obj: foreign},
		"hive controller: not a pod":                       {handler: &podHandler{r: r}, obj: task},
		"hive controller: a task":                          {handler: delayedTaskHandler(0), obj: task, want: []string{"ns/h"}, noGeneric: true},
		"hive controller: a task of no hive":               {handler: delayedTaskHandler(0), obj: hiveless},
		"dispatcher: a task":                               {handler: d.taskHandler(), obj: task, want: []string{"ns/h"}},
		"dispatcher: a controlled pod":                     {handler: handler.EnqueueRequestsFromMapFunc(podToHive), obj: controlled, want: []string{"ns/h"}},
		"dispatcher: an orphan":                            {handler: handler.EnqueueRequestsFromMapFunc(podToHive), obj: orphan},
		"dispatcher: not a pod":                            {handler: handler.EnqueueRequestsFromMapFunc(podToHive), obj: task},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]
			sends := map[string]func(queue){
				"create": func(q queue) { tc.handler.Create(ctx, event.CreateEvent{Object: tc.obj}, q) },
				"update": func(q queue) { tc.handler.Update(ctx, event.UpdateEvent{ObjectOld: tc.obj, ObjectNew: tc.obj}, q) },
				"delete": func(q queue) { tc.handler.Delete(ctx, event.DeleteEvent{Object: tc.obj}, q) },
			}
			if !tc.noGeneric {
				sends["generic"] = func(q queue) { tc.handler.Generic(ctx, event.GenericEvent{Object: tc.obj}, q) }
			}
			for kind, send := range sends {
				q := newQueue(t)
				send(q)
				if diff := cmp.Diff(tc.want, queued(q)); diff != "" {
					t.Errorf("%s: queued (-want +got):\n%s", kind, diff)
				}
			}
		})
	}
}

func TestTheDispatcherNotesWhenItFirstSawANewTask(t *testing.T) {
	// Creation timestamps have whole seconds: a task seen at creation waits from then.
	d := newUnitDispatcher(fakeAPIServer())
	fresh := builder.Task("ns", "fresh").Hive("h").Obj()
	fresh.UID, fresh.CreationTimestamp = "fresh-uid", metav1.NewTime(unitNow.Add(-500*time.Millisecond))
	old := builder.Task("ns", "old").Hive("h").Obj()
	old.UID, old.CreationTimestamp = "old-uid", metav1.NewTime(unitNow.Add(-time.Hour))
	q := newQueue(t)
	for _, task := range []*swarmv1alpha1.Task{fresh, old} {
		d.taskHandler().Create(context.Background(), event.CreateEvent{Object: task}, q)
	}
	if got := d.queuedSince(fresh); !got.Equal(unitNow) {
		t.Errorf("a task created just now is queued since %v, want when the dispatcher saw it, %v", got, unitNow)
	}
	if got := d.queuedSince(old); !got.Equal(old.CreationTimestamp.Time) {
		t.Errorf("a task from before the dispatcher started is queued since %v, want its creation %v", got, old.CreationTimestamp.Time)
	}
	// Once it finished without a bind, or was deleted, it is forgotten.
	cancelled := fresh.DeepCopy()
	cancelled.Status.Phase = swarmv1alpha1.TaskCancelled
	d.taskHandler().Update(context.Background(), event.UpdateEvent{ObjectOld: fresh, ObjectNew: cancelled}, q)
	if got := d.queuedSince(fresh); !got.Equal(fresh.CreationTimestamp.Time) {
		t.Errorf("a cancelled task is still remembered as seen at %v", got)
	}
}

func TestTaskMappingsFindTheTasksAnEventConcerns(t *testing.T) {
	tasks := []client.Object{
		builder.Task("ns", "queued").Hive("h").Obj(),
		builder.Task("ns", "blocked").Hive("h").DependsOn("fetch").Obj(),
		builder.Task("ns", "running").Hive("h").Bound("agent-1", 1, unitNow).Obj(),
		finishedTask(builder.Task("ns", "fetch").Hive("h").DependsOn("login"), unitNow),
		builder.Task("ns", "elsewhere").Hive("other").Bound("agent-2", 1, unitNow).Obj(),
		builder.Task("ns", "report").Hive("other").DependsOn("fetch").Obj(),
	}
	hive := builder.Hive("ns", "h").Obj()
	agent := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "agent-1"}}
	fetch := tasks[3]
	type mapping func(context.Context, client.Object) []reconcile.Request
	requests := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, types.NamespacedName{Namespace: "ns", Name: n}.String())
		}
		return out
	}
	cases := map[string]struct {
		mapping func(*TaskReconciler) mapping
		obj     client.Object
		want    []string
	}{
		// A hive appearing or changing tells its waiting tasks whether it can run them.
		"a hive's queued tasks": {mapping: func(r *TaskReconciler) mapping { return r.queuedTasksOfHive }, obj: hive, want: requests("blocked", "queued")},
		"an agent's tasks":      {mapping: func(r *TaskReconciler) mapping { return r.tasksOfAgent }, obj: agent, want: requests("running")},
		// A task that left the cache (it finished): its dependents may run now. What it
		// depends on is the retention controller's, which sees it finish.
		"the dependents of a task that left the cache": {mapping: func(r *TaskReconciler) mapping { return r.related }, obj: fetch, want: requests("blocked", "report")},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r, _ := newUnitTaskReconciler(fakeClient(interceptor.Funcs{}, tasks...))
			var got []string
			for _, req := range tc.mapping(r)(context.Background(), tc.obj) {
				got = append(got, req.String())
			}
			slices.Sort(got)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}

			// A cache that cannot answer maps to nothing rather than failing the watch.
			broken, _ := newUnitTaskReconciler(fakeClient(refuse("list", &swarmv1alpha1.TaskList{}, "", internalError()), tasks...))
			if got := tc.mapping(broken)(context.Background(), tc.obj); len(got) != 0 {
				t.Errorf("with the list failing: %v", got)
			}
		})
	}
}
