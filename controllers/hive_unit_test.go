package controllers

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/internal/pool"
	"github.com/aihub-dev/hive-operator/test/builder"
)

// These tests drive one reconcile of the hive controller at a time against a fake API
// server, for what an API server does not do on demand: refuse one write, fail one read,
// answer a pod's adoption with a conflict.

// refuse returns interceptor funcs that answer err to the requests of verb ("get", "list",
// "create", "patch", "delete", or "status" for a status patch) about objects of like's type
// (a list type for "list") and, unless name is empty, of that name. Other requests reach
// the fake API server.
func refuse(verb string, like runtime.Object, name string, err error) interceptor.Funcs {
	refused := func(v string, obj runtime.Object, objName string) bool {
		return v == verb && reflect.TypeOf(obj) == reflect.TypeOf(like) && (name == "" || name == objName)
	}
	return interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if refused("get", obj, key.Name) {
				return err
			}
			return c.Get(ctx, key, obj, opts...)
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if refused("list", list, "") {
				return err
			}
			return c.List(ctx, list, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if refused("create", obj, obj.GetName()) {
				return err
			}
			return c.Create(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			if refused("patch", obj, obj.GetName()) {
				return err
			}
			return c.Patch(ctx, obj, patch, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			if refused("delete", obj, obj.GetName()) {
				return err
			}
			return c.Delete(ctx, obj, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			if refused("status", obj, obj.GetName()) {
				return err
			}
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	}
}

func internalError() error {
	return apierrors.NewInternalError(errors.New("etcdserver: request timed out"))
}

func conflictError(name string) error {
	return apierrors.NewConflict(schema.GroupResource{Resource: "pods"}, name, errors.New("the object has been modified"))
}

func notFoundError(name string) error {
	return apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, name)
}

// newUnitHiveReconciler returns a hive controller on c as SetupWithManager makes it, at
// the time *now (unitNow when nil), and the recorder of its events.
func newUnitHiveReconciler(c client.Client, now *time.Time) (*HiveReconciler, *events.FakeRecorder) {
	rec := events.NewFakeRecorder(1000)
	clock := func() time.Time { return unitNow }
	if now != nil {
		clock = func() time.Time { return *now }
	}
	r := NewHiveReconciler(c, c, rec, HiveOptions{Now: clock, DrainSettle: time.Second, StatusInterval: time.Second})
	return r, rec
}

func reconcileUnitHive(r *HiveReconciler, hive *swarmv1alpha1.Hive) (ctrl.Result, error) {
	return r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(hive)})
}

// recorded drains the events recorded so far.
func recorded(rec *events.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func anyContains(list []string, s string) bool {
	for _, e := range list {
		if strings.Contains(e, s) {
			return true
		}
	}
	return false
}

func unitPods(t *testing.T, c client.Client) []corev1.Pod {
	t.Helper()
	list := &corev1.PodList{}
	if err := c.List(context.Background(), list, client.InNamespace("ns")); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func unitPod(t *testing.T, c client.Client, name string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "ns", Name: name}, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func controllerRef(hive *swarmv1alpha1.Hive) []metav1.OwnerReference {
	return []metav1.OwnerReference{*metav1.NewControllerRef(hive, swarmv1alpha1.GroupVersion.WithKind("Hive"))}
}

// orphanOf is an agent pod carrying hive's label and no controller.
func orphanOf(hive *swarmv1alpha1.Hive, name string) *corev1.Pod {
	p := agentPodOf(hive, hive, name)
	p.OwnerReferences = nil
	return p
}

// drainingSince marks an agent pod draining since at.
func drainingSince(p *corev1.Pod, at time.Time) *corev1.Pod {
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	p.Annotations[swarmv1alpha1.AnnotationDrainingSince] = at.UTC().Format(time.RFC3339Nano)
	return p
}

func TestHiveReportsWhatTheAPIServerRefused(t *testing.T) {
	hive := unitHive()
	access := func() metav1.ObjectMeta {
		return metav1.ObjectMeta{Namespace: "ns", Name: "h-agent", Labels: map[string]string{swarmv1alpha1.LabelHive: "h"}, OwnerReferences: controllerRef(hive)}
	}
	staleRole := &rbacv1.Role{ObjectMeta: access()}
	staleBinding := &rbacv1.RoleBinding{ObjectMeta: access(), RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "h-agent"}}
	ownedPDB := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "h", Labels: map[string]string{swarmv1alpha1.LabelHive: "h"}, OwnerReferences: controllerRef(hive)},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(1))},
	}
	finished := agentPodOf(hive, hive, "stopped")
	finished.Status.Phase = corev1.PodFailed
	autoscaled := unitHive()
	autoscaled.Spec.Replicas = ptr.To[int32](0)
	autoscaled.Spec.Autoscaling = &swarmv1alpha1.AutoscalingSpec{MinReplicas: ptr.To[int32](0), MaxReplicas: 3}
	badRollout := unitHive()
	badRollout.Spec.Rollout.MaxSurge = ptr.To(intstr.FromString("ten"))
	twoReplicas := unitHive()
	twoReplicas.Spec.Replicas = ptr.To[int32](2)

	cases := map[string]struct {
		hive   *swarmv1alpha1.Hive
		objs   []client.Object
		funcs  interceptor.Funcs
		reader interceptor.Funcs // of the API reader, when it fails apart
		want   string
	}{
		"reading the hive":  {funcs: refuse("get", &swarmv1alpha1.Hive{}, "", internalError()), want: "reading hive"},
		"listing its pods":  {funcs: refuse("list", &corev1.PodList{}, "", internalError()), want: "listing agent pods"},
		"listing its tasks": {funcs: refuse("list", &swarmv1alpha1.TaskList{}, "", internalError()), want: "listing the hive's tasks"},
		"checking the hive before adopting": {
			objs:   []client.Object{orphanOf(hive, "orphan")},
			reader: refuse("get", &swarmv1alpha1.Hive{}, "", internalError()),
			want:   "checking the hive before adopting pods",
		},
		"adopting an orphan": {
			objs:  []client.Object{orphanOf(hive, "orphan")},
			funcs: refuse("patch", &corev1.Pod{}, "orphan", internalError()),
			want:  "adopting pod orphan",
		},
		"reading the service account":  {funcs: refuse("get", &corev1.ServiceAccount{}, "", internalError()), want: "reading the agents' service account"},
		"creating the service account": {funcs: refuse("create", &corev1.ServiceAccount{}, "", internalError()), want: "creating the agents' service account"},
		"reading the role":             {funcs: refuse("get", &rbacv1.Role{}, "", internalError()), want: "reading the agents' role:"},
		"creating the role":            {funcs: refuse("create", &rbacv1.Role{}, "", internalError()), want: "creating the agents' role:"},
		"updating the role": {
			objs: []client.Object{staleRole}, funcs: refuse("patch", &rbacv1.Role{}, "", internalError()), want: "updating the agents' role:",
		},
		"reading the role binding":  {funcs: refuse("get", &rbacv1.RoleBinding{}, "", internalError()), want: "reading the agents' role binding"},
		"creating the role binding": {funcs: refuse("create", &rbacv1.RoleBinding{}, "", internalError()), want: "creating the agents' role binding"},
		"updating the role binding": {
			objs: []client.Object{staleBinding}, funcs: refuse("patch", &rbacv1.RoleBinding{}, "", internalError()), want: "updating the agents' role binding",
		},
		"scaling an autoscaled hive": {
			hive:  autoscaled,
			objs:  []client.Object{builder.Task("ns", "q1").Hive("h").Obj(), builder.Task("ns", "q2").Hive("h").Obj()},
			funcs: refuse("patch", &swarmv1alpha1.Hive{}, "", internalError()),
			want:  "scaling the hive to 2 agents",
		},
		// The schema refuses such bounds; a hive stored before it did is reported.
		"resolving the rollout bounds": {hive: badRollout, want: "resolving the rollout bounds"},
		"reading the disruption budget": {
			funcs: refuse("get", &policyv1.PodDisruptionBudget{}, "", internalError()), want: "reading the PodDisruptionBudget",
		},
		"creating the disruption budget": {
			funcs: refuse("create", &policyv1.PodDisruptionBudget{}, "", internalError()), want: "creating the PodDisruptionBudget",
		},
		"updating the disruption budget": {
			objs: []client.Object{ownedPDB}, funcs: refuse("patch", &policyv1.PodDisruptionBudget{}, "", internalError()), want: "updating the PodDisruptionBudget",
		},
		"writing the hive's status": {funcs: refuse("status", &swarmv1alpha1.Hive{}, "", internalError()), want: "writing hive status"},
		"deleting a stopped agent": {
			objs: []client.Object{finished}, funcs: refuse("delete", &corev1.Pod{}, "", internalError()), want: "deleting agent stopped",
		},
		"draining a surplus agent": {
			objs:  []client.Object{agentPodOf(hive, hive, "a1"), agentPodOf(hive, hive, "a2")},
			funcs: refuse("patch", &corev1.Pod{}, "", internalError()),
			want:  "marking agent draining",
		},
		"taking a draining agent back": {
			hive:  twoReplicas,
			objs:  []client.Object{agentPodOf(hive, hive, "a1"), drainingSince(agentPodOf(hive, hive, "a2"), unitNow.Add(-100*time.Millisecond))},
			funcs: refuse("patch", &corev1.Pod{}, "", internalError()),
			want:  "taking agent back from draining",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := tc.hive
			if h == nil {
				h = unitHive()
			}
			server := fakeAPIServer(append([]client.Object{h}, tc.objs...)...)
			r, _ := newUnitHiveReconciler(interceptor.NewClient(server, tc.funcs), nil)
			r.apiReader = interceptor.NewClient(server, tc.reader)
			_, err := reconcileUnitHive(r, h)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("reconcile = %v; want an error saying %q", err, tc.want)
			}
		})
	}
}

func TestHiveLeavesAHiveBeingDeletedToTheGarbageCollector(t *testing.T) {
	hive := unitHive()
	hive.Finalizers = []string{"example.com/hold"}
	hive.DeletionTimestamp = ptr.To(metav1.NewTime(unitNow))
	c := fakeAPIServer(hive)
	r, _ := newUnitHiveReconciler(c, nil)
	if _, err := reconcileUnitHive(r, hive); err != nil {
		t.Fatal(err)
	}
	if pods := unitPods(t, c); len(pods) != 0 {
		t.Errorf("%d agents created for a hive being deleted", len(pods))
	}
	accounts := &corev1.ServiceAccountList{}
	if err := c.List(context.Background(), accounts); err != nil {
		t.Fatal(err)
	}
	if len(accounts.Items) != 0 {
		t.Errorf("service accounts created for a hive being deleted: %v", accounts.Items)
	}
}

func TestHiveTakesADrainingAgentBackBeforeCreatingOne(t *testing.T) {
	// Scaled down to one a moment ago, and back up to two before a2 was deleted.
	hive := unitHive()
	hive.Spec.Replicas = ptr.To[int32](2)
	c := fakeAPIServer(hive, agentPodOf(hive, hive, "a1"), drainingSince(agentPodOf(hive, hive, "a2"), unitNow.Add(-100*time.Millisecond)))
	r, rec := newUnitHiveReconciler(c, nil)
	if _, err := reconcileUnitHive(r, hive); err != nil {
		t.Fatal(err)
	}
	pods := unitPods(t, c)
	if len(pods) != 2 {
		t.Errorf("%d agents; want the two there were", len(pods))
	}
	if agentpod.IsDraining(unitPod(t, c, "a2")) {
		t.Error("a2 is still draining")
	}
	if ev := recorded(rec); !anyContains(ev, "Undrained Agent a2 takes tasks again") {
		t.Errorf("events %q", ev)
	}
}

func TestHiveDeletesASurplusAgentThatIsNotReady(t *testing.T) {
	hive := unitHive()
	notReady := agentPodOf(hive, hive, "a2")
	notReady.Status.Conditions = nil
	c := fakeAPIServer(hive, agentPodOf(hive, hive, "a1"), notReady)
	r, rec := newUnitHiveReconciler(c, nil)
	if _, err := reconcileUnitHive(r, hive); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range unitPods(t, c) {
		names = append(names, p.Name)
	}
	if strings.Join(names, ",") != "a1" {
		t.Errorf("agents %v; want the ready one kept and the other deleted", names)
	}
	if ev := recorded(rec); !anyContains(ev, "Deleted agent a2: surplus and not ready") {
		t.Errorf("events %q", ev)
	}
}

func TestEveryDeleteReasonIsExplained(t *testing.T) {
	for _, reason := range []pool.DeleteReason{pool.DeleteFinished, pool.DeleteDrained, pool.DeleteDrainTimeout, pool.DeleteNotReady} {
		if note := deleteNote(reason); note == "" || note == string(reason) {
			t.Errorf("deleteNote(%s) = %q; want a sentence", reason, note)
		}
	}
	if note := deleteNote("Evicted"); note != "Evicted" {
		t.Errorf("an unknown reason is explained as %q; want the reason itself", note)
	}
}

func TestHiveAdoptsNoOrphanForAHiveRecreatedUnderItsName(t *testing.T) {
	// The cache still shows the hive that was deleted; the API server has a new one of the
	// same name. The orphan may be the old hive's: it is not the new one's to take.
	stale := unitHive()
	fresh := unitHive()
	fresh.UID = "new-hive-uid"
	c := fakeAPIServer(stale, orphanOf(stale, "orphan"))
	r, rec := newUnitHiveReconciler(c, nil)
	r.apiReader = fakeAPIServer(fresh)
	if _, err := reconcileUnitHive(r, stale); err != nil {
		t.Fatal(err)
	}
	if refs := unitPod(t, c, "orphan").OwnerReferences; len(refs) != 0 {
		t.Errorf("the orphan was adopted: %v", refs)
	}
	if ev := recorded(rec); anyContains(ev, "AgentAdopted") {
		t.Errorf("events %q", ev)
	}
}

func TestHiveLeavesAnOrphanThatChangedWhileBeingAdopted(t *testing.T) {
	cases := map[string]error{
		"it changed":     conflictError("orphan"),
		"it was deleted": notFoundError("orphan"),
	}
	for name, answer := range cases {
		t.Run(name, func(t *testing.T) {
			hive := unitHive()
			c := fakeAPIServer(hive, orphanOf(hive, "orphan"))
			r, rec := newUnitHiveReconciler(interceptor.NewClient(c, refuse("patch", &corev1.Pod{}, "orphan", answer)), nil)
			if _, err := reconcileUnitHive(r, hive); err != nil {
				t.Fatalf("reconcile = %v; an orphan that changed is looked at again on the next pass", err)
			}
			if refs := unitPod(t, c, "orphan").OwnerReferences; len(refs) != 0 {
				t.Errorf("the orphan was adopted: %v", refs)
			}
			if ev := recorded(rec); anyContains(ev, "AgentAdopted") {
				t.Errorf("events %q", ev)
			}
		})
	}
}

func TestHiveDisownsAPodThatLostItsLabel(t *testing.T) {
	hive := unitHive()
	unlabelled := func(p *corev1.Pod) *corev1.Pod {
		delete(p.Labels, swarmv1alpha1.LabelHive)
		return p
	}
	cases := map[string]struct {
		pod         *corev1.Pod // as the API server has it; nil when it is gone
		patchAnswer error       // the API server's answer to the release, once
		wantErr     string
		wantOwned   bool
	}{
		"relabelled":                 {pod: unlabelled(agentPodOf(hive, hive, "p"))},
		"labelled again meanwhile":   {pod: agentPodOf(hive, hive, "p"), wantOwned: true},
		"released by someone else":   {pod: unlabelled(orphanOf(hive, "p"))},
		"deleted after all":          {},
		"deleted during the release": {pod: unlabelled(agentPodOf(hive, hive, "p")), patchAnswer: notFoundError("p"), wantOwned: true},
		// The release is tried again on the next pass, which lands it.
		"refused once": {pod: unlabelled(agentPodOf(hive, hive, "p")), patchAnswer: internalError(), wantErr: "disowning pod p"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			objs := []client.Object{hive}
			if tc.pod != nil {
				objs = append(objs, tc.pod)
			}
			server := fakeAPIServer(objs...)
			var answered atomic.Bool
			funcs := interceptor.Funcs{Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
				if _, ok := obj.(*corev1.Pod); ok && tc.patchAnswer != nil && !answered.Swap(true) {
					return tc.patchAnswer
				}
				return c.Patch(ctx, obj, patch, opts...)
			}}
			r, rec := newUnitHiveReconciler(interceptor.NewClient(server, funcs), nil)
			// The label-filtered watch reports the pod deleted, as it looked before.
			q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
			defer q.ShutDown()
			(&podHandler{r: r}).Delete(context.Background(), event.DeleteEvent{Object: agentPodOf(hive, hive, "p")}, q)
			if q.Len() != 1 {
				t.Fatalf("the deletion queued %d reconciles of the hive", q.Len())
			}

			_, err := reconcileUnitHive(r, hive)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("reconcile = %v; want an error saying %q", err, tc.wantErr)
				}
				_, err = reconcileUnitHive(r, hive)
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.pod == nil {
				return
			}
			p := unitPod(t, server, "p")
			if owned := metav1.IsControlledBy(p, hive); owned != tc.wantOwned {
				t.Errorf("pod controlled by the hive: %v, want %v (owners %v)", owned, tc.wantOwned, p.OwnerReferences)
			}
			released := anyContains(recorded(rec), "AgentOrphaned")
			if wantEvent := tc.pod != nil && !tc.wantOwned && metav1.IsControlledBy(tc.pod, hive); released != wantEvent {
				t.Errorf("AgentOrphaned event: %v, want %v", released, wantEvent)
			}
		})
	}
}

func TestHiveLeavesADisruptionBudgetItDoesNotOwnAlone(t *testing.T) {
	// A budget of the hive's name and label someone else made.
	foreign := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "h", Labels: map[string]string{swarmv1alpha1.LabelHive: "h"}},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(0)), Selector: &metav1.LabelSelector{}},
	}
	hive := unitHive()
	c := fakeAPIServer(hive, foreign)
	r, _ := newUnitHiveReconciler(c, nil)
	if _, err := reconcileUnitHive(r, hive); err != nil {
		t.Fatal(err)
	}
	got := &policyv1.PodDisruptionBudget{}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(foreign), got); err != nil {
		t.Fatal(err)
	}
	if len(got.OwnerReferences) != 0 || got.Spec.MaxUnavailable != nil || got.Spec.MinAvailable.IntValue() != 0 {
		t.Errorf("the foreign budget was changed: %+v", got)
	}
}

func TestHiveBacksOffCreatingPodsFromARefusedTemplate(t *testing.T) {
	hive := unitHive()
	server := fakeAPIServer(hive)
	var refusing atomic.Bool
	refusing.Store(true)
	funcs := interceptor.Funcs{Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
		if _, ok := obj.(*corev1.Pod); ok && refusing.Load() {
			return apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New("exceeded quota: pods"))
		}
		return c.Create(ctx, obj, opts...)
	}}
	now := unitNow
	r, rec := newUnitHiveReconciler(interceptor.NewClient(server, funcs), &now)

	res, err := reconcileUnitHive(r, hive)
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter <= 0 || res.RequeueAfter > time.Second {
		t.Errorf("after a refused create the hive comes back after %v; want within the first backoff of 1s", res.RequeueAfter)
	}
	h := &swarmv1alpha1.Hive{}
	if err := server.Get(context.Background(), client.ObjectKeyFromObject(hive), h); err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(h.Status.Conditions, swarmv1alpha1.HiveDegraded); c == nil || c.Status != metav1.ConditionTrue ||
		c.Reason != swarmv1alpha1.ReasonPodCreateFailed || !strings.Contains(c.Message, "exceeded quota") {
		t.Errorf("Degraded %+v; want the refusal reported", c)
	}
	if ev := recorded(rec); !anyContains(ev, "PodCreateFailed") {
		t.Errorf("events %q", ev)
	}

	// The quota is raised; within the backoff the hive does not try again, after it, it does.
	refusing.Store(false)
	for _, step := range []struct {
		at   time.Duration
		pods int
	}{{500 * time.Millisecond, 0}, {time.Second, 1}} {
		now = unitNow.Add(step.at)
		h := &swarmv1alpha1.Hive{}
		if err := server.Get(context.Background(), client.ObjectKeyFromObject(hive), h); err != nil {
			t.Fatal(err)
		}
		if _, err := reconcileUnitHive(r, h); err != nil {
			t.Fatal(err)
		}
		if n := len(unitPods(t, server)); n != step.pods {
			t.Errorf("%v after the refusal: %d agents, want %d", step.at, n, step.pods)
		}
	}
}

// A reconcile that reads the hive from a cache which does not show the status it last wrote
// yet compares with what it wrote, not with the older status the cache holds: when the new
// status happens to equal that older one, it still has to replace its own last write. (The
// hive's status-only updates trigger no reconcile, so a skipped write would stand.)
func TestHiveStatusIsComparedWithItsLastWriteWhileTheCacheLags(t *testing.T) {
	hive := builder.Hive("ns", "h").Replicas(2).Obj()
	hive.UID = "uid-h"
	var stale *swarmv1alpha1.Hive // the cache's view, when it lags
	c := fakeClient(interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if h, ok := obj.(*swarmv1alpha1.Hive); ok && stale != nil {
				stale.DeepCopyInto(h)
				return nil
			}
			return c.Get(ctx, key, obj, opts...)
		},
	}, hive, agentPodOf(hive, hive, "a1"), agentPodOf(hive, hive, "a2"))
	r, _ := newUnitHiveReconciler(c, nil)
	ctx := context.Background()
	if _, err := reconcileUnitHive(r, hive); err != nil {
		t.Fatal(err)
	}
	steady := &swarmv1alpha1.Hive{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(hive), steady); err != nil || steady.Status.ReadyReplicas != 2 {
		t.Fatalf("status after the first pass: %+v, %v; want 2 ready", steady.Status, err)
	}

	// An agent goes; the hive writes a status of one agent and creates a replacement, which
	// becomes ready.
	if err := c.Delete(ctx, agentPodOf(hive, hive, "a2")); err != nil {
		t.Fatal(err)
	}
	if _, err := reconcileUnitHive(r, hive); err != nil {
		t.Fatal(err)
	}
	pods := &corev1.PodList{}
	if err := c.List(ctx, pods, client.InNamespace("ns")); err != nil || len(pods.Items) != 2 {
		t.Fatalf("pods after the replacement: %d, %v; want 2", len(pods.Items), err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Name != "a1" {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
			if err := c.Status().Update(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
	}

	// The next pass reads the hive as the cache had it before the last status write.
	stale = steady
	if _, err := reconcileUnitHive(r, hive); err != nil {
		t.Fatal(err)
	}
	stale = nil
	got := &swarmv1alpha1.Hive{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(hive), got); err != nil {
		t.Fatal(err)
	}
	if got.Status.Replicas != 2 || got.Status.ReadyReplicas != 2 {
		t.Errorf("status = %d agents, %d ready (%s); want 2 and 2: the last write of one agent stands", got.Status.Replicas, got.Status.ReadyReplicas, got.Status.ReadySummary)
	}
}
