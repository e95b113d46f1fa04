package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spikehq/spike"
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

// guardedOrderReads puts the order store's reads (buyers reading their
// orders, listings) behind a timeout funnel, a bulkhead and a breaker, so a
// slow database sheds those reads quickly instead of piling goroutines up.
// Writes (the workers' inserts) are not guarded here: they retry with
// backoff and their events wait on the stream.
type guardedOrderReads struct {
	stores
	breaker *resilience.Breaker
	slots   *resilience.Semaphore
}

func newGuardedOrderReads(st stores, reg prometheus.Registerer, log *slog.Logger) *guardedOrderReads {
	state := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "spike_breaker_state", Help: "Circuit breaker state (0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed).",
		ConstLabels: prometheus.Labels{"dependency": "order_reads"},
	})
	reg.MustRegister(state)
	return &guardedOrderReads{
		stores: st,
		breaker: resilience.NewBreaker(resilience.BreakerConfig{
			Name: "order_reads", Window: resilience.TimeWindow, WindowSize: 10, MinimumCalls: 20,
			FailureRateThreshold: 0.5, SlowCallDuration: time.Second, SlowCallRateThreshold: 0.8,
			OpenTimeout: 2 * time.Second, HalfOpenCalls: 5,
			// Not found is an answer, not a failure of the database.
			IsFailure: func(err error) bool { return err != nil && !errors.Is(err, order.ErrOrderNotFound) },
			OnStateChange: func(name string, from, to resilience.State) {
				state.Set(float64(to))
				log.Warn("circuit breaker", "dependency", name, "from", from.String(), "to", to.String())
			},
		}),
		slots: resilience.NewSemaphore(64, 100*time.Millisecond),
	}
}

var errOrderReadsShed = &spike.Error{Kind: spike.ErrUnavailable, Message: "order reads are shed while the database is slow; retry shortly"}

// guard runs a read within a 2 s budget (never past the caller's
// deadline), a slot of the bulkhead and the breaker.
func (g *guardedOrderReads) guard(ctx context.Context, read func(context.Context) error) error {
	if err := g.slots.Acquire(ctx); err != nil {
		return errOrderReadsShed
	}
	defer g.slots.Release()
	err := g.breaker.Do(ctx, func(ctx context.Context) error {
		ctx, cancel := resilience.Budget(ctx, 2*time.Second, 10*time.Millisecond)
		defer cancel()
		return read(ctx)
	})
	if errors.Is(err, resilience.ErrBreakerOpen) || errors.Is(err, resilience.ErrTimeout) {
		return errOrderReadsShed
	}
	return err
}

func (g *guardedOrderReads) Order(ctx context.Context, id string) (o order.Order, err error) {
	err = g.guard(ctx, func(ctx context.Context) (err error) { o, err = g.stores.Order(ctx, id); return err })
	return o, err
}

func (g *guardedOrderReads) ListOrders(ctx context.Context, userID int64, after order.Cursor, limit int) (os []order.Order, err error) {
	err = g.guard(ctx, func(ctx context.Context) (err error) {
		os, err = g.stores.ListOrders(ctx, userID, after, limit)
		return err
	})
	return os, err
}
