// Command perf measures the Hive operator on this machine: throughput against the API
// server's own ceiling, latency against load, the API writes and the operator's CPU and
// memory per task, start-up with many tasks stored, memory over a long run with retention,
// and a warm agent against a Job per task on a simulated cluster. It starts all it needs and
// removes it at the end, also when interrupted. The make targets (bench, bench-quick,
// bench-steady) provide the control-plane binaries, as they do for the tests.
//
// The workloads and the targets are data (configs/*.yaml). The results are written as JSON
// to -out-json; the checker and the report (Markdown on stdout, and with -write-docs the docs
// page) work from that file, so any run's results render again (-from-json).
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/aihub-dev/hive-operator/test/perf/checker"
	"github.com/aihub-dev/hive-operator/test/perf/config"
	"github.com/aihub-dev/hive-operator/test/perf/report"
	"github.com/aihub-dev/hive-operator/test/perf/results"
	"github.com/aihub-dev/hive-operator/test/perf/runner"
	"github.com/aihub-dev/hive-operator/test/perf/scraper"
	"github.com/aihub-dev/hive-operator/test/perf/stats"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

var (
	quick     = flag.Bool("quick", false, "Run configs/quick.yaml: about three minutes, for CI.")
	workload  = flag.String("config", "", "Workload file (default: test/perf/configs/full.yaml, or quick.yaml with -quick).")
	targets   = flag.String("targets", "", "Targets file (default: test/perf/configs/targets.yaml).")
	outJSON   = flag.String("out-json", filepath.Join(os.TempDir(), "bench-results.json"), "File the results are written to as JSON.")
	fromJSON  = flag.String("from-json", "", "Run nothing: check and render the results in this file.")
	writeDocs = flag.Bool("write-docs", false, "Write docs/benchmarks.md, its plots and the results (benchmarks.json) from the results.")
	into      = flag.String("into", "", "Put this run's steady run into the results in this file, in place of theirs, before checking and rendering\n"+
		"(the steady run alone, configs/steady.yaml, updates the page of a full run).")
	opts runner.Options
)

func main() {
	flag.BoolVar(&opts.Keep, "keep", false, "Keep the work folder (kubeconfig, operator logs) instead of removing it.")
	flag.BoolVar(&opts.Pprof, "pprof", false, "Serve the operator's pprof profiles on a free port (printed).")
	flag.Parse()
	// The agents and caches log through controller-runtime; the benchmark reports instead.
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second interrupt ends the process at once
	}()
	code := run(ctx)
	stop()
	os.Exit(code)
}

// run runs the benchmark (or reads earlier results), checks and reports, and returns the
// exit code: 1 when the program failed or a task did not succeed; targets never fail it.
func run(ctx context.Context) (code int) {
	started := time.Now()
	opts.Logf = func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[perf %6.1fs] %s\n", time.Since(started).Seconds(), fmt.Sprintf(format, args...))
	}
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "perf:", err)
		return 1
	}
	root, err := testenv.ModuleRoot()
	if err != nil {
		return fail(err)
	}
	configs, path := filepath.Join(root, "test", "perf", "configs"), cmp.Or(*fromJSON, *outJSON)
	tg, err := config.LoadTargets(cmp.Or(*targets, filepath.Join(configs, "targets.yaml")))
	if err == nil { // a target whose figure cannot be computed is refused before a run, not after it
		_, err = checker.Check(&results.Results{}, tg)
	}
	var res *results.Results
	switch {
	case err == nil && *fromJSON != "":
		res, err = results.Read(*fromJSON)
	case err == nil:
		name := map[bool]string{false: "full.yaml", true: "quick.yaml"}[*quick]
		var w *config.Workload
		if w, err = config.LoadWorkload(cmp.Or(*workload, filepath.Join(configs, name))); err == nil {
			res = &results.Results{StartedAt: started, Machine: scraper.Machine(), Settings: *w}
			opts.Workload = *w
			if err := runner.Run(ctx, opts, res); err != nil { // the results so far are still written
				res.Errors, code = append(res.Errors, err.Error()), fail(err)
			}
			res.DurationSeconds = stats.Round(time.Since(started).Seconds(), 1)
			if *into != "" {
				res, err = results.MergeSteady(*into, res)
			}
		}
	}
	if err == nil {
		res.Targets, err = checker.Check(res, tg)
	}
	if res != nil { // what was measured is kept, whatever failed
		err = errors.Join(err, res.Write(path))
		opts.Logf("results written to %s", path)
	}
	if err == nil {
		err = report.Markdown(os.Stdout, res, "##")
	}
	if err != nil {
		return fail(err)
	}
	if lost := res.Lost(); lost != "" {
		code = fail(errors.New("tasks did not succeed: " + lost))
	}
	if *writeDocs {
		if len(res.Errors) > 0 {
			return fail(errors.New("the run failed; docs not written"))
		}
		if err := report.WriteDocs(filepath.Join(root, "docs"), res); err != nil {
			return fail(err)
		}
		opts.Logf("wrote %s and its plots", filepath.Join(root, "docs", "benchmarks.md"))
	}
	opts.Logf("done in %s", time.Since(started).Round(time.Second))
	return code
}
