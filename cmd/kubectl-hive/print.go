package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// outputFlags are -o and, for a command that prints tables, --no-headers: without -o or
// with -o wide a table, else a printer of cli-runtime (json, yaml, name, jsonpath,
// go-template, ...) for the objects, as kubectl get prints them.
type outputFlags struct {
	print     *genericclioptions.PrintFlags
	noHeaders bool
	// tables records whether the command prints a table without -o.
	tables bool
}

// newOutputFlags returns the flags; operation is what -o name without -o says was done
// ("created"), for commands that print no table.
func newOutputFlags(operation string) *outputFlags {
	// The type setter gives the objects the apiVersion and kind the client decoded them
	// without, from the plugin's scheme: client-go's knows neither Hives nor Tasks.
	return &outputFlags{print: genericclioptions.NewPrintFlags(operation).WithTypeSetter(scheme)}
}

// add adds the flags to cmd; tables says whether cmd prints a table without -o, and
// without what it prints else.
func (f *outputFlags) add(cmd *cobra.Command, tables bool, without string) {
	f.tables = tables
	f.print.AddFlags(cmd)
	formats := f.formats()
	if tables {
		cmd.Flags().BoolVar(&f.noHeaders, "no-headers", false, "Print tables without their header line.")
	}
	cmd.Flags().Lookup("output").Usage = fmt.Sprintf("Output format. One of: (%s). Without it, %s.", strings.Join(formats, ", "), without)
	// AddFlags defined the flag just above: registering can only fail on a missing flag.
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(formats, cobra.ShellCompDirectiveNoFileComp))
}

func (f *outputFlags) formats() []string {
	if f.tables {
		return append([]string{"wide"}, f.print.AllowedFormats()...)
	}
	return f.print.AllowedFormats()
}

// table reports whether the output is a table. A --template without -o means
// -o go-template, as in kubectl.
func (f *outputFlags) table() bool {
	format := *f.print.OutputFormat
	template := f.print.TemplatePrinterFlags.TemplateArgument
	return f.tables && (format == "wide" || format == "" && (template == nil || *template == ""))
}

// printer returns the printer for objects that -o asks for. Call it only when the output
// is not a table.
func (f *outputFlags) printer() (printers.ResourcePrinter, error) {
	p, err := f.print.ToPrinter()
	if genericclioptions.IsNoCompatiblePrinterError(err) {
		return nil, fmt.Errorf("unsupported output format %q: use one of %s", *f.print.OutputFormat, strings.Join(f.formats(), ", "))
	}
	if err != nil {
		return nil, fmt.Errorf("-o %s: %w", *f.print.OutputFormat, err)
	}
	return p, nil
}

// validate checks -o before anything is read or written, so a typo costs nothing.
func (f *outputFlags) validate() error {
	if f.table() || !f.tables && *f.print.OutputFormat == "" {
		return nil
	}
	_, err := f.printer()
	return err
}

// printTable prints t the way kubectl get prints tables; withNamespace adds a NAMESPACE
// column first, taken from each row's object.
func (f *outputFlags) printTable(w io.Writer, t *metav1.Table, withNamespace bool) error {
	p := printers.NewTablePrinter(printers.PrintOptions{
		Wide:          *f.print.OutputFormat == "wide",
		WithNamespace: withNamespace,
		NoHeaders:     f.noHeaders,
	})
	if err := p.PrintObj(t, w); err != nil {
		return fmt.Errorf("writing the table: %w", err)
	}
	return nil
}

// column is a table column; wide ones show only with -o wide.
func column(name string, wide bool) metav1.TableColumnDefinition {
	c := metav1.TableColumnDefinition{Name: name, Type: "string"}
	if wide {
		c.Priority = 1
	}
	return c
}

// row is a table row for obj, which gives the NAMESPACE column its value.
func row(obj runtime.Object, cells ...any) metav1.TableRow {
	return metav1.TableRow{Cells: cells, Object: runtime.RawExtension{Object: obj}}
}

// printObject prints one object with p.
func printObject(p printers.ResourcePrinter, w io.Writer, obj runtime.Object) error {
	if err := p.PrintObj(obj, w); err != nil {
		return fmt.Errorf("printing the output: %w", err)
	}
	return nil
}

// printList prints objs with p as kubectl get prints several objects: in a v1 List, each
// item with its apiVersion and kind. The list is unstructured because that is the list
// -o name accepts.
func printList[T client.Object](p printers.ResourcePrinter, w io.Writer, objs []T) error {
	list := &unstructured.UnstructuredList{Object: map[string]any{"apiVersion": "v1", "kind": "List"}}
	for _, obj := range objs {
		gvk, err := apiutil.GVKForObject(obj, scheme)
		if err != nil {
			return fmt.Errorf("printing %s: %w", obj.GetName(), err)
		}
		content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			return fmt.Errorf("printing %s: %w", obj.GetName(), err)
		}
		item := unstructured.Unstructured{Object: content}
		item.SetGroupVersionKind(gvk)
		list.Items = append(list.Items, item)
	}
	return printObject(p, w, list)
}

// pointers returns pointers to the items of a list, the way the printers take them.
func pointers[T any](items []T) []*T {
	out := make([]*T, 0, len(items))
	for i := range items {
		out = append(out, &items[i])
	}
	return out
}
