package pool

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// simulate runs a hive through random scale changes and rollouts, carrying out every plan
// the way the controller does, with agents that become ready and finish tasks at random.
// It checks the invariants the planner promises on every step and that it converges.
func simulate(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	clock := now
	s := Spec{
		Replicas:       1 + rng.IntN(6),
		UpdateRevision: "r0",
		DrainTimeout:   time.Minute,
		DrainSettle:    time.Second,
	}
	surgeN, unavailableN := rng.IntN(3), rng.IntN(2)
	var fleet []Agent
	seq := 0
	revisions := 0

	apply := func(p Plan) {
		for _, d := range p.Delete {
			for i := range fleet {
				a := &fleet[i]
				if a.Name != d.Name {
					continue
				}
				if a.Tasks > 0 && !a.Finished {
					if d.Reason != DeleteDrainTimeout || clock.Sub(a.DrainingSince) < s.DrainTimeout {
						t.Fatalf("seed %d: deleted busy agent %s (%+v) for %s", seed, a.Name, *a, d.Reason)
					}
				}
				fleet = append(fleet[:i], fleet[i+1:]...)
				break
			}
		}
		for _, name := range p.Drain {
			for i := range fleet {
				if fleet[i].Name == name {
					fleet[i].Draining, fleet[i].DrainingSince = true, clock
				}
			}
		}
		for _, name := range p.Undrain {
			for i := range fleet {
				if fleet[i].Name == name {
					fleet[i].Draining, fleet[i].DrainingSince = false, time.Time{}
				}
			}
		}
		for range p.Create {
			seq++
			fleet = append(fleet, Agent{Name: fmt.Sprintf("a%d", seq), Revision: s.UpdateRevision, Created: clock})
		}
	}
	available := func() int {
		n := 0
		for _, a := range fleet {
			if a.Ready && !a.Draining {
				n++
			}
		}
		return n
	}

	steady := false
	for step := 0; step < 400; step++ {
		// The world changes: agents start, tasks arrive and finish, the user edits the hive.
		for i := range fleet {
			a := &fleet[i]
			if !a.Ready && rng.IntN(3) == 0 {
				a.Ready = true
			}
			if a.Tasks > 0 && rng.IntN(4) == 0 {
				a.Tasks--
			}
			// The dispatcher binds only to ready, non-draining agents.
			if a.Ready && !a.Draining && rng.IntN(5) == 0 && step < 300 {
				a.Tasks++
			}
		}
		if step < 300 && rng.IntN(25) == 0 {
			s.Replicas = rng.IntN(7)
			steady = false
		}
		if step < 300 && rng.IntN(30) == 0 {
			revisions++
			s.UpdateRevision = fmt.Sprintf("r%d", revisions)
			steady = false
		}
		s.MaxSurge, s.MaxUnavailable = surgeN, unavailableN
		if s.MaxSurge == 0 && s.MaxUnavailable == 0 {
			s.MaxUnavailable = 1
		}

		before := available()
		minAvailable := s.Replicas - s.MaxUnavailable
		p := Compute(s, fleet, clock)
		apply(p)

		// Never drop available agents below the bound by our own doing.
		if after := available(); after < minAvailable && after < before {
			t.Fatalf("seed %d step %d: plan dropped available agents from %d to %d, bound %d (spec %+v)",
				seed, step, before, after, minAvailable, s)
		}
		// Never run more agents than replicas plus the surge, unless they were there already.
		live := 0
		for _, a := range fleet {
			if !a.Finished && !a.Terminating {
				live++
			}
		}
		if p.Create > 0 && live > s.Replicas+s.MaxSurge {
			t.Fatalf("seed %d step %d: %d live agents after creating %d, over %d+%d", seed, step, live, p.Create, s.Replicas, s.MaxSurge)
		}
		if p.Done(s.Replicas) {
			steady = true
		}
		clock = clock.Add(time.Duration(200+rng.IntN(1500)) * time.Millisecond)
	}
	if !steady {
		t.Fatalf("seed %d: never converged; spec %+v, agents %+v", seed, s, fleet)
	}
}

func TestSimulatedRollouts(t *testing.T) {
	for seed := range uint64(300) {
		simulate(t, seed)
	}
}

func FuzzPlanInvariants(f *testing.F) {
	for seed := range uint64(10) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, seed uint64) { simulate(t, seed) })
}
