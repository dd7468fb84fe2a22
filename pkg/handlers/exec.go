package handlers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aihub-dev/hive-operator/pkg/agent"
)

// Environment variables Exec sets for the command, naming the task it works on.
const (
	EnvTaskName      = "TASK_NAME"
	EnvTaskNamespace = "TASK_NAMESPACE"
	EnvTaskAttempt   = "TASK_ATTEMPT"
	EnvTaskHive      = "TASK_HIVE"
)

// ExecOptions configure Exec. The zero value runs the command in the agent's working
// directory with the agent's environment.
type ExecOptions struct {
	// Dir is the command's working directory; default the agent's.
	Dir string
	// Env holds extra "KEY=value" entries for the command's environment, added to the
	// agent's own. They cannot replace the TASK_* variables.
	Env []string
	// StderrTail is how many of the last bytes of stderr a failure's message quotes;
	// default 4096, negative quotes none. The message is kept within what the agent stores
	// (4 KiB) by quoting less.
	StderrTail int
	// Stderr, if set, also receives everything the command writes to stderr: os.Stderr
	// puts it into the agent's log. Commands of tasks that run at once write to it
	// concurrently. Its errors are ignored.
	Stderr io.Writer
	// KillDelay is how long a command has to exit after SIGTERM, sent when the task's
	// context ends, before it is killed; default 5s. It is also how long Exec waits for
	// processes the command left behind to close its output after it exited.
	KillDelay time.Duration
}

func (o *ExecOptions) defaults() {
	if o.StderrTail == 0 {
		o.StderrTail = 4096
	}
	if o.KillDelay <= 0 {
		o.KillDelay = 5 * time.Second
	}
}

// Exec returns a handler that runs command for each task: without a shell unless command
// starts with one, with the task's input on stdin and the TASK_* variables in its
// environment. What it writes to stdout is the result.
//
// A command that exits with a non-zero status fails the attempt with a message quoting the
// end of its stderr. A command that writes more to stdout than status.result holds is
// stopped, and fails with ErrResultTooLarge. When the handler's context ends, the command
// and every process it started get SIGTERM, and SIGKILL after opts.KillDelay.
func Exec(command []string, opts ExecOptions) agent.Handler {
	opts.defaults()
	// The caller may reuse its slices.
	command, opts.Env = slices.Clone(command), slices.Clone(opts.Env)
	return func(ctx context.Context, task *agent.Task) (string, error) {
		if len(command) == 0 {
			return "", errors.New("exec handler has no command to run")
		}
		return runCommand(ctx, command, &opts, task)
	}
}

func runCommand(ctx context.Context, command []string, opts *ExecOptions, task *agent.Task) (string, error) {
	name := command[0]
	// The command also stops when its output outgrows the result: the attempt fails
	// whatever it writes next, so running on only costs time.
	cmdCtx, stop := context.WithCancel(ctx)
	defer stop()
	cmd := exec.CommandContext(cmdCtx, name, command[1:]...)
	cmd.Dir = opts.Dir
	// Later entries win, so the task's variables override any the agent or opts.Env hold.
	// cmd.Environ is the agent's environment with PWD matching Dir.
	cmd.Env = append(append(cmd.Environ(), opts.Env...),
		EnvTaskName+"="+task.Name,
		EnvTaskNamespace+"="+task.Namespace,
		EnvTaskAttempt+"="+strconv.Itoa(int(task.Attempt)),
		EnvTaskHive+"="+task.Hive,
	)
	cmd.Stdin = strings.NewReader(task.Input)
	// A request's answer streams to its caller as the command writes it, and is stored
	// nowhere; a task's result is kept, up to what status.result holds.
	var stdout *cappedBuffer
	if task.Request {
		cmd.Stdout = task.Output
	} else {
		stdout = &cappedBuffer{limit: resultLimit, onOverflow: stop}
		cmd.Stdout = stdout
	}
	stderr := &tailBuffer{max: opts.StderrTail}
	cmd.Stderr = stderr
	if opts.Stderr != nil {
		cmd.Stderr = io.MultiWriter(stderr, ignoreErrors{opts.Stderr})
	}
	cmd.WaitDelay = opts.KillDelay
	ownProcessGroup(cmd)

	err := cmd.Run()
	if cmd.Process != nil {
		// Processes the command started and left running would otherwise outlive the task.
		// The group's number cannot go to a new process while any of them lives.
		killProcessGroup(cmd.Process)
	}

	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return "", fmt.Errorf("command %s was stopped: %w", name, ctx.Err())
	case stdout != nil && stdout.overflowed():
		return "", fmt.Errorf("%w: command %s wrote more than %d bytes to stdout; store large outputs elsewhere and print their address",
			ErrResultTooLarge, name, resultLimit)
	case errors.As(err, &exitErr):
		return "", errors.New(withOutput(fmt.Sprintf("command %s failed with %s", name, exitErr), "stderr", stderr.String()))
	case errors.Is(err, exec.ErrWaitDelay):
		return "", fmt.Errorf("command %s exited, but processes it started kept its output open for more than %s, so it may be incomplete: %w",
			name, opts.KillDelay, err)
	case err != nil:
		return "", fmt.Errorf("running command %s: %w", name, err)
	}
	if stdout == nil {
		return "", nil
	}
	return stdout.String(), nil
}

// ignoreErrors is a writer that reports success whatever its writer does: a failed copy of
// stderr would stop the reading of it, and the command would block once the pipe is full.
type ignoreErrors struct{ w io.Writer }

func (i ignoreErrors) Write(p []byte) (int, error) {
	_, _ = i.w.Write(p)
	return len(p), nil
}
