package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// recorder records, with one watch on the tasks of a namespace, when each task of the bench
// was bound and finished, and with one watch on its hives when their status was written.
// Times are nanoseconds on the monotonic clock since the recorder's epoch.
type recorder struct {
	c     client.WithWatch
	ns    string
	epoch time.Time

	mu     sync.RWMutex
	tracks map[string]*track

	hiveMu     sync.Mutex
	hiveWrites []int64
	hiveLast   map[string]swarmv1alpha1.HiveStatus
}

// track holds the times of the tasks of one run, named <prefix>-<index>.
type track struct {
	prefix                   string
	n                        int
	created, bound, finished []atomic.Int64
	failed                   []atomic.Bool
	nCreated, nBound, nDone  atomic.Int64
	nFailed                  atomic.Int64
	lastProgress             atomic.Int64
}

func newRecorder(c client.WithWatch, ns string, epoch time.Time) *recorder {
	return &recorder{c: c, ns: ns, epoch: epoch, tracks: map[string]*track{}, hiveLast: map[string]swarmv1alpha1.HiveStatus{}}
}

func (r *recorder) now() int64 { return int64(time.Since(r.epoch)) }

// start runs the watches until ctx ends; it returns once both are established.
func (r *recorder) start(ctx context.Context) error {
	taskReady, hiveReady := make(chan struct{}), make(chan struct{})
	go watchLoop(ctx, r.c, r.ns, func() client.ObjectList { return &swarmv1alpha1.TaskList{} }, r.onTask, taskReady)
	go watchLoop(ctx, r.c, r.ns, func() client.ObjectList { return &swarmv1alpha1.HiveList{} }, r.onHive, hiveReady)
	return waitWatches(ctx, r.ns, taskReady, hiveReady)
}

// waitWatches waits until watches are established.
func waitWatches(ctx context.Context, ns string, ready ...chan struct{}) error {
	for _, ch := range ready {
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("starting a watch: %w", context.Cause(ctx))
		case <-time.After(30 * time.Second):
			return fmt.Errorf("a watch in namespace %s did not start within 30s", ns)
		}
	}
	return nil
}

// track registers the n tasks of a run.
func (r *recorder) track(prefix string, n int) *track {
	t := &track{
		prefix: prefix, n: n,
		created: make([]atomic.Int64, n), bound: make([]atomic.Int64, n), finished: make([]atomic.Int64, n),
		failed: make([]atomic.Bool, n),
	}
	t.lastProgress.Store(r.now())
	r.mu.Lock()
	r.tracks[prefix] = t
	r.mu.Unlock()
	return t
}

// taskName is the name of task i of a run.
func taskName(prefix string, i int) string { return prefix + "-" + strconv.Itoa(i) }

// parseTaskName splits a task name into its run prefix and index.
func parseTaskName(name string) (string, int, bool) {
	cut := strings.LastIndexByte(name, '-')
	if cut <= 0 {
		return "", 0, false
	}
	i, err := strconv.Atoi(name[cut+1:])
	if err != nil || i < 0 {
		return "", 0, false
	}
	return name[:cut], i, true
}

// markCreated notes the client time right before task i's create.
func (r *recorder) markCreated(t *track, i int) {
	if t.created[i].CompareAndSwap(0, r.now()) {
		t.nCreated.Add(1)
	}
}

func (r *recorder) onTask(ev watch.Event) {
	task, ok := ev.Object.(*swarmv1alpha1.Task)
	if !ok || ev.Type == watch.Deleted {
		return
	}
	prefix, i, ok := parseTaskName(task.Name)
	if !ok {
		return
	}
	r.mu.RLock()
	t := r.tracks[prefix]
	r.mu.RUnlock()
	if t == nil || i >= t.n {
		return
	}
	at := r.now()
	if task.Status.Agent != "" && t.bound[i].CompareAndSwap(0, at) {
		t.nBound.Add(1)
	}
	switch task.Status.Phase {
	case swarmv1alpha1.TaskSucceeded:
		if t.finished[i].CompareAndSwap(0, at) {
			t.nDone.Add(1)
			t.lastProgress.Store(at)
		}
	case swarmv1alpha1.TaskFailed, swarmv1alpha1.TaskCancelled:
		if t.failed[i].CompareAndSwap(false, true) {
			t.nFailed.Add(1)
			t.nDone.Add(1)
			t.lastProgress.Store(at)
		}
	}
}

func (r *recorder) onHive(ev watch.Event) {
	hive, ok := ev.Object.(*swarmv1alpha1.Hive)
	if !ok {
		return
	}
	r.hiveMu.Lock()
	defer r.hiveMu.Unlock()
	last, seen := r.hiveLast[hive.Name]
	r.hiveLast[hive.Name] = *hive.Status.DeepCopy()
	if ev.Type == watch.Modified && seen && !equality.Semantic.DeepEqual(last, hive.Status) {
		r.hiveWrites = append(r.hiveWrites, r.now())
	}
}

// hiveWritesBetween counts the hive status writes seen between two recorder times.
func (r *recorder) hiveWritesBetween(from, to int64) int {
	r.hiveMu.Lock()
	defer r.hiveMu.Unlock()
	n := 0
	for _, at := range r.hiveWrites {
		if at >= from && at <= to {
			n++
		}
	}
	return n
}

// watchLoop lists then watches a kind in a namespace until ctx ends, resuming from the last
// version seen and listing again when that version has expired. It closes ready once the
// first watch is established.
func watchLoop(ctx context.Context, c client.WithWatch, ns string, newList func() client.ObjectList, handle func(watch.Event), ready chan struct{},
	opts ...client.ListOption) {
	var once sync.Once
	rv := ""
	for ctx.Err() == nil {
		if rv == "" {
			list := newList()
			if err := c.List(ctx, list, append([]client.ListOption{client.InNamespace(ns)}, opts...)...); err != nil {
				sleepCtx(ctx, 200*time.Millisecond)
				continue
			}
			items, _ := meta.ExtractList(list)
			for _, obj := range items {
				handle(watch.Event{Type: watch.Added, Object: obj})
			}
			rv = list.GetResourceVersion()
		}
		w, err := c.Watch(ctx, newList(), append([]client.ListOption{client.InNamespace(ns),
			&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true}}}, opts...)...)
		if err != nil {
			if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
				rv = ""
			}
			sleepCtx(ctx, 200*time.Millisecond)
			continue
		}
		once.Do(func() { close(ready) })
		rv = drain(w, handle, rv)
		w.Stop()
	}
}

// drain handles a watch's events until it ends and returns the version to resume from ("" to
// list again).
func drain(w watch.Interface, handle func(watch.Event), rv string) string {
	for ev := range w.ResultChan() {
		switch ev.Type {
		case watch.Error:
			if s, ok := ev.Object.(*metav1.Status); ok && s.Code == http.StatusGone {
				return ""
			}
			return rv
		case watch.Bookmark:
		default:
			handle(ev)
		}
		if o, ok := ev.Object.(metav1.Object); ok && o.GetResourceVersion() != "" {
			rv = o.GetResourceVersion()
		}
	}
	return rv
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
