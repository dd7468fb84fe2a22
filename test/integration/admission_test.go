package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/controllers"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

// applyManifests creates every object of a YAML file, leaving those that exist, and deletes
// those it created when the test ends: admission policies are cluster-wide, and one test's
// must not hold another's identities.
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
		err = env.Client.Create(context.Background(), u)
		switch {
		case err == nil:
			deleteAtCleanup(t, u)
		case !apierrors.IsAlreadyExists(err):
			t.Fatalf("creating %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// deleteAtCleanup deletes an object when the test ends.
func deleteAtCleanup(t *testing.T, obj client.Object) {
	t.Helper()
	t.Cleanup(func() {
		if err := env.Client.Delete(context.Background(), obj); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting %T %s: %v", obj, obj.GetName(), err)
		}
	})
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

// policyTask creates a task and writes its status as the operator would (the test's
// administrator, whom no policy holds), and returns it.
func policyTask(t *testing.T, ns string, status swarmv1alpha1.TaskStatus) *swarmv1alpha1.Task {
	t.Helper()
	task := &swarmv1alpha1.Task{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "policy-"},
		Spec:       swarmv1alpha1.TaskSpec{Hive: "h"},
	}
	create(t, task)
	base := task.DeepCopy()
	task.Status = status
	if err := env.Client.Status().Patch(t.Context(), task, client.MergeFrom(base)); err != nil {
		t.Fatalf("writing the status of task %s: %v", task.Name, err)
	}
	return task
}

// writeStatus reads a task afresh and patches its status as c, as an agent's
// compare-and-swap write would.
func writeStatus(c client.Client, task *swarmv1alpha1.Task, mutate func(*swarmv1alpha1.TaskStatus)) error {
	fresh := &swarmv1alpha1.Task{}
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(task), fresh); err != nil {
		return err
	}
	base := fresh.DeepCopy()
	mutate(&fresh.Status)
	return c.Status().Patch(context.Background(), fresh, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
}

// boundStatus is the status of a task the operator bound to agent a second ago.
func boundStatus(agent string) swarmv1alpha1.TaskStatus {
	return swarmv1alpha1.TaskStatus{
		Phase: swarmv1alpha1.TaskAssigned, Agent: agent, Attempt: 1,
		AssignedAt: ptr.To(metav1.NewMicroTime(time.Now().Add(-time.Second))),
	}
}

// grantTaskWrites lets users read tasks and write their status everywhere, as the agents'
// Roles and the operators' ClusterRoles would, until the test ends.
func grantTaskWrites(t *testing.T, users ...string) {
	t.Helper()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{GenerateName: "task-writer-"}, Rules: controllers.AgentRules()}
	create(t, role)
	deleteAtCleanup(t, role)
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "task-writer-"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
	}
	for _, u := range users {
		binding.Subjects = append(binding.Subjects, rbacv1.Subject{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: u})
	}
	create(t, binding)
	deleteAtCleanup(t, binding)
}

// deniedBy names the ValidatingAdmissionPolicy that refused a request.
var deniedBy = regexp.MustCompile(`ValidatingAdmissionPolicy '([^']+)'`)

// refusedBy returns nil when err is policy's refusal with want in its message.
func refusedBy(err error, policy, want string) error {
	if err == nil {
		return fmt.Errorf("the write passed; want %s to refuse it with %q", policy, want)
	}
	if m := deniedBy.FindStringSubmatch(err.Error()); m == nil || m[1] != policy || !strings.Contains(err.Error(), want) {
		return fmt.Errorf("refused with %w; want %s to refuse it with %q", err, policy, want)
	}
	return nil
}

// TestAdmissionPoliciesOfTwoReleasesDoNotBlockEachOther applies the admission policies the
// chart renders for two releases (test/chart/testdata/two-releases: team-a's operator in
// ops-a watching tasks-a, team-b's in ops-b watching tasks-b, each exempting a reporter of
// its tasks' namespace) and shows that each release's operator binds the tasks of its
// namespace, that agents are still held to their own tasks, and that other controllers pass.
// Before, each release's policy held every identity from a pod but its own operator, so it
// refused the other release's operator and every other controller.
func TestAdmissionPoliciesOfTwoReleasesDoNotBlockEachOther(t *testing.T) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	const policyA, policyB = "team-a-hive-operator-agent-task-status", "team-b-hive-operator-agent-task-status"
	for _, ns := range []string{"ops-a", "ops-b", "tasks-a", "tasks-b", "tools"} {
		if err := env.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	sa := func(ns, name string) string { return "system:serviceaccount:" + ns + ":" + name }
	grantTaskWrites(t,
		sa("ops-a", "hive-operator"), sa("ops-b", "hive-operator"),
		sa("tasks-a", "hive-agent"), sa("tasks-b", "hive-agent"),
		sa("tasks-a", "reporter"), sa("tasks-b", "reporter"), sa("tasks-a", "intruder"),
		sa("tools", "indexer"))
	applyManifests(t, filepath.Join(root, "test", "chart", "testdata", "two-releases", "policies.yaml"))

	// Every identity is a service account with a pod in its token, as in-cluster clients are.
	operatorA := asAgent(t, "ops-a", "hive-operator", "team-a-hive-operator-5d8f-x2")
	operatorB := asAgent(t, "ops-b", "hive-operator", "team-b-hive-operator-7c4b-q9")
	agentA1 := asAgent(t, "tasks-a", "hive-agent", "agent-1")
	agentB1 := asAgent(t, "tasks-b", "hive-agent", "agent-1")
	reporterA := asAgent(t, "tasks-a", "reporter", "reporter-0")
	reporterB := asAgent(t, "tasks-b", "reporter", "reporter-0")
	intruderA := asAgent(t, "tasks-a", "intruder", "intruder-0")
	indexer := asAgent(t, "tools", "indexer", "indexer-0")

	pendingA, boundA := policyTask(t, "tasks-a", swarmv1alpha1.TaskStatus{}), policyTask(t, "tasks-a", boundStatus("agent-2"))
	pendingB, boundB := policyTask(t, "tasks-b", swarmv1alpha1.TaskStatus{}), policyTask(t, "tasks-b", boundStatus("agent-2"))
	succeed := func(s *swarmv1alpha1.TaskStatus) {
		s.Phase, s.Result = swarmv1alpha1.TaskSucceeded, "mine"
		s.FinishedAt = ptr.To(metav1.NewMicroTime(time.Now()))
	}
	bind := func(s *swarmv1alpha1.TaskStatus) {
		s.Phase, s.Agent, s.Attempt = swarmv1alpha1.TaskAssigned, "agent-1", s.Attempt+1
		s.AssignedAt = ptr.To(metav1.NewMicroTime(time.Now()))
	}
	note := func(s *swarmv1alpha1.TaskStatus) { s.Message = "indexed" }

	// Policies take a moment to be enforced after they are created: wait until the agents
	// of both namespaces are held. Which release's policy holds which namespace is checked
	// at the end.
	stranger := "agent agent-1 may only write tasks bound to it; task %s is bound to agent-2"
	for _, w := range []struct {
		agent client.Client
		task  *swarmv1alpha1.Task
	}{{agentA1, boundA}, {agentB1, boundB}} {
		eventually(t, 20*time.Second, func() error {
			err := writeStatus(w.agent, w.task, succeed)
			if refusedBy(err, policyA, fmt.Sprintf(stranger, w.task.Name)) == nil {
				return nil
			}
			return refusedBy(err, policyB, fmt.Sprintf(stranger, w.task.Name))
		})
	}

	// passes fails the test unless the write passes. Another test's policy may still be
	// enforced for a moment after that test deleted it: only its refusals are retried.
	passes := func(what string, c client.Client, task *swarmv1alpha1.Task, mutate func(*swarmv1alpha1.TaskStatus)) {
		t.Helper()
		eventually(t, 10*time.Second, func() error {
			err := writeStatus(c, task, mutate)
			if m := deniedBy.FindStringSubmatch(fmt.Sprint(err)); m != nil && m[1] != policyA && m[1] != policyB {
				return fmt.Errorf("%s: refused by another test's policy: %w", what, err)
			}
			if err != nil {
				t.Fatalf("%s: refused: %v", what, err)
			}
			return nil
		})
	}
	passes("operator A binds a task of tasks-a", operatorA, pendingA, bind)
	passes("operator B binds a task of tasks-b", operatorB, pendingB, bind)
	passes("the agent finishes the task bound to it", agentA1, pendingA, succeed)
	passes("the agent of tasks-b finishes the task bound to it", agentB1, pendingB, succeed)
	passes("the exempt reporter of tasks-a writes a task of tasks-a", reporterA, boundA, note)
	// team-a's policy does not exempt this reporter, but matches only tasks-a.
	passes("the exempt reporter of tasks-b writes a task of tasks-b", reporterB, boundB, note)
	// A service account of another namespace is not an agent of these tasks.
	passes("a controller of another namespace writes a task of tasks-a", indexer, boundA, note)

	// Agents, and any other service account of the namespace, are still held, each by the
	// policy of the release that watches its namespace.
	if err := refusedBy(writeStatus(agentA1, boundA, succeed), policyA, fmt.Sprintf(stranger, boundA.Name)); err != nil {
		t.Error(err)
	}
	if err := refusedBy(writeStatus(agentB1, boundB, succeed), policyB, fmt.Sprintf(stranger, boundB.Name)); err != nil {
		t.Error(err)
	}
	if err := refusedBy(writeStatus(intruderA, boundA, note), policyA, "agent intruder-0 may only write tasks bound to it"); err != nil {
		t.Error(err)
	}
	if err := refusedBy(writeStatus(agentA1, pendingA, func(s *swarmv1alpha1.TaskStatus) { s.Phase = swarmv1alpha1.TaskRunning }),
		policyA, "an agent may not move a task from Succeeded to Running"); err != nil {
		t.Error(err)
	}
}

// TestAgentPolicyGuardsDeadlinesBackoffsAndFailures checks that config/admission/policy.yaml
// keeps an agent from changing status.assignedAt (its attempt's deadline), from holding a
// task back with status.notBefore longer than the longest retry backoff, and from
// rewriting status.failedAttempts, while the writes of the agent protocol still pass.
func TestAgentPolicyGuardsDeadlinesBackoffsAndFailures(t *testing.T) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	const policy = "hive-agent-task-status"
	ns := namespace(t)
	grantTaskWrites(t, "system:serviceaccount:"+ns+":worker-agent")
	applyManifests(t, filepath.Join(root, "config", "admission", "policy.yaml"))
	agent := asAgent(t, ns, "worker-agent", "agent-a")

	other := policyTask(t, ns, boundStatus("agent-b"))
	eventually(t, 20*time.Second, func() error {
		return refusedBy(writeStatus(agent, other, func(s *swarmv1alpha1.TaskStatus) { s.Phase = swarmv1alpha1.TaskSucceeded }),
			policy, "agent agent-a may only write tasks bound to it")
	})

	now := func() *metav1.MicroTime { return ptr.To(metav1.NewMicroTime(time.Now())) }
	in := func(d time.Duration) *metav1.MicroTime { return ptr.To(metav1.NewMicroTime(time.Now().Add(d))) }
	attemptFailed := metav1.Condition{
		Type: swarmv1alpha1.TaskAttemptFailed, Status: metav1.ConditionTrue, Reason: swarmv1alpha1.ReasonAgentFailed,
		Message: "attempt 1 failed", LastTransitionTime: metav1.Now(),
	}
	// retry is a release after a failed attempt, as the protocol has agents write it.
	retry := func(backoff time.Duration) func(*swarmv1alpha1.TaskStatus) {
		return func(s *swarmv1alpha1.TaskStatus) {
			queued := time.Now()
			s.Phase, s.Agent, s.Message = swarmv1alpha1.TaskPending, "", "attempt 1 failed; retrying"
			s.FailedAttempts++
			s.QueuedAt = ptr.To(metav1.NewMicroTime(queued))
			s.NotBefore = ptr.To(metav1.NewMicroTime(queued.Add(backoff)))
			s.StartedAt = nil
			s.Conditions = []metav1.Condition{attemptFailed}
		}
	}

	for _, tc := range []struct {
		name   string
		status func(*swarmv1alpha1.TaskStatus) // the task's status before the write, from boundStatus
		write  func(*swarmv1alpha1.TaskStatus)
		want   string // the refusal's message; empty when the write must pass
	}{
		{
			name:  "extending the deadline through assignedAt is refused",
			write: func(s *swarmv1alpha1.TaskStatus) { s.AssignedAt = in(time.Hour) },
			want:  "an agent may not change status.assignedAt",
		},
		{
			name:  "clearing assignedAt is refused",
			write: func(s *swarmv1alpha1.TaskStatus) { s.AssignedAt = nil },
			want:  "an agent may not change status.assignedAt",
		},
		{
			name:  "parking a task a day ahead through notBefore is refused",
			write: retry(24 * time.Hour),
			want:  "is more than 10m after status.queuedAt",
		},
		{
			name:  "notBefore outside a release is refused",
			write: func(s *swarmv1alpha1.TaskStatus) { s.Phase, s.NotBefore = swarmv1alpha1.TaskRunning, in(time.Minute) },
			want:  "an agent may set status.notBefore only when it releases a task to Pending",
		},
		{
			name: "notBefore without queuedAt is refused",
			write: func(s *swarmv1alpha1.TaskStatus) {
				retry(time.Second)(s)
				s.QueuedAt = nil
			},
			want: "a release that sets status.notBefore must set status.queuedAt",
		},
		{
			name: "queuedAt a day ahead, to push notBefore along, is refused",
			write: func(s *swarmv1alpha1.TaskStatus) {
				s.Phase, s.Agent, s.FailedAttempts = swarmv1alpha1.TaskPending, "", 1
				s.QueuedAt, s.NotBefore = in(24*time.Hour), in(24*time.Hour+time.Minute)
			},
			want: "is more than a minute after the deadline of the attempt",
		},
		{
			name:  "queuedAt outside a release is refused",
			write: func(s *swarmv1alpha1.TaskStatus) { s.Phase, s.QueuedAt = swarmv1alpha1.TaskRunning, now() },
			want:  "an agent may set status.queuedAt only when it releases a task to Pending",
		},
		{
			name: "failedAttempts +2 is refused",
			write: func(s *swarmv1alpha1.TaskStatus) {
				s.Phase, s.Message, s.FinishedAt = swarmv1alpha1.TaskFailed, "failed", now()
				s.FailedAttempts += 2
			},
			want: "an agent may leave status.failedAttempts at 0 or add one for the attempt that failed, not set it to 2",
		},
		{
			name:   "resetting failedAttempts to win more retries is refused",
			status: func(s *swarmv1alpha1.TaskStatus) { s.FailedAttempts, s.Attempt = 2, 3 },
			write:  func(s *swarmv1alpha1.TaskStatus) { s.FailedAttempts = 0 },
			want:   "an agent may leave status.failedAttempts at 2 or add one for the attempt that failed, not set it to 0",
		},
		{name: "a release after a failure with a 1 s backoff passes", write: retry(time.Second)},
		{name: "a release with the longest backoff, 10m, passes", write: retry(10 * time.Minute)},
		{
			name: "a give-back on shutdown passes",
			write: func(s *swarmv1alpha1.TaskStatus) {
				s.Phase, s.Agent, s.Message, s.QueuedAt = swarmv1alpha1.TaskPending, "", "agent shutting down", now()
			},
		},
		{
			name:  "Running passes",
			write: func(s *swarmv1alpha1.TaskStatus) { s.Phase, s.StartedAt = swarmv1alpha1.TaskRunning, now() },
		},
		{
			name: "Succeeded passes",
			write: func(s *swarmv1alpha1.TaskStatus) {
				s.Phase, s.Result, s.FinishedAt = swarmv1alpha1.TaskSucceeded, "done", now()
			},
		},
		{
			name:   "Succeeded from Running passes",
			status: func(s *swarmv1alpha1.TaskStatus) { s.Phase, s.StartedAt = swarmv1alpha1.TaskRunning, now() },
			write: func(s *swarmv1alpha1.TaskStatus) {
				s.Phase, s.Result, s.FinishedAt = swarmv1alpha1.TaskSucceeded, "done", now()
			},
		},
		{
			name:   "Failed with no retries left passes",
			status: func(s *swarmv1alpha1.TaskStatus) { s.FailedAttempts, s.Attempt = 3, 4 },
			write: func(s *swarmv1alpha1.TaskStatus) {
				s.Phase, s.Message, s.FinishedAt = swarmv1alpha1.TaskFailed, "attempt 4 failed; no retries left", now()
				s.FailedAttempts++
				s.Conditions = []metav1.Condition{attemptFailed}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status := boundStatus("agent-a")
			if tc.status != nil {
				tc.status(&status)
			}
			task := policyTask(t, ns, status)
			err := writeStatus(agent, task, tc.write)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err := refusedBy(err, policy, tc.want); err != nil {
				t.Error(err)
			}
		})
	}
}
