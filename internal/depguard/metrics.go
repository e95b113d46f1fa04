package depguard

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spikehq/spike/resilience"
)

// Metrics exports guards and breakers to Prometheus, one set of metrics
// for all with a dependency label, and logs their breakers' state changes:
//
//   - spike_breaker_state, spike_breaker_rejected_total,
//     spike_dependency_calls_total{outcome}, spike_dependency_slow_calls_total:
//     the breaker;
//   - spike_bulkhead_in_use, spike_bulkhead_size,
//     spike_bulkhead_rejected_total: the bulkhead, if any;
//   - spike_dependency_limit, spike_dependency_in_flight,
//     spike_dependency_shed_total, spike_dependency_cpu_ignored_total: the
//     adaptive limit, if any.
//
// A nil *Metrics exports nothing.
type Metrics struct {
	reg prometheus.Registerer
	log *slog.Logger
}

// NewMetrics returns a Metrics that registers with reg and logs with log
// (nil: slog.Default()).
func NewMetrics(reg prometheus.Registerer, log *slog.Logger) *Metrics {
	if log == nil {
		log = slog.Default()
	}
	return &Metrics{reg: reg, log: log}
}

func (m *Metrics) onStateChange(name string, from, to resilience.State) {
	m.log.Warn("circuit breaker", "dependency", name, "from", from.String(), "to", to.String())
}

// Watch exports b, the breaker of dep, built elsewhere (from
// [BreakerConfig], whose OnStateChange logs its changes).
func (m *Metrics) Watch(dep Dependency, b *resilience.Breaker) {
	if m == nil || b == nil {
		return
	}
	labels := prometheus.Labels{"dependency": string(dep)}
	counts := func(f func(resilience.BreakerCounts) uint64) func() float64 {
		return func() float64 { return float64(f(b.Counts())) }
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "spike_breaker_state", Help: "Circuit breaker state (0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed).",
			ConstLabels: labels,
		}, func() float64 { return float64(b.State()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "spike_breaker_rejected_total", Help: "Calls refused by an open circuit breaker, without reaching the dependency.",
			ConstLabels: labels,
		}, counts(func(c resilience.BreakerCounts) uint64 { return c.Rejected })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "spike_dependency_slow_calls_total", Help: "Calls to a dependency slower than its breaker's slow-call duration (also counted by outcome).",
			ConstLabels: labels,
		}, counts(func(c resilience.BreakerCounts) uint64 { return c.Slow })),
	)
	for outcome, f := range map[string]func(resilience.BreakerCounts) uint64{
		"success": func(c resilience.BreakerCounts) uint64 { return c.Successes },
		"failure": func(c resilience.BreakerCounts) uint64 { return c.Failures },
		// Answers that are no failure of the dependency (the caller gave
		// up...): neither success nor failure for the breaker.
		"ignored": func(c resilience.BreakerCounts) uint64 { return c.Ignored },
	} {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "spike_dependency_calls_total", Help: "Calls a dependency's circuit breaker let through, by outcome.",
			ConstLabels: prometheus.Labels{"dependency": string(dep), "outcome": outcome},
		}, counts(f)))
	}
}

// export registers g's breaker, bulkhead and limit.
func (m *Metrics) export(g *Guard) {
	m.Watch(g.dep, g.breaker)
	labels := prometheus.Labels{"dependency": string(g.dep)}
	if s := g.slots; s != nil {
		m.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "spike_bulkhead_rejected_total", Help: "Calls refused because a dependency's bulkhead was full.",
				ConstLabels: labels,
			}, func() float64 { return float64(g.full.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "spike_bulkhead_in_use", Help: "Calls holding a slot of a dependency's bulkhead.", ConstLabels: labels,
			}, func() float64 { return float64(s.InUse()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "spike_bulkhead_size", Help: "Slots of a dependency's bulkhead.", ConstLabels: labels,
			}, func() float64 { return float64(s.Size()) }),
		)
	}
	if l := g.limit; l != nil {
		m.reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "spike_dependency_limit", Help: "Adaptive concurrency limit of calls to a dependency.", ConstLabels: labels,
			}, func() float64 { return float64(l.Limit()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "spike_dependency_in_flight", Help: "Calls in flight to a dependency under its adaptive limit.", ConstLabels: labels,
			}, func() float64 { return float64(l.InFlight()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "spike_dependency_shed_total", Help: "Calls to a dependency refused by its adaptive limit.", ConstLabels: labels,
			}, func() float64 { return float64(l.Shed()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "spike_dependency_cpu_ignored_total", Help: "Calls to a dependency whose latency its adaptive limit ignored because the CPU was saturated (and they did not crowd the limit).",
				ConstLabels: labels,
			}, func() float64 { return float64(g.CPUIgnored()) }),
		)
	}
}
