package lifecycle

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

var now = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// taskWrapper builds test tasks: T("t").Bound("a", 1).Obj().
type taskWrapper struct{ swarmv1alpha1.Task }

func T(name string) *taskWrapper {
	return &taskWrapper{swarmv1alpha1.Task{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", CreationTimestamp: metav1.NewTime(now.Add(-time.Hour))},
		Spec:       swarmv1alpha1.TaskSpec{Hive: "h"},
	}}
}
func (w *taskWrapper) Phase(p swarmv1alpha1.TaskPhase) *taskWrapper { w.Status.Phase = p; return w }
func (w *taskWrapper) Bound(agent string, attempt int32, ago time.Duration) *taskWrapper {
	w.Status.Phase, w.Status.Agent, w.Status.Attempt = swarmv1alpha1.TaskAssigned, agent, attempt
	w.Status.AssignedAt = micro(now.Add(-ago))
	return w
}
func (w *taskWrapper) Retries(n int32) *taskWrapper { w.Spec.MaxRetries = &n; return w }
func (w *taskWrapper) Timeout(d time.Duration) *taskWrapper {
	w.Spec.Timeout = &metav1.Duration{Duration: d}
	return w
}
func (w *taskWrapper) Backoff(d time.Duration) *taskWrapper {
	w.Spec.Backoff = &metav1.Duration{Duration: d}
	return w
}
func (w *taskWrapper) Cancel() *taskWrapper { w.Spec.Cancel = true; return w }
func (w *taskWrapper) Needs(caps ...string) *taskWrapper {
	w.Spec.RequiredCapabilities = caps
	return w
}
func (w *taskWrapper) DependsOn(names ...string) *taskWrapper { w.Spec.DependsOn = names; return w }
func (w *taskWrapper) TTL(s int32) *taskWrapper               { w.Spec.TTLSecondsAfterFinished = &s; return w }
func (w *taskWrapper) FinishedAgo(d time.Duration) *taskWrapper {
	w.Status.FinishedAt = micro(now.Add(-d))
	return w
}
func (w *taskWrapper) NotBefore(t time.Time) *taskWrapper { w.Status.NotBefore = micro(t); return w }
func (w *taskWrapper) Condition(reason, message string) *taskWrapper {
	w.Status.Conditions = append(w.Status.Conditions, metav1.Condition{
		Type: swarmv1alpha1.TaskScheduled, Status: metav1.ConditionFalse, Reason: reason, Message: message,
	})
	return w
}
func (w *taskWrapper) DependenciesReady(status metav1.ConditionStatus, reason string, ago time.Duration) *taskWrapper {
	w.Status.Conditions = append(w.Status.Conditions, metav1.Condition{
		Type: swarmv1alpha1.TaskDependenciesReady, Status: status, Reason: reason, LastTransitionTime: metav1.NewTime(now.Add(-ago)),
	})
	return w
}
func (w *taskWrapper) Obj() *swarmv1alpha1.Task { return w.DeepCopy() }

func hive(caps ...string) *swarmv1alpha1.Hive {
	return &swarmv1alpha1.Hive{ObjectMeta: metav1.ObjectMeta{Name: "h", Namespace: "ns"},
		Spec: swarmv1alpha1.HiveSpec{Agent: swarmv1alpha1.AgentSpec{Concurrency: 1, Capabilities: caps}}}
}

func TestBackoffAndRetries(t *testing.T) {
	spec := T("t").Backoff(time.Second).Retries(2).Obj().Spec
	for failed, want := range map[int32]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 12: MaxBackoff} {
		if got := Backoff(&spec, failed); got != want {
			t.Errorf("Backoff after failure %d = %v, want %v", failed, got, want)
		}
	}
	if !CanRetry(&spec, 2) || CanRetry(&spec, 3) {
		t.Error("with maxRetries 2, a task may retry after 2 failures and not after 3")
	}
	defaults := swarmv1alpha1.TaskSpec{}
	if Backoff(&defaults, 1) != DefaultBackoff || !CanRetry(&defaults, 3) || CanRetry(&defaults, 4) || Timeout(&defaults) != DefaultTimeout {
		t.Error("defaults for a spec read without schema defaulting are wrong")
	}
	zero := T("t").Backoff(0).Obj().Spec
	if Backoff(&zero, 5) != 0 {
		t.Error("a zero backoff grew")
	}
}

func TestTransitions(t *testing.T) {
	bound := T("t").Bound("agent-a", 1, time.Minute).Retries(1).Backoff(2 * time.Second).Obj()

	s := FailAttempt(bound, swarmv1alpha1.ReasonAgentFailed, "exit 3", now)
	if s.Phase != swarmv1alpha1.TaskPending || s.Agent != "" || s.NotBefore == nil || !s.NotBefore.Time.Equal(now.Add(2*time.Second)) ||
		s.Message != "attempt 1 on agent agent-a failed (AgentFailed): exit 3; retrying after 2s" {
		t.Errorf("first failure: %+v", s)
	}
	if c := meta.FindStatusCondition(s.Conditions, swarmv1alpha1.TaskAttemptFailed); c == nil || c.Reason != swarmv1alpha1.ReasonAgentFailed {
		t.Errorf("AttemptFailed condition %+v", c)
	}

	second := bound.DeepCopy()
	second.Status = s
	second.Status = Bind(second, "agent-b", now)
	if second.Status.Attempt != 2 || second.Status.Phase != swarmv1alpha1.TaskAssigned || second.Status.NotBefore != nil {
		t.Errorf("rebind: %+v", second.Status)
	}
	s = FailAttempt(second, swarmv1alpha1.ReasonTimedOut, "too slow", now)
	if s.Phase != swarmv1alpha1.TaskFailed || s.FinishedAt == nil || !strings.HasSuffix(s.Message, "no retries left") {
		t.Errorf("last failure: %+v", s)
	}

	lost := FailAttempt(T("t").Bound("a", 1, 0).Obj(), swarmv1alpha1.ReasonAgentLost, "gone", now)
	if lost.Phase != swarmv1alpha1.TaskPending || lost.NotBefore != nil {
		t.Errorf("a lost agent's task waits: %+v", lost)
	}

	r := Release(bound, "released on shutdown", now)
	if r.Phase != swarmv1alpha1.TaskPending || r.Agent != "" || r.Attempt != 1 || r.QueuedAt == nil || r.FailedAttempts != 0 || r.NotBefore != nil {
		t.Errorf("release: %+v", r)
	}

	// Releases cost no retry: a task with one retry released twice still gets its retry,
	// with the first backoff, after its first failure.
	released := bound.DeepCopy()
	for range 2 {
		released.Status = Release(released, "released on shutdown", now)
		released.Status = Bind(released, "agent-c", now)
	}
	f := FailAttempt(released, swarmv1alpha1.ReasonAgentFailed, "exit 1", now)
	if f.Phase != swarmv1alpha1.TaskPending || f.Attempt != 3 || f.FailedAttempts != 1 || !f.NotBefore.Time.Equal(now.Add(2*time.Second)) {
		t.Errorf("failure after two releases: %+v", f)
	}

	p := FailPermanently(bound, swarmv1alpha1.ReasonResultTooLarge, "too big", now)
	if p.Phase != swarmv1alpha1.TaskFailed || p.FailedAttempts != 1 || p.FinishedAt == nil || !strings.HasSuffix(p.Message, "not retried") {
		t.Errorf("permanent failure with retries left: %+v", p)
	}
	if st := Start(bound, now); st.Phase != swarmv1alpha1.TaskRunning || st.StartedAt == nil {
		t.Errorf("start: %+v", st)
	}
	if su := Succeed(bound, "42", now); su.Phase != swarmv1alpha1.TaskSucceeded || su.Result != "42" || su.FinishedAt == nil {
		t.Errorf("succeed: %+v", su)
	}

	flagged := T("t").Condition(swarmv1alpha1.ReasonHiveNotFound, "x").Obj()
	b := Bind(flagged, "a", now)
	if c := meta.FindStatusCondition(b.Conditions, swarmv1alpha1.TaskScheduled); c.Status != metav1.ConditionTrue || c.Reason != swarmv1alpha1.ReasonBound {
		t.Errorf("bind after HiveNotFound left %+v", c)
	}
	if plain := Bind(T("t").Obj(), "a", now); len(plain.Conditions) != 0 {
		t.Errorf("a plain bind added conditions: %+v", plain.Conditions)
	}
}

func TestDecide(t *testing.T) {
	ready := AgentState{Found: true, Ready: true}
	deps := map[string]*swarmv1alpha1.Task{
		"done":   T("done").Phase(swarmv1alpha1.TaskSucceeded).Obj(),
		"busy":   T("busy").Phase(swarmv1alpha1.TaskRunning).Obj(),
		"broken": T("broken").Phase(swarmv1alpha1.TaskFailed).Obj(),
	}
	type want struct {
		phase   swarmv1alpha1.TaskPhase // "" means no status write
		reason  string                  // the reason of the event or of the Scheduled condition
		message string
		del     bool
		requeue time.Duration
	}
	cases := map[string]struct {
		task *swarmv1alpha1.Task
		obs  Observed
		want want
	}{
		"a fresh task costs nothing": {
			task: T("t").Obj(), obs: Observed{Hive: hive()},
		},
		"a task of a missing hive says so": {
			task: T("t").Obj(), obs: Observed{},
			want: want{phase: "", reason: swarmv1alpha1.ReasonHiveNotFound, message: `Hive "h" does not exist in namespace ns; the task waits for it`},
		},
		"a task already reported HiveNotFound is not rewritten": {
			task: T("t").Condition(swarmv1alpha1.ReasonHiveNotFound, `Hive "h" does not exist in namespace ns; the task waits for it`).Obj(),
			obs:  Observed{},
		},
		"a task whose hive appeared waits for a slot": {
			task: T("t").Condition(swarmv1alpha1.ReasonHiveNotFound, "old").Obj(), obs: Observed{Hive: hive()},
			want: want{reason: swarmv1alpha1.ReasonQueued, message: "Waiting in the hive's queue for a free slot"},
		},
		"a task needing what the hive lacks is unschedulable": {
			task: T("t").Needs("gpu", "python").Obj(), obs: Observed{Hive: hive("python")},
			want: want{reason: swarmv1alpha1.ReasonUnschedulable, message: "No agent of hive h offers gpu (it offers python); add them to spec.agent.capabilities or send the task to another hive"},
		},
		"a queued cancelled task is cancelled": {
			task: T("t").Cancel().Obj(), obs: Observed{Hive: hive()},
			want: want{phase: swarmv1alpha1.TaskCancelled, message: "cancelled before it ran"},
		},
		"a task waits for its dependencies": {
			task: T("t").DependsOn("done", "busy").Obj(), obs: Observed{Hive: hive(), Dependencies: deps},
			want: want{phase: swarmv1alpha1.TaskBlocked, message: "waiting for tasks busy"},
		},
		"a task waits a while for a dependency that does not exist": {
			task: T("t").DependsOn("done", "busy", "later").Obj(), obs: Observed{Hive: hive(), Dependencies: deps, MissingDependencyTimeout: 5 * time.Minute},
			want: want{phase: swarmv1alpha1.TaskBlocked, message: "waiting for tasks busy, later (not found)", requeue: 5 * time.Minute},
		},
		"a task whose dependency never appeared fails": {
			task: T("t").DependsOn("later").Phase(swarmv1alpha1.TaskBlocked).
				DependenciesReady(metav1.ConditionFalse, swarmv1alpha1.ReasonDependencyNotFound, 6*time.Minute).Obj(),
			obs:  Observed{Hive: hive(), Dependencies: map[string]*swarmv1alpha1.Task{"later": nil}, MissingDependencyTimeout: 5 * time.Minute},
			want: want{phase: swarmv1alpha1.TaskFailed, reason: swarmv1alpha1.ReasonDependencyNotFound, message: "waiting for tasks later (not found): a dependency did not exist within 5m0s"},
		},
		"a cycle of dependencies fails the task": {
			task: T("a").DependsOn("b").Phase(swarmv1alpha1.TaskBlocked).Obj(),
			obs:  Observed{Hive: hive(), Dependencies: map[string]*swarmv1alpha1.Task{"b": T("b").DependsOn("a").Phase(swarmv1alpha1.TaskBlocked).Obj()}, Cycle: []string{"a", "b", "a"}},
			want: want{phase: swarmv1alpha1.TaskFailed, reason: swarmv1alpha1.ReasonDependencyCycle, message: "its dependencies form a cycle (a → b → a), so none of them can ever run; create the tasks again without it"},
		},
		"a task whose dependencies were met stays queued after they are deleted": {
			task: T("t").DependsOn("expired").DependenciesReady(metav1.ConditionTrue, swarmv1alpha1.ReasonDependenciesSucceeded, time.Minute).Obj(),
			obs:  Observed{Hive: hive(), Dependencies: map[string]*swarmv1alpha1.Task{"expired": nil}},
		},
		"a blocked task with the same message is left alone": {
			task: func() *swarmv1alpha1.Task {
				t := T("t").DependsOn("busy").Phase(swarmv1alpha1.TaskBlocked).Obj()
				t.Status.Message = "waiting for tasks busy"
				return t
			}(),
			obs: Observed{Hive: hive(), Dependencies: deps},
		},
		"a blocked task whose dependencies succeeded is queued": {
			task: T("t").DependsOn("done").Phase(swarmv1alpha1.TaskBlocked).Obj(), obs: Observed{Hive: hive(), Dependencies: deps},
			want: want{phase: swarmv1alpha1.TaskPending},
		},
		"a task whose dependencies succeeded records it, for the dispatcher": {
			task: T("t").DependsOn("done").Obj(), obs: Observed{Hive: hive(), Dependencies: deps},
			want: want{reason: swarmv1alpha1.ReasonDependenciesSucceeded},
		},
		"a failed dependency fails the task": {
			task: T("t").DependsOn("done", "broken").Obj(), obs: Observed{Hive: hive(), Dependencies: deps},
			want: want{phase: swarmv1alpha1.TaskFailed, reason: swarmv1alpha1.ReasonDependencyFailed, message: "dependency broken failed: "},
		},
		"a bound task within its deadline waits for it": {
			task: T("t").Bound("a", 1, time.Minute).Timeout(10 * time.Minute).Obj(),
			obs:  Observed{Agent: ready, TimeoutGrace: 2 * time.Second},
			want: want{requeue: 9*time.Minute + 2*time.Second},
		},
		"a bound task past its deadline times out": {
			task: T("t").Bound("a", 1, 11*time.Minute).Timeout(10 * time.Minute).Obj(),
			obs:  Observed{Agent: ready},
			want: want{phase: swarmv1alpha1.TaskPending, reason: swarmv1alpha1.ReasonTimedOut, message: "attempt 1 on agent a failed (TimedOut): ran longer than its timeout of 10m0s without a result from agent a; retrying after 1s"},
		},
		"a cancelled task past its deadline is cancelled": {
			task: T("t").Bound("a", 1, 11*time.Minute).Timeout(10 * time.Minute).Cancel().Obj(),
			obs:  Observed{Agent: ready},
			want: want{phase: swarmv1alpha1.TaskCancelled, message: "cancelled; its agent a did not stop it in time"},
		},
		"a task whose agent is gone is requeued": {
			task: T("t").Bound("a", 1, time.Second).Obj(),
			obs:  Observed{Agent: AgentState{}},
			want: want{phase: swarmv1alpha1.TaskPending, reason: swarmv1alpha1.ReasonAgentLost, message: "attempt 1 on agent a failed (AgentLost): agent a is gone; retrying"},
		},
		"a cancelled task whose agent is gone is cancelled": {
			task: T("t").Bound("a", 1, time.Second).Cancel().Obj(),
			obs:  Observed{Agent: AgentState{Found: true, Finished: true}},
			want: want{phase: swarmv1alpha1.TaskCancelled, message: "cancelled; its agent a stopped"},
		},
		"a task whose agent stopped is requeued": {
			task: T("t").Bound("a", 1, time.Second).Obj(),
			obs:  Observed{Agent: AgentState{Found: true, Finished: true}},
			want: want{phase: swarmv1alpha1.TaskPending, reason: swarmv1alpha1.ReasonAgentLost, message: "attempt 1 on agent a failed (AgentLost): agent a stopped; retrying"},
		},
		"a task whose agent is briefly not ready waits": {
			task: T("t").Bound("a", 1, time.Second).Obj(),
			obs:  Observed{Agent: AgentState{Found: true, NotReadySince: now.Add(-5 * time.Second)}, AgentLostGrace: 15 * time.Second},
			want: want{requeue: 10 * time.Second},
		},
		"a task whose agent shuts down gracefully waits for the grace period, ready or not": {
			task: T("t").Bound("a", 1, time.Minute).Obj(),
			obs: Observed{Agent: AgentState{Found: true, Terminating: true, GraceEnds: now.Add(25 * time.Second), NotReadySince: now.Add(-20 * time.Second)},
				AgentLostGrace: 15 * time.Second},
			want: want{requeue: 25 * time.Second},
		},
		"a task whose agent outlives its grace period is requeued": {
			task: T("t").Bound("a", 1, time.Minute).Obj(),
			obs:  Observed{Agent: AgentState{Found: true, Ready: true, Terminating: true, GraceEnds: now.Add(-time.Second)}},
			want: want{phase: swarmv1alpha1.TaskPending, reason: swarmv1alpha1.ReasonAgentLost, message: "attempt 1 on agent a failed (AgentLost): agent a was still running it when its pod's termination grace period ended; retrying"},
		},
		"a task whose agent stays not ready is requeued": {
			task: T("t").Bound("a", 1, time.Minute).Obj(),
			obs:  Observed{Agent: AgentState{Found: true, NotReadySince: now.Add(-20 * time.Second)}, AgentLostGrace: 15 * time.Second},
			want: want{phase: swarmv1alpha1.TaskPending, reason: swarmv1alpha1.ReasonAgentLost, message: "attempt 1 on agent a failed (AgentLost): agent a has not been ready for 20s; retrying"},
		},
		"a finished task without a ttl is kept for its hive's retention": {
			task: T("t").Phase(swarmv1alpha1.TaskSucceeded).FinishedAgo(time.Hour).Obj(),
			obs:  Observed{Retention: 3 * time.Hour},
			want: want{requeue: 2 * time.Hour},
		},
		"a finished task without a ttl past its hive's retention is deleted": {
			task: T("t").Phase(swarmv1alpha1.TaskCancelled).FinishedAgo(time.Hour).Obj(),
			obs:  Observed{Retention: time.Hour},
			want: want{del: true},
		},
		"a task's own ttl wins over its hive's retention": {
			task: T("t").Phase(swarmv1alpha1.TaskSucceeded).TTL(0).FinishedAgo(time.Second).Obj(),
			obs:  Observed{Retention: time.Hour},
			want: want{del: true},
		},
		"a finished task waits for its ttl": {
			task: T("t").Phase(swarmv1alpha1.TaskSucceeded).TTL(60).FinishedAgo(20 * time.Second).Obj(),
			want: want{requeue: 40 * time.Second},
		},
		"a finished task past its ttl is deleted": {
			task: T("t").Phase(swarmv1alpha1.TaskFailed).TTL(60).FinishedAgo(time.Minute).Obj(),
			want: want{del: true},
		},
		// The cache may still show a dependent that the finished watch already reported
		// finished, and no later event would come for it: the task looks again.
		"a finished task past its ttl stays while tasks that depend on it run, and looks again": {
			task: T("t").Phase(swarmv1alpha1.TaskSucceeded).TTL(60).FinishedAgo(time.Hour).Obj(),
			obs:  Observed{Dependents: 2},
			want: want{requeue: DependentsRecheck},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			tc.obs.Now = now
			d := Decide(tc.task, tc.obs)
			var got want
			got.del, got.requeue = d.Delete, d.RequeueAfter
			if d.Status != nil {
				got.phase = d.Status.Phase
				if got.phase == tc.task.Status.Phase || (got.phase == swarmv1alpha1.TaskPending && tc.task.Status.Phase == "") {
					got.phase = ""
				}
				if c := meta.FindStatusCondition(d.Status.Conditions, swarmv1alpha1.TaskScheduled); c != nil && c.Status == metav1.ConditionFalse {
					got.reason, got.message = c.Reason, c.Message
				}
				if c := meta.FindStatusCondition(d.Status.Conditions, swarmv1alpha1.TaskDependenciesReady); c != nil && c.Status == metav1.ConditionTrue && !DependenciesSatisfied(tc.task) && got.phase == "" {
					got.reason = c.Reason
				}
				if tc.want.phase != "" && d.Status.Message != "" {
					got.message = d.Status.Message
				}
			}
			if d.Event != nil {
				got.reason = d.Event.Reason
				if got.message == "" {
					got.message = d.Event.Message
				}
			}
			if strings.HasSuffix(tc.want.message, ": ") {
				got.message = got.message[:min(len(got.message), len(tc.want.message))]
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("Decide (-want +got):\n%s", diff)
			}
			if d.Status == nil && (tc.want.phase != "" || tc.want.message != "") && tc.want.reason != swarmv1alpha1.ReasonHiveNotFound {
				t.Errorf("expected a status write")
			}
		})
	}
}

func TestDispatchable(t *testing.T) {
	met := func(b *taskWrapper) *taskWrapper {
		return b.DependenciesReady(metav1.ConditionTrue, swarmv1alpha1.ReasonDependenciesSucceeded, 0)
	}
	cases := map[string]struct {
		task       *swarmv1alpha1.Task
		observedAt time.Time
		wantOK     bool
		wantWait   time.Duration
	}{
		"fresh":                                  {task: T("t").Obj(), wantOK: true},
		"pending":                                {task: T("t").Phase(swarmv1alpha1.TaskPending).Obj(), wantOK: true},
		"cancelled":                              {task: T("t").Cancel().Obj()},
		"blocked":                                {task: T("t").Phase(swarmv1alpha1.TaskBlocked).Obj()},
		"bound":                                  {task: T("t").Bound("a", 1, 0).Obj()},
		"lacking a capability":                   {task: T("t").Needs("gpu").Obj()},
		"with what the hive has":                 {task: T("t").Needs("cpu").Obj(), wantOK: true},
		"dependencies not yet recorded met":      {task: T("t").DependsOn("done").Obj()},
		"dependencies recorded met":              {task: met(T("t").DependsOn("gone")).Obj(), wantOK: true},
		"dependencies recorded met, backing off": {task: met(T("t").DependsOn("gone")).NotBefore(now.Add(time.Second)).Obj(), wantWait: time.Second},
		"in backoff":                             {task: T("t").NotBefore(now.Add(3 * time.Second)).Obj(), wantWait: 3 * time.Second},
		"backoff over":                           {task: T("t").NotBefore(now.Add(-time.Second)).Obj(), wantOK: true},
		"a backoff written a day ahead is capped": {
			task: T("t").NotBefore(now.Add(24 * time.Hour)).Obj(), observedAt: now.Add(-time.Minute), wantWait: MaxBackoff - time.Minute,
		},
		"a backoff written a day ahead, seen long ago": {
			task: T("t").NotBefore(now.Add(24 * time.Hour)).Obj(), observedAt: now.Add(-time.Hour), wantOK: true,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ok, wait := Dispatchable(tc.task, []string{"cpu"}, now, tc.observedAt)
			if ok != tc.wantOK || wait != tc.wantWait {
				t.Errorf("Dispatchable = %v, %v; want %v, %v", ok, wait, tc.wantOK, tc.wantWait)
			}
		})
	}
}

func TestWaitingCountsOnlyTasksThatCanRunNow(t *testing.T) {
	cases := map[string]struct {
		task        *swarmv1alpha1.Task
		wantWaiting bool
		wantRetryIn time.Duration
	}{
		"queued":              {task: T("t").Obj(), wantWaiting: true},
		"unschedulable":       {task: T("t").Needs("gpu").Obj()},
		"backing off":         {task: T("t").NotBefore(now.Add(time.Minute)).Obj(), wantRetryIn: time.Minute},
		"blocked":             {task: T("t").Phase(swarmv1alpha1.TaskBlocked).Obj()},
		"cancelled":           {task: T("t").Cancel().Obj()},
		"running":             {task: T("t").Bound("a", 1, 0).Obj()},
		"finished":            {task: T("t").Phase(swarmv1alpha1.TaskSucceeded).Obj()},
		"with its capability": {task: T("t").Needs("cpu").Obj(), wantWaiting: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			waiting, retryIn := Waiting(tc.task, []string{"cpu"}, now, time.Time{})
			if waiting != tc.wantWaiting || retryIn != tc.wantRetryIn {
				t.Errorf("Waiting = %v, %v; want %v, %v", waiting, retryIn, tc.wantWaiting, tc.wantRetryIn)
			}
		})
	}
}

func TestFindCycle(t *testing.T) {
	graph := map[string][]string{
		"a": {"b"}, "b": {"c"}, "c": {"a", "x"}, // a → b → c → a
		"x": {"y"}, "y": nil, // no cycle
		"self": {"self"},
		"d":    {"e"}, "e": {"f"}, "f": {"e"}, // a cycle that does not go through d
	}
	deps := func(name string) ([]string, bool) {
		d, ok := graph[name]
		return d, ok
	}
	cases := map[string][]string{
		"a":       {"a", "b", "c", "a"},
		"c":       {"c", "a", "b", "c"},
		"x":       nil,
		"self":    {"self", "self"},
		"d":       nil,
		"missing": nil,
	}
	for start, want := range cases {
		if diff := cmp.Diff(want, FindCycle(start, deps)); diff != "" {
			t.Errorf("FindCycle(%s) (-want +got):\n%s", start, diff)
		}
	}
	// A huge chain is searched only so far.
	long := func(name string) ([]string, bool) { return []string{name + "x"}, true }
	if c := FindCycle("n", long); c != nil {
		t.Errorf("FindCycle on an endless chain = %v", c)
	}
}

func TestSetDependenciesReadyMovesItsTimeWithTheReason(t *testing.T) {
	s := swarmv1alpha1.TaskStatus{}
	if !SetDependenciesReady(&s, metav1.ConditionFalse, swarmv1alpha1.ReasonWaitingForDependencies, "waiting for b", now) {
		t.Fatal("first set reported no change")
	}
	if SetDependenciesReady(&s, metav1.ConditionFalse, swarmv1alpha1.ReasonWaitingForDependencies, "waiting for b", now.Add(time.Minute)) {
		t.Error("setting the same condition reported a change")
	}
	SetDependenciesReady(&s, metav1.ConditionFalse, swarmv1alpha1.ReasonWaitingForDependencies, "waiting for b, c", now.Add(time.Minute))
	if c := meta.FindStatusCondition(s.Conditions, swarmv1alpha1.TaskDependenciesReady); !c.LastTransitionTime.Time.Equal(now) {
		t.Errorf("a new message moved the time: %v", c.LastTransitionTime)
	}
	SetDependenciesReady(&s, metav1.ConditionFalse, swarmv1alpha1.ReasonDependencyNotFound, "b is gone", now.Add(2*time.Minute))
	if c := meta.FindStatusCondition(s.Conditions, swarmv1alpha1.TaskDependenciesReady); !c.LastTransitionTime.Time.Equal(now.Add(2*time.Minute)) || len(s.Conditions) != 1 {
		t.Errorf("a new reason kept the time: %+v", s.Conditions)
	}
}

func TestTruncate(t *testing.T) {
	if got := Truncate("short", 10); got != "short" {
		t.Errorf("Truncate kept %q", got)
	}
	long := strings.Repeat("é", 100) // 200 bytes
	got := Truncate(long, 51)
	if len(got) > 51 || !utf8.ValidString(got) || !strings.HasSuffix(got, "…") {
		t.Errorf("Truncate = %q (%d bytes)", got, len(got))
	}
	if q := QueuedSince(T("t").Obj()); !q.Equal(now.Add(-time.Hour)) {
		t.Errorf("QueuedSince = %v", q)
	}
}
