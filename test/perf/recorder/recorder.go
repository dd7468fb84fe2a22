// Package recorder records, with one watch on the tasks of a namespace, when each task of a
// run was created, bound and finished, and with one watch on its hives when their status
// was written. Times are nanoseconds on the monotonic clock since the recorder's epoch.
package recorder

import (
	"cmp"
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/test/perf/results"
	"github.com/aihub-dev/hive-operator/test/perf/stats"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

// Recorder watches the tasks and hives of one namespace.
type Recorder struct {
	epoch      time.Time
	mu         sync.Mutex
	tracks     map[string]*Track // by the tasks' run label
	hiveWrites []int64
}

// Track holds the times of the tasks of one run, by name; a task that failed has ended but
// has no finish time, and one deleted before it ended is lost.
type Track struct {
	mu                                    sync.Mutex
	created, bound, finished, ended, lost map[string]int64
	lastProgress                          int64
}

// Label marks each task with its run, whose track the recorder finds by it.
const Label = "bench.aihub.dev/run"

// Start starts the watches of a namespace until ctx ends; it returns once they have synced.
func Start(ctx context.Context, cfg *rest.Config, ns string, epoch time.Time) (*Recorder, error) {
	r := &Recorder{epoch: epoch, tracks: map[string]*Track{}}
	_, err := testenv.Watch(ctx, cfg, ns, nil, map[client.Object]toolscache.ResourceEventHandler{
		&swarmv1alpha1.Task{}: toolscache.ResourceEventHandlerFuncs{
			AddFunc: func(obj any) { r.onTask(obj, false) }, UpdateFunc: func(_, obj any) { r.onTask(obj, false) },
			DeleteFunc: func(obj any) { r.onTask(obj, true) },
		},
		&swarmv1alpha1.Hive{}: toolscache.ResourceEventHandlerFuncs{UpdateFunc: func(old, obj any) {
			o, _ := old.(*swarmv1alpha1.Hive)
			if h, _ := obj.(*swarmv1alpha1.Hive); o != nil && h != nil && !equality.Semantic.DeepEqual(o.Status, h.Status) {
				r.mu.Lock()
				r.hiveWrites = append(r.hiveWrites, r.Now())
				r.mu.Unlock()
			}
		}},
	})
	return r, err
}

// Now is the recorder's clock.
func (r *Recorder) Now() int64 { return int64(time.Since(r.epoch)) }

// Track registers a run.
func (r *Recorder) Track(run string) *Track {
	t := &Track{created: map[string]int64{}, bound: map[string]int64{}, finished: map[string]int64{}, ended: map[string]int64{},
		lost: map[string]int64{}, lastProgress: r.Now()}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tracks[run] = t
	return t
}

// Created notes the client time right before a task's create.
func (r *Recorder) Created(t *Track, name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.created[name] = r.Now()
}

func (r *Recorder) onTask(obj any, deleted bool) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	task, _ := obj.(*swarmv1alpha1.Task)
	if task == nil {
		return
	}
	r.mu.Lock()
	t := r.tracks[task.Labels[Label]]
	r.mu.Unlock()
	if t == nil {
		return
	}
	at := r.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.bound[task.Name]; !ok && task.Status.Agent != "" {
		t.bound[task.Name] = at
	}
	if _, ended := t.ended[task.Name]; ended {
		return
	}
	switch phase := task.Status.Phase; {
	case phase.Finished():
		if t.ended[task.Name], t.lastProgress = at, at; phase == swarmv1alpha1.TaskSucceeded {
			t.finished[task.Name] = at
		}
	case deleted: // the retention deletes only finished tasks: this one is gone unfinished
		t.lost[task.Name], t.lastProgress = at, at
	}
}

// Done reports whether every created task of a track ended or was lost, and how long since
// the last did.
func (r *Recorder) Done(t *Track) (done bool, idle time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.ended)+len(t.lost) >= len(t.created), time.Duration(r.Now() - t.lastProgress)
}

// Outcome counts how the tasks of a track ended, from what the watch saw, so that it holds
// also for runs whose retention deletes finished tasks before a list could count them. A
// task the watch never saw end counts as unfinished; one deleted before it ended, as lost.
func (t *Track) Outcome(submitted int) results.Outcome {
	t.mu.Lock()
	defer t.mu.Unlock()
	return results.Outcome{Submitted: submitted, Succeeded: len(t.finished), Failed: len(t.ended) - len(t.finished),
		Missing: len(t.lost), Unfinished: max(submitted-len(t.ended)-len(t.lost), 0)}
}

// HiveWritesBetween counts the hive status writes seen between two recorder times.
func (r *Recorder) HiveWritesBetween(from, to int64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, at := range r.hiveWrites {
		if at >= from && at <= to {
			n++
		}
	}
	return n
}

// Fill computes a run's latencies and rates from its track: queue wait = bound − created,
// end to end = succeeded − created, throughput = succeeded / (last finished − first created).
func (t *Track) Fill(res *results.Run) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var first, lastCreated, lastFinished int64
	var waits, e2e []time.Duration
	for name, c := range t.created {
		first, lastCreated = min(c, cmp.Or(first, c)), max(lastCreated, c)
		if b, ok := t.bound[name]; ok {
			waits = append(waits, time.Duration(b-c))
		}
		if f, ok := t.finished[name]; ok {
			e2e, lastFinished = append(e2e, time.Duration(f-c)), max(lastFinished, f)
		}
	}
	res.QueueWait, res.EndToEnd = stats.Summarise(waits), stats.Summarise(e2e)
	if d := time.Duration(lastFinished - first).Seconds(); d > 0 {
		res.DurationSeconds, res.TasksPerSec = stats.Round(d, 3), stats.Round(float64(len(e2e))/d, 1)
	}
	if d := time.Duration(lastCreated - first).Seconds(); d > 0 {
		res.ArrivalRate = stats.Round(float64(len(t.created)-1)/d, 1)
	}
}
