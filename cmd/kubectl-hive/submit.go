package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// submitFlags is the command line of submit.
type submitFlags struct {
	input       string
	file        string
	priority    int32
	name        string
	timeout     time.Duration
	maxRetries  int32
	wait        bool
	waitTimeout time.Duration
	out         outputFlag

	// set records which optional flags were given, to leave the others to the schema's
	// defaults.
	inputSet, timeoutSet, maxRetriesSet, waitTimeoutSet bool
}

func newSubmitCommand(o *options) *cobra.Command {
	f := &submitFlags{}
	cmd := &cobra.Command{
		Use:   "submit HIVE (--input TEXT | -f FILE)",
		Short: "Create a task for a hive, and optionally wait for its result",
		Long: `Create a Task for a hive and print its name. With --wait, watch it until it finishes,
showing its progress on stderr, then print its result on stdout and exit 0; a task that
failed or was cancelled prints its message and exits 1, and giving up after
--wait-timeout exits 2 (the task keeps running). -f - reads the input from stdin.`,
		Example: `  kubectl hive submit echo --input '{"prompt": "hello"}'
  kubectl hive submit echo -f prompt.json --priority 10 --wait --wait-timeout 5m
  echo hello | kubectl hive submit echo -f - --wait`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			f.inputSet, f.timeoutSet = fl.Changed("input"), fl.Changed("timeout")
			f.maxRetriesSet, f.waitTimeoutSet = fl.Changed("max-retries"), fl.Changed("wait-timeout")
			return runSubmit(cmd.Context(), o, args[0], f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.input, "input", "", "The task's input, as is.")
	fl.StringVarP(&f.file, "filename", "f", "", "Read the task's input from this file; - reads stdin.")
	fl.Int32Var(&f.priority, "priority", 0, "The task's priority, from -1000 to 1000: higher runs first.")
	fl.StringVar(&f.name, "name", "", "The task's name. Without it, a name is generated from the hive's: <hive>-xxxxx.")
	fl.DurationVar(&f.timeout, "timeout", 0, "How long one attempt may run, such as 30s or 10m. Without it, 10m.")
	fl.Int32Var(&f.maxRetries, "max-retries", 0, "How many more attempts the task gets after a failed one. Without it, 3.")
	fl.BoolVar(&f.wait, "wait", false, "Wait for the task to finish and print its result.")
	fl.DurationVar(&f.waitTimeout, "wait-timeout", 0, "With --wait, give up waiting after this long (exit code 2); 0 waits until the task finishes.")
	f.out.add(cmd, "the task's name, or with --wait its result")
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
	c, ns, err := o.connect()
	if err != nil {
		return err
	}
	// A task for a hive that does not exist would wait for it, most likely for ever after a
	// typo: refuse it here, with the way to find the right name.
	if _, err := getHive(ctx, c, ns, hive); err != nil {
		return err
	}
	task := f.task(ns, hive, input)
	if err := c.Create(ctx, task); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("task %q already exists in namespace %q: choose another --name, or leave --name out for a generated one", f.name, ns)
		}
		return explain(fmt.Sprintf("creating a task for hive %q in namespace %q", hive, ns), err)
	}
	if !f.wait {
		if f.out.format != outputTable {
			return printTasks(o.streams.Out, f.out.format, []*swarmv1alpha1.Task{task}, true)
		}
		_, err := fmt.Fprintln(o.streams.Out, task.Name)
		return wrapWrite(err)
	}
	return waitAndReport(ctx, o, c, task, f)
}

func (f *submitFlags) validate() error {
	if err := f.out.validate(); err != nil {
		return err
	}
	switch {
	case f.inputSet && f.file != "":
		return errors.New("give the input either with --input or with -f, not both")
	case !f.inputSet && f.file == "":
		return errors.New("the task needs an input: pass --input TEXT, or -f FILE (-f - reads stdin)")
	case f.timeoutSet && f.timeout <= 0:
		return fmt.Errorf("--timeout must be longer than 0s, not %s", f.timeout)
	case f.maxRetriesSet && f.maxRetries < 0:
		return fmt.Errorf("--max-retries must be 0 or more, not %d", f.maxRetries)
	case f.waitTimeoutSet && !f.wait:
		return errors.New("--wait-timeout only applies with --wait: add --wait")
	case f.waitTimeout < 0:
		return fmt.Errorf("--wait-timeout must be 0 (wait until the task finishes) or more, not %s", f.waitTimeout)
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
	if f.timeoutSet {
		t.Spec.Timeout = &metav1.Duration{Duration: f.timeout}
	}
	if f.maxRetriesSet {
		t.Spec.MaxRetries = &f.maxRetries
	}
	return t
}

// waitAndReport waits for the task to finish and reports how it ended: the result on
// stdout (exit 0), the message on stderr (exit 1), or that it gave up waiting (exit 2).
func waitAndReport(ctx context.Context, o *options, c client.WithWatch, task *swarmv1alpha1.Task, f *submitFlags) error {
	waitCtx := ctx
	if f.waitTimeout > 0 {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(ctx, f.waitTimeout)
		defer cancel()
	}
	p := &progress{w: o.streams.ErrOut, tty: o.isTerminal(o.streams.ErrOut)}
	start := o.now()
	last, err := waitForTask(waitCtx, c, task, func(t *swarmv1alpha1.Task) {
		p.show(ProgressState(t), ProgressLine(t, o.now().Sub(start)))
	})
	p.done()
	if err != nil {
		where := fmt.Sprintf("`kubectl get task %s -n %s`", last.Name, last.Namespace)
		if waitCtx.Err() != nil && ctx.Err() == nil {
			return withCode(exitTimeout, fmt.Errorf("gave up waiting for task %s after %s (it was %s); it keeps going: follow it with %s",
				last.Name, f.waitTimeout, orDefault(string(last.Status.Phase), string(swarmv1alpha1.TaskPending)), where))
		}
		if ctx.Err() != nil {
			return fmt.Errorf("stopped waiting for task %s; it keeps going: follow it with %s: %w", last.Name, where, ctx.Err())
		}
		return err
	}

	if f.out.format != outputTable {
		if err := printTasks(o.streams.Out, f.out.format, []*swarmv1alpha1.Task{last}, true); err != nil {
			return err
		}
	}
	switch last.Status.Phase {
	case swarmv1alpha1.TaskSucceeded:
		if f.out.format == outputTable {
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

// waitForTask watches a task until it finishes and returns it, calling seen with each
// version of it (and again every progressInterval). It watches from the version it has,
// so no change is missed; a watch the server ends is started again from the last version
// seen, and one whose version has expired from a fresh read. On error it returns the last
// version seen.
func waitForTask(ctx context.Context, c client.WithWatch, t *swarmv1alpha1.Task, seen func(*swarmv1alpha1.Task)) (*swarmv1alpha1.Task, error) {
	seen(t)
	tick := time.NewTicker(progressInterval)
	defer tick.Stop()
	cur := t
	for !cur.Status.Phase.Finished() {
		if err := ctx.Err(); err != nil {
			return cur, fmt.Errorf("waiting for task %s: %w", cur.Name, err)
		}
		w, err := c.Watch(ctx, &swarmv1alpha1.TaskList{}, client.InNamespace(cur.Namespace),
			client.MatchingFields{"metadata.name": cur.Name},
			&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: cur.ResourceVersion}})
		if err != nil {
			return cur, explain(fmt.Sprintf("watching task %s", cur.Name), err)
		}
		cur, err = follow(ctx, c, w, cur, seen, tick.C)
		w.Stop()
		if err != nil {
			return cur, err
		}
	}
	return cur, nil
}

// follow reads one watch until the task finishes, the watch ends, or ctx is done.
func follow(ctx context.Context, c client.Client, w watch.Interface, cur *swarmv1alpha1.Task, seen func(*swarmv1alpha1.Task), tick <-chan time.Time) (*swarmv1alpha1.Task, error) {
	for {
		select {
		case <-ctx.Done():
			return cur, fmt.Errorf("waiting for task %s: %w", cur.Name, ctx.Err())
		case <-tick:
			seen(cur)
		case ev, ok := <-w.ResultChan():
			if !ok {
				return cur, nil
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				if t, ok := ev.Object.(*swarmv1alpha1.Task); ok {
					cur = t
					seen(cur)
					if cur.Status.Phase.Finished() {
						return cur, nil
					}
				}
			case watch.Deleted:
				return cur, fmt.Errorf("task %s was deleted while waiting for it to finish", cur.Name)
			case watch.Error:
				err := apierrors.FromObject(ev.Object)
				if !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
					return cur, explain(fmt.Sprintf("watching task %s", cur.Name), err)
				}
				// The version watched from is too old to resume from: read the task anew
				// and watch from there.
				fresh := &swarmv1alpha1.Task{}
				if err := c.Get(ctx, client.ObjectKeyFromObject(cur), fresh); err != nil {
					return cur, explain(fmt.Sprintf("reading task %s", cur.Name), err)
				}
				seen(fresh)
				return fresh, nil
			}
		}
	}
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
