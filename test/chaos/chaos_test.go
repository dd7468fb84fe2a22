//go:build chaos

// Package chaos proves that no task is lost, run twice without cause or left stuck while
// everything around the operator fails. On a kwokctl cluster (a real etcd, API server,
// scheduler and controller manager; kwok plays the nodes) it runs two operator processes
// under leader election and real SDK agents, and keeps a mixed workload flowing (quick and
// long tasks, priorities, dependencies, cancellations, TTLs) while:
//
//   - the leading operator is SIGKILLed every few seconds (another takes over);
//   - a loopback proxy between the operators and agents and the API server answers a share
//     of writes with 409 or 500 (some after carrying them out), delays some and cuts
//     watches;
//   - agent pods are deleted at once (their agent dies) and gracefully (their agent gets
//     SIGTERM), and a node is drained through the eviction API against the hive's budget;
//   - the API server is restarted (etcd keeps its data);
//   - the template is rolled out with new agents that take seconds to become Ready;
//   - an operator runs with its client limited to one request a second.
//
// It checks, from watches of every task and pod and from the agents' record of handler
// calls: every task ends; no handler runs twice for one attempt, and a task runs to
// completion twice only after its agent was really lost; no agent holds more tasks than
// its slots; the operator deletes no busy agent; during the rollout no ready agent's slot
// stays free while tasks wait; a release costs no retry and an agent stopping gracefully
// is never declared lost; everything finishes within a bound once the faults stop. It
// prints a summary and fails on any violation.
//
// Run it with `make test-chaos`; `go test -tags chaos ./test/chaos -args -long=30m` keeps
// the faults going for as long as wanted.
package chaos

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/intstr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/aihub-dev/hive-operator/test/builder"
	"github.com/aihub-dev/hive-operator/test/faultproxy"
)

var (
	long = flag.Duration("long", 0, "how long the faults go on (default 100s)")
	seed = flag.Uint64("seed", uint64(time.Now().UnixNano()), "seed of the workload and the faults")
)

const (
	replicas    = 4
	concurrency = 3
	// finishBound is how long after the faults stop every task must have finished.
	finishBound = 3 * time.Minute
)

func TestMain(m *testing.M) {
	// The agents' clients log through controller-runtime; the summary says what matters.
	ctrllog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}

func TestChaos(t *testing.T) {
	ctx := context.Background()
	faulty := 100 * time.Second
	if *long > 0 {
		faulty = *long
	}
	t.Logf("seed %d; faults for %s", *seed, faulty)
	rng := rand.New(rand.NewPCG(*seed, *seed^0x9e3779b97f4a7c15))
	logf := func(format string, args ...any) {
		t.Logf("%s "+format, append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}
	w, err := newWorld(ctx, logf)
	if w != nil {
		defer w.close()
	}
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := w.startOperator(ctx); err != nil {
			t.Fatal(err)
		}
	}
	hive := builder.Hive(ns, hiveName).Replicas(replicas).Concurrency(concurrency).
		DrainTimeout(30*time.Minute).TerminationGrace(15*time.Second).
		Rollout(intstr.FromInt32(1), intstr.FromInt32(0)).Obj()
	if err := w.admin.Create(ctx, hive); err != nil {
		t.Fatal(err)
	}
	if err := wait(ctx, 2*time.Minute, func() error { return w.rolledOut(ctx) }); err != nil {
		t.Fatal(err)
	}
	logf("hive of %d agents ready; %d running", replicas, len(w.fleet.Running()))
	wl := newWorkload(w.admin, *seed)

	// The faults.
	start := time.Now()
	faultCtx, stopFaults := context.WithTimeout(ctx, faulty)
	defer stopFaults()
	go wl.run(faultCtx, 6)
	if err := w.proxy.SetFaults(faultproxy.Faults{
		Seed: *seed, Writes: faultproxy.NotLeases,
		Conflict: 0.04, Error: 0.03, ErrorAfter: 0.03, Delay: 0.1, MaxDelay: 300 * time.Millisecond,
		Watches: faultproxy.NotLeases, DropWatch: 0.2, MaxWatchLifetime: 20 * time.Second,
	}); err != nil {
		t.Fatal(err)
	}
	go w.killLeaders(faultCtx, rand.New(rand.NewPCG(rng.Uint64(), 1)), 8*time.Second)
	go w.deletePods(faultCtx, rand.New(rand.NewPCG(rng.Uint64(), 2)), 6*time.Second)
	drained := make(chan error, 1)
	go func() {
		sleep(faultCtx, faulty*2/5)
		drained <- w.drainNode(faultCtx)
	}()
	restarted := make(chan error, 1)
	go func() {
		sleep(faultCtx, faulty*7/10)
		logf("restarting the API server")
		err := w.cluster.RestartAPIServer(ctx)
		if err == nil {
			w.faults.count("API server restarts")
		}
		restarted <- err
	}()
	<-faultCtx.Done()
	if err := <-drained; err != nil {
		t.Errorf("draining a node: %v", err)
	}
	if err := <-restarted; err != nil {
		t.Fatalf("restarting the API server: %v", err)
	}
	_ = w.proxy.SetFaults(faultproxy.Faults{})
	logf("faults stopped after %s; %d tasks created", time.Since(start).Round(time.Second), len(wl.names()))

	// Two operators again, for the rollout.
	w.opMu.Lock()
	running := len(w.ops)
	w.opMu.Unlock()
	for range max(0, 2-running) {
		if _, err := w.startOperator(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// A rollout under load, with no other fault, so that its capacity is measured alone.
	gaps := w.rollOutUnderLoad(ctx, t, logf)

	// An operator whose client may make one request a second.
	w.stopOperators(false)
	if _, err := w.startOperator(ctx, "--leader-elect=false", "--kube-api-qps=1", "--kube-api-burst=1"); err != nil {
		t.Fatal(err)
	}
	slow := newWorkload(w.admin, *seed+7)
	slow.seq.Store(900000)
	for range 15 {
		slow.create(ctx, builder.Task(ns, fmt.Sprintf("slow-%d", slow.seq.Add(1))).Hive(hiveName).Input(input("quick", 20)).Obj())
	}
	qpsStart := time.Now()
	if err := wait(ctx, 4*time.Minute, func() error {
		if left := w.obs.unfinished(slow.names()); len(left) > 0 {
			return fmt.Errorf("%d tasks unfinished", len(left))
		}
		return nil
	}); err != nil {
		t.Errorf("with the operator's client at 1 request a second: %v", err)
	}
	logf("15 tasks with the operator at QPS 1 finished in %s", time.Since(qpsStart).Round(time.Second))
	w.faults.count("runs with the operator's client at QPS 1")
	w.stopOperators(false)
	for range 2 {
		if _, err := w.startOperator(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// Everything finishes.
	created := wl.names()
	for name := range slow.names() {
		created[name] = true
	}
	for name := range gaps.created {
		created[name] = true
	}
	finishStart := time.Now()
	if err := wait(ctx, finishBound, func() error {
		if left := w.obs.unfinished(created); len(left) > 0 {
			return fmt.Errorf("%d tasks unfinished, e.g. %s", len(left), strings.Join(left[:min(5, len(left))], ", "))
		}
		return nil
	}); err != nil {
		t.Errorf("after the faults stopped: %v", err)
	}
	logf("all %d tasks finished %s after the last fault", len(created), time.Since(finishStart).Round(time.Second))
	time.Sleep(2 * time.Second) // the last watch events

	violations, report := w.obs.violations(created, w.runs.all(), w.faults)
	violations = append(violations, gaps.violations...)
	t.Log("\n" + summary(w, report, gaps, violations))
	for _, v := range violations {
		t.Error(v)
	}
	if t.Failed() {
		w.keepLogs(t)
	}
}

// rolloutReport is what the rollout phase measured.
type rolloutReport struct {
	created    map[string]bool
	samples    int
	gapSamples int
	longestGap time.Duration
	took       time.Duration
	violations []string
}

// rollOutUnderLoad rolls out a new template while tasks keep the hive's slots full, and
// samples every 250ms whether tasks wait while ready agents (of either revision) have free
// slots: that may last a moment (dispatch is not instant), never long.
func (w *world) rollOutUnderLoad(ctx context.Context, t *testing.T, logf func(string, ...any)) rolloutReport {
	const gapLimit = 3 * time.Second
	rep := rolloutReport{}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	load := newWorkload(w.admin, *seed+3)
	load.seq.Store(500000)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-loadCtx.Done():
				return
			case <-tick.C:
				name := fmt.Sprintf("r-%06d", load.seq.Add(1))
				load.create(loadCtx, builder.Task(ns, name).Hive(hiveName).Input(input("long", 1000+load.intn(1000))).Obj())
			}
		}
	}()
	sleep(ctx, 5*time.Second) // the queue fills
	start := time.Now()
	if err := w.rollOut(ctx); err != nil {
		t.Fatal(err)
	}
	var gapSince time.Time
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
		waiting, free := w.obs.capacityGap(time.Now())
		rep.samples++
		if waiting > 0 && free > 0 {
			rep.gapSamples++
			if gapSince.IsZero() {
				gapSince = time.Now()
			}
			if d := time.Since(gapSince); d > rep.longestGap {
				rep.longestGap = d
			}
		} else {
			gapSince = time.Time{}
		}
		if w.rolledOut(ctx) == nil {
			break
		}
	}
	rep.took = time.Since(start)
	if err := w.rolledOut(ctx); err != nil {
		rep.violations = append(rep.violations, fmt.Sprintf("the rollout did not finish within 3m: %v", err))
	}
	if rep.longestGap > gapLimit {
		rep.violations = append(rep.violations, fmt.Sprintf("during the rollout, tasks waited for %s while ready agents had free slots", rep.longestGap.Round(time.Millisecond)))
	}
	stopLoad()
	rep.created = load.names()
	logf("rollout done in %s under load: %d of %d samples saw tasks waiting beside free ready slots, the longest for %s",
		rep.took.Round(time.Second), rep.gapSamples, rep.samples, rep.longestGap.Round(time.Millisecond))
	return rep
}

func summary(w *world, report map[string]int, gaps rolloutReport, violations []string) string {
	var b strings.Builder
	b.WriteString("chaos summary\n")
	b.WriteString("outcomes:\n")
	keys := make([]string, 0, len(report))
	for k := range report {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %-40s %d\n", k, report[k])
	}
	b.WriteString("faults injected:\n")
	b.WriteString(w.faults.summary())
	s := w.proxy.Stats()
	fmt.Fprintf(&b, "  %-40s %d of %d writes\n", "proxy: writes refused with 409", s.Conflicts, s.Writes)
	fmt.Fprintf(&b, "  %-40s %d\n", "proxy: writes refused with 500", s.Errors)
	fmt.Fprintf(&b, "  %-40s %d\n", "proxy: writes done, answered 500", s.ErrorsAfter)
	fmt.Fprintf(&b, "  %-40s %d\n", "proxy: writes delayed", s.Delayed)
	fmt.Fprintf(&b, "  %-40s %d of %d watches\n", "proxy: watches cut", s.DroppedWatches, s.Watches)
	fmt.Fprintf(&b, "rollout: %s, longest wait beside free ready slots %s (%d of %d samples)\n",
		gaps.took.Round(time.Second), gaps.longestGap.Round(time.Millisecond), gaps.gapSamples, gaps.samples)
	w.obs.mu.Lock()
	fmt.Fprintf(&b, "observer: watches resumed by a list %d times (the API server's restart)\n", w.obs.relists)
	w.obs.mu.Unlock()
	fmt.Fprintf(&b, "violations: %d\n", len(violations))
	return b.String()
}

// keepLogs copies the operators' logs where a failed run can be read.
func (w *world) keepLogs(t *testing.T) {
	dir, err := os.MkdirTemp("", "hive-chaos-logs-")
	if err != nil {
		return
	}
	entries, _ := os.ReadDir(w.work)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".log") {
			if data, err := os.ReadFile(w.work + "/" + e.Name()); err == nil {
				_ = os.WriteFile(dir+"/"+e.Name(), data, 0o600)
			}
		}
	}
	t.Logf("operator logs kept in %s", dir)
}
