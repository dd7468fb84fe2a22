package runner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/test/agentproc"
	"github.com/aihub-dev/hive-operator/test/perf/generator"
	"github.com/aihub-dev/hive-operator/test/perf/results"
	"github.com/aihub-dev/hive-operator/test/perf/scraper"
	"github.com/aihub-dev/hive-operator/test/perf/stats"
)

// steady runs tasks arriving at a share of the ceiling for a long time, for a hive that
// keeps finished tasks for the retention, with its agents as hive-agent processes of their
// own, and samples the memory of the operator and of each agent as it goes: with the
// retention deleting as fast as tasks finish, neither may grow with the tasks run.
func (r *runner) steady(ctx context.Context, cl *cluster, ceiling *results.Ceiling) error {
	s := r.Workload.Steady
	if ceiling == nil || ceiling.TasksPerSec <= 0 {
		return errors.New("no ceiling was measured for the steady run")
	}
	procs := &agentproc.Runtime{Binary: r.agentBinary, Kubeconfig: cl.kubeconfig, LogDir: r.workDir,
		Args: []string{"--mode=echo", "--echo-delay=" + r.Workload.TaskDelay.Duration.String()}}
	const ns = "bench-steady"
	wd, err := r.newWorld(ctx, cl, worldSpec{ns: ns, hive: "steady", agents: s.Agents, markReady: true, procs: procs, retention: s.Retention.Duration})
	if err != nil {
		return err
	}
	defer wd.close()
	rate := ceiling.TasksPerSec * float64(s.RatePercent) / 100
	n := max(int(rate*s.Duration.Seconds()), 1)
	res := &results.Steady{Name: fmt.Sprintf("steady %d %% for %s", s.RatePercent, s.Duration.Duration), StartedAt: time.Now(),
		RetentionSeconds: s.Retention.Seconds()}
	r.Logf("steady: %d tasks at %.0f tasks/s (%d %% of the ceiling) for %s, finished tasks kept %s, %d agent processes",
		n, rate, s.RatePercent, s.Duration.Duration, s.Retention.Duration, s.Agents)

	sampled := make(chan struct{})
	sampleCtx, stopSampling := context.WithCancel(ctx)
	go func() {
		defer close(sampled)
		wait.UntilWithContext(sampleCtx, func(ctx context.Context) {
			res.Samples = append(res.Samples, sample(ctx, cl.client, ns, wd, time.Since(res.StartedAt)))
		}, s.SampleEvery.Duration)
	}()
	run, err := wd.run(ctx, res.Name, "steady", results.KindSteady, n, generator.Rate(n, rate))
	stopSampling()
	<-sampled
	if err != nil {
		return err
	}
	run.RatePercent, run.TargetRate, run.Ceiling = float64(s.RatePercent), stats.Round(rate, 1), ceiling
	r.res.Runs, r.res.Steady = append(r.res.Runs, run), res
	first, last := res.Samples[0], res.Samples[len(res.Samples)-1]
	r.Logf("steady: %s succeeded, queue wait p99 %.1f ms; operator RSS %.0f → %.0f MB, largest agent %.0f → %.0f MB, %d → %d tasks stored",
		run.Outcome, run.QueueWait.P99, mb(first.OperatorRSSBytes), mb(last.OperatorRSSBytes), mb(first.AgentRSSBytes), mb(last.AgentRSSBytes),
		first.StoredTasks, last.StoredTasks)
	return nil
}

// sample reads the RSS of the operator and of every agent process, and counts the tasks
// stored in the namespace (a list of one item: the API server counts the rest).
func sample(ctx context.Context, c client.Client, ns string, wd *world, at time.Duration) results.SteadySample {
	s := results.SteadySample{Seconds: stats.Round(at.Seconds(), 1)}
	if _, _, rss, err := scraper.Process(wd.op.PID()); err == nil {
		s.OperatorRSSBytes = rss
	}
	for _, pid := range wd.procs.PIDs() {
		if _, _, rss, err := scraper.Process(pid); err == nil {
			s.AgentRSSBytes, s.AgentsRSSBytes = max(s.AgentRSSBytes, rss), s.AgentsRSSBytes+rss
		}
	}
	list := &swarmv1alpha1.TaskList{}
	if err := c.List(ctx, list, client.InNamespace(ns), client.Limit(1)); err == nil {
		s.StoredTasks = len(list.Items)
		if list.RemainingItemCount != nil {
			s.StoredTasks += int(*list.RemainingItemCount)
		}
	}
	return s
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }
