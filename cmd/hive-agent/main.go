// Command hive-agent runs work written in any language as a Hive agent: a command run per
// task, an HTTP endpoint posted each task, or an echo for demos and benchmarks.
//
//	hive-agent --mode=exec -- python3 summarize.py
//	hive-agent --mode=http --url=http://localhost:8000/run
//	hive-agent --mode=echo --echo-delay=50ms
//
// It takes the tasks bound to its pod as the agent SDK (pkg/agent) does, with the handlers
// of pkg/handlers, and stops gracefully on SIGTERM or SIGINT. It exits with 2 when its
// flags are wrong and with 1 when the agent fails.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	// Mozilla's root certificates, used only where the system has none: the agent's image
	// holds nothing but its binary, and --mode=http may post to an https:// endpoint.
	_ "golang.org/x/crypto/x509roots/fallback"

	"github.com/go-logr/logr"
	"k8s.io/utils/ptr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/aihub-dev/hive-operator/internal/version"
	"github.com/aihub-dev/hive-operator/pkg/agent"
	"github.com/aihub-dev/hive-operator/pkg/handlers"
)

// The ways hive-agent runs a task.
const (
	modeExec = "exec"
	modeHTTP = "http"
	modeEcho = "echo"
)

// config is hive-agent's command line.
type config struct {
	version       bool
	mode          string
	command       []string // for exec: the arguments after --
	url           string
	contentType   string
	echoDelay     time.Duration
	healthAddr    string
	servingAddr   string
	servingSlots  int
	runningAfter  time.Duration
	shutdownGrace time.Duration
	concurrency   int
	zap           zap.Options
}

// modeFlags are the flags that mean something in one mode only: given in another, they
// are a mistake worth reporting rather than ignoring.
var modeFlags = []struct{ flag, mode string }{
	{"url", modeHTTP},
	{"content-type", modeHTTP},
	{"echo-delay", modeEcho},
}

const usageHeader = `Usage: hive-agent --mode=exec|http|echo [flags] [-- command [args...]]

Runs as a Hive agent, taking the tasks bound to its pod (and, when its hive has
spec.serving, the requests the hive gateway sends it) and running each
  with --mode=exec: as the command after --, with the task's input on stdin and
    TASK_NAME, TASK_NAMESPACE, TASK_ATTEMPT and TASK_HIVE set; stdout is the result
    and a non-zero exit fails the attempt
  with --mode=http: as a POST of the input to --url, with X-Task-* headers; the
    body of a 2xx answer is the result and any other status fails the attempt
  with --mode=echo: by returning the input, after --echo-delay

Flags:
`

func newFlagSet(cfg *config) *flag.FlagSet {
	fs := flag.NewFlagSet("hive-agent", flag.ContinueOnError)
	fs.StringVar(&cfg.mode, "mode", "", "How each task is run: exec, http or echo. Required.")
	fs.BoolVar(&cfg.version, "version", false, "Print the version and exit.")
	fs.StringVar(&cfg.url, "url", "", "With --mode=http: the http:// or https:// endpoint each task is posted to.")
	fs.StringVar(&cfg.contentType, "content-type", "application/json", "With --mode=http: the Content-Type of the requests.")
	fs.DurationVar(&cfg.echoDelay, "echo-delay", 0, "With --mode=echo: how long each task takes.")
	fs.StringVar(&cfg.healthAddr, "health-addr", ":8080", "Address /healthz and /readyz are served on; 0 disables them.")
	fs.StringVar(&cfg.servingAddr, "serving-addr", "",
		"Address requests from the hive gateway are served on (POST /v1/requests), run like tasks; empty takes :$AGENT_SERVING_PORT, which the operator sets when the hive has spec.serving; 0 disables them.")
	fs.IntVar(&cfg.servingSlots, "serving-concurrency", 0, "Requests served at once; 0 takes it from $AGENT_SERVING_CONCURRENCY, which the operator sets.")
	fs.DurationVar(&cfg.runningAfter, "running-after", agent.DefaultRunningAfter,
		"How long a task runs before it is marked Running; quicker tasks skip that write. 0 marks every task at once.")
	fs.DurationVar(&cfg.shutdownGrace, "shutdown-grace", 20*time.Second,
		"How long running tasks may finish after SIGTERM before they are stopped and handed back; keep it below the pod's terminationGracePeriodSeconds.")
	fs.IntVar(&cfg.concurrency, "concurrency", 0, "Tasks run at once; 0 takes it from $AGENT_CONCURRENCY, which the operator sets.")
	cfg.zap.BindFlags(fs)
	fs.Usage = func() {
		_, _ = io.WriteString(fs.Output(), usageHeader)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags reads and checks the command line (without the program's name).
func parseFlags(args []string) (*config, error) {
	cfg := &config{}
	fs := newFlagSet(cfg)
	fs.SetOutput(io.Discard) // the caller reports the error, on one line
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("parsing flags: %w", err)
	}
	cfg.command = fs.Args()
	if cfg.version {
		return cfg, nil
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if err := cfg.validate(set); err != nil {
		return nil, err
	}
	return cfg, nil
}

// validate checks a parsed command line; set holds the flags given on it.
func (c *config) validate(set map[string]bool) error {
	switch c.mode {
	case "":
		return errors.New("--mode is required: exec, http or echo")
	case modeExec:
		if len(c.command) == 0 {
			return errors.New("--mode=exec needs a command after --, as in hive-agent --mode=exec -- python3 summarize.py")
		}
	case modeHTTP:
		if c.url == "" {
			return errors.New("--mode=http needs --url, the endpoint each task is posted to")
		}
		if u, err := url.Parse(c.url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--url=%s is not an http:// or https:// URL", c.url)
		}
	case modeEcho:
	default:
		return fmt.Errorf("--mode=%s is not one of exec, http, echo", c.mode)
	}
	if c.mode != modeExec && len(c.command) > 0 {
		return fmt.Errorf("--mode=%s runs no command, but %q follows the flags", c.mode, strings.Join(c.command, " "))
	}
	for _, f := range modeFlags {
		if set[f.flag] && c.mode != f.mode {
			return fmt.Errorf("--%s applies to --mode=%s only", f.flag, f.mode)
		}
	}
	switch {
	case c.echoDelay < 0:
		return fmt.Errorf("--echo-delay=%s is negative", c.echoDelay)
	case c.concurrency < 0:
		return fmt.Errorf("--concurrency=%d is negative; 0 takes it from $AGENT_CONCURRENCY", c.concurrency)
	case c.servingSlots < 0:
		return fmt.Errorf("--serving-concurrency=%d is negative; 0 takes it from $AGENT_SERVING_CONCURRENCY", c.servingSlots)
	case c.shutdownGrace <= 0:
		return fmt.Errorf("--shutdown-grace=%s must be positive", c.shutdownGrace)
	}
	return nil
}

// handlerFor builds the handler of the configured mode.
func handlerFor(cfg *config) (agent.Handler, error) {
	switch cfg.mode {
	case modeExec:
		// A command that cannot be found would fail every task: refuse to start instead.
		if _, err := exec.LookPath(cfg.command[0]); err != nil {
			return nil, fmt.Errorf("--mode=exec cannot run %s: %w", cfg.command[0], err)
		}
		// The command's stderr goes to the agent's log too, where its warnings can be read
		// even when the task succeeds.
		return handlers.Exec(cfg.command, handlers.ExecOptions{Stderr: os.Stderr}), nil
	case modeHTTP:
		return handlers.HTTP(cfg.url, handlers.HTTPOptions{ContentType: cfg.contentType}), nil
	case modeEcho:
		return handlers.Echo(cfg.echoDelay), nil
	}
	return nil, fmt.Errorf("--mode=%s is not one of exec, http, echo", cfg.mode)
}

// agentOptions are the agent's options from the command line.
func agentOptions(cfg *config, log logr.Logger) agent.Options {
	return agent.Options{
		Concurrency:        cfg.concurrency,
		RunningAfter:       ptr.To(cfg.runningAfter),
		ShutdownGrace:      cfg.shutdownGrace,
		HealthAddr:         cfg.healthAddr,
		ServingAddr:        cfg.servingAddr,
		ServingConcurrency: cfg.servingSlots,
		Logger:             log,
	}
}

// logged logs each attempt's outcome: failures, and with -zap-log-level=debug successes.
func logged(log logr.Logger, handler agent.Handler) agent.Handler {
	return func(ctx context.Context, task *agent.Task) (string, error) {
		start := time.Now()
		result, err := handler(ctx, task)
		what, kv := "task attempt", []any{"task", task.Name, "namespace", task.Namespace, "attempt", task.Attempt, "duration", time.Since(start)}
		if task.Request {
			what, kv[0] = "request", "request"
		}
		if err != nil {
			log.Info(what+" failed", append(kv, "error", err.Error(), "permanent", agent.IsPermanent(err))...)
		} else {
			log.V(1).Info(what+" succeeded", append(kv, "resultBytes", len(result))...)
		}
		return result, err
	}
}

// run is the program: it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		fs := newFlagSet(&config{})
		fs.SetOutput(stdout)
		fs.Usage()
		return 0
	}
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "hive-agent: %v (see hive-agent --help)\n", err)
		return 2
	}
	if cfg.version {
		_, _ = fmt.Fprintln(stdout, version.String("hive-agent"))
		return 0
	}
	handler, err := handlerFor(cfg)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "hive-agent: %v\n", err)
		return 2
	}

	log := zap.New(zap.UseFlagOptions(&cfg.zap), zap.WriteTo(stderr))
	ctrllog.SetLogger(log) // for the controller-runtime cache under the agent
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := agent.Run(ctx, agentOptions(cfg, log), logged(log, handler)); err != nil {
		log.Error(err, "the agent stopped")
		return 1
	}
	return 0
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
