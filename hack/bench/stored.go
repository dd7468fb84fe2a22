package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/test/operator"
)

// runStored stores many queued tasks (for a hive of 0 replicas, so none runs) before a fresh
// operator process starts, then measures its start-up to ready and its memory once it has
// synced and settled.
func (b *bench) runStored(ctx context.Context, env *cluster) (*StoredResult, error) {
	const ns, hive = "bench-stored", "stored"
	n := b.cfg.stored
	res := &StoredResult{Tasks: n, SettleSeconds: b.cfg.settle.Seconds()}
	if err := createNamespace(ctx, env.client, ns); err != nil {
		return nil, err
	}
	// The hive first: a task of a missing hive would get a condition written.
	if err := env.client.Create(ctx, newHive(ns, hive, 0, b.cfg.concurrency)); err != nil {
		return nil, fmt.Errorf("creating hive %s: %w", hive, err)
	}
	b.logf("stored: creating %d queued tasks with %d clients", n, b.cfg.storedClients)
	start := time.Now()
	var created atomic.Int64
	err := burstDriver(n, b.cfg.storedClients)(ctx, func(i int) error {
		task := newTask(ns, hive, "stored", i)
		if err := retry(ctx, func() error { return env.client.Create(ctx, task) }); err != nil {
			return fmt.Errorf("creating stored task %s: %w", task.Name, err)
		}
		if done := created.Add(1); done%10000 == 0 {
			b.logf("stored: %d of %d created (%.0f/s)", done, n, float64(done)/time.Since(start).Seconds())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.CreateSeconds = round(time.Since(start).Seconds(), 1)
	b.logf("stored: %d tasks created in %.0f s; starting a fresh operator", n, res.CreateSeconds)

	op, err := operator.Start(b.operatorOptions(env.kubeconfig, ns))
	if err != nil {
		return nil, err
	}
	defer stopOperator(op)
	startup, err := op.WaitReady(ctx, 5*time.Minute)
	if err != nil {
		return nil, err
	}
	res.StartupSeconds = round(startup.Seconds(), 3)
	b.logf("stored: operator ready in %s; settling for %s", startup.Round(time.Millisecond), b.cfg.settle)
	sleepCtx(ctx, b.cfg.settle)
	if err := op.Alive(); err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("stored tasks: %w", context.Cause(ctx))
	}
	if res.PeakRSSBytes, res.RSSBytes, err = procMemory(op.PID()); err != nil {
		return nil, err
	}
	cpu, err := procCPU(op.PID())
	if err != nil {
		return nil, err
	}
	res.CPUSeconds = round(cpu.Seconds(), 2)
	if res.Requests, err = operatorRequests(ctx, op); err != nil {
		return nil, err
	}
	h := &swarmv1alpha1.Hive{}
	if err := env.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: hive}, h); err == nil {
		res.QueuedSeen = h.Status.QueuedTasks
	}
	b.logf("stored: peak RSS %.0f MB, %.1f CPU s", float64(res.PeakRSSBytes)/mib, res.CPUSeconds)
	return res, nil
}
