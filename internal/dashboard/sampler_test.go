package dashboard

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// registry holds the metrics the sampler reads, under their real names.
type registry struct {
	reg        *prometheus.Registry
	placements *prometheus.CounterVec
	guards     *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	pending    prometheus.Gauge
}

func newRegistry() *registry {
	r := &registry{
		reg:        prometheus.NewRegistry(),
		placements: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "spike_placements_total"}, []string{"outcome"}),
		guards:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "spike_guard_rejections_total"}, []string{"guard"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "spike_http_request_duration_seconds",
			Buckets: []float64{.001, .01, .1}}, []string{"route"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "spike_orders_pending"}),
	}
	r.reg.MustRegister(r.placements, r.guards, r.latency, r.pending)
	r.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spike_breaker_state",
		ConstLabels: prometheus.Labels{"dependency": "order_stream"}}, func() float64 { return 1 }))
	return r
}

func TestSnapshotRatesAndPercentiles(t *testing.T) {
	r := newRegistry()
	s := NewSampler(Source{Gatherer: r.reg})
	clock := time.Unix(1000, 0)
	s.now = func() time.Time { return clock }

	r.placements.WithLabelValues("accepted").Add(10)
	first, err := s.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if first.Placements[Accepted] != 10 || first.IntervalSeconds != 0 || len(first.PerSecond) != 0 {
		t.Fatalf("first snapshot: %+v", first)
	}

	// Two seconds later: 40 more accepted, 6 sold out, 4 rate limited,
	// 2 shed; 100 placements answered, 98 in 1–10 ms and 2 in 10–100 ms;
	// 20 orders pending (so 40 − 20 = 20 persisted).
	r.placements.WithLabelValues("accepted").Add(40)
	r.placements.WithLabelValues("sold_out").Add(6)
	r.guards.WithLabelValues("user_rate").Add(3)
	r.guards.WithLabelValues("sale_rate").Add(1)
	r.guards.WithLabelValues("admission").Add(2)
	r.pending.Set(20)
	for i := range 100 {
		d := 0.005
		if i >= 98 {
			d = 0.05
		}
		r.latency.WithLabelValues("place_order").Observe(d)
	}
	r.latency.WithLabelValues("get_sale").Observe(5) // another route: not counted
	// Within MinInterval: the same snapshot again.
	clock = clock.Add(MinInterval / 2)
	if again, _ := s.Snapshot(context.Background()); again.Placements[Accepted] != 10 {
		t.Fatalf("a poll within MinInterval read again: %+v", again.Placements)
	}
	clock = clock.Add(2*time.Second - MinInterval/2)
	snap, err := s.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{Accepted: 20, SoldOut: 3, RateLimited: 2, Overloaded: 1, Limit: 0, SwitchedOff: 0, Other: 0}
	for k, v := range want {
		if snap.PerSecond[k] != v {
			t.Errorf("per second %s = %v, want %v", k, snap.PerSecond[k], v)
		}
	}
	if snap.IntervalSeconds != 2 || snap.PersistedPerSecond != 10 || snap.DrainSeconds == nil || *snap.DrainSeconds != 2 {
		t.Errorf("interval %v, persisted/s %v, drain %v; want 2, 10, 2", snap.IntervalSeconds, snap.PersistedPerSecond, snap.DrainSeconds)
	}
	// p50: rank 50 of 98 in (1 ms, 10 ms]; p99: rank 99 in (10 ms, 100 ms].
	if p50 := snap.LatencyMS["p50"]; math.Abs(p50-(1+9*50.0/98)) > 1e-9 {
		t.Errorf("p50 = %v ms", p50)
	}
	if p99 := snap.LatencyMS["p99"]; math.Abs(p99-(10+90*1.0/2)) > 1e-9 {
		t.Errorf("p99 = %v ms", p99)
	}
	if len(snap.Dependencies) != 1 || snap.Dependencies[0].Name != "order_stream" || snap.Dependencies[0].Breaker != "open" {
		t.Errorf("dependencies: %+v", snap.Dependencies)
	}
}

func TestQuantileInTopBucket(t *testing.T) {
	bs := []bucket{{.001, 0}, {.01, 0}, {math.Inf(1), 4}}
	if q := quantile(0.5, bs); q != .01 {
		t.Errorf("quantile in the +Inf bucket = %v, want the highest finite bound", q)
	}
}
