package checker

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aihub-dev/hive-operator/test/perf/config"
	"github.com/aihub-dev/hive-operator/test/perf/results"
)

// The fixture is the results of a quick run; its runs are a burst of 500 tasks with 50
// agents, the open loop at 50 and 100 %, a burst of 500 tasks with 10 agents (the agent
// sweep) and the warm tasks on kwok.
func TestCheck(t *testing.T) {
	targets, err := config.LoadTargets("../configs/targets.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const met, missed, unknown = results.Met, results.Missed, results.NotMeasured
	asMeasured := []string{met, met, missed, met, met, met, met, missed}
	tests := []struct {
		name   string
		mutate func(*results.Results)
		want   []string // the statuses, in the file's order
	}{
		{"as measured", func(*results.Results) {}, asMeasured},
		{"a lost task", func(r *results.Results) { r.Runs[0].Outcome.Succeeded--; r.Runs[0].Outcome.Missing++ },
			[]string{missed, met, missed, met, met, met, met, missed}},
		{"throughput below the target", func(r *results.Results) { r.Runs[0].CeilingRatio = 0.7 }, []string{met, missed, missed, met, met, met, met, missed}},
		{"the agent sweep does not count for throughput", func(r *results.Results) { r.Runs[3].CeilingRatio = 0.1 }, asMeasured},
		{"a fast queue at half load", func(r *results.Results) { r.Runs[1].QueueWait.P99 = 99 }, []string{met, met, met, met, met, met, met, missed}},
		{"a slow queue at full load is not the target", func(r *results.Results) { r.Runs[2].QueueWait.P99 = 1e4 }, asMeasured},
		{"an extra write per task", func(r *results.Results) { r.Runs[3].TaskWritesPerTask = 3.2 }, []string{met, met, missed, missed, met, met, met, missed}},
		{"a few conflicts are within the hundredth", func(r *results.Results) { r.Runs[3].TaskWritesPerTask = 3.004 }, asMeasured},
		{"hive writes follow the rate", func(r *results.Results) { r.Runs[2].HiveStatusWritesPerSec = 20 }, []string{met, met, missed, met, missed, met, met, missed}},
		{"too much memory", func(r *results.Results) { r.Stored.PeakRSSBytes = 300 << 20 }, []string{met, met, missed, met, met, missed, met, missed}},
		{"a slow start", func(r *results.Results) { r.Stored.StartupSeconds = 2.5 }, []string{met, met, missed, met, met, met, missed, missed}},
		{"a fast warm bind", func(r *results.Results) { r.Baseline.RatioP50 = 12 }, []string{met, met, missed, met, met, met, met, met}},
		{"long tasks are not quick ones", func(r *results.Results) { r.Settings.TaskDelay.Duration = 2 * time.Second },
			[]string{met, met, missed, unknown, met, met, met, missed}},
		{"nothing ran", func(r *results.Results) { r.Runs, r.Stored, r.Baseline = nil, nil, nil },
			[]string{unknown, unknown, unknown, unknown, unknown, unknown, unknown, unknown}},
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

func TestPrint(t *testing.T) {
	var b strings.Builder
	if err := Print(&b, []results.Target{
		{Name: "Throughput", Status: results.Met, Value: 85, Op: ">=", Limit: 80, Unit: "%"},
		{Name: "Start-up", Status: results.NotMeasured, Op: "<", Limit: 2, Unit: "s"},
	}); err != nil {
		t.Fatal(err)
	}
	want := "target      figure  target   verdict\nThroughput  85 %    >= 80 %  met\nStart-up    –       < 2 s    not measured\n"
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("Print (-want +got):\n%s", diff)
	}
}
