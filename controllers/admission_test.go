package controllers

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

// applyManifests creates every object of a YAML file, leaving those that exist.
func applyManifests(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatal(err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if err := env.Client.Create(context.Background(), u); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// asAgent returns a client that authenticates as an agent pod's service-account token would:
// the service account's user name and groups, with the pod's name in the extras.
func asAgent(t *testing.T, ns, serviceAccount, pod string) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: fmt.Sprintf("system:serviceaccount:%s:%s", ns, serviceAccount),
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
		Extra:    map[string][]string{"authentication.kubernetes.io/pod-name": {pod}},
	}
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAgentsMayWriteOnlyTheirOwnTasks(t *testing.T) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	applyManifests(t, filepath.Join(root, "config", "admission", "policy.yaml"))

	ns := namespace(t)
	startKubelet(t, ns, 0)
	startOperator(t)
	create(t, hiveOf(ns, "guarded", 2, 1))
	waitForAgents(t, ns, "guarded", 2, 20*time.Second)
	for _, name := range []string{"one", "two"} {
		create(t, &swarmv1alpha1.Task{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       swarmv1alpha1.TaskSpec{Hive: "guarded", Input: name},
		})
	}
	owner := map[string]string{}
	eventually(t, 20*time.Second, func() error {
		for _, name := range []string{"one", "two"} {
			task := &swarmv1alpha1.Task{}
			if err := env2Get(t, ns, name, task); err != nil {
				return err
			}
			if task.Status.Phase != swarmv1alpha1.TaskAssigned {
				return fmt.Errorf("task %s is %s", name, task.Status.Phase)
			}
			owner[name] = task.Status.Agent
		}
		return nil
	})
	if owner["one"] == owner["two"] {
		t.Fatalf("both tasks went to %s; each agent has one slot", owner["one"])
	}
	agentOne := asAgent(t, ns, "guarded-agent", owner["one"])

	finish := func(c client.Client, name string, mutate func(*swarmv1alpha1.Task)) error {
		task := &swarmv1alpha1.Task{}
		if err := env2Get(t, ns, name, task); err != nil {
			return err
		}
		base := task.DeepCopy()
		mutate(task)
		return c.Status().Patch(context.Background(), task, client.MergeFrom(base))
	}
	succeedIt := func(task *swarmv1alpha1.Task) {
		task.Status.Phase = swarmv1alpha1.TaskSucceeded
		task.Status.Result = "mine"
	}

	// The policy takes a moment to be enforced after it is created.
	eventually(t, 20*time.Second, func() error {
		err := finish(agentOne, "two", succeedIt)
		if err == nil {
			return errors.New("agent one wrote the task bound to agent two")
		}
		if want := fmt.Sprintf("agent %s may only write tasks bound to it; task two is bound to %s", owner["one"], owner["two"]); !strings.Contains(err.Error(), want) {
			return fmt.Errorf("refused with %w; want %q", err, want)
		}
		return nil
	})
	if err := finish(agentOne, "one", func(task *swarmv1alpha1.Task) { task.Status.Agent = owner["two"] }); err == nil ||
		!strings.Contains(err.Error(), "not bind it to another agent") {
		t.Errorf("handing a task to another agent: %v", err)
	}
	if err := finish(agentOne, "one", func(task *swarmv1alpha1.Task) { task.Status.Attempt = 7 }); err == nil ||
		!strings.Contains(err.Error(), "may not change status.attempt") {
		t.Errorf("changing the attempt: %v", err)
	}
	if err := finish(agentOne, "one", succeedIt); err != nil {
		t.Fatalf("agent one could not finish its own task: %v", err)
	}
	if err := finish(agentOne, "one", func(task *swarmv1alpha1.Task) { task.Status.Phase = swarmv1alpha1.TaskRunning }); err == nil ||
		!strings.Contains(err.Error(), "may not move a task from Succeeded to Running") {
		t.Errorf("reopening a finished task: %v", err)
	}
	// The agent's role lets it read tasks but not change their spec.
	task := &swarmv1alpha1.Task{}
	if err := agentOne.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "two"}, task); err != nil {
		t.Fatalf("agent one cannot read tasks: %v", err)
	}
	base := task.DeepCopy()
	task.Spec.Priority = 9
	if err := agentOne.Patch(context.Background(), task, client.MergeFrom(base)); !apierrors.IsForbidden(err) {
		t.Errorf("agent one changed a task's spec: %v", err)
	}
}
