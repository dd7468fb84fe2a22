// Package checker compares a run's results with the targets of configs/targets.yaml and
// prints each figure against its target. Targets are reported, never asserted: a benchmark
// on a shared 2-core machine is too noisy to fail a build on.
//
// Each target names a figure computed here: the value compared with the target's limit and
// the fields its texts (text/templates) use, with the target's limit, its params and the
// machine's cores.
package checker

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"text/template"
	"time"

	"gonum.org/v1/gonum/stat"

	"github.com/aihub-dev/hive-operator/test/perf/config"
	"github.com/aihub-dev/hive-operator/test/perf/report"
	"github.com/aihub-dev/hive-operator/test/perf/results"
	"github.com/aihub-dev/hive-operator/test/perf/stats"
)

// figure returns a target's value and fields, or why it could not be measured.
type figure func(r *results.Results, t config.Target) (value float64, fields map[string]any, missing string)

var figures = map[string]figure{
	"success": success, "throughput": throughput, report.QueueWaitFigure: queueWait, "writesPerTask": writesPerTask,
	"hiveWrites": hiveWrites, "memory": memory, "startup": startup, "warmSpeedup": warmSpeedup,
	"steadyGrowth": steadyGrowth,
}

// Check returns the verdict on every target.
func Check(r *results.Results, targets []config.Target) ([]results.Target, error) {
	cores := float64(max(r.Machine.Cores, 1))
	out := make([]results.Target, 0, len(targets))
	var errs []error
	for _, t := range targets {
		f, ok := figures[t.Figure]
		if !ok {
			return nil, fmt.Errorf("target %s: no figure %q", t.Name, t.Figure)
		}
		// A figure may compute its limit from the target's params.
		value, more, missing := f(r, t)
		fields := map[string]any{"limit": t.Limit, "params": t.Params, "cores": cores, "value": value}
		maps.Copy(fields, more)
		v := results.Target{Target: t} // its texts are rendered below
		v.Limit, v.Why = fields["limit"].(float64), ""
		text := func(name, src string) string {
			var b strings.Builder
			tmpl, err := template.New(t.Name + " " + name).Option("missingkey=error").Funcs(report.Funcs).Parse(src)
			if err == nil {
				err = tmpl.Execute(&b, fields)
			}
			errs = append(errs, err)
			return b.String()
		}
		v.Goal = text("goal", t.Goal)
		switch {
		case missing != "":
			v.Status, v.Measured = results.NotMeasured, missing
		case meets(value, t.Op, v.Limit):
			v.Status, v.Value, v.Measured = results.Met, value, text("measured", t.Measured)
		default:
			v.Status, v.Value, v.Measured, v.Why = results.Missed, value, text("measured", t.Measured), text("why", t.Why)
		}
		out = append(out, v)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("rendering the targets' texts: %w", err)
	}
	return out, nil
}

func meets(v float64, op string, limit float64) bool {
	switch op {
	case "<":
		return v < limit
	case "<=":
		return v <= limit
	default:
		return v >= limit
	}
}

func success(r *results.Results, _ config.Target) (float64, map[string]any, string) {
	var total results.Outcome
	var failed []results.Run
	for _, run := range r.Runs {
		o := run.Outcome
		total.Submitted, total.Succeeded, total.Failed = total.Submitted+o.Submitted, total.Succeeded+o.Succeeded, total.Failed+o.Failed
		total.Unfinished, total.Missing = total.Unfinished+o.Unfinished, total.Missing+o.Missing
		if !o.OK() {
			failed = append(failed, run)
		}
	}
	if total.Submitted == 0 {
		return 0, nil, "no tasks ran"
	}
	return 100 * stats.Ratio(float64(total.Succeeded), float64(total.Submitted)), map[string]any{"total": total, "runs": len(r.Runs), "failed": failed}, ""
}

// throughput is the worst share of the ceiling among the bursts of the task-count sweep:
// the agent sweep's other sizes do not count.
func throughput(r *results.Results, _ config.Target) (float64, map[string]any, string) {
	var runs []results.Run
	for _, run := range r.Runs {
		if run.Kind == results.KindBurst && run.Ceiling != nil && run.Agents == r.Settings.Bursts.Agents && slices.Contains(r.Settings.Bursts.Tasks, run.Tasks) {
			runs = append(runs, run)
		}
	}
	if len(runs) == 0 {
		return 0, nil, "no burst with a ceiling ran"
	}
	worst := slices.MinFunc(runs, func(a, b results.Run) int { return cmp.Compare(a.CeilingRatio, b.CeilingRatio) })
	return stats.Round(100*worst.CeilingRatio, 1), map[string]any{"runs": runs, "worst": worst}, ""
}

// queueWait is the queue wait's p99 of the open-loop run closest to params.ratePercent.
func queueWait(r *results.Results, t config.Target) (float64, map[string]any, string) {
	var run *results.Run
	for i := range r.Runs {
		if c := &r.Runs[i]; c.Kind == results.KindOpenLoop && (run == nil || math.Abs(c.RatePercent-t.Params["ratePercent"]) < math.Abs(run.RatePercent-t.Params["ratePercent"])) {
			run = c
		}
	}
	if run == nil || run.QueueWait.N == 0 {
		return 0, nil, "no open-loop run"
	}
	// The API server's CPU per task, here and in the ceiling the rate was set from.
	var perTask, ceilingPerTask float64
	if c := run.Ceiling; c != nil && c.TasksPerSec > 0 && run.ArrivalRate > 0 {
		perTask, ceilingPerTask = 1e3*run.CPU.Cores["apiserver"]/run.ArrivalRate, 1e3*c.CPU.Cores["apiserver"]/c.TasksPerSec
	}
	return run.QueueWait.P99, map[string]any{"run": run, "perTaskMs": perTask, "ceilingPerTaskMs": ceilingPerTask}, ""
}

// writesPerTask is the most writes per task of a burst, the hive's status writes left out,
// rounded to the hundredth: a few conflicting binds in ten thousand are within it.
func writesPerTask(r *results.Results, _ config.Target) (float64, map[string]any, string) {
	var runs []results.Run
	for _, run := range r.Runs {
		if run.Kind == results.KindBurst && run.Outcome.Submitted > 0 {
			runs = append(runs, run)
		}
	}
	switch {
	case len(runs) == 0:
		return 0, nil, "no burst ran"
	case r.Settings.TaskDelay.Duration >= time.Second:
		return 0, nil, "tasks ran longer than the agents' RunningAfter (1 s): not quick tasks"
	}
	worst := slices.MaxFunc(runs, func(a, b results.Run) int { return cmp.Compare(a.TaskWritesPerTask, b.TaskWritesPerTask) })
	operator := worst.OperatorWritesPerTask - float64(worst.HiveStatusWrites)/float64(max(worst.Tasks, 1))
	return stats.Round(worst.TaskWritesPerTask, 2), map[string]any{"runs": runs, "worst": worst, "operatorTaskWrites": operator}, ""
}

// hiveWrites is how often the hive's status is written at the highest open-loop rate; its
// limit is params.factor times the lowest rate's plus params.slack.
func hiveWrites(r *results.Results, t config.Target) (float64, map[string]any, string) {
	runs := r.RunsOf(results.KindOpenLoop)
	if len(runs) < 2 {
		return 0, nil, "fewer than two open-loop rates ran"
	}
	lo, hi := runs[0], runs[len(runs)-1]
	limit := stats.Round(t.Params["factor"]*lo.HiveStatusWritesPerSec+t.Params["slack"], 3)
	return hi.HiveStatusWritesPerSec, map[string]any{"runs": runs, "lowest": lo, "highest": hi, "limit": limit}, ""
}

// storedOf returns the stored-tasks phase a target is about: the finished tasks when
// params.finished is 1, else the queued ones.
func storedOf(r *results.Results, t config.Target) *results.Stored {
	if t.Params["finished"] == 1 {
		return r.Finished
	}
	return r.Stored
}

// memory is the operator's peak RSS in MB with the stored tasks.
func memory(r *results.Results, t config.Target) (float64, map[string]any, string) {
	s := storedOf(r, t)
	if s == nil || s.PeakRSSBytes == 0 {
		return 0, nil, "the stored-tasks phase did not run"
	}
	return stats.Round(float64(s.PeakRSSBytes)/(1<<20), 1), map[string]any{
		"stored": s, "indicative": float64(s.Tasks) < t.Params["storedTasks"], "perTaskKB": float64(s.PeakRSSBytes) / 1024 / float64(max(s.Tasks, 1)),
	}, ""
}

// startup is the operator's start-up to ready in seconds with the stored tasks.
func startup(r *results.Results, t config.Target) (float64, map[string]any, string) {
	s := storedOf(r, t)
	if s == nil || s.StartupSeconds == 0 {
		return 0, nil, "the stored-tasks phase did not run"
	}
	var empty []float64 // the start-ups of the envtest worlds
	for _, run := range r.Runs {
		if run.Kind != results.KindWarm && run.Operator.StartupSeconds > 0 {
			empty = append(empty, run.Operator.StartupSeconds)
		}
	}
	perTask := s.StartupSeconds / float64(max(s.Tasks, 1))
	f := map[string]any{
		"stored": s, "empty": len(empty) > 0, "emptyMin": 0.0, "emptyMax": 0.0, "indicative": float64(s.Tasks) < t.Params["storedTasks"],
		"perTaskUs": 1e6 * perTask, "upTo": int(t.Limit/perTask) / 1000 * 1000,
	}
	if len(empty) > 0 {
		f["emptyMin"], f["emptyMax"] = slices.Min(empty), slices.Max(empty)
	}
	return s.StartupSeconds, f, ""
}

// warmSpeedup is how many times faster a task is bound to a warm agent than a Job's pod
// reaches Running, at p50.
func warmSpeedup(r *results.Results, _ config.Target) (float64, map[string]any, string) {
	b := r.Baseline
	if b == nil || b.JobToRunning.N == 0 || b.WarmBind.N == 0 {
		return 0, nil, "the kwok baseline did not run"
	}
	return b.RatioP50, map[string]any{"b": b}, ""
}

// steadyGrowth is how much the operator's RSS (params.agent 0) or the largest agent's (1)
// grew over the steady run, in %: the mean of the last quarter of its samples against the
// mean of the first quarter of those taken once one and a half retention periods had
// passed, by when as many tasks are deleted as finish.
func steadyGrowth(r *results.Results, t config.Target) (float64, map[string]any, string) {
	s := r.Steady
	if s == nil {
		return 0, nil, "the steady run did not run"
	}
	var rss []float64
	for _, p := range s.Samples {
		if p.Seconds >= 1.5*s.RetentionSeconds {
			rss = append(rss, float64(map[bool]uint64{false: p.OperatorRSSBytes, true: p.AgentRSSBytes}[t.Params["agent"] == 1]))
		}
	}
	if len(rss) < 4 {
		return 0, nil, fmt.Sprintf("%d samples after one and a half retention periods, fewer than 4", len(rss))
	}
	q := len(rss) / 4
	from, to := stat.Mean(rss[:q], nil), stat.Mean(rss[len(rss)-q:], nil)
	run, last := r.Run(s.Name), s.Samples[len(s.Samples)-1]
	// What the retention alone keeps stored at this rate; more at the end is a queue that
	// grew because the tasks arrived faster than they were run and deleted.
	kept := 0
	if run != nil {
		kept = int(run.TargetRate * s.RetentionSeconds)
	}
	return stats.Round(100*stats.Ratio(to-from, from), 1), map[string]any{"s": s, "run": run, "fromMB": from / (1 << 20), "toMB": to / (1 << 20),
		"first": s.Samples[0], "last": last, "kept": kept, "backlog": max(last.StoredTasks-kept, 0),
		"backlogGrew": float64(last.StoredTasks) > 1.2*float64(kept)}, ""
}
