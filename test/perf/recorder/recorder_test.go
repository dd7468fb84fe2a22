package recorder

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	toolscache "k8s.io/client-go/tools/cache"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/test/builder"
	"github.com/aihub-dev/hive-operator/test/perf/results"
)

// A run's outcome comes from what the watch saw: a task deleted after it finished (the
// retention) counts as it ended, one deleted before it did is lost, and one never seen to
// end is unfinished.
func TestOutcomeFromTheWatch(t *testing.T) {
	r := &Recorder{epoch: time.Now(), tracks: map[string]*Track{}}
	tr := r.Track("run")
	task := func(name string, phase swarmv1alpha1.TaskPhase) *swarmv1alpha1.Task {
		t := builder.Task("ns", name).Label(Label, "run").Obj()
		t.Status.Phase = phase
		return t
	}
	for _, name := range []string{"done", "failed", "kept", "lost", "stuck", "unseen"} {
		r.Created(tr, name)
	}
	r.onTask(task("done", swarmv1alpha1.TaskSucceeded), false)
	r.onTask(task("done", swarmv1alpha1.TaskSucceeded), true) // the retention deletes it
	r.onTask(task("failed", swarmv1alpha1.TaskFailed), false)
	r.onTask(task("kept", swarmv1alpha1.TaskSucceeded), false)
	r.onTask(task("lost", swarmv1alpha1.TaskRunning), false)
	r.onTask(toolscache.DeletedFinalStateUnknown{Key: "ns/lost", Obj: task("lost", swarmv1alpha1.TaskRunning)}, true)
	r.onTask(task("stuck", swarmv1alpha1.TaskRunning), false)
	other := task("other", swarmv1alpha1.TaskSucceeded)
	other.Labels[Label] = "another run"
	r.onTask(other, false)
	want := results.Outcome{Submitted: 6, Succeeded: 2, Failed: 1, Missing: 1, Unfinished: 2}
	if diff := cmp.Diff(want, tr.Outcome(6)); diff != "" {
		t.Errorf("outcome (-want +got):\n%s", diff)
	}
	if done, _ := r.Done(tr); done {
		t.Error("Done with two tasks neither ended nor lost")
	}
	r.onTask(task("stuck", swarmv1alpha1.TaskSucceeded), false)
	r.onTask(task("unseen", swarmv1alpha1.TaskCancelled), false)
	if done, _ := r.Done(tr); !done {
		t.Error("not Done once every task ended or was lost")
	}
}
