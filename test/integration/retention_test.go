package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/controllers"
	"github.com/aihub-dev/hive-operator/pkg/agent"
	"github.com/aihub-dev/hive-operator/test/builder"
)

// notCached waits until the operator's cache no longer holds a task.
func notCached(t *testing.T, op *operator, ns, name string) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		err := op.cache.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &swarmv1alpha1.Task{})
		switch {
		case err == nil:
			return fmt.Errorf("the operator's cache still holds task %s", name)
		case apierrors.IsNotFound(err):
			return nil
		default:
			return err
		}
	})
}

// finishedBefore stores a task that finished at a time, as an agent would have written it:
// the history an operator finds when it starts.
func finishedBefore(t *testing.T, ns, hive, name string, at time.Time, mutate ...func(*swarmv1alpha1.Task)) {
	t.Helper()
	task := builder.Task(ns, name).Hive(hive).Obj()
	for _, m := range mutate {
		m(task)
	}
	create(t, task)
	task.Status = swarmv1alpha1.TaskStatus{Phase: swarmv1alpha1.TaskSucceeded, Attempt: 1, Result: "old", FinishedAt: ptr.To(metav1.NewMicroTime(at))}
	if err := env.Client.Status().Update(t.Context(), task); err != nil {
		t.Fatalf("finishing task %s: %v", name, err)
	}
}

func TestAFinishedTaskLeavesTheCachesAndItsDependentsReadItFromTheAPIServer(t *testing.T) {
	ns := namespace(t)
	w := newWorld(t, hiveOf(ns, "leave", 1, 1), func(_ context.Context, _ string, task *agent.Task) (string, error) {
		if task.Name == "broken" {
			return "", agent.Permanent(errors.New("cannot"))
		}
		return "out:" + task.Name, nil
	})
	w.submit("first")
	w.submit("broken")
	w.waitPhase("first", swarmv1alpha1.TaskSucceeded, 20*time.Second)
	w.waitPhase("broken", swarmv1alpha1.TaskFailed, 20*time.Second)
	notCached(t, w.op, ns, "first")
	notCached(t, w.op, ns, "broken")

	// Dependents created after their dependencies left the cache: one runs, one fails.
	w.submit("second", func(t *swarmv1alpha1.Task) { t.Spec.DependsOn = []string{"first"} })
	w.submit("after-broken", func(t *swarmv1alpha1.Task) { t.Spec.DependsOn = []string{"broken"} })
	if got := w.waitPhase("second", swarmv1alpha1.TaskSucceeded, 20*time.Second); got.Status.Result != "out:second" {
		t.Errorf("second's result = %q", got.Status.Result)
	}
	failed := w.waitPhase("after-broken", swarmv1alpha1.TaskFailed, 20*time.Second)
	if failed.Status.Message == "" || len(w.callsOf("after-broken")) != 0 {
		t.Errorf("after-broken failed with %q after %d calls; want a message and no call", failed.Status.Message, len(w.callsOf("after-broken")))
	}
	// Finished tasks leave the operator's cache whatever their outcome; what it holds is
	// the work in flight.
	list := &swarmv1alpha1.TaskList{}
	if err := w.op.cache.List(t.Context(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, task := range list.Items {
		if task.Status.Phase.Finished() {
			t.Errorf("the operator's cache holds finished task %s", task.Name)
		}
	}
}

func TestATasksTTLWaitsForItsDependentsAfterItLeftTheCache(t *testing.T) {
	ns := namespace(t)
	release := make(chan struct{})
	w := newWorld(t, hiveOf(ns, "ttl-deps", 1, 1), func(ctx context.Context, _ string, task *agent.Task) (string, error) {
		if task.Name == "dependent" {
			select {
			case <-release:
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		return "ok", nil
	})
	w.submit("base", func(t *swarmv1alpha1.Task) { t.Spec.TTLSecondsAfterFinished = ptr.To[int32](1) })
	w.submit("dependent", func(t *swarmv1alpha1.Task) { t.Spec.DependsOn = []string{"base"} })
	w.waitPhase("dependent", swarmv1alpha1.TaskRunning, 20*time.Second)
	// base is past its TTL while its dependent runs: it stays.
	time.Sleep(2 * time.Second)
	if task := w.get("base"); task.Status.Phase != swarmv1alpha1.TaskSucceeded {
		t.Fatalf("base is %s", task.Status.Phase)
	}
	close(release)
	w.waitPhase("dependent", swarmv1alpha1.TaskSucceeded, 20*time.Second)
	waitTaskGone(t, ns, "base", 10*time.Second)
}

func TestHistoryFoundAtStartIsKeptByItsTTLItsHivesRetentionAndItsCap(t *testing.T) {
	ns := namespace(t)
	now := time.Now()
	capped := hiveOf(ns, "capped", 0, 1)
	capped.Spec.TaskRetention = &swarmv1alpha1.TaskRetentionSpec{TTLSecondsAfterFinished: ptr.To[int32](3600), MaxFinishedTasks: ptr.To[int32](3)}
	short := hiveOf(ns, "short", 0, 1)
	short.Spec.TaskRetention = &swarmv1alpha1.TaskRetentionSpec{TTLSecondsAfterFinished: ptr.To[int32](60)}
	create(t, capped)
	create(t, short)
	// capped: six finished tasks, one a minute; the three that finished first go, oldest first.
	for i := range 6 {
		finishedBefore(t, ns, "capped", fmt.Sprintf("capped-%d", i), now.Add(time.Duration(i-10)*time.Minute))
	}
	// short: kept for a minute by its hive, unless the task says otherwise.
	finishedBefore(t, ns, "short", "short-old", now.Add(-2*time.Minute))
	finishedBefore(t, ns, "short", "short-new", now.Add(-time.Second))
	finishedBefore(t, ns, "short", "short-own-ttl", now.Add(-2*time.Minute), func(t *swarmv1alpha1.Task) {
		t.Spec.TTLSecondsAfterFinished = ptr.To[int32](3600)
	})
	// No hive: the default retention of an hour.
	finishedBefore(t, ns, "gone", "orphan-old", now.Add(-2*time.Hour))
	finishedBefore(t, ns, "gone", "orphan-new", now.Add(-time.Minute))

	startOperator(t, func(o *controllers.Options) { o.FinishedTaskSweepInterval = time.Hour })
	want := []string{"capped-3", "capped-4", "capped-5", "orphan-new", "short-new", "short-own-ttl"}
	eventually(t, 20*time.Second, func() error {
		list := &swarmv1alpha1.TaskList{}
		if err := env.Client.List(context.Background(), list, client.InNamespace(ns)); err != nil {
			return err
		}
		var got []string
		for _, task := range list.Items {
			got = append(got, task.Name)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("tasks kept %v, want %v", got, want)
		}
		return nil
	})
}

func TestAHivesRetentionDeletesTasksThatFinishWhileTheOperatorRuns(t *testing.T) {
	ns := namespace(t)
	h := hiveOf(ns, "brief", 1, 1)
	h.Spec.TaskRetention = &swarmv1alpha1.TaskRetentionSpec{TTLSecondsAfterFinished: ptr.To[int32](1)}
	w := newWorld(t, h, succeed)
	w.submit("brief-task")
	w.waitPhase("brief-task", swarmv1alpha1.TaskSucceeded, 20*time.Second)
	waitTaskGone(t, ns, "brief-task", 10*time.Second)
}
