package main

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spikehq/spike/internal/adapter/natsbus"
	"github.com/spikehq/spike/internal/adapter/redislimit"
	"github.com/spikehq/spike/internal/adapter/redisstock"
	"github.com/spikehq/spike/internal/depguard"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/httpapi"
	"github.com/spikehq/spike/internal/readcache/catalogcache"
	"github.com/spikehq/spike/internal/switches"
	"github.com/spikehq/spike/resilience"
)

// orderGuards are the order path's outbound dependencies behind their
// guards (internal/depguard): the Redis stock counters, the stream, and
// the order store's writes and reads. In-process counters are no
// dependency and are called directly.
type orderGuards struct {
	reserver order.Reserver
	stock    *depguard.Stock // nil with in-process counters; its Run retries failed releases
	stream   *depguard.Stream
	orders   *depguard.OrderStore
	breakers map[depguard.Dependency]*resilience.Breaker
}

// cpu is the process's CPU saturation, shared with the pacer (newPacer):
// each refresh reads every thread's schedstat.
func newOrderGuards(counters order.Reserver, clustered bool, stream order.Stream, store order.Store, limits LimitsConfig, cpu *resilience.CPUSaturation, m *depguard.Metrics, log *slog.Logger) orderGuards {
	streamLimits := depguard.StreamLimits(limits.StreamMin, limits.StreamMax, limits.StreamTolerance, limits.StreamSlack)
	g := orderGuards{
		reserver: depguard.TraceReserver(counters), // spans of the in-process counters (the guard's own otherwise)
		orders:   depguard.NewOrderStore(store, depguard.OrderStoreConfig{Metrics: m}),
		stream: depguard.NewStream(stream, depguard.New(depguard.OrderStream, depguard.Config{
			Settings:  &streamLimits,
			Saturated: func() bool { return !cpuGateOff.Load() && cpu.Saturated() },
			Queued:    cpu.Queued,
			Metrics:   m,
		})),
	}
	g.breakers = map[depguard.Dependency]*resilience.Breaker{
		depguard.OrderWrites: g.orders.Writes().Breaker(),
		depguard.OrderReads:  g.orders.Reads().Breaker(),
		depguard.OrderStream: g.stream.Guard().Breaker(),
	}
	if clustered {
		g.stock = depguard.NewStock(counters, depguard.StockConfig{
			Timeout: limits.StockTimeout, IsFailure: isRedisStockFailure, Metrics: m, Logger: log.With("component", "redisstock"),
		})
		g.reserver, g.breakers[depguard.RedisStock] = g.stock, g.stock.Guard().Breaker()
	}
	return g
}

// cpuGateOff makes the stream limit judge every publish's latency, CPU
// saturated or not: for tests, whose race-instrumented clients saturate the
// CPU they share with the server.
var cpuGateOff atomic.Bool

// isRedisStockFailure reports whether err says Redis failed (no answer,
// timeout, error reply), as opposed to a domain answer or a caller that
// gave up.
func isRedisStockFailure(err error) bool {
	return err != nil && errors.Is(err, redisstock.ErrUnavailable) && !errors.Is(err, context.Canceled)
}

// registerCacheMetrics exports the product cache's counters (its guards
// are exported by depguard.Metrics).
func registerCacheMetrics(reg prometheus.Registerer, products *catalogcache.Store) {
	counter := func(name, help string, f func(catalogcache.Stats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "spike_catalog_cache_" + name + "_total", Help: help},
			func() float64 { return float64(f(products.Stats())) }))
	}
	counter("hits", "Product reads answered from L1.", func(s catalogcache.Stats) uint64 { return s.Hits })
	counter("misses", "Product reads that waited for a load.", func(s catalogcache.Stats) uint64 { return s.Misses })
	counter("l2_hits", "Loads answered by L2 (Redis).", func(s catalogcache.Stats) uint64 { return s.L2Hits })
	counter("loads", "Database reads of products.", func(s catalogcache.Stats) uint64 { return s.Loads })
	counter("load_errors", "Failed or refused database reads of products.", func(s catalogcache.Stats) uint64 { return s.LoadErrors })
	counter("stale_served", "Reads answered with an expired entry.", func(s catalogcache.Stats) uint64 { return s.StaleServed })
	counter("unavailable", "Product reads refused (503).", func(s catalogcache.Stats) uint64 { return s.Unavailable })
	counter("invalidations", "L1 invalidations, local and received.", func(s catalogcache.Stats) uint64 { return s.Invalidations })
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spike_catalog_cache_entries", Help: "L1 entries."},
		func() float64 { return float64(products.Stats().Entries) }))
}

// sharedPerUser returns the per-buyer limit shared by all instances on
// Redis, following the ratelimit.user_* switches; nil without Redis.
func sharedPerUser(r *redisStock, board *switches.Board, instances int) httpapi.KeyedLimiter {
	if r == nil {
		return nil
	}
	l := redislimit.New(r.client, redislimit.Config{
		Name:      "buyer",
		Algorithm: redislimit.TokenBucket,
		Rate:      board.Number(switches.UserRate),
		Burst:     int(board.Number(switches.UserBurst)),
		Instances: instances,
	})
	board.OnChange(func(name, _ string) {
		if name == switches.UserRate || name == switches.UserBurst {
			l.SetRate(board.Number(switches.UserRate), int(board.Number(switches.UserBurst)))
		}
	})
	return l
}

// newPacer returns the order workers' pacer (order.Pacer): they give way
// for up to maxLag while placements arrive at 500/s or more and the CPU is
// saturated. Its waits are exported as metrics.
func newPacer(maxLag time.Duration, cpu *resilience.CPUSaturation, reg prometheus.Registerer) *order.Pacer {
	p := &order.Pacer{Busy: cpu.Saturated, MaxLag: maxLag, MinRate: 500}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "spike_order_persist_held_seconds_total",
		Help: "Time order workers held batches to give way to placements (limits.persist_yield).",
	}, func() float64 { d, _ := p.Waited(); return d.Seconds() }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "spike_order_persist_held_batches_total",
		Help: "Batches order workers held to give way to placements.",
	}, func() float64 { _, n := p.Waited(); return float64(n) }))
	return p
}

// pacedPersist holds each batch while the pacer says so, then persists.
func pacedPersist(persist natsbus.PersistFunc, p *order.Pacer) natsbus.PersistFunc {
	return func(ctx context.Context, events []order.Placed) error {
		p.Wait(ctx, events)
		return persist(ctx, events)
	}
}
