package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func micro(t time.Time) *metav1.MicroTime {
	m := metav1.NewMicroTime(t)
	return &m
}

type taskOpt func(*swarmv1alpha1.Task)

func task(name, hive string, opts ...taskOpt) swarmv1alpha1.Task {
	t := swarmv1alpha1.Task{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name), CreationTimestamp: metav1.NewTime(t0)},
		Spec:       swarmv1alpha1.TaskSpec{Hive: hive},
		Status:     swarmv1alpha1.TaskStatus{Phase: swarmv1alpha1.TaskPending},
	}
	for _, o := range opts {
		o(&t)
	}
	return t
}

func phase(p swarmv1alpha1.TaskPhase) taskOpt {
	return func(t *swarmv1alpha1.Task) { t.Status.Phase = p }
}
func boundTo(agent string) taskOpt {
	return func(t *swarmv1alpha1.Task) {
		t.Status.Phase, t.Status.Agent, t.Status.Attempt = swarmv1alpha1.TaskRunning, agent, 1
	}
}
func prio(p int32) taskOpt { return func(t *swarmv1alpha1.Task) { t.Spec.Priority = p } }
func created(d time.Duration) taskOpt {
	return func(t *swarmv1alpha1.Task) { t.CreationTimestamp = metav1.NewTime(t0.Add(d)) }
}
func cancelled() taskOpt { return func(t *swarmv1alpha1.Task) { t.Spec.Cancel = true } }

type podOpt func(*corev1.Pod)

func pod(name string, owner types.UID, opts ...podOpt) corev1.Pod {
	p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Name: name, CreationTimestamp: metav1.NewTime(t0),
		Labels:          map[string]string{swarmv1alpha1.LabelHive: "h", swarmv1alpha1.LabelRevision: "r1"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "swarm.aihub.dev/v1alpha1", Kind: "Hive", Name: "h", UID: owner, Controller: ptr.To(true)}},
	}}
	for _, o := range opts {
		o(&p)
	}
	return p
}

func ready(p *corev1.Pod) {
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
}
func draining(p *corev1.Pod) {
	p.Annotations = map[string]string{swarmv1alpha1.AnnotationDrainingSince: t0.Format(time.RFC3339)}
}
func deleting(p *corev1.Pod) { p.DeletionTimestamp = ptr.To(metav1.NewTime(t0)) }
func failed(p *corev1.Pod)   { p.Status.Phase = corev1.PodFailed }

func hiveWith(name string, uid types.UID, mut ...func(*swarmv1alpha1.Hive)) swarmv1alpha1.Hive {
	h := swarmv1alpha1.Hive{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: uid, Generation: 1},
		Spec:       swarmv1alpha1.HiveSpec{Replicas: ptr.To[int32](4)},
	}
	for _, m := range mut {
		m(&h)
	}
	return h
}

func observed(desired, updated int32, current, update string, conds ...metav1.Condition) func(*swarmv1alpha1.Hive) {
	return func(h *swarmv1alpha1.Hive) {
		h.Status.ObservedGeneration = h.Generation
		h.Status.DesiredReplicas = desired
		h.Status.UpdatedReplicas = updated
		h.Status.CurrentRevision, h.Status.UpdateRevision = current, update
		for _, c := range conds {
			meta.SetStatusCondition(&h.Status.Conditions, c)
		}
	}
}

func cond(typ string, status metav1.ConditionStatus, reason, msg string) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg}
}

func TestSummariseHive(t *testing.T) {
	const uid = types.UID("hive-uid")
	pods := []corev1.Pod{
		pod("h-busy", uid, ready),
		pod("h-idle", uid, ready),
		pod("h-starting", uid),
		pod("h-draining", uid, ready, draining),
		pod("h-deleting", uid, ready, deleting),
		pod("h-failed", uid, failed),
		pod("h-busy-unready", uid),
		// Another hive's pod, and an orphan carrying the label: not this hive's agents.
		pod("other", "other-uid", ready),
		func() corev1.Pod { p := pod("orphan", uid, ready); p.OwnerReferences = nil; return p }(),
	}
	tasks := []swarmv1alpha1.Task{
		task("run1", "h", boundTo("h-busy")),
		task("run2", "h", boundTo("h-busy"), phase(swarmv1alpha1.TaskAssigned)),
		task("run3", "h", boundTo("h-busy-unready")),
		task("run4", "h", boundTo("h-draining")),
		task("p1", "h"),
		task("p2", "h", phase("")),
		task("p-cancelled", "h", cancelled()),
		task("b1", "h", phase(swarmv1alpha1.TaskBlocked)),
		task("b-cancelled", "h", phase(swarmv1alpha1.TaskBlocked), cancelled()),
		task("done", "h", phase(swarmv1alpha1.TaskSucceeded)),
		task("elsewhere", "other", boundTo("other")),
	}
	hives := []swarmv1alpha1.Hive{
		hiveWith("h", uid, observed(3, 1, "r1", "r2",
			cond(swarmv1alpha1.HiveProgressing, metav1.ConditionTrue, swarmv1alpha1.ReasonRolloutInProgress, "Rolling out revision r2"),
			cond(swarmv1alpha1.HiveDegraded, metav1.ConditionTrue, swarmv1alpha1.ReasonPodCreateFailed, "quota exceeded"),
			cond(swarmv1alpha1.HiveAvailable, metav1.ConditionFalse, swarmv1alpha1.ReasonAgentsUnavailable, "1 of 3 agents are ready"),
		)),
		hiveWith("a-empty", "a-uid"),
	}
	got := SummariseHives(hives, pods, tasks)
	if len(got) != 2 || got[0].Name != "a-empty" || got[1].Name != "h" {
		t.Fatalf("summaries are not one per hive, by name: %+v", got)
	}

	empty := got[0]
	want := HiveSummary{
		Name: "a-empty", Namespace: "ns", Desired: 4, Pods: []AgentSummary{},
		Rollout: RolloutSummary{DesiredReplicas: 4},
		Problems: []Problem{{Type: "Stale", Status: "True", Reason: "NotObserved",
			Message: "the operator has not reported on this hive yet; is it running?"}},
	}
	if diff := cmp.Diff(want, empty); diff != "" {
		t.Errorf("hive without status (-want +got):\n%s", diff)
	}

	s := got[1]
	// One rule for every view (agentpod.Facts.State): an agent that holds a task is busy,
	// ready or not.
	if diff := cmp.Diff(AgentCounts{Starting: 1, Idle: 1, Busy: 2, Draining: 1, Stopping: 2}, s.Agents); diff != "" {
		t.Errorf("agents (-want +got):\n%s", diff)
	}
	// Ready: busy, idle, draining; the deleting one is on its way out.
	if s.Ready != 3 || s.Desired != 3 {
		t.Errorf("ready/desired = %d/%d, want 3/3", s.Ready, s.Desired)
	}
	if diff := cmp.Diff(QueueCounts{Pending: 2, Blocked: 1, Running: 4}, s.Queue); diff != "" {
		t.Errorf("queue (-want +got):\n%s", diff)
	}
	wantRollout := RolloutSummary{CurrentRevision: "r1", UpdateRevision: "r2", UpdatedReplicas: 1, DesiredReplicas: 3,
		Progressing: true, Reason: swarmv1alpha1.ReasonRolloutInProgress, Message: "Rolling out revision r2"}
	if diff := cmp.Diff(wantRollout, s.Rollout); diff != "" {
		t.Errorf("rollout (-want +got):\n%s", diff)
	}
	if !s.Rollout.InProgress() {
		t.Error("rollout from r1 to r2 is not in progress")
	}
	var labels []string
	for _, p := range s.Problems {
		labels = append(labels, p.Label())
	}
	if diff := cmp.Diff([]string{"Degraded", "Unavailable"}, labels); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	states := map[string]string{}
	for _, a := range s.Pods {
		states[a.Name] = a.State
	}
	wantStates := map[string]string{
		"h-busy": "busy", "h-idle": "idle", "h-starting": "starting", "h-draining": "draining",
		"h-deleting": "stopping", "h-failed": "stopping", "h-busy-unready": "busy",
	}
	if diff := cmp.Diff(wantStates, states); diff != "" {
		t.Errorf("agent states (-want +got):\n%s", diff)
	}
	if s.Pods[0].Name != "h-busy" || s.Pods[0].Tasks != 2 {
		t.Errorf("first agent = %+v, want h-busy with 2 tasks (agents sorted by name)", s.Pods[0])
	}
}

func TestProblems(t *testing.T) {
	healthy := []metav1.Condition{
		cond(swarmv1alpha1.HiveDegraded, metav1.ConditionFalse, swarmv1alpha1.ReasonAsExpected, ""),
		cond(swarmv1alpha1.HiveAvailable, metav1.ConditionTrue, swarmv1alpha1.ReasonAgentsReady, "2 of 2"),
	}
	for _, tc := range []struct {
		name string
		hive swarmv1alpha1.Hive
		want []string
	}{
		{"healthy", hiveWith("h", "u", observed(2, 2, "r", "r", healthy...)), nil},
		{"stale generation", hiveWith("h", "u", observed(2, 2, "r", "r", healthy...), func(h *swarmv1alpha1.Hive) { h.Generation = 3 }),
			[]string{"Stale: the status describes generation 1 of the spec, not 3; the operator has not caught up (is it running?)"}},
		{"degraded", hiveWith("h", "u", observed(2, 2, "r", "r",
			cond(swarmv1alpha1.HiveDegraded, metav1.ConditionTrue, swarmv1alpha1.ReasonPodCreateFailed, "forbidden"))),
			[]string{"Degraded: forbidden"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, p := range problems(&tc.hive) {
				got = append(got, p.Label()+": "+p.Message)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDesiredReplicas(t *testing.T) {
	for _, tc := range []struct {
		name string
		hive swarmv1alpha1.Hive
		want int32
	}{
		{"from status once observed", hiveWith("h", "u", observed(7, 0, "", "")), 7},
		{"from spec before", hiveWith("h", "u"), 4},
		{"schema default without either", hiveWith("h", "u", func(h *swarmv1alpha1.Hive) { h.Spec.Replicas = nil }), 1},
	} {
		if got := desiredReplicas(&tc.hive); got != tc.want {
			t.Errorf("%s: desiredReplicas = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestQueueRows(t *testing.T) {
	now := t0.Add(time.Minute)
	hive := hiveWith("h", "u", func(h *swarmv1alpha1.Hive) { h.Spec.Agent.Capabilities = []string{"echo"} })
	tasks := []swarmv1alpha1.Task{
		task("old", "h", created(0)),
		task("new", "h", created(10*time.Second)),
		task("urgent", "h", created(20*time.Second), prio(5)),
		// Same priority and creation second: by name.
		task("tie-b", "h", created(30*time.Second)),
		task("tie-a", "h", created(30*time.Second)),
		// A retry keeps its place by creation time, but waits since it was queued again.
		task("retried", "h", created(5*time.Second), func(t *swarmv1alpha1.Task) {
			t.Status.Attempt, t.Status.QueuedAt = 1, micro(now.Add(-2*time.Second))
		}),
		task("backoff", "h", prio(9), func(t *swarmv1alpha1.Task) { t.Status.NotBefore = micro(now.Add(30 * time.Second)) }),
		task("backoff-over", "h", created(40*time.Second), func(t *swarmv1alpha1.Task) { t.Status.NotBefore = micro(now.Add(-time.Second)) }),
		task("gpu", "h", func(t *swarmv1alpha1.Task) { t.Spec.RequiredCapabilities = []string{"echo", "gpu"} }),
		task("waits", "h", func(t *swarmv1alpha1.Task) { t.Spec.DependsOn = []string{"dep-running", "dep-missing"} }),
		task("deps-met", "h", created(50*time.Second), func(t *swarmv1alpha1.Task) {
			t.Spec.DependsOn = []string{"dep-done"}
			t.Status.Conditions = []metav1.Condition{{Type: swarmv1alpha1.TaskDependenciesReady, Status: metav1.ConditionTrue, Reason: swarmv1alpha1.ReasonDependenciesSucceeded}}
		}),
		task("deps-met-unrecorded", "h", created(50*time.Second), func(t *swarmv1alpha1.Task) { t.Spec.DependsOn = []string{"dep-done"} }),
		task("dep-broke", "h", func(t *swarmv1alpha1.Task) { t.Spec.DependsOn = []string{"dep-failed"} }),
		task("blocked", "h", phase(swarmv1alpha1.TaskBlocked), func(t *swarmv1alpha1.Task) { t.Spec.DependsOn = []string{"dep-running"} }),
		task("blocked-stale", "h", phase(swarmv1alpha1.TaskBlocked), func(t *swarmv1alpha1.Task) {
			t.Spec.DependsOn = []string{"dep-done"}
			t.Status.Message = "waiting for tasks dep-done"
		}),
		// Not queued: running, finished, cancelled, another hive's.
		task("running", "h", boundTo("a")),
		task("finished", "h", phase(swarmv1alpha1.TaskSucceeded)),
		task("cancelled", "h", cancelled()),
		task("blocked-cancelled", "h", phase(swarmv1alpha1.TaskBlocked), cancelled()),
		task("foreign", "other"),
	}
	known := map[string]*swarmv1alpha1.Task{}
	for _, d := range []swarmv1alpha1.Task{
		task("dep-running", "other", boundTo("x")),
		task("dep-done", "other", phase(swarmv1alpha1.TaskSucceeded)),
		task("dep-failed", "other", phase(swarmv1alpha1.TaskFailed), func(t *swarmv1alpha1.Task) { t.Status.Message = "boom" }),
	} {
		known[d.Name] = &d
	}
	for i := range tasks {
		known[tasks[i].Name] = &tasks[i]
	}

	rows := QueueRows(&hive, tasks, known, now)
	type row struct {
		Pos  int
		Name string
		Note string
	}
	var got []row
	for _, r := range rows {
		got = append(got, row{r.Position, r.Name, r.Note})
	}
	backoffAt := now.Add(30 * time.Second).Local().Format(time.TimeOnly)
	want := []row{
		{1, "urgent", ""},
		{2, "old", ""},
		{3, "retried", ""},
		{4, "new", ""},
		{5, "tie-a", ""},
		{6, "tie-b", ""},
		{7, "backoff-over", ""},
		{8, "deps-met", ""},
		{0, "backoff", "backoff until " + backoffAt + " (in 30s)"},
		{0, "blocked", "blocked on dependencies: waiting for tasks dep-running"},
		{0, "blocked-stale", "blocked until the operator requeues it: waiting for tasks dep-done"},
		{0, "dep-broke", "dependency dep-failed failed: boom; the operator will fail this task"},
		{0, "gpu", "needs capabilities the hive lacks: gpu"},
		{0, "waits", "blocked on dependencies: waiting for tasks dep-running, dep-missing (not found)"},
		{0, "deps-met-unrecorded", "its dependencies succeeded; the operator has yet to record it"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("queue (-want +got):\n%s", diff)
	}
	for _, r := range rows {
		switch r.Name {
		case "retried":
			if r.Waiting != 2*time.Second || r.Task != &tasks[5] {
				t.Errorf("retried waits %s (task %p), want 2s since it was queued again, and the task itself", r.Waiting, r.Task)
			}
		case "old":
			if r.Waiting != time.Minute || !r.Dispatchable {
				t.Errorf("old: waiting %s, dispatchable %v; want 1m0s, true", r.Waiting, r.Dispatchable)
			}
		}
	}
}

func TestQueueNoteUnknownReason(t *testing.T) {
	// A task Dispatchable refuses for no reason queueNote knows still gets a note.
	tk := task("x", "h")
	h := hiveWith("h", "u")
	if got := queueNote(&tk, &h, nil, t0); got != "not dispatchable" {
		t.Errorf("queueNote = %q, want the fallback", got)
	}
}

func TestFinishedTasks(t *testing.T) {
	finished := func(p swarmv1alpha1.TaskPhase, at time.Duration) taskOpt {
		return func(t *swarmv1alpha1.Task) {
			t.Status.Phase = p
			if at >= 0 {
				t.Status.FinishedAt = micro(t0.Add(at))
			}
		}
	}
	tasks := []swarmv1alpha1.Task{
		task("c", "h", finished(swarmv1alpha1.TaskSucceeded, 3*time.Second)),
		task("a", "h", finished(swarmv1alpha1.TaskFailed, 1*time.Second)),
		task("b", "h", finished(swarmv1alpha1.TaskCancelled, 3*time.Second)),
		// No finishedAt: its creation stands for it.
		task("z", "h", finished(swarmv1alpha1.TaskSucceeded, -1)),
		task("pending", "h"),
		task("running", "h", boundTo("x")),
	}
	names := func(ts []*swarmv1alpha1.Task) []string {
		var out []string
		for _, t := range ts {
			out = append(out, t.Name)
		}
		return out
	}
	if diff := cmp.Diff([]string{"z", "a", "b", "c"}, names(FinishedTasks(tasks, 0))); diff != "" {
		t.Errorf("all (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"b", "c"}, names(FinishedTasks(tasks, 2))); diff != "" {
		t.Errorf("limit 2 keeps the newest (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"z", "a", "b", "c"}, names(FinishedTasks(tasks, 10))); diff != "" {
		t.Errorf("limit above the count (-want +got):\n%s", diff)
	}
}

func TestResultRowOf(t *testing.T) {
	now := t0.Add(time.Hour)
	long := strings.Repeat("word ", 30)
	for _, tc := range []struct {
		name string
		task swarmv1alpha1.Task
		want ResultRow
	}{
		{
			name: "succeeded shows the result on one line",
			task: task("s", "h", func(t *swarmv1alpha1.Task) {
				t.Status = swarmv1alpha1.TaskStatus{Phase: swarmv1alpha1.TaskSucceeded, Attempt: 1, Result: "line one\n\tline two\n",
					Message: "ignored", AssignedAt: micro(t0.Add(250 * time.Millisecond)), FinishedAt: micro(t0.Add(1500 * time.Millisecond))}
			}),
			want: ResultRow{Name: "s", Hive: "h", Phase: swarmv1alpha1.TaskSucceeded, Attempts: 1,
				Queued: ptr.To(250 * time.Millisecond), Ran: ptr.To(1250 * time.Millisecond), Age: time.Hour, Output: "line one line two"},
		},
		{
			name: "failed retry waited since it was queued again, and shows its message cut",
			task: task("f", "h", func(t *swarmv1alpha1.Task) {
				t.Status = swarmv1alpha1.TaskStatus{Phase: swarmv1alpha1.TaskFailed, Attempt: 2, Message: long,
					QueuedAt: micro(t0.Add(time.Minute)), AssignedAt: micro(t0.Add(time.Minute + 3*time.Second)), FinishedAt: micro(t0.Add(2 * time.Minute))}
			}),
			want: ResultRow{Name: "f", Hive: "h", Phase: swarmv1alpha1.TaskFailed, Attempts: 2,
				Queued: ptr.To(3 * time.Second), Ran: ptr.To(57 * time.Second), Age: time.Hour,
				Output: strings.TrimSpace(strings.Repeat("word ", 12)) + "…"},
		},
		{
			name: "cancelled before it was bound",
			task: task("c", "h", func(t *swarmv1alpha1.Task) {
				t.Status = swarmv1alpha1.TaskStatus{Phase: swarmv1alpha1.TaskCancelled, Message: "cancelled before it ran", FinishedAt: micro(t0)}
			}),
			want: ResultRow{Name: "c", Hive: "h", Phase: swarmv1alpha1.TaskCancelled, Age: time.Hour, Output: "cancelled before it ran"},
		},
		{
			name: "bound but no finish time",
			task: task("x", "h", func(t *swarmv1alpha1.Task) {
				t.Status = swarmv1alpha1.TaskStatus{Phase: swarmv1alpha1.TaskFailed, Attempt: 1, AssignedAt: micro(t0.Add(time.Second))}
			}),
			want: ResultRow{Name: "x", Hive: "h", Phase: swarmv1alpha1.TaskFailed, Attempts: 1, Queued: ptr.To(time.Second), Age: time.Hour},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, ResultRowOf(&tc.task, now)); diff != "" {
				t.Errorf("row (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOneLine(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"", 10, ""},
		{"  a\n b\t\tc  ", 10, "a b c"},
		{"0123456789", 10, "0123456789"},
		{"0123456789a", 10, "012345678…"},
		{"ééééééééééé", 5, "éééé…"},
		{"abc def", 5, "abc…"},
		{"abc", 0, "…"},
	} {
		if got := OneLine(tc.in, tc.n); got != tc.want {
			t.Errorf("OneLine(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{0, "0s"},
		{1234567 * time.Nanosecond, "1ms"},
		{350 * time.Millisecond, "350ms"},
		{2549 * time.Millisecond, "2.5s"},
		{45 * time.Second, "45s"},
		{190 * time.Second, "3m10s"},
		{51 * time.Hour, "2d3h"},
	} {
		if got := FormatDuration(tc.in); got != tc.want {
			t.Errorf("FormatDuration(%s) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := formatOptional(nil); got != "-" {
		t.Errorf("formatOptional(nil) = %q, want -", got)
	}
}

func TestProgressLine(t *testing.T) {
	for _, tc := range []struct {
		name    string
		task    swarmv1alpha1.Task
		elapsed time.Duration
		want    string
	}{
		{"new", task("t", "h", phase("")), 400 * time.Millisecond, "task t: Pending, 0s elapsed"},
		{"bound", task("t", "h", boundTo("h-abc")), 3600 * time.Millisecond, "task t: Running on agent h-abc, attempt 1, 4s elapsed"},
		{"retry", task("t", "h", func(t *swarmv1alpha1.Task) { t.Status.Attempt = 2 }), 65 * time.Second, "task t: Pending, attempt 2, 1m5s elapsed"},
		{"blocked", task("t", "h", phase(swarmv1alpha1.TaskBlocked), func(t *swarmv1alpha1.Task) { t.Status.Message = "waiting for tasks a" }),
			-time.Second, "task t: Blocked (waiting for tasks a), 0s elapsed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ProgressLine(&tc.task, tc.elapsed); got != tc.want {
				t.Errorf("ProgressLine = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestProgress(t *testing.T) {
	steps := [][2]string{{"a", "a, 0s"}, {"a", "a, 1s"}, {"b", "b-longer, 2s"}, {"c", "c, 3s"}}
	for _, tc := range []struct {
		name string
		tty  bool
		want string
	}{
		{"plain lines once per state", false, "a, 0s\nb-longer, 2s\nc, 3s\n"},
		{"rewritten on a terminal", true, "\ra, 0s\ra, 1s\rb-longer, 2s\rc, 3s       \n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			p := &progress{w: &b, tty: tc.tty}
			for _, s := range steps {
				p.show(s[0], s[1])
			}
			p.done()
			p.done() // a second done adds nothing
			if got := b.String(); got != tc.want {
				t.Errorf("output = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestExplain(t *testing.T) {
	gr := schema.GroupResource{Group: "swarm.aihub.dev", Resource: "tasks"}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"forbidden", apierrors.NewForbidden(gr, "x", errors.New("no")), "ask for access"},
		{"unauthorised", apierrors.NewUnauthorized("who"), "log in again"},
		{"no CRD", &meta.NoKindMatchError{GroupKind: schema.GroupKind{Group: "swarm.aihub.dev", Kind: "Hive"}}, "CRDs installed"},
		{"other", errors.New("boom"), "listing: boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := explain("listing", tc.err)
			if !strings.Contains(err.Error(), tc.want) || !errors.Is(err, tc.err) {
				t.Errorf("explain = %v, want it to contain %q and wrap the error", err, tc.want)
			}
		})
	}
}

func TestReport(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
		out  string
	}{
		{nil, 0, ""},
		{errors.New("boom"), 1, "error: boom\n"},
		{withCode(exitTimeout, errors.New("gave up")), 2, "error: gave up\n"},
	} {
		var b bytes.Buffer
		if code := report(tc.err, &b); code != tc.code || b.String() != tc.out {
			t.Errorf("report(%v) = %d, %q; want %d, %q", tc.err, code, b.String(), tc.code, tc.out)
		}
	}
	inner := errors.New("inner")
	if err := withCode(2, inner); !errors.Is(err, inner) {
		t.Error("a codeError does not wrap its error")
	}
}
