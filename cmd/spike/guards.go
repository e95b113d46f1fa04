package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/metrics"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/redislimit"
	"github.com/spikehq/spike/internal/adapter/redisstock"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/httpapi"
	"github.com/spikehq/spike/internal/readcache/catalogcache"
	"github.com/spikehq/spike/internal/switches"
	"github.com/spikehq/spike/resilience"
)

// guardedStream puts the order stream behind a circuit breaker, an
// adaptive concurrency limit and a bulkhead: when JetStream is slow or
// down, placements fail fast (their reservations undone) instead of piling
// up waiting for acks.
//
// The adaptive limit (a gradient limiter against the probed latency of
// publishes that did not queue, resilience.Probed) keeps the publishes in
// flight near what the stream serves at once: when the stream slows down,
// the admitted placements do not queue behind each other and the excess is
// refused at once with 503 and Retry-After (after the reservation, which
// is undone). The bulkhead is only a hard bound on goroutines parked on
// acks.
//
// While the CPU is saturated (goroutines wait to run, see cpuSaturation)
// the limit still holds but learns nothing (the publishes' latencies are
// ignored): publish latency then rises with the CPU's queue, not the
// stream's, and shrinking the limit would refuse placements after their
// reservation, wasting the work already done; the HTTP admission limit
// sheds that overload before decoding. (Letting publishes through the limit
// while the CPU is saturated was tried: with a slowed stream on a busy
// machine they queued at the stream in bursts.)
type guardedStream struct {
	inner    order.Stream
	breaker  *resilience.Breaker
	limit    *resilience.Adaptive
	inFlight *resilience.Semaphore
	cpu      cpuSaturation
	ignored  atomic.Uint64 // publishes whose latency was ignored: the CPU was saturated
	metrics  *breakerMetrics
}

// Stream limit defaults (limits.stream_* in the configuration). The floor
// is also the concurrency of the probes
// that measure unqueued latency, so it must stay below what a slowed stream
// serves at once. Tolerance and slack let the mean publish latency reach
// max(3 × unqueued, unqueued + 20 ms) before the limit shrinks: a healthy
// stream's sub-millisecond publishes jitter by far more than 3× on a busy
// CPU without any queue at the stream, and on the shared 2-core machine
// tolerance 2 and 5 ms of slack starved a slowed stream (goodput 0.6× its
// capacity in scripts/overload.sh dep, against 0.98× with these).
const (
	streamLimitInitial   = 256
	streamLimitMin       = 4
	streamLimitMax       = 8192
	streamLimitSlack     = 20 * time.Millisecond
	streamLimitTolerance = 3
)

func newGuardedStream(inner order.Stream, limits LimitsConfig, reg prometheus.Registerer, log *slog.Logger) *guardedStream {
	m := newBreakerMetrics(reg, log, "order_stream")
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
			OnStateChange:         m.onStateChange,
		}),
		limit: resilience.NewAdaptive(resilience.AdaptiveConfig{
			InitialLimit: min(max(streamLimitInitial, limits.StreamMin), limits.StreamMax),
			MinLimit:     limits.StreamMin, MaxLimit: limits.StreamMax,
			Baseline: resilience.Probed, Tolerance: limits.StreamTolerance, Slack: limits.StreamSlack,
		}),
		// A bound on goroutines parked on acks, whatever the limit.
		inFlight: resilience.NewSemaphore(limits.StreamMax, 0),
		metrics:  m,
	}
	m.breaker = g.breaker
	m.bulkhead(g.inFlight)
	l := g.limit
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "spike_dependency_limit", Help: "Adaptive concurrency limit of calls to a dependency.",
			ConstLabels: prometheus.Labels{"dependency": "order_stream"},
		}, func() float64 { return float64(l.Limit()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "spike_dependency_in_flight", Help: "Calls in flight to a dependency under its adaptive limit.",
			ConstLabels: prometheus.Labels{"dependency": "order_stream"},
		}, func() float64 { return float64(l.InFlight()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "spike_dependency_shed_total", Help: "Calls to a dependency refused by its adaptive limit.",
			ConstLabels: prometheus.Labels{"dependency": "order_stream"},
		}, func() float64 { return float64(l.Shed()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "spike_dependency_cpu_ignored_total", Help: "Calls to a dependency whose latency its adaptive limit ignored because the CPU was saturated.",
			ConstLabels: prometheus.Labels{"dependency": "order_stream"},
		}, func() float64 { return float64(g.ignored.Load()) }),
	)
	return g
}

var errStreamBreakerOpen = fmt.Errorf("order stream circuit breaker is open: %w", order.ErrNotEnqueued)
var errStreamBusy = fmt.Errorf("too many placements waiting on the order stream: %w", order.ErrNotEnqueued)

// Enqueue implements order.Stream. A call refused by the breaker, the
// limit or the bulkhead never reached the stream, so it is certainly not
// enqueued.
func (g *guardedStream) Enqueue(ctx context.Context, e order.Placed) error {
	permit, err := g.breaker.Acquire()
	if err != nil {
		return errStreamBreakerOpen
	}
	ticket, ok := g.limit.Acquire(resilience.Critical)
	if !ok {
		permit.Record(nil) // not the stream's fault
		return errStreamBusy
	}
	if !g.inFlight.TryAcquire() {
		g.metrics.bulkheadFull()
		ticket.Ignore()
		permit.Record(nil)
		return errStreamBusy
	}
	err = g.inner.Enqueue(ctx, e)
	g.inFlight.Release()
	switch {
	case !cpuGateOff.Load() && g.cpu.saturated():
		g.ignored.Add(1)
		ticket.Ignore()
	case err == nil:
		ticket.Success()
	case ctx.Err() != nil:
		ticket.Dropped() // timed out waiting for the stream: back off
	default:
		ticket.Ignore() // the stream refused or is down: the breaker's business
	}
	permit.Record(err)
	return err
}

// cpuGateOff makes the stream limit judge every publish's latency, CPU
// saturated or not: for tests, whose race-instrumented clients saturate the
// CPU they share with the server.
var cpuGateOff atomic.Bool

// cpuSaturation tells whether the Go scheduler's run queues are long: more
// than a tenth of the goroutines made runnable in the last 100 ms waited 1
// ms or more to run (runtime/metrics /sched/latencies:seconds). It is
// refreshed at most every 100 ms by whichever caller comes first.
type cpuSaturation struct {
	busy   atomic.Bool
	next   atomic.Int64 // unix ns of the next refresh
	mu     sync.Mutex
	sample []metrics.Sample
	prev   []uint64
}

const (
	cpuSampleEvery = 100 * time.Millisecond
	cpuSlowWait    = time.Millisecond
)

func (c *cpuSaturation) saturated() bool {
	if now := time.Now().UnixNano(); now >= c.next.Load() && c.mu.TryLock() {
		c.refresh(now)
		c.mu.Unlock()
	}
	return c.busy.Load()
}

func (c *cpuSaturation) refresh(now int64) {
	c.next.Store(now + int64(cpuSampleEvery))
	if c.sample == nil {
		c.sample = []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	}
	metrics.Read(c.sample)
	if c.sample[0].Value.Kind() != metrics.KindFloat64Histogram {
		return // not supported by this runtime: never saturated
	}
	h := c.sample[0].Value.Float64Histogram()
	if len(c.prev) != len(h.Counts) {
		c.prev = slices.Clone(h.Counts)
		return
	}
	var total, slow uint64
	for i, n := range h.Counts {
		d := n - c.prev[i]
		total += d
		if h.Buckets[i] >= cpuSlowWait.Seconds() {
			slow += d
		}
	}
	copy(c.prev, h.Counts)
	c.busy.Store(slow*10 > total && total > 0)
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

// delayedStream is a fault injector (SPIKE_FAULT_STREAM_DELAY): a slowed
// dependency in front of the stream that serves at most
// SPIKE_FAULT_STREAM_SLOTS (default 8) publishes at a time, each taking
// delay, first come first served, so its capacity is slots / delay (8 / 5 ms
// = 1600/s) whatever the CPU: each publish books the slot that frees first
// and waits until its booked end, so a goroutine woken late by a busy CPU
// is slow itself but does not hold up the next call.
type delayedStream struct {
	order.Stream
	delay time.Duration
}

// faultSlots is the slowed dependency's schedule, shared by every
// delayedStream of the process (there is one per server).
var faultSlots = sync.OnceValue(func() *slotSchedule {
	n := 8
	if v, err := strconv.Atoi(os.Getenv("SPIKE_FAULT_STREAM_SLOTS")); err == nil && v > 0 {
		n = v
	}
	return &slotSchedule{free: make([]time.Time, n)}
})

// slotSchedule books calls on the slot that frees first.
type slotSchedule struct {
	mu   sync.Mutex
	free []time.Time // when each slot is next free
}

// book returns when a call arriving now and taking d ends.
func (s *slotSchedule) book(d time.Duration) time.Time {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	first := 0
	for i, t := range s.free {
		if t.Before(s.free[first]) {
			first = i
		}
	}
	end := maxTime(now, s.free[first]).Add(d)
	s.free[first] = end
	return end
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

var errFaultStream = fmt.Errorf("slowed stream: gave up before publishing: %w", order.ErrNotEnqueued)

func (d delayedStream) Enqueue(ctx context.Context, e order.Placed) error {
	t := time.NewTimer(time.Until(faultSlots().book(d.delay)))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return errFaultStream // the slot stays booked: the dependency did the work
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
// Writes (the workers' inserts) have their own guard, guardedOrderWrites.
type guardedOrderReads struct {
	stores
	breaker *resilience.Breaker
	slots   *resilience.Semaphore
	metrics *breakerMetrics
}

func newGuardedOrderReads(st stores, reg prometheus.Registerer, log *slog.Logger) *guardedOrderReads {
	m := newBreakerMetrics(reg, log, "order_reads")
	g := &guardedOrderReads{
		stores: st,
		breaker: resilience.NewBreaker(resilience.BreakerConfig{
			Name: "order_reads", Window: resilience.TimeWindow, WindowSize: 10, MinimumCalls: 20,
			FailureRateThreshold: 0.5, SlowCallDuration: time.Second, SlowCallRateThreshold: 0.8,
			OpenTimeout: 2 * time.Second, HalfOpenCalls: 5,
			// Not found is an answer, not a failure of the database.
			IsFailure:     func(err error) bool { return err != nil && !errors.Is(err, order.ErrOrderNotFound) },
			OnStateChange: m.onStateChange,
		}),
		slots:   resilience.NewSemaphore(64, 100*time.Millisecond),
		metrics: m,
	}
	m.breaker = g.breaker
	m.bulkhead(g.slots)
	return g
}

var errOrderReadsShed = &spike.Error{Kind: spike.ErrUnavailable, Message: "order reads are shed while the database is slow; retry shortly"}

// guard runs a read within a 2 s budget (never past the caller's
// deadline), a slot of the bulkhead and the breaker.
func (g *guardedOrderReads) guard(ctx context.Context, read func(context.Context) error) error {
	if err := g.slots.Acquire(ctx); err != nil {
		g.metrics.bulkheadFull()
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

// breakerMetrics exports one dependency's guard: its breaker's state
// (spike_breaker_state, kept current by onStateChange, which also logs each
// change), the calls the breaker let through by outcome and those it
// refused (read from breaker, set once it exists), and, with bulkhead, the
// bulkhead's fill and refusals.
type breakerMetrics struct {
	dependency string
	reg        prometheus.Registerer
	state      prometheus.Gauge
	log        *slog.Logger
	breaker    *resilience.Breaker
	full       prometheus.Counter // calls refused by the bulkhead; nil until bulkhead
}

func newBreakerMetrics(reg prometheus.Registerer, log *slog.Logger, dependency string) *breakerMetrics {
	m := &breakerMetrics{dependency: dependency, reg: reg, log: log}
	labels := prometheus.Labels{"dependency": dependency}
	m.state = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "spike_breaker_state", Help: "Circuit breaker state (0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed).",
		ConstLabels: labels,
	})
	reg.MustRegister(m.state)
	counts := func(f func(resilience.BreakerCounts) uint64) func() float64 {
		return func() float64 {
			if m.breaker == nil {
				return 0
			}
			return float64(f(m.breaker.Counts()))
		}
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "spike_breaker_rejected_total", Help: "Calls refused by an open circuit breaker, without reaching the dependency.",
		ConstLabels: labels,
	}, counts(func(c resilience.BreakerCounts) uint64 { return c.Rejected })))
	for outcome, f := range map[string]func(resilience.BreakerCounts) uint64{
		"success": func(c resilience.BreakerCounts) uint64 { return c.Successes },
		"failure": func(c resilience.BreakerCounts) uint64 { return c.Failures },
		// Answers that are no failure of the dependency (not found, the
		// caller gave up): neither success nor failure for the breaker.
		"ignored": func(c resilience.BreakerCounts) uint64 { return c.Ignored },
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "spike_dependency_calls_total", Help: "Calls a dependency's circuit breaker let through, by outcome.",
			ConstLabels: prometheus.Labels{"dependency": dependency, "outcome": outcome},
		}, counts(f)))
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "spike_dependency_slow_calls_total", Help: "Calls to a dependency slower than its breaker's slow-call duration (also counted by outcome).",
		ConstLabels: labels,
	}, counts(func(c resilience.BreakerCounts) uint64 { return c.Slow })))
	return m
}

func (m *breakerMetrics) onStateChange(name string, from, to resilience.State) {
	m.state.Set(float64(to))
	m.log.Warn("circuit breaker", "dependency", name, "from", from.String(), "to", to.String())
}

// bulkhead exports s's fill (spike_bulkhead_in_use, spike_bulkhead_size)
// and the refusals counted by bulkheadFull.
func (m *breakerMetrics) bulkhead(s *resilience.Semaphore) {
	labels := prometheus.Labels{"dependency": m.dependency}
	m.full = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "spike_bulkhead_rejected_total", Help: "Calls refused because a dependency's bulkhead was full.",
		ConstLabels: labels,
	})
	m.reg.MustRegister(m.full,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "spike_bulkhead_in_use", Help: "Calls holding a slot of a dependency's bulkhead.", ConstLabels: labels,
		}, func() float64 { return float64(s.InUse()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "spike_bulkhead_size", Help: "Slots of a dependency's bulkhead.", ConstLabels: labels,
		}, func() float64 { return float64(s.Size()) }),
	)
}

// bulkheadFull counts a call refused by the bulkhead.
func (m *breakerMetrics) bulkheadFull() { m.full.Inc() }

// followBreakerSwitches applies the breaker.<dependency> switches to the
// breakers, now and on every change: open forces a breaker open, closed
// forces it closed, auto gives it back to its measurements (closed, with a
// fresh window).
func followBreakerSwitches(board *switches.Board, breakers map[string]*resilience.Breaker, log *slog.Logger) {
	apply := func(dependency, value string) {
		b := breakers[dependency]
		if b == nil {
			return // not used in this mode (e.g. redis_stock when embedded)
		}
		switch value {
		case switches.BreakerOpen:
			b.ForceOpen()
		case switches.BreakerClosed:
			b.ForceClosed()
		default:
			if s := b.State(); s != resilience.ForcedOpen && s != resilience.ForcedClosed {
				return // already following its measurements
			}
			b.Reset()
		}
		log.Warn("circuit breaker override", "dependency", dependency, "switch", value)
	}
	byName := map[string]string{}
	for dep := range breakers {
		byName[switches.BreakerSwitch(dep)] = dep
		if v := board.Value(switches.BreakerSwitch(dep)); v != switches.BreakerAuto && v != "" {
			apply(dep, v)
		}
	}
	board.OnChange(func(name, value string) {
		if dep, ok := byName[name]; ok {
			apply(dep, value)
		}
	})
}

// Redis stock calls: each reserve, confirm and release gets
// limits.stock_timeout, by default stockCallTimeout (never past the
// caller's deadline). A healthy call takes about a
// millisecond; stockSlowCall marks one as slow for the breaker.
const (
	stockCallTimeout = time.Second
	stockSlowCall    = 250 * time.Millisecond
	// stockInFlight bounds reserves waiting on Redis at once: far above
	// what a healthy Redis needs (thousands of placements per second at a
	// millisecond each are a few dozen in flight).
	stockInFlight = 4096
	// releaseRetryFor bounds the background retries of a failed release.
	releaseRetryFor = 30 * time.Second
)

var (
	errStockBreakerOpen = &spike.Error{Kind: spike.ErrUnavailable, Message: "the stock counters are failing fast while Redis is slow or down; nothing was reserved, retry shortly"}
	errStockBusy        = &spike.Error{Kind: spike.ErrUnavailable, Message: "too many placements are waiting on the stock counters; nothing was reserved, retry shortly"}
)

// guardedStock puts the Redis stock counters' hot-path calls behind a
// per-call timeout, a circuit breaker (failure rate and slow-call rate)
// and a bulkhead, so that a slow or failing Redis makes placements fail
// fast with 503 instead of piling up.
//
//   - Reserve: refused by the bulkhead or the open breaker, it never
//     reached Redis: nothing was reserved, and the caller gets a 503 kind.
//     A reserve cut by the timeout is in doubt; redisstock undoes it in the
//     background (it releases that order id, which was never enqueued nor
//     returned, so no sold unit is ever given back) and returns its
//     ErrUnavailable (503).
//   - Confirm and Release finish a reservation that was already taken:
//     they are never refused (refusing a release would hold its units
//     until a rebuild; refusing a confirm would delay replays) and do not
//     take bulkhead slots (there is at most one per reservation in flight),
//     but they run under the timeout, and their outcomes count while the
//     breaker is closed. A failed confirm is retried by redisstock; a failed
//     release is retried here in the background (releasing is idempotent:
//     it acts only while the key still maps to that very order id), and
//     still reported to the caller as before.
//
// Only Redis failures count against the breaker: domain answers (sold
// out, limit, fenced, in progress...) are successes, and a caller that
// gave up (context.Canceled) is ignored.
type guardedStock struct {
	inner   order.Reserver
	breaker *resilience.Breaker
	slots   *resilience.Semaphore
	timeout time.Duration
	log     *slog.Logger
	metrics *breakerMetrics
}

var _ order.Reserver = (*guardedStock)(nil)

func newGuardedStock(inner order.Reserver, timeout time.Duration, reg prometheus.Registerer, log *slog.Logger) *guardedStock {
	m := newBreakerMetrics(reg, log, "redis_stock")
	g := &guardedStock{
		inner: inner,
		breaker: resilience.NewBreaker(resilience.BreakerConfig{
			Name: "redis_stock", Window: resilience.TimeWindow, WindowSize: 10, MinimumCalls: 20,
			FailureRateThreshold: 0.5, SlowCallDuration: stockSlowCall, SlowCallRateThreshold: 0.8,
			OpenTimeout: 2 * time.Second, HalfOpenCalls: 5,
			IsFailure:     isRedisStockFailure,
			OnStateChange: m.onStateChange,
		}),
		slots:   resilience.NewSemaphore(stockInFlight, 0),
		timeout: timeout,
		log:     log,
	}
	m.breaker = g.breaker
	m.bulkhead(g.slots)
	g.metrics = m
	return g
}

// isRedisStockFailure reports whether err says Redis failed (no answer,
// timeout, error reply), as opposed to a domain answer or a caller that
// gave up.
func isRedisStockFailure(err error) bool {
	return err != nil && errors.Is(err, redisstock.ErrUnavailable) && !errors.Is(err, context.Canceled)
}

// Reserve implements order.Reserver.
func (g *guardedStock) Reserve(ctx context.Context, r inventory.Request) (inventory.Reservation, bool, error) {
	if !g.slots.TryAcquire() {
		g.metrics.bulkheadFull()
		return inventory.Reservation{}, false, errStockBusy
	}
	defer g.slots.Release()
	permit, err := g.breaker.Acquire()
	if err != nil {
		return inventory.Reservation{}, false, errStockBreakerOpen
	}
	ctx, cancel := resilience.Budget(ctx, g.timeout, 0)
	defer cancel()
	res, replay, err := g.inner.Reserve(ctx, r)
	permit.Record(err)
	return res, replay, err
}

// Confirm implements order.Reserver.
func (g *guardedStock) Confirm(ctx context.Context, res inventory.Reservation) error {
	return g.finish(ctx, func(ctx context.Context) error { return g.inner.Confirm(ctx, res) })
}

// Release implements order.Reserver. A release that fails is retried in
// the background, and the failure is returned as before.
func (g *guardedStock) Release(ctx context.Context, res inventory.Reservation) error {
	release := func(ctx context.Context) error { return g.inner.Release(ctx, res) }
	err := g.finish(ctx, release)
	if isRedisStockFailure(err) {
		go g.retryRelease(context.WithoutCancel(ctx), res, release)
	}
	return err
}

func (g *guardedStock) retryRelease(ctx context.Context, res inventory.Reservation, release func(context.Context) error) {
	ctx, cancel := context.WithTimeout(ctx, releaseRetryFor)
	defer cancel()
	backoff := 100 * time.Millisecond
	for {
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			g.log.Error("release reservation: giving up; its units stay held until the counters are rebuilt", "order_id", res.OrderID)
			return
		case <-t.C:
		}
		if err := g.finish(ctx, release); !isRedisStockFailure(err) {
			if err == nil {
				g.log.Info("release reservation: done on retry", "order_id", res.OrderID)
			}
			return
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// finish runs a confirm or release: never refused, bounded by the
// timeout, recorded while the breaker is closed (half-open trials are left
// to reserves).
func (g *guardedStock) finish(ctx context.Context, call func(context.Context) error) error {
	ctx, cancel := resilience.Budget(ctx, g.timeout, 0)
	defer cancel()
	if g.breaker.State() != resilience.Closed {
		return call(ctx)
	}
	permit, err := g.breaker.Acquire()
	if err != nil {
		return call(ctx)
	}
	err = call(ctx)
	permit.Record(err)
	return err
}

// Order store writes (the order workers' batches): each batch gets
// orderWriteTimeout, below the stream's AckWait (10 s) so that a batch gives
// up before its events are redelivered to another worker.
const (
	orderWriteTimeout  = 5 * time.Second
	orderWriteSlowCall = 2 * time.Second
)

var errOrderWritesOpen = &spike.Error{Kind: spike.ErrUnavailable, Message: "order writes are paused while the database is slow or down"}

// guardedOrderWrites puts the order store's inserts behind a timeout and a
// circuit breaker. The order workers call it once per batch, one batch at
// a time per instance, so no bulkhead is needed. When the database is
// slow or down the breaker opens and the workers' batches fail at once;
// the workers back off (natsbus: up to 5 s) and the events stay on the
// durable stream, unacknowledged, until a trial insert succeeds.
type guardedOrderWrites struct {
	stores
	breaker *resilience.Breaker
	timeout time.Duration
}

func newGuardedOrderWrites(st stores, reg prometheus.Registerer, log *slog.Logger) *guardedOrderWrites {
	m := newBreakerMetrics(reg, log, "order_writes")
	g := &guardedOrderWrites{
		stores: st,
		breaker: resilience.NewBreaker(resilience.BreakerConfig{
			// Batches are few (one at a time per instance), so the window
			// counts calls, and a few slow or failed batches suffice.
			Name: "order_writes", Window: resilience.CountWindow, WindowSize: 10, MinimumCalls: 3,
			FailureRateThreshold: 0.5, SlowCallDuration: orderWriteSlowCall, SlowCallRateThreshold: 0.5,
			OpenTimeout: 5 * time.Second, HalfOpenCalls: 1,
			OnStateChange: m.onStateChange,
		}),
		timeout: orderWriteTimeout,
	}
	m.breaker = g.breaker
	return g
}

// InsertOrders implements order.Store.
func (g *guardedOrderWrites) InsertOrders(ctx context.Context, orders []order.Order) error {
	permit, err := g.breaker.Acquire()
	if err != nil {
		return errOrderWritesOpen
	}
	ctx, cancel := resilience.Budget(ctx, g.timeout, 0)
	defer cancel()
	err = g.stores.InsertOrders(ctx, orders)
	permit.Record(err)
	return err
}
