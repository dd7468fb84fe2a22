package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestLoadWorkload(t *testing.T) {
	d := func(s string) metav1.Duration {
		v, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		return metav1.Duration{Duration: v}
	}
	quick, err := LoadWorkload("../configs/quick.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := &Workload{
		Mode: "quick", Clients: 32, Concurrency: 2, Stall: d("1m"), OperatorQPS: 2000, OperatorBurst: 4000,
		Bursts: Bursts{Tasks: []int{500}, Agents: 50}, AgentSweep: AgentSweep{Agents: []int{10, 50}, Tasks: 500},
		OpenLoop: OpenLoop{RatePercents: []int{50, 100}, Duration: d("5s")}, Stored: Stored{Tasks: 5000, FinishedTasks: 2000, InputBytes: 1024, Clients: 64, Settle: d("5s")},
		Steady:   Steady{Duration: d("20s"), RatePercent: 25, Agents: 4, Retention: d("5s"), SampleEvery: d("2s")},
		Baseline: Baseline{Jobs: 10, JobGap: d("300ms"), WarmGap: d("100ms"), Nodes: 2},
	}
	if diff := cmp.Diff(want, quick); diff != "" {
		t.Errorf("quick.yaml (-want +got):\n%s", diff)
	}
	if full, err := LoadWorkload("../configs/full.yaml"); err != nil || full.Stored.Tasks != 100000 || full.Steady.Duration.Duration != 30*time.Minute {
		t.Errorf("full.yaml = %+v, %v", full, err)
	}
	if steady, err := LoadWorkload("../configs/steady.yaml"); err != nil || steady.Steady != must(LoadWorkload("../configs/full.yaml")).Steady || steady.Stored.Tasks+steady.Baseline.Jobs+len(steady.OpenLoop.RatePercents) != 0 {
		t.Errorf("steady.yaml is not the steady run of full.yaml alone: %+v, %v", steady, err)
	}

	dir := t.TempDir()
	for name, tt := range map[string]struct{ yaml, wantErr string }{
		"a misspelt field":   {"mode: full\nclient: 3\n", `unknown field "client"`},
		"non-positive sizes": {"mode: full\nclients: 0\nbursts: {tasks: [10, -1]}\n", "sizes must be positive: agentConcurrency, agentSweep, bursts, clients"},
		"a steady run of no agents": {"mode: full\nclients: 1\nagentConcurrency: 1\nstall: 1s\nbursts: {tasks: [1], agents: 1}\n" +
			"agentSweep: {agents: [1], tasks: 1}\nopenLoop: {duration: 1s}\nsteady: {duration: 1m, ratePercent: 50, retention: 1s, sampleEvery: 1s}\n",
			"sizes must be positive: steady"},
		"no file": {"", "no such file"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if tt.yaml != "" {
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := LoadWorkload(path); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: error %v, want one with %q", name, err, tt.wantErr)
		}
	}
}

func TestLoadTargets(t *testing.T) {
	targets, err := LoadTargets("../configs/targets.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tg := range targets {
		names = append(names, tg.Name+" "+tg.Op)
	}
	want := []string{"Success >=", "Throughput >=", "Queue wait at half load <", "API writes per quick task <=",
		"Hive status writes <=", "Operator memory <", "Operator memory with history <", "Start-up <", "Start-up with history <",
		"Operator memory over time <", "Agent memory over time <", "Warm dispatch vs Job >="}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
	dir := t.TempDir()
	for name, tt := range map[string]struct{ yaml, wantErr string }{
		"an unknown op":                     {"- {name: x, figure: success, compute: '{value: 1.0}', op: '=='}\n", `target "x" needs a name, a figure, a compute expression and an op among [< <= >=]`},
		"no expression":                     {"- {name: x, figure: success, op: '<'}\n", `target "x" needs a name, a figure, a compute expression`},
		"an expression that does not parse": {"- {name: x, figure: success, compute: 'let v = ; v', op: '<'}\n", `target "x": its compute expression does not parse`},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadTargets(path); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: error %v, want one with %q", name, err, tt.wantErr)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
