package main

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

func newQueueCommand(o *options) *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "queue HIVE",
		Short: "List a hive's queued tasks in the order they will be dispatched",
		Long: `List the tasks waiting in a hive's queue in the order the dispatcher binds them:
higher priority first, then older first, then by name. Tasks that cannot be bound yet
(retry backoff, unfinished dependencies, capabilities the hive lacks) follow, with a note
saying why. Reads only: it changes nothing.`,
		Example: `  kubectl hive queue echo
  kubectl hive queue echo -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.validate(); err != nil {
				return err
			}
			return runQueue(cmd.Context(), o, args[0], out.format)
		},
	}
	out.add(cmd, "a table")
	return cmd
}

// queueOutput is what queue prints with -o json|yaml.
type queueOutput struct {
	Hive      string     `json:"hive"`
	Namespace string     `json:"namespace"`
	Items     []QueueRow `json:"items"`
}

func runQueue(ctx context.Context, o *options, name, format string) error {
	c, ns, err := o.connect()
	if err != nil {
		return err
	}
	hive, err := getHive(ctx, c, ns, name)
	if err != nil {
		return err
	}
	tasks := &swarmv1alpha1.TaskList{}
	if err := c.List(ctx, tasks, client.InNamespace(ns), client.MatchingFields{swarmv1alpha1.TaskFieldHive: name}); err != nil {
		return explain(fmt.Sprintf("listing the tasks of hive %q in namespace %q", name, ns), err)
	}
	known, err := dependencyIndex(ctx, c, ns, tasks.Items)
	if err != nil {
		return err
	}
	rows := QueueRows(hive, tasks.Items, known, o.now())

	if format != outputTable {
		return printStructured(o.streams.Out, format, queueOutput{Hive: name, Namespace: ns, Items: rows})
	}
	if len(rows) == 0 {
		_, _ = fmt.Fprintf(o.streams.ErrOut, "No queued tasks for hive %s in namespace %s.\n", name, ns)
		return nil
	}
	return printQueue(o.streams.Out, rows)
}

// dependencyIndex returns the tasks queued tasks may depend on, by name. Dependencies may
// belong to other hives: only when some are not among the hive's own tasks is the whole
// namespace listed, once, rather than each one read.
func dependencyIndex(ctx context.Context, c client.Client, ns string, tasks []swarmv1alpha1.Task) (map[string]*swarmv1alpha1.Task, error) {
	known := make(map[string]*swarmv1alpha1.Task, len(tasks))
	for i := range tasks {
		known[tasks[i].Name] = &tasks[i]
	}
	missing := false
	for i := range tasks {
		for _, d := range tasks[i].Spec.DependsOn {
			if known[d] == nil {
				missing = true
			}
		}
	}
	if !missing {
		return known, nil
	}
	all := &swarmv1alpha1.TaskList{}
	if err := c.List(ctx, all, client.InNamespace(ns)); err != nil {
		return nil, explain(fmt.Sprintf("listing the tasks of namespace %q to look up dependencies", ns), err)
	}
	for i := range all.Items {
		if known[all.Items[i].Name] == nil {
			known[all.Items[i].Name] = &all.Items[i]
		}
	}
	return known, nil
}

func printQueue(w io.Writer, rows []QueueRow) error {
	t := newTable(w, "POSITION", "NAME", "PRIORITY", "WAITING", "NOTE")
	for _, r := range rows {
		pos := "-"
		if r.Position > 0 {
			pos = strconv.Itoa(r.Position)
		}
		t.row(pos, r.Name, strconv.Itoa(int(r.Priority)), FormatDuration(r.Waiting), r.Note)
	}
	return t.flush()
}
