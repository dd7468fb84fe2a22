package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// table writes aligned columns the way kubectl does: upper-case headers, columns three
// spaces apart, no spaces at the end of a line.
type table struct {
	w   io.Writer
	buf bytes.Buffer
	tw  *tabwriter.Writer
}

func newTable(w io.Writer, headers ...string) *table {
	t := &table{w: w}
	t.tw = tabwriter.NewWriter(&t.buf, 0, 8, 3, ' ', 0)
	t.row(headers...)
	return t
}

func (t *table) row(cells ...string) {
	// A tab inside a cell would start a new column.
	for i, c := range cells {
		cells[i] = strings.ReplaceAll(c, "\t", " ")
	}
	_, _ = fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error {
	if err := t.tw.Flush(); err != nil {
		return fmt.Errorf("writing the table: %w", err)
	}
	// tabwriter pads a cell before an empty last one; the padding is noise for diff and
	// grep.
	var out strings.Builder
	for line := range strings.Lines(t.buf.String()) {
		out.WriteString(strings.TrimRight(line, " \n") + "\n")
	}
	if _, err := io.WriteString(t.w, out.String()); err != nil {
		return fmt.Errorf("writing the table: %w", err)
	}
	return nil
}

// printStructured writes v as JSON (indented as kubectl does) or YAML.
func printStructured(w io.Writer, format string, v any) error {
	var (
		out []byte
		err error
	)
	if format == outputYAML {
		out, err = yaml.Marshal(v)
	} else {
		out, err = json.MarshalIndent(v, "", "    ")
		out = append(out, '\n')
	}
	if err != nil {
		return fmt.Errorf("encoding the output as %s: %w", format, err)
	}
	if _, err := w.Write(out); err != nil {
		return fmt.Errorf("writing the output: %w", err)
	}
	return nil
}

// list is what kubectl prints for several objects: a v1 List.
type list struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Items      []any  `json:"items"`
}

// printTasks writes tasks as kubectl get -o json|yaml would: with their kind, without
// managed fields, one object alone or several in a List.
func printTasks(w io.Writer, format string, tasks []*swarmv1alpha1.Task, single bool) error {
	items := make([]any, 0, len(tasks))
	for _, t := range tasks {
		t = t.DeepCopy()
		// The client decodes into typed objects without their kind; a reader of the output
		// needs it.
		t.APIVersion = swarmv1alpha1.GroupVersion.String()
		t.Kind = "Task"
		t.ManagedFields = nil
		items = append(items, t)
	}
	if single && len(items) == 1 {
		return printStructured(w, format, items[0])
	}
	return printStructured(w, format, list{APIVersion: "v1", Kind: "List", Items: items})
}
