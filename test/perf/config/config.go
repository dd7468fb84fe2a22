// Package config reads the benchmark's workloads (configs/quick.yaml and configs/full.yaml)
// and its targets (configs/targets.yaml): the sizes of a run and the figures it is compared
// with are data, so changing either needs no code. The files document every field.
package config

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/expr-lang/expr/parser"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Workload is what one run of the benchmark does; it is written with the results.
type Workload struct {
	Mode          string          `json:"mode"`
	Clients       int             `json:"clients"`
	Concurrency   int             `json:"agentConcurrency"`
	TaskDelay     metav1.Duration `json:"taskDelay"`
	Stall         metav1.Duration `json:"stall"`
	OperatorQPS   int             `json:"operatorQPS"`
	OperatorBurst int             `json:"operatorBurst"`
	Bursts        Bursts          `json:"bursts"`
	AgentSweep    AgentSweep      `json:"agentSweep"`
	OpenLoop      OpenLoop        `json:"openLoop"`
	Stored        Stored          `json:"stored"`
	Steady        Steady          `json:"steady"`
	Baseline      Baseline        `json:"baseline"`
}

// Bursts are the task-count sweep.
type Bursts struct {
	Tasks  []int `json:"tasks"`
	Agents int   `json:"agents"`
}

// AgentSweep is one burst per number of agents.
type AgentSweep struct {
	Agents []int `json:"agents"`
	Tasks  int   `json:"tasks"`
}

// OpenLoop is tasks arriving at shares of the measured ceiling.
type OpenLoop struct {
	RatePercents []int           `json:"ratePercents"`
	Duration     metav1.Duration `json:"duration"`
}

// Stored is a fresh operator started with many queued tasks of InputBytes of input, then
// another with many finished ones.
type Stored struct {
	Tasks         int             `json:"tasks"`
	FinishedTasks int             `json:"finishedTasks"`
	InputBytes    int             `json:"inputBytes"`
	Clients       int             `json:"clients"`
	Settle        metav1.Duration `json:"settle"`
}

// Steady is tasks arriving at RatePercent % of the ceiling for Duration, for a hive of
// Agents agents (processes of their own) keeping finished tasks for Retention, with the
// operator's and the agents' memory sampled every SampleEvery.
type Steady struct {
	Duration    metav1.Duration `json:"duration"`
	RatePercent int             `json:"ratePercent"`
	Agents      int             `json:"agents"`
	Retention   metav1.Duration `json:"retention"`
	SampleEvery metav1.Duration `json:"sampleEvery"`
}

// Baseline is a Job per task against a warm agent on a kwok cluster.
type Baseline struct {
	Jobs    int             `json:"jobs"`
	JobGap  metav1.Duration `json:"jobGap"`
	WarmGap metav1.Duration `json:"warmGap"`
	Nodes   int             `json:"nodes"`
}

// Target is one target: the checker computes its figure from the results with Compute, an
// expr-lang expression, and compares it with Limit by Op (one of Ops); Figure is the figure's
// short name (the report finds a target by it). Goal, Measured and Why are text/templates.
type Target struct {
	Name     string             `json:"name"`
	Figure   string             `json:"figure"`
	Compute  string             `json:"compute"`
	Op       string             `json:"op"`
	Limit    float64            `json:"limit"`
	Unit     string             `json:"unit"`
	Params   map[string]float64 `json:"params,omitempty"`
	Goal     string             `json:"goal"`
	Measured string             `json:"measured"`
	Why      string             `json:"why,omitempty"`
}

// Ops are the comparisons a target may make of its figure with its limit.
var Ops = map[string]func(value, limit float64) bool{
	"<":  func(v, l float64) bool { return v < l },
	"<=": func(v, l float64) bool { return v <= l },
	">=": func(v, l float64) bool { return v >= l },
}

// LoadWorkload reads and checks a workload file.
func LoadWorkload(path string) (*Workload, error) {
	w := &Workload{}
	if err := load(path, w); err != nil {
		return nil, err
	}
	// Every size is positive; the stored tasks, the steady run and the baseline may be 0, which
	// skips them.
	d := func(d metav1.Duration) int { return int(d.Duration) }
	positive := func(l []int, v ...int) bool { return slices.Min(slices.Concat(l, v, []int{1})) > 0 }
	var bad []string
	for name, ok := range map[string]bool{
		"clients": positive(nil, w.Clients), "agentConcurrency": positive(nil, w.Concurrency), "stall": positive(nil, d(w.Stall)),
		"bursts": positive(w.Bursts.Tasks, w.Bursts.Agents), "agentSweep": positive(w.AgentSweep.Agents, w.AgentSweep.Tasks),
		"openLoop": positive(w.OpenLoop.RatePercents, d(w.OpenLoop.Duration)),
		"stored":   w.Stored.Tasks+w.Stored.FinishedTasks == 0 || positive(nil, w.Stored.Tasks+w.Stored.FinishedTasks, w.Stored.Clients),
		"baseline": w.Baseline.Jobs == 0 || positive(nil, w.Baseline.Jobs, w.Baseline.Nodes),
		"steady": w.Steady.Duration.Duration == 0 ||
			positive(nil, w.Steady.RatePercent, w.Steady.Agents, d(w.Steady.Retention), d(w.Steady.SampleEvery)),
	} {
		if !ok {
			bad = append(bad, name)
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return nil, fmt.Errorf("%s: sizes must be positive: %s", path, strings.Join(bad, ", "))
	}
	return w, nil
}

// LoadTargets reads and checks a targets file. An expression that does not parse is refused
// here, before a run; the checker compiles it against the results' types (which this package
// cannot import), so a misspelt field is refused there.
func LoadTargets(path string) ([]Target, error) {
	var targets []Target
	if err := load(path, &targets); err != nil {
		return nil, err
	}
	for _, t := range targets {
		if t.Name == "" || t.Figure == "" || t.Compute == "" || Ops[t.Op] == nil {
			return nil, fmt.Errorf("%s: target %q needs a name, a figure, a compute expression and an op among %v", path, t.Name, slices.Sorted(maps.Keys(Ops)))
		}
		if _, err := parser.Parse(t.Compute); err != nil {
			return nil, fmt.Errorf("%s: target %q: its compute expression does not parse: %w", path, t.Name, err)
		}
	}
	return targets, nil
}

// load decodes a YAML file strictly: a misspelt field is an error, not a default.
func load(path string, into any) error {
	b, err := os.ReadFile(path)
	if err == nil {
		err = yaml.UnmarshalStrict(b, into)
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	return nil
}
