// Package dashboard is the live sale dashboard (docs/dashboard.md): one
// page embedded in the binary and the snapshot it polls. The numbers come
// from the Prometheus registry the server already keeps, read at most once
// a second while someone looks, so the placement path pays nothing for
// them; the sales' stock comes from the sale store and counters.
package dashboard

import (
	"context"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/internal/switches"
)

// Source is where the dashboard reads from. Only Gatherer is required.
type Source struct {
	// Gatherer holds the server's spike_* metrics.
	Gatherer prometheus.Gatherer
	// Sales lists the sales (nil: no sales table).
	Sales interface {
		Sales(ctx context.Context) ([]sale.Sale, error)
	}
	// Counters says how many units of a sale remain.
	Counters sale.Counters
	// Backlog returns how many events wait on the order stream (nil: not shown).
	Backlog func(ctx context.Context) (uint64, error)
	// Switches returns the switch board's state (nil: not shown).
	Switches func() []switches.State
}

// MinInterval is the shortest time between two readings: polls closer
// together get the last snapshot again.
const MinInterval = 900 * time.Millisecond

// salesEvery is how often the list of sales is read from the store: it
// changes rarely, and a clustered store is a database round trip.
const salesEvery = 10 * time.Second

// recentlyEnded is how long an ended sale stays on the dashboard.
const recentlyEnded = time.Hour

// maxSales bounds the sales table.
const maxSales = 20

// readTimeout bounds the reads of a snapshot (the stream, the store, the
// counters): polls wait behind a reading, so a stuck dependency must not
// hold them for the whole admin budget.
const readTimeout = 2 * time.Second

// Sampler takes snapshots. It is safe for concurrent use.
type Sampler struct {
	src Source
	now func() time.Time

	mu      sync.Mutex
	prev    reading
	last    Snapshot
	sales   []sale.Sale
	salesAt time.Time
}

// NewSampler returns a Sampler reading src.
func NewSampler(src Source) *Sampler { return &Sampler{src: src, now: time.Now} }

// Snapshot is what the page shows, as JSON.
type Snapshot struct {
	At time.Time `json:"at"`
	// IntervalSeconds is the time the rates and percentiles cover (zero on
	// the first reading: no rates yet).
	IntervalSeconds float64 `json:"interval_seconds"`
	// Placements counts placements since start, by outcome (instance-wide:
	// the placement metrics have no sale label).
	Placements map[string]float64 `json:"placements"`
	// PerSecond is Placements' rate over the interval.
	PerSecond map[string]float64 `json:"per_second"`
	// LatencyMS holds p50 and p99 of the placement route over the interval
	// (absent when no placement was answered).
	LatencyMS    map[string]float64 `json:"latency_ms,omitempty"`
	Backlog      *uint64            `json:"stream_backlog,omitempty"`
	BacklogError string             `json:"stream_backlog_error,omitempty"`
	// Pending is how many acknowledged orders wait to be persisted;
	// PersistedPerSecond how fast they are (accepted − growth of pending);
	// DrainSeconds the time Pending takes at that speed.
	Pending            float64            `json:"orders_pending"`
	PersistedPerSecond float64            `json:"persisted_per_second"`
	DrainSeconds       *float64           `json:"drain_seconds,omitempty"`
	Admission          map[string]float64 `json:"admission,omitempty"`
	Sales              []SaleRow          `json:"sales"`
	SalesError         string             `json:"sales_error,omitempty"`
	Dependencies       []Dependency       `json:"dependencies"`
	Switches           []switches.State   `json:"switches"`
}

// SaleRow is one sale's stock.
type SaleRow struct {
	ID        string     `json:"id"`
	SKU       string     `json:"sku"`
	State     sale.State `json:"state"`
	Stock     int64      `json:"stock"`
	Remaining *int64     `json:"remaining"` // nil while the counters are unknown
	Sold      *int64     `json:"sold"`
	StartsAt  time.Time  `json:"starts_at"`
	EndsAt    *time.Time `json:"ends_at,omitempty"`
}

// Dependency is one guarded dependency's breaker and bulkhead.
type Dependency struct {
	Name         string   `json:"name"`
	Breaker      string   `json:"breaker"`
	BulkheadUse  *float64 `json:"bulkhead_in_use,omitempty"`
	BulkheadSize *float64 `json:"bulkhead_size,omitempty"`
	Limit        *float64 `json:"limit,omitempty"`
	InFlight     *float64 `json:"in_flight,omitempty"`
}

// Outcomes the page shows, from spike_placements_total{outcome} and
// spike_guard_rejections_total{guard}.
const (
	Accepted    = "accepted"
	SoldOut     = "sold_out"
	Limit       = "limit_exceeded"
	RateLimited = "rate_limited" // user_rate and sale_rate guards
	Overloaded  = "overloaded"   // admission shed and stream unavailable
	SwitchedOff = "switched_off" // orders.accept false
	Other       = "other"        // invalid, not found, conflict, not active, internal
)

// reading is the raw numbers of one gathering.
type reading struct {
	at       time.Time
	outcomes map[string]float64
	buckets  []bucket // the placement route's latency histogram
}

type bucket struct {
	upper float64
	count float64 // cumulative
}

// Snapshot returns the current snapshot, reading the sources unless the
// last reading is younger than MinInterval.
func (s *Sampler) Snapshot(ctx context.Context) (Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if !s.prev.at.IsZero() && now.Sub(s.prev.at) < MinInterval {
		return s.last, nil
	}
	families, err := s.src.Gatherer.Gather()
	if err != nil {
		return Snapshot{}, err
	}
	snap, cur := s.fromMetrics(families, now)
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	s.addSales(ctx, &snap, now)
	if s.src.Backlog != nil {
		if n, err := s.src.Backlog(ctx); err != nil {
			snap.BacklogError = err.Error()
		} else {
			snap.Backlog = &n
		}
	}
	if s.src.Switches != nil {
		snap.Switches = s.src.Switches()
	}
	s.prev, s.last = cur, snap
	return snap, nil
}

// fromMetrics fills the metric-derived part of a snapshot, with rates
// against the previous reading.
func (s *Sampler) fromMetrics(families []*dto.MetricFamily, now time.Time) (Snapshot, reading) {
	snap := Snapshot{At: now.UTC(), Placements: map[string]float64{}, PerSecond: map[string]float64{},
		Sales: []SaleRow{}, Dependencies: []Dependency{}, Switches: []switches.State{}}
	cur := reading{at: now, outcomes: map[string]float64{}}
	for _, o := range []string{Accepted, SoldOut, Limit, RateLimited, Overloaded, SwitchedOff, Other} {
		cur.outcomes[o] = 0
	}
	deps := map[string]*Dependency{}
	dep := func(m *dto.Metric) *Dependency {
		name := label(m, "dependency")
		if deps[name] == nil {
			deps[name] = &Dependency{Name: name, Breaker: "unknown"}
		}
		return deps[name]
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetName() {
			case "spike_placements_total":
				cur.outcomes[placementOutcome(label(m, "outcome"))] += m.GetCounter().GetValue()
			case "spike_guard_rejections_total":
				if o := guardOutcome(label(m, "guard")); o != "" {
					cur.outcomes[o] += m.GetCounter().GetValue()
				}
			case "spike_http_request_duration_seconds":
				if label(m, "route") == "place_order" {
					cur.buckets = buckets(m.GetHistogram())
				}
			case "spike_orders_pending":
				snap.Pending = m.GetGauge().GetValue()
			case "spike_admission_limit":
				setMap(&snap.Admission, "limit", m.GetGauge().GetValue())
			case "spike_admission_in_flight":
				setMap(&snap.Admission, "in_flight", m.GetGauge().GetValue())
			case "spike_breaker_state":
				dep(m).Breaker = breakerState(m.GetGauge().GetValue())
			case "spike_bulkhead_in_use":
				dep(m).BulkheadUse = ptr(m.GetGauge().GetValue())
			case "spike_bulkhead_size":
				dep(m).BulkheadSize = ptr(m.GetGauge().GetValue())
			case "spike_dependency_limit":
				dep(m).Limit = ptr(m.GetGauge().GetValue())
			case "spike_dependency_in_flight":
				dep(m).InFlight = ptr(m.GetGauge().GetValue())
			}
		}
	}
	for _, d := range deps {
		snap.Dependencies = append(snap.Dependencies, *d)
	}
	slices.SortFunc(snap.Dependencies, func(a, b Dependency) int { return strings.Compare(a.Name, b.Name) })
	maps(snap.Placements, cur.outcomes)
	s.rates(&snap, cur)
	return snap, cur
}

// rates fills the per-second and percentile fields from the difference
// between cur and the previous reading.
func (s *Sampler) rates(snap *Snapshot, cur reading) {
	prev := s.prev
	if prev.at.IsZero() {
		return
	}
	dt := cur.at.Sub(prev.at).Seconds()
	snap.IntervalSeconds = dt
	for o, v := range cur.outcomes {
		snap.PerSecond[o] = math.Max(0, v-prev.outcomes[o]) / dt
	}
	// Persisted = accepted − growth of the pending index, over the interval.
	prevPending := s.last.Pending
	persisted := math.Max(0, (cur.outcomes[Accepted]-prev.outcomes[Accepted])-(snap.Pending-prevPending)) / dt
	snap.PersistedPerSecond = persisted
	if snap.Pending == 0 {
		snap.DrainSeconds = ptr(0.0)
	} else if persisted > 0 {
		snap.DrainSeconds = ptr(snap.Pending / persisted)
	}
	if d := delta(cur.buckets, prev.buckets); d != nil {
		snap.LatencyMS = map[string]float64{
			"p50": 1000 * quantile(0.50, d), "p99": 1000 * quantile(0.99, d),
		}
	}
}

// placementOutcome groups the API's error codes into the page's outcomes.
func placementOutcome(code string) string {
	switch code {
	case "accepted":
		return Accepted
	case "sold_out":
		return SoldOut
	case "limit_exceeded":
		return Limit
	case "unavailable":
		return Overloaded
	}
	return Other
}

func guardOutcome(guard string) string {
	switch guard {
	case "user_rate", "sale_rate":
		return RateLimited
	case "admission":
		return Overloaded
	case "orders_accept_switch":
		return SwitchedOff
	}
	return ""
}

func breakerState(v float64) string {
	switch v {
	case 0:
		return "closed"
	case 1:
		return "open"
	case 2:
		return "half-open"
	case 3:
		return "forced open"
	case 4:
		return "forced closed"
	}
	return "unknown"
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func buckets(h *dto.Histogram) []bucket {
	var out []bucket
	for _, b := range h.GetBucket() {
		out = append(out, bucket{upper: b.GetUpperBound(), count: float64(b.GetCumulativeCount())})
	}
	return append(out, bucket{upper: math.Inf(1), count: float64(h.GetSampleCount())})
}

// delta returns the buckets of the observations between prev (nil: none
// yet) and cur, or nil when there were none.
func delta(cur, prev []bucket) []bucket {
	if len(cur) == 0 || prev != nil && len(prev) != len(cur) {
		return nil
	}
	out := make([]bucket, len(cur))
	for i := range cur {
		out[i] = cur[i]
		if prev != nil {
			out[i].count -= prev[i].count
		}
	}
	if out[len(out)-1].count <= 0 {
		return nil
	}
	return out
}

// quantile estimates the q-quantile of cumulative buckets the way
// Prometheus' histogram_quantile does: linear within the bucket; in the
// +Inf bucket, the highest finite bound.
func quantile(q float64, bs []bucket) float64 {
	total := bs[len(bs)-1].count
	rank := q * total
	lower, below := 0.0, 0.0
	for i, b := range bs {
		if b.count >= rank {
			if math.IsInf(b.upper, 1) {
				if i == 0 {
					return 0
				}
				return bs[i-1].upper
			}
			in := b.count - below
			if in <= 0 {
				return b.upper
			}
			return lower + (b.upper-lower)*(rank-below)/in
		}
		lower, below = b.upper, b.count
	}
	return lower
}

func setMap(m *map[string]float64, k string, v float64) {
	if *m == nil {
		*m = map[string]float64{}
	}
	(*m)[k] = v
}

func maps(dst, src map[string]float64) {
	for k, v := range src {
		dst[k] = v
	}
}

func ptr[T any](v T) *T { return &v }

// addSales fills the sales table: running and scheduled sales and those
// that ended within recentlyEnded, newest first.
func (s *Sampler) addSales(ctx context.Context, snap *Snapshot, now time.Time) {
	if s.src.Sales == nil || s.src.Counters == nil {
		return
	}
	if s.sales == nil || now.Sub(s.salesAt) >= salesEvery {
		all, err := s.src.Sales.Sales(ctx)
		if err != nil {
			snap.SalesError = err.Error()
			return
		}
		s.sales, s.salesAt = shownSales(all, now), now
	}
	for _, sl := range s.sales {
		row := SaleRow{ID: sl.ID, SKU: sl.SKU, Stock: sl.Stock, StartsAt: sl.StartsAt}
		if !sl.EndsAt.IsZero() {
			row.EndsAt = ptr(sl.EndsAt)
		}
		remaining, ok, err := s.src.Counters.Remaining(ctx, sl.ID)
		if err == nil && ok {
			row.Remaining, row.Sold = ptr(remaining), ptr(sl.Stock-remaining)
			row.State = sl.StateAt(now, remaining)
		} else {
			row.State = sl.StateAt(now, 1)
		}
		snap.Sales = append(snap.Sales, row)
	}
}

func shownSales(all []sale.Sale, now time.Time) []sale.Sale {
	shown := make([]sale.Sale, 0, len(all))
	for _, sl := range all {
		if sl.EndsAt.IsZero() || now.Sub(sl.EndsAt) < recentlyEnded {
			shown = append(shown, sl)
		}
	}
	slices.SortFunc(shown, func(a, b sale.Sale) int { return b.StartsAt.Compare(a.StartsAt) })
	if len(shown) > maxSales {
		shown = shown[:maxSales]
	}
	return shown
}
