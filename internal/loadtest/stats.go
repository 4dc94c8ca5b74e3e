package loadtest

import (
	"math"
	"slices"
	"time"
)

// Percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest sample such that at least p% of samples
// are less than or equal to it. It returns 0 for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// Latencies summarises a latency sample.
type Latencies struct {
	N                  int
	P50, P90, P99, Max time.Duration
}

// Summarize sorts samples in place and reads the percentiles.
func Summarize(samples []time.Duration) Latencies {
	slices.Sort(samples)
	l := Latencies{N: len(samples), P50: Percentile(samples, 50), P90: Percentile(samples, 90), P99: Percentile(samples, 99)}
	if len(samples) > 0 {
		l.Max = samples[len(samples)-1]
	}
	return l
}
