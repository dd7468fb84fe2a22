// Package requestload carries the request load of hives from the gateways to the operator
// with no write to the API server: each gateway serves what it has queued and in flight
// (a Report, at Path on its metrics port), and the operator polls every gateway at a fixed
// low rate and sums their reports per hive (a Poller). The sum feeds the hive's autoscaler
// next to its task queue, and counts an agent with requests in flight as busy, so that a
// drain waits for them.
//
// docs/architecture.md shows where it fits among the operator's parts.
package requestload

import (
	"maps"
	"slices"
)

// Path is where a gateway serves its Report.
const Path = "/load"

// Report is one gateway's view of the hives it serves, by hive key ("namespace/name"). A
// hive with nothing queued or in flight is left out.
type Report struct {
	Hives map[string]Hive `json:"hives"`
}

// Hive is one gateway's requests for a hive.
type Hive struct {
	// Queued are the requests waiting for a serving slot.
	Queued int `json:"queued,omitempty"`
	// Agents are the requests in flight, by agent (pod name).
	Agents map[string]int `json:"agents,omitempty"`
}

// Load is a hive's requests summed over every gateway that reported.
type Load struct {
	Queued, InFlight int
	// Agents are the requests in flight, by agent.
	Agents map[string]int
}

// Total is the requests the hive's agents are asked for: queued and in flight.
func (l Load) Total() int { return l.Queued + l.InFlight }

// Sum adds up the gateways' reports per hive. Hives with no request are left out.
func Sum(reports []Report) map[string]Load {
	out := map[string]Load{}
	for _, r := range reports {
		for key, h := range r.Hives {
			l := out[key]
			l.Queued += max(h.Queued, 0)
			for agent, n := range h.Agents {
				if n <= 0 {
					continue
				}
				if l.Agents == nil {
					l.Agents = map[string]int{}
				}
				l.Agents[agent] += n
				l.InFlight += n
			}
			if l.Total() > 0 {
				out[key] = l
			}
		}
	}
	return out
}

// Changed returns, sorted, the hives whose load differs between prev and cur, including
// those that appear or disappear.
func Changed(prev, cur map[string]Load) []string {
	var keys []string
	for key, l := range cur {
		if p, ok := prev[key]; !ok || !equal(p, l) {
			keys = append(keys, key)
		}
	}
	for key := range prev {
		if _, ok := cur[key]; !ok {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	return keys
}

func equal(a, b Load) bool {
	return a.Queued == b.Queued && a.InFlight == b.InFlight && maps.Equal(a.Agents, b.Agents)
}
