package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// source is one kind of object a view is computed from: list receives them, item is one
// of them (for the informer), opts select them and doing says what reading them is.
type source struct {
	list  client.ObjectList
	item  client.Object
	opts  []client.ListOption
	doing string
}

// showFunc computes a view from the lists of its sources and prints it to out, with
// notes (such as "no hives found") to errOut.
type showFunc func(out, errOut io.Writer) error

// view lists the sources and shows the view. With watch it then shows it again each time
// the sources change, until ctx ends: informers keep the lists, so a change costs no
// request. separate puts a blank line between two views, for tables.
func view(ctx context.Context, c client.WithWatch, streams genericiooptions.IOStreams, watching, separate bool, sources []source, show showFunc) error {
	if !watching {
		for _, s := range sources {
			if err := c.List(ctx, s.list, s.opts...); err != nil {
				return explain(s.doing, err)
			}
		}
		return show(streams.Out, streams.ErrOut)
	}

	parent := ctx
	ctx, fail := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	// The informers stop when ctx does: wait for them, so none outlives the command.
	defer wg.Wait()
	defer fail(nil)

	// changed holds at most one change: a burst of events shows the view once.
	changed := make(chan struct{}, 1)
	notify := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(_, _ any) { notify() },
		DeleteFunc: func(any) { notify() },
	}
	stores := make([]toolscache.Store, 0, len(sources))
	synced := make([]toolscache.InformerSynced, 0, len(sources))
	for _, s := range sources {
		store, informer := toolscache.NewInformerWithOptions(toolscache.InformerOptions{
			ListerWatcher: listWatch(c, s.list, fail, s.doing, s.opts...),
			ObjectType:    s.item,
			Handler:       handler,
		})
		stores, synced = append(stores, store), append(synced, informer.HasSynced)
		wg.Go(func() { informer.RunWithContext(ctx) })
	}
	if !toolscache.WaitForCacheSync(ctx.Done(), synced...) {
		return watchEnded(parent, ctx)
	}

	var last string
	for {
		for i, s := range sources {
			if err := meta.SetList(s.list, toObjects(stores[i].List())); err != nil {
				return fmt.Errorf("reading the %s watched: %w", s.doing, err)
			}
		}
		var out, errOut bytes.Buffer
		if err := show(&out, &errOut); err != nil {
			return err
		}
		// A change the view does not show, such as a pod's IP, prints nothing.
		if shown := out.String() + "\x00" + errOut.String(); shown != last {
			if last != "" && separate {
				_, _ = fmt.Fprintln(streams.Out)
			}
			if _, err := io.Copy(streams.Out, &out); err != nil {
				return fmt.Errorf("writing the output: %w", err)
			}
			_, _ = io.Copy(streams.ErrOut, &errOut)
			last = shown
		}
		select {
		case <-ctx.Done():
			return watchEnded(parent, ctx)
		case <-changed:
		}
	}
}

// watchEnded is how a watch on ctx, made from parent, ends: without an error when parent
// ended (an interrupt is how a person stops a watch), else with the error that failed it.
func watchEnded(parent, ctx context.Context) error {
	if parent.Err() != nil {
		return nil
	}
	return context.Cause(ctx) //nolint:wrapcheck // the cause is an error explain already wrapped
}

func toObjects(items []any) []runtime.Object {
	out := make([]runtime.Object, 0, len(items))
	for _, it := range items {
		out = append(out, it.(runtime.Object))
	}
	return out
}

// listWatch lists and watches, for an informer, the objects of list's type that opts
// select. Informers retry a failed call for ever; an error no retry fixes (forbidden,
// unauthorised, no CRD) goes to fail instead, explained with doing, so the command stops
// and says what to do.
func listWatch(c client.WithWatch, list client.ObjectList, fail func(error), doing string, opts ...client.ListOption) *toolscache.ListWatch {
	// The informer's options (resource version, timeout) come last, with the selectors.
	with := func(raw *metav1.ListOptions) []client.ListOption {
		return append(slices.Clone(opts), &client.ListOptions{Raw: raw})
	}
	check := func(err error) error {
		if err != nil && needsAction(err) {
			fail(explain(doing, err))
		}
		return err
	}
	return &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, raw metav1.ListOptions) (runtime.Object, error) {
			l := list.DeepCopyObject().(client.ObjectList)
			return l, check(c.List(ctx, l, with(&raw)...))
		},
		WatchFuncWithContext: func(ctx context.Context, raw metav1.ListOptions) (watch.Interface, error) {
			w, err := c.Watch(ctx, list.DeepCopyObject().(client.ObjectList), with(&raw)...)
			return w, check(err)
		},
	}
}
