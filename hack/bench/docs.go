package main

import (
	"fmt"
	"strings"
)

// renderDocs renders docs/benchmarks.md: how to run the benchmark, its method and targets,
// and the results of this run with the machine they were measured on.
func renderDocs(r *Results, plotFile string) string {
	var b strings.Builder
	b.WriteString(`# Benchmarks

How fast the operator dispatches tasks, what each task costs the API server, and how it
compares with the alternatives, measured by one program, [hack/bench](../hack/bench):

` + "```sh" + `
make bench                       # the full run: about 12 minutes on 2 cores
go run ./hack/bench -quick       # a one-minute smoke run (CI): fails only if a task is lost
go run ./hack/bench -write-docs  # also rewrite this page and its plot
go run ./hack/bench -h           # every size can be changed
` + "```" + `

It needs nothing but the binaries the tests use (` + "`hack/setup-envtest.sh envtest`" + `, and
` + "`hack/setup-envtest.sh cluster`" + ` for the kwok baseline), starts and removes everything itself,
and writes its results as JSON (` + "`-out-json`" + `) and as the Markdown tables below.

## Method

- **Control plane.** A kube-apiserver and etcd (envtest, the test binaries) with the CRDs
  installed; no kubelet, scheduler or controller manager. The API server is the bottleneck of
  the whole system, so everything is measured against what it can do on the same machine.
- **Operator.** The real ` + "`cmd/manager`" + `, built and run as its own process with
  ` + "`--kube-api-qps=2000 --kube-api-burst=4000`" + ` and ` + "`--namespaces`" + ` limited to the run's namespace,
  so its CPU (` + "`/proc/<pid>/stat`" + `) and peak memory (` + "`VmHWM`" + `, reset per phase) are its own. A fresh
  process serves each group of runs; start-up is the time from the process start to
  ` + "`/readyz`" + ` answering 200 (caches synced). Its API requests come from its
  ` + "`rest_client_requests_total`" + `, summed by method before and after each run.
- **Agents.** The bench creates a Hive and lets the operator create the pods; it marks each pod
  Ready (a status write, as a kubelet would) and runs one real ` + "`pkg/agent`" + ` agent per Ready pod inside
  the bench process, with a no-op handler and the SDK's defaults (so a quick task is never marked
  Running: create, bind and finish are its only writes). The simulator watches pods once instead
  of polling them, to keep its own cost off the API server.
- **Recording.** One watch on the run's tasks records, per task, when it was bound
  (` + "`status.agent`" + ` first set) and when it succeeded; the bench notes the client time right before each
  create. Queue wait = bound − created; end to end = succeeded − created. At the end the tasks are
  listed: a task that is not Succeeded counts as failed, stuck (not finished) or lost (gone).
- **Ceiling.** Right before each burst, a plain client with the same concurrency makes exactly
  the writes of a quick task (create, a status patch binding it, a status patch finishing it,
  each guarded by its resourceVersion as the operator and the agents do) in a namespace the
  operator does not watch. Its tasks per second are what the API server allows with no operator
  at all; the operator's throughput is reported as a share of it.
- **Bursts** create every task at once from 32 clients; throughput is tasks / (last finished −
  first created). **Open loop** creates tasks at a fixed share of the measured ceiling for a fixed
  time, whatever the completions, to show latency against load.
- **Stored tasks.** Many queued tasks (for a hive of 0 replicas) are created before a fresh
  operator starts: start-up to ready and peak memory after it has synced and settled.
- **Baseline.** On a kwokctl cluster (binary runtime: etcd, API server, scheduler, controller
  manager; kwok simulates nodes and pod lifecycles), Jobs are created one at a time and timed
  from creation to their pod Running; then the operator runs against the same cluster with a
  hive of 2 warm agents, and tasks created one at a time are timed from creation to bound. kwok
  pulls no image and starts no container, so the Job side is a lower bound of a real cluster.
- **CPU.** For every run, the cores used by the API server, etcd, the operator, the bench itself
  (agents, recorder, clients) and the rest of the machine, from ` + "`/proc`" + `: the machine has 2 cores
  and all of them share it.

## Targets

| target | goal |
| --- | --- |
| Success | 100 % of tasks succeed, none lost or stuck |
| Throughput | at least 80 % of the ceiling measured in the same run |
| Queue wait at half load | p99 below 100 ms while tasks arrive at 50 % of the ceiling |
| API writes per quick task | at most 3: the user's create, the operator's bind, the agent's finish |
| Hive status writes | do not grow with the task rate |
| Operator memory | peak RSS below 256 MB with 100 000 tasks stored |
| Start-up | ready below 2 s with 100 000 tasks stored |
| Warm dispatch vs Job | a task bound to a warm agent at least 10× faster than a Job's pod reaches Running |

They are reported, never asserted: a benchmark on a shared 2-core machine is too noisy to fail
a build on. The quick mode fails only when a task is lost or the program errors.

`)
	fmt.Fprintf(&b, "## Results of the last run\n\n")
	mode := "the full run (`make bench`)"
	if r.Mode == "quick" {
		mode = "the quick run (`-quick`: small sizes, so the verdicts are indicative only)"
	}
	fmt.Fprintf(&b, "Measured on %s, %s, in %.0f s.\n\n", r.StartedAt.UTC().Format("2006-01-02 15:04 MST"), mode, r.DurationSeconds)
	m := r.Machine
	table(&b, []string{"machine", ""}, [][]string{
		{"CPU", fmt.Sprintf("%s, %d cores", m.CPUModel, m.Cores)},
		{"memory", fmt.Sprintf("%.1f GiB", float64(m.MemoryBytes)/(1<<30))},
		{"kernel", m.Kernel},
		{"Go", m.GoVersion},
		{"Kubernetes", m.KubernetesVersion},
		{"kwok", m.KwokVersion},
		{"load average at start", m.LoadAverage},
	})
	b.WriteString(renderReport(r, "###"))
	if plotFile != "" {
		fmt.Fprintf(&b, "\n![Queue wait and end-to-end latency against the arrival rate](%s)\n", plotFile)
	}
	return b.String()
}
