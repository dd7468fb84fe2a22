package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

func newStatusCommand(o *options) *cobra.Command {
	return newViewCommand(o, &cobra.Command{
		Use:   "status [HIVE]",
		Short: "Show agents by state, the queue, the rollout and problems of hives",
		Long: `Show, for one hive or every hive in the namespace: the agents by state (starting,
idle, busy, draining), ready of desired agents, the queue (pending, blocked, running
tasks), the rollout between revisions, and conditions that are not healthy. With -o json,
yaml, name, jsonpath or go-template it prints the Hives themselves, as kubectl get does;
with --watch it prints again each time the hives, their agents or their tasks change.`,
		Example: `  kubectl hive status
  kubectl hive status -A -l team=search
  kubectl hive status echo -n agents --watch
  kubectl hive status echo -o yaml`,
	}, "a table (one hive: its details and agents)", "hives", "After printing, print again each time something changes, until interrupted.",
		func(ctx context.Context, v *viewFlags) error { return runStatus(ctx, o, v) })
}

func runStatus(ctx context.Context, o *options, v *viewFlags) error {
	out, name, all, sel, watching := v.out, v.name, v.sc.allNamespaces, v.sel, v.watching
	c, ns, err := o.connect(all)
	if err != nil {
		return err
	}
	where := inNamespace(ns)
	var (
		hives    = &swarmv1alpha1.HiveList{}
		pods     = &corev1.PodList{}
		tasks    = &swarmv1alpha1.TaskList{}
		hiveOpts = []client.ListOption{client.InNamespace(ns), client.MatchingLabelsSelector{Selector: sel}}
		podOpts  = []client.ListOption{client.InNamespace(ns), client.HasLabels{swarmv1alpha1.LabelHive}}
		taskOpts = []client.ListOption{client.InNamespace(ns)}
	)
	if name != "" {
		hiveOpts = append(hiveOpts, client.MatchingFields{"metadata.name": name})
		podOpts = append(podOpts, client.MatchingLabels{swarmv1alpha1.LabelHive: name})
		taskOpts = append(taskOpts, client.MatchingFields{swarmv1alpha1.TaskFieldHive: name})
	}
	sources := []source{
		{hives, &swarmv1alpha1.Hive{}, hiveOpts, "listing hives " + where},
		{pods, &corev1.Pod{}, podOpts, "listing the agent pods " + where},
		{tasks, &swarmv1alpha1.Task{}, taskOpts, "listing tasks " + where},
	}
	var p printers.ResourcePrinter
	if !out.table() {
		if p, err = out.printer(); err != nil {
			return err
		}
	}
	return view(ctx, c, o.streams, watching, out.table(), sources, func(w, errOut io.Writer) error {
		if name != "" && len(hives.Items) == 0 {
			return hiveNotFound(name, ns)
		}
		switch {
		case p != nil && name != "":
			return printObject(p, w, &hives.Items[0])
		case p != nil:
			return printList(p, w, pointers(hives.Items))
		case len(hives.Items) == 0:
			_, _ = fmt.Fprintf(errOut, "No hives found %s.\n", where)
			return nil
		}
		summaries := SummariseHives(hives.Items, pods.Items, tasks.Items)
		if name != "" {
			return printHiveDetail(w, out, &summaries[0], o.now())
		}
		return printHiveTable(w, out, hives.Items, summaries, all)
	})
}

// inNamespace says where a command looks, for its messages.
func inNamespace(ns string) string {
	if ns == metav1.NamespaceAll {
		return "in any namespace"
	}
	return fmt.Sprintf("in namespace %s", ns)
}

// printHiveTable prints one line per hive, then the problems of each hive.
func printHiveTable(w io.Writer, out *outputFlags, hives []swarmv1alpha1.Hive, summaries []HiveSummary, all bool) error {
	byName := map[types.NamespacedName]*swarmv1alpha1.Hive{}
	for i := range hives {
		byName[client.ObjectKeyFromObject(&hives[i])] = &hives[i]
	}
	t := &metav1.Table{ColumnDefinitions: []metav1.TableColumnDefinition{
		column("Name", false), column("Ready", false), column("Starting", false), column("Idle", false),
		column("Busy", false), column("Draining", false), column("Stopping", true), column("Pending", false),
		column("Blocked", false), column("Running", false), column("Revision", false), column("Up-to-date", false),
		column("Problems", false), column("Capabilities", true),
	}}
	for _, s := range summaries {
		var problems []string
		for _, p := range s.Problems {
			problems = append(problems, p.Label())
		}
		h := byName[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}]
		t.Rows = append(t.Rows, row(h, s.Name, fmt.Sprintf("%d/%d", s.Ready, s.Desired),
			s.Agents.Starting, s.Agents.Idle, s.Agents.Busy, s.Agents.Draining, s.Agents.Stopping,
			s.Queue.Pending, s.Queue.Blocked, s.Queue.Running,
			revisionText(s.Rollout), fmt.Sprintf("%d/%d", s.Rollout.UpdatedReplicas, s.Rollout.DesiredReplicas),
			orDefault(strings.Join(problems, ","), "-"), orDefault(strings.Join(h.Spec.Agent.Capabilities, ","), "-")))
	}
	if err := out.printTable(w, t, all); err != nil {
		return err
	}
	first := true
	for _, s := range summaries {
		for _, p := range s.Problems {
			if first {
				_, _ = fmt.Fprintln(w)
				first = false
			}
			subject := "hive/" + s.Name
			if all {
				subject += " in namespace " + s.Namespace
			}
			_, _ = fmt.Fprintf(w, "%s: %s\n", subject, problemText(p))
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
func printHiveDetail(w io.Writer, out *outputFlags, s *HiveSummary, now time.Time) error {
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
	t := &metav1.Table{ColumnDefinitions: []metav1.TableColumnDefinition{
		column("Agent", false), column("State", false), column("Tasks", false), column("Ready", false),
		column("Revision", false), column("Age", false), column("IP", true), column("Node", true),
	}}
	for _, a := range s.Pods {
		t.Rows = append(t.Rows, metav1.TableRow{Cells: []any{a.Name, a.State, a.Tasks, a.Ready, orDefault(a.Revision, "<none>"),
			duration.HumanDuration(now.Sub(a.Created)), orDefault(a.IP, "<none>"), orDefault(a.Node, "<none>")}})
	}
	return out.printTable(w, t, false)
}
