// Command upper is an example Hive agent written with the Go SDK: it answers each task
// with its input in upper case, and takes a while for long inputs so that the Running
// phase shows.
package main

import (
	"context"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/aihub-dev/hive-operator/pkg/agent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := zap.New()
	ctrl.SetLogger(log)

	err := agent.Run(ctx, agent.Options{Logger: log}, func(ctx context.Context, t *agent.Task) (string, error) {
		// Pretend that work grows with the input, and stop when asked to.
		select {
		case <-time.After(time.Duration(len(t.Input)) * time.Millisecond):
		case <-ctx.Done():
			return "", ctx.Err()
		}
		return strings.ToUpper(t.Input), nil
	})
	if err != nil {
		log.Error(err, "agent failed")
		stop()
		os.Exit(1) //nolint:gocritic // stop() ran just above
	}
}
