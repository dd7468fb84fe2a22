// Package results holds what one run of the benchmark measured, as written to its JSON
// file: the runner fills them, the checker compares them with the targets, and the report
// renders them.
package results

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/aihub-dev/hive-operator/test/perf/config"
	"github.com/aihub-dev/hive-operator/test/perf/stats"
)

// Kinds of runs, and statuses of a target.
const (
	KindBurst    = "burst"
	KindOpenLoop = "open-loop"
	KindWarm     = "warm"
	KindSteady   = "steady"
	Met          = "met"
	Missed       = "missed"
	NotMeasured  = "not measured"
)

// Results are everything one run of the benchmark measured.
type Results struct {
	StartedAt       time.Time       `json:"startedAt"`
	DurationSeconds float64         `json:"durationSeconds"`
	Machine         Machine         `json:"machine"`
	Settings        config.Workload `json:"settings"`
	Runs            []Run           `json:"runs"`
	Stored          *Stored         `json:"stored,omitempty"`
	Finished        *Stored         `json:"finished,omitempty"`
	Steady          *Steady         `json:"steady,omitempty"`
	Baseline        *Baseline       `json:"baseline,omitempty"`
	Targets         []Target        `json:"targets"`
	Errors          []string        `json:"errors,omitempty"`
}

// Machine describes where the benchmark ran. The load average at the start tells whether
// other work on the machine made the numbers noisy.
type Machine struct {
	CPUModel          string `json:"cpuModel"`
	Cores             int    `json:"cores"`
	MemoryBytes       uint64 `json:"memoryBytes"`
	Kernel            string `json:"kernel"`
	GoVersion         string `json:"goVersion"`
	KubernetesVersion string `json:"kubernetesVersion"`
	KwokVersion       string `json:"kwokVersion,omitempty"`
	LoadAverage       string `json:"loadAverageAtStart"`
}

// Outcome counts how the tasks of a run ended. Unfinished tasks exist but never reached a
// final phase before the run gave up on them (stuck); Missing tasks are gone (lost).
type Outcome struct {
	Submitted  int `json:"submitted"`
	Succeeded  int `json:"succeeded"`
	Failed     int `json:"failed"`
	Unfinished int `json:"unfinished"`
	Missing    int `json:"missing"`
}

// OK reports whether every submitted task succeeded.
func (o Outcome) OK() bool { return o.Submitted > 0 && o.Succeeded == o.Submitted }

// String is the outcome as the tables print it.
func (o Outcome) String() string {
	s := fmt.Sprintf("%d/%d", o.Succeeded, o.Submitted)
	if o.Failed+o.Unfinished+o.Missing > 0 {
		s += fmt.Sprintf(" (%d failed, %d stuck, %d lost)", o.Failed, o.Unfinished, o.Missing)
	}
	return s
}

// CPUUse is how many cores each component used on average over a phase: the processes
// metered, "machine" (all busy cores) and "other" (busy cores not accounted to them).
type CPUUse struct {
	Cores map[string]float64 `json:"cores"`
}

// Ceiling is the plain-client run with no operator; WriteLatency is the round trip of each
// of its 3n writes.
type Ceiling struct {
	Tasks           int           `json:"tasks"`
	DurationSeconds float64       `json:"durationSeconds"`
	TasksPerSec     float64       `json:"tasksPerSec"`
	WriteLatency    stats.Summary `json:"writeLatency"`
	CPU             CPUUse        `json:"cpu"`
}

// OperatorUse is what the operator process used during a run: its start-up (process start
// to /readyz answering 200) and its API requests by HTTP method (rest_client_requests_total).
type OperatorUse struct {
	StartupSeconds float64            `json:"startupSeconds"`
	PeakRSSBytes   uint64             `json:"peakRSSBytes"`
	CPUSeconds     float64            `json:"cpuSeconds"`
	Requests       map[string]float64 `json:"requests"`
	Writes         float64            `json:"writes"`
	Reads          float64            `json:"reads"`
}

// Run is one burst, one open-loop rate or the warm tasks of the baseline. WritesPerTask
// counts every write of the run (the benchmark's creates, the operator's and the agents')
// per task; TaskWritesPerTask leaves out the hive's status writes.
type Run struct {
	Name                   string        `json:"name"`
	Kind                   string        `json:"kind"`
	Tasks                  int           `json:"tasks"`
	Agents                 int           `json:"agents"`
	Concurrency            int           `json:"concurrency"`
	RatePercent            float64       `json:"ratePercentOfCeiling,omitempty"`
	TargetRate             float64       `json:"targetRatePerSec,omitempty"`
	ArrivalRate            float64       `json:"arrivalRatePerSec,omitempty"`
	Outcome                Outcome       `json:"outcome"`
	DurationSeconds        float64       `json:"durationSeconds"`
	TasksPerSec            float64       `json:"tasksPerSec"`
	Ceiling                *Ceiling      `json:"ceiling,omitempty"`
	CeilingRatio           float64       `json:"ceilingRatio,omitempty"`
	QueueWait              stats.Summary `json:"queueWait"`
	EndToEnd               stats.Summary `json:"endToEnd"`
	Operator               OperatorUse   `json:"operator"`
	AgentWrites            float64       `json:"agentWrites"`
	HiveStatusWrites       int           `json:"hiveStatusWrites"`
	HiveStatusWritesPerSec float64       `json:"hiveStatusWritesPerSec"`
	WritesPerTask          float64       `json:"writesPerTask"`
	TaskWritesPerTask      float64       `json:"taskWritesPerTask"`
	OperatorWritesPerTask  float64       `json:"operatorWritesPerTask"`
	OperatorReadsPerTask   float64       `json:"operatorReadsPerTask"`
	AgentWritesPerTask     float64       `json:"agentWritesPerTask"`
	CPU                    CPUUse        `json:"cpu"`
}

// Stored is the operator started with many tasks already stored, queued or finished, and
// what it used from its start to the end of the settle; QueuedSeen is the hive's
// status.queuedTasks then: the operator saw them.
type Stored struct {
	OperatorUse
	Tasks         int     `json:"tasks"`
	InputBytes    int     `json:"inputBytes,omitempty"`
	CreateSeconds float64 `json:"createSeconds"`
	SettleSeconds float64 `json:"settleSeconds"`
	RSSBytes      uint64  `json:"rssBytesAfterSettle"`
	QueuedSeen    int32   `json:"queuedTasksInHiveStatus"`
	// EtcdBytesPerTask is how much etcd's database in use grew per task stored (every
	// revision the apiserver has not compacted yet included).
	EtcdBytesPerTask float64 `json:"etcdBytesPerTask,omitempty"`
}

// Steady is a long run at a fixed rate with retention (its tasks' run is among Runs, by
// Name), with the memory of the operator and of its agents sampled over time.
type Steady struct {
	Name             string         `json:"name"`
	StartedAt        time.Time      `json:"startedAt"`
	RetentionSeconds float64        `json:"retentionSeconds"`
	Samples          []SteadySample `json:"samples"`
}

// SteadySample is the steady run at one time: the operator's RSS, the largest and the
// total RSS of its agent processes, and the tasks stored in its namespace.
type SteadySample struct {
	Seconds          float64 `json:"seconds"`
	OperatorRSSBytes uint64  `json:"operatorRSSBytes"`
	AgentRSSBytes    uint64  `json:"agentMaxRSSBytes"`
	AgentsRSSBytes   uint64  `json:"agentsRSSBytes"`
	StoredTasks      int     `json:"storedTasks"`
}

// Baseline compares a Job per task with a task bound to a warm agent on one kwok cluster.
type Baseline struct {
	Nodes                int           `json:"nodes"`
	ClusterCreateSeconds float64       `json:"clusterCreateSeconds"`
	Jobs                 int           `json:"jobs"`
	JobsRunning          int           `json:"jobsRunning"`
	JobToRunning         stats.Summary `json:"jobToPodRunning"`
	WarmTasks            int           `json:"warmTasks"`
	WarmSucceeded        int           `json:"warmSucceeded"`
	WarmBind             stats.Summary `json:"warmCreatedToBound"`
	WarmEndToEnd         stats.Summary `json:"warmEndToEnd"`
	RatioP50             float64       `json:"ratioP50"`
	RatioP95             float64       `json:"ratioP95"`
}

// Target is the checker's verdict on one target: its figure's value against its limit,
// with its texts rendered.
type Target struct {
	config.Target
	Status string  `json:"status"`
	Value  float64 `json:"value"`
}

// RunsOf returns the runs of a kind: bursts by agents then tasks, rates by rate.
func (r *Results) RunsOf(kind string) []Run {
	out := slices.DeleteFunc(slices.Clone(r.Runs), func(run Run) bool { return run.Kind != kind })
	slices.SortStableFunc(out, func(a, b Run) int {
		return cmp.Or(cmp.Compare(a.TargetRate, b.TargetRate), cmp.Compare(a.Agents, b.Agents), cmp.Compare(a.Tasks, b.Tasks))
	})
	return out
}

// Run returns the run of a name, nil if none ran.
func (r *Results) Run(name string) *Run {
	for i := range r.Runs {
		if r.Runs[i].Name == name {
			return &r.Runs[i]
		}
	}
	return nil
}

// Lost describes the runs whose tasks did not all succeed: the only failure of a run.
func (r *Results) Lost() string {
	var bad []string
	for _, run := range r.Runs {
		if !run.Outcome.OK() {
			bad = append(bad, run.Name+": "+run.Outcome.String())
		}
	}
	return strings.Join(bad, "; ")
}

// MergeSteady returns the results in path with the steady run of res in place of theirs
// (the bursts it ran for its ceiling are left out), and its errors added.
func MergeSteady(path string, res *Results) (*Results, error) {
	var run *Run
	if res.Steady != nil {
		run = res.Run(res.Steady.Name)
	}
	if run == nil {
		return nil, errors.New("-into: this run has no steady run")
	}
	base, err := Read(path)
	if err != nil {
		return nil, fmt.Errorf("-into: %w", err)
	}
	base.Runs = append(slices.DeleteFunc(base.Runs, func(r Run) bool { return r.Kind == KindSteady }), *run)
	base.Steady, base.Settings.Steady = res.Steady, res.Settings.Steady
	base.Errors = append(base.Errors, res.Errors...)
	return base, nil
}

// Write writes the results as indented JSON.
func (r *Results) Write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err == nil {
		err = os.WriteFile(path, append(b, '\n'), 0o644)
	}
	if err != nil {
		return fmt.Errorf("writing the results: %w", err)
	}
	return nil
}

// Read reads results written by Write.
func Read(path string) (*Results, error) {
	r := &Results{}
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, r)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the results: %w", err)
	}
	return r, nil
}
