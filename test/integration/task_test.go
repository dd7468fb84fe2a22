package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/controllers"
	"github.com/aihub-dev/hive-operator/pkg/agent"
	"github.com/aihub-dev/hive-operator/test/builder"
	"github.com/aihub-dev/hive-operator/test/fleet"
	"github.com/aihub-dev/hive-operator/test/kubelet"
)

// call is one handler invocation.
type call struct {
	task    string
	attempt int32
	agent   string
	at      time.Time
}

// behaviour is what the test's handler does for one call.
type behaviour func(ctx context.Context, agentName string, t *agent.Task) (string, error)

// world is a namespace with a hive, a kubelet, the operator and a fleet of real agents.
type world struct {
	t       *testing.T
	ns      string
	hive    string
	op      *operator
	fleet   *fleet.Fleet
	kubelet *kubelet.Kubelet

	mu    sync.Mutex
	calls []call

	agentWrites atomic.Int64
}

func newWorld(t *testing.T, hive *swarmv1alpha1.Hive, behave behaviour, agentOpts ...func(*agent.Options)) *world {
	t.Helper()
	return newWorldWith(t, hive, 0, behave, nil, agentOpts...)
}

// newWorldWith is newWorld whose pods become ready readyAfter their creation, and whose
// onStart is told of each agent started, with its pod.
func newWorldWith(t *testing.T, hive *swarmv1alpha1.Hive, readyAfter time.Duration, behave behaviour,
	onStart func(*corev1.Pod, *agent.Options), agentOpts ...func(*agent.Options)) *world {
	t.Helper()
	w := &world{t: t, ns: hive.Namespace, hive: hive.Name}
	w.fleet = &fleet.Fleet{
		Config: env.Config,
		Handler: func(pod string) agent.Handler {
			return func(ctx context.Context, task *agent.Task) (string, error) {
				w.mu.Lock()
				w.calls = append(w.calls, call{task.Name, task.Attempt, pod, time.Now()})
				w.mu.Unlock()
				return behave(ctx, pod, task)
			}
		},
		Options: func(pod *corev1.Pod, o *agent.Options) {
			if onStart != nil {
				onStart(pod, o)
			}
			c, err := client.New(o.Config, client.Options{Scheme: env.Client.Scheme()})
			if err != nil {
				t.Errorf("creating an agent client: %v", err)
				return
			}
			o.Client = interceptor.NewClient(client.WithWatch(watchless{c}), interceptor.Funcs{
				SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
					w.agentWrites.Add(1)
					return c.SubResource(sub).Patch(ctx, obj, p, opts...)
				},
			})
			for _, f := range agentOpts {
				f(o)
			}
		},
	}
	w.kubelet = startKubelet(t, w.ns, readyAfter, w.fleet)
	w.op = startOperator(t, func(o *controllers.Options) { o.AgentLostGrace = 2 * time.Second })
	create(t, hive)
	replicas := int(ptr.Deref(hive.Spec.Replicas, 1))
	if replicas > 0 {
		waitForAgents(t, w.ns, hive.Name, replicas, 30*time.Second+readyAfter)
		eventually(t, 10*time.Second, func() error {
			if n := len(w.fleet.Running()); n != replicas {
				return fmt.Errorf("%d agents running, want %d", n, replicas)
			}
			return nil
		})
	}
	return w
}

// watchless lets a plain client stand where the interceptor wants a watching one; the agent
// never watches through it.
type watchless struct{ client.Client }

func (watchless) Watch(context.Context, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
	return nil, errors.New("not supported")
}

func (w *world) submit(name string, mutate ...func(*swarmv1alpha1.Task)) *swarmv1alpha1.Task {
	w.t.Helper()
	task := builder.Task(w.ns, name).Hive(w.hive).Input("in:" + name).Obj()
	for _, m := range mutate {
		m(task)
	}
	create(w.t, task)
	return task
}

func (w *world) get(name string) *swarmv1alpha1.Task {
	w.t.Helper()
	task := &swarmv1alpha1.Task{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: w.ns, Name: name}, task); err != nil {
		w.t.Fatalf("reading task %s: %v", name, err)
	}
	return task
}

// waitPhase waits until a task reaches a phase.
func (w *world) waitPhase(name string, phase swarmv1alpha1.TaskPhase, timeout time.Duration) *swarmv1alpha1.Task {
	w.t.Helper()
	var task *swarmv1alpha1.Task
	eventually(w.t, timeout, func() error {
		task = w.get(name)
		if task.Status.Phase != phase {
			return fmt.Errorf("task %s is %s (%s), want %s", name, task.Status.Phase, task.Status.Message, phase)
		}
		return nil
	})
	return task
}

func (w *world) callsOf(task string) []call {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []call
	for _, c := range w.calls {
		if c.task == task {
			out = append(out, c)
		}
	}
	return out
}

func (w *world) allCalls() []call {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.calls)
}

func hiveOf(ns, name string, replicas, concurrency int32) *swarmv1alpha1.Hive {
	return builder.Hive(ns, name).Replicas(replicas).Concurrency(concurrency).Obj()
}

func succeed(_ context.Context, _ string, t *agent.Task) (string, error) {
	return "done:" + t.Input, nil
}

func TestTasksRunToCompletionWithinSlots(t *testing.T) {
	ns := namespace(t)
	w := newWorld(t, hiveOf(ns, "workers", 5, 2), func(_ context.Context, _ string, task *agent.Task) (string, error) {
		time.Sleep(time.Duration(len(task.Name)%4) * 5 * time.Millisecond)
		return "done:" + task.Input, nil
	})
	slots := watchSlots(t, ns)

	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { w.submit(fmt.Sprintf("job-%03d", i)) })
	}
	wg.Wait()
	for _, task := range waitAllSucceeded(t, ns, n, 60*time.Second) {
		if want := "done:in:" + task.Name; task.Status.Result != want {
			t.Errorf("task %s result %q, want %q", task.Name, task.Status.Result, want)
		}
	}
	for _, v := range slots.finish(func(string) int { return 2 }) {
		t.Error(v)
	}
	perTask := map[string]int{}
	agents := map[string]int{}
	for _, c := range w.allCalls() {
		perTask[c.task]++
		agents[c.agent]++
	}
	for task, calls := range perTask {
		if calls != 1 {
			t.Errorf("task %s ran %d times with no agent lost", task, calls)
		}
	}
	if len(perTask) != n || len(agents) != 5 {
		t.Errorf("%d tasks ran on %d agents; want %d on 5", len(perTask), len(agents), n)
	}
	t.Logf("tasks per agent: %v", agents)
}

func TestQuickTasksCostThreeWrites(t *testing.T) {
	ns := namespace(t)
	w := newWorld(t, hiveOf(ns, "frugal", 2, 4), succeed)
	w.op.writes.taskStatuses.Store(0)
	const n = 40
	for i := range n {
		w.submit(fmt.Sprintf("quick-%02d", i))
	}
	for i := range n {
		w.waitPhase(fmt.Sprintf("quick-%02d", i), swarmv1alpha1.TaskSucceeded, 30*time.Second)
	}
	time.Sleep(500 * time.Millisecond) // let any stray write land before counting
	// Create (the user's), bind (the operator's), finish (the agent's): nothing else.
	if got := w.op.writes.taskStatuses.Load(); got != n {
		t.Errorf("the operator wrote %d task statuses for %d tasks; want one bind each", got, n)
	}
	if got := w.agentWrites.Load(); got != n {
		t.Errorf("the agents wrote %d task statuses for %d quick tasks; want one finish each", got, n)
	}
}

func TestTasksAreDispatchedByPriorityThenAge(t *testing.T) {
	ns := namespace(t)
	release := make(chan struct{})
	w := newWorld(t, hiveOf(ns, "single", 1, 1), func(_ context.Context, _ string, task *agent.Task) (string, error) {
		if task.Name == "blocker" {
			<-release
		}
		return "ok", nil
	})
	w.submit("blocker")
	w.waitPhase("blocker", swarmv1alpha1.TaskAssigned, 20*time.Second)
	w.submit("mid-b")
	time.Sleep(1100 * time.Millisecond) // creation times have second precision
	w.submit("low", func(t *swarmv1alpha1.Task) { t.Spec.Priority = -5 })
	w.submit("mid-a")
	w.submit("high", func(t *swarmv1alpha1.Task) { t.Spec.Priority = 10 })
	time.Sleep(300 * time.Millisecond)
	close(release)
	for _, name := range []string{"high", "mid-b", "mid-a", "low"} {
		w.waitPhase(name, swarmv1alpha1.TaskSucceeded, 20*time.Second)
	}
	var order []string
	for _, c := range w.allCalls() {
		order = append(order, c.task)
	}
	want := []string{"blocker", "high", "mid-b", "mid-a", "low"}
	if !slices.Equal(order, want) {
		t.Errorf("run order %v, want %v", order, want)
	}
}

func TestFailedAttemptsAreRetriedWithBackoff(t *testing.T) {
	ns := namespace(t)
	w := newWorld(t, hiveOf(ns, "flaky", 2, 1), func(_ context.Context, _ string, task *agent.Task) (string, error) {
		if task.Attempt < 3 {
			return "", fmt.Errorf("transient failure %d", task.Attempt)
		}
		return "third time lucky", nil
	})
	w.submit("retry", func(t *swarmv1alpha1.Task) {
		t.Spec.MaxRetries = ptr.To[int32](3)
		t.Spec.Backoff = &metav1.Duration{Duration: 400 * time.Millisecond}
	})
	task := w.waitPhase("retry", swarmv1alpha1.TaskSucceeded, 30*time.Second)
	if task.Status.Attempt != 3 || task.Status.Result != "third time lucky" {
		t.Errorf("status %+v", task.Status)
	}
	c := meta.FindStatusCondition(task.Status.Conditions, swarmv1alpha1.TaskAttemptFailed)
	if c == nil || c.Reason != swarmv1alpha1.ReasonAgentFailed || !strings.Contains(c.Message, "transient failure 2") {
		t.Errorf("AttemptFailed condition %+v", c)
	}
	calls := w.callsOf("retry")
	if len(calls) != 3 {
		t.Fatalf("%d calls, want 3", len(calls))
	}
	for i, minGap := range []time.Duration{400 * time.Millisecond, 800 * time.Millisecond} {
		if gap := calls[i+1].at.Sub(calls[i].at); gap < minGap {
			t.Errorf("attempt %d started %v after attempt %d; backoff is %v", i+2, gap, i+1, minGap)
		}
	}

	w.submit("hopeless", func(t *swarmv1alpha1.Task) {
		t.Spec.MaxRetries = ptr.To[int32](1)
		t.Spec.Backoff = &metav1.Duration{Duration: 100 * time.Millisecond}
	})
	failed := w.waitPhase("hopeless", swarmv1alpha1.TaskFailed, 30*time.Second)
	if failed.Status.Attempt != 2 || !strings.Contains(failed.Status.Message, "transient failure 2") || !strings.Contains(failed.Status.Message, "no retries left") {
		t.Errorf("final status %+v", failed.Status)
	}
}

func TestAttemptsTimeOut(t *testing.T) {
	ns := namespace(t)
	var sawDeadline atomic.Bool
	w := newWorld(t, hiveOf(ns, "slow", 1, 1), func(ctx context.Context, _ string, _ *agent.Task) (string, error) {
		<-ctx.Done()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			sawDeadline.Store(true)
		}
		return "", ctx.Err()
	})
	w.submit("stuck", func(t *swarmv1alpha1.Task) {
		t.Spec.Timeout = &metav1.Duration{Duration: time.Second}
		t.Spec.MaxRetries = ptr.To[int32](0)
	})
	task := w.waitPhase("stuck", swarmv1alpha1.TaskFailed, 20*time.Second)
	if !strings.Contains(task.Status.Message, "TimedOut") || !sawDeadline.Load() {
		t.Errorf("message %q, handler saw its deadline: %v", task.Status.Message, sawDeadline.Load())
	}
}

func TestTaskOfALostAgentRunsOnAnother(t *testing.T) {
	ns := namespace(t)
	w := newWorld(t, hiveOf(ns, "fragile", 2, 1), func(ctx context.Context, _ string, task *agent.Task) (string, error) {
		if task.Attempt == 1 {
			<-ctx.Done()
			return "", ctx.Err()
		}
		return "survived", nil
	})
	w.submit("survivor")
	first := w.waitPhase("survivor", swarmv1alpha1.TaskAssigned, 20*time.Second).Status.Agent
	pod := getPod(t, ns, first)
	// Deleted at once, as when its node dies: the agent is killed with it.
	if err := env.Client.Delete(context.Background(), pod, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	task := w.waitPhase("survivor", swarmv1alpha1.TaskSucceeded, 30*time.Second)
	if task.Status.Agent == first || task.Status.Attempt != 2 || task.Status.Result != "survived" {
		t.Errorf("status %+v; first agent %s", task.Status, first)
	}
	if c := meta.FindStatusCondition(task.Status.Conditions, swarmv1alpha1.TaskAttemptFailed); c == nil || c.Reason != swarmv1alpha1.ReasonAgentLost {
		t.Errorf("AttemptFailed condition %+v", c)
	}
}

func TestNoTaskIsLostWhenTheOperatorRestarts(t *testing.T) {
	ns := namespace(t)
	w := newWorld(t, hiveOf(ns, "steady", 3, 2), func(_ context.Context, _ string, _ *agent.Task) (string, error) {
		time.Sleep(20 * time.Millisecond)
		return "ok", nil
	})
	const n = 150
	go func() {
		for i := range n {
			w.submit(fmt.Sprintf("stream-%03d", i))
			time.Sleep(5 * time.Millisecond)
		}
	}()
	eventually(t, 30*time.Second, func() error {
		if calls := len(w.allCalls()); calls < 40 {
			return fmt.Errorf("%d tasks ran", calls)
		}
		return nil
	})
	w.op.stop()
	time.Sleep(time.Second)
	startOperator(t)
	waitAllSucceeded(t, ns, n, 60*time.Second)
	perTask := map[string]int{}
	for _, c := range w.allCalls() {
		perTask[c.task]++
	}
	for task, calls := range perTask {
		if calls != 1 {
			t.Errorf("task %s ran %d times, though no agent was lost", task, calls)
		}
	}
}

func TestDependenciesChainResultsAndPropagateFailure(t *testing.T) {
	ns := namespace(t)
	w := newWorld(t, hiveOf(ns, "pipeline", 2, 2), func(ctx context.Context, _ string, task *agent.Task) (string, error) {
		switch task.Name {
		case "fetch":
			time.Sleep(500 * time.Millisecond)
			return "data", nil
		case "broken":
			return "", errors.New("cannot parse")
		}
		results, err := task.DependencyResults(ctx)
		if err != nil {
			return "", err
		}
		var parts []string
		for _, dep := range task.DependsOn {
			parts = append(parts, results[dep])
		}
		return strings.Join(parts, "+") + ">" + task.Name, nil
	})
	w.submit("summarise", func(t *swarmv1alpha1.Task) { t.Spec.DependsOn = []string{"fetch"} })
	w.submit("publish", func(t *swarmv1alpha1.Task) { t.Spec.DependsOn = []string{"summarise"} })
	w.submit("fetch")
	w.waitPhase("summarise", swarmv1alpha1.TaskBlocked, 10*time.Second)
	if got := w.waitPhase("publish", swarmv1alpha1.TaskSucceeded, 30*time.Second).Status.Result; got != "data>summarise>publish" {
		t.Errorf("publish result %q", got)
	}

	w.submit("broken", func(t *swarmv1alpha1.Task) { t.Spec.MaxRetries = ptr.To[int32](0) })
	w.submit("downstream", func(t *swarmv1alpha1.Task) { t.Spec.DependsOn = []string{"broken"} })
	task := w.waitPhase("downstream", swarmv1alpha1.TaskFailed, 30*time.Second)
	if !strings.Contains(task.Status.Message, "dependency broken failed") {
		t.Errorf("message %q does not name the failed dependency", task.Status.Message)
	}
	if calls := w.callsOf("downstream"); len(calls) != 0 {
		t.Errorf("a task whose dependency failed ran %d times", len(calls))
	}
}

func TestCancellation(t *testing.T) {
	ns := namespace(t)
	var cancelled atomic.Bool
	w := newWorld(t, hiveOf(ns, "cancel", 1, 1), func(ctx context.Context, _ string, _ *agent.Task) (string, error) {
		<-ctx.Done()
		cancelled.Store(errors.Is(ctx.Err(), context.Canceled))
		return "", ctx.Err()
	})
	running := w.submit("running")
	w.waitPhase("running", swarmv1alpha1.TaskAssigned, 20*time.Second)
	queued := w.submit("queued")
	time.Sleep(200 * time.Millisecond)
	for _, task := range []*swarmv1alpha1.Task{running, queued} {
		cur := w.get(task.Name)
		base := cur.DeepCopy()
		cur.Spec.Cancel = true
		if err := env.Client.Patch(context.Background(), cur, client.MergeFrom(base)); err != nil {
			t.Fatal(err)
		}
	}
	w.waitPhase("running", swarmv1alpha1.TaskCancelled, 20*time.Second)
	q := w.waitPhase("queued", swarmv1alpha1.TaskCancelled, 20*time.Second)
	if !cancelled.Load() {
		t.Error("the running handler's context was not cancelled")
	}
	if q.Status.Agent != "" || len(w.callsOf("queued")) != 0 {
		t.Errorf("the queued task ran: %+v", q.Status)
	}
}

func TestFinishedTasksExpire(t *testing.T) {
	ns := namespace(t)
	w := newWorld(t, hiveOf(ns, "ttl", 1, 1), succeed)
	w.submit("ephemeral", func(t *swarmv1alpha1.Task) { t.Spec.TTLSecondsAfterFinished = ptr.To[int32](1) })
	w.waitPhase("ephemeral", swarmv1alpha1.TaskSucceeded, 20*time.Second)
	waitTaskGone(t, ns, "ephemeral", 10*time.Second)
}

func TestTaskWaitsForItsHiveAndReportsWhatIsMissing(t *testing.T) {
	ns := namespace(t)
	startOperator(t)
	task := &swarmv1alpha1.Task{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "early"},
		Spec:       swarmv1alpha1.TaskSpec{Hive: "later", Input: "x"},
	}
	create(t, task)
	gpu := &swarmv1alpha1.Task{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "needs-gpu"},
		Spec:       swarmv1alpha1.TaskSpec{Hive: "later", RequiredCapabilities: []string{"gpu"}},
	}
	create(t, gpu)
	for _, name := range []string{"early", "needs-gpu"} {
		eventually(t, 10*time.Second, func() error {
			cur := &swarmv1alpha1.Task{}
			if err := env2Get(t, ns, name, cur); err != nil {
				return err
			}
			c := meta.FindStatusCondition(cur.Status.Conditions, swarmv1alpha1.TaskScheduled)
			if c == nil || c.Reason != swarmv1alpha1.ReasonHiveNotFound || !strings.Contains(c.Message, `Hive "later" does not exist`) {
				return fmt.Errorf("Scheduled condition %+v", c)
			}
			return nil
		})
	}
	eventually(t, 10*time.Second, func() error {
		if got := eventReasons(t, ns, "early"); !slices.Contains(got, swarmv1alpha1.ReasonHiveNotFound) {
			return fmt.Errorf("events %v", got)
		}
		return nil
	})

	w := &world{t: t, ns: ns, hive: "later"}
	fleetFor(t, ns, func(context.Context, string, *agent.Task) (string, error) { return "finally", nil })
	create(t, hiveOf(ns, "later", 1, 1))
	done := w.waitPhase("early", swarmv1alpha1.TaskSucceeded, 30*time.Second)
	if c := meta.FindStatusCondition(done.Status.Conditions, swarmv1alpha1.TaskScheduled); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Scheduled after binding: %+v", c)
	}
	eventually(t, 10*time.Second, func() error {
		cur := w.get("needs-gpu")
		c := meta.FindStatusCondition(cur.Status.Conditions, swarmv1alpha1.TaskScheduled)
		if c == nil || c.Reason != swarmv1alpha1.ReasonUnschedulable || !strings.Contains(c.Message, "offers gpu") || cur.Status.Agent != "" {
			return fmt.Errorf("Scheduled condition %+v, agent %q", c, cur.Status.Agent)
		}
		return nil
	})
}

// fleetFor runs a kubelet for the namespace whose pods run real agents, until the test
// ends.
func fleetFor(t *testing.T, ns string, behave behaviour) (*fleet.Fleet, *kubelet.Kubelet) {
	t.Helper()
	f := &fleet.Fleet{Config: env.Config,
		Handler: func(pod string) agent.Handler {
			return func(ctx context.Context, task *agent.Task) (string, error) { return behave(ctx, pod, task) }
		}}
	return f, startKubelet(t, ns, 0, f)
}

func TestTasksOfAnAgentThatStopsBeingReadyOrFailsAreRequeued(t *testing.T) {
	ns := namespace(t)
	k := startKubelet(t, ns, 0)
	w := &world{t: t, ns: ns, hive: "sickly"}
	w.op = startOperator(t, func(o *controllers.Options) { o.AgentLostGrace = 2 * time.Second })
	create(t, hiveOf(ns, "sickly", 2, 1))
	waitForAgents(t, ns, "sickly", 2, 20*time.Second)
	// No agents run: the tasks stay bound, as if their agents had hung.
	for _, name := range []string{"on-unready", "on-failed"} {
		w.submit(name)
	}
	bound := map[string]string{}
	eventually(t, 20*time.Second, func() error {
		for _, name := range []string{"on-unready", "on-failed"} {
			task := w.get(name)
			if !task.Status.Phase.Bound() {
				return fmt.Errorf("%s is %s", name, task.Status.Phase)
			}
			bound[name] = task.Status.Agent
		}
		return nil
	})
	if bound["on-unready"] == bound["on-failed"] {
		t.Fatalf("both tasks on %s", bound["on-unready"])
	}
	k.Hold(bound["on-unready"], true)
	if err := k.Fail(context.Background(), bound["on-failed"]); err != nil {
		t.Fatal(err)
	}
	heldAt := time.Now()
	for name, why := range map[string]string{"on-unready": "has not been ready for", "on-failed": "stopped"} {
		eventually(t, 20*time.Second, func() error {
			task := w.get(name)
			c := meta.FindStatusCondition(task.Status.Conditions, swarmv1alpha1.TaskAttemptFailed)
			if c == nil || c.Reason != swarmv1alpha1.ReasonAgentLost || !strings.Contains(c.Message, why) {
				return fmt.Errorf("%s: phase %s, AttemptFailed %+v", name, task.Status.Phase, c)
			}
			return nil
		})
	}
	if took := time.Since(heldAt); took < 2*time.Second {
		t.Errorf("the unready agent's task was requeued after %v, inside the 2s grace", took)
	}
}

// waitAllSucceeded waits until the namespace holds n tasks, all Succeeded.
func waitAllSucceeded(t *testing.T, ns string, n int, timeout time.Duration) []swarmv1alpha1.Task {
	t.Helper()
	var items []swarmv1alpha1.Task
	eventually(t, timeout, func() error {
		list := &swarmv1alpha1.TaskList{}
		if err := env.Client.List(context.Background(), list, client.InNamespace(ns)); err != nil {
			return err
		}
		done := 0
		for _, task := range list.Items {
			if task.Status.Phase == swarmv1alpha1.TaskSucceeded {
				done++
			}
		}
		if len(list.Items) != n || done != n {
			return fmt.Errorf("%d of %d tasks succeeded (%d created)", done, n, len(list.Items))
		}
		items = list.Items
		return nil
	})
	return items
}
