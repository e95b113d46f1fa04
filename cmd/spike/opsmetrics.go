package main

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spikehq/spike/internal/ledger"
)

// The metrics the alert rules of deploy/prometheus/alerts.yml need beyond
// the request path's own: all read at scrape time (or set by an audit), so
// they cost placements nothing. See docs/operations.md.

// registerOpsMetrics exports the stream backlog, the age of the oldest
// pending order and, in clustered mode, the fenced sales and their
// rebuilds.
func registerOpsMetrics(reg prometheus.Registerer, a *app) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "spike_stream_backlog",
			Help: "Orders on the stream not yet persisted, of all instances (NaN when the stream cannot be read).",
		}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			n, err := a.bus.Backlog(ctx)
			if err != nil {
				return math.NaN()
			}
			return float64(n)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "spike_orders_pending_oldest_seconds",
			Help: "Age of the oldest order this instance acknowledged and has not yet seen persisted (0: none).",
		}, func() float64 {
			t, ok := a.orders.OldestPending()
			if !ok {
				return 0
			}
			return time.Since(t).Seconds()
		}),
	)
	if a.redis != nil {
		reg.MustRegister(fencedCollector{a.redis.recovery})
	}
}

// fencedCollector exports the clustered stock's recovery: one series per
// fenced sale, and the rebuilds by outcome.
type fencedCollector struct{ r *ledger.Recovery }

var (
	fencedDesc = prometheus.NewDesc("spike_sale_fenced",
		"1 for each sale whose stock counters this instance found fenced (missing or from an older epoch) and has not yet seen rebuilt.",
		[]string{"sale"}, nil)
	rebuildsDesc = prometheus.NewDesc("spike_stock_rebuilds_total",
		"Rebuilds of a fenced sale's stock counters run by this instance, by outcome.",
		[]string{"outcome"}, nil)
)

func (c fencedCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- fencedDesc
	ch <- rebuildsDesc
}

func (c fencedCollector) Collect(ch chan<- prometheus.Metric) {
	for _, id := range c.r.Fencing() {
		ch <- prometheus.MustNewConstMetric(fencedDesc, prometheus.GaugeValue, 1, id)
	}
	rebuilt, failed := c.r.Rebuilds()
	ch <- prometheus.MustNewConstMetric(rebuildsDesc, prometheus.CounterValue, float64(rebuilt), "rebuilt")
	ch <- prometheus.MustNewConstMetric(rebuildsDesc, prometheus.CounterValue, float64(failed), "failed")
}

// auditMetrics records the outcome of every audit (GET /v1/admin/audit,
// which `spike audit` calls): Spike runs no audit on its own, since an
// audit reads every order. Set it as the Auditor's OnAudit.
type auditMetrics struct {
	mu                   sync.Mutex
	lastPass, lastFail   time.Time
	runs                 *prometheus.CounterVec
	passed, failed, errs prometheus.Counter
}

func newAuditMetrics(reg prometheus.Registerer) *auditMetrics {
	m := &auditMetrics{runs: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spike_audit_runs_total",
		Help: "Audits run by this instance by result: passed, failed (an invariant does not hold) or error (the record could not be read).",
	}, []string{"result"})}
	m.passed, m.failed, m.errs = m.runs.WithLabelValues("passed"), m.runs.WithLabelValues("failed"), m.runs.WithLabelValues("error")
	stamp := func(t *time.Time) func() float64 {
		return func() float64 {
			m.mu.Lock()
			defer m.mu.Unlock()
			if t.IsZero() {
				return 0
			}
			return float64(t.UnixNano()) / 1e9
		}
	}
	reg.MustRegister(m.runs,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "spike_audit_last_pass_timestamp_seconds", Help: "When an audit on this instance last passed (0: never).",
		}, stamp(&m.lastPass)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "spike_audit_last_failure_timestamp_seconds", Help: "When an audit on this instance last failed or could not read the record (0: never).",
		}, stamp(&m.lastFail)),
	)
	return m
}

func (m *auditMetrics) observe(rep ledger.Report, err error) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case err != nil:
		m.errs.Inc()
		m.lastFail = now
	case !rep.OK:
		m.failed.Inc()
		m.lastFail = now
	default:
		m.passed.Inc()
		m.lastPass = now
	}
}
