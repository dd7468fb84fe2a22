package main

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ten := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i + 1)
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value", []time.Duration{7}, 99, 7},
		{"median of ten is the fifth", ten, 50, 5},
		{"p95 of ten is the tenth", ten, 95, 10},
		{"p90 of ten is the ninth", ten, 90, 9},
		{"p99 of a hundred", hundred, 99, 99},
		{"p100 is the maximum", hundred, 100, 100},
		{"a tiny p is the minimum", hundred, 0.001, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		name string
		in   []time.Duration
		want Summary
	}{
		{"empty", nil, Summary{}},
		{"unsorted input", []time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond},
			Summary{N: 3, P50: 2, P95: 3, P99: 3, Max: 3, Mean: 2}},
		{"sub-millisecond values keep microseconds", []time.Duration{1500 * time.Microsecond, 250 * time.Microsecond},
			Summary{N: 2, P50: 0.25, P95: 1.5, P99: 1.5, Max: 1.5, Mean: 0.875}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]time.Duration(nil), tt.in...)
			if got := summarise(tt.in); got != tt.want {
				t.Errorf("summarise = %+v, want %+v", got, tt.want)
			}
			for i := range in {
				if in[i] != tt.in[i] {
					t.Fatalf("summarise modified its input")
				}
			}
		})
	}
}

func TestRoundAndRatio(t *testing.T) {
	if got := round(1.23456, 2); got != 1.23 {
		t.Errorf("round = %v", got)
	}
	if got := ratio(1, 0); got != 0 {
		t.Errorf("ratio by zero = %v, want 0", got)
	}
	if got := ratio(3, 4); got != 0.75 {
		t.Errorf("ratio = %v", got)
	}
}
