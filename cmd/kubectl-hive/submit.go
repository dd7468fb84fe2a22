package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// submitFlags is the command line of submit.
type submitFlags struct {
	input          string
	file           string
	priority       int32
	name           string
	attemptTimeout time.Duration
	maxRetries     int32
	wait           bool
	timeout        time.Duration
	dryRun         string
	out            *outputFlags

	// set records which optional flags were given, to leave the others to the schema's
	// defaults.
	inputSet, attemptTimeoutSet, maxRetriesSet, timeoutSet bool
}

// The values of --dry-run, as in kubectl.
const (
	dryRunNone   = "none"
	dryRunClient = "client"
	dryRunServer = "server"
)

func newSubmitCommand(o *options) *cobra.Command {
	f := &submitFlags{out: newOutputFlags("created")}
	cmd := &cobra.Command{
		Use:   "submit HIVE (--input TEXT | -f FILE)",
		Short: "Create a task for a hive, and optionally wait for its result",
		Long: `Create a Task for a hive and print its name. With --wait, watch it until it finishes,
showing its progress on stderr, then print its result on stdout and exit 0; a task that
failed or was cancelled prints its message and exits 1, and giving up after --timeout
exits 2 (the task keeps running). -f - reads the input from stdin. --dry-run=client
prints the task without sending it, --dry-run=server has the API server check and
default it without storing it.`,
		Example: `  kubectl hive submit echo --input '{"prompt": "hello"}'
  kubectl hive submit echo -f prompt.json --priority 10 --attempt-timeout 2m --wait --timeout 5m
  echo hello | kubectl hive submit echo -f - --wait
  kubectl hive submit echo --input hello --dry-run=client -o yaml`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeHive,
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			f.inputSet, f.attemptTimeoutSet = fl.Changed("input"), fl.Changed("attempt-timeout")
			f.maxRetriesSet, f.timeoutSet = fl.Changed("max-retries"), fl.Changed("timeout") || fl.Changed("wait-timeout")
			return runSubmit(cmd.Context(), o, args[0], f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.input, "input", "", "The task's input, as is.")
	fl.StringVarP(&f.file, "filename", "f", "", "Read the task's input from this file; - reads stdin.")
	fl.Int32Var(&f.priority, "priority", 0, "The task's priority, from -1000 to 1000: higher runs first.")
	fl.StringVar(&f.name, "name", "", "The task's name. Without it, a name is generated from the hive's: <hive>-xxxxx.")
	fl.DurationVar(&f.attemptTimeout, "attempt-timeout", 0, "How long one attempt of the task may run (spec.timeout), such as 30s or 10m. Without it, 10m.")
	fl.Int32Var(&f.maxRetries, "max-retries", 0, "How many more attempts the task gets after a failed one. Without it, 3.")
	fl.BoolVar(&f.wait, "wait", false, "Wait for the task to finish and print its result.")
	fl.DurationVar(&f.timeout, "timeout", 0, "With --wait, give up waiting after this long (exit code 2; the task keeps going); 0 waits until the task finishes.")
	fl.DurationVar(&f.timeout, "wait-timeout", 0, "The former name of --timeout.")
	// MarkDeprecated fails only for a flag that does not exist.
	_ = fl.MarkDeprecated("wait-timeout", "use --timeout, which now bounds the wait; --attempt-timeout bounds each attempt of the task")
	// pflag writes the deprecation notice to this; cobra would copy it to stdout, among the
	// results scripts read.
	fl.SetOutput(o.streams.ErrOut)
	fl.StringVar(&f.dryRun, "dry-run", dryRunNone, `"client" prints the task without sending it; "server" has the API server check and default it without storing it; "none" creates it.`)
	_ = cmd.RegisterFlagCompletionFunc("dry-run", cobra.FixedCompletions([]string{dryRunNone, dryRunClient, dryRunServer}, cobra.ShellCompDirectiveNoFileComp))
	f.out.add(cmd, false, "the task's name, or with --wait its result")
	return cmd
}

func runSubmit(ctx context.Context, o *options, hive string, f *submitFlags) error {
	if err := f.validate(); err != nil {
		return err
	}
	input, err := f.readInput(o.streams.In)
	if err != nil {
		return err
	}
	ns, err := o.namespace()
	if err != nil {
		return err
	}
	task := f.task(ns, hive, input)
	if f.dryRun == dryRunClient {
		// Nothing is sent, not even to check the hive: this works without a cluster.
		return f.print(o.streams.Out, task)
	}
	c, ns, err := o.connect(false)
	if err != nil {
		return err
	}
	// A task for a hive that does not exist would wait for it, most likely for ever after a
	// typo: refuse it here, with the way to find the right name.
	if _, err := getHive(ctx, c, ns, hive); err != nil {
		return err
	}
	var opts []client.CreateOption
	if f.dryRun == dryRunServer {
		opts = append(opts, client.DryRunAll)
	}
	if err := c.Create(ctx, task, opts...); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("task %q already exists in namespace %q: choose another --name, or leave --name out for a generated one", f.name, ns)
		}
		return explain(fmt.Sprintf("creating a task for hive %q in namespace %q", hive, ns), err)
	}
	if !f.wait {
		return f.print(o.streams.Out, task)
	}
	return waitAndReport(ctx, o, c, task, f)
}

// print prints the task as -o asks; without -o its name, or for a dry run what kubectl
// prints for one.
func (f *submitFlags) print(w io.Writer, task *swarmv1alpha1.Task) error {
	if *f.out.print.OutputFormat == "" && f.dryRun == dryRunNone {
		_, err := fmt.Fprintln(w, task.Name)
		return wrapWrite(err)
	}
	p, err := f.out.printer()
	if err != nil {
		return err
	}
	return printObject(p, w, task)
}

func (f *submitFlags) validate() error {
	if err := f.out.validate(); err != nil {
		return err
	}
	switch f.dryRun {
	case dryRunNone:
	case dryRunClient:
		_ = f.out.print.Complete("%s (dry run)")
	case dryRunServer:
		_ = f.out.print.Complete("%s (server dry run)")
	default:
		return fmt.Errorf("--dry-run must be none, client or server, not %q", f.dryRun)
	}
	switch {
	case f.inputSet && f.file != "":
		return errors.New("give the input either with --input or with -f, not both")
	case !f.inputSet && f.file == "":
		return errors.New("the task needs an input: pass --input TEXT, or -f FILE (-f - reads stdin)")
	case f.attemptTimeoutSet && f.attemptTimeout <= 0:
		return fmt.Errorf("--attempt-timeout must be longer than 0s, not %s", f.attemptTimeout)
	case f.maxRetriesSet && f.maxRetries < 0:
		return fmt.Errorf("--max-retries must be 0 or more, not %d", f.maxRetries)
	case f.wait && f.dryRun != dryRunNone:
		return errors.New("a dry run creates no task to wait for: drop --wait or --dry-run")
	case f.timeoutSet && !f.wait:
		return errors.New("--timeout bounds the wait and applies only with --wait: add --wait, or bound each attempt of the task with --attempt-timeout")
	case f.timeout < 0:
		return fmt.Errorf("--timeout must be 0 (wait until the task finishes) or more, not %s", f.timeout)
	}
	return nil
}

// readInput returns the input from --input or -f, refusing one the API server would
// refuse for its size, before anything is sent.
func (f *submitFlags) readInput(stdin io.Reader) (string, error) {
	input := f.input
	if !f.inputSet {
		r, from := stdin, "stdin"
		if f.file != "-" {
			file, err := os.Open(f.file)
			if err != nil {
				return "", fmt.Errorf("reading the input: %w", err)
			}
			defer func() { _ = file.Close() }()
			r, from = file, f.file
		}
		// A character takes at most 4 bytes: reading one byte more than the largest
		// allowed input is enough to know it is too large, without reading a huge file.
		data, err := io.ReadAll(io.LimitReader(r, 4*swarmv1alpha1.MaxInputLength+1))
		if err != nil {
			return "", fmt.Errorf("reading the input from %s: %w", from, err)
		}
		if len(data) > 4*swarmv1alpha1.MaxInputLength {
			return "", inputTooLarge(fmt.Sprintf("more than %d", swarmv1alpha1.MaxInputLength))
		}
		input = string(data)
	}
	if n := utf8.RuneCountInString(input); n > swarmv1alpha1.MaxInputLength {
		return "", inputTooLarge(fmt.Sprint(n))
	}
	return input, nil
}

func inputTooLarge(size string) error {
	return fmt.Errorf("the input has %s characters, but a task's input holds at most %d: put larger inputs in object storage and pass their address as the input",
		size, swarmv1alpha1.MaxInputLength)
}

// task is the Task the flags describe. Fields without a flag are left to the schema's
// defaults, so the cluster's defaults apply.
func (f *submitFlags) task(namespace, hive, input string) *swarmv1alpha1.Task {
	t := &swarmv1alpha1.Task{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: f.name},
		Spec:       swarmv1alpha1.TaskSpec{Hive: hive, Input: input, Priority: f.priority},
	}
	if f.name == "" {
		t.GenerateName = hive + "-"
	}
	if f.attemptTimeoutSet {
		t.Spec.Timeout = &metav1.Duration{Duration: f.attemptTimeout}
	}
	if f.maxRetriesSet {
		t.Spec.MaxRetries = &f.maxRetries
	}
	return t
}

// waitAndReport waits for the task to finish and reports how it ended: the result on
// stdout (exit 0), the message on stderr (exit 1), or that it gave up waiting (exit 2).
func waitAndReport(ctx context.Context, o *options, c client.WithWatch, task *swarmv1alpha1.Task, f *submitFlags) error {
	watchCtx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	waitCtx, cancel := watchtools.ContextWithOptionalTimeout(watchCtx, f.timeout)
	defer cancel()

	p := &progress{w: o.streams.ErrOut, tty: o.isTerminal(o.streams.ErrOut)}
	start := o.now()
	var (
		mu  sync.Mutex
		cur = task
	)
	show := func(t *swarmv1alpha1.Task) {
		mu.Lock()
		defer mu.Unlock()
		if t != nil {
			cur = t
		}
		p.show(ProgressState(cur), ProgressLine(cur, o.now().Sub(start)))
	}
	// On a terminal the line is rewritten every progressInterval, so that its elapsed time
	// moves while nothing happens.
	stopTicking := make(chan struct{})
	var ticking sync.WaitGroup
	if p.tty {
		ticking.Go(func() {
			tick := time.NewTicker(progressInterval)
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
					show(nil)
				case <-stopTicking:
					return
				}
			}
		})
	}
	last, err := waitForTask(waitCtx, c, task, fail, show)
	close(stopTicking)
	ticking.Wait()
	p.done()
	if err != nil {
		where := fmt.Sprintf("`kubectl get task %s -n %s`", last.Name, last.Namespace)
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("stopped waiting for task %s; it keeps going: follow it with %s: %w", last.Name, where, ctx.Err())
		case watchCtx.Err() != nil:
			// Listing or watching the task failed for a reason only a person can fix.
			return context.Cause(watchCtx) //nolint:wrapcheck // the cause is an error explain already wrapped
		case waitCtx.Err() != nil:
			return withCode(exitTimeout, fmt.Errorf("gave up waiting for task %s after %s (it was %s); it keeps going: follow it with %s",
				last.Name, f.timeout, orDefault(string(last.Status.Phase), string(swarmv1alpha1.TaskPending)), where))
		}
		return err
	}

	if *f.out.print.OutputFormat != "" {
		if err := f.print(o.streams.Out, last); err != nil {
			return err
		}
	}
	switch last.Status.Phase {
	case swarmv1alpha1.TaskSucceeded:
		if *f.out.print.OutputFormat == "" {
			result := last.Status.Result
			if !strings.HasSuffix(result, "\n") {
				result += "\n"
			}
			_, err := io.WriteString(o.streams.Out, result)
			return wrapWrite(err)
		}
		return nil
	case swarmv1alpha1.TaskCancelled:
		return fmt.Errorf("task %s was cancelled: %s", last.Name, orDefault(last.Status.Message, "no message"))
	default:
		return fmt.Errorf("task %s failed after %d attempt(s): %s", last.Name, last.Status.Attempt, orDefault(last.Status.Message, "no message"))
	}
}

func wrapWrite(err error) error {
	if err != nil {
		return fmt.Errorf("writing the output: %w", err)
	}
	return nil
}

// progressInterval is how often the progress line is rewritten on a terminal while
// nothing happens, so that its elapsed time moves.
const progressInterval = time.Second

// waitForTask watches task until it finishes and returns its last version, calling seen
// with each version. The informer behind watchtools.UntilWithSync lists the task, then
// watches it from there, and lists anew when the watch can no longer resume: no change is
// missed. An error listing or watching that no retry fixes goes to fail.
func waitForTask(ctx context.Context, c client.WithWatch, task *swarmv1alpha1.Task, fail func(error), seen func(*swarmv1alpha1.Task)) (*swarmv1alpha1.Task, error) {
	seen(task)
	last := task
	deleted := fmt.Errorf("task %s was deleted while waiting for it to finish", task.Name)
	lw := listWatch(c, &swarmv1alpha1.TaskList{}, fail, "watching task "+task.Name,
		client.InNamespace(task.Namespace), client.MatchingFields{"metadata.name": task.Name})
	_, err := watchtools.UntilWithSync(ctx, lw, &swarmv1alpha1.Task{},
		func(store toolscache.Store) (bool, error) {
			// Deleted before the first list: no event would ever say so.
			if _, exists, err := store.Get(task); err != nil || !exists {
				return false, deleted
			}
			return false, nil
		},
		func(ev watch.Event) (bool, error) {
			if ev.Type == watch.Deleted {
				return false, deleted
			}
			t, ok := ev.Object.(*swarmv1alpha1.Task)
			if !ok {
				return false, nil
			}
			last = t
			seen(t)
			return t.Status.Phase.Finished(), nil
		})
	switch {
	case errors.Is(err, deleted):
		return last, deleted
	case err != nil:
		return last, fmt.Errorf("waiting for task %s: %w", task.Name, err)
	}
	return last, nil
}

// progress shows a waiting task's progress line: rewritten in place on a terminal, printed
// once per change of state elsewhere (a log, a pipe), where rewriting would pile up lines.
type progress struct {
	w   io.Writer
	tty bool
	// last is the state last printed, width the length of the line on the terminal.
	last  string
	width int
}

func (p *progress) show(state, line string) {
	if p.tty {
		n := utf8.RuneCountInString(line)
		// Spaces wipe what is left of a longer previous line.
		_, _ = fmt.Fprint(p.w, "\r"+line+strings.Repeat(" ", max(p.width-n, 0)))
		p.width = n
		return
	}
	if state == p.last {
		return
	}
	p.last = state
	_, _ = fmt.Fprintln(p.w, line)
}

// done ends the line on a terminal, so what follows starts on its own.
func (p *progress) done() {
	if p.tty && p.width > 0 {
		_, _ = fmt.Fprintln(p.w)
		p.width = 0
	}
}
