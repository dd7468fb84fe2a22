// Command perf measures the Hive operator on this machine: throughput against the API
// server's own ceiling, latency against load, the API writes and the operator's CPU and
// memory per task, start-up with many tasks stored, memory over a long run with retention,
// and a warm agent against a Job per task on a simulated cluster. It starts everything it needs and removes it all at the end, also
// when interrupted.
//
//	make bench                          # the full run, configs/full.yaml (about 55 minutes on 2 cores)
//	make bench-quick                    # configs/quick.yaml, about three minutes; fails only if a task is lost
//	make bench BENCH_FLAGS=-write-docs  # also rewrite docs/benchmarks.md, its plots and benchmarks.json
//	make bench-steady                   # the half-hour steady run alone (configs/steady.yaml), put into
//	                                    # docs/benchmarks.json and its page with -into and -write-docs
//	go run ./test/perf -from-json f     # check and render the results of an earlier run
//
// The make targets provide the control-plane binaries, as they do for the tests.
// The workloads and the targets are data (configs/*.yaml). The results are written as JSON
// to -out-json; the checker and the report (Markdown on stdout, and the docs page) work from
// that file, so any run's results render again. Progress goes to stderr.
package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
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
	var res *results.Results
	switch {
	case err == nil && *fromJSON != "":
		res, err = results.Read(*fromJSON)
	case err == nil:
		name := "full.yaml"
		if *quick {
			name = "quick.yaml"
		}
		var w *config.Workload
		if w, err = config.LoadWorkload(cmp.Or(*workload, filepath.Join(configs, name))); err == nil {
			res = &results.Results{StartedAt: started, Machine: scraper.Machine(), Settings: *w}
			opts.Workload = *w
			if err := runner.Run(ctx, opts, res); err != nil { // the results so far are still written
				res.Errors, code = append(res.Errors, err.Error()), fail(err)
			}
			res.DurationSeconds = stats.Round(time.Since(started).Seconds(), 1)
			if *into != "" {
				res, err = mergeInto(*into, res)
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
		dir, plotName, memoryName := filepath.Join(root, "docs"), "benchmarks-latency.svg", ""
		var page, plot, memory bytes.Buffer
		err := report.Plot(&plot, res, "svg")
		if res.Steady != nil {
			memoryName = "benchmarks-memory.svg"
			err = errors.Join(err, report.PlotMemory(&memory, res, "svg"), os.WriteFile(filepath.Join(dir, memoryName), memory.Bytes(), 0o644))
		}
		if err = errors.Join(err, report.Docs(&page, res, plotName, memoryName)); err == nil {
			err = errors.Join(os.WriteFile(filepath.Join(dir, "benchmarks.md"), page.Bytes(), 0o644),
				os.WriteFile(filepath.Join(dir, plotName), plot.Bytes(), 0o644), res.Write(filepath.Join(dir, "benchmarks.json")))
		}
		if err != nil {
			return fail(fmt.Errorf("writing the docs: %w", err))
		}
		opts.Logf("wrote %s and its plot", filepath.Join(dir, "benchmarks.md"))
	}
	opts.Logf("done in %s", time.Since(started).Round(time.Second))
	return code
}

// mergeInto returns the results in path with the steady run of res in place of theirs
// (the bursts it ran for its ceiling are left out), and its errors added.
func mergeInto(path string, res *results.Results) (*results.Results, error) {
	base, err := results.Read(path)
	if err != nil || res.Steady == nil {
		return nil, errors.Join(err, errors.New("-into: this run has no steady run"))
	}
	run := res.Run(res.Steady.Name)
	base.Runs = append(slices.DeleteFunc(base.Runs, func(r results.Run) bool { return r.Kind == results.KindSteady }), *run)
	base.Steady, base.Settings.Steady = res.Steady, res.Settings.Steady
	base.Errors = append(base.Errors, res.Errors...)
	return base, nil
}
