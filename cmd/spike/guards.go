package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spikehq/spike/catalogcache"
	"github.com/spikehq/spike/httpapi"
	"github.com/spikehq/spike/order"
	"github.com/spikehq/spike/redislimit"
	"github.com/spikehq/spike/resilience"
	"github.com/spikehq/spike/switches"
)

// guardedStream puts the order stream behind a circuit breaker and a
// bulkhead: when JetStream is slow or down, placements fail fast (their
// reservations undone) instead of piling up waiting for acks.
type guardedStream struct {
	inner    order.Stream
	breaker  *resilience.Breaker
	inFlight *resilience.Semaphore
}

func newGuardedStream(inner order.Stream, reg prometheus.Registerer, log *slog.Logger) *guardedStream {
	state := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "spike_breaker_state", Help: "Circuit breaker state (0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed).",
		ConstLabels: prometheus.Labels{"dependency": "order_stream"},
	})
	reg.MustRegister(state)
	g := &guardedStream{
		inner: inner,
		breaker: resilience.NewBreaker(resilience.BreakerConfig{
			Name:                  "order_stream",
			Window:                resilience.TimeWindow,
			WindowSize:            10, // seconds
			MinimumCalls:          20,
			FailureRateThreshold:  0.5,
			SlowCallDuration:      time.Second,
			SlowCallRateThreshold: 0.8,
			OpenTimeout:           2 * time.Second,
			HalfOpenCalls:         5,
			OnStateChange: func(name string, from, to resilience.State) {
				state.Set(float64(to))
				log.Warn("circuit breaker", "dependency", name, "from", from.String(), "to", to.String())
			},
		}),
		// Far above what a healthy stream needs; a bound on goroutines parked
		// on acks when it is not.
		inFlight: resilience.NewSemaphore(8192, 0),
	}
	return g
}

var errStreamBreakerOpen = fmt.Errorf("order stream circuit breaker is open: %w", order.ErrNotEnqueued)
var errStreamBusy = fmt.Errorf("too many placements waiting on the order stream: %w", order.ErrNotEnqueued)

// Enqueue implements order.Stream. A call refused by the breaker or the
// bulkhead never reached the stream, so it is certainly not enqueued.
func (g *guardedStream) Enqueue(ctx context.Context, e order.Placed) error {
	permit, err := g.breaker.Acquire()
	if err != nil {
		return errStreamBreakerOpen
	}
	if !g.inFlight.TryAcquire() {
		permit.Record(nil) // not the stream's fault
		return errStreamBusy
	}
	err = g.inner.Enqueue(ctx, e)
	g.inFlight.Release()
	permit.Record(err)
	return err
}

// registerCacheMetrics exports the product cache's counters.
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
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "spike_breaker_state", Help: "Circuit breaker state (0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed).",
		ConstLabels: prometheus.Labels{"dependency": "catalog_db"},
	}, func() float64 { return float64(products.Stats().Breaker) }))
}

// delayedStream is a fault injector: each enqueue waits first.
type delayedStream struct {
	order.Stream
	delay time.Duration
}

func (d delayedStream) Enqueue(ctx context.Context, e order.Placed) error {
	t := time.NewTimer(d.delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return d.Stream.Enqueue(ctx, e)
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
