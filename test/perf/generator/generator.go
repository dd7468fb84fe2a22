// Package generator creates a run's tasks in a pattern: a burst from a pool of clients, or
// an open loop at a fixed rate (at a low rate, one at a time).
package generator

import (
	"context"
	"errors"
	"time"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Driver creates tasks 0..n-1 through create, in its own pattern.
type Driver func(ctx context.Context, create func(i int) error) error

// Burst creates n tasks as fast as a pool of clients can.
func Burst(n, clients int) Driver {
	return func(ctx context.Context, create func(i int) error) error {
		g, gctx := errgroup.WithContext(ctx) // the first error stops the creates
		g.SetLimit(clients)
		for i := 0; i < n && gctx.Err() == nil; i++ {
			g.Go(func() error { return create(i) })
		}
		return errors.Join(g.Wait(), context.Cause(ctx))
	}
}

// Rate creates n tasks at a fixed rate, whatever the completions (an open loop): task i is
// due at i/rate seconds, and its create starts then, however many are in flight.
func Rate(n int, rate float64) Driver {
	return func(ctx context.Context, create func(i int) error) error {
		g, gctx := errgroup.WithContext(ctx)
		start := time.Now()
		for i := 0; i < n && gctx.Err() == nil; i++ {
			Sleep(gctx, time.Until(start.Add(time.Duration(float64(i)/rate*float64(time.Second)))))
			g.Go(func() error { return create(i) })
		}
		return errors.Join(g.Wait(), context.Cause(ctx))
	}
}

// Retry runs f until it succeeds, up to 8 attempts with backoff; AlreadyExists counts as
// success (a create whose answer was lost).
func Retry(ctx context.Context, f func() error) error {
	var last error
	err := wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Steps: 8, Cap: 2 * time.Second},
		func(context.Context) (bool, error) {
			last = f()
			return last == nil || apierrors.IsAlreadyExists(last), nil
		})
	if err != nil && last != nil {
		return last
	}
	return err
}

// Sleep waits for d or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
