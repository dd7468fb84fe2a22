package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

func newResultsCommand(o *options) *cobra.Command {
	var (
		out   outputFlag
		limit int
	)
	cmd := &cobra.Command{
		Use:   "results [HIVE]",
		Short: "List finished tasks with their timings and results",
		Long: `List the finished tasks (Succeeded, Failed, Cancelled) of one hive or of the whole
namespace, newest last, with how long each waited in the queue and ran, and the start of
its result (or of its message when it did not succeed). -o json|yaml prints the tasks
whole.`,
		Example: `  kubectl hive results
  kubectl hive results echo --limit 20
  kubectl hive results echo -o json`,
		Args: cobra.MaximumNArgs(1),
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
			return runResults(cmd.Context(), o, hive, limit, out.format)
		},
	}
	out.add(cmd, "a table")
	cmd.Flags().IntVar(&limit, "limit", 0, "Show only the newest N finished tasks; 0 shows all.")
	return cmd
}

func runResults(ctx context.Context, o *options, hive string, limit int, format string) error {
	c, ns, err := o.connect()
	if err != nil {
		return err
	}
	opts := []client.ListOption{client.InNamespace(ns)}
	doing := fmt.Sprintf("listing tasks in namespace %q", ns)
	if hive != "" {
		// The tasks of a deleted hive are still worth seeing: no check that it exists.
		opts = append(opts, client.MatchingFields{swarmv1alpha1.TaskFieldHive: hive})
		doing = fmt.Sprintf("listing the tasks of hive %q in namespace %q", hive, ns)
	}
	tasks := &swarmv1alpha1.TaskList{}
	if err := c.List(ctx, tasks, opts...); err != nil {
		return explain(doing, err)
	}
	finished := FinishedTasks(tasks.Items, limit)

	if format != outputTable {
		return printTasks(o.streams.Out, format, finished, false)
	}
	if len(finished) == 0 {
		where := "namespace " + ns
		if hive != "" {
			where = fmt.Sprintf("hive %s in namespace %s", hive, ns)
		}
		_, _ = fmt.Fprintf(o.streams.ErrOut, "No finished tasks for %s.\n", where)
		return nil
	}
	return printResults(o.streams.Out, finished, o.now())
}

func printResults(w io.Writer, tasks []*swarmv1alpha1.Task, now time.Time) error {
	t := newTable(w, "NAME", "HIVE", "PHASE", "ATTEMPTS", "QUEUED", "RAN", "AGE", "RESULT/MESSAGE")
	for _, task := range tasks {
		r := ResultRowOf(task, now)
		t.row(r.Name, r.Hive, string(r.Phase), strconv.Itoa(int(r.Attempts)), formatOptional(r.Queued), formatOptional(r.Ran),
			duration.HumanDuration(r.Age), r.Output)
	}
	return t.flush()
}
