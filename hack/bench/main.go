// Command bench measures the Hive operator on this machine: throughput against the API
// server's own ceiling, latency against load, the API writes and the operator's CPU and
// memory per task, start-up with many tasks stored, and a warm agent against a Job per task
// on a simulated cluster. It starts everything it needs (envtest's API server and etcd, the
// operator as its own process, simulated agents, a kwok cluster) and removes it all at the
// end, also when interrupted.
//
//	go run ./hack/bench            # the full run (about 12 minutes on 2 cores)
//	go run ./hack/bench -quick     # about a minute; fails only if a task is lost
//	go run ./hack/bench -write-docs  # also rewrite docs/benchmarks.md and its plot
//
// The report is printed as Markdown on stdout and written as JSON to -out-json; progress goes
// to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/aihub-dev/hive-operator/test/operator"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

// config holds the command-line flags.
type config struct {
	quick         bool
	assets        string
	clusterAssets string
	kwokDir       string
	outJSON       string
	writeDocs     bool
	docsDir       string
	keep          bool
	pprof         bool

	burstTasks    intList
	burstAgents   int
	agentSweep    intList
	sweepTasks    int
	concurrency   int
	clients       int
	ratePercents  intList
	rateDuration  time.Duration
	stored        int
	storedClients int
	settle        time.Duration
	baseline      bool
	jobs          int
	jobGap        time.Duration
	warmGap       time.Duration
	kwokNodes     int
	taskDelay     time.Duration
	stall         time.Duration
	operatorQPS   int
	operatorBurst int
}

// intList is a comma-separated list of positive integers.
type intList []int

func (l *intList) String() string {
	parts := make([]string, 0, len(*l))
	for _, v := range *l {
		parts = append(parts, strconv.Itoa(v))
	}
	return strings.Join(parts, ",")
}

func (l *intList) Set(s string) error {
	var out intList
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil || v <= 0 {
			return fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, v)
	}
	*l = out
	return nil
}

// quickDefaults replace the defaults of the flags not given when -quick is.
var quickDefaults = map[string]string{
	"tasks":         "500",
	"agents":        "50",
	"agent-sweep":   "10,50",
	"sweep-tasks":   "500",
	"rates":         "50,100",
	"rate-duration": "5s",
	"stored":        "5000",
	"settle":        "5s",
	"jobs":          "10",
	"job-gap":       "300ms",
	"warm-gap":      "100ms",
}

func parseFlags(args []string) (*config, error) {
	c := &config{burstTasks: intList{1000, 10000}, agentSweep: intList{10, 100, 1000}, ratePercents: intList{25, 50, 75, 100}}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.BoolVar(&c.quick, "quick", false, "Run a ~1-minute version for CI (500 tasks, 10 and 50 agents, two rates for 5 s, 5k stored, 10 jobs); explicit flags still win.")
	fs.StringVar(&c.assets, "assets", "", "Folder with kube-apiserver and etcd (default: the last line of `hack/setup-envtest.sh envtest`).")
	fs.StringVar(&c.clusterAssets, "cluster-assets", "", "Folder with the binaries of a kwok cluster (default: `hack/setup-envtest.sh cluster`).")
	fs.StringVar(&c.kwokDir, "kwok-dir", "", "Folder with kwok and kwokctl (default: `hack/setup-envtest.sh print-kwok-dir`).")
	fs.StringVar(&c.outJSON, "out-json", filepath.Join(os.TempDir(), "bench-results.json"), "File the results are written to as JSON.")
	fs.BoolVar(&c.writeDocs, "write-docs", false, "Write docs/benchmarks.md and docs/benchmarks-latency.svg from this run.")
	fs.StringVar(&c.docsDir, "docs-dir", "docs", "Folder of the documentation, relative to the repository root.")
	fs.BoolVar(&c.keep, "keep", false, "Keep the work folder (kubeconfig, operator logs) instead of removing it.")
	fs.BoolVar(&c.pprof, "pprof", false, "Serve the operator's pprof profiles on a free port (printed).")

	fs.Var(&c.burstTasks, "tasks", "Task counts of the bursts (task-count sweep), with -agents agents.")
	fs.IntVar(&c.burstAgents, "agents", 100, "Agents of the task-count sweep and of the open-loop rates.")
	fs.Var(&c.agentSweep, "agent-sweep", "Agent counts of the agent sweep, each with -sweep-tasks tasks.")
	fs.IntVar(&c.sweepTasks, "sweep-tasks", 1000, "Tasks of each burst of the agent sweep.")
	fs.IntVar(&c.concurrency, "concurrency", 2, "Slots per agent (spec.agent.concurrency).")
	fs.IntVar(&c.clients, "clients", 32, "Goroutines creating tasks in a burst, and writing in the ceiling run.")
	fs.Var(&c.ratePercents, "rates", "Open-loop arrival rates, in percent of the measured ceiling.")
	fs.DurationVar(&c.rateDuration, "rate-duration", 20*time.Second, "How long tasks arrive at each open-loop rate.")
	fs.IntVar(&c.stored, "stored", 100000, "Queued tasks stored before a fresh operator starts (0 skips the phase).")
	fs.IntVar(&c.storedClients, "stored-clients", 64, "Goroutines creating the stored tasks.")
	fs.DurationVar(&c.settle, "settle", 10*time.Second, "How long the operator runs after start-up before its memory is read, with stored tasks.")
	fs.BoolVar(&c.baseline, "baseline", true, "Compare a Job per task with a warm agent on a kwok cluster.")
	fs.IntVar(&c.jobs, "jobs", 30, "Jobs, and warm tasks, of the kwok baseline.")
	fs.DurationVar(&c.jobGap, "job-gap", 500*time.Millisecond, "Time between two Job creations of the baseline.")
	fs.DurationVar(&c.warmGap, "warm-gap", 200*time.Millisecond, "Time between two task creations of the baseline.")
	fs.IntVar(&c.kwokNodes, "kwok-nodes", 2, "Simulated nodes of the kwok cluster.")
	fs.DurationVar(&c.taskDelay, "task-delay", 0, "How long each agent's handler works on a task (0: returns at once).")
	fs.DurationVar(&c.stall, "stall", time.Minute, "Give up waiting for a run's tasks when none has finished for this long (the rest count as stuck).")
	fs.IntVar(&c.operatorQPS, "operator-qps", 2000, "The operator's --kube-api-qps.")
	fs.IntVar(&c.operatorBurst, "operator-burst", 4000, "The operator's --kube-api-burst.")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("parsing flags: %w", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, v := range quickDefaults {
			if !set[name] {
				if err := fs.Set(name, v); err != nil {
					return nil, fmt.Errorf("setting -%s for -quick: %w", name, err)
				}
			}
		}
	}
	if c.burstAgents <= 0 || c.sweepTasks <= 0 || c.concurrency <= 0 || c.clients <= 0 || c.storedClients <= 0 || c.jobs <= 0 || c.kwokNodes <= 0 {
		return nil, errors.New("-agents, -sweep-tasks, -concurrency, -clients, -stored-clients, -jobs and -kwok-nodes must be positive")
	}
	if c.rateDuration <= 0 || c.stall <= 0 {
		return nil, errors.New("-rate-duration and -stall must be positive")
	}
	return c, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// The agents and caches log through controller-runtime; the bench reports instead.
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second interrupt ends the process at once
	}()
	code := run(ctx, cfg)
	stop()
	os.Exit(code)
}

// run runs the benchmark, reports, and returns the exit code: 1 when the program failed or a
// task did not succeed; targets never fail it.
func run(ctx context.Context, cfg *config) int {
	b := &bench{cfg: cfg, started: time.Now(), epoch: time.Now()}
	b.res = &Results{Mode: "full", StartedAt: b.started, Machine: machineInfo(), Settings: settingsOf(cfg)}
	if cfg.quick {
		b.res.Mode = "quick"
	}
	err := b.run(ctx)
	if err != nil {
		b.res.Errors = append(b.res.Errors, err.Error())
	}
	b.res.DurationSeconds = round(time.Since(b.started).Seconds(), 1)
	b.res.Targets = evaluateTargets(b.res)

	code := 0
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		code = 1
	}
	if lost := lostTasks(b.res); lost != "" {
		fmt.Fprintln(os.Stderr, "bench: tasks did not succeed:", lost)
		code = 1
	}
	fmt.Print(renderReport(b.res, "##"))
	if werr := writeJSON(cfg.outJSON, b.res); werr != nil {
		fmt.Fprintln(os.Stderr, "bench:", werr)
		code = 1
	} else {
		b.logf("results written to %s", cfg.outJSON)
	}
	if cfg.writeDocs {
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: the run failed; docs not written")
		} else if derr := b.writeDocs(); derr != nil {
			fmt.Fprintln(os.Stderr, "bench:", derr)
			code = 1
		}
	}
	b.logf("done in %s", time.Since(b.started).Round(time.Second))
	return code
}

// lostTasks describes the runs whose tasks did not all succeed.
func lostTasks(r *Results) string {
	var bad []string
	for _, run := range r.Runs {
		if !run.Outcome.OK() {
			bad = append(bad, run.Name+": "+fmtOutcome(run.Outcome))
		}
	}
	if bl := r.Baseline; bl != nil && bl.WarmTasks > 0 && bl.WarmSucceeded != bl.WarmTasks {
		bad = append(bad, fmt.Sprintf("warm tasks on kwok: %d/%d", bl.WarmSucceeded, bl.WarmTasks))
	}
	return strings.Join(bad, "; ")
}

func settingsOf(c *config) Settings {
	return Settings{
		Clients: c.clients, Concurrency: c.concurrency, TaskDelayMs: ms(c.taskDelay),
		BurstTasks: c.burstTasks, BurstAgents: c.burstAgents, AgentSweep: c.agentSweep, SweepTasks: c.sweepTasks,
		RatePercents: c.ratePercents, RateSeconds: c.rateDuration.Seconds(),
		StoredTasks: c.stored, SettleSeconds: c.settle.Seconds(),
		Jobs: c.jobs, JobGapMs: ms(c.jobGap), KwokNodes: c.kwokNodes,
		OperatorQPS: c.operatorQPS, OperatorBurst: c.operatorBurst, ClientQPS: clientQPS, APIWritesLimit: writesPerQuick,
	}
}

// bench is one run of the benchmark.
type bench struct {
	cfg            *config
	started, epoch time.Time
	root, workDir  string
	operatorBinary string
	res            *Results
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[bench %6.1fs] %s\n", time.Since(b.started).Seconds(), fmt.Sprintf(format, args...))
}

// run runs every phase; whatever it started is stopped before it returns.
func (b *bench) run(ctx context.Context) (err error) {
	if b.root, err = testenv.ModuleRoot(); err != nil {
		return err
	}
	if b.workDir, err = os.MkdirTemp("", "hive-bench-"); err != nil {
		return fmt.Errorf("creating a work folder: %w", err)
	}
	defer func() {
		if b.cfg.keep {
			b.logf("work folder kept: %s", b.workDir)
			return
		}
		_ = os.RemoveAll(b.workDir)
	}()

	built := make(chan error, 1)
	go func() {
		var berr error
		b.operatorBinary, berr = operator.Build(ctx, b.root, b.workDir)
		built <- berr
	}()
	if b.cfg.assets == "" {
		b.logf("providing the control-plane binaries (hack/setup-envtest.sh envtest)")
		if b.cfg.assets, err = setupEnvtest(ctx, b.root, "envtest"); err != nil {
			return err
		}
	}

	// The quick run creates the kwok cluster while the rest runs: its start-up is most of a
	// quick run's time, and a quick run's timings matter less than its length.
	var kwok *kwokFuture
	if b.cfg.baseline {
		if err := b.resolveKwokAssets(ctx); err != nil {
			return err
		}
		if b.cfg.quick {
			kwok = b.startKwok(ctx)
			defer kwok.delete()
		}
	}

	b.logf("starting the control plane from %s", b.cfg.assets)
	cp, err := startControlPlane(b.cfg.assets, b.workDir)
	if err != nil {
		return err
	}
	defer func() { _ = cp.stop() }()
	b.res.Machine.KubernetesVersion = serverVersion(cp.config)
	if err := <-built; err != nil {
		return err
	}
	env := &cluster{config: cp.config, client: cp.client, kubeconfig: cp.kubeconfig,
		pids: map[string]int{"apiserver": cp.apiserverPID, "etcd": cp.etcdPID}}
	if err := b.runEnvtestPhases(ctx, env); err != nil {
		return err
	}
	if err := cp.stop(); err != nil {
		return err
	}
	cp.env = nil

	if b.cfg.baseline {
		if kwok == nil {
			kwok = b.startKwok(ctx)
			defer kwok.delete()
		}
		bl, err := b.runBaseline(ctx, kwok)
		if bl != nil {
			b.res.Baseline = bl
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// runEnvtestPhases runs the bursts, the rates, the agent sweep and the stored tasks.
func (b *bench) runEnvtestPhases(ctx context.Context, env *cluster) error {
	c := b.cfg
	ceilingNS := "bench-ceiling"
	if err := createNamespace(ctx, env.client, ceilingNS); err != nil {
		return err
	}
	ceilRec := newRecorder(env.client, ceilingNS, b.epoch)
	recCtx, stopRec := context.WithCancel(ctx)
	defer stopRec()
	if err := ceilRec.start(recCtx); err != nil {
		return err
	}

	// Bursts with -agents agents, then the open-loop rates with the same agents.
	sizes := slices.Clone(c.burstTasks)
	if slices.Contains(c.agentSweep, c.burstAgents) && !slices.Contains(sizes, c.sweepTasks) {
		sizes = append(sizes, c.sweepTasks)
	}
	slices.Sort(sizes)
	var ceiling *CeilingResult
	err := b.withWorld(ctx, env, c.burstAgents, func(w *world) error {
		for _, n := range sizes {
			run, err := b.burst(ctx, env, w, ceilRec, n)
			if err != nil {
				return err
			}
			if run.Ceiling != nil {
				ceiling = run.Ceiling
			}
		}
		for _, pct := range c.ratePercents {
			if err := b.openLoop(ctx, w, pct, ceiling); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}

	// The agent sweep's other sizes.
	for _, agents := range c.agentSweep {
		if agents == c.burstAgents {
			continue
		}
		if err := b.withWorld(ctx, env, agents, func(w *world) error {
			_, err := b.burst(ctx, env, w, ceilRec, c.sweepTasks)
			return err
		}); err != nil {
			return err
		}
	}

	if c.stored > 0 {
		stored, err := b.runStored(ctx, env)
		if stored != nil {
			b.res.Stored = stored
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// withWorld sets up a world of n agents, runs f in it and tears it down.
func (b *bench) withWorld(ctx context.Context, env *cluster, agents int, f func(*world) error) error {
	name := fmt.Sprintf("bench-a%d", agents)
	b.logf("%s: starting the operator and %d agents", name, agents)
	w, err := b.newWorld(ctx, env, worldSpec{ns: name, hive: "bench", agents: agents, concurrency: b.cfg.concurrency, markReady: true})
	if err != nil {
		return err
	}
	defer w.close()
	return f(w)
}

// burst runs the ceiling of n tasks, then a burst of n tasks through the operator.
func (b *bench) burst(ctx context.Context, env *cluster, w *world, ceilRec *recorder, n int) (RunResult, error) {
	b.logf("ceiling: %d tasks written by %d plain clients", n, b.cfg.clients)
	ceiling, err := runCeiling(ctx, env.client, ceilRec, w.meter, w.cores, fmt.Sprintf("ceiling-%dx%d", n, w.agents), n, b.cfg.clients)
	if err != nil {
		return RunResult{}, err
	}
	b.logf("ceiling: %.0f tasks/s (%.0f writes/s)", ceiling.TasksPerSec, ceiling.WritesPerSec)
	b.logf("burst: %d tasks for %d agents × %d slots", n, w.agents, w.concurrency)
	run, err := w.run(ctx, runSpec{
		name: fmt.Sprintf("burst %d tasks, %d agents", n, w.agents), prefix: fmt.Sprintf("burst-%dx%d", n, w.agents),
		kind: kindBurst, tasks: n, drive: burstDriver(n, b.cfg.clients),
	})
	if err != nil {
		return run, err
	}
	run.Ceiling = ceiling
	run.CeilingRatio = round(ratio(run.TasksPerSec, ceiling.TasksPerSec), 3)
	b.res.Runs = append(b.res.Runs, run)
	b.logf("burst: %s succeeded, %.0f tasks/s (%.0f %% of the ceiling), queue wait p99 %s ms",
		fmtOutcome(run.Outcome), run.TasksPerSec, 100*run.CeilingRatio, fmtMs(run.QueueWait.P99))
	return run, nil
}

// openLoop runs tasks arriving at pct % of the ceiling for the rate duration.
func (b *bench) openLoop(ctx context.Context, w *world, pct int, ceiling *CeilingResult) error {
	if ceiling == nil || ceiling.TasksPerSec <= 0 {
		return errors.New("no ceiling was measured for the open-loop rates")
	}
	rate := ceiling.TasksPerSec * float64(pct) / 100
	n := max(int(rate*b.cfg.rateDuration.Seconds()), 1)
	b.logf("open loop: %.0f tasks/s (%d %% of the ceiling) for %s: %d tasks", rate, pct, b.cfg.rateDuration, n)
	run, err := w.run(ctx, runSpec{
		name: fmt.Sprintf("open loop %d %%", pct), prefix: fmt.Sprintf("rate-%d", pct),
		kind: kindOpenLoop, tasks: n, drive: rateDriver(n, rate),
	})
	if err != nil {
		return err
	}
	run.RatePercent, run.TargetRate = float64(pct), round(rate, 1)
	run.Ceiling = ceiling // the reference the rate was set from
	b.res.Runs = append(b.res.Runs, run)
	b.logf("open loop: %s succeeded, queue wait p50/p95/p99 %s ms", fmtOutcome(run.Outcome), fmtPcts(run.QueueWait, false))
	return nil
}

// writeDocs writes docs/benchmarks.md and its plot.
func (b *bench) writeDocs() error {
	dir := b.cfg.docsDir
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(b.root, dir)
	}
	const plotName = "benchmarks-latency.svg"
	svg := latencySVG("Latency against arrival rate ("+b.res.Mode+" run)", plotPoints(b.res))
	if err := os.WriteFile(filepath.Join(dir, plotName), []byte(svg), 0o644); err != nil { //nolint:gosec // documentation
		return fmt.Errorf("writing the plot: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "benchmarks.md"), []byte(renderDocs(b.res, plotName)), 0o644); err != nil { //nolint:gosec // documentation
		return fmt.Errorf("writing docs/benchmarks.md: %w", err)
	}
	b.logf("wrote %s and %s", filepath.Join(dir, "benchmarks.md"), filepath.Join(dir, plotName))
	return nil
}
