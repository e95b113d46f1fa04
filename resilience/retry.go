package resilience

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// RetryConfig configures a [Retry]. The zero value is valid: 3 attempts,
// full-jitter backoff from 50ms up to 1s, retrying only errors marked with
// [Retryable].
type RetryConfig struct {
	// MaxAttempts is the total number of attempts, including the first;
	// default 3.
	MaxAttempts int
	// BaseDelay is the backoff cap before the first retry; it doubles for
	// each retry up to MaxDelay. Defaults 50ms and 1s. The actual delay is
	// uniformly random in [0, cap) ("full jitter"), so retries from many
	// clients spread out instead of arriving in waves.
	BaseDelay, MaxDelay time.Duration
	// MaxElapsed bounds the total time spent, attempts and delays
	// included; zero means only ctx's deadline bounds it. A retry whose
	// delay would pass either limit is not made.
	MaxElapsed time.Duration
	// RetryIf reports whether an error may be retried; default
	// [IsRetryable]. Only idempotent operations should say yes.
	RetryIf func(err error) bool
	// Budget, if set, must allow each retry; share one budget per
	// dependency so retries cannot multiply load during an outage.
	Budget *RetryBudget
	// OnRetry, if set, is called before each retry's delay with the
	// attempt that failed (1-based), its error and the delay.
	OnRetry func(attempt int, err error, delay time.Duration)
	// Jitter returns a random duration in [0, n); nil uses math/rand/v2.
	Jitter func(n time.Duration) time.Duration
}

// Retry is a [Policy] that retries failed calls with exponential backoff and
// full jitter. It is safe for concurrent use.
type Retry struct {
	cfg RetryConfig
}

// NewRetry returns a Retry policy; see [RetryConfig] for defaults.
func NewRetry(cfg RetryConfig) *Retry {
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.BaseDelay <= 0 {
		cfg.BaseDelay = 50 * time.Millisecond
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = time.Second
	}
	if cfg.RetryIf == nil {
		cfg.RetryIf = IsRetryable
	}
	if cfg.Jitter == nil {
		cfg.Jitter = func(n time.Duration) time.Duration { return rand.N(n) }
	}
	return &Retry{cfg: cfg}
}

// Do calls fn until it succeeds, returns a non-retryable error, attempts run
// out, the next delay would pass MaxElapsed or ctx's deadline, the budget
// refuses, or ctx is done. It returns the last error from fn.
func (r *Retry) Do(ctx context.Context, fn func(context.Context) error) error {
	start := time.Now()
	if r.cfg.Budget != nil {
		r.cfg.Budget.RecordCall()
	}
	backoff := r.cfg.BaseDelay
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil || attempt >= r.cfg.MaxAttempts || ctx.Err() != nil || !r.cfg.RetryIf(err) {
			return err
		}
		delay := r.cfg.Jitter(backoff)
		backoff = min(backoff*2, r.cfg.MaxDelay)
		if r.cfg.MaxElapsed > 0 && time.Since(start)+delay > r.cfg.MaxElapsed {
			return err
		}
		if left, ok := untilDeadline(ctx); ok && delay >= left {
			return err
		}
		if r.cfg.Budget != nil && !r.cfg.Budget.TryRetry() {
			return err
		}
		if r.cfg.OnRetry != nil {
			r.cfg.OnRetry(attempt, err, delay)
		}
		if sleep(ctx, delay) != nil {
			return err
		}
	}
}

// RetryBudgetConfig configures a [RetryBudget]. The zero value allows
// retries of 10% of calls over 10 seconds, plus 10 retries per second.
type RetryBudgetConfig struct {
	// Ratio is the most retries allowed per call, over the window; default
	// 0.1.
	Ratio float64
	// MinPerSecond is a floor of retries per second allowed regardless of
	// traffic, so a quiet client can still retry; default 10. Negative
	// means none.
	MinPerSecond float64
	// Window is the period calls and retries are counted over; default 10s.
	Window time.Duration
	// Now returns the current time; nil means the real monotonic clock.
	Now func() time.Time
}

// RetryBudget caps retries to a fraction of calls over a sliding window, as
// Finagle and gRPC do, so that when a dependency fails every retry cannot
// multiply the load on it. Share one budget between all callers of a
// dependency. It is safe for concurrent use.
type RetryBudget struct {
	mu       sync.Mutex
	clock    clock
	ratio    float64
	reserve  float64 // MinPerSecond * window seconds
	slot     int64   // bucket length, ns
	buckets  []budgetBucket
	calls    int
	retries  int
	refused  atomic.Uint64
	lastSlot int64
}

type budgetBucket struct {
	slot           int64
	calls, retries int
}

const budgetBuckets = 10

// NewRetryBudget returns a retry budget; see [RetryBudgetConfig] for
// defaults.
func NewRetryBudget(cfg RetryBudgetConfig) *RetryBudget {
	if cfg.Ratio <= 0 {
		cfg.Ratio = 0.1
	}
	if cfg.MinPerSecond == 0 {
		cfg.MinPerSecond = 10
	}
	if cfg.Window <= 0 {
		cfg.Window = 10 * time.Second
	}
	b := &RetryBudget{
		clock:    newClock(cfg.Now),
		ratio:    cfg.Ratio,
		reserve:  max(cfg.MinPerSecond, 0) * cfg.Window.Seconds(),
		slot:     max(int64(cfg.Window)/budgetBuckets, 1),
		buckets:  make([]budgetBucket, budgetBuckets),
		lastSlot: -1,
	}
	for i := range b.buckets {
		b.buckets[i].slot = -1
	}
	return b
}

// RecordCall counts one original (non-retry) call. [Retry.Do] calls it.
func (b *RetryBudget) RecordCall() {
	b.mu.Lock()
	b.current().calls++
	b.calls++
	b.mu.Unlock()
}

// TryRetry reports whether a retry is within budget, counting it if so.
// [Retry.Do] calls it before each retry.
func (b *RetryBudget) TryRetry() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	bk := b.current()
	if float64(b.retries+1) > b.ratio*float64(b.calls)+b.reserve {
		b.refused.Add(1)
		return false
	}
	bk.retries++
	b.retries++
	return true
}

// Refused returns how many retries the budget refused.
func (b *RetryBudget) Refused() uint64 { return b.refused.Load() }

// current expires old buckets and returns the one for now; b.mu must be held.
func (b *RetryBudget) current() *budgetBucket {
	slot := b.clock.nanos() / b.slot
	if slot != b.lastSlot {
		for i := range b.buckets {
			bk := &b.buckets[i]
			if bk.slot >= 0 && bk.slot <= slot-budgetBuckets {
				b.calls -= bk.calls
				b.retries -= bk.retries
				*bk = budgetBucket{slot: -1}
			}
		}
		b.lastSlot = slot
	}
	bk := &b.buckets[slot%budgetBuckets]
	bk.slot = slot
	return bk
}
