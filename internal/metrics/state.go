package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
)

var (
	agentsDesc = prometheus.NewDesc(Namespace+"_agents",
		"Agent pods by hive and state: draining (however busy), busy (holding a task), starting (not ready and idle), idle.",
		[]string{"namespace", "hive", "state"}, nil)
	tasksDesc = prometheus.NewDesc(Namespace+"_tasks",
		"Tasks by hive and phase.", []string{"namespace", "hive", "phase"}, nil)
	desiredDesc = prometheus.NewDesc(Namespace+"_replicas_desired",
		"Agents a hive converges to: spec.replicas, which the autoscaler sets when spec.autoscaling is on.",
		[]string{"namespace", "hive"}, nil)
	replicasDesc = prometheus.NewDesc(Namespace+"_replicas",
		"Agent pods of a hive that exist and are not being deleted.", []string{"namespace", "hive"}, nil)
	readyDesc = prometheus.NewDesc(Namespace+"_replicas_ready",
		"Agent pods of a hive that are ready.", []string{"namespace", "hive"}, nil)
)

// StateCollector reports the current state of hives, agents and tasks from the manager's
// cache when Prometheus scrapes, so the gauges are never out of step with the cluster.
type StateCollector struct {
	// Timeout bounds one collection. Default 5s.
	Timeout time.Duration

	mu     sync.Mutex
	reader client.Reader
}

// State is the process's collector of current state; Register adds it.
var State = &StateCollector{}

// SetReader points the collector at a manager's cache (the last manager set up wins, which
// matters only to tests that run several managers in one process).
func (c *StateCollector) SetReader(r client.Reader) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reader = r
}

// Describe sends the descriptors of the gauges.
func (c *StateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{agentsDesc, tasksDesc, desiredDesc, replicasDesc, readyDesc} {
		ch <- d
	}
}

type hiveKey struct{ namespace, hive string }

// Collect reads the cache and sends the gauges. A failed read sends nothing for that
// family: a scrape must not fail the operator.
func (c *StateCollector) Collect(ch chan<- prometheus.Metric) {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	c.mu.Lock()
	reader := c.reader
	c.mu.Unlock()
	if reader == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// The cache's objects are read, never changed: skip the copies, which would cost a
	// copy of every task on each scrape.
	noCopy := client.UnsafeDisableDeepCopy

	tasks := &swarmv1alpha1.TaskList{}
	bound := map[string]int{} // tasks bound to each agent, by namespace/pod
	if err := reader.List(ctx, tasks, noCopy); err == nil {
		phases := map[hiveKey]map[swarmv1alpha1.TaskPhase]int{}
		for i := range tasks.Items {
			t := &tasks.Items[i]
			k := hiveKey{t.Namespace, t.Spec.Hive}
			phase := t.Status.Phase
			if phase == "" {
				phase = swarmv1alpha1.TaskPending
			}
			if phases[k] == nil {
				phases[k] = map[swarmv1alpha1.TaskPhase]int{}
			}
			phases[k][phase]++
			if phase.Bound() {
				bound[t.Namespace+"/"+t.Status.Agent]++
			}
		}
		for k, m := range phases {
			for phase, n := range m {
				ch <- prometheus.MustNewConstMetric(tasksDesc, prometheus.GaugeValue, float64(n), k.namespace, k.hive, string(phase))
			}
		}
	}

	pods := &corev1.PodList{}
	if err := reader.List(ctx, pods, noCopy); err == nil {
		states := map[hiveKey]map[string]int{}
		for i := range pods.Items {
			p := &pods.Items[i]
			hive, ok := agentpod.ControllerHive(p)
			if !ok {
				continue
			}
			state := agentpod.StateOf(p, bound[p.Namespace+"/"+p.Name])
			if state == agentpod.StateStopping { // no longer one of the hive's agents
				continue
			}
			k := hiveKey{p.Namespace, hive}
			if states[k] == nil {
				states[k] = noAgents()
			}
			states[k][string(state)]++
		}
		hives := &swarmv1alpha1.HiveList{}
		if err := reader.List(ctx, hives, noCopy); err == nil {
			for i := range hives.Items {
				h := &hives.Items[i]
				k := hiveKey{h.Namespace, h.Name}
				ch <- prometheus.MustNewConstMetric(desiredDesc, prometheus.GaugeValue, float64(h.Spec.ReplicasOrDefault()), h.Namespace, h.Name)
				ch <- prometheus.MustNewConstMetric(replicasDesc, prometheus.GaugeValue, float64(h.Status.Replicas), h.Namespace, h.Name)
				ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, float64(h.Status.ReadyReplicas), h.Namespace, h.Name)
				if states[k] == nil {
					states[k] = noAgents()
				}
			}
		}
		for k, m := range states {
			for state, n := range m {
				ch <- prometheus.MustNewConstMetric(agentsDesc, prometheus.GaugeValue, float64(n), k.namespace, k.hive, state)
			}
		}
	}
}

// noAgents is a hive's count of agents in each state before any is counted: every state is
// reported, also at zero.
func noAgents() map[string]int {
	m := make(map[string]int, len(agentpod.States))
	for _, s := range agentpod.States {
		m[string(s)] = 0
	}
	return m
}
