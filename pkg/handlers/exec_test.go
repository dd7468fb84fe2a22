package handlers

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aihub-dev/hive-operator/pkg/agent"
)

func TestExec(t *testing.T) {
	t.Setenv("HANDLERS_TEST_FROM_AGENT", "inherited")
	dir := t.TempDir()
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	task := &agent.Task{Name: "t1", Namespace: "ns", Hive: "h", Attempt: 2, Input: "hello\nworld"}

	tests := []struct {
		name    string
		command []string
		opts    ExecOptions
		want    string
		wantLen int // when > 0, the length of the result instead of want
		wantErr []string
		notErr  []string
		errIs   error
	}{
		{name: "stdin becomes stdout", command: []string{"cat"}, want: "hello\nworld"},
		{name: "arguments reach the command unquoted", command: []string{"printf", "%s|", "a b", "$HOME"}, want: "a b|$HOME|"},
		{
			name:    "task variables",
			command: []string{"sh", "-c", `printf '%s %s %s %s' "$TASK_NAME" "$TASK_NAMESPACE" "$TASK_ATTEMPT" "$TASK_HIVE"`},
			want:    "t1 ns 2 h",
		},
		{name: "agent environment", command: []string{"sh", "-c", `printf %s "$HANDLERS_TEST_FROM_AGENT"`}, want: "inherited"},
		{
			name:    "extra environment, which cannot replace the task variables",
			command: []string{"sh", "-c", `printf '%s %s' "$EXTRA" "$TASK_NAME"`},
			opts:    ExecOptions{Env: []string{"EXTRA=x", "TASK_NAME=spoofed"}},
			want:    "x t1",
		},
		{name: "working directory", command: []string{"sh", "-c", "pwd -P"}, opts: ExecOptions{Dir: dir}, want: realDir + "\n"},
		{name: "PWD follows the working directory", command: []string{"printenv", "PWD"}, opts: ExecOptions{Dir: dir}, want: dir + "\n"},
		{name: "empty output", command: []string{"true"}, want: ""},
		{name: "output of exactly the limit", command: []string{"head", "-c", strconv.Itoa(resultLimit), "/dev/zero"}, wantLen: resultLimit},
		{
			name:    "non-zero exit quotes the code and stderr",
			command: []string{"sh", "-c", "echo partial; echo err >&2; exit 3"},
			wantErr: []string{"command sh failed with exit status 3; stderr: err"},
		},
		{
			name:    "non-zero exit without stderr",
			command: []string{"false"},
			wantErr: []string{"command false failed with exit status 1"},
			notErr:  []string{"stderr"},
		},
		{
			name:    "only the end of stderr is quoted",
			command: []string{"sh", "-c", `i=0; while [ $i -lt 500 ]; do echo "line $i" >&2; i=$((i+1)); done; exit 1`},
			opts:    ExecOptions{StderrTail: 64},
			wantErr: []string{"stderr: …", "line 499"},
			notErr:  []string{"line 0\n", "line 400"},
		},
		{
			name:    "stderr quoting can be turned off",
			command: []string{"sh", "-c", "echo err >&2; exit 1"},
			opts:    ExecOptions{StderrTail: -1},
			wantErr: []string{"exit status 1"},
			notErr:  []string{"err\n", "stderr"},
		},
		{
			name:    "killed by a signal",
			command: []string{"sh", "-c", "kill -KILL $$"},
			wantErr: []string{"command sh failed with signal: killed"},
		},
		{
			name:    "output over the limit",
			command: []string{"head", "-c", strconv.Itoa(resultLimit + 1), "/dev/zero"},
			wantErr: []string{"result too large: command head wrote more than 262144 bytes"},
			errIs:   ErrResultTooLarge,
		},
		{
			name:    "endless output is stopped",
			command: []string{"yes"},
			wantErr: []string{"result too large"},
			errIs:   ErrResultTooLarge,
		},
		{
			name:    "unknown command",
			command: []string{"hive-agent-no-such-command"},
			wantErr: []string{"running command hive-agent-no-such-command", "executable file not found"},
		},
		{name: "no command", command: nil, wantErr: []string{"exec handler has no command to run"}},
		{
			name:    "a process left holding stdout",
			command: []string{"sh", "-c", "sleep 30 & echo started"},
			opts:    ExecOptions{KillDelay: 200 * time.Millisecond},
			wantErr: []string{"processes it started kept its output open for more than 200ms"},
			errIs:   exec.ErrWaitDelay,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			start := time.Now()
			got, err := Exec(tt.command, tt.opts)(ctx, task)
			if elapsed := time.Since(start); elapsed > 10*time.Second {
				t.Errorf("took %s", elapsed)
			}
			if err != nil && got != "" {
				t.Errorf("result %q along with the error", got)
			}
			outcome{tt.want, tt.wantLen, tt.wantErr, tt.notErr, tt.errIs}.check(t, got, err)
		})
	}
}

func TestExecStops(t *testing.T) {
	tests := []struct {
		name      string
		command   []string
		killDelay time.Duration
		cancel    func(ctx context.Context) (context.Context, context.CancelFunc)
		wantIs    error
		maxTime   time.Duration
	}{
		{
			name:    "at the deadline",
			command: []string{"sleep", "10"},
			cancel: func(ctx context.Context) (context.Context, context.CancelFunc) {
				return context.WithTimeout(ctx, 100*time.Millisecond)
			},
			wantIs:  context.DeadlineExceeded,
			maxTime: 2 * time.Second,
		},
		{
			name:    "when cancelled",
			command: []string{"sleep", "10"},
			cancel: func(ctx context.Context) (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(ctx)
				time.AfterFunc(100*time.Millisecond, cancel)
				return ctx, cancel
			},
			wantIs:  context.Canceled,
			maxTime: 2 * time.Second,
		},
		{
			name:      "with SIGKILL when SIGTERM is ignored",
			command:   []string{"sh", "-c", `trap "" TERM; sleep 10`},
			killDelay: 300 * time.Millisecond,
			cancel: func(ctx context.Context) (context.Context, context.CancelFunc) {
				return context.WithTimeout(ctx, 100*time.Millisecond)
			},
			wantIs:  context.DeadlineExceeded,
			maxTime: 3 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := tt.cancel(t.Context())
			defer cancel()
			start := time.Now()
			got, err := Exec(tt.command, ExecOptions{KillDelay: tt.killDelay})(ctx, &agent.Task{Name: "t"})
			elapsed := time.Since(start)
			if !errors.Is(err, tt.wantIs) {
				t.Fatalf("error %v, want one wrapping %v (result %q)", err, tt.wantIs, got)
			}
			if !strings.Contains(err.Error(), "command "+tt.command[0]+" was stopped") {
				t.Errorf("error %q does not say the command was stopped", err)
			}
			if elapsed > tt.maxTime {
				t.Errorf("returned after %s, want at most %s", elapsed, tt.maxTime)
			}
		})
	}
}

// TestExecLeavesNoProcesses checks that processes a command started are stopped with it,
// whether it was cancelled or exited.
func TestExecLeavesNoProcesses(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs /proc")
	}
	tests := []struct {
		name   string
		script string // writes the pid of its background child to $1
		cancel bool
	}{
		{name: "cancelled", script: `trap "" TERM; sleep 30 </dev/null >/dev/null 2>&1 & echo $! > "$1"; wait`, cancel: true},
		{name: "exited", script: `sleep 30 </dev/null >/dev/null 2>&1 & echo $! > "$1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pid")
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tt.cancel {
				time.AfterFunc(200*time.Millisecond, cancel)
			}
			_, err := Exec([]string{"sh", "-c", tt.script, "sh", pidFile}, ExecOptions{KillDelay: 200 * time.Millisecond})(ctx, &agent.Task{})
			if tt.cancel != (err != nil) {
				t.Fatalf("error %v", err)
			}
			raw, err := os.ReadFile(pidFile)
			if err != nil {
				t.Fatal(err)
			}
			pid := strings.TrimSpace(string(raw))
			deadline := time.Now().Add(2 * time.Second)
			for {
				stat, err := os.ReadFile("/proc/" + pid + "/stat")
				// A killed orphan may stay a zombie until its new parent reaps it.
				if err != nil || processState(stat) == "Z" {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("background process %s still runs: %s", pid, stat)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// processState returns the state field of a /proc/<pid>/stat line.
func processState(stat []byte) string {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+3 > len(stat) {
		return ""
	}
	return string(stat[i+2 : i+3])
}

func TestExecFitsTheMessage(t *testing.T) {
	// A long stderr quoted in full would push the message past what the agent stores,
	// losing its end: the line that says what went wrong.
	script := `i=0; while [ $i -lt 2000 ]; do echo "noise $i" >&2; i=$((i+1)); done; echo "ValueError: the cause" >&2; exit 1`
	_, err := Exec([]string{"sh", "-c", script}, ExecOptions{})(t.Context(), &agent.Task{})
	if err == nil {
		t.Fatal("no error")
	}
	if len(err.Error()) > messageLimit {
		t.Errorf("message of %d bytes, more than %d", len(err.Error()), messageLimit)
	}
	if !strings.HasSuffix(err.Error(), "ValueError: the cause") {
		t.Errorf("message does not end with the last line of stderr: ...%s", lastBytes(err.Error(), 200))
	}
}

func TestExecCopiesStderr(t *testing.T) {
	var log bytes.Buffer
	got, err := Exec([]string{"sh", "-c", "echo warning >&2; echo ok"}, ExecOptions{Stderr: &log})(t.Context(), &agent.Task{})
	if err != nil || got != "ok\n" {
		t.Fatalf("got %q, %v", got, err)
	}
	if log.String() != "warning\n" {
		t.Errorf("stderr copy %q, want %q", log.String(), "warning\n")
	}
}

func TestExecIgnoresAFailingStderrCopy(t *testing.T) {
	// Enough stderr to fill a pipe: a copy that stopped at the first failed write would
	// leave the command blocked.
	script := `head -c 1000000 /dev/zero >&2; echo done`
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got, err := Exec([]string{"sh", "-c", script}, ExecOptions{Stderr: failingWriter{}})(ctx, &agent.Task{})
	if err != nil || got != "done\n" {
		t.Errorf("got %q, %v; want the command to finish", got, err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("log closed") }

func TestExecKeepsItsOwnCommand(t *testing.T) {
	command, env := []string{"sh", "-c", `echo "one $V"`}, []string{"V=1"}
	h := Exec(command, ExecOptions{Env: env})
	command[2], env[0] = "echo two", "V=2"
	if got, err := h(t.Context(), &agent.Task{}); err != nil || got != "one 1\n" {
		t.Errorf("got %q, %v; want the command and environment as passed to Exec", got, err)
	}
}
