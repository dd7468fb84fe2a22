package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/controllers"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/pkg/agent"
	"github.com/aihub-dev/hive-operator/test/builder"
)

// The tests of this file each reproduce a way work was lost, run twice or stuck, against
// a real API server with real agents, and show it no longer happens.

func TestAnAgentShuttingDownGracefullyIsNotLost(t *testing.T) {
	ns := namespace(t)
	// The handler outlasts the agent-lost grace (2s in these tests), not the agent's shutdown
	// grace (5s) nor the pod's termination grace period.
	w := newWorld(t, builder.Hive(ns, "graceful").TerminationGrace(30*time.Second).Obj(),
		func(context.Context, string, *agent.Task) (string, error) {
			time.Sleep(4 * time.Second)
			return "finished", nil
		})
	w.submit("long")
	agentName := w.waitPhase("long", swarmv1alpha1.TaskRunning, 20*time.Second).Status.Agent
	// SIGTERM: the pod stops being ready at once and its agent finishes the task.
	if err := env.Client.Delete(context.Background(), getPod(t, ns, agentName)); err != nil {
		t.Fatal(err)
	}
	task := w.waitPhase("long", swarmv1alpha1.TaskSucceeded, 30*time.Second)
	if task.Status.Attempt != 1 || task.Status.FailedAttempts != 0 || task.Status.Agent != agentName || task.Status.Result != "finished" {
		t.Errorf("status %+v", task.Status)
	}
	if c := meta.FindStatusCondition(task.Status.Conditions, swarmv1alpha1.TaskAttemptFailed); c != nil {
		t.Errorf("the attempt was declared failed: %+v", c)
	}
	if calls := w.callsOf("long"); len(calls) != 1 {
		t.Errorf("the task ran %d times", len(calls))
	}
}

func TestAFinishedDependencyOutlivesItsTTLWhileItsDependentsRun(t *testing.T) {
	ns := namespace(t)
	release := make(chan struct{})
	w := newWorld(t, builder.Hive(ns, "chain").Obj(), func(ctx context.Context, _ string, task *agent.Task) (string, error) {
		switch task.Name {
		case "blocker":
			<-release
		case "down":
			time.Sleep(2500 * time.Millisecond) // past its dependency's TTL
			res, err := task.DependencyResults(ctx)
			if err != nil {
				return "", err
			}
			return res["up"] + "!", nil
		}
		return "data", nil
	})

	// A dependent whose dependencies were met stays so when one is deleted.
	w.submit("up-2")
	w.waitPhase("up-2", swarmv1alpha1.TaskSucceeded, 20*time.Second)
	w.submit("blocker") // takes the only slot: the dependent waits in the queue
	w.waitPhase("blocker", swarmv1alpha1.TaskRunning, 20*time.Second)
	w.submit("down-2", func(t *swarmv1alpha1.Task) { t.Spec.DependsOn = []string{"up-2"} })
	eventually(t, 10*time.Second, func() error {
		if task := w.get("down-2"); !meta.IsStatusConditionTrue(task.Status.Conditions, swarmv1alpha1.TaskDependenciesReady) {
			return fmt.Errorf("down-2: %+v", task.Status)
		}
		return nil
	})
	if err := env.Client.Delete(context.Background(), w.get("up-2")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if got := w.get("down-2"); got.Status.Phase != swarmv1alpha1.TaskPending {
		t.Fatalf("a dependent whose dependencies were met went back to %s: %s", got.Status.Phase, got.Status.Message)
	}
	close(release)
	w.waitPhase("down-2", swarmv1alpha1.TaskSucceeded, 20*time.Second)

	// A dependency past its TTL stays readable while its dependent runs.
	w.submit("down", func(t *swarmv1alpha1.Task) { t.Spec.DependsOn = []string{"up"} })
	w.submit("up", func(t *swarmv1alpha1.Task) { t.Spec.TTLSecondsAfterFinished = ptr.To[int32](1) })
	if got := w.waitPhase("down", swarmv1alpha1.TaskSucceeded, 20*time.Second); got.Status.Result != "data!" {
		t.Errorf("down read %q from its dependency (%s)", got.Status.Result, got.Status.Message)
	}
	waitTaskGone(t, ns, "up", 10*time.Second) // once its dependent has finished
}

func TestAServiceAccountChangeKeepsOlderAgentsAuthorised(t *testing.T) {
	ns := namespace(t)
	for _, sa := range []string{"sa-one", "sa-two"} {
		create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}})
	}
	startKubelet(t, ns, 0)
	startOperator(t)
	create(t, builder.Hive(ns, "ids").ServiceAccount("sa-one").DrainTimeout(time.Hour).Obj())
	old := waitForAgents(t, ns, "ids", 1, 20*time.Second)[0]
	task := bindTask(t, ns, "ids", "busy", old.Name)

	subjects := func() []string {
		rb := &rbacv1.RoleBinding{}
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "ids-agent"}, rb); err != nil {
			return nil
		}
		var out []string
		for _, s := range rb.Subjects {
			out = append(out, s.Name)
		}
		return out
	}
	patchHive(t, ns, "ids", func(h *swarmv1alpha1.Hive) { h.Spec.Template.Spec.ServiceAccountName = "sa-two" })
	eventually(t, 20*time.Second, func() error {
		if got := subjects(); !slices.Equal(got, []string{"sa-one", "sa-two"}) {
			return fmt.Errorf("role binding subjects %v while the old agent still works", got)
		}
		if pods, _ := livePods(context.Background(), ns, "ids"); len(pods) != 2 {
			return fmt.Errorf("%d agents", len(pods))
		}
		return nil
	})
	// The old agent can still write its task's outcome.
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   "system:serviceaccount:" + ns + ":sa-one",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns},
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: ns, Verb: "patch", Group: swarmv1alpha1.GroupVersion.Group, Resource: "tasks", Subresource: "status",
		},
	}}
	if err := env.Client.Create(context.Background(), review); err != nil {
		t.Fatal(err)
	}
	if !review.Status.Allowed {
		t.Fatalf("the agent of the older revision lost its permissions mid-task: %+v", review.Status)
	}
	setTaskPhase(t, task, swarmv1alpha1.TaskSucceeded, old.Name)
	eventually(t, 20*time.Second, func() error {
		if got := subjects(); !slices.Equal(got, []string{"sa-two"}) {
			return fmt.Errorf("role binding subjects %v after the old agent went", got)
		}
		return nil
	})
}

// revisionCalls runs a world whose calls are marked with their agent's revision.
type revisionCalls struct {
	mu       sync.Mutex
	revision map[string]string // pod → revision
	slots    map[string]int    // pod → slots
}

func TestARolloutKeepsEveryReadyAgentWorking(t *testing.T) {
	ns := namespace(t)
	rc := &revisionCalls{revision: map[string]string{}, slots: map[string]int{}}
	// New agents take 2s to become ready, as when their image is pulled.
	hive := builder.Hive(ns, "rolling").Replicas(2).Concurrency(2).DrainTimeout(time.Minute).
		Rollout(intstr.FromInt32(1), intstr.FromInt32(0)).Obj()
	w := newWorldWith(t, hive, 2*time.Second, func(_ context.Context, _ string, _ *agent.Task) (string, error) {
		time.Sleep(600 * time.Millisecond)
		return "ok", nil
	}, func(pod *corev1.Pod, _ *agent.Options) {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		rc.revision[pod.Name] = agentpod.Revision(pod)
		rc.slots[pod.Name] = agentpod.Slots(pod)
	})
	oldRevision := getHive(t, ns, "rolling").Status.CurrentRevision
	over := watchSlots(t, ns)
	stop := make(chan struct{})
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(150 * time.Millisecond):
				w.submit(fmt.Sprintf("job-%03d", i))
			}
		}
	}()
	time.Sleep(time.Second)
	// The new revision has more slots: old agents must keep to their own.
	patchHive(t, ns, "rolling", func(h *swarmv1alpha1.Hive) {
		h.Spec.Template.Spec.Containers[0].Image = "example.com/agent:v2"
		h.Spec.Agent.Concurrency = 3
	})
	waitForAgents(t, ns, "rolling", 2, 60*time.Second)
	close(stop)

	calls := w.allCalls()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var firstNew time.Time
	for _, c := range calls {
		if rc.revision[c.agent] != oldRevision && (firstNew.IsZero() || c.at.Before(firstNew)) {
			firstNew = c.at
		}
	}
	oldAfterNew := 0
	for _, c := range calls {
		if rc.revision[c.agent] == oldRevision && c.at.After(firstNew.Add(300*time.Millisecond)) {
			oldAfterNew++
		}
	}
	if firstNew.IsZero() || oldAfterNew == 0 {
		t.Errorf("once an agent of the new revision worked, old agents got no more tasks (%d calls in all)", len(calls))
	}
	t.Logf("%d tasks ran; %d on old agents after the first new agent started", len(calls), oldAfterNew)
	for _, v := range over.finish(func(agent string) int { return rc.slots[agent] }) {
		t.Error(v)
	}
}

func TestTasksThatCannotRunDoNotScaleAHive(t *testing.T) {
	ns := namespace(t)
	startKubelet(t, ns, 0)
	startOperator(t)
	create(t, builder.Hive(ns, "idle").Replicas(0).Capabilities("cpu").Autoscaling(0, 5, func(a *swarmv1alpha1.AutoscalingSpec) {
		a.IdleTimeout = &metav1.Duration{Duration: time.Second}
		a.ScaleDownWindow = &metav1.Duration{Duration: time.Second}
	}).Obj())
	create(t, builder.Task(ns, "needs-gpu").Hive("idle").Needs("gpu").Obj())
	backingOff := builder.Task(ns, "backing-off").Hive("idle").Obj()
	create(t, backingOff)
	base := backingOff.DeepCopy()
	later := metav1.NewMicroTime(time.Now().Add(time.Hour))
	backingOff.Status.Phase, backingOff.Status.NotBefore, backingOff.Status.FailedAttempts = swarmv1alpha1.TaskPending, &later, 1
	if err := env.Client.Status().Patch(context.Background(), backingOff, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		h := getHive(t, ns, "idle")
		if r := ptr.Deref(h.Spec.Replicas, -1); r != 0 || h.Status.QueuedTasks != 0 {
			t.Fatalf("a hive with only tasks that cannot run now has %d replicas and %d queued tasks", r, h.Status.QueuedTasks)
		}
		time.Sleep(100 * time.Millisecond)
	}
	create(t, builder.Task(ns, "runnable").Hive("idle").Obj())
	eventually(t, 20*time.Second, func() error {
		if r := replicasOf(t, ns, "idle"); r != 1 {
			return fmt.Errorf("replicas %d after a runnable task came", r)
		}
		return nil
	})
}

func TestReleasesDoNotUseUpRetries(t *testing.T) {
	ns := namespace(t)
	w := newWorld(t, builder.Hive(ns, "restless").Replicas(2).TerminationGrace(30*time.Second).Obj(),
		func(ctx context.Context, _ string, task *agent.Task) (string, error) {
			switch task.Attempt {
			case 1, 2:
				<-ctx.Done() // the agent shuts down and gives the task back
				return "", ctx.Err()
			case 3:
				return "", errors.New("fails once")
			}
			return "ok", nil
		}, func(o *agent.Options) { o.ShutdownGrace = 300 * time.Millisecond })
	w.submit("task", func(t *swarmv1alpha1.Task) {
		t.Spec.MaxRetries = ptr.To[int32](1)
		t.Spec.Backoff = &metav1.Duration{Duration: 100 * time.Millisecond}
	})
	for attempt := int32(1); attempt <= 2; attempt++ {
		var agentName string
		eventually(t, 20*time.Second, func() error {
			task := w.get("task")
			if task.Status.Attempt != attempt || task.Status.Phase != swarmv1alpha1.TaskRunning {
				return fmt.Errorf("attempt %d %s, waiting for attempt %d to run", task.Status.Attempt, task.Status.Phase, attempt)
			}
			agentName = task.Status.Agent
			return nil
		})
		if err := env.Client.Delete(context.Background(), getPod(t, ns, agentName)); err != nil {
			t.Fatal(err)
		}
	}
	task := w.waitPhase("task", swarmv1alpha1.TaskSucceeded, 40*time.Second)
	if task.Status.Attempt != 4 || task.Status.FailedAttempts != 1 {
		t.Errorf("attempt %d, failedAttempts %d; want 4 attempts of which 1 failed", task.Status.Attempt, task.Status.FailedAttempts)
	}
}

func TestDependencyProblemsAreReported(t *testing.T) {
	ns := namespace(t)
	startOperator(t, func(o *controllers.Options) { o.MissingDependencyTimeout = 3 * time.Second })
	create(t, builder.Hive(ns, "deps").Replicas(0).Obj())
	task := func(name string, deps ...string) {
		create(t, builder.Task(ns, name).Hive("deps").DependsOn(deps...).Obj())
	}
	get := func(name string) *swarmv1alpha1.Task {
		tk := &swarmv1alpha1.Task{}
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, tk); err != nil {
			t.Fatal(err)
		}
		return tk
	}
	ready := func(tk *swarmv1alpha1.Task) metav1.Condition {
		if c := meta.FindStatusCondition(tk.Status.Conditions, swarmv1alpha1.TaskDependenciesReady); c != nil {
			return *c
		}
		return metav1.Condition{}
	}
	task("a", "b")
	task("b", "a")
	task("waits", "late")
	task("orphan", "never")
	// Both fail and say why. The first to be looked at finds the cycle; the other may then
	// find its dependency failed, whose message names the cycle.
	cycles := 0
	for _, name := range []string{"a", "b"} {
		eventually(t, 10*time.Second, func() error {
			tk := get(name)
			c := meta.FindStatusCondition(tk.Status.Conditions, swarmv1alpha1.TaskScheduled)
			if tk.Status.Phase != swarmv1alpha1.TaskFailed || c == nil ||
				(c.Reason != swarmv1alpha1.ReasonDependencyCycle && c.Reason != swarmv1alpha1.ReasonDependencyFailed) ||
				!strings.Contains(tk.Status.Message, "a → b → a") && !strings.Contains(tk.Status.Message, "b → a → b") {
				return fmt.Errorf("%s: %s %q %+v", name, tk.Status.Phase, tk.Status.Message, c)
			}
			if c.Reason == swarmv1alpha1.ReasonDependencyCycle {
				cycles++
			}
			return nil
		})
	}
	if cycles == 0 {
		t.Error("no task of the cycle was failed for the cycle")
	}
	eventually(t, 10*time.Second, func() error {
		tk := get("waits")
		if c := ready(tk); tk.Status.Phase != swarmv1alpha1.TaskBlocked || c.Reason != swarmv1alpha1.ReasonDependencyNotFound ||
			tk.Status.Message != "waiting for tasks late (not found)" {
			return fmt.Errorf("waits: %s %q %+v", tk.Status.Phase, tk.Status.Message, c)
		}
		return nil
	})
	// The missing task appears: the message no longer says it is missing.
	task("late")
	eventually(t, 10*time.Second, func() error {
		tk := get("waits")
		if c := ready(tk); c.Reason != swarmv1alpha1.ReasonWaitingForDependencies || tk.Status.Message != "waiting for tasks late" {
			return fmt.Errorf("waits after late was created: %q %+v", tk.Status.Message, c)
		}
		return nil
	})
	eventually(t, 15*time.Second, func() error {
		tk := get("orphan")
		if tk.Status.Phase != swarmv1alpha1.TaskFailed || !strings.Contains(tk.Status.Message, "did not exist within 3s") {
			return fmt.Errorf("orphan: %s %q", tk.Status.Phase, tk.Status.Message)
		}
		return nil
	})
	if got := append(eventReasons(t, ns, "a"), eventReasons(t, ns, "b")...); !slices.Contains(got, swarmv1alpha1.ReasonDependencyCycle) {
		t.Errorf("events of a and b: %v", got)
	}
}

func TestTheOperatorCachesNoInputsOrResults(t *testing.T) {
	ns := namespace(t)
	op := startOperator(t)
	input := strings.Repeat("x", 60000)
	task := builder.Task(ns, "big").Hive("nowhere").Input(input).Label("team", "search").Obj()
	task.Annotations = map[string]string{lastApplied: `{"spec":{"input":"` + input + `"}}`}
	create(t, task)
	base := task.DeepCopy()
	// A partial result, as an agent may write while it runs.
	task.Status.Phase, task.Status.Agent, task.Status.Attempt = swarmv1alpha1.TaskRunning, "agent-0", 1
	task.Status.Result = strings.Repeat("y", 60000)
	if err := env.Client.Status().Patch(context.Background(), task, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		cached := &swarmv1alpha1.Task{}
		if err := op.cache.Get(context.Background(), client.ObjectKeyFromObject(task), cached); err != nil {
			return err
		}
		// The operator may requeue the task of an agent it cannot find; the attempt stays.
		if cached.Status.Attempt != 1 {
			return fmt.Errorf("the cache shows attempt %d, not the status write", cached.Status.Attempt)
		}
		if cached.Spec.Input != "" || cached.Status.Result != "" || cached.Annotations[lastApplied] != "" || cached.Labels != nil {
			return fmt.Errorf("the cache holds %d bytes of input, %d of result, %d of last-applied, labels %v",
				len(cached.Spec.Input), len(cached.Status.Result), len(cached.Annotations[lastApplied]), cached.Labels)
		}
		return nil
	})
	if got := getTaskFromServer(t, ns, "big"); got.Spec.Input != input || got.Labels["team"] != "search" {
		t.Error("the task's input or labels were lost on the API server")
	}
	// Finished, it leaves the cache altogether.
	base = getTaskFromServer(t, ns, "big")
	task = base.DeepCopy()
	task.Status.Phase = swarmv1alpha1.TaskSucceeded
	if err := env.Client.Status().Patch(context.Background(), task, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	notCached(t, op, ns, "big")
}

// lastApplied is the annotation `kubectl apply` keeps the applied object in.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

func getTaskFromServer(t *testing.T, ns, name string) *swarmv1alpha1.Task {
	t.Helper()
	tk := &swarmv1alpha1.Task{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, tk); err != nil {
		t.Fatal(err)
	}
	return tk
}
