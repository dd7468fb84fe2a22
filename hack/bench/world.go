package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aihub-dev/hive-operator/test/operator"
)

// cluster is an API server the bench drives: envtest's or kwok's.
type cluster struct {
	config     *rest.Config
	client     client.WithWatch
	kubeconfig string
	// pids of its processes measured for CPU (apiserver, etcd), when known.
	pids map[string]int
}

// world is a namespace with a hive, the operator process watching it, the simulated agents
// and the recorder.
type world struct {
	c           client.WithWatch
	ns, hive    string
	agents      int
	concurrency int
	op          *operator.Process
	sim         *simulator
	rec         *recorder
	meter       *cpuMeter
	cores       int
	startup     time.Duration
	stall       time.Duration
	cancel      context.CancelFunc
}

// worldSpec describes a world to set up.
type worldSpec struct {
	ns, hive            string
	agents, concurrency int
	// markReady: the bench marks agent pods Ready (envtest has no kubelet; kwok does it).
	markReady bool
}

// newWorld creates the namespace, starts the recorder and a fresh operator process watching
// only this namespace (timing its start-up), creates the hive and waits until its agents run.
func (b *bench) newWorld(ctx context.Context, cl *cluster, spec worldSpec) (*world, error) {
	wctx, cancel := context.WithCancel(ctx)
	w := &world{
		c: cl.client, ns: spec.ns, hive: spec.hive, agents: spec.agents, concurrency: spec.concurrency,
		cores: b.res.Machine.Cores, stall: b.cfg.stall, cancel: cancel,
	}
	if err := b.setupWorld(wctx, cl, w, spec); err != nil {
		w.close()
		return nil, fmt.Errorf("setting up %s: %w", spec.ns, err)
	}
	return w, nil
}

func (b *bench) setupWorld(ctx context.Context, cl *cluster, w *world, spec worldSpec) error {
	if spec.ns != "default" {
		if err := createNamespace(ctx, cl.client, spec.ns); err != nil {
			return err
		}
	}
	w.rec = newRecorder(cl.client, spec.ns, b.epoch)
	if err := w.rec.start(ctx); err != nil {
		return err
	}
	op, err := operator.Start(b.operatorOptions(cl.kubeconfig, spec.ns))
	if err != nil {
		return err
	}
	w.op = op
	if w.startup, err = op.WaitReady(ctx, 2*time.Minute); err != nil {
		return err
	}
	if op.PprofAddr() != "" {
		b.logf("operator for %s: pprof on http://%s/debug/pprof/", spec.ns, op.PprofAddr())
	}
	pids := map[string]int{"operator": op.PID(), "bench": os.Getpid()}
	for k, v := range cl.pids {
		pids[k] = v
	}
	w.meter = &cpuMeter{pids: pids}
	if err := cl.client.Create(ctx, newHive(spec.ns, spec.hive, spec.agents, spec.concurrency)); err != nil {
		return fmt.Errorf("creating hive %s: %w", spec.hive, err)
	}
	if w.sim, err = newSimulator(cl.config, cl.client, spec.ns, spec.hive, spec.markReady, b.cfg.taskDelay); err != nil {
		return err
	}
	if err := w.sim.start(ctx); err != nil {
		return err
	}
	timeout := time.Minute + time.Duration(spec.agents)*100*time.Millisecond
	if err := w.sim.waitAgents(ctx, cl.client, spec.agents, timeout, w.alive); err != nil {
		return err
	}
	b.logf("%s: operator ready in %s, %d agents running", spec.ns, w.startup.Round(time.Millisecond), spec.agents)
	return nil
}

// close stops the agents, the operator and the watches.
func (w *world) close() {
	w.sim.stop()
	stopOperator(w.op)
	w.cancel()
}

func (w *world) alive() error {
	if w.op == nil {
		return nil
	}
	return w.op.Alive()
}
