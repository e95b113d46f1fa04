package loadgen

import (
	"encoding/json"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram range: values are recorded in microseconds from 1 µs to 1 h.
// Shorter values count as 1 µs and longer ones as 1 h.
const (
	histLowest  = 1
	histHighest = int64(time.Hour / time.Microsecond)
)

// Histogram records latencies with a fixed relative precision (an HDR
// histogram: 3 significant digits, so any percentile is within 0.1% of the
// true value). The zero value is not usable; call [NewHistogram].
// A Histogram is not safe for concurrent use.
type Histogram struct {
	h *hdrhistogram.Histogram
}

// NewHistogram returns an empty histogram with 3 significant digits.
func NewHistogram() *Histogram { return newHistogram(3) }

func newHistogram(digits int) *Histogram {
	return &Histogram{h: hdrhistogram.New(histLowest, histHighest, digits)}
}

// Record adds one latency.
func (h *Histogram) Record(d time.Duration) {
	us := int64(d / time.Microsecond)
	if us < histLowest {
		us = histLowest
	}
	if us > histHighest {
		us = histHighest
	}
	_ = h.h.RecordValue(us) // cannot fail: us is clamped to the range
}

// Merge adds every value of o to h.
func (h *Histogram) Merge(o *Histogram) { h.h.Merge(o.h) }

// Count returns the number of recorded values.
func (h *Histogram) Count() int64 { return h.h.TotalCount() }

// Quantile returns the value at quantile q (0 ≤ q ≤ 1); 0 when empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.h.TotalCount() == 0 {
		return 0
	}
	return time.Duration(h.h.ValueAtQuantile(q*100)) * time.Microsecond
}

// Summary returns the standard percentiles of h.
func (h *Histogram) Summary() Percentiles {
	if h.h.TotalCount() == 0 {
		return Percentiles{}
	}
	v := h.h.ValueAtPercentilesSlice([]float64{50, 90, 99, 99.9})
	us := func(x int64) time.Duration { return time.Duration(x) * time.Microsecond }
	return Percentiles{
		Count: h.h.TotalCount(),
		Mean:  time.Duration(h.h.Mean() * float64(time.Microsecond)),
		P50:   us(v[0]),
		P90:   us(v[1]),
		P99:   us(v[2]),
		P999:  us(v[3]),
		Max:   us(h.h.Max()),
	}
}

// Percentiles summarises a latency distribution. In JSON every duration is
// a number of milliseconds.
type Percentiles struct {
	Count                          int64
	Mean, P50, P90, P99, P999, Max time.Duration
}

// MarshalJSON writes durations as fractional milliseconds.
func (p Percentiles) MarshalJSON() ([]byte, error) {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return json.Marshal(struct {
		Count  int64   `json:"count"`
		MeanMs float64 `json:"mean_ms"`
		P50Ms  float64 `json:"p50_ms"`
		P90Ms  float64 `json:"p90_ms"`
		P99Ms  float64 `json:"p99_ms"`
		P999Ms float64 `json:"p99_9_ms"`
		MaxMs  float64 `json:"max_ms"`
	}{p.Count, ms(p.Mean), ms(p.P50), ms(p.P90), ms(p.P99), ms(p.P999), ms(p.Max)})
}
