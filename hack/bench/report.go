package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
)

// writeJSON writes the results to a file.
func writeJSON(path string, r *Results) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil { //nolint:gosec // a report meant to be read
		return fmt.Errorf("writing the results: %w", err)
	}
	return nil
}

// fmtMs formats milliseconds: one decimal below 100 ms, none above.
func fmtMs(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	case v < 100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func fmtPcts(s Summary, withMax bool) string {
	if s.N == 0 {
		return "–"
	}
	out := fmtMs(s.P50) + " / " + fmtMs(s.P95) + " / " + fmtMs(s.P99)
	if withMax {
		out += " / " + fmtMs(s.Max)
	}
	return out
}

func fmtMB(b uint64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f", float64(b)/mib)
}

// fmtRequests lists request counts by method in a fixed order.
func fmtRequests(m map[string]float64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func fmtCores(u CPUUse) string {
	if len(u.Cores) == 0 {
		return "–"
	}
	get := func(k string) string {
		if v, ok := u.Cores[k]; ok {
			return fmt.Sprintf("%.2f", v)
		}
		return "–"
	}
	return strings.Join([]string{get("apiserver"), get("etcd"), get("operator"), get("bench"), get("other")}, " / ")
}

// table renders a Markdown table.
func table(b *strings.Builder, header []string, rows [][]string) {
	b.WriteString("| " + strings.Join(header, " | ") + " |\n")
	seps := make([]string, len(header))
	for i := range seps {
		seps[i] = "---"
	}
	b.WriteString("| " + strings.Join(seps, " | ") + " |\n")
	for _, r := range rows {
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
}

// renderReport renders the results as Markdown: targets first, then every table. heading is
// the level of the section headings ("##" or "###").
func renderReport(r *Results, heading string) string {
	var b strings.Builder
	h := func(title string) { fmt.Fprintf(&b, "\n%s %s\n\n", heading, title) }

	h("Targets")
	rows := make([][]string, 0, len(r.Targets))
	for _, t := range r.Targets {
		rows = append(rows, []string{t.Name, t.Goal, t.Measured, "**" + t.Status + "**"})
	}
	table(&b, []string{"target", "goal", "measured", "verdict"}, rows)
	var whys []string
	for _, t := range r.Targets {
		if t.Why != "" {
			whys = append(whys, fmt.Sprintf("- **%s** (%s): %s", t.Name, t.Status, t.Why))
		}
	}
	if len(whys) > 0 {
		b.WriteString("\n" + strings.Join(whys, "\n") + "\n")
	}

	bursts := runsOf(r, kindBurst)
	if len(bursts) > 0 {
		h("Bursts: throughput and latency")
		b.WriteString("All tasks created at once by the bench's clients; the ceiling is the same writes made by a plain client with no operator, " +
			"measured right before each burst. Latencies in ms: p50 / p95 / p99 / max.\n\n")
		rows = rows[:0]
		for _, run := range bursts {
			ceiling, share := "–", "–"
			if run.Ceiling != nil {
				ceiling = fmt.Sprintf("%.0f", run.Ceiling.TasksPerSec)
				share = fmt.Sprintf("%.0f %%", 100*run.CeilingRatio)
			}
			rows = append(rows, []string{
				fmt.Sprint(run.Tasks), fmt.Sprintf("%d × %d", run.Agents, run.Concurrency), fmtOutcome(run.Outcome),
				fmt.Sprintf("%.0f", run.TasksPerSec), ceiling, share, fmtPcts(run.QueueWait, true), fmtPcts(run.EndToEnd, true),
			})
		}
		table(&b, []string{"tasks", "agents × slots", "succeeded", "tasks/s", "ceiling tasks/s", "of ceiling", "queue wait", "end to end"}, rows)

		h("Bursts: cost")
		b.WriteString("Writes and reads per task during the burst (the bench's create counts as one write); the operator's requests come from " +
			"its `rest_client_requests_total`, the agents' from their client. CPU in cores (average over the burst): " +
			"API server / etcd / operator / bench (agents, recorder, clients) / other processes.\n\n")
		rows = rows[:0]
		for _, run := range bursts {
			rows = append(rows, []string{
				fmt.Sprint(run.Tasks), fmt.Sprint(run.Agents),
				fmt.Sprintf("%.2f", run.TaskWritesPerTask), fmt.Sprintf("%.2f", run.WritesPerTask),
				fmt.Sprintf("%.2f", run.OperatorWritesPerTask), fmt.Sprintf("%.2f", run.AgentWritesPerTask), fmt.Sprintf("%.2f", run.OperatorReadsPerTask),
				fmt.Sprintf("%d (%.2f/s)", run.HiveStatusWrites, run.HiveStatusWritesPerSec),
				fmt.Sprintf("%.1f", run.Operator.CPUSeconds), fmtMB(run.Operator.PeakRSSBytes), fmtCores(run.CPU),
			})
		}
		table(&b, []string{"tasks", "agents", "task writes/task", "all writes/task", "operator writes/task", "agent writes/task",
			"operator reads/task", "hive status writes", "operator CPU s", "operator peak RSS MB", "cores"}, rows)
	}

	if rates := runsOf(r, kindOpenLoop); len(rates) > 0 {
		h("Latency against arrival rate")
		b.WriteString("Open loop: tasks created at a fixed rate, whatever the completions, for a fixed time. Latencies in ms: p50 / p95 / p99 / max.\n\n")
		rows = rows[:0]
		for _, run := range rates {
			rows = append(rows, []string{
				fmt.Sprintf("%.0f %%", run.RatePercent), fmt.Sprintf("%.0f", run.TargetRate), fmt.Sprintf("%.0f", run.ArrivalRate),
				fmt.Sprintf("%.0f", run.TasksPerSec), fmtOutcome(run.Outcome), fmtPcts(run.QueueWait, true), fmtPcts(run.EndToEnd, true),
				fmt.Sprintf("%.2f", run.HiveStatusWritesPerSec), fmtCores(run.CPU),
			})
		}
		table(&b, []string{"rate (of ceiling)", "offered tasks/s", "arrived tasks/s", "finished tasks/s", "succeeded", "queue wait", "end to end",
			"hive status writes/s", "cores"}, rows)
	}

	if s := r.Stored; s != nil {
		h("Tasks stored before the operator starts")
		fmt.Fprintf(&b, "%d queued tasks (their hive has 0 replicas) created in %.0f s before a fresh operator process started.\n\n", s.Tasks, s.CreateSeconds)
		table(&b, []string{"stored tasks", "start to ready s", "peak RSS MB", "RSS after settle MB", "CPU s (start + settle)", "settle s", "operator requests", "queued in hive status"},
			[][]string{{fmt.Sprint(s.Tasks), fmt.Sprintf("%.2f", s.StartupSeconds), fmtMB(s.PeakRSSBytes), fmtMB(s.RSSBytes),
				fmt.Sprintf("%.1f", s.CPUSeconds), fmt.Sprintf("%.0f", s.SettleSeconds), fmtRequests(s.Requests), fmt.Sprint(s.QueuedSeen)}})
	}

	if bl := r.Baseline; bl != nil {
		h("Warm agent against a Job per task (kwok)")
		fmt.Fprintf(&b, "On a simulated cluster (kwokctl, binary runtime, %d nodes; created in %.0f s): %d Jobs created one at a time, time from the Job's "+
			"creation to its pod Running; then %d tasks for a hive of 2 warm agents, time from creation to bound. Latencies in ms: p50 / p95 / p99 / max.\n\n",
			bl.Nodes, bl.ClusterCreateSeconds, bl.Jobs, bl.WarmTasks)
		table(&b, []string{"what", "count", "latency", "p50 ratio", "p95 ratio"}, [][]string{
			{"Job → pod Running", fmt.Sprintf("%d of %d", bl.JobsRunning, bl.Jobs), fmtPcts(bl.JobToRunning, true), "", ""},
			{"task → bound (warm agent)", fmt.Sprintf("%d of %d", bl.WarmBind.N, bl.WarmTasks), fmtPcts(bl.WarmBind, true),
				fmt.Sprintf("%.0f×", bl.RatioP50), fmt.Sprintf("%.0f×", bl.RatioP95)},
			{"task → succeeded (warm agent)", fmt.Sprintf("%d of %d", bl.WarmSucceeded, bl.WarmTasks), fmtPcts(bl.WarmEndToEnd, true), "", ""},
		})
	}

	if len(r.Errors) > 0 {
		h("Errors")
		for _, e := range r.Errors {
			b.WriteString("- " + e + "\n")
		}
	}
	return b.String()
}

func fmtOutcome(o Outcome) string {
	s := fmt.Sprintf("%d/%d", o.Succeeded, o.Submitted)
	if o.Failed+o.Unfinished+o.Missing > 0 {
		s += fmt.Sprintf(" (%d failed, %d stuck, %d lost)", o.Failed, o.Unfinished, o.Missing)
	}
	return s
}

// runsOf returns the runs of a kind: bursts by agents then tasks, rates by rate.
func runsOf(r *Results, kind string) []RunResult {
	var out []RunResult
	for _, run := range r.Runs {
		if run.Kind == kind {
			out = append(out, run)
		}
	}
	slices.SortStableFunc(out, func(a, b RunResult) int {
		if kind == kindOpenLoop {
			return cmpFloat(a.TargetRate, b.TargetRate)
		}
		if a.Agents != b.Agents {
			return a.Agents - b.Agents
		}
		return a.Tasks - b.Tasks
	})
	return out
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
