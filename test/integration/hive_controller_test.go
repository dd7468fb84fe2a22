package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/controllers"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/test/builder"
)

// waitForAgents waits until the hive has exactly n live pods, all ready and of the hive's
// current template, and its status says so.
func waitForAgents(t *testing.T, ns, hive string, n int, timeout time.Duration) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	eventually(t, timeout, func() error {
		var err error
		if pods, err = livePods(t.Context(), ns, hive); err != nil {
			return err
		}
		h := getHive(t, ns, hive)
		ready := 0
		for i := range pods {
			if agentpod.IsReady(&pods[i]) && agentpod.Revision(&pods[i]) == h.Status.UpdateRevision && !agentpod.IsDraining(&pods[i]) {
				ready++
			}
		}
		s := h.Status
		if len(pods) != n || ready != n || s.ReadyReplicas != int32(n) || s.Replicas != int32(n) ||
			s.UpdatedReplicas != int32(n) || s.CurrentRevision != s.UpdateRevision || s.ObservedGeneration != h.Generation {
			return fmt.Errorf("want %d ready agents of the current revision; have %d pods, %d ready; status %+v", n, len(pods), ready, s)
		}
		return nil
	})
	return pods
}

func condition(h *swarmv1alpha1.Hive, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(h.Status.Conditions, typ); c != nil {
		return *c
	}
	return metav1.Condition{}
}

func TestHiveScalesUpAndDown(t *testing.T) {
	ns := namespace(t)
	startKubelet(t, ns, 100*time.Millisecond)
	startOperator(t)

	create(t, builder.Hive(ns, "pool").Replicas(0).Obj())
	waitForAgents(t, ns, "pool", 0, 20*time.Second)

	for _, n := range []int32{5, 2, 0} {
		patchHive(t, ns, "pool", func(h *swarmv1alpha1.Hive) { h.Spec.Replicas = ptr.To(n) })
		waitForAgents(t, ns, "pool", int(n), 30*time.Second)
		h := getHive(t, ns, "pool")
		if c := condition(h, swarmv1alpha1.HiveAvailable); c.Status != metav1.ConditionTrue {
			t.Errorf("with %d agents: Available = %+v", n, c)
		}
		eventually(t, 10*time.Second, func() error {
			h := getHive(t, ns, "pool")
			if c := condition(h, swarmv1alpha1.HiveProgressing); c.Status != metav1.ConditionFalse || c.Reason != swarmv1alpha1.ReasonStable {
				return fmt.Errorf("with %d agents: Progressing = %+v", n, c)
			}
			if want := fmt.Sprintf("%d/%d", n, n); h.Status.ReadySummary != want {
				return fmt.Errorf("readySummary = %q, want %q", h.Status.ReadySummary, want)
			}
			return nil
		})
	}
	if got := eventReasons(t, ns, "pool"); !slices.Contains(got, "AgentsCreated") || !slices.Contains(got, "Draining") {
		t.Errorf("events %v lack AgentsCreated or Draining", got)
	}
}

func TestHiveAgentPodsFollowTheContract(t *testing.T) {
	ns := namespace(t)
	startKubelet(t, ns, 0)
	startOperator(t)
	h := builder.Hive(ns, "contract").Replicas(1).Obj()
	h.Spec.Agent = swarmv1alpha1.AgentSpec{Concurrency: 3, Capabilities: []string{"gpu", "python"}}
	h.Spec.Template.Labels = map[string]string{"team": "research"}
	h.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "HIVE_NAME", Value: "spoofed"}, {Name: "KEEP", Value: "me"}}
	create(t, h)
	pod := waitForAgents(t, ns, "contract", 1, 20*time.Second)[0]
	hive := getHive(t, ns, "contract")

	if pod.Labels["team"] != "research" || pod.Labels[swarmv1alpha1.LabelHive] != "contract" ||
		pod.Labels[swarmv1alpha1.LabelRevision] != hive.Status.UpdateRevision {
		t.Errorf("pod labels = %v", pod.Labels)
	}
	if !metav1.IsControlledBy(&pod, hive) {
		t.Errorf("pod owner references = %+v", pod.OwnerReferences)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range pod.Spec.Containers[0].Env {
		env[e.Name] = e
	}
	for name, want := range map[string]string{"HIVE_NAME": "contract", "AGENT_CONCURRENCY": "3", "AGENT_CAPABILITIES": "gpu,python", "KEEP": "me"} {
		if env[name].Value != want {
			t.Errorf("env %s = %q, want %q", name, env[name].Value, want)
		}
	}
	if f := env["POD_NAME"].ValueFrom; f == nil || f.FieldRef == nil || f.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("POD_NAME = %+v", env["POD_NAME"])
	}
	if hive.Status.Selector != "swarm.aihub.dev/hive=contract" {
		t.Errorf("status.selector = %q", hive.Status.Selector)
	}

	pdb := &policyv1.PodDisruptionBudget{}
	if err := env2Get(t, ns, "contract", pdb); err != nil {
		t.Fatalf("no PodDisruptionBudget: %v", err)
	}
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 ||
		pdb.Spec.Selector.MatchLabels[swarmv1alpha1.LabelHive] != "contract" || !metav1.IsControlledBy(pdb, hive) {
		t.Errorf("PodDisruptionBudget spec %+v, owners %+v", pdb.Spec, pdb.OwnerReferences)
	}
	patchHive(t, ns, "contract", func(h *swarmv1alpha1.Hive) {
		h.Spec.Disruption = &swarmv1alpha1.DisruptionSpec{MaxUnavailable: ptr.To(intstr.FromString("50%"))}
	})
	eventually(t, 10*time.Second, func() error {
		if err := env2Get(t, ns, "contract", pdb); err != nil {
			return err
		}
		if pdb.Spec.MaxUnavailable.String() != "50%" {
			return fmt.Errorf("PodDisruptionBudget maxUnavailable = %s", pdb.Spec.MaxUnavailable)
		}
		return nil
	})
}

func env2Get(t *testing.T, ns, name string, obj client.Object) error {
	t.Helper()
	return env.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, obj)
}

func TestHiveScaleSubresource(t *testing.T) {
	ns := namespace(t)
	startKubelet(t, ns, 0)
	startOperator(t)
	hive := builder.Hive(ns, "scaled").Replicas(1).Obj()
	create(t, hive)
	waitForAgents(t, ns, "scaled", 1, 20*time.Second)

	// What `kubectl scale hive/scaled --replicas=3` does.
	scale := &autoscalingv1.Scale{}
	if err := env.Client.SubResource("scale").Get(t.Context(), hive, scale); err != nil {
		t.Fatal(err)
	}
	if scale.Status.Selector != "swarm.aihub.dev/hive=scaled" || scale.Status.Replicas != 1 {
		t.Errorf("scale status = %+v", scale.Status)
	}
	scale.Spec.Replicas = 3
	if err := env.Client.SubResource("scale").Update(t.Context(), hive, client.WithSubResourceBody(scale)); err != nil {
		t.Fatal(err)
	}
	waitForAgents(t, ns, "scaled", 3, 20*time.Second)
}

func TestHiveReplacesLostAgents(t *testing.T) {
	ns := namespace(t)
	k := startKubelet(t, ns, 50*time.Millisecond)
	startOperator(t)
	create(t, builder.Hive(ns, "healing").Replicas(3).Obj())
	pods := waitForAgents(t, ns, "healing", 3, 20*time.Second)

	if err := env.Client.Delete(t.Context(), &pods[0]); err != nil {
		t.Fatal(err)
	}
	if err := k.Fail(t.Context(), pods[1].Name); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		now, err := livePods(t.Context(), ns, "healing")
		if err != nil {
			return err
		}
		for _, p := range now {
			if p.Name == pods[0].Name || p.Name == pods[1].Name {
				return fmt.Errorf("lost agent %s still there (phase %s)", p.Name, p.Status.Phase)
			}
		}
		if len(now) != 3 {
			return fmt.Errorf("%d agents, want 3", len(now))
		}
		return nil
	})
	waitForAgents(t, ns, "healing", 3, 20*time.Second)
}

// busyDeletionCheck returns an invariant: no agent pod disappears (or starts terminating)
// while a task is bound to it, unless exempt says its drain timed out.
func busyDeletionCheck(ns, hive string) func(ctx context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		// Pods first, then tasks: a task still bound after its pod went was bound while the
		// pod was deleted (no task is bound to a pod after it is gone in these tests).
		pods, err := livePods(ctx, ns, hive)
		if err != nil {
			return "", err
		}
		tasks := &swarmv1alpha1.TaskList{}
		if err := env.Client.List(ctx, tasks, client.InNamespace(ns)); err != nil {
			return "", err
		}
		alive := map[string]bool{}
		for _, p := range pods {
			alive[p.Name] = true
		}
		for _, task := range tasks.Items {
			if task.Status.Phase.Bound() && !alive[task.Status.Agent] {
				return fmt.Sprintf("agent %s was deleted while task %s was %s", task.Status.Agent, task.Name, task.Status.Phase), nil
			}
		}
		return "", nil
	}
}

func TestHiveScaleDownSparesBusyAgents(t *testing.T) {
	ns := namespace(t)
	startKubelet(t, ns, 0)
	startOperator(t)
	create(t, builder.Hive(ns, "busy").Replicas(5).Obj())
	pods := waitForAgents(t, ns, "busy", 5, 20*time.Second)

	var tasks []*swarmv1alpha1.Task
	busy := map[string]bool{}
	for i, p := range pods[:3] {
		tasks = append(tasks, bindTask(t, ns, "busy", fmt.Sprintf("work-%d", i), p.Name))
		busy[p.Name] = true
	}
	check := sample(busyDeletionCheck(ns, "busy"))

	patchHive(t, ns, "busy", func(h *swarmv1alpha1.Hive) { h.Spec.Replicas = ptr.To[int32](1) })
	// The two idle agents go; of the three busy ones, two drain and one stays.
	eventually(t, 20*time.Second, func() error {
		now, err := livePods(t.Context(), ns, "busy")
		if err != nil {
			return err
		}
		draining := 0
		for _, p := range now {
			if !busy[p.Name] {
				return fmt.Errorf("idle agent %s still there", p.Name)
			}
			if agentpod.IsDraining(&p) {
				draining++
			}
		}
		h := getHive(t, ns, "busy")
		if len(now) != 3 || draining != 2 || h.Status.DrainingAgents != 2 {
			return fmt.Errorf("%d agents, %d draining (status %d); want 3 and 2", len(now), draining, h.Status.DrainingAgents)
		}
		if c := condition(h, swarmv1alpha1.HiveProgressing); c.Reason != swarmv1alpha1.ReasonScalingDown || !strings.Contains(c.Message, "waiting for 2 busy draining agents to finish") {
			return fmt.Errorf("Progressing = %+v", c)
		}
		return nil
	})
	// Draining agents are deleted as soon as their tasks finish.
	for _, task := range tasks {
		setTaskPhase(t, task, swarmv1alpha1.TaskSucceeded, task.Status.Agent)
	}
	waitForAgents(t, ns, "busy", 1, 20*time.Second)
	check.finish(t)
}

func TestHiveDrainTimeoutDeletesStuckAgents(t *testing.T) {
	ns := namespace(t)
	startKubelet(t, ns, 0)
	startOperator(t)
	create(t, builder.Hive(ns, "stuck").Replicas(2).DrainTimeout(2*time.Second).Obj())
	pods := waitForAgents(t, ns, "stuck", 2, 20*time.Second)
	for i, p := range pods {
		bindTask(t, ns, "stuck", fmt.Sprintf("forever-%d", i), p.Name)
	}
	patchHive(t, ns, "stuck", func(h *swarmv1alpha1.Hive) { h.Spec.Replicas = ptr.To[int32](1) })
	start := time.Now()
	waitForAgents(t, ns, "stuck", 1, 20*time.Second)
	if elapsed := time.Since(start); elapsed < 2*time.Second {
		t.Errorf("a busy agent was deleted after %v, before its 2s drain timeout", elapsed)
	}
	if got := eventReasons(t, ns, "stuck"); !slices.Contains(got, "AgentDeleted") {
		t.Errorf("events %v lack AgentDeleted", got)
	}
}

// availabilityCheck returns an invariant: at least min agents are ready and not draining.
func availabilityCheck(ns, hive string, min int) func(ctx context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		pods, err := livePods(ctx, ns, hive)
		if err != nil {
			return "", err
		}
		available := 0
		for i := range pods {
			if agentpod.CanTakeTasks(&pods[i]) {
				available++
			}
		}
		if available < min {
			return fmt.Sprintf("%d agents available, fewer than %d", available, min), nil
		}
		return "", nil
	}
}

// surgeCheck returns an invariant: the hive never runs more than max agent pods.
func surgeCheck(ns, hive string, max int) func(ctx context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		pods, err := livePods(ctx, ns, hive)
		if err != nil {
			return "", err
		}
		if len(pods) > max {
			return fmt.Sprintf("%d agent pods, more than %d", len(pods), max), nil
		}
		return "", nil
	}
}

func TestHiveRolloutKeepsAgentsAvailableAndBusyAgentsAlive(t *testing.T) {
	ns := namespace(t)
	startKubelet(t, ns, 300*time.Millisecond)
	startOperator(t)
	create(t, builder.Hive(ns, "roll").Replicas(5).Obj())
	pods := waitForAgents(t, ns, "roll", 5, 20*time.Second)
	oldRevision := getHive(t, ns, "roll").Status.CurrentRevision

	var tasks []*swarmv1alpha1.Task
	for i, p := range pods[:3] {
		tasks = append(tasks, bindTask(t, ns, "roll", fmt.Sprintf("job-%d", i), p.Name))
	}
	availability := sample(availabilityCheck(ns, "roll", 5))
	busyAlive := sample(busyDeletionCheck(ns, "roll"))
	surge := sample(surgeCheck(ns, "roll", 5+2))

	patchHive(t, ns, "roll", func(h *swarmv1alpha1.Hive) { h.Spec.Template.Spec.Containers[0].Image = "example.com/agent:v2" })
	// The idle old agents are replaced; then the rollout waits, within its surge of 2, for
	// busy old agents to finish: draining agents count against the surge.
	eventually(t, 30*time.Second, func() error {
		h := getHive(t, ns, "roll")
		c := condition(h, swarmv1alpha1.HiveProgressing)
		if h.Status.UpdatedReplicas != 4 || c.Reason != swarmv1alpha1.ReasonRolloutInProgress ||
			!strings.Contains(c.Message, "waiting for 2 busy outdated agents to finish") {
			return fmt.Errorf("updated %d, Progressing %+v", h.Status.UpdatedReplicas, c)
		}
		if h.Status.CurrentRevision != oldRevision {
			return fmt.Errorf("currentRevision moved to %s before the rollout finished", h.Status.CurrentRevision)
		}
		return nil
	})
	// The tasks finish one by one; each frees room for the rollout to go on.
	for _, task := range tasks {
		time.Sleep(300 * time.Millisecond)
		setTaskPhase(t, task, swarmv1alpha1.TaskSucceeded, task.Status.Agent)
	}
	waitForAgents(t, ns, "roll", 5, 30*time.Second)
	availability.finish(t)
	busyAlive.finish(t)
	surge.finish(t)

	h := getHive(t, ns, "roll")
	if h.Status.CurrentRevision == oldRevision {
		t.Errorf("currentRevision still %s", oldRevision)
	}
	eventually(t, 10*time.Second, func() error {
		got := eventReasons(t, ns, "roll")
		if !slices.Contains(got, "RolloutStarted") || !slices.Contains(got, "RolloutComplete") {
			return fmt.Errorf("events %v lack RolloutStarted or RolloutComplete", got)
		}
		return nil
	})
}

func TestHiveRolloutResumesAfterOperatorRestart(t *testing.T) {
	ns := namespace(t)
	startKubelet(t, ns, 100*time.Millisecond)
	op := startOperator(t)
	create(t, builder.Hive(ns, "resume").Replicas(3).Obj())
	pods := waitForAgents(t, ns, "resume", 3, 20*time.Second)
	task := bindTask(t, ns, "resume", "long", pods[0].Name)

	patchHive(t, ns, "resume", func(h *swarmv1alpha1.Hive) { h.Spec.Template.Spec.Containers[0].Image = "example.com/agent:v2" })
	eventually(t, 20*time.Second, func() error {
		if h := getHive(t, ns, "resume"); h.Status.UpdatedReplicas < 3 {
			return fmt.Errorf("updated %d of 3", h.Status.UpdatedReplicas)
		}
		return nil
	})
	// Stop the operator in the middle, change the template again while it is away, and let
	// the busy agent finish.
	op.stop()
	patchHive(t, ns, "resume", func(h *swarmv1alpha1.Hive) { h.Spec.Template.Spec.Containers[0].Image = "example.com/agent:v3" })
	setTaskPhase(t, task, swarmv1alpha1.TaskSucceeded, pods[0].Name)

	startOperator(t)
	final := waitForAgents(t, ns, "resume", 3, 30*time.Second)
	for _, p := range final {
		if p.Spec.Containers[0].Image != "example.com/agent:v3" {
			t.Errorf("agent %s runs %s", p.Name, p.Spec.Containers[0].Image)
		}
	}
}

func TestHiveReportsARefusedTemplateAndBacksOff(t *testing.T) {
	ns := namespace(t)
	startKubelet(t, ns, 0)
	op := startOperator(t)
	broken := builder.Hive(ns, "broken").Replicas(3).Obj()
	broken.Spec.Template.Spec.Containers[0].Name = "Not_A_DNS_Label"
	create(t, broken)

	eventually(t, 20*time.Second, func() error {
		c := condition(getHive(t, ns, "broken"), swarmv1alpha1.HiveDegraded)
		if c.Status != metav1.ConditionTrue || c.Reason != swarmv1alpha1.ReasonPodCreateFailed ||
			!strings.Contains(c.Message, "spec.containers[0].name") {
			return fmt.Errorf("Degraded = %+v", c)
		}
		return nil
	})
	eventually(t, 10*time.Second, func() error {
		if got := eventReasons(t, ns, "broken"); !slices.Contains(got, "PodCreateFailed") {
			return fmt.Errorf("events %v lack PodCreateFailed", got)
		}
		return nil
	})
	// With 1s, 2s, 4s... between attempts and one pod per attempt, a few seconds cost a
	// handful of requests, not a hot loop.
	before := op.writes.podCreates.Load()
	time.Sleep(4 * time.Second)
	if attempts := op.writes.podCreates.Load() - before; attempts > 4 {
		t.Errorf("%d pod creations in 4s with a refused template; want backoff", attempts)
	}

	patchHive(t, ns, "broken", func(h *swarmv1alpha1.Hive) { h.Spec.Template.Spec.Containers[0].Name = "agent" })
	waitForAgents(t, ns, "broken", 3, 20*time.Second)
	if c := condition(getHive(t, ns, "broken"), swarmv1alpha1.HiveDegraded); c.Status != metav1.ConditionFalse {
		t.Errorf("Degraded after the fix = %+v", c)
	}
}

func TestHiveDeletedMidRolloutOwnsEverythingItMade(t *testing.T) {
	ns := namespace(t)
	startKubelet(t, ns, 500*time.Millisecond)
	startOperator(t)
	create(t, builder.Hive(ns, "doomed").Replicas(4).Obj())
	waitForAgents(t, ns, "doomed", 4, 20*time.Second)
	hive := getHive(t, ns, "doomed")
	patchHive(t, ns, "doomed", func(h *swarmv1alpha1.Hive) { h.Spec.Template.Spec.Containers[0].Image = "example.com/agent:v2" })
	eventually(t, 10*time.Second, func() error {
		pods, err := livePods(t.Context(), ns, "doomed")
		if err != nil || len(pods) <= 4 {
			return fmt.Errorf("rollout has not surged yet (%d pods): %w", len(pods), err)
		}
		return nil
	})
	if err := env.Client.Delete(t.Context(), hive); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	// envtest runs no garbage collector: check that everything the hive made would be
	// collected, because it is owned by the hive.
	pods := &corev1.PodList{}
	if err := env.Client.List(t.Context(), pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if ref := metav1.GetControllerOf(&p); ref == nil || ref.UID != hive.UID {
			t.Errorf("pod %s is not owned by the hive: %+v", p.Name, p.OwnerReferences)
		}
	}
	pdbs := &policyv1.PodDisruptionBudgetList{}
	if err := env.Client.List(t.Context(), pdbs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, p := range pdbs.Items {
		if !metav1.IsControlledBy(&p, hive) {
			t.Errorf("PodDisruptionBudget %s is not owned by the hive", p.Name)
		}
	}
	// Nothing new appears for a hive that is gone.
	count := len(pods.Items)
	time.Sleep(time.Second)
	if err := env.Client.List(t.Context(), pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != count {
		t.Errorf("pods went from %d to %d after the hive was deleted", count, len(pods.Items))
	}
}

func TestHiveAdoptsMatchingOrphansAndReleasesRelabelledPods(t *testing.T) {
	ns := namespace(t)
	startKubelet(t, ns, 0)
	startOperator(t)

	orphan := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "orphan", Labels: map[string]string{swarmv1alpha1.LabelHive: "adopter"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "example.com/agent:v1"}}},
	}
	create(t, orphan)
	other := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "someone-else"}}
	create(t, other)
	foreign := orphan.DeepCopy()
	foreign.Name, foreign.ResourceVersion = "foreign", ""
	foreign.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: other.Name, UID: other.UID, Controller: ptr.To(true)}}
	create(t, foreign)

	create(t, builder.Hive(ns, "adopter").Replicas(2).Obj())
	hive := getHive(t, ns, "adopter")
	eventually(t, 20*time.Second, func() error {
		p := &corev1.Pod{}
		if err := env2Get(t, ns, "orphan", p); err != nil {
			return err
		}
		if !metav1.IsControlledBy(p, hive) {
			return fmt.Errorf("orphan not adopted: %+v", p.OwnerReferences)
		}
		return nil
	})
	// The adopted pod has no revision: the hive replaces it like any outdated agent.
	pods := waitForAgents(t, ns, "adopter", 2, 30*time.Second)
	f := &corev1.Pod{}
	if err := env2Get(t, ns, "foreign", f); err != nil {
		t.Fatal(err)
	}
	if metav1.IsControlledBy(f, hive) {
		t.Error("a pod controlled by another owner was adopted")
	}

	// Taking the hive label off a pod takes it out of the hive, as with a ReplicaSet.
	taken := pods[0].DeepCopy()
	base := taken.DeepCopy()
	delete(taken.Labels, swarmv1alpha1.LabelHive)
	if err := env.Client.Patch(t.Context(), taken, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		p := &corev1.Pod{}
		if err := env2Get(t, ns, taken.Name, p); err != nil {
			return err
		}
		if metav1.GetControllerOf(p) != nil {
			return fmt.Errorf("relabelled pod still owned: %+v", p.OwnerReferences)
		}
		return nil
	})
	waitForAgents(t, ns, "adopter", 2, 20*time.Second)
	if got := eventReasons(t, ns, "adopter"); !slices.Contains(got, "AgentAdopted") || !slices.Contains(got, "AgentOrphaned") {
		t.Errorf("events %v lack AgentAdopted or AgentReleased", got)
	}
}

func TestHiveStatusWritesDoNotFollowTheTaskRate(t *testing.T) {
	ns := namespace(t)
	startKubelet(t, ns, 0)
	op := startOperator(t, func(o *controllers.Options) { o.StatusInterval = time.Second })
	create(t, builder.Hive(ns, "steady").Replicas(2).Obj())
	pods := waitForAgents(t, ns, "steady", 2, 20*time.Second)
	eventually(t, 10*time.Second, func() error {
		if c := condition(getHive(t, ns, "steady"), swarmv1alpha1.HiveProgressing); c.Reason != swarmv1alpha1.ReasonStable {
			return fmt.Errorf("Progressing = %+v", c)
		}
		return nil
	})

	// Tasks bind and finish as fast as this test can write them, for about three seconds.
	before := op.writes.hiveStatuses.Load()
	start := time.Now()
	changes := 0
	for i := 0; time.Since(start) < 3*time.Second; i++ {
		task := bindTask(t, ns, "steady", fmt.Sprintf("quick-%d", i), pods[i%2].Name)
		setTaskPhase(t, task, swarmv1alpha1.TaskSucceeded, task.Status.Agent)
		changes += 2
	}
	elapsed := time.Since(start)
	time.Sleep(1500 * time.Millisecond)
	writes := op.writes.hiveStatuses.Load() - before
	limit := int64(elapsed/time.Second) + 3
	t.Logf("%d task changes in %v cost %d hive status writes", changes, elapsed.Round(time.Millisecond), writes)
	if writes > limit {
		t.Errorf("%d hive status writes for %d task changes in %v; want at most %d (about one a second)", writes, changes, elapsed, limit)
	}
	if writes == 0 {
		t.Error("the hive status never showed the task activity")
	}
	// The final counts do land.
	eventually(t, 5*time.Second, func() error {
		h := getHive(t, ns, "steady")
		if h.Status.BusyAgents != 0 || h.Status.RunningTasks != 0 || h.Status.IdleAgents != 2 {
			return fmt.Errorf("status counts %+v", h.Status)
		}
		return nil
	})
}

// Guard against a reconcile for a hive that does not exist doing anything but return.
func TestHiveReconcileOfAMissingHive(t *testing.T) {
	ns := namespace(t)
	startOperator(t)
	create(t, builder.Hive(ns, "brief").Replicas(1).Obj())
	if err := env.Client.Delete(t.Context(), builder.Hive(ns, "brief").Obj()); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	pods := &corev1.PodList{}
	if err := env.Client.List(t.Context(), pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if metav1.GetControllerOf(&p) == nil {
			t.Errorf("pod %s has no owner", p.Name)
		}
	}
}

func TestHiveConvergesThroughFailingWrites(t *testing.T) {
	ns := namespace(t)
	startKubelet(t, ns, 50*time.Millisecond)
	op := startOperator(t)
	// Every other write of a pod fails with a server error, every third status write with
	// a conflict: the controller must neither give up nor do anything twice.
	var n atomic.Int64
	fault := faultFunc(func(verb string, obj client.Object) error {
		if obj.GetNamespace() != ns {
			return nil
		}
		i := n.Add(1)
		switch obj.(type) {
		case *corev1.Pod:
			if i%2 == 0 {
				return apierrors.NewInternalError(fmt.Errorf("injected %s failure", verb))
			}
		case *swarmv1alpha1.Hive, *policyv1.PodDisruptionBudget:
			if i%3 == 0 {
				return apierrors.NewConflict(swarmv1alpha1.GroupVersion.WithResource("hives").GroupResource(), obj.GetName(), fmt.Errorf("injected"))
			}
		}
		return nil
	})
	op.fault.Store(&fault)

	create(t, builder.Hive(ns, "flaky").Replicas(4).Obj())
	waitForAgents(t, ns, "flaky", 4, 30*time.Second)
	patchHive(t, ns, "flaky", func(h *swarmv1alpha1.Hive) { h.Spec.Template.Spec.Containers[0].Image = "example.com/agent:v2" })
	waitForAgents(t, ns, "flaky", 4, 30*time.Second)
	patchHive(t, ns, "flaky", func(h *swarmv1alpha1.Hive) { h.Spec.Replicas = ptr.To[int32](1) })
	waitForAgents(t, ns, "flaky", 1, 30*time.Second)
	if n.Load() < 10 {
		t.Fatalf("only %d writes went through the fault injector", n.Load())
	}
}

func TestHiveLeavesAForeignDisruptionBudgetAlone(t *testing.T) {
	ns := namespace(t)
	startKubelet(t, ns, 0)
	startOperator(t)
	foreign := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shared"},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(0)), Selector: &metav1.LabelSelector{}},
	}
	create(t, foreign)
	create(t, builder.Hive(ns, "shared").Replicas(1).Obj())
	waitForAgents(t, ns, "shared", 1, 20*time.Second)
	got := &policyv1.PodDisruptionBudget{}
	if err := env2Get(t, ns, "shared", got); err != nil {
		t.Fatal(err)
	}
	if len(got.OwnerReferences) != 0 || got.Spec.MaxUnavailable != nil || got.Spec.MinAvailable.IntValue() != 0 {
		t.Errorf("the foreign budget was changed: %+v", got)
	}
}

func TestAgentsRunAsTheTemplatesServiceAccount(t *testing.T) {
	ns := namespace(t)
	startKubelet(t, ns, 0)
	startOperator(t)
	create(t, builder.Hive(ns, "own").Replicas(1).Obj())
	custom := builder.Hive(ns, "custom").Replicas(1).Obj()
	custom.Spec.Template.Spec.ServiceAccountName = "model-reader"
	create(t, custom)
	waitForAgents(t, ns, "own", 1, 20*time.Second)
	pod := waitForAgents(t, ns, "custom", 1, 20*time.Second)[0]
	if pod.Spec.ServiceAccountName != "model-reader" {
		t.Errorf("pod runs as %q", pod.Spec.ServiceAccountName)
	}
	sa := &corev1.ServiceAccount{}
	if err := env2Get(t, ns, "own-agent", sa); err != nil {
		t.Errorf("no service account for the hive without one: %v", err)
	}
	if err := env2Get(t, ns, "custom-agent", sa); err == nil {
		t.Error("a service account was made for a hive whose template names one")
	}
	subject := func() (string, error) {
		b := &rbacv1.RoleBinding{}
		if err := env2Get(t, ns, "custom-agent", b); err != nil {
			return "", err
		}
		if len(b.Subjects) != 1 {
			return "", fmt.Errorf("subjects %+v", b.Subjects)
		}
		return b.Subjects[0].Name, nil
	}
	if name, err := subject(); err != nil || name != "model-reader" {
		t.Errorf("the agents' role is bound to %q (%v)", name, err)
	}
	// Another account in the template: the binding follows it.
	patchHive(t, ns, "custom", func(h *swarmv1alpha1.Hive) { h.Spec.Template.Spec.ServiceAccountName = "other" })
	eventually(t, 20*time.Second, func() error {
		if name, err := subject(); err != nil || name != "other" {
			return fmt.Errorf("bound to %q: %w", name, err)
		}
		return nil
	})
	role := &rbacv1.Role{}
	if err := env2Get(t, ns, "custom-agent", role); err != nil {
		t.Fatal(err)
	}
	base := role.DeepCopy()
	role.Rules = nil
	if err := env.Client.Patch(t.Context(), role, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	patchHive(t, ns, "custom", func(h *swarmv1alpha1.Hive) { h.Spec.Replicas = ptr.To[int32](2) })
	eventually(t, 20*time.Second, func() error {
		if err := env2Get(t, ns, "custom-agent", role); err != nil {
			return err
		}
		if len(role.Rules) != 2 {
			return fmt.Errorf("role rules %+v were not restored", role.Rules)
		}
		return nil
	})
}
