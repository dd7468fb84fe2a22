package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

func newQueueCommand(o *options) *cobra.Command {
	return newViewCommand(o, &cobra.Command{
		Use:   "queue [HIVE]",
		Short: "List the queued tasks of hives in the order they will be dispatched",
		Long: `List the tasks waiting in a hive's queue (or in the queue of every hive of the
namespace) in the order the dispatcher binds them: higher priority first, then older
first, then by name. Tasks that cannot be bound yet (retry backoff, unfinished
dependencies, capabilities the hive lacks) follow, with a note saying why. -l selects
among the queued tasks by their labels; positions stay those in the whole queue. With -o
json, yaml, name, jsonpath or go-template it prints the queued Tasks, in that order. Reads
only: it changes nothing.`,
		Example: `  kubectl hive queue echo
  kubectl hive queue echo -l submitted-by=ana --watch
  kubectl hive queue -A
  kubectl hive queue echo -o name`,
	}, "a table", "the queued tasks", "After printing, print again each time the queue changes, until interrupted.",
		func(ctx context.Context, v *viewFlags) error { return runQueue(ctx, o, v) })
}

func runQueue(ctx context.Context, o *options, v *viewFlags) error {
	out, name, all, sel, watching := v.out, v.name, v.sc.allNamespaces, v.sel, v.watching
	c, ns, err := o.connect(all)
	if err != nil {
		return err
	}
	where := inNamespace(ns)
	hives, tasks := &swarmv1alpha1.HiveList{}, &swarmv1alpha1.TaskList{}
	hiveOpts := []client.ListOption{client.InNamespace(ns)}
	if name != "" {
		hiveOpts = append(hiveOpts, client.MatchingFields{"metadata.name": name})
	}
	// Every task of the namespace: queued tasks may depend on other hives' tasks.
	sources := []source{
		{hives, &swarmv1alpha1.Hive{}, hiveOpts, "listing hives " + where},
		{tasks, &swarmv1alpha1.Task{}, []client.ListOption{client.InNamespace(ns)}, "listing tasks " + where},
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
		rows := queues(hives.Items, tasks.Items, sel, o.now())
		if p != nil {
			queued := make([]*swarmv1alpha1.Task, 0, len(rows))
			for _, r := range rows {
				queued = append(queued, r.Task)
			}
			return printList(p, w, queued)
		}
		if len(rows) == 0 {
			of := where
			if name != "" {
				of = fmt.Sprintf("for hive %s in namespace %s", name, ns)
			}
			_, _ = fmt.Fprintf(errOut, "No queued tasks %s.\n", of)
			return nil
		}
		return printQueue(w, out, rows, name == "", all)
	})
}

// queues returns the queue of each hive, hive after hive, keeping the tasks sel selects.
// Dependencies are looked up among the tasks of the hive's namespace.
func queues(hives []swarmv1alpha1.Hive, tasks []swarmv1alpha1.Task, sel labels.Selector, now time.Time) []QueueRow {
	byNamespace := map[string][]swarmv1alpha1.Task{}
	for _, t := range tasks {
		byNamespace[t.Namespace] = append(byNamespace[t.Namespace], t)
	}
	known := map[string]map[string]*swarmv1alpha1.Task{}
	for ns, ts := range byNamespace {
		known[ns] = make(map[string]*swarmv1alpha1.Task, len(ts))
		for i := range ts {
			known[ns][ts[i].Name] = &ts[i]
		}
	}
	var rows []QueueRow
	for i := range hives {
		h := &hives[i]
		for _, r := range QueueRows(h, byNamespace[h.Namespace], known[h.Namespace], now) {
			if sel.Matches(labels.Set(r.Task.Labels)) {
				rows = append(rows, r)
			}
		}
	}
	return rows
}

// printQueue prints the rows; withHive adds the hive of each, for the queues of several.
func printQueue(w io.Writer, out *outputFlags, rows []QueueRow, withHive, all bool) error {
	t := &metav1.Table{}
	if withHive {
		t.ColumnDefinitions = append(t.ColumnDefinitions, column("Hive", false))
	}
	t.ColumnDefinitions = append(t.ColumnDefinitions, column("Position", false), column("Name", false), column("Priority", false),
		column("Waiting", false), column("Note", false), column("Attempts", true), column("Requires", true))
	for _, r := range rows {
		pos := "-"
		if r.Position > 0 {
			pos = fmt.Sprint(r.Position)
		}
		cells := []any{pos, r.Name, r.Priority, FormatDuration(r.Waiting), r.Note, r.Task.Status.Attempt,
			orDefault(strings.Join(r.Task.Spec.RequiredCapabilities, ","), "-")}
		if withHive {
			cells = append([]any{r.Task.Spec.Hive}, cells...)
		}
		t.Rows = append(t.Rows, row(r.Task, cells...))
	}
	return out.printTable(w, t, all)
}
