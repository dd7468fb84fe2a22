// Package metrics defines the operator's Prometheus metrics (documented in docs/metrics.md).
//
// Counters and histograms are updated as things happen (a bind, a finished task, a scale
// event). Gauges of current state (agents by state, tasks by phase, replicas) are not kept
// in sync by hand: a collector reads them from the manager's cache at scrape time.
//
// docs/architecture.md shows where it fits among the operator's parts.
package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Namespace prefixes every metric of the operator.
const Namespace = "hive"

// Buckets resolve milliseconds (a warm dispatch) to an hour (a long task).
var Buckets = []float64{
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
	1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
}

var (
	// QueueWait is the time tasks waited for a slot: from queued (created, or requeued) to
	// bound to an agent.
	QueueWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "task_queue_wait_seconds", Buckets: Buckets,
		Help: "Time tasks waited in their hive's queue, from created or requeued to bound to an agent.",
	}, []string{"namespace", "hive"})

	// RunTime is the time finished attempts ran: from bound to finished.
	RunTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "task_run_seconds", Buckets: Buckets,
		Help: "Time the last attempt of finished tasks took, from bound to an agent to finished, by final phase.",
	}, []string{"namespace", "hive", "phase"})

	// Outcomes counts tasks reaching a final phase.
	Outcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "task_outcomes_total",
		Help: "Tasks that reached a final phase (Succeeded, Failed, Cancelled).",
	}, []string{"namespace", "hive", "phase"})

	// Retries counts attempts that ended without finishing their task, which went back to
	// the queue.
	Retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "task_retries_total",
		Help: "Attempts that ended without finishing their task, which went back to the queue, by reason (AgentFailed, TimedOut, AgentLost, Released).",
	}, []string{"namespace", "hive", "reason"})

	// AgentLosses counts the attempts cut short by an agent that was lost.
	AgentLosses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "agent_losses_total",
		Help: "Task attempts whose agent pod disappeared, stopped or stayed not ready, as detected by the operator.",
	}, []string{"namespace", "hive"})

	// ScaleEvents counts the autoscaler's changes of replicas.
	ScaleEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "scale_events_total",
		Help: "Changes of a hive's replicas by the autoscaler, by direction (up, down).",
	}, []string{"namespace", "hive", "direction"})

	// Rollouts counts rollouts started.
	Rollouts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "rollouts_total",
		Help: "Rollouts of a new agent revision started.",
	}, []string{"namespace", "hive"})

	// LedgerBinds is the number of binds sent that the dispatcher's cache has not shown yet.
	LedgerBinds = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "dispatcher_unconfirmed_binds",
		Help: "Binds the dispatcher sent that its cache does not show yet (held in its slot ledger).",
	})
)

// Register adds the operator's metrics to a registry (controller-runtime's
// metrics.Registry in the manager).
func Register(reg prometheus.Registerer, collectors ...prometheus.Collector) error {
	all := []prometheus.Collector{QueueWait, RunTime, Outcomes, Retries, AgentLosses, ScaleEvents, Rollouts, LedgerBinds, State}
	for _, c := range append(all, collectors...) {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if errors.As(err, &already) {
				continue
			}
			return err //nolint:wrapcheck // the registry's message names the metric
		}
	}
	return nil
}
