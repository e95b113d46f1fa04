// Package depguard guards Spike's calls to its dependencies (the stock
// counters on Redis, the order stream, the database, the caches' loads,
// the notification and payment providers): each dependency gets one
// [Guard], a bulkhead, a circuit breaker, an optional adaptive concurrency
// limit and a time budget, built from the table of per-dependency
// [Settings] (see [For]) and keyed by a [Dependency]. One [Metrics]
// exports every guard's state under the same metric names, and
// [FollowSwitches] lets operators force breakers open or closed with the
// breaker.<dependency> switches.
//
// The wrappers of this package put the order path's dependencies behind
// their guards: [Stream] (order.Stream), [Stock] (order.Reserver) and
// [OrderStore] (order.Store).
package depguard

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/spikehq/spike/resilience"
)

// Dependency names a guarded dependency. Its value is the dependency
// label of the guard's metrics (spike_breaker_state{dependency=...}) and
// the suffix of its breaker switch (breaker.<dependency>): dashboards and
// switches depend on these values, do not change them.
type Dependency string

// The guarded dependencies.
const (
	// OrderStream is the durable order stream (NATS JetStream) placements
	// are enqueued on.
	OrderStream Dependency = "order_stream"
	// RedisStock is the stock counters on Redis (reserve, confirm, release).
	RedisStock Dependency = "redis_stock"
	// OrderReads is the order store's reads (a buyer's orders).
	OrderReads Dependency = "order_reads"
	// OrderWrites is the order store's inserts (the order workers' batches).
	OrderWrites Dependency = "order_writes"
	// SaleDB is the sale cache's loads of sale records from the database.
	SaleDB Dependency = "sale_db"
	// SaleCounters is the sale cache's loads of remaining units from the
	// stock counters.
	SaleCounters Dependency = "sale_counters"
	// CatalogDB is the product cache's loads from the database.
	CatalogDB Dependency = "catalog_db"
	// CatalogL2 is the product cache's shared L2 cache (Redis).
	CatalogL2 Dependency = "catalog_l2"
	// Notifications is the buyer notification provider (webhook).
	Notifications Dependency = "notifications"
	// Payments is the payment provider.
	Payments Dependency = "payments"
)

// Dependencies lists every Dependency of the table, in a fixed order.
var Dependencies = []Dependency{OrderStream, RedisStock, OrderWrites, OrderReads, SaleDB, SaleCounters, CatalogDB, CatalogL2, Notifications, Payments}

// Settings are a guard's parameters. The zero value is a guard with
// resilience's default breaker and nothing else: no bulkhead, no limit, no
// time budget.
type Settings struct {
	// Breaker configures the circuit breaker. Name is set to the
	// dependency; OnStateChange is set by [Metrics] when given. Its zero
	// value is resilience's defaults.
	Breaker resilience.BreakerConfig
	// Bulkhead is the number of calls let through at once; zero means no
	// bulkhead.
	Bulkhead int
	// BulkheadWait is how long a call waits for a slot of a full bulkhead
	// before it is refused; zero refuses it at once.
	BulkheadWait time.Duration
	// Timeout is each call's time budget, never past the caller's deadline
	// less Margin (resilience.Budget); zero means only the caller's
	// deadline.
	Timeout time.Duration
	// Margin is kept back from the caller's deadline for the caller to
	// handle the outcome.
	Margin time.Duration
	// Adaptive, if set, puts the calls under an adaptive concurrency limit.
	Adaptive *resilience.AdaptiveConfig
}

// settings is the table of every dependency's settings.
var settings = map[Dependency]Settings{
	OrderStream: {
		Breaker: resilience.BreakerConfig{
			Window: resilience.TimeWindow, WindowSize: 10, MinimumCalls: 20,
			FailureRateThreshold: 0.5, SlowCallDuration: time.Second, SlowCallRateThreshold: 0.8,
			OpenTimeout: 2 * time.Second, HalfOpenCalls: 5,
		},
		// A bound on goroutines parked on acks, whatever the limit:
		// StreamLimits sets it to the limit's maximum.
		Bulkhead: StreamLimitMax,
		Adaptive: &resilience.AdaptiveConfig{
			InitialLimit: StreamLimitInitial, MinLimit: StreamLimitMin, MaxLimit: StreamLimitMax,
			Baseline: resilience.Probed, Tolerance: StreamLimitTolerance, Slack: StreamLimitSlack,
		},
	},
	RedisStock: {
		Breaker: resilience.BreakerConfig{
			Window: resilience.TimeWindow, WindowSize: 10, MinimumCalls: 20,
			FailureRateThreshold: 0.5, SlowCallDuration: StockSlowCall, SlowCallRateThreshold: 0.8,
			OpenTimeout: 2 * time.Second, HalfOpenCalls: 5,
		},
		// Far above what a healthy Redis needs (thousands of placements
		// per second at a millisecond each are a few dozen in flight).
		Bulkhead: 4096,
		Timeout:  StockCallTimeout,
	},
	OrderReads: {
		Breaker: resilience.BreakerConfig{
			Window: resilience.TimeWindow, WindowSize: 10, MinimumCalls: 20,
			FailureRateThreshold: 0.5, SlowCallDuration: time.Second, SlowCallRateThreshold: 0.8,
			OpenTimeout: 2 * time.Second, HalfOpenCalls: 5,
		},
		Bulkhead: 64, BulkheadWait: 100 * time.Millisecond,
		Timeout: 2 * time.Second, Margin: 10 * time.Millisecond,
	},
	OrderWrites: {
		// Batches are few (one at a time per instance), so the window
		// counts calls, and a few slow or failed batches suffice; no
		// bulkhead is needed. The timeout is below the stream's AckWait
		// (10 s), so that a batch gives up before its events are
		// redelivered to another worker.
		Breaker: resilience.BreakerConfig{
			Window: resilience.CountWindow, WindowSize: 10, MinimumCalls: 3,
			FailureRateThreshold: 0.5, SlowCallDuration: 2 * time.Second, SlowCallRateThreshold: 0.5,
			OpenTimeout: 5 * time.Second, HalfOpenCalls: 1,
		},
		Timeout: 5 * time.Second,
	},
	SaleDB: {
		// Loads are rare (a record is read once per 10 min per instance),
		// so the window counts loads, not seconds.
		Breaker: resilience.BreakerConfig{
			Window: resilience.CountWindow, WindowSize: 20, MinimumCalls: 10,
			FailureRateThreshold: 0.5, SlowCallDuration: time.Second, SlowCallRateThreshold: 0.8,
			OpenTimeout: 2 * time.Second, HalfOpenCalls: 2,
		},
		Bulkhead: 32, BulkheadWait: 100 * time.Millisecond, Timeout: 2 * time.Second,
	},
	SaleCounters: {
		// At most one load per sale per 500 ms per instance: a window of
		// the last 10 loads, and slow as for the stock counters.
		Breaker: resilience.BreakerConfig{
			Window: resilience.CountWindow, WindowSize: 10, MinimumCalls: 5,
			FailureRateThreshold: 0.5, SlowCallDuration: StockSlowCall, SlowCallRateThreshold: 0.8,
			OpenTimeout: 2 * time.Second, HalfOpenCalls: 1,
		},
		Bulkhead: 32, BulkheadWait: 50 * time.Millisecond, Timeout: time.Second,
	},
	CatalogDB: {
		// resilience's default breaker; the load's budget is the cache's
		// (it covers L2 and the database).
		Bulkhead: 32, BulkheadWait: 100 * time.Millisecond,
	},
	CatalogL2: {
		Timeout: 100 * time.Millisecond,
	},
	Notifications: {
		// The notifier owns its breaker (notify.Config.Breaker) and pool;
		// see BreakerConfig.
		Breaker: resilience.BreakerConfig{
			WindowSize: 50, MinimumCalls: 20, FailureRateThreshold: 0.5,
			OpenTimeout: 10 * time.Second, HalfOpenCalls: 3,
		},
	},
	Payments: {
		// A provider's API answers in hundreds of milliseconds; a few
		// seconds is slow. Payments are fewer than placements (one per
		// order), so a time window of 10 s opens after 10 calls.
		Breaker: resilience.BreakerConfig{
			Window: resilience.TimeWindow, WindowSize: 10, MinimumCalls: 10,
			FailureRateThreshold: 0.5, SlowCallDuration: 3 * time.Second, SlowCallRateThreshold: 0.8,
			OpenTimeout: 5 * time.Second, HalfOpenCalls: 2,
		},
		Bulkhead: 64, BulkheadWait: 50 * time.Millisecond,
		Timeout: 10 * time.Second, Margin: 50 * time.Millisecond,
	},
}

// Defaults of the settings that the configuration can change
// (limits.stream_* and limits.stock_timeout).
const (
	// The stream limit's floor is also the concurrency of the probes that
	// measure unqueued latency, so it must stay below what a slowed stream
	// serves at once. Tolerance and slack let the mean publish latency
	// reach max(3 × unqueued, unqueued + 20 ms) before the limit shrinks:
	// a healthy stream's sub-millisecond publishes jitter by far more than
	// 3× on a busy CPU without any queue at the stream, and on the shared
	// 2-core machine tolerance 2 and 5 ms of slack starved a slowed stream
	// (goodput 0.6× its capacity in scripts/overload.sh dep, against 0.98×
	// with these).
	StreamLimitInitial   = 256
	StreamLimitMin       = 4
	StreamLimitMax       = 8192
	StreamLimitSlack     = 20 * time.Millisecond
	StreamLimitTolerance = 3
	// StockCallTimeout is each Redis stock call's budget; a healthy call
	// takes about a millisecond, and StockSlowCall marks one as slow for
	// the breaker.
	StockCallTimeout = time.Second
	StockSlowCall    = 250 * time.Millisecond
)

// For returns dep's settings from the table; a dependency not in it gets
// the zero Settings.
func For(dep Dependency) Settings {
	s := settings[dep]
	if s.Adaptive != nil {
		a := *s.Adaptive
		s.Adaptive = &a
	}
	return s
}

// StreamLimits returns the order stream's settings with the adaptive
// limit's bounds (the configuration's limits.stream_*): the initial limit
// is clamped into [min, max] and the bulkhead is max.
func StreamLimits(minLimit, maxLimit int, tolerance float64, slack time.Duration) Settings {
	s := For(OrderStream)
	s.Adaptive.InitialLimit = min(max(StreamLimitInitial, minLimit), maxLimit)
	s.Adaptive.MinLimit, s.Adaptive.MaxLimit = minLimit, maxLimit
	s.Adaptive.Tolerance, s.Adaptive.Slack = tolerance, slack
	s.Bulkhead = maxLimit
	return s
}

// BreakerConfig returns dep's breaker configuration from the table, named
// after dep and, with m, logging its state changes: for the dependencies
// whose client owns its breaker (the notifier). Export the breaker with
// [Metrics.Watch] once it exists.
func BreakerConfig(dep Dependency, m *Metrics) resilience.BreakerConfig {
	c := For(dep).Breaker
	c.Name = string(dep)
	if m != nil {
		c.OnStateChange = m.onStateChange
	}
	return c
}

// Config configures [New]. The zero value guards with the table's
// settings, every error a failure but context.Canceled, nothing exported.
type Config struct {
	// Settings replaces the table's settings of the dependency when set.
	Settings *Settings
	// IsFailure classifies the errors of calls for the breaker (see
	// resilience.BreakerConfig.IsFailure); nil keeps Settings.Breaker's.
	IsFailure func(error) bool
	// IsAnswer reports whether an error is an answer of the dependency (a
	// record not found): the call is then recorded as a success, and the
	// error returned. Nil means none is.
	IsAnswer func(error) bool
	// Saturated reports whether the CPU is saturated (see
	// resilience.CPUSaturation): calls' latencies then say nothing of the
	// dependency and the adaptive limit ignores them, but for calls
	// admitted with half the limit or more in flight (resilience.Ticket.
	// Crowded), which were queuing for the dependency. Nil means never.
	Saturated func() bool
	// Queued reports whether this process's own goroutines queue for the
	// CPU (resilience.CPUSaturation.Queued): the overload is then the
	// process's own, HTTP admission sheds it before any work is done, and
	// even crowded calls are ignored (shrinking the limit would refuse
	// placements after their reservation). Nil means never.
	Queued func() bool
	// Metrics exports the guard and logs its breaker's changes; nil
	// exports nothing.
	Metrics *Metrics
	// Now is the clock of the breaker when Settings.Breaker has none; nil
	// is the real clock.
	Now func() time.Time
}

// Guard guards the calls to one dependency: in this order, a bulkhead, a
// circuit breaker, an adaptive concurrency limit and a time budget, each
// present as its [Settings] say. It is safe for concurrent use.
type Guard struct {
	dep      Dependency
	breaker  *resilience.Breaker
	slots    *resilience.Semaphore // nil: no bulkhead
	limit    *resilience.Adaptive  // nil: no limit
	timeout  time.Duration
	margin   time.Duration
	isAnswer func(error) bool
	cpuBusy  func() bool
	cpuQueue func() bool

	full    atomic.Uint64 // calls refused by the bulkhead
	ignored atomic.Uint64 // calls whose latency the limit ignored: CPU saturated
}

// New returns dep's guard, exported by cfg.Metrics if set.
func New(dep Dependency, cfg Config) *Guard {
	s := For(dep)
	if cfg.Settings != nil {
		s = *cfg.Settings
	}
	bc := s.Breaker
	bc.Name = string(dep)
	if cfg.IsFailure != nil {
		bc.IsFailure = cfg.IsFailure
	}
	if bc.Now == nil {
		bc.Now = cfg.Now
	}
	if cfg.Metrics != nil && bc.OnStateChange == nil {
		bc.OnStateChange = cfg.Metrics.onStateChange
	}
	g := &Guard{
		dep:      dep,
		breaker:  resilience.NewBreaker(bc),
		timeout:  s.Timeout,
		margin:   s.Margin,
		isAnswer: cfg.IsAnswer,
		cpuBusy:  cfg.Saturated,
		cpuQueue: cfg.Queued,
	}
	if s.Bulkhead > 0 {
		g.slots = resilience.NewSemaphore(s.Bulkhead, s.BulkheadWait)
	}
	if s.Adaptive != nil {
		g.limit = resilience.NewAdaptive(*s.Adaptive)
	}
	if cfg.Metrics != nil {
		cfg.Metrics.export(g)
	}
	return g
}

// CPUIgnored returns how many calls' latencies the adaptive limit ignored
// because the CPU was saturated (Config.Saturated) and they did not crowd
// the limit.
func (g *Guard) CPUIgnored() uint64 { return g.ignored.Load() }

// Dependency returns the guarded dependency.
func (g *Guard) Dependency() Dependency { return g.dep }

// Breaker returns the guard's circuit breaker (for the switches).
func (g *Guard) Breaker() *resilience.Breaker { return g.breaker }

// InFlight returns the calls holding a slot of the bulkhead (zero without
// one).
func (g *Guard) InFlight() int {
	if g.slots == nil {
		return 0
	}
	return g.slots.InUse()
}

// Do calls fn behind the guard: it takes a slot of the bulkhead (waiting
// up to Settings.BulkheadWait), a permit of the breaker and a place under
// the adaptive limit, and gives fn a context within the time budget.
//
// A call refused returns resilience's error unchanged, without calling
// fn: ErrBulkheadFull (or the caller's ctx.Err() if it ended while
// waiting for a slot), ErrBreakerOpen or ErrShed. A refusal by the
// bulkhead or the limit is not recorded by the breaker: it says nothing of
// the dependency. Otherwise Do returns fn's error; when fn failed because
// the time budget ran out (and not the caller's own context), the error
// also matches resilience.ErrTimeout.
//
// With tracing on (see [Trace]) the call is a span named after the
// dependency, with its outcome.
func (g *Guard) Do(ctx context.Context, fn func(context.Context) error) error {
	return g.do(ctx, string(g.dep), fn)
}

// do is Do in a span named name (when tracing is on).
func (g *Guard) do(ctx context.Context, name string, fn func(context.Context) error) (err error) {
	ctx, span := startSpan(ctx, name, g.dep)
	if span != nil {
		defer func() { endSpan(span, err, err != nil && g.isAnswer != nil && g.isAnswer(err)) }()
	}
	return g.guard(ctx, fn)
}

// guard is Do without its span.
func (g *Guard) guard(ctx context.Context, fn func(context.Context) error) error {
	if g.slots != nil {
		if err := g.slots.Acquire(ctx); err != nil {
			g.full.Add(1)
			return err
		}
		defer g.slots.Release()
	}
	permit, err := g.breaker.Acquire()
	if err != nil {
		return err
	}
	var ticket resilience.Ticket
	if g.limit != nil {
		var ok bool
		if ticket, ok = g.limit.Acquire(resilience.Critical); !ok {
			permit.Record(nil) // not the dependency's fault
			return resilience.ErrShed
		}
	}
	hop, cancel := ctx, context.CancelFunc(func() {})
	if g.timeout > 0 || g.margin > 0 {
		hop, cancel = resilience.Budget(ctx, g.timeout, g.margin)
	}
	err = fn(hop)
	if err != nil && ctx.Err() == nil && hop.Err() != nil && errors.Is(context.Cause(hop), resilience.ErrTimeout) && !errors.Is(err, resilience.ErrTimeout) {
		err = fmt.Errorf("%w: %w", resilience.ErrTimeout, err)
	}
	if g.limit != nil {
		switch {
		case g.cpuBusy != nil && g.cpuBusy() && (!ticket.Crowded() || g.cpuQueue != nil && g.cpuQueue()):
			// Latency now rises with the CPU's queue, not the
			// dependency's: shrinking the limit would refuse calls for
			// nothing. Unless the calls crowd the limit while another
			// process takes the CPU (ours is not overloaded): then they
			// are queuing for the dependency too (a slow stream on a
			// busy host), and the limit must learn it.
			g.ignored.Add(1)
			ticket.Ignore()
		case err == nil:
			ticket.Success()
		case hop.Err() != nil:
			ticket.Dropped() // timed out waiting for the dependency: back off
		default:
			ticket.Ignore() // the dependency refused or is down: the breaker's business
		}
	}
	cancel()
	if err != nil && g.isAnswer != nil && g.isAnswer(err) {
		permit.Record(nil)
		return err
	}
	permit.Record(err)
	return err
}

// finish runs call within the time budget, never refused and without a
// bulkhead slot, recorded by the breaker only while it is closed (trials
// of a half-open breaker are left to Do): for calls that complete work
// already begun, such as releasing a reservation.
func (g *Guard) finish(ctx context.Context, name string, call func(context.Context) error) (err error) {
	ctx, span := startSpan(ctx, name, g.dep)
	if span != nil {
		defer func() { endSpan(span, err, false) }()
	}
	if g.timeout > 0 || g.margin > 0 {
		var cancel context.CancelFunc
		ctx, cancel = resilience.Budget(ctx, g.timeout, g.margin)
		defer cancel()
	}
	if g.breaker.State() != resilience.Closed {
		return call(ctx)
	}
	permit, aerr := g.breaker.Acquire()
	if aerr != nil {
		return call(ctx)
	}
	err = call(ctx)
	permit.Record(err)
	return err
}
