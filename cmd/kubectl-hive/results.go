package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

func newResultsCommand(o *options) *cobra.Command {
	var (
		out   = newOutputFlags("")
		sc    scope
		limit int
	)
	cmd := &cobra.Command{
		Use:   "results [HIVE]",
		Short: "List finished tasks with their timings and results",
		Long: `List the finished tasks (Succeeded, Failed, Cancelled) of one hive or of the whole
namespace, newest last, with how long each waited in the queue and ran, and the start of
its result (or of its message when it did not succeed). -o json, yaml, name, jsonpath or
go-template prints the tasks whole.`,
		Example: `  kubectl hive results
  kubectl hive results echo --limit 20
  kubectl hive results -A -l submitted-by=ana -o wide
  kubectl hive results echo -o jsonpath='{.items[*].status.result}'`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: o.completeHive,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.validate(); err != nil {
				return err
			}
			if limit < 0 {
				return fmt.Errorf("--limit must be 0 (no limit) or more, not %d", limit)
			}
			hive := ""
			if len(args) == 1 {
				hive = args[0]
			}
			// The hive filters the tasks rather than naming one object: it goes with -A.
			sel, err := sc.parse("")
			if err != nil {
				return err
			}
			return runResults(cmd.Context(), o, out, hive, sc.allNamespaces, sel, limit)
		},
	}
	out.add(cmd, true, "a table")
	sc.add(cmd, "tasks")
	cmd.Flags().IntVar(&limit, "limit", 0, "Show only the newest N finished tasks; 0 shows all.")
	return cmd
}

func runResults(ctx context.Context, o *options, out *outputFlags, hive string, all bool, sel labels.Selector, limit int) error {
	c, ns, err := o.connect(all)
	if err != nil {
		return err
	}
	where := inNamespace(ns)
	opts := []client.ListOption{client.InNamespace(ns), client.MatchingLabelsSelector{Selector: sel}}
	if hive != "" {
		// The tasks of a deleted hive are still worth seeing: no check that it exists.
		opts = append(opts, client.MatchingFields{swarmv1alpha1.TaskFieldHive: hive})
		where = fmt.Sprintf("for hive %s %s", hive, where)
	}
	tasks := &swarmv1alpha1.TaskList{}
	if err := c.List(ctx, tasks, opts...); err != nil {
		return explain("listing tasks "+where, err)
	}
	finished := FinishedTasks(tasks.Items, limit)

	if !out.table() {
		p, err := out.printer()
		if err != nil {
			return err
		}
		return printList(p, o.streams.Out, finished)
	}
	if len(finished) == 0 {
		_, _ = fmt.Fprintf(o.streams.ErrOut, "No finished tasks %s.\n", where)
		return nil
	}
	now := o.now()
	t := &metav1.Table{ColumnDefinitions: []metav1.TableColumnDefinition{
		column("Name", false), column("Hive", false), column("Phase", false), column("Attempts", false),
		column("Queued", false), column("Ran", false), column("Age", false), column("Result/Message", false),
		column("Agent", true),
	}}
	for _, task := range finished {
		r := ResultRowOf(task, now)
		t.Rows = append(t.Rows, row(task, r.Name, r.Hive, string(r.Phase), r.Attempts, formatOptional(r.Queued), formatOptional(r.Ran),
			duration.HumanDuration(r.Age), r.Output, orDefault(task.Status.Agent, "-")))
	}
	return out.printTable(o.streams.Out, t, all)
}
