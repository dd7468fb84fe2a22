// Package stats summarises samples of durations.
package stats

import (
	"math"
	"slices"
	"time"

	"gonum.org/v1/gonum/stat"
)

// Summary describes a sample of durations, in milliseconds.
type Summary struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50Ms"`
	P95  float64 `json:"p95Ms"`
	P99  float64 `json:"p99Ms"`
	Max  float64 `json:"maxMs"`
	Mean float64 `json:"meanMs"`
}

// Summarise returns the percentiles of a sample in milliseconds, by the nearest-rank method
// (gonum's Empirical quantile: the smallest value with at least p of the sample at or below
// it, so every percentile is a measured value). It does not modify d.
func Summarise(d []time.Duration) Summary {
	if len(d) == 0 {
		return Summary{}
	}
	x := make([]float64, len(d))
	for i, v := range d {
		x[i] = Ms(v)
	}
	slices.Sort(x)
	q := func(p float64) float64 { return stat.Quantile(p, stat.Empirical, x, nil) }
	return Summary{N: len(x), P50: q(0.50), P95: q(0.95), P99: q(0.99), Max: x[len(x)-1], Mean: Round(stat.Mean(x, nil), 3)}
}

// Ms returns d in milliseconds, to the microsecond.
func Ms(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Microsecond)) / 1000 }

// Ratio returns a/b, or 0 when b is 0.
func Ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// Round rounds v to the given number of decimal digits.
func Round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}
