package loadgen_test

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/spikehq/spike/loadgen"
)

// exactQuantile returns the nearest-rank quantile of sorted values.
func exactQuantile(sorted []time.Duration, q float64) time.Duration {
	rank := int(math.Ceil(q * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

func TestHistogramAccuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name string
		draw func() time.Duration
	}{
		{"uniform 1µs-100ms", func() time.Duration { return time.Duration(1+rng.IntN(100_000)) * time.Microsecond }},
		{"exponential mean 5ms", func() time.Duration {
			return time.Duration(rng.ExpFloat64()*5000) * time.Microsecond
		}},
		{"lognormal heavy tail", func() time.Duration {
			return time.Duration(math.Exp(rng.NormFloat64()*1.5+7)) * time.Microsecond
		}},
		{"bimodal 1ms and 2s", func() time.Duration {
			if rng.IntN(100) < 2 {
				return 2*time.Second + time.Duration(rng.IntN(1000))*time.Microsecond
			}
			return time.Millisecond + time.Duration(rng.IntN(100))*time.Microsecond
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := loadgen.NewHistogram()
			vals := make([]time.Duration, 100_000)
			for i := range vals {
				d := tt.draw().Truncate(time.Microsecond)
				if d < time.Microsecond {
					d = time.Microsecond
				}
				vals[i] = d
				h.Record(d)
			}
			sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
			if h.Count() != int64(len(vals)) {
				t.Fatalf("Count() = %d, want %d", h.Count(), len(vals))
			}
			s := h.Summary()
			for _, c := range []struct {
				q   float64
				got time.Duration
			}{{0.5, s.P50}, {0.9, s.P90}, {0.99, s.P99}, {0.999, s.P999}, {1, s.Max}} {
				want := exactQuantile(vals, c.q)
				// 3 significant digits: the reported value is the top of a
				// bucket at most 0.1% wide (plus 1 µs of resolution).
				tol := time.Duration(float64(want)*0.001) + time.Microsecond
				if diff := c.got - want; diff < -tol || diff > tol {
					t.Errorf("q%.3f = %v, want %v ± %v", c.q, c.got, want, tol)
				}
			}
		})
	}
}

func TestHistogramEdges(t *testing.T) {
	h := loadgen.NewHistogram()
	if got := h.Summary(); got != (loadgen.Percentiles{}) {
		t.Errorf("empty Summary() = %+v, want zero", got)
	}
	h.Record(0)             // clamps to 1µs
	h.Record(2 * time.Hour) // clamps to 1h
	if h.Count() != 2 {
		t.Fatalf("Count() = %d, want 2", h.Count())
	}
	if got := h.Quantile(0); got != time.Microsecond {
		t.Errorf("Quantile(0) = %v, want 1µs", got)
	}
	if got := h.Summary().Max; got < time.Hour-time.Hour/1000 || got > time.Hour+time.Hour/1000 {
		t.Errorf("Max = %v, want ≈1h", got)
	}
	o := loadgen.NewHistogram()
	o.Record(time.Millisecond)
	h.Merge(o)
	if h.Count() != 3 {
		t.Errorf("after Merge Count() = %d, want 3", h.Count())
	}
}
