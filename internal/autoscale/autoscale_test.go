package autoscale

import (
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// step is the load at a moment and what the autoscaler must answer.
type step struct {
	at                    time.Duration
	queued, running, busy int
	requests              int
	want                  int32
	limit                 Limit
}

func base() Input {
	return Input{
		Min: 0, Max: 10, Target: 100, Concurrency: 2, MaxStep: 10,
		UpWindow: 0, DownWindow: time.Minute, IdleTimeout: 5 * time.Minute,
	}
}

// run feeds the steps in order, carrying the decision forward as the next input, the way the
// controller does.
func run(t *testing.T, in Input, current int32, steps []step) {
	t.Helper()
	in.Current = current
	for i, s := range steps {
		in.Now = t0.Add(s.at)
		in.Queued, in.Running, in.Busy, in.Requests = s.queued, s.running, s.busy, s.requests
		d := Decide(in)
		if d.Replicas != s.want || (s.limit != "" && d.Limit != s.limit) {
			t.Fatalf("step %d at %v (queued %d running %d busy %d, current %d): replicas %d (%s: %s), want %d %s",
				i, s.at, s.queued, s.running, s.busy, in.Current, d.Replicas, d.Limit, d.Message, s.want, s.limit)
		}
		in.Current, in.History, in.LastActive = d.Replicas, d.History, d.LastActive
	}
}

func TestDecideOverTime(t *testing.T) {
	cases := map[string]struct {
		in      func(*Input)
		current int32
		steps   []step
	}{
		"requests wake a hive at zero and size it by their serving slots": {
			in:      func(in *Input) { in.ServingConcurrency = 4 },
			current: 0,
			steps: []step{
				{at: 0, requests: 1, want: 1, limit: WithinRange},
				{at: time.Second, requests: 13, busy: 1, want: 4},
				// The busier kind sizes the hive: slots of the two kinds are apart.
				{at: 2 * time.Second, queued: 6, requests: 8, busy: 4, want: 4},
				{at: 3 * time.Second, queued: 12, requests: 8, busy: 4, want: 6},
			},
		},
		"requests keep a hive from its idle timeout": {
			in:      func(in *Input) { in.ServingConcurrency = 4 },
			current: 1,
			steps: []step{
				{at: 0, requests: 1, want: 1},
				{at: 4 * time.Minute, requests: 1, want: 1},
				{at: 8 * time.Minute, want: 1},
				{at: 9*time.Minute + time.Second, want: 0, limit: AtZero},
			},
		},
		"a burst scales up at once, capped by max": {
			current: 2,
			steps: []step{
				{at: 0, queued: 100, running: 4, busy: 2, want: 10, limit: AtMax},
			},
		},
		"the step limit spreads a burst over decisions": {
			in:      func(in *Input) { in.MaxStep = 3 },
			current: 1,
			steps: []step{
				{at: 0, queued: 40, want: 4},
				{at: time.Second, queued: 40, want: 7},
				{at: 2 * time.Second, queued: 40, want: 10, limit: AtMax},
			},
		},
		"the target leaves headroom": {
			in:      func(in *Input) { in.Target = 50 },
			current: 1,
			steps:   []step{{at: 0, queued: 6, want: 6}},
		},
		"an up window waits for the load to last": {
			in:      func(in *Input) { in.UpWindow = 30 * time.Second },
			current: 2,
			steps: []step{
				{at: 0, queued: 4, running: 4, busy: 2, want: 2},
				{at: 10 * time.Second, queued: 10, running: 4, busy: 2, want: 2},
				{at: 31 * time.Second, queued: 10, running: 4, busy: 2, want: 7},
			},
		},
		"a fall waits for the down window, then drops to the window's high": {
			current: 8,
			steps: []step{
				{at: 0, queued: 0, running: 16, busy: 8, want: 8},
				{at: 10 * time.Second, running: 4, busy: 2, want: 8},
				{at: 50 * time.Second, running: 4, busy: 2, want: 8},
				{at: 61 * time.Second, running: 4, busy: 2, want: 2},
			},
		},
		"scale-down never goes below the busy agents": {
			current: 5,
			steps: []step{
				{at: 0, running: 3, busy: 3, want: 5},
				{at: 2 * time.Minute, running: 3, busy: 3, want: 3},
			},
		},
		"an idle hive keeps one agent until the idle timeout, then goes to zero": {
			current: 3,
			steps: []step{
				{at: 0, running: 1, busy: 1, want: 3},
				{at: 2 * time.Minute, want: 1},
				{at: 4 * time.Minute, want: 1},
				{at: 5*time.Minute + time.Second, want: 0, limit: AtZero},
			},
		},
		"the first task brings an agent back at once": {
			current: 0,
			steps: []step{
				{at: 0, want: 0, limit: AtZero},
				{at: 10 * time.Minute, queued: 1, want: 1, limit: WithinRange},
			},
		},
		"activation brings one agent at once; the up window governs the rest": {
			in:      func(in *Input) { in.UpWindow = time.Minute; in.MaxStep = 4 },
			current: 0,
			steps: []step{
				{at: 0, queued: 50, want: 1, limit: AtMax},
				{at: 30 * time.Second, queued: 50, want: 1},
				{at: 61 * time.Second, queued: 50, want: 5},
				{at: 62 * time.Second, queued: 50, want: 9},
			},
		},
		"min holds when the load is low": {
			in:      func(in *Input) { in.Min = 2 },
			current: 2,
			steps: []step{
				{at: 0, queued: 1, want: 2, limit: AtMin},
				{at: time.Hour, want: 2, limit: AtMin},
			},
		},
		"a current count below min is raised": {
			in:      func(in *Input) { in.Min = 3 },
			current: 0,
			steps:   []step{{at: 0, want: 3, limit: AtMin}},
		},
		"a current count above max is lowered": {
			current: 15,
			steps:   []step{{at: 0, queued: 100, want: 10, limit: AtMax}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			in := base()
			if tc.in != nil {
				tc.in(&in)
			}
			run(t, in, tc.current, tc.steps)
		})
	}
}

func TestDecideExplainsRequests(t *testing.T) {
	in := base()
	in.Now, in.Current, in.Running, in.Requests, in.ServingConcurrency, in.Target = t0, 1, 2, 30, 8, 50
	d := Decide(in)
	if want := "2 tasks and 30 requests need 8 agents at 50% of 2 task and 8 serving slots each"; d.Message != want || d.Replicas != 8 {
		t.Errorf("%d agents: %q, want 8: %q", d.Replicas, d.Message, want)
	}
	in.Running = 0
	if d = Decide(in); !strings.HasPrefix(d.Message, "30 requests need 8 agents") {
		t.Errorf("message %q", d.Message)
	}
}

func TestDecideExplainsAndSchedulesItself(t *testing.T) {
	in := base()
	in.Now, in.Current, in.Running, in.Busy = t0, 4, 8, 4
	d := Decide(in)
	if !strings.Contains(d.Message, "8 tasks need 4 agents at 100% of 2 slots each") {
		t.Errorf("message %q", d.Message)
	}
	// The load falls: the decision says when the down window lets it follow.
	in.History, in.LastActive = d.History, d.LastActive
	in.Now, in.Running, in.Busy = t0.Add(20*time.Second), 2, 1
	d = Decide(in)
	if d.Replicas != 4 || d.RequeueAfter != 40*time.Second {
		t.Errorf("replicas %d requeue %v; want 4 and 40s", d.Replicas, d.RequeueAfter)
	}
	// Idle: the decision says when the idle timeout ends.
	in.History, in.LastActive, in.Current = d.History, d.LastActive, 1
	in.Now, in.Running, in.Busy = t0.Add(3*time.Minute), 0, 0
	d = Decide(in)
	if d.Replicas != 1 || d.RequeueAfter != 2*time.Minute+20*time.Second {
		t.Errorf("replicas %d requeue %v", d.Replicas, d.RequeueAfter)
	}
	if len(d.History) == 0 || len(d.History) > 3 {
		t.Errorf("history of %d samples", len(d.History))
	}
}

func TestHistoryHoldsOneSamplePerChange(t *testing.T) {
	in := base()
	in.DownWindow = time.Hour
	in.Now, in.Current, in.Running, in.Busy = t0, 4, 8, 4
	// A steady load, reconciled every half second for an hour: the window is an hour long,
	// the history is not.
	for i := range 7200 {
		in.Now = t0.Add(time.Duration(i) * 500 * time.Millisecond)
		if i == 3600 {
			in.Running, in.Busy = 6, 3 // one change: 3 agents are enough
		}
		d := Decide(in)
		in.History, in.LastActive, in.Current = d.History, d.LastActive, d.Replicas
	}
	if n := len(in.History); n > 3 {
		t.Errorf("history of %d samples after one change in an hour", n)
	}
	// The window still holds the higher recommendation of the first half hour back.
	if in.Current != 4 {
		t.Errorf("replicas %d within the down window of a recommendation of 4", in.Current)
	}
}
