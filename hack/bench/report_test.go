package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sampleResults is a full run's results, as the report renders them.
func sampleResults() *Results {
	ceiling := &CeilingResult{Tasks: 1000, DurationSeconds: 6.7, TasksPerSec: 150, WritesPerSec: 450,
		WriteLatency: Summary{N: 3000, P50: 40, P95: 90, P99: 120, Max: 300}}
	burst := func(tasks, agents int, tps float64) RunResult {
		return RunResult{
			Name: "burst", Kind: kindBurst, Tasks: tasks, Agents: agents, Concurrency: 2,
			Outcome: Outcome{Submitted: tasks, Succeeded: tasks}, TasksPerSec: tps, Ceiling: ceiling, CeilingRatio: tps / 150,
			QueueWait:        Summary{N: tasks, P50: 1000, P95: 3000, P99: 3500, Max: 4000},
			EndToEnd:         Summary{N: tasks, P50: 1100, P95: 3100, P99: 3600, Max: 4100},
			Operator:         OperatorUse{StartupSeconds: 0.3, PeakRSSBytes: 60 * mib, CPUSeconds: 2, Requests: map[string]float64{"PATCH": float64(tasks) + 7}},
			HiveStatusWrites: 7, HiveStatusWritesPerSec: 1, WritesPerTask: 3.01, TaskWritesPerTask: 3, OperatorWritesPerTask: 1.01,
			AgentWritesPerTask: 1, CPU: CPUUse{WallSeconds: 7, Cores: map[string]float64{"apiserver": 1.2, "etcd": 0.2, "operator": 0.2, "bench": 0.3, "other": 0.05, "machine": 1.95}},
		}
	}
	rate := func(pct, tps, p99, hive float64) RunResult {
		return RunResult{
			Name: "rate", Kind: kindOpenLoop, Tasks: 100, Agents: 100, Concurrency: 2, RatePercent: pct, TargetRate: tps, ArrivalRate: tps,
			Outcome: Outcome{Submitted: 100, Succeeded: 100}, TasksPerSec: tps, Ceiling: ceiling,
			QueueWait: Summary{N: 100, P50: p99 / 4, P95: p99 / 2, P99: p99, Max: p99}, EndToEnd: Summary{N: 100, P50: p99 / 3, P95: p99, P99: 2 * p99, Max: 2 * p99},
			HiveStatusWritesPerSec: hive,
		}
	}
	return &Results{
		Mode:    "full",
		Machine: Machine{CPUModel: "Test CPU", Cores: 2, MemoryBytes: 24 << 30, GoVersion: "go1.26", KubernetesVersion: "v1.37.2"},
		Settings: Settings{BurstTasks: []int{1000, 10000}, BurstAgents: 100, AgentSweep: []int{10, 100, 1000}, SweepTasks: 1000,
			Concurrency: 2, RatePercents: []int{25, 50}},
		Runs: []RunResult{
			burst(10000, 100, 130), burst(1000, 100, 140), burst(1000, 10, 100),
			rate(50, 75, 40, 1), rate(25, 37.5, 20, 0.9),
		},
		Stored:   &StoredResult{Tasks: 100000, StartupSeconds: 1.5, PeakRSSBytes: 200 * mib, RSSBytes: 150 * mib, Requests: map[string]float64{"GET": 9}},
		Baseline: &BaselineResult{Nodes: 2, Jobs: 30, JobsRunning: 30, JobToRunning: Summary{N: 30, P50: 900, P95: 1500}, WarmTasks: 30, WarmSucceeded: 30, WarmBind: Summary{N: 30, P50: 15, P95: 30}, RatioP50: 60, RatioP95: 50},
	}
}

func statuses(targets []TargetResult) map[string]string {
	out := map[string]string{}
	for _, t := range targets {
		out[t.Name] = t.Status
	}
	return out
}

func TestEvaluateTargets(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Results)
		want   map[string]string
	}{
		{"all met", func(*Results) {}, map[string]string{
			"Success": statusMet, "Throughput": statusMet, "Queue wait at half load": statusMet, "API writes per quick task": statusMet,
			"Hive status writes": statusMet, "Operator memory": statusMet, "Start-up": statusMet, "Warm dispatch vs Job": statusMet,
		}},
		{"a lost task", func(r *Results) { r.Runs[1].Outcome.Succeeded--; r.Runs[1].Outcome.Missing++ }, map[string]string{"Success": statusMissed}},
		{"throughput below 80 % in one burst", func(r *Results) { r.Runs[0].CeilingRatio = 0.7 }, map[string]string{"Throughput": statusMissed}},
		{"the agent sweep does not count for throughput", func(r *Results) { r.Runs[2].CeilingRatio = 0.1 }, map[string]string{"Throughput": statusMet}},
		{"slow queue at half load", func(r *Results) { r.Runs[3].QueueWait.P99 = 150 }, map[string]string{"Queue wait at half load": statusMissed}},
		{"a slow queue at quarter load is not the target", func(r *Results) { r.Runs[4].QueueWait.P99 = 150 }, map[string]string{"Queue wait at half load": statusMet}},
		{"an extra write per task", func(r *Results) { r.Runs[0].TaskWritesPerTask = 3.2 }, map[string]string{"API writes per quick task": statusMissed}},
		{"hive writes follow the rate", func(r *Results) { r.Runs[3].HiveStatusWritesPerSec = 20 }, map[string]string{"Hive status writes": statusMissed}},
		{"too much memory", func(r *Results) { r.Stored.PeakRSSBytes = 300 * mib }, map[string]string{"Operator memory": statusMissed}},
		{"slow start", func(r *Results) { r.Stored.StartupSeconds = 2.5 }, map[string]string{"Start-up": statusMissed}},
		{"warm not fast enough", func(r *Results) { r.Baseline.RatioP50 = 3 }, map[string]string{"Warm dispatch vs Job": statusMissed}},
		{"nothing measured", func(r *Results) { r.Runs, r.Stored, r.Baseline = nil, nil, nil }, map[string]string{
			"Success": statusUnknown, "Throughput": statusUnknown, "Queue wait at half load": statusUnknown, "API writes per quick task": statusUnknown,
			"Hive status writes": statusUnknown, "Operator memory": statusUnknown, "Start-up": statusUnknown, "Warm dispatch vs Job": statusUnknown,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sampleResults()
			tt.mutate(r)
			targets := evaluateTargets(r)
			got := statuses(targets)
			for name, want := range tt.want {
				if got[name] != want {
					t.Errorf("%s: %s, want %s", name, got[name], want)
				}
			}
			for _, tr := range targets {
				if tr.Status == statusMissed && tr.Why == "" {
					t.Errorf("%s is missed without a reason", tr.Name)
				}
				if tr.Measured == "" {
					t.Errorf("%s has no measured value", tr.Name)
				}
			}
		})
	}
}

func TestRenderReport(t *testing.T) {
	r := sampleResults()
	r.Targets = evaluateTargets(r)
	out := renderReport(r, "##")
	for _, want := range []string{
		"## Targets", "## Bursts: throughput and latency", "## Bursts: cost", "## Latency against arrival rate",
		"## Tasks stored before the operator starts", "## Warm agent against a Job per task (kwok)",
		"| 10000 | 100 × 2 | 10000/10000 | 130 | 150 | 87 % |", "1000 / 3000 / 3500 / 4000", "**met**", "60×",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the report lacks %q:\n%s", want, out)
		}
	}
	// Bursts are ordered by agents, then tasks; rates by rate.
	if i, j := strings.Index(out, "| 1000 | 10 × 2"), strings.Index(out, "| 1000 | 100 × 2"); i < 0 || j < 0 || i > j {
		t.Errorf("bursts are not ordered by agents")
	}
	if i, j := strings.Index(out, "| 25 % |"), strings.Index(out, "| 50 % |"); i < 0 || j < 0 || i > j {
		t.Errorf("rates are not ordered")
	}
	// Every table row has as many cells as its header.
	var cells int
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "|") {
			cells = 0
			continue
		}
		n := strings.Count(line, " | ") + 1
		if cells == 0 {
			cells = n
		} else if n != cells && !strings.Contains(line, `\|`) {
			t.Errorf("row with %d cells under a header of %d: %s", n, cells, line)
		}
	}
}

func TestRenderReportFailures(t *testing.T) {
	r := &Results{Errors: []string{"the operator exited"}, Runs: []RunResult{{Name: "burst", Kind: kindBurst, Tasks: 10, Agents: 1,
		Outcome: Outcome{Submitted: 10, Succeeded: 7, Failed: 1, Unfinished: 1, Missing: 1}}}}
	r.Targets = evaluateTargets(r)
	out := renderReport(r, "##")
	for _, want := range []string{"7/10 (1 failed, 1 stuck, 1 lost)", "## Errors", "- the operator exited", "**missed**"} {
		if !strings.Contains(out, want) {
			t.Errorf("the report lacks %q:\n%s", want, out)
		}
	}
	if got := lostTasks(r); !strings.Contains(got, "7/10") {
		t.Errorf("lostTasks = %q", got)
	}
	if got := lostTasks(sampleResults()); got != "" {
		t.Errorf("lostTasks of a good run = %q", got)
	}
}

func TestRenderDocs(t *testing.T) {
	r := sampleResults()
	r.Targets = evaluateTargets(r)
	out := renderDocs(r, "benchmarks-latency.svg")
	for _, want := range []string{"# Benchmarks", "## Method", "## Targets", "## Results of the last run", "### Targets", "Test CPU, 2 cores",
		"v1.37.2", "![Queue wait and end-to-end latency against the arrival rate](benchmarks-latency.svg)"} {
		if !strings.Contains(out, want) {
			t.Errorf("the docs lack %q", want)
		}
	}
}

func TestWriteJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.json")
	r := sampleResults()
	if err := writeJSON(path, r); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back Results
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Runs) != len(r.Runs) || back.Stored.Tasks != 100000 || back.Runs[0].QueueWait.P99 != 3500 {
		t.Errorf("the JSON does not round-trip: %+v", back)
	}
}

func TestFmtMs(t *testing.T) {
	tests := []struct {
		in   float64
		want string
	}{{0, "0"}, {1.234, "1.23"}, {12.34, "12.3"}, {1234.5, "1234"}}
	for _, tt := range tests {
		if got := fmtMs(tt.in); got != tt.want {
			t.Errorf("fmtMs(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
