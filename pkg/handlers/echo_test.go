package handlers

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aihub-dev/hive-operator/pkg/agent"
)

func TestEcho(t *testing.T) {
	tests := []struct {
		name        string
		delay       time.Duration
		cancelAfter time.Duration // 0: never
		wantErr     error
		minTime     time.Duration
		maxTime     time.Duration
	}{
		{name: "at once", maxTime: 50 * time.Millisecond},
		{name: "a negative delay is none", delay: -time.Second, maxTime: 50 * time.Millisecond},
		{name: "after the delay", delay: 100 * time.Millisecond, minTime: 100 * time.Millisecond, maxTime: time.Second},
		{
			name: "cancelled during the delay", delay: 10 * time.Second, cancelAfter: 50 * time.Millisecond,
			wantErr: context.Canceled, maxTime: time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tt.cancelAfter > 0 {
				time.AfterFunc(tt.cancelAfter, cancel)
			}
			start := time.Now()
			got, err := Echo(tt.delay)(ctx, &agent.Task{Name: "t", Input: "same input"})
			elapsed := time.Since(start)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || got != "" {
					t.Errorf("got %q, %v; want an error wrapping %v", got, err, tt.wantErr)
				}
			} else if err != nil || got != "same input" {
				t.Errorf("got %q, %v; want the input", got, err)
			}
			if elapsed < tt.minTime || elapsed > tt.maxTime {
				t.Errorf("took %s, want between %s and %s", elapsed, tt.minTime, tt.maxTime)
			}
		})
	}
}
