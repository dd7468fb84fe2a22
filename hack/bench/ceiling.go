package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/lifecycle"
	"github.com/aihub-dev/hive-operator/internal/statuspatch"
)

// ceilingHive is the hive named by the ceiling's tasks; it does not exist, and no operator
// watches the ceiling's namespace.
const ceilingHive = "ceiling"

// runCeiling makes the writes of n quick tasks with no operator: create, a status patch
// binding the task (phase Assigned, agent, attempt 1) and one finishing it (Succeeded,
// result), each guarded by the task's resourceVersion as the operator's and the agents' are,
// from the same number of clients as the bursts. A recorder watches the namespace as it does
// the bursts', so the API server serves the same watch.
func runCeiling(ctx context.Context, c client.Client, rec *recorder, meter *cpuMeter, cores int, prefix string, n, clients int) (*CeilingResult, error) {
	tr := rec.track(prefix, n)
	lat := make([]time.Duration, 3*n)
	cpuStart := meter.sample()
	start := time.Now()
	err := burstDriver(n, clients)(ctx, func(i int) error {
		return ceilingTask(ctx, c, rec, tr, prefix, i, lat[3*i:3*i+3])
	})
	duration := time.Since(start)
	cpuEnd := meter.sample()
	if err != nil {
		return nil, fmt.Errorf("the ceiling run: %w", err)
	}
	return &CeilingResult{
		Tasks:           n,
		DurationSeconds: round(duration.Seconds(), 3),
		TasksPerSec:     round(float64(n)/duration.Seconds(), 1),
		WritesPerSec:    round(float64(3*n)/duration.Seconds(), 1),
		WriteLatency:    summarise(lat),
		CPU:             cpuBetween(cpuStart, cpuEnd, cores),
	}, nil
}

// ceilingTask writes one task's three writes and notes the latency of each.
func ceilingTask(ctx context.Context, c client.Client, rec *recorder, tr *track, prefix string, i int, lat []time.Duration) error {
	task := newTask(rec.ns, ceilingHive, prefix, i)
	rec.markCreated(tr, i)
	t0 := time.Now()
	if err := retry(ctx, func() error { return c.Create(ctx, task) }); err != nil {
		return fmt.Errorf("ceiling: creating task %s: %w", task.Name, err)
	}
	lat[0] = time.Since(t0)

	// The same guarded status patches as the operator and the agents send.
	patchStatus := func(what string, next swarmv1alpha1.TaskStatus) (time.Duration, error) {
		patch, err := statuspatch.Guarded(task.ResourceVersion, &task.Status, &next)
		if err != nil {
			return 0, fmt.Errorf("ceiling: %s task %s: %w", what, task.Name, err)
		}
		t0 := time.Now()
		if err := retry(ctx, func() error { return c.Status().Patch(ctx, task, patch) }); err != nil {
			return 0, fmt.Errorf("ceiling: %s task %s: %w", what, task.Name, err)
		}
		return time.Since(t0), nil
	}
	var err error
	if lat[1], err = patchStatus("binding", lifecycle.Bind(task, "ceiling-agent-"+strconv.Itoa(i%100), time.Now())); err != nil {
		return err
	}
	if lat[2], err = patchStatus("finishing", lifecycle.Succeed(task, "ok", time.Now())); err != nil {
		return err
	}
	if task.Status.Phase != swarmv1alpha1.TaskSucceeded {
		return fmt.Errorf("ceiling: task %s is %s after its finish", task.Name, task.Status.Phase)
	}
	return nil
}
