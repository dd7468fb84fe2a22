package handlers

import (
	"context"
	"fmt"
	"time"

	"github.com/aihub-dev/hive-operator/pkg/agent"
)

// Echo returns a handler that returns each task's input as its result, after delay if it
// is positive: an agent for demos, and for measuring the operator without the cost of
// real work.
func Echo(delay time.Duration) agent.Handler {
	return func(ctx context.Context, task *agent.Task) (string, error) {
		if delay > 0 {
			timer := time.NewTimer(delay)
			defer timer.Stop()
			select {
			case <-timer.C:
			case <-ctx.Done():
				return "", fmt.Errorf("echo stopped during its delay: %w", ctx.Err())
			}
		}
		return task.Input, nil
	}
}
