package controllers

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/meta/testrestmapper"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/test/builder"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

// A bound task follows its agent's pod: it stays with a ready agent, and goes back to the
// queue when the agent's pod has stopped or is past its termination grace period.
func TestABoundTaskFollowsItsAgentsPod(t *testing.T) {
	hive := builder.Hive("ns", "h").Obj()
	hive.UID = "uid-ns-h"
	cases := map[string]struct {
		pod       func(*corev1.Pod)
		otherHive bool
		wantAgent string
	}{
		"ready":    {pod: func(*corev1.Pod) {}, wantAgent: "agent-1"},
		"stopped":  {pod: func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }},
		"finished": {pod: func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }},
		"terminating within its grace period": {pod: func(p *corev1.Pod) {
			p.DeletionTimestamp, p.DeletionGracePeriodSeconds, p.Finalizers = ptr.To(metav1.NewTime(unitNow.Add(10*time.Second))), ptr.To(int64(30)), []string{"test/keep"}
		}, wantAgent: "agent-1"},
		"terminating past its grace period": {pod: func(p *corev1.Pod) {
			p.DeletionTimestamp, p.DeletionGracePeriodSeconds, p.Finalizers = ptr.To(metav1.NewTime(unitNow.Add(-time.Minute))), ptr.To(int64(30)), []string{"test/keep"}
		}},
		// A pod of that name that belongs to another hive is not the task's agent.
		"of another hive": {pod: func(*corev1.Pod) {}, otherHive: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			owner := hive
			if tc.otherHive {
				owner = builder.Hive("ns", "other").Obj()
				owner.UID = "uid-ns-other"
			}
			pod := agentPodOf(owner, owner, "agent-1")
			tc.pod(pod)
			c := fakeClient(interceptor.Funcs{}, hive, pod, builder.Task("ns", "t").Hive("h").Bound("agent-1", 1, unitNow.Add(-time.Minute)).Obj())
			r, _ := newUnitTaskReconciler(c)
			if _, err := reconcileUnitTask(r, "t"); err != nil {
				t.Fatal(err)
			}
			task := getTask(t, c, "t")
			if task.Status.Agent != tc.wantAgent {
				t.Fatalf("agent = %q, phase %s (%s); want agent %q", task.Status.Agent, task.Status.Phase, task.Status.Message, tc.wantAgent)
			}
			if tc.wantAgent == "" && (task.Status.Phase.Bound() || task.Status.FailedAttempts != 1) {
				t.Errorf("phase %s with %d failed attempts; want the task back in the queue with its attempt failed", task.Status.Phase, task.Status.FailedAttempts)
			}
		})
	}
}

// A name the hive's budget would take, held by an object the hive cannot see (its cache
// holds only what it labels), is tried once per generation of the hive, not on every pass.
func TestHiveTriesATakenNameOncePerGeneration(t *testing.T) {
	hive := builder.Hive("ns", "h").Replicas(0).Obj()
	hive.Generation = 1
	creates := 0
	c := fakeClient(interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if _, ok := obj.(*policyv1.PodDisruptionBudget); ok {
				creates++
				return apierrors.NewAlreadyExists(schema.GroupResource{Group: "policy", Resource: "poddisruptionbudgets"}, obj.GetName())
			}
			return c.Create(ctx, obj, opts...)
		},
	}, hive)
	r, _ := newUnitHiveReconciler(c, nil)
	for range 3 {
		if _, err := reconcileUnitHive(r, hive); err != nil {
			t.Fatal(err)
		}
	}
	if creates != 1 {
		t.Fatalf("%d creates of the budget in 3 passes; want 1", creates)
	}
	current := &swarmv1alpha1.Hive{}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(hive), current); err != nil {
		t.Fatal(err)
	}
	current.Generation = 2
	if err := c.Update(context.Background(), current); err != nil {
		t.Fatal(err)
	}
	if _, err := reconcileUnitHive(r, hive); err != nil {
		t.Fatal(err)
	}
	if creates != 2 {
		t.Errorf("%d creates after the hive changed; want one more", creates)
	}
}

// What the controller remembers of a hive goes with the hive.
func TestHiveForgetsAHiveThatIsGone(t *testing.T) {
	hive := builder.Hive("ns", "h").Replicas(1).Obj()
	c := fakeClient(interceptor.Funcs{}, hive)
	r, _ := newUnitHiveReconciler(c, nil)
	if _, err := reconcileUnitHive(r, hive); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(hive)
	notInCache := func(string) (*corev1.Pod, bool) { return nil, false }
	if _, ok := r.statusWrites.get(key); !ok {
		t.Fatal("no status write remembered after the first reconcile")
	}
	if r.expectations.Satisfied(key.String(), notInCache) == 0 {
		t.Fatal("the pod created by the first reconcile is not awaited")
	}
	if err := c.Delete(context.Background(), hive); err != nil {
		t.Fatal(err)
	}
	if _, err := reconcileUnitHive(r, hive); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.statusWrites.get(key); ok {
		t.Error("the status write of a deleted hive is still remembered")
	}
	if r.expectations.Satisfied(key.String(), notInCache) != 0 {
		t.Error("the expected pod creations of a deleted hive are still awaited")
	}
}

// The agents' rules are handed out as copies: a caller changing them changes no Role the
// operator writes afterwards.
func TestAgentRulesAreACopy(t *testing.T) {
	rules := AgentRules()
	if len(rules) == 0 || !strings.Contains(strings.Join(rules[1].Resources, ","), "tasks/status") {
		t.Fatalf("rules = %+v; want task reads and task status writes", rules)
	}
	rules[0].Verbs[0] = "delete"
	if AgentRules()[0].Verbs[0] == "delete" {
		t.Error("changing the returned rules changed the operator's")
	}
}

// Setup wires every controller, index and metric into a manager; it needs no API server
// until the manager starts.
func TestSetupWiresEveryControllerIntoAManager(t *testing.T) {
	mgr, err := ctrl.NewManager(&rest.Config{Host: "https://127.0.0.1:1"}, ctrl.Options{
		Scheme: testenv.Scheme, Cache: CacheOptions(), Metrics: metricsserver.Options{BindAddress: "0"},
		// Every kind the controllers watch is in the scheme: no discovery needed.
		MapperProvider: func(*rest.Config, *http.Client) (meta.RESTMapper, error) {
			return testrestmapper.TestOnlyStaticRESTMapper(testenv.Scheme), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := Setup(context.Background(), mgr, Options{HiveConcurrency: 1, TaskConcurrency: 1, DispatchConcurrency: 1, BindConcurrency: 1}); err != nil {
		t.Fatal(err)
	}
	// Controller names are unique within a manager: wiring twice is refused, not doubled.
	if err := NewTaskReconciler(mgr.GetClient(), mgr.GetAPIReader(), nil, TaskOptions{}).SetupWithManager(mgr); err == nil {
		t.Error("a second task controller was accepted")
	}
}

// The cache keeps no task input or result, no managed fields, no labels and no annotations
// (kubectl's last-applied copy among them): no decision reads them, and they are most of a
// task's bytes, and its labels map a quarter of what a cached task costs the heap.
func TestStripForCache(t *testing.T) {
	task := builder.Task("ns", "t").Hive("h").Label("team", "search").Obj()
	task.Spec.Input, task.Status.Result = "input", "result"
	task.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{}", "note": "yes"}
	task.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	out, err := stripForCache(task)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*swarmv1alpha1.Task)
	if got.Spec.Input != "" || got.Status.Result != "" || got.ManagedFields != nil || got.Labels != nil || got.Annotations != nil {
		t.Errorf("stripped task = input %q, result %q, managed fields %v, labels %v, annotations %v; want none",
			got.Spec.Input, got.Status.Result, got.ManagedFields, got.Labels, got.Annotations)
	}
	if got.Name != "t" || got.Spec.Hive != "h" {
		t.Errorf("stripped task = %s of hive %q; want its name and spec kept", got.Name, got.Spec.Hive)
	}
	pod := agentPodOf(unitHive(), unitHive(), "agent-1")
	pod.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}
	if out, err := stripForCache(pod); err != nil || out.(*corev1.Pod).ManagedFields != nil || out.(*corev1.Pod).Spec.Containers == nil {
		t.Errorf("stripped pod = %+v, %v; want it whole without managed fields", out, err)
	}
}
