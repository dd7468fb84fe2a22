package main

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/duration"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/internal/dispatch"
	"github.com/aihub-dev/hive-operator/internal/lifecycle"
)

// This file turns API objects into the rows and summaries the commands print. It calls no
// API, so every rule can be table-tested without a cluster.

// HiveSummary is what status reports about one hive.
type HiveSummary struct {
	Name      string
	Namespace string
	// Ready counts the agent pods whose Ready condition is true (draining ones included, as
	// in status.readyReplicas); Desired is what the hive converges to.
	Ready   int
	Desired int32
	// Agents counts the agents by state.
	Agents AgentCounts
	// Queue counts the hive's tasks that wait or run.
	Queue QueueCounts
	// Rollout is where the hive stands between its revisions.
	Rollout RolloutSummary
	// Problems are the conditions that are not healthy, with what they say.
	Problems []Problem
	// Pods are the hive's agent pods, by name.
	Pods []AgentSummary
}

// AgentCounts counts a hive's agents by state.
type AgentCounts struct {
	Starting int
	Idle     int
	Busy     int
	Draining int
	// Stopping agents are being deleted or have exited; the hive replaces them.
	Stopping int
}

// QueueCounts counts a hive's tasks that are not finished.
type QueueCounts struct {
	// Pending tasks wait for a slot (or their retry backoff).
	Pending int
	// Blocked tasks wait for the tasks they depend on.
	Blocked int
	// Running tasks are bound to an agent (Assigned or Running).
	Running int
}

// RolloutSummary is where a hive stands between its current and its update revision.
type RolloutSummary struct {
	CurrentRevision string
	UpdateRevision  string
	UpdatedReplicas int32
	DesiredReplicas int32
	// Progressing, Reason and Message come from the Progressing condition.
	Progressing bool
	Reason      string
	Message     string
}

// InProgress reports whether agents of an older revision remain.
func (r RolloutSummary) InProgress() bool {
	return r.UpdateRevision != "" && r.UpdateRevision != r.CurrentRevision
}

// Problem is a condition that is not healthy.
type Problem struct {
	// Type is the condition type, or Stale when the operator has not reported on the
	// hive's latest spec.
	Type    string
	Status  string
	Reason  string
	Message string
}

// Label names the problem in a word: Degraded, Unavailable, Stale.
func (p Problem) Label() string {
	if p.Type == swarmv1alpha1.HiveAvailable && p.Status == string(metav1.ConditionFalse) {
		return "Unavailable"
	}
	return p.Type
}

// AgentSummary is one agent pod of a hive.
type AgentSummary struct {
	Name     string
	State    string
	Ready    bool
	Tasks    int
	Revision string
	Created  time.Time
	// IP and Node are where the pod runs, empty until it is scheduled and started.
	IP, Node string
}

// SummariseHives summarises each hive from the pods and tasks of its namespace, sorted by
// namespace and name. Pods count for the hive that controls them (by UID, so a pod of an
// older hive of the same name does not), tasks for the hive they name in their namespace.
func SummariseHives(hives []swarmv1alpha1.Hive, pods []corev1.Pod, tasks []swarmv1alpha1.Task) []HiveSummary {
	podsOf := map[types.UID][]*corev1.Pod{}
	for i := range pods {
		if ref := metav1.GetControllerOf(&pods[i]); ref != nil {
			podsOf[ref.UID] = append(podsOf[ref.UID], &pods[i])
		}
	}
	tasksOf := map[types.NamespacedName][]*swarmv1alpha1.Task{}
	for i := range tasks {
		hive := types.NamespacedName{Namespace: tasks[i].Namespace, Name: tasks[i].Spec.Hive}
		tasksOf[hive] = append(tasksOf[hive], &tasks[i])
	}
	out := make([]HiveSummary, 0, len(hives))
	for i := range hives {
		h := &hives[i]
		out = append(out, SummariseHive(h, podsOf[h.UID], tasksOf[types.NamespacedName{Namespace: h.Namespace, Name: h.Name}]))
	}
	slices.SortFunc(out, func(a, b HiveSummary) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// SummariseHive summarises one hive from its agent pods and its tasks.
func SummariseHive(h *swarmv1alpha1.Hive, pods []*corev1.Pod, tasks []*swarmv1alpha1.Task) HiveSummary {
	s := HiveSummary{
		Name:      h.Name,
		Namespace: h.Namespace,
		Desired:   desiredReplicas(h),
		Pods:      []AgentSummary{},
	}
	bound := map[string]int{}
	for _, t := range tasks {
		switch {
		case t.Status.Phase.Bound():
			bound[t.Status.Agent]++
			s.Queue.Running++
		case lifecycle.IsQueued(t):
			s.Queue.Pending++
		case t.Status.Phase == swarmv1alpha1.TaskBlocked && !t.Spec.Cancel:
			s.Queue.Blocked++
		}
	}
	for _, p := range pods {
		a := AgentSummary{
			Name:     p.Name,
			State:    string(agentpod.StateOf(p, bound[p.Name])),
			Ready:    agentpod.IsReady(p),
			Tasks:    bound[p.Name],
			Revision: agentpod.Revision(p),
			Created:  p.CreationTimestamp.Time,
			IP:       p.Status.PodIP,
			Node:     p.Spec.NodeName,
		}
		switch agentpod.State(a.State) {
		case agentpod.StateStopping:
			s.Agents.Stopping++
		case agentpod.StateDraining:
			s.Agents.Draining++
		case agentpod.StateStarting:
			s.Agents.Starting++
		case agentpod.StateBusy:
			s.Agents.Busy++
		default:
			s.Agents.Idle++
		}
		if a.Ready && agentpod.State(a.State) != agentpod.StateStopping {
			s.Ready++
		}
		s.Pods = append(s.Pods, a)
	}
	slices.SortFunc(s.Pods, func(a, b AgentSummary) int { return cmp.Compare(a.Name, b.Name) })

	s.Rollout = RolloutSummary{
		CurrentRevision: h.Status.CurrentRevision,
		UpdateRevision:  h.Status.UpdateRevision,
		UpdatedReplicas: h.Status.UpdatedReplicas,
		DesiredReplicas: s.Desired,
	}
	if c := meta.FindStatusCondition(h.Status.Conditions, swarmv1alpha1.HiveProgressing); c != nil {
		s.Rollout.Progressing = c.Status == metav1.ConditionTrue
		s.Rollout.Reason = c.Reason
		s.Rollout.Message = c.Message
	}
	s.Problems = problems(h)
	return s
}

// desiredReplicas is status.desiredReplicas once the operator has written the status, and
// spec.replicas before (a new hive, or an operator that is not running).
func desiredReplicas(h *swarmv1alpha1.Hive) int32 {
	if h.Status.ObservedGeneration > 0 {
		return h.Status.DesiredReplicas
	}
	return h.Spec.ReplicasOrDefault()
}

// problems returns the conditions that are not healthy (Degraded=True, Available=False),
// and a Stale problem when the status does not describe the latest spec: then the counts
// may be old, and an operator that never catches up is not running.
func problems(h *swarmv1alpha1.Hive) []Problem {
	var out []Problem
	if c := meta.FindStatusCondition(h.Status.Conditions, swarmv1alpha1.HiveDegraded); c != nil && c.Status == metav1.ConditionTrue {
		out = append(out, Problem{Type: c.Type, Status: string(c.Status), Reason: c.Reason, Message: c.Message})
	}
	if c := meta.FindStatusCondition(h.Status.Conditions, swarmv1alpha1.HiveAvailable); c != nil && c.Status == metav1.ConditionFalse {
		out = append(out, Problem{Type: c.Type, Status: string(c.Status), Reason: c.Reason, Message: c.Message})
	}
	if h.Status.ObservedGeneration < h.Generation {
		msg := "the operator has not reported on this hive yet; is it running?"
		if h.Status.ObservedGeneration > 0 {
			msg = fmt.Sprintf("the status describes generation %d of the spec, not %d; the operator has not caught up (is it running?)",
				h.Status.ObservedGeneration, h.Generation)
		}
		out = append(out, Problem{Type: "Stale", Status: string(metav1.ConditionTrue), Reason: "NotObserved", Message: msg})
	}
	return out
}

// QueueRow is one queued task, as queue shows it.
type QueueRow struct {
	// Position is the task's place in the dispatch order, from 1; 0 for a task that cannot
	// be dispatched yet, which has no place until it can.
	Position int
	// Task is the queued task.
	Task     *swarmv1alpha1.Task
	Name     string
	Priority int32
	// QueuedSince is when the task entered the queue; Waiting is how long ago that was.
	QueuedSince  time.Time
	Waiting      time.Duration
	Dispatchable bool
	// Note says why a task cannot be dispatched yet.
	Note string
}

// QueueRows returns a hive's queued tasks in the order the dispatcher binds them: the
// dispatchable ones by dispatch.Order, numbered from 1, then those that cannot be bound yet
// (backoff, dependencies, capabilities), in the same order, each with a note saying why.
// Blocked tasks count as queued here: to a person they wait in the queue too. known holds
// the tasks of the namespace by name, to look up dependencies; a dependency missing from it
// does not exist.
func QueueRows(hive *swarmv1alpha1.Hive, tasks []swarmv1alpha1.Task, known map[string]*swarmv1alpha1.Task, now time.Time) []QueueRow {
	var ready, waiting []dispatch.Item
	notes := map[types.UID]string{}
	byUID := map[types.UID]*swarmv1alpha1.Task{}
	for i := range tasks {
		t := &tasks[i]
		if t.Spec.Hive != hive.Name || !waitsInQueue(t) {
			continue
		}
		deps := dependenciesOf(t, known)
		item := dispatch.Item{Name: t.Name, UID: t.UID, Priority: t.Spec.Priority, Queued: t.CreationTimestamp.Time}
		byUID[t.UID] = t
		if ok, _ := lifecycle.Dispatchable(t, hive.Spec.Agent.Capabilities, now, time.Time{}); ok {
			ready = append(ready, item)
			continue
		}
		waiting = append(waiting, item)
		notes[t.UID] = queueNote(t, hive, deps, now)
	}
	dispatch.Order(ready)
	dispatch.Order(waiting)

	rows := make([]QueueRow, 0, len(ready)+len(waiting))
	row := func(it dispatch.Item) QueueRow {
		t := byUID[it.UID]
		since := lifecycle.QueuedSince(t)
		wait := max(now.Sub(since), 0)
		return QueueRow{Task: t, Name: t.Name, Priority: t.Spec.Priority, QueuedSince: since, Waiting: wait}
	}
	for i, it := range ready {
		r := row(it)
		r.Position = i + 1
		r.Dispatchable = true
		rows = append(rows, r)
	}
	for _, it := range waiting {
		r := row(it)
		r.Note = notes[it.UID]
		rows = append(rows, r)
	}
	return rows
}

// waitsInQueue reports whether a task waits to be dispatched: queued, or blocked on its
// dependencies, and not cancelled.
func waitsInQueue(t *swarmv1alpha1.Task) bool {
	return lifecycle.IsQueued(t) || (t.Status.Phase == swarmv1alpha1.TaskBlocked && !t.Spec.Cancel)
}

// dependenciesOf returns the tasks a task depends on, nil for those that do not exist, as
// lifecycle.Dispatchable expects them.
func dependenciesOf(t *swarmv1alpha1.Task, known map[string]*swarmv1alpha1.Task) map[string]*swarmv1alpha1.Task {
	if len(t.Spec.DependsOn) == 0 {
		return nil
	}
	deps := make(map[string]*swarmv1alpha1.Task, len(t.Spec.DependsOn))
	for _, name := range t.Spec.DependsOn {
		deps[name] = known[name]
	}
	return deps
}

// queueNote says every reason a queued task cannot be dispatched now, checked as
// lifecycle.Dispatchable checks them.
func queueNote(t *swarmv1alpha1.Task, hive *swarmv1alpha1.Hive, deps map[string]*swarmv1alpha1.Task, now time.Time) string {
	var why []string
	depsNoted := false
	if len(t.Spec.DependsOn) > 0 {
		switch state, msg := lifecycle.Dependencies(t, deps); state {
		case lifecycle.DependenciesWaiting, lifecycle.DependencyMissing:
			why = append(why, "blocked on dependencies: "+msg)
			depsNoted = true
		case lifecycle.DependencyFailed:
			why = append(why, msg+"; the operator will fail this task")
			depsNoted = true
		case lifecycle.DependenciesMet:
			if !lifecycle.DependenciesSatisfied(t) && t.Status.Phase != swarmv1alpha1.TaskBlocked {
				why = append(why, "its dependencies succeeded; the operator has yet to record it")
				depsNoted = true
			}
		}
	}
	if t.Status.Phase == swarmv1alpha1.TaskBlocked && !depsNoted {
		// Its dependencies are met, or it has none: the operator has yet to move it back to
		// Pending.
		why = append(why, "blocked until the operator requeues it: "+orDefault(t.Status.Message, "no message"))
	}
	if missing := lifecycle.MissingCapabilities(t.Spec.RequiredCapabilities, hive.Spec.Agent.Capabilities); len(missing) > 0 {
		why = append(why, "needs capabilities the hive lacks: "+strings.Join(missing, ", "))
	}
	if t.Status.NotBefore != nil && now.Before(t.Status.NotBefore.Time) {
		why = append(why, fmt.Sprintf("backoff until %s (in %s)",
			t.Status.NotBefore.Local().Format(time.TimeOnly), FormatDuration(t.Status.NotBefore.Sub(now))))
	}
	if len(why) == 0 {
		// Dispatchable said no for a reason this function does not know: say so rather than
		// print nothing.
		why = append(why, "not dispatchable")
	}
	return strings.Join(why, "; ")
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// ResultRow is one finished task, as results shows it.
type ResultRow struct {
	Name     string
	Hive     string
	Phase    swarmv1alpha1.TaskPhase
	Attempts int32
	// Queued is how long the last attempt waited for its agent (from QueuedSince to
	// assignedAt), Ran how long it ran (assignedAt to finishedAt); nil when unknown, such as
	// for a task cancelled before it was bound.
	Queued, Ran *time.Duration
	Age         time.Duration
	// Output is the result of a successful task, else its message, on one line and cut to
	// resultWidth characters.
	Output string
}

// resultWidth is how many characters of a result or message results prints on one line.
const resultWidth = 60

// FinishedTasks returns the finished tasks (Succeeded, Failed, Cancelled) sorted by finish
// time, newest last, keeping the newest limit of them when limit > 0.
func FinishedTasks(tasks []swarmv1alpha1.Task, limit int) []*swarmv1alpha1.Task {
	var out []*swarmv1alpha1.Task
	for i := range tasks {
		if tasks[i].Status.Phase.Finished() {
			out = append(out, &tasks[i])
		}
	}
	slices.SortFunc(out, func(a, b *swarmv1alpha1.Task) int {
		return cmp.Or(lifecycle.FinishedAt(a).Compare(lifecycle.FinishedAt(b)), cmp.Compare(a.Name, b.Name))
	})
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}

// ResultRowOf returns the row of a finished task.
func ResultRowOf(t *swarmv1alpha1.Task, now time.Time) ResultRow {
	r := ResultRow{
		Name:     t.Name,
		Hive:     t.Spec.Hive,
		Phase:    t.Status.Phase,
		Attempts: t.Status.Attempt,
		Age:      now.Sub(t.CreationTimestamp.Time),
	}
	if a := t.Status.AssignedAt; a != nil {
		q := max(a.Sub(lifecycle.QueuedSince(t)), 0)
		r.Queued = &q
		if f := t.Status.FinishedAt; f != nil {
			ran := max(f.Sub(a.Time), 0)
			r.Ran = &ran
		}
	}
	out := t.Status.Message
	if t.Status.Phase == swarmv1alpha1.TaskSucceeded {
		out = t.Status.Result
	}
	r.Output = OneLine(out, resultWidth)
	return r
}

// OneLine returns s with every run of white space (new lines included) made one space,
// cut to at most n characters with an ellipsis when it was longer.
func OneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return strings.TrimRight(string(r[:max(n-1, 0)]), " ") + "…"
}

// FormatDuration prints a duration short enough for a column and precise enough for tasks
// that take milliseconds: 350ms, 2.5s, then as kubectl prints ages (45s, 3m10s, 2d3h).
func FormatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	default:
		return duration.HumanDuration(d)
	}
}

// formatOptional prints a duration that may be unknown.
func formatOptional(d *time.Duration) string {
	if d == nil {
		return "-"
	}
	return FormatDuration(*d)
}

// ProgressState describes where a task stands while submit --wait waits for it, without
// the elapsed time: the line is printed again on a terminal, and once per change
// elsewhere.
func ProgressState(t *swarmv1alpha1.Task) string {
	phase := t.Status.Phase
	if phase == "" {
		phase = swarmv1alpha1.TaskPending
	}
	s := fmt.Sprintf("task %s: %s", t.Name, phase)
	if t.Status.Agent != "" {
		s += " on agent " + t.Status.Agent
	}
	if t.Status.Attempt > 0 {
		s += fmt.Sprintf(", attempt %d", t.Status.Attempt)
	}
	if phase == swarmv1alpha1.TaskBlocked && t.Status.Message != "" {
		s += " (" + OneLine(t.Status.Message, resultWidth) + ")"
	}
	return s
}

// ProgressLine is ProgressState with the time waited so far.
func ProgressLine(t *swarmv1alpha1.Task, elapsed time.Duration) string {
	return fmt.Sprintf("%s, %s elapsed", ProgressState(t), max(elapsed, 0).Round(time.Second))
}
