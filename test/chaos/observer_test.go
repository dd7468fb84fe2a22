//go:build chaos

package chaos

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

// taskVersion is one version of a task the watch delivered.
type taskVersion struct {
	rv      int64
	at      time.Time
	deleted bool
	uid     types.UID
	phase   swarmv1alpha1.TaskPhase
	agent   string
	attempt int32
	failed  int32
	message string
	// attemptFailed is the reason and time of the AttemptFailed condition.
	attemptFailed string
	cancel        bool
	notBefore     time.Time
}

func (v taskVersion) bound() bool { return v.phase.Bound() && !v.deleted }

// boundAfterDeletion reports whether the attempt a task's versions end with was bound to
// agent after the agent's pod was marked for deletion. Must hold mu.
func (o *observer) boundAfterDeletion(vs []taskVersion, agent string) bool {
	last := vs[len(vs)-1]
	bind := last.rv
	for i := len(vs) - 1; i >= 0 && vs[i].bound() && vs[i].agent == agent && vs[i].attempt == last.attempt; i-- {
		bind = vs[i].rv
	}
	for _, p := range o.pods[agent] {
		if p.terminating || p.deleted {
			return bind > p.rv
		}
	}
	return false
}

// podVersion is one version of an agent pod the watch delivered.
type podVersion struct {
	rv          int64
	at          time.Time
	deleted     bool
	terminating bool
	ready       bool
	draining    string
	revision    string
	slots       int
}

// observer records every version of every task and agent pod of the suite's namespace,
// from watches that go straight to the API server and resume where they left off. A watch
// that cannot resume (the API server restarted and its watch cache starts afresh: 410
// Gone) is followed by a list, whose objects are recorded as versions, and those gone as
// deletions: what changed between the last event and the list may be folded into one
// version, which is counted.
type observer struct {
	c       client.WithWatch
	mu      sync.Mutex
	tasks   map[string][]taskVersion
	pods    map[string][]podVersion
	cancel  context.CancelFunc
	errs    []string
	relists int
}

func newObserver(client.Client) *observer {
	return &observer{tasks: map[string][]taskVersion{}, pods: map[string][]podVersion{}}
}

func (o *observer) start(ctx context.Context, cfg *rest.Config) error {
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		return fmt.Errorf("creating the observer's client: %w", err)
	}
	o.c = c
	ctx, o.cancel = context.WithCancel(ctx)
	for _, list := range []client.ObjectList{&swarmv1alpha1.TaskList{}, &corev1.PodList{}} {
		rv, err := o.relist(ctx, list)
		if err != nil {
			return err
		}
		go o.watch(ctx, list, rv)
	}
	return nil
}

// relist lists the objects, records those newer than what was seen and the deletion of
// those gone, and returns the list's resourceVersion.
func (o *observer) relist(ctx context.Context, list client.ObjectList) (string, error) {
	list = list.DeepCopyObject().(client.ObjectList)
	if err := o.c.List(ctx, list, client.InNamespace(ns)); err != nil {
		return "", fmt.Errorf("listing: %w", err)
	}
	listRV := list.(metav1.ListInterface).GetResourceVersion()
	seen := map[string]bool{}
	items, _ := meta.ExtractList(list)
	for _, item := range items {
		obj := item.(client.Object)
		seen[obj.GetName()] = true
		if o.newer(obj) {
			o.record(watch.Event{Type: watch.Modified, Object: obj})
		}
	}
	o.mu.Lock()
	var gone []client.Object
	switch list.(type) {
	case *swarmv1alpha1.TaskList:
		for name, vs := range o.tasks {
			if !seen[name] && !vs[len(vs)-1].deleted {
				t := &swarmv1alpha1.Task{}
				t.Name, t.UID, t.ResourceVersion = name, vs[len(vs)-1].uid, listRV
				t.Status.Phase = vs[len(vs)-1].phase
				gone = append(gone, t)
			}
		}
	case *corev1.PodList:
		for name, vs := range o.pods {
			if !seen[name] && !vs[len(vs)-1].deleted {
				p := &corev1.Pod{}
				p.Name, p.ResourceVersion = name, listRV
				gone = append(gone, p)
			}
		}
	}
	o.mu.Unlock()
	for _, obj := range gone {
		o.record(watch.Event{Type: watch.Deleted, Object: obj})
	}
	return listRV, nil
}

// newer reports whether obj is a version the observer has not recorded.
func (o *observer) newer(obj client.Object) bool {
	rv, _ := strconv.ParseInt(obj.GetResourceVersion(), 10, 64)
	o.mu.Lock()
	defer o.mu.Unlock()
	switch obj.(type) {
	case *swarmv1alpha1.Task:
		vs := o.tasks[obj.GetName()]
		return len(vs) == 0 || vs[len(vs)-1].rv < rv
	case *corev1.Pod:
		vs := o.pods[obj.GetName()]
		return len(vs) == 0 || vs[len(vs)-1].rv < rv
	}
	return false
}

// watch follows the objects from rv until ctx ends.
func (o *observer) watch(ctx context.Context, list client.ObjectList, rv string) {
	for ctx.Err() == nil {
		wi, err := o.c.Watch(ctx, list.DeepCopyObject().(client.ObjectList), client.InNamespace(ns),
			&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true}})
		if err != nil {
			if apierrors.IsGone(err) || apierrors.IsResourceExpired(err) {
				rv = o.mustRelist(ctx, list, rv)
			}
			sleep(ctx, 300*time.Millisecond)
			continue
		}
		for ev := range wi.ResultChan() {
			if ev.Type == watch.Error {
				if status, ok := ev.Object.(*metav1.Status); ok && (status.Code == 410 || status.Reason == metav1.StatusReasonExpired || status.Reason == metav1.StatusReasonGone) {
					rv = o.mustRelist(ctx, list, rv)
				}
				break
			}
			if obj, ok := ev.Object.(client.Object); ok {
				rv = obj.GetResourceVersion()
			}
			o.record(ev)
		}
		wi.Stop()
	}
}

func (o *observer) mustRelist(ctx context.Context, list client.ObjectList, rv string) string {
	for ctx.Err() == nil {
		next, err := o.relist(ctx, list)
		if err == nil {
			o.mu.Lock()
			o.relists++
			o.mu.Unlock()
			return next
		}
		sleep(ctx, 500*time.Millisecond)
	}
	return rv
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (o *observer) stop() {
	if o.cancel != nil {
		o.cancel()
	}
}

func (o *observer) record(ev watch.Event) {
	if ev.Type == watch.Bookmark || ev.Type == watch.Error {
		return
	}
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	switch obj := ev.Object.(type) {
	case *swarmv1alpha1.Task:
		rv, _ := strconv.ParseInt(obj.ResourceVersion, 10, 64)
		v := taskVersion{rv: rv, at: now, deleted: ev.Type == watch.Deleted, uid: obj.UID, phase: obj.Status.Phase,
			agent: obj.Status.Agent, attempt: obj.Status.Attempt, failed: obj.Status.FailedAttempts,
			message: obj.Status.Message, cancel: obj.Spec.Cancel}
		if v.phase == "" {
			v.phase = swarmv1alpha1.TaskPending
		}
		if c := meta.FindStatusCondition(obj.Status.Conditions, swarmv1alpha1.TaskAttemptFailed); c != nil {
			v.attemptFailed = c.Reason + "@" + c.LastTransitionTime.UTC().Format(time.RFC3339) + ":" + c.Message
		}
		if obj.Status.NotBefore != nil {
			v.notBefore = obj.Status.NotBefore.Time
		}
		o.tasks[obj.Name] = append(o.tasks[obj.Name], v)
	case *corev1.Pod:
		rv, _ := strconv.ParseInt(obj.ResourceVersion, 10, 64)
		v := podVersion{rv: rv, at: now, deleted: ev.Type == watch.Deleted, terminating: obj.DeletionTimestamp != nil,
			ready: agentpod.IsReady(obj), draining: obj.Annotations[swarmv1alpha1.AnnotationDrainingSince],
			revision: agentpod.Revision(obj), slots: agentpod.Slots(obj)}
		o.pods[obj.Name] = append(o.pods[obj.Name], v)
	}
}

// lastTask returns the newest version of each task.
func (o *observer) lastTasks() map[string]taskVersion {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[string]taskVersion, len(o.tasks))
	for name, vs := range o.tasks {
		out[name] = vs[len(vs)-1]
	}
	return out
}

// unfinished returns the tasks created whose newest version has not finished.
func (o *observer) unfinished(created map[string]bool) []string {
	last := o.lastTasks()
	var out []string
	for name := range created {
		v, ok := last[name]
		if !ok || (!v.deleted && !v.phase.Finished()) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// capacityGap reports whether, right now, tasks wait in the queue while ready agents that
// take tasks have free slots: the number of tasks waiting and of free slots.
func (o *observer) capacityGap(now time.Time) (waiting, free int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	used := map[string]int{}
	for _, vs := range o.tasks {
		v := vs[len(vs)-1]
		switch {
		case v.bound():
			used[v.agent]++
		case v.deleted || v.phase != swarmv1alpha1.TaskPending || v.cancel:
		case !v.notBefore.IsZero() && now.Before(v.notBefore):
		case now.Sub(v.at) > time.Second:
			// Waited a second since its last change: dispatch has had its chance.
			waiting++
		}
	}
	for name, vs := range o.pods {
		v := vs[len(vs)-1]
		if v.deleted || v.terminating || !v.ready || v.draining != "" {
			continue
		}
		free += max(0, v.slots-used[name])
	}
	return waiting, free
}

// violations checks the invariants over everything observed and returns what broke them.
func (o *observer) violations(created map[string]bool, runs []invocation, f *faultLog) (out []string, report map[string]int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	report = map[string]int{}
	crashed, graceful, byTest := f.podSets()

	// Every task ends: its last version is final, or it was deleted after it finished.
	for name := range created {
		vs, ok := o.tasks[name]
		if !ok {
			out = append(out, fmt.Sprintf("task %s was lost: never seen", name))
			continue
		}
		finished := false
		for _, v := range vs {
			finished = finished || v.phase.Finished()
		}
		if !finished {
			out = append(out, fmt.Sprintf("task %s never finished: last %s attempt %d on %q (%s)", name, vs[len(vs)-1].phase, vs[len(vs)-1].attempt, vs[len(vs)-1].agent, vs[len(vs)-1].message))
		}
		if last := vs[len(vs)-1]; last.deleted && !finished {
			out = append(out, fmt.Sprintf("task %s was deleted before it finished", name))
		}
		report["tasks "+string(vs[len(vs)-1].phase)]++
	}

	// No retry consumed by a release, and no agent declared lost while it shut down
	// gracefully.
	for name, vs := range o.tasks {
		for i := 1; i < len(vs); i++ {
			prev, cur := vs[i-1], vs[i]
			if !prev.bound() || cur.deleted || (cur.bound() && cur.attempt == prev.attempt) {
				continue
			}
			released := strings.Contains(cur.message, "released by agent")
			switch {
			case released && cur.failed != prev.failed:
				out = append(out, fmt.Sprintf("task %s: a release of attempt %d counted as a failure (failedAttempts %d → %d)", name, prev.attempt, prev.failed, cur.failed))
			case released:
				report["releases"]++
			case cur.failed > prev.failed+1:
				out = append(out, fmt.Sprintf("task %s: attempt %d counted %d failures", name, prev.attempt, cur.failed-prev.failed))
			}
			if strings.HasPrefix(cur.attemptFailed, swarmv1alpha1.ReasonAgentLost) && cur.attemptFailed != prev.attemptFailed {
				report["attempts of lost agents"]++
				switch {
				case !graceful[prev.agent] || crashed[prev.agent]:
				case o.boundAfterDeletion(vs[:i], prev.agent):
					// The operator bound the task from a cache that had not yet seen the
					// deletion; the agent gives such tasks back in its last read at
					// shutdown, but one bound after that is the operator's to requeue.
					report["attempts bound to an agent already being deleted, then lost"]++
				default:
					out = append(out, fmt.Sprintf("task %s: agent %s was declared lost while it shut down gracefully: %s", name, prev.agent, cur.message))
				}
			}
		}
	}

	// No agent ever holds more tasks than its slots, and no busy agent is deleted by the
	// operator (the hive's drain timeout is longer than the run). Resource versions of one
	// etcd are ordered across kinds, so a task's binding and a pod's deletion can be
	// placed on one time line.
	type interval struct{ from, to int64 }
	held := map[string][]interval{}
	for _, vs := range o.tasks {
		for i, v := range vs {
			if !v.bound() || (i > 0 && vs[i-1].bound() && vs[i-1].agent == v.agent && vs[i-1].attempt == v.attempt) {
				continue
			}
			end := int64(1 << 62)
			for _, w := range vs[i+1:] {
				if !w.bound() || w.agent != v.agent || w.attempt != v.attempt {
					end = w.rv
					break
				}
			}
			held[v.agent] = append(held[v.agent], interval{v.rv, end})
		}
	}
	for agentName, ivs := range held {
		slots := 0
		if pv := o.pods[agentName]; len(pv) > 0 {
			slots = pv[0].slots
		}
		type edge struct {
			rv    int64
			delta int
		}
		var edges []edge
		for _, iv := range ivs {
			edges = append(edges, edge{iv.from, 1}, edge{iv.to, -1})
		}
		slices.SortFunc(edges, func(a, b edge) int {
			if a.rv != b.rv {
				return int(a.rv - b.rv)
			}
			return a.delta - b.delta // ends before starts at the same version
		})
		n, peak := 0, 0
		for _, e := range edges {
			n += e.delta
			peak = max(peak, n)
		}
		if slots > 0 && peak > slots {
			out = append(out, fmt.Sprintf("agent %s held %d tasks at once with %d slots", agentName, peak, slots))
		}
	}
	for podName, pv := range o.pods {
		var deletion *podVersion
		for i := range pv {
			if pv[i].terminating || pv[i].deleted {
				deletion = &pv[i]
				break
			}
		}
		if deletion == nil || byTest[podName] {
			continue
		}
		report["agents deleted by the operator"]++
		for _, iv := range held[podName] {
			if iv.from < deletion.rv && deletion.rv < iv.to {
				out = append(out, fmt.Sprintf("the operator deleted agent %s while it held a task (drain mark %q)", podName, deletion.draining))
				break
			}
		}
	}

	// No handler runs twice for one attempt; a task runs to completion twice only after
	// its agent was really lost.
	perAttempt := map[string]int{}
	byTask := map[types.UID][]invocation{}
	for _, r := range runs {
		perAttempt[fmt.Sprintf("%s/%d", r.task, r.attempt)]++
		byTask[r.task] = append(byTask[r.task], r)
	}
	for key, n := range perAttempt {
		if n > 1 {
			out = append(out, fmt.Sprintf("the handler ran %d times for attempt %s", n, key))
		}
	}
	report["handler invocations"] = len(runs)
	for _, rs := range byTask {
		slices.SortFunc(rs, func(a, b invocation) int { return a.start.Compare(b.start) })
		for i, r := range rs[:len(rs)-1] {
			switch {
			case r.outcome == outcomeFailed:
				report["reruns after a designed failure"]++
			case crashed[r.agent]:
				report["reruns after their agent was killed"]++
			case r.outcome == outcomeStopped || r.outcome == outcomeTimedOut:
				report["reruns after a stopped attempt (given back, timed out)"]++
			default:
				out = append(out, fmt.Sprintf("task %s ran to completion on attempt %d (agent %s) and ran again on attempt %d (agent %s) with no agent lost",
					r.name, r.attempt, r.agent, rs[i+1].attempt, rs[i+1].agent))
			}
		}
	}
	out = append(out, o.errs...)
	return out, report
}
