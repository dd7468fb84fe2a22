//go:build e2e

// Package e2e runs the operator on a local simulated cluster (kwokctl's binary runtime: a
// real etcd, API server, scheduler and controller manager, with kwok simulating nodes), so
// that scheduling, garbage collection and the disruption controller are real. The packaged
// chart (make chart-package) is installed with Helm by reference from an OCI registry, and
// upgraded to a next release whose CRD changed; the operator runs in this process as the
// chart's service account, so the chart's RBAC is what it gets; agents are real SDK agents,
// one per Running pod.
//
// Run it with `make test-e2e`, which provides the binaries.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/controllers"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/pkg/agent"
	"github.com/aihub-dev/hive-operator/pkg/handlers"
	"github.com/aihub-dev/hive-operator/test/builder"
	"github.com/aihub-dev/hive-operator/test/fleet"
	"github.com/aihub-dev/hive-operator/test/kubelet"
	"github.com/aihub-dev/hive-operator/test/kwok"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

const (
	releaseNamespace = "hive-system"
	operatorAccount  = "hive-operator"
	ns               = "default"
)

// cluster is the kwok cluster of the run, with kwok's default stages: pods become Ready at
// once and a graceful deletion is finished at once.
type cluster struct {
	*kwok.Cluster
	config *rest.Config
	client client.Client
}

var c *cluster

func TestMain(m *testing.M) {
	code, err := runSuite(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func runSuite(m *testing.M) (int, error) {
	k8sDir, kwokDir, err := kwok.DirsFromEnv("make test-e2e")
	if err != nil {
		return 0, err
	}
	start := time.Now()
	k, err := kwok.Create(context.Background(), kwok.Options{
		Name:   fmt.Sprintf("hive-e2e-%d", time.Now().Unix()%100000),
		K8sDir: k8sDir, KwokDir: kwokDir, Nodes: 3,
	})
	if err != nil {
		return 0, err
	}
	defer func() {
		if err := k.Delete(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
		}
	}()
	c = &cluster{Cluster: k, config: k.Config()}
	c.config.QPS, c.config.Burst = 200, 400
	if c.client, err = client.New(c.config, client.Options{Scheme: testenv.Scheme}); err != nil {
		return 0, fmt.Errorf("creating a client: %w", err)
	}
	fmt.Fprintf(os.Stderr, "e2e: cluster %s up in %v\n", k.Name(), time.Since(start).Round(time.Millisecond))
	return m.Run(), nil
}

// helm runs the project's pinned Helm against the cluster and returns what it printed on
// stdout (it reports pulls and pushes on stderr).
func helm(t *testing.T, args ...string) string {
	t.Helper()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	full := append([]string{"tool", "-modfile=" + filepath.Join(root, "hack", "tools", "helm", "go.mod"), "helm", "--kubeconfig", c.Kubeconfig()}, args...)
	cmd := exec.Command("go", full...)
	cmd.Dir = root
	// Keep helm away from the user's registries, repositories and cache.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"), "HELM_DATA_HOME="+filepath.Join(home, "data"))
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	testenv.Eventually(t, timeout, 200*time.Millisecond, f)
}

// startOperator runs the operator as the chart's service account would, with leader
// election in the release namespace. It returns a function that stops it.
func startOperator(t *testing.T) (stop func()) {
	t.Helper()
	cfg := rest.CopyConfig(c.config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: fmt.Sprintf("system:serviceaccount:%s:%s", releaseNamespace, operatorAccount),
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + releaseNamespace, "system:authenticated"},
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  testenv.Scheme,
		Cache:                   controllers.CacheOptions(),
		Metrics:                 metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:  "0",
		LeaderElection:          true,
		LeaderElectionID:        "hive-operator.swarm.aihub.dev",
		LeaderElectionNamespace: releaseNamespace,
		Controller:              config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatalf("creating the manager: %v", err)
	}
	if err := controllers.Setup(context.Background(), mgr, controllers.Options{}); err != nil {
		t.Fatal(err)
	}
	stop, exited := testenv.Background(t, "the operator", mgr.Start)
	select {
	case <-mgr.Elected():
	case <-exited:
		t.Fatal("the operator stopped before it became leader")
	case <-time.After(60 * time.Second):
		t.Fatal("the operator never became leader")
	}
	return stop
}

func agentPods(t *testing.T, hive string) []corev1.Pod {
	t.Helper()
	pods := &corev1.PodList{}
	if err := c.client.List(context.Background(), pods, client.InNamespace(ns), client.MatchingLabels{swarmv1alpha1.LabelHive: hive}); err != nil {
		t.Fatal(err)
	}
	var live []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	return live
}

// waitAgents waits for n ready agents of the hive's current revision, scheduled on nodes.
func waitAgents(t *testing.T, hive string, n int) {
	t.Helper()
	eventually(t, 90*time.Second, func() error {
		h := &swarmv1alpha1.Hive{}
		if err := c.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: hive}, h); err != nil {
			return err
		}
		pods := agentPods(t, hive)
		ready := 0
		for i := range pods {
			if agentpod.IsReady(&pods[i]) && pods[i].Spec.NodeName != "" && agentpod.Revision(&pods[i]) == h.Status.UpdateRevision {
				ready++
			}
		}
		if len(pods) != n || ready != n || h.Status.CurrentRevision != h.Status.UpdateRevision || h.Status.ReadyReplicas != int32(n) {
			return fmt.Errorf("%d pods, %d ready on nodes; status %+v", len(pods), ready, h.Status)
		}
		return nil
	})
}

func submit(t *testing.T, prefix string, n int) []string {
	t.Helper()
	var names []string
	for i := range n {
		task := builder.Task(ns, fmt.Sprintf("%s-%02d", prefix, i)).Hive("e2e").Input(fmt.Sprintf("input %d", i)).Obj()
		if err := c.client.Create(context.Background(), task); err != nil {
			t.Fatal(err)
		}
		names = append(names, task.Name)
	}
	return names
}

func waitSucceeded(t *testing.T, names []string) {
	t.Helper()
	eventually(t, 90*time.Second, func() error {
		for _, name := range names {
			task := &swarmv1alpha1.Task{}
			if err := c.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, task); err != nil {
				return err
			}
			if task.Status.Phase != swarmv1alpha1.TaskSucceeded || task.Status.Result != task.Spec.Input {
				return fmt.Errorf("task %s: %s %q %s", name, task.Status.Phase, task.Status.Result, task.Status.Message)
			}
		}
		return nil
	})
}

// checkUserRoles gives two users the cluster's own edit and view roles in the namespace and
// acts as each: what lets them use hives and tasks is the chart's roles, which the cluster's
// aggregation controller adds to edit and view.
func checkUserRoles(t *testing.T, hive string) {
	t.Helper()
	ctx := t.Context()
	as := map[string]client.Client{}
	for user, role := range map[string]string{"e2e-editor": "edit", "e2e-viewer": "view"} {
		binding := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
		}
		if err := c.client.Create(ctx, binding); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.client.Delete(context.Background(), binding) })
		cfg := rest.CopyConfig(c.config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:authenticated"}}
		cl, err := client.New(cfg, client.Options{Scheme: testenv.Scheme})
		if err != nil {
			t.Fatal(err)
		}
		as[role] = cl
	}
	task := builder.Task(ns, "by-editor").Hive(hive).Input("from the editor").Obj()
	eventually(t, 60*time.Second, func() error { return client.IgnoreAlreadyExists(as["edit"].Create(ctx, task)) })
	eventually(t, 60*time.Second, func() error {
		got := &swarmv1alpha1.Task{}
		if err := as["edit"].Get(ctx, client.ObjectKeyFromObject(task), got); err != nil {
			return err
		}
		if got.Status.Phase != swarmv1alpha1.TaskSucceeded || got.Status.Result != "from the editor" {
			return fmt.Errorf("the editor reads %s %q", got.Status.Phase, got.Status.Result)
		}
		return as["view"].Get(ctx, client.ObjectKeyFromObject(task), &swarmv1alpha1.Task{})
	})
	if err := as["view"].List(ctx, &swarmv1alpha1.HiveList{}, client.InNamespace(ns)); err != nil {
		t.Errorf("the viewer cannot list hives: %v", err)
	}
	if err := as["view"].Create(ctx, builder.Task(ns, "by-viewer").Hive(hive).Obj()); !apierrors.IsForbidden(err) {
		t.Errorf("the viewer creating a task: %v, want forbidden", err)
	}
	// Status is the operator's and the agents' to write, not the users'.
	for role, cl := range as {
		patch := client.RawPatch(types.MergePatchType, []byte(`{"status":{"result":"forged"}}`))
		if err := cl.Status().Patch(ctx, task.DeepCopy(), patch); !apierrors.IsForbidden(err) {
			t.Errorf("%s patching a task's status: %v, want forbidden", role, err)
		}
	}
}

// checkUpgrade upgrades the release to the repository's second chart the way the chart's
// README says (its CRDs applied server-side first, then helm upgrade), and checks that the
// new field is served, that the hive and the tasks from before are intact, and that the
// hive still answers tasks.
func checkUpgrade(t *testing.T, repo *chartRepo, before []string) {
	t.Helper()
	ctx := t.Context()
	hive := &swarmv1alpha1.Hive{}
	if err := c.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "e2e"}, hive); err != nil {
		t.Fatal(err)
	}

	applyCRDs(t, helm(t, "show", "crds", repo.ref, "--version", repo.second, "--plain-http"))
	helm(t, "upgrade", "hive-operator", repo.ref, "--version", repo.second, "--plain-http",
		"--namespace", releaseNamespace, "--set", "serviceAccount.name="+operatorAccount)

	deployment := &appsv1.Deployment{}
	if err := c.client.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: "hive-operator"}, deployment); err != nil {
		t.Fatal(err)
	}
	if got, want := deployment.Labels["helm.sh/chart"], "hive-operator-"+repo.second; got != want {
		t.Errorf("after the upgrade the manager's Deployment is of chart %q, want %q", got, want)
	}
	// Strict field validation refuses a field the schema lacks, rather than dropping it.
	noted := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": swarmv1alpha1.GroupVersion.String(), "kind": "Task",
		"metadata": map[string]any{"namespace": ns, "name": "noted"},
		"spec":     map[string]any{"hive": "e2e", "input": "noted", noteField: "kept"},
	}}
	eventually(t, 30*time.Second, func() error {
		return client.IgnoreAlreadyExists(c.client.Create(ctx, noted.DeepCopy(), client.FieldValidation("Strict")))
	})
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(noted.GroupVersionKind())
	if err := c.client.Get(ctx, client.ObjectKeyFromObject(noted), got); err != nil {
		t.Fatal(err)
	}
	if note, _, _ := unstructured.NestedString(got.Object, "spec", noteField); note != "kept" {
		t.Errorf("spec.%s of a new task is %q after the CRD upgrade, want \"kept\"", noteField, note)
	}

	after := &swarmv1alpha1.Hive{}
	if err := c.client.Get(ctx, client.ObjectKeyFromObject(hive), after); err != nil {
		t.Fatal(err)
	}
	if after.UID != hive.UID || after.Status.ReadyReplicas != hive.Status.ReadyReplicas {
		t.Errorf("the hive changed in the upgrade: uid %s -> %s, ready %d -> %d", hive.UID, after.UID,
			hive.Status.ReadyReplicas, after.Status.ReadyReplicas)
	}
	waitSucceeded(t, before)
	waitSucceeded(t, append(submit(t, "upgraded", 10), "noted"))
}

func TestInstallRunScaleRollOutDeleteUninstall(t *testing.T) {
	ctx := context.Background()

	t.Log("installing the packaged chart with Helm, by reference from an OCI registry")
	repo := newChartRepo(t)
	helm(t, "install", "hive-operator", repo.ref, "--version", repo.first, "--plain-http",
		"--namespace", releaseNamespace, "--create-namespace", "--set", "serviceAccount.name="+operatorAccount)
	stopOperator := startOperator(t)

	// kwok makes the pods ready and removes deleted ones; the kubelet runs their agents.
	agents := &fleet.Fleet{Config: c.config, Handler: func(string) agent.Handler { return handlers.Echo(0) }}
	fleetCtx, stopFleet := context.WithCancel(ctx)
	defer stopFleet()
	k := &kubelet.Kubelet{Config: c.config, Client: c.client, Namespace: ns, Runtime: agents,
		Selector: labels.SelectorFromSet(labels.Set{swarmv1alpha1.LabelHive: "e2e"})}
	if err := k.Start(fleetCtx); err != nil {
		t.Fatal(err)
	}

	t.Log("a hive of two agents answers tasks")
	hive := builder.Hive(ns, "e2e").Replicas(2).Concurrency(2).Image("ghcr.io/aihub-dev/hive-agent:v0.1.0").Args("--mode=echo").Obj()
	if err := c.client.Create(ctx, hive); err != nil {
		t.Fatal(err)
	}
	waitAgents(t, "e2e", 2)
	first := submit(t, "first", 20)
	waitSucceeded(t, first)

	t.Log("upgrading to a chart whose Task CRD has a new field: CRDs first, as the README says")
	checkUpgrade(t, repo, first)

	t.Log("a namespace's editor submits a task and reads its result; its viewer reads but cannot submit")
	checkUserRoles(t, "e2e")

	t.Log("kubectl scale through the scale subresource")
	scale := &autoscalingv1.Scale{}
	if err := c.client.SubResource("scale").Get(ctx, hive, scale); err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 4
	if err := c.client.SubResource("scale").Update(ctx, hive, client.WithSubResourceBody(scale)); err != nil {
		t.Fatal(err)
	}
	waitAgents(t, "e2e", 4)

	t.Log("the disruption controller computes the hive's budget through its scale subresource")
	var poked time.Time
	eventually(t, 60*time.Second, func() error {
		pdb := &policyv1.PodDisruptionBudget{}
		if err := c.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "e2e"}, pdb); err != nil {
			return err
		}
		if pdb.Status.ExpectedPods != 4 || pdb.Status.CurrentHealthy != 4 || pdb.Status.DisruptionsAllowed != 1 {
			// The controller manager maps a new CRD's kind only once its discovery cache is
			// reset (every 30 s), and the disruption controller does not retry a failed sync
			// (it records SyncFailed and waits for the next event of the budget or its pods):
			// when the chart's CRDs came after the controller manager's first discovery, poke
			// the budget so that it syncs again once the Hive kind is mapped.
			failed := apimeta.FindStatusCondition(pdb.Status.Conditions, policyv1.DisruptionAllowedCondition)
			if failed != nil && failed.Reason == policyv1.SyncFailedReason && time.Since(poked) > 2*time.Second {
				poked = time.Now()
				base := pdb.DeepCopy()
				metav1.SetMetaDataAnnotation(&pdb.ObjectMeta, "e2e.swarm.aihub.dev/resync", poked.Format(time.RFC3339Nano))
				if err := c.client.Patch(ctx, pdb, client.MergeFrom(base)); err != nil {
					return fmt.Errorf("poking the budget: %w", err)
				}
			}
			return fmt.Errorf("budget status %+v", pdb.Status)
		}
		return nil
	})

	t.Log("a rollout replaces every agent while tasks keep flowing")
	h := &swarmv1alpha1.Hive{}
	if err := c.client.Get(ctx, client.ObjectKeyFromObject(hive), h); err != nil {
		t.Fatal(err)
	}
	before := h.Status.CurrentRevision
	base := h.DeepCopy()
	h.Spec.Template.Spec.Containers[0].Image = "ghcr.io/aihub-dev/hive-agent:v0.2.0"
	if err := c.client.Patch(ctx, h, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	during := submit(t, "during", 20)
	waitAgents(t, "e2e", 4)
	waitSucceeded(t, during)
	if err := c.client.Get(ctx, client.ObjectKeyFromObject(hive), h); err != nil {
		t.Fatal(err)
	}
	if h.Status.CurrentRevision == before {
		t.Errorf("currentRevision is still %s after the rollout", before)
	}
	for _, p := range agentPods(t, "e2e") {
		if p.Spec.Containers[0].Image != "ghcr.io/aihub-dev/hive-agent:v0.2.0" {
			t.Errorf("pod %s runs %s", p.Name, p.Spec.Containers[0].Image)
		}
	}

	t.Log("deleting the hive: the garbage collector removes what it owned")
	if err := c.client.Delete(ctx, hive); err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, func() error {
		pods := &corev1.PodList{}
		if err := c.client.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{swarmv1alpha1.LabelHive: "e2e"}); err != nil {
			return err
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("%d agent pods left", len(pods.Items))
		}
		for _, obj := range []client.Object{&policyv1.PodDisruptionBudget{}, &corev1.ServiceAccount{}, &rbacv1.Role{}, &rbacv1.RoleBinding{}} {
			name := "e2e"
			if _, ok := obj.(*policyv1.PodDisruptionBudget); !ok {
				name = "e2e-agent"
			}
			if err := c.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj); err == nil {
				return fmt.Errorf("%T %s still there", obj, name)
			} else if !apierrors.IsNotFound(err) {
				return fmt.Errorf("reading %T %s: %w", obj, name, err)
			}
		}
		return nil
	})

	t.Log("uninstalling the chart")
	stopOperator()
	helm(t, "uninstall", "hive-operator", "--namespace", releaseNamespace, "--wait")
	eventually(t, 60*time.Second, func() error {
		deployments := &appsv1.DeploymentList{}
		if err := c.client.List(ctx, deployments, client.InNamespace(releaseNamespace)); err != nil {
			return err
		}
		if len(deployments.Items) > 0 {
			return fmt.Errorf("%d deployments left in %s", len(deployments.Items), releaseNamespace)
		}
		roles := &rbacv1.ClusterRoleList{}
		if err := c.client.List(ctx, roles, client.MatchingLabels{"app.kubernetes.io/instance": "hive-operator"}); err != nil {
			return err
		}
		if len(roles.Items) > 0 {
			return fmt.Errorf("%d cluster roles of the release left", len(roles.Items))
		}
		return nil
	})
}
