package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

func newStatusCommand(o *options) *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "status [HIVE]",
		Short: "Show agents by state, the queue, the rollout and problems of hives",
		Long: `Show, for one hive or every hive in the namespace: the agents by state (starting,
idle, busy, draining), ready of desired agents, the queue (pending, blocked, running
tasks), the rollout between revisions, and conditions that are not healthy.`,
		Example: `  kubectl hive status
  kubectl hive status echo -n agents
  kubectl hive status echo -o yaml`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.validate(); err != nil {
				return err
			}
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			return runStatus(cmd.Context(), o, name, out.format)
		},
	}
	out.add(cmd, "a table")
	return cmd
}

func runStatus(ctx context.Context, o *options, name, format string) error {
	c, ns, err := o.connect()
	if err != nil {
		return err
	}
	var (
		hives    []swarmv1alpha1.Hive
		podOpts  = []client.ListOption{client.InNamespace(ns)}
		taskOpts = []client.ListOption{client.InNamespace(ns)}
	)
	if name != "" {
		h, err := getHive(ctx, c, ns, name)
		if err != nil {
			return err
		}
		hives = []swarmv1alpha1.Hive{*h}
		podOpts = append(podOpts, client.MatchingLabels{swarmv1alpha1.LabelHive: name})
		taskOpts = append(taskOpts, client.MatchingFields{swarmv1alpha1.TaskFieldHive: name})
	} else {
		list := &swarmv1alpha1.HiveList{}
		if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
			return explain(fmt.Sprintf("listing hives in namespace %q", ns), err)
		}
		if len(list.Items) == 0 && format == outputTable {
			_, _ = fmt.Fprintf(o.streams.ErrOut, "No hives found in namespace %s.\n", ns)
			return nil
		}
		hives = list.Items
		podOpts = append(podOpts, client.HasLabels{swarmv1alpha1.LabelHive})
	}

	pods := &corev1.PodList{}
	if err := c.List(ctx, pods, podOpts...); err != nil {
		return explain(fmt.Sprintf("listing the agent pods in namespace %q", ns), err)
	}
	tasks := &swarmv1alpha1.TaskList{}
	if err := c.List(ctx, tasks, taskOpts...); err != nil {
		return explain(fmt.Sprintf("listing tasks in namespace %q", ns), err)
	}
	summaries := SummariseHives(hives, pods.Items, tasks.Items)

	switch {
	case format != outputTable && name != "":
		return printStructured(o.streams.Out, format, summaries[0])
	case format != outputTable:
		return printStructured(o.streams.Out, format, struct {
			Items []HiveSummary `json:"items"`
		}{summaries})
	case name != "":
		return printHiveDetail(o.streams.Out, &summaries[0], o.now())
	default:
		return printHiveTable(o.streams.Out, summaries)
	}
}

// printHiveTable prints one line per hive, then the problems of each hive.
func printHiveTable(w io.Writer, summaries []HiveSummary) error {
	t := newTable(w, "NAME", "READY", "STARTING", "IDLE", "BUSY", "DRAINING", "PENDING", "BLOCKED", "RUNNING", "REVISION", "UP-TO-DATE", "PROBLEMS")
	for _, s := range summaries {
		var labels []string
		for _, p := range s.Problems {
			labels = append(labels, p.Label())
		}
		t.row(s.Name,
			fmt.Sprintf("%d/%d", s.Ready, s.Desired),
			strconv.Itoa(s.Agents.Starting), strconv.Itoa(s.Agents.Idle), strconv.Itoa(s.Agents.Busy), strconv.Itoa(s.Agents.Draining),
			strconv.Itoa(s.Queue.Pending), strconv.Itoa(s.Queue.Blocked), strconv.Itoa(s.Queue.Running),
			revisionText(s.Rollout),
			fmt.Sprintf("%d/%d", s.Rollout.UpdatedReplicas, s.Rollout.DesiredReplicas),
			orDefault(strings.Join(labels, ","), "-"))
	}
	if err := t.flush(); err != nil {
		return err
	}
	first := true
	for _, s := range summaries {
		for _, p := range s.Problems {
			if first {
				_, _ = fmt.Fprintln(w)
				first = false
			}
			_, _ = fmt.Fprintf(w, "hive/%s: %s\n", s.Name, problemText(p))
		}
	}
	return nil
}

// revisionText is the current revision, with the one being rolled out to.
func revisionText(r RolloutSummary) string {
	if r.InProgress() {
		return orDefault(r.CurrentRevision, "<none>") + "->" + r.UpdateRevision
	}
	return orDefault(r.CurrentRevision, "<none>")
}

func problemText(p Problem) string {
	s := p.Label()
	if p.Reason != "" {
		s += " (" + p.Reason + ")"
	}
	if p.Message != "" {
		s += ": " + p.Message
	}
	return s
}

// printHiveDetail prints everything status knows about one hive, then its agents.
func printHiveDetail(w io.Writer, s *HiveSummary, now time.Time) error {
	var b strings.Builder
	line := func(label, format string, args ...any) {
		_, _ = fmt.Fprintf(&b, "%-11s %s\n", label, fmt.Sprintf(format, args...))
	}
	line("Hive:", "%s", s.Name)
	line("Namespace:", "%s", s.Namespace)
	agents := fmt.Sprintf("%d/%d ready; %d starting, %d idle, %d busy, %d draining",
		s.Ready, s.Desired, s.Agents.Starting, s.Agents.Idle, s.Agents.Busy, s.Agents.Draining)
	if s.Agents.Stopping > 0 {
		agents += fmt.Sprintf(", %d stopping", s.Agents.Stopping)
	}
	line("Agents:", "%s", agents)
	line("Queue:", "%d pending, %d blocked, %d running", s.Queue.Pending, s.Queue.Blocked, s.Queue.Running)
	r := s.Rollout
	line("Revision:", "%s", orDefault(r.CurrentRevision, "<none>"))
	if r.InProgress() {
		line("Rollout:", "to %s: %d of %d agents updated", r.UpdateRevision, r.UpdatedReplicas, r.DesiredReplicas)
	} else {
		line("Rollout:", "complete: %d of %d agents updated", r.UpdatedReplicas, r.DesiredReplicas)
	}
	if r.Message != "" {
		state := "done"
		if r.Progressing {
			state = "in progress"
		}
		line("Progress:", "%s (%s): %s", state, r.Reason, r.Message)
	}
	if len(s.Problems) == 0 {
		line("Problems:", "none")
	}
	for i, p := range s.Problems {
		label := ""
		if i == 0 {
			label = "Problems:"
		}
		line(label, "%s", problemText(p))
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("writing the output: %w", err)
	}
	if len(s.Pods) == 0 {
		_, _ = fmt.Fprintln(w, "\nNo agent pods.")
		return nil
	}
	_, _ = fmt.Fprintln(w)
	t := newTable(w, "AGENT", "STATE", "TASKS", "READY", "REVISION", "AGE")
	for _, a := range s.Pods {
		t.row(a.Name, a.State, strconv.Itoa(a.Tasks), strconv.FormatBool(a.Ready), orDefault(a.Revision, "<none>"),
			duration.HumanDuration(now.Sub(a.Created)))
	}
	return t.flush()
}
