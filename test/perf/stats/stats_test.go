package stats

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSummarise(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // unsorted
	}
	tests := []struct {
		name string
		in   []time.Duration
		want Summary
	}{
		{"empty", nil, Summary{}},
		{"one value", ms(7), Summary{N: 1, P50: 7, P95: 7, P99: 7, Max: 7, Mean: 7}},
		// Nearest rank: the median of ten is the fifth value, p95 the tenth.
		{"ten", ms(10, 9, 8, 7, 6, 5, 4, 3, 2, 1), Summary{N: 10, P50: 5, P95: 10, P99: 10, Max: 10, Mean: 5.5}},
		{"a hundred", ms(hundred...), Summary{N: 100, P50: 50, P95: 95, P99: 99, Max: 100, Mean: 50.5}},
		{"sub-millisecond values keep microseconds", []time.Duration{1500 * time.Microsecond, 250 * time.Microsecond},
			Summary{N: 2, P50: 0.25, P95: 1.5, P99: 1.5, Max: 1.5, Mean: 0.875}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]time.Duration(nil), tt.in...)
			if diff := cmp.Diff(tt.want, Summarise(tt.in)); diff != "" {
				t.Errorf("Summarise (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(in, tt.in); diff != "" {
				t.Errorf("Summarise modified its input:\n%s", diff)
			}
		})
	}
}
