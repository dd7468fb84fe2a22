package controllers

import (
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/lifecycle"
	"github.com/aihub-dev/hive-operator/internal/requestload"
)

// load is what a hive's tasks and requests ask of its agents.
type load struct {
	// busy counts the slots each agent uses: tasks bound to it in the cache, binds in
	// flight the cache does not show yet, and requests the gateways have in flight to it.
	busy map[string]int
	// queued counts the tasks waiting for a slot now (lifecycle.Waiting); running the
	// tasks bound to an agent.
	queued, running int
	// requests are the requests queued and in flight at the gateways.
	requests int
	// retryIn is when the first task backing off starts waiting for a slot: the hive's
	// load changes then, with no event to say so.
	retryIn time.Duration
}

// countLoad counts a hive's load from its unfinished tasks and the binds in flight (by
// agent key, namespace/name).
func countLoad(tasks []swarmv1alpha1.Task, inFlight map[string][]types.UID, namespace string, offered []string, now time.Time) load {
	l := load{busy: map[string]int{}}
	bound := map[string]map[types.UID]bool{}
	for i := range tasks {
		t := &tasks[i]
		if t.Status.Phase.Bound() {
			if bound[t.Status.Agent] == nil {
				bound[t.Status.Agent] = map[types.UID]bool{}
			}
			bound[t.Status.Agent][t.UID] = true
			continue
		}
		waiting, retryIn := lifecycle.Waiting(t, offered, now, time.Time{})
		switch {
		case waiting:
			l.queued++
		case retryIn > 0:
			l.retryIn = shortest(l.retryIn, retryIn)
		}
	}
	for agent, uids := range inFlight {
		name := strings.TrimPrefix(agent, namespace+"/")
		for _, uid := range uids {
			if bound[name] == nil {
				bound[name] = map[types.UID]bool{}
			}
			if !bound[name][uid] {
				bound[name][uid] = true
				l.queued = max(0, l.queued-1) // the bind takes it out of the queue
			}
		}
	}
	for agent, uids := range bound {
		l.busy[agent] = len(uids)
		l.running += len(uids)
	}
	return l
}

// addRequests counts the gateways' requests: in the autoscaler's load, and each agent
// with requests in flight as busy.
func (l *load) addRequests(r requestload.Load) {
	l.requests = r.Total()
	for agent, n := range r.Agents {
		l.busy[agent] += n
	}
}
