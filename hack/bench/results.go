package main

import "time"

// Results are everything one run of the benchmark measured; they are written as JSON and
// rendered as Markdown.
type Results struct {
	Mode            string          `json:"mode"`
	StartedAt       time.Time       `json:"startedAt"`
	DurationSeconds float64         `json:"durationSeconds"`
	Machine         Machine         `json:"machine"`
	Settings        Settings        `json:"settings"`
	Runs            []RunResult     `json:"runs"`
	Stored          *StoredResult   `json:"stored,omitempty"`
	Baseline        *BaselineResult `json:"baseline,omitempty"`
	Targets         []TargetResult  `json:"targets"`
	Errors          []string        `json:"errors,omitempty"`
}

// Machine describes where the benchmark ran.
type Machine struct {
	CPUModel          string `json:"cpuModel"`
	Cores             int    `json:"cores"`
	MemoryBytes       uint64 `json:"memoryBytes"`
	Kernel            string `json:"kernel"`
	GoVersion         string `json:"goVersion"`
	KubernetesVersion string `json:"kubernetesVersion"`
	KwokVersion       string `json:"kwokVersion,omitempty"`
	// LoadAverage is the 1-minute load average when the benchmark started: other work on the
	// machine makes the numbers noisy.
	LoadAverage string `json:"loadAverageAtStart"`
}

// Settings are the sizes the benchmark ran with.
type Settings struct {
	Clients        int     `json:"clients"`
	Concurrency    int     `json:"agentConcurrency"`
	TaskDelayMs    float64 `json:"taskDelayMs"`
	BurstTasks     []int   `json:"burstTasks"`
	BurstAgents    int     `json:"burstAgents"`
	AgentSweep     []int   `json:"agentSweep"`
	SweepTasks     int     `json:"agentSweepTasks"`
	RatePercents   []int   `json:"ratePercents"`
	RateSeconds    float64 `json:"rateSeconds"`
	StoredTasks    int     `json:"storedTasks"`
	SettleSeconds  float64 `json:"settleSeconds"`
	Jobs           int     `json:"jobs"`
	JobGapMs       float64 `json:"jobGapMs"`
	KwokNodes      int     `json:"kwokNodes"`
	OperatorQPS    int     `json:"operatorQPS"`
	OperatorBurst  int     `json:"operatorBurst"`
	ClientQPS      int     `json:"clientQPS"`
	APIWritesLimit float64 `json:"apiWritesPerTaskTarget"`
}

// Outcome counts how the tasks of a run ended.
type Outcome struct {
	Submitted int `json:"submitted"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	// Unfinished tasks exist but never reached a final phase before the run gave up on them
	// (stuck); Missing tasks were created but are gone (lost).
	Unfinished int `json:"unfinished"`
	Missing    int `json:"missing"`
}

// OK reports whether every submitted task succeeded.
func (o Outcome) OK() bool {
	return o.Submitted > 0 && o.Succeeded == o.Submitted && o.Failed == 0 && o.Unfinished == 0 && o.Missing == 0
}

// SuccessRate is the share of submitted tasks that succeeded.
func (o Outcome) SuccessRate() float64 { return ratio(float64(o.Succeeded), float64(o.Submitted)) }

// CeilingResult is the plain-client run without an operator: create, bind and finish
// written by the bench itself.
type CeilingResult struct {
	Tasks           int     `json:"tasks"`
	DurationSeconds float64 `json:"durationSeconds"`
	TasksPerSec     float64 `json:"tasksPerSec"`
	WritesPerSec    float64 `json:"writesPerSec"`
	// WriteLatency is the round trip of each of the 3M writes.
	WriteLatency Summary `json:"writeLatency"`
	CPU          CPUUse  `json:"cpu"`
}

// OperatorUse is what the operator process used during a run.
type OperatorUse struct {
	// StartupSeconds is from the process start to /readyz answering 200, for the operator
	// that ran this phase.
	StartupSeconds float64 `json:"startupSeconds"`
	PeakRSSBytes   uint64  `json:"peakRSSBytes"`
	CPUSeconds     float64 `json:"cpuSeconds"`
	// Requests are the operator's API requests by HTTP method during the run
	// (rest_client_requests_total).
	Requests map[string]float64 `json:"requests"`
	Writes   float64            `json:"writes"`
	Reads    float64            `json:"reads"`
}

// RunResult is one burst or one open-loop rate.
type RunResult struct {
	Name        string `json:"name"`
	Kind        string `json:"kind"` // burst or open-loop
	Tasks       int    `json:"tasks"`
	Agents      int    `json:"agents"`
	Concurrency int    `json:"concurrency"`

	RatePercent float64 `json:"ratePercentOfCeiling,omitempty"`
	TargetRate  float64 `json:"targetRatePerSec,omitempty"`
	ArrivalRate float64 `json:"arrivalRatePerSec,omitempty"`

	Outcome         Outcome `json:"outcome"`
	DurationSeconds float64 `json:"durationSeconds"`
	TasksPerSec     float64 `json:"tasksPerSec"`

	Ceiling      *CeilingResult `json:"ceiling,omitempty"`
	CeilingRatio float64        `json:"ceilingRatio,omitempty"`

	QueueWait Summary `json:"queueWait"`
	EndToEnd  Summary `json:"endToEnd"`

	Operator    OperatorUse `json:"operator"`
	AgentWrites float64     `json:"agentWrites"`
	AgentReads  float64     `json:"agentReads"`
	// HiveStatusWrites are the hive's status writes seen during the run.
	HiveStatusWrites       int     `json:"hiveStatusWrites"`
	HiveStatusWritesPerSec float64 `json:"hiveStatusWritesPerSec"`
	// WritesPerTask counts every write of the run (the bench's creates, the operator's and
	// the agents' writes) per task; TaskWritesPerTask leaves out the hive's status writes.
	WritesPerTask         float64 `json:"writesPerTask"`
	TaskWritesPerTask     float64 `json:"taskWritesPerTask"`
	OperatorWritesPerTask float64 `json:"operatorWritesPerTask"`
	OperatorReadsPerTask  float64 `json:"operatorReadsPerTask"`
	AgentWritesPerTask    float64 `json:"agentWritesPerTask"`

	CPU CPUUse `json:"cpu"`
}

// StoredResult is the operator started with many tasks already stored.
type StoredResult struct {
	Tasks          int     `json:"tasks"`
	CreateSeconds  float64 `json:"createSeconds"`
	StartupSeconds float64 `json:"startupSeconds"`
	SettleSeconds  float64 `json:"settleSeconds"`
	PeakRSSBytes   uint64  `json:"peakRSSBytes"`
	RSSBytes       uint64  `json:"rssBytesAfterSettle"`
	CPUSeconds     float64 `json:"cpuSeconds"`
	// QueuedSeen is the hive's status.queuedTasks after the settle: the operator saw them.
	QueuedSeen int32              `json:"queuedTasksInHiveStatus"`
	Requests   map[string]float64 `json:"requests"`
}

// BaselineResult compares a Job per task with a task bound to a warm agent on the same
// simulated cluster.
type BaselineResult struct {
	Nodes                int     `json:"nodes"`
	ClusterCreateSeconds float64 `json:"clusterCreateSeconds"`
	Jobs                 int     `json:"jobs"`
	JobsRunning          int     `json:"jobsRunning"`
	JobToRunning         Summary `json:"jobToPodRunning"`
	WarmTasks            int     `json:"warmTasks"`
	WarmSucceeded        int     `json:"warmSucceeded"`
	WarmBind             Summary `json:"warmCreatedToBound"`
	WarmEndToEnd         Summary `json:"warmEndToEnd"`
	RatioP50             float64 `json:"ratioP50"`
	RatioP95             float64 `json:"ratioP95"`
}

// TargetResult is the verdict on one target.
type TargetResult struct {
	Name     string `json:"name"`
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	Status   string `json:"status"` // met, missed, not measured
	Why      string `json:"why,omitempty"`
}

const (
	statusMet      = "met"
	statusMissed   = "missed"
	statusUnknown  = "not measured"
	kindBurst      = "burst"
	kindOpenLoop   = "open-loop"
	mib            = 1 << 20
	writesPerQuick = 3
)
