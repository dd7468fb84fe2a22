package checker

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aihub-dev/hive-operator/test/perf/config"
	"github.com/aihub-dev/hive-operator/test/perf/results"
)

// The fixture is the results of a quick run; its runs are a burst of 500 tasks with 50
// agents, the open loop at 50 and 100 %, a burst of 500 tasks with 10 agents (the agent
// sweep), the steady run and the warm tasks on kwok.
func TestCheck(t *testing.T) {
	targets, err := config.LoadTargets("../configs/targets.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const met, missed, unknown = results.Met, results.Missed, results.NotMeasured
	// The targets in the file's order: success, throughput, queue wait, writes per task,
	// hive writes, memory (queued, finished), start-up (queued, finished), memory over time
	// (operator, agent), warm vs Job.
	asMeasured := []string{met, met, missed, met, met, met, met, met, met, met, met, missed}
	// grow doubles the operator's (or the largest agent's) RSS in the steady run's last
	// samples.
	grow := func(agent bool) func(*results.Results) {
		return func(r *results.Results) {
			s := r.Steady.Samples
			for i := len(s) * 3 / 4; i < len(s); i++ {
				if agent {
					s[i].AgentRSSBytes *= 2
				} else {
					s[i].OperatorRSSBytes *= 2
				}
			}
		}
	}
	but := func(changed map[int]string) []string {
		out := slices.Clone(asMeasured)
		for i, s := range changed {
			out[i] = s
		}
		return out
	}
	tests := []struct {
		name   string
		mutate func(*results.Results)
		want   []string
	}{
		{"as measured", func(*results.Results) {}, asMeasured},
		{"a lost task", func(r *results.Results) { r.Runs[0].Outcome.Succeeded--; r.Runs[0].Outcome.Missing++ }, but(map[int]string{0: missed})},
		{"throughput below the target", func(r *results.Results) { r.Runs[0].CeilingRatio = 0.7 }, but(map[int]string{1: missed})},
		{"the agent sweep does not count for throughput", func(r *results.Results) { r.Runs[3].CeilingRatio = 0.1 }, asMeasured},
		{"a fast queue at half load", func(r *results.Results) { r.Runs[1].QueueWait.P99 = 99 }, but(map[int]string{2: met})},
		{"a slow queue at full load is not the target", func(r *results.Results) { r.Runs[2].QueueWait.P99 = 1e4 }, asMeasured},
		{"an extra write per task", func(r *results.Results) { r.Runs[3].TaskWritesPerTask = 3.2 }, but(map[int]string{3: missed})},
		{"a few conflicts are within the hundredth", func(r *results.Results) { r.Runs[3].TaskWritesPerTask = 3.004 }, asMeasured},
		{"hive writes follow the rate", func(r *results.Results) { r.Runs[2].HiveStatusWritesPerSec = 20 }, but(map[int]string{4: missed})},
		{"too much memory", func(r *results.Results) { r.Stored.PeakRSSBytes = 300 << 20 }, but(map[int]string{5: missed})},
		{"history held in memory", func(r *results.Results) { r.Finished.PeakRSSBytes = 100 << 20 }, but(map[int]string{6: missed})},
		{"a slow start", func(r *results.Results) { r.Stored.StartupSeconds = 6 }, but(map[int]string{7: missed})},
		{"a start that waits on history", func(r *results.Results) { r.Finished.StartupSeconds = 3 }, but(map[int]string{8: missed})},
		{"the operator grows over the steady run", grow(false), but(map[int]string{9: missed})},
		{"an agent grows over the steady run", grow(true), but(map[int]string{10: missed})},
		{"a steady run too short to tell", func(r *results.Results) { r.Steady.RetentionSeconds = 1e4 }, but(map[int]string{9: unknown, 10: unknown})},
		{"a fast warm bind", func(r *results.Results) { r.Baseline.RatioP50 = 12 }, but(map[int]string{11: met})},
		{"long tasks are not quick ones", func(r *results.Results) { r.Settings.TaskDelay.Duration = 2 * time.Second }, but(map[int]string{3: unknown})},
		{"nothing ran", func(r *results.Results) { r.Runs, r.Stored, r.Finished, r.Steady, r.Baseline = nil, nil, nil, nil, nil },
			slices.Repeat([]string{unknown}, len(asMeasured))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := results.Read("../testdata/results.json")
			if err != nil {
				t.Fatal(err)
			}
			tt.mutate(r)
			got, err := Check(r, targets)
			if err != nil {
				t.Fatal(err)
			}
			var statuses []string
			for _, tg := range got {
				statuses = append(statuses, tg.Status)
				if tg.Measured == "" || (tg.Status == missed) != (tg.Why != "") {
					t.Errorf("%s (%s): measured %q, why %q", tg.Name, tg.Status, tg.Measured, tg.Why)
				}
			}
			if diff := cmp.Diff(tt.want, statuses); diff != "" {
				t.Errorf("statuses (-want +got):\n%s", diff)
			}
		})
	}
}

// A target whose expression does not compile, fails or returns no figure is an error naming
// the target, not a panic.
func TestCheckErrors(t *testing.T) {
	for name, tt := range map[string]struct{ compute, wantErr string }{
		"a misspelt field":      {`{value: len(Runz)}`, "does not compile: unknown name Runz"},
		"a figure not a map":    {`len(Runs)`, "does not compile: expected map"},
		"a helper's wrong type": {`{value: roundTo("1", 1)}`, "does not compile: cannot use string"},
		"an index out of range": {`{value: Runs[99].TasksPerSec}`, "failed: index out of range"},
		"a nil dereference":     {`{value: Steady.RetentionSeconds}`, "its expression failed"},
		"no value":              {`{runs: Runs}`, "returned value <nil>"},
		"an int value":          {`{value: len(Runs)}`, "returned value 6"},
		"a reason not a string": {`{missing: 1}`, "missing 1"},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := results.Read("../testdata/results.json")
			if err != nil {
				t.Fatal(err)
			}
			r.Steady = nil
			_, err = Check(r, []config.Target{{Name: "broken", Figure: "x", Compute: tt.compute, Op: "<", Goal: "g", Measured: "m"}})
			if err == nil || !strings.HasPrefix(err.Error(), "target broken: ") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want one naming the target with %q", err, tt.wantErr)
			}
		})
	}
}
