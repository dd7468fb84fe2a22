package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/zap/zapcore"

	"github.com/aihub-dev/hive-operator/pkg/agent"
)

// parsed is the part of a config that tests compare (zap.Options holds functions).
type parsed struct {
	Mode, URL, ContentType, HealthAddr     string
	ServingAddr                            string
	Command                                []string
	EchoDelay, RunningAfter, ShutdownGrace time.Duration
	Concurrency, ServingConcurrency        int
	ZapDevel                               bool
}

func summary(c *config) parsed {
	return parsed{
		Mode: c.mode, URL: c.url, ContentType: c.contentType, HealthAddr: c.healthAddr, Command: c.command,
		EchoDelay: c.echoDelay, RunningAfter: c.runningAfter, ShutdownGrace: c.shutdownGrace,
		Concurrency: c.concurrency, ZapDevel: c.zap.Development, ServingAddr: c.servingAddr, ServingConcurrency: c.servingSlots,
	}
}

func TestParseFlags(t *testing.T) {
	defaults := parsed{ContentType: "application/json", HealthAddr: ":8080", RunningAfter: agent.DefaultRunningAfter, ShutdownGrace: 20 * time.Second}
	with := func(change func(*parsed)) parsed {
		p := defaults
		change(&p)
		return p
	}
	tests := []struct {
		name    string
		args    []string
		want    parsed
		wantErr string
	}{
		{
			name: "exec with the command after --",
			args: []string{"--mode=exec", "--", "python3", "summarize.py", "--verbose"},
			want: with(func(p *parsed) { p.Mode, p.Command = "exec", []string{"python3", "summarize.py", "--verbose"} }),
		},
		{
			name: "exec with the command after the flags",
			args: []string{"--mode=exec", "wc", "-w"},
			want: with(func(p *parsed) { p.Mode, p.Command = "exec", []string{"wc", "-w"} }),
		},
		{
			name: "http",
			args: []string{"--mode=http", "--url=https://model.internal:8443/v1/run", "--content-type=text/plain"},
			want: with(func(p *parsed) {
				p.Mode, p.URL, p.ContentType = "http", "https://model.internal:8443/v1/run", "text/plain"
			}),
		},
		{
			name: "echo with every agent flag",
			args: []string{
				"--mode=echo", "--echo-delay=50ms", "--health-addr=0", "--running-after=0",
				"--shutdown-grace=45s", "--concurrency=8", "--zap-devel", "--serving-addr=:9001", "--serving-concurrency=32",
			},
			want: with(func(p *parsed) {
				p.Mode, p.EchoDelay, p.HealthAddr, p.RunningAfter = "echo", 50*time.Millisecond, "0", 0
				p.ShutdownGrace, p.Concurrency, p.ZapDevel = 45*time.Second, 8, true
				p.ServingAddr, p.ServingConcurrency = ":9001", 32
			}),
		},
		{name: "no mode", args: nil, wantErr: "--mode is required: exec, http or echo"},
		{name: "an unknown mode", args: []string{"--mode=grpc"}, wantErr: "--mode=grpc is not one of exec, http, echo"},
		{name: "exec without a command", args: []string{"--mode=exec"}, wantErr: "--mode=exec needs a command after --"},
		{name: "exec with an empty command", args: []string{"--mode=exec", "--"}, wantErr: "--mode=exec needs a command after --"},
		{name: "http without a URL", args: []string{"--mode=http"}, wantErr: "--mode=http needs --url"},
		{name: "http with a URL without scheme", args: []string{"--mode=http", "--url=localhost:8000"}, wantErr: "--url=localhost:8000 is not an http:// or https:// URL"},
		{name: "http with another scheme", args: []string{"--mode=http", "--url=ftp://host/x"}, wantErr: "is not an http:// or https:// URL"},
		{name: "http without a host", args: []string{"--mode=http", "--url=http:///run"}, wantErr: "is not an http:// or https:// URL"},
		{name: "http with an unparsable URL", args: []string{"--mode=http", "--url=http://a b:x/"}, wantErr: "is not an http:// or https:// URL"},
		{name: "a command in another mode", args: []string{"--mode=echo", "--", "cat"}, wantErr: `--mode=echo runs no command, but "cat" follows the flags`},
		{name: "--url in another mode", args: []string{"--mode=exec", "--url=http://x", "--", "cat"}, wantErr: "--url applies to --mode=http only"},
		{name: "--content-type in another mode", args: []string{"--mode=echo", "--content-type=text/plain"}, wantErr: "--content-type applies to --mode=http only"},
		{name: "--echo-delay in another mode", args: []string{"--mode=http", "--url=http://x", "--echo-delay=1s"}, wantErr: "--echo-delay applies to --mode=echo only"},
		{name: "a negative echo delay", args: []string{"--mode=echo", "--echo-delay=-1s"}, wantErr: "--echo-delay=-1s is negative"},
		{name: "a negative concurrency", args: []string{"--mode=echo", "--concurrency=-2"}, wantErr: "--concurrency=-2 is negative"},
		{name: "a negative serving concurrency", args: []string{"--mode=echo", "--serving-concurrency=-1"}, wantErr: "--serving-concurrency=-1 is negative"},
		{name: "no shutdown grace", args: []string{"--mode=echo", "--shutdown-grace=0s"}, wantErr: "--shutdown-grace=0s must be positive"},
		{name: "an unknown flag", args: []string{"--mode=echo", "--verbose"}, wantErr: "parsing flags: flag provided but not defined: -verbose"},
		{name: "a bad duration", args: []string{"--mode=echo", "--echo-delay=soon"}, wantErr: `parsing flags: invalid value "soon" for flag -echo-delay`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseFlags(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error %q spans lines", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if diff := cmp.Diff(tt.want, summary(cfg), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseFlagsBindsZapFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"--mode=echo", "--zap-log-level=debug"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.zap.Level == nil || !cfg.zap.Level.Enabled(zapcore.DebugLevel) {
		t.Errorf("--zap-log-level=debug did not enable debug logs")
	}
}

func TestHandlerFor(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, r.Header.Get("Content-Type")+" "+strings.ToUpper(string(body)))
	}))
	defer srv.Close()

	tests := []struct {
		name    string
		args    []string
		want    string
		wantErr string
	}{
		{name: "exec", args: []string{"--mode=exec", "--", "tr", "a-z", "A-Z"}, want: "HELLO"},
		{name: "exec of a command that does not exist", args: []string{"--mode=exec", "--", "no-such-command-here"}, wantErr: `--mode=exec cannot run no-such-command-here: exec: "no-such-command-here": executable file not found`},
		{name: "http", args: []string{"--mode=http", "--url=" + srv.URL, "--content-type=text/plain"}, want: "text/plain HELLO"},
		{name: "echo", args: []string{"--mode=echo"}, want: "hello"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseFlags(tt.args)
			if err != nil {
				t.Fatal(err)
			}
			h, err := handlerFor(cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := h(t.Context(), &agent.Task{Name: "t", Input: "hello"})
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}

	if _, err := handlerFor(&config{mode: "grpc"}); err == nil {
		t.Error("no error for an unknown mode")
	}
}

func TestAgentOptions(t *testing.T) {
	tests := []struct {
		name             string
		args             []string
		wantRunningAfter time.Duration
	}{
		{name: "defaults", args: []string{"--mode=echo"}, wantRunningAfter: agent.DefaultRunningAfter},
		{name: "running at once", args: []string{"--mode=echo", "--running-after=0"}, wantRunningAfter: 0},
		{name: "running after a while", args: []string{"--mode=echo", "--running-after=3s"}, wantRunningAfter: 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseFlags(append(tt.args, "--concurrency=3", "--shutdown-grace=7s", "--health-addr=:9000", "--serving-addr=:9001", "--serving-concurrency=5"))
			if err != nil {
				t.Fatal(err)
			}
			o := agentOptions(cfg, funcr.New(func(string, string) {}, funcr.Options{}))
			if o.RunningAfter == nil || *o.RunningAfter != tt.wantRunningAfter {
				t.Errorf("RunningAfter %v, want %s", o.RunningAfter, tt.wantRunningAfter)
			}
			if o.Concurrency != 3 || o.ShutdownGrace != 7*time.Second || o.HealthAddr != ":9000" || o.ServingAddr != ":9001" || o.ServingConcurrency != 5 || o.Logger.GetSink() == nil {
				t.Errorf("options %+v do not follow the flags", o)
			}
			// The agent's identity stays with the environment the operator sets.
			if o.PodName != "" || o.Namespace != "" || o.Hive != "" {
				t.Errorf("identity set from flags: %+v", o)
			}
		})
	}
}

func TestLogged(t *testing.T) {
	tests := []struct {
		name      string
		verbosity int
		request   bool
		handler   agent.Handler
		wantLog   string // "" for none
	}{
		{
			name:    "a request's failure",
			request: true,
			handler: func(context.Context, *agent.Task) (string, error) { return "", errors.New("boom") },
			wantLog: `"msg"="request failed" "request"="t" "namespace"="ns" "attempt"=2`,
		},
		{
			name:    "a failure",
			handler: func(context.Context, *agent.Task) (string, error) { return "", errors.New("boom") },
			wantLog: `"msg"="task attempt failed" "task"="t" "namespace"="ns" "attempt"=2`,
		},
		{
			name:    "a failure that is not retried",
			handler: func(context.Context, *agent.Task) (string, error) { return "", agent.Permanent(errors.New("not JSON")) },
			wantLog: `"error"="not JSON" "permanent"=true`,
		},
		{
			name:    "a success, quietly",
			handler: func(context.Context, *agent.Task) (string, error) { return "ok", nil },
		},
		{
			name:      "a success, in debug",
			verbosity: 1,
			handler:   func(context.Context, *agent.Task) (string, error) { return "ok", nil },
			wantLog:   `"msg"="task attempt succeeded" "task"="t" "namespace"="ns" "attempt"=2`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var lines []string
			log := funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{Verbosity: tt.verbosity})
			wantResult, wantErr := tt.handler(t.Context(), nil)
			got, err := logged(log, tt.handler)(t.Context(), &agent.Task{Name: "t", Namespace: "ns", Attempt: 2, Request: tt.request})
			if got != wantResult || (err == nil) != (wantErr == nil) {
				t.Errorf("got %q, %v; want what the handler returned: %q, %v", got, err, wantResult, wantErr)
			}
			switch {
			case tt.wantLog == "" && len(lines) > 0:
				t.Errorf("logged %q", lines)
			case tt.wantLog != "" && (len(lines) != 1 || !strings.Contains(lines[0], tt.wantLog)):
				t.Errorf("logged %q, want one line containing %q", lines, tt.wantLog)
			}
		})
	}
}

func TestRun(t *testing.T) {
	// Without an identity the agent stops before it needs an API server.
	t.Setenv("POD_NAME", "")
	t.Setenv("POD_NAMESPACE", "")
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{name: "help", args: []string{"--help"}, wantCode: 0, wantStdout: "Usage: hive-agent --mode=exec|http|echo"},
		{name: "version", args: []string{"--version"}, wantCode: 0, wantStdout: "hive-agent devel (go"},
		{name: "a flag error", args: []string{"--mode=exec"}, wantCode: 2, wantStderr: "hive-agent: --mode=exec needs a command after --, as in hive-agent --mode=exec -- python3 summarize.py (see hive-agent --help)\n"},
		{name: "a command not found", args: []string{"--mode=exec", "--", "no-such-command-here"}, wantCode: 2, wantStderr: "hive-agent: --mode=exec cannot run no-such-command-here"},
		{name: "the agent failing", args: []string{"--mode=echo", "--health-addr=0"}, wantCode: 1, wantStderr: "no pod name or namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d; stderr: %s", code, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) || (tt.wantStdout == "" && stdout.Len() > 0) {
				t.Errorf("stdout %q, want it to contain %q", stdout.String(), tt.wantStdout)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) || (tt.wantStderr == "" && stderr.Len() > 0) {
				t.Errorf("stderr %q, want it to contain %q", stderr.String(), tt.wantStderr)
			}
			if tt.wantCode == 2 && strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("stderr %q is not one line", stderr.String())
			}
		})
	}
}

func TestHelpDescribesEveryFlag(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"-h"}, &out, io.Discard); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	newFlagSet(&config{}).VisitAll(func(f *flag.Flag) {
		if !strings.Contains(out.String(), "-"+f.Name) {
			t.Errorf("help does not mention -%s", f.Name)
		}
	})
}
