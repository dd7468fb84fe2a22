// Command kubectl-hive is a kubectl plugin for Hives and Tasks: on the PATH, it runs as
// `kubectl hive`.
//
//	kubectl hive status [HIVE]          agents by state, the queue, the rollout, problems
//	kubectl hive submit HIVE --input X  create a task, and with --wait print its result
//	kubectl hive queue [HIVE]           queued tasks in dispatch order
//	kubectl hive results [HIVE]         finished tasks with their timings and results
//
// It takes the usual kubectl flags (--kubeconfig, --context, -n, ...). It exits with 0 on
// success, 1 on an error or a task that failed or was cancelled, and 2 when submit --wait
// gave up waiting after --timeout.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// Exit codes.
const (
	exitOK      = 0
	exitError   = 1
	exitTimeout = 2
)

func main() {
	// An interrupt cancels the context, so a waiting submit stops cleanly: the task keeps
	// running in the cluster either way.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	stop()
	os.Exit(code)
}

// run runs the command line args and returns the exit code.
func run(ctx context.Context, args []string, streams genericiooptions.IOStreams) int {
	return execute(ctx, newOptions(streams), args)
}

// execute runs the command line args with o and returns the exit code.
func execute(ctx context.Context, o *options, args []string) int {
	cmd := newRootCommand(o)
	cmd.SetArgs(args)
	return report(cmd.ExecuteContext(ctx), o.streams.ErrOut)
}

// codeError is an error with the exit code it calls for.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }

// withCode gives err an exit code.
func withCode(code int, err error) error { return &codeError{code: code, err: err} }

// report prints err the way kubectl does and returns its exit code.
func report(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	code := exitError
	if ce, ok := errors.AsType[*codeError](err); ok {
		code = ce.code
	}
	_, _ = fmt.Fprintln(stderr, "error: "+err.Error())
	return code
}
