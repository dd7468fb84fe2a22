package pool

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

var now = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// agentWrapper builds test agents: A("a").Rev("v1").Ready().Tasks(1).Obj().
type agentWrapper struct{ Agent }

// A returns a ready-less agent of revision "new" created one minute before now; the
// number in its name (if any) does not matter, Age sets its creation.
func A(name string) *agentWrapper {
	return &agentWrapper{Agent{Name: name, Revision: "new", Created: now.Add(-time.Minute)}}
}
func (w *agentWrapper) Rev(r string) *agentWrapper { w.Revision = r; return w }
func (w *agentWrapper) Ready() *agentWrapper       { w.Agent.Ready = true; return w }
func (w *agentWrapper) Tasks(n int) *agentWrapper  { w.Agent.Tasks = n; return w }
func (w *agentWrapper) Finished() *agentWrapper    { w.Agent.Finished = true; return w }
func (w *agentWrapper) Terminating() *agentWrapper { w.Agent.Terminating = true; return w }
func (w *agentWrapper) Age(d time.Duration) *agentWrapper {
	w.Created = now.Add(-d)
	return w
}
func (w *agentWrapper) DrainingFor(d time.Duration) *agentWrapper {
	w.Draining = true
	w.DrainingSince = now.Add(-d)
	return w
}
func (w *agentWrapper) DrainingUnknown() *agentWrapper { w.Draining = true; return w }
func (w *agentWrapper) Obj() Agent                     { return w.Agent }

func agents(ws ...*agentWrapper) []Agent {
	out := make([]Agent, len(ws))
	for i, w := range ws {
		out[i] = w.Obj()
	}
	return out
}

func spec(replicas, surge, unavailable int) Spec {
	return Spec{
		Replicas: replicas, UpdateRevision: "new", MaxSurge: surge, MaxUnavailable: unavailable,
		DrainTimeout: 10 * time.Minute, DrainSettle: time.Second,
	}
}

func TestCompute(t *testing.T) {
	cases := map[string]struct {
		spec   Spec
		agents []Agent
		want   Plan
		// wantDone is whether the hive has reached its spec.
		wantDone bool
	}{
		"empty hive creates all its agents": {
			spec: spec(3, 1, 0),
			want: Plan{Create: 3},
		},
		"steady hive does nothing": {
			spec:     spec(2, 1, 0),
			agents:   agents(A("a").Ready(), A("b").Ready().Tasks(1)),
			want:     Plan{Counts: Counts{Live: 2, Ready: 2, Available: 2, Updated: 2, Busy: 1, Idle: 1}},
			wantDone: true,
		},
		"scale up creates the difference": {
			spec:   spec(5, 1, 0),
			agents: agents(A("a").Ready(), A("b").Ready(), A("c")),
			want:   Plan{Create: 2, Counts: Counts{Live: 3, Ready: 2, Available: 2, Updated: 3, Idle: 2}},
		},
		"scale down drains idle agents, newest first": {
			spec: spec(2, 1, 0),
			agents: agents(A("old").Ready().Age(3*time.Hour), A("mid").Ready().Age(2*time.Hour),
				A("young").Ready().Age(time.Hour), A("busy").Ready().Tasks(1).Age(time.Minute)),
			want: Plan{
				Drain: []string{"young", "mid"}, RequeueAfter: time.Second,
				Counts: Counts{Live: 4, Ready: 4, Available: 4, Updated: 4, Busy: 1, Idle: 3},
			},
		},
		"scale down below the busy agents drains the least busy": {
			spec: spec(1, 1, 0),
			agents: agents(A("idle").Ready(), A("b1").Ready().Tasks(1).Age(time.Hour),
				A("b2").Ready().Tasks(1).Age(2*time.Hour), A("b3").Ready().Tasks(3)),
			want: Plan{
				Drain: []string{"idle", "b1", "b2"}, RequeueAfter: time.Second,
				Counts: Counts{Live: 4, Ready: 4, Available: 4, Updated: 4, Busy: 3, Idle: 1},
			},
		},
		"scale down deletes idle agents that are not ready at once": {
			spec:   spec(1, 1, 0),
			agents: agents(A("ready").Ready(), A("starting")),
			want:   Plan{Delete: []Deletion{{"starting", DeleteNotReady}}, Counts: Counts{Live: 2, Ready: 1, Available: 1, Updated: 2, Idle: 1}},
		},
		"scale to zero drains everything": {
			spec:   spec(0, 1, 0),
			agents: agents(A("a").Ready(), A("b").Ready().Tasks(1)),
			want: Plan{
				Drain: []string{"a", "b"}, RequeueAfter: time.Second,
				Counts: Counts{Live: 2, Ready: 2, Available: 2, Updated: 2, Busy: 1, Idle: 1},
			},
		},
		"an idle draining agent is deleted once the drain settled": {
			spec:   spec(1, 1, 0),
			agents: agents(A("keep").Ready(), A("gone").Ready().DrainingFor(2*time.Second)),
			want: Plan{
				Delete: []Deletion{{"gone", DeleteDrained}},
				Counts: Counts{Live: 1, Ready: 1, Available: 1, Updated: 1, Idle: 1},
			},
			wantDone: false,
		},
		"an idle draining agent waits for the drain to settle": {
			spec:   spec(1, 1, 0),
			agents: agents(A("keep").Ready(), A("going").Ready().DrainingFor(300*time.Millisecond)),
			want: Plan{
				RequeueAfter: 700 * time.Millisecond,
				Counts:       Counts{Live: 2, Ready: 2, Available: 1, Updated: 1, Idle: 1, Draining: 1},
			},
		},
		"a busy draining agent keeps working until the drain timeout": {
			spec:   spec(1, 1, 0),
			agents: agents(A("keep").Ready(), A("working").Ready().Tasks(1).DrainingFor(4*time.Minute)),
			want: Plan{
				RequeueAfter: 6 * time.Minute,
				Counts:       Counts{Live: 2, Ready: 2, Available: 1, Updated: 1, Idle: 1, Draining: 1, BusyDraining: 1},
			},
		},
		"a busy draining agent is deleted at the drain timeout": {
			spec:   spec(1, 1, 0),
			agents: agents(A("keep").Ready(), A("stuck").Ready().Tasks(1).DrainingFor(10*time.Minute)),
			want: Plan{
				Delete: []Deletion{{"stuck", DeleteDrainTimeout}},
				Counts: Counts{Live: 1, Ready: 1, Available: 1, Updated: 1, Idle: 1},
			},
		},
		"a draining agent that is not ready and idle goes at once": {
			spec:   spec(1, 1, 0),
			agents: agents(A("keep").Ready(), A("dead").DrainingFor(0)),
			want: Plan{
				Delete: []Deletion{{"dead", DeleteDrained}},
				Counts: Counts{Live: 1, Ready: 1, Available: 1, Updated: 1, Idle: 1},
			},
		},
		"an unreadable drain mark is stamped again": {
			spec:   spec(1, 1, 0),
			agents: agents(A("keep").Ready(), A("odd").Ready().Tasks(1).DrainingUnknown()),
			want: Plan{
				Drain:  []string{"odd"},
				Counts: Counts{Live: 2, Ready: 2, Available: 1, Updated: 1, Idle: 1, Draining: 1, BusyDraining: 1},
			},
		},
		"a finished agent is deleted and replaced": {
			spec:   spec(2, 1, 0),
			agents: agents(A("ok").Ready(), A("crashed").Finished()),
			want: Plan{
				Create: 1, Delete: []Deletion{{"crashed", DeleteFinished}},
				Counts: Counts{Live: 1, Ready: 1, Available: 1, Updated: 1, Idle: 1},
			},
		},
		"a terminating agent no longer counts": {
			spec:   spec(2, 1, 0),
			agents: agents(A("ok").Ready(), A("leaving").Ready().Terminating()),
			want:   Plan{Create: 1, Counts: Counts{Live: 1, Ready: 1, Available: 1, Updated: 1, Idle: 1}},
		},
		"scaling up takes draining agents back, busy first": {
			spec: spec(3, 1, 0),
			agents: agents(A("a").Ready(), A("idle").Ready().DrainingFor(100*time.Millisecond),
				A("busy").Ready().Tasks(1).DrainingFor(time.Minute)),
			want: Plan{
				Create: 0, Undrain: []string{"busy", "idle"},
				Counts: Counts{Live: 3, Ready: 3, Available: 1, Updated: 1, Idle: 1, Draining: 2, BusyDraining: 1},
			},
		},
		"a rollout starts by surging new agents": {
			spec: spec(4, 2, 0),
			agents: agents(A("o1").Rev("old").Ready(), A("o2").Rev("old").Ready(),
				A("o3").Rev("old").Ready(), A("o4").Rev("old").Ready()),
			want: Plan{Create: 2, Counts: Counts{Live: 4, Ready: 4, Available: 4, Outdated: 4, Idle: 4}},
		},
		"a rollout drains old agents only as replacements become ready": {
			spec: spec(4, 2, 0),
			agents: agents(A("o1").Rev("old").Ready().Tasks(1), A("o2").Rev("old").Ready(),
				A("o3").Rev("old").Ready(), A("o4").Rev("old").Ready().Tasks(1),
				A("n1").Ready(), A("n2")),
			want: Plan{
				Drain: []string{"o2"}, RequeueAfter: time.Second,
				Counts: Counts{Live: 6, Ready: 5, Available: 5, Updated: 2, Outdated: 4, Idle: 3, Busy: 2},
			},
		},
		"a rollout drains idle old agents before busy ones": {
			spec: spec(3, 1, 0),
			agents: agents(A("o1").Rev("old").Ready().Tasks(1).Age(time.Hour), A("o2").Rev("old").Ready().Age(time.Hour),
				A("n1").Ready(), A("n2").Ready()),
			want: Plan{
				Create: 0, Drain: []string{"o2"}, RequeueAfter: time.Second,
				Counts: Counts{Live: 4, Ready: 4, Available: 4, Updated: 2, Outdated: 2, Idle: 3, Busy: 1},
			},
		},
		"a rollout waits for a busy old agent without exceeding the surge": {
			spec: spec(3, 1, 0),
			agents: agents(A("o1").Rev("old").Ready().Tasks(1).DrainingFor(time.Minute),
				A("n1").Ready(), A("n2").Ready(), A("n3").Ready()),
			want: Plan{
				RequeueAfter: 9 * time.Minute,
				Counts:       Counts{Live: 4, Ready: 4, Available: 3, Updated: 3, Outdated: 1, Idle: 3, Draining: 1, BusyDraining: 1},
			},
		},
		"a rollout without surge makes room first": {
			spec: spec(3, 0, 1),
			agents: agents(A("o1").Rev("old").Ready(), A("o2").Rev("old").Ready().Tasks(1),
				A("o3").Rev("old").Ready()),
			want: Plan{
				Drain: []string{"o1"}, RequeueAfter: time.Second,
				Counts: Counts{Live: 3, Ready: 3, Available: 3, Outdated: 3, Idle: 2, Busy: 1},
			},
		},
		"a rollout removes old agents that are not ready without waiting": {
			spec: spec(2, 1, 0),
			agents: agents(A("o1").Rev("old").Ready(), A("o2").Rev("old"),
				A("n1")),
			want: Plan{
				Create: 1, Delete: []Deletion{{"o2", DeleteNotReady}},
				Counts: Counts{Live: 3, Ready: 1, Available: 1, Updated: 1, Outdated: 2, Idle: 1},
			},
		},
		"a template change mid-rollout retargets it": {
			spec: spec(2, 1, 0),
			agents: agents(A("a").Rev("first").Ready(), A("b").Rev("second").Ready(),
				A("c").Rev("second").Ready()),
			want: Plan{
				Drain: []string{"a"}, RequeueAfter: time.Second,
				Counts: Counts{Live: 3, Ready: 3, Available: 3, Outdated: 3, Idle: 3},
			},
		},
		"a rollout finishes when the last old agent is gone": {
			spec:     spec(2, 1, 0),
			agents:   agents(A("n1").Ready(), A("n2").Ready()),
			want:     Plan{Counts: Counts{Live: 2, Ready: 2, Available: 2, Updated: 2, Idle: 2}},
			wantDone: true,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := Compute(tc.spec, tc.agents, now)
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Compute (-want +got):\n%s", diff)
			}
			if done := got.Done(tc.spec.Replicas); done != tc.wantDone {
				t.Errorf("Done = %v, want %v", done, tc.wantDone)
			}
		})
	}
}

func TestResolveRollout(t *testing.T) {
	cases := map[string]struct {
		surge, unavailable *intstr.IntOrString
		replicas           int
		wantSurge, wantUn  int
		wantErr            bool
	}{
		"defaults of five":        {ptr.To(intstr.FromString("25%")), ptr.To(intstr.FromInt32(0)), 5, 2, 0, false},
		"numbers":                 {ptr.To(intstr.FromInt32(3)), ptr.To(intstr.FromInt32(1)), 5, 3, 1, false},
		"unavailable rounds down": {ptr.To(intstr.FromInt32(0)), ptr.To(intstr.FromString("30%")), 5, 0, 1, false},
		"both zero allow one":     {ptr.To(intstr.FromInt32(0)), ptr.To(intstr.FromString("10%")), 5, 0, 1, false},
		"unset":                   {nil, nil, 3, 0, 1, false},
		"garbage":                 {ptr.To(intstr.FromString("lots")), nil, 3, 0, 0, true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s, u, err := ResolveRollout(tc.surge, tc.unavailable, tc.replicas)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && (s != tc.wantSurge || u != tc.wantUn) {
				t.Errorf("ResolveRollout = %d, %d; want %d, %d", s, u, tc.wantSurge, tc.wantUn)
			}
		})
	}
}
