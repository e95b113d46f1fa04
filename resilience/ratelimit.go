package resilience

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Limiter is a rate limiter. All implementations in this package are safe for
// concurrent use and allocation-free in Allow and AllowN.
type Limiter interface {
	// Allow reports whether one event may happen now, consuming it if so.
	Allow() bool
	// AllowN reports whether n events may happen now, consuming them if so.
	AllowN(n int) bool
	// Delay returns how long until one more event would be allowed: zero
	// if now, negative if never. It consumes nothing; use it for
	// Retry-After headers.
	Delay() time.Duration
	// Wait blocks until one event may happen. It fails fast, returning an
	// error wrapping ErrRateLimited without waiting, if the wait would pass
	// ctx's deadline or can never succeed; it returns ctx.Err() if ctx is
	// done first.
	Wait(ctx context.Context) error
}

// RateLimit returns a [Policy] that calls fn if l allows one event now and
// returns ErrRateLimited otherwise. It never waits.
func RateLimit(l Limiter) Policy { return rateLimitPolicy{l} }

type rateLimitPolicy struct{ l Limiter }

func (p rateLimitPolicy) Do(ctx context.Context, fn func(context.Context) error) error {
	if !p.l.Allow() {
		return ErrRateLimited
	}
	return fn(ctx)
}

// TokenBucketConfig configures a [TokenBucket].
type TokenBucketConfig struct {
	// Rate is the refill rate in tokens per second. Zero or negative denies
	// everything; +Inf (or more than 1e9) allows everything.
	Rate float64
	// Burst is the bucket size: the most events allowed at once. Zero means 1.
	Burst int
	// Now returns the current time; nil means the real monotonic clock.
	Now func() time.Time
}

// TokenBucket is a token-bucket rate limiter: tokens refill at Rate per
// second up to Burst, and each event takes one. It is implemented as GCRA
// (the generic cell rate algorithm): the whole state is one atomic "theoretical
// arrival time", so Allow is a load and a compare-and-swap, without a lock.
// Wait reserves a slot, so waiters are served in the order they called.
type TokenBucket struct {
	setMu  sync.Mutex // serialises SetRate
	clock  clock
	tat    atomic.Int64 // theoretical arrival time of the next event, ns since epoch
	params atomic.Pointer[bucketParams]
}

type bucketParams struct {
	interval  int64 // ns per token
	burst     int64
	tolerance int64 // burst * interval: how far tat may run ahead of now
	unlimited bool
	deny      bool
}

func newBucketParams(rate float64, burst int) *bucketParams {
	if burst < 1 {
		burst = 1
	}
	p := &bucketParams{burst: int64(burst)}
	switch {
	case math.IsNaN(rate) || rate <= 0:
		p.deny = true
	case rate > 1e9:
		p.unlimited = true
	default:
		p.interval = int64(math.Round(1e9 / rate))
		p.tolerance = p.interval * p.burst
	}
	return p
}

// NewTokenBucket returns a full token bucket.
func NewTokenBucket(cfg TokenBucketConfig) *TokenBucket {
	b := &TokenBucket{clock: newClock(cfg.Now)}
	b.params.Store(newBucketParams(cfg.Rate, cfg.Burst))
	return b
}

// SetRate changes the refill rate (tokens per second) and burst, keeping the
// number of tokens available (capped at the new burst). It is safe to call
// while other goroutines use the bucket.
func (b *TokenBucket) SetRate(rate float64, burst int) {
	b.setMu.Lock()
	defer b.setMu.Unlock()
	old, p := b.params.Load(), newBucketParams(rate, burst)
	b.params.Store(p)
	if old.interval == 0 || p.interval == 0 {
		return
	}
	for {
		now := b.clock.nanos()
		tat := b.tat.Load()
		tokens := float64(old.tolerance-(max(tat, now)-now)) / float64(old.interval)
		newTat := now + p.tolerance - int64(min(tokens, float64(p.burst))*float64(p.interval))
		if b.tat.CompareAndSwap(tat, newTat) {
			return
		}
	}
}

// Allow reports whether one event may happen now.
func (b *TokenBucket) Allow() bool { return b.AllowN(1) }

// AllowN reports whether n events may happen now, taking n tokens if so.
// It returns false if n exceeds the burst.
func (b *TokenBucket) AllowN(n int) bool {
	p := b.params.Load()
	if p.unlimited || n <= 0 {
		return true
	}
	if p.deny || int64(n) > p.burst {
		return false
	}
	now := b.clock.nanos()
	cost := int64(n) * p.interval
	for {
		tat := b.tat.Load()
		newTat := max(tat, now) + cost
		if newTat-now > p.tolerance {
			return false
		}
		if b.tat.CompareAndSwap(tat, newTat) {
			return true
		}
	}
}

// Tokens returns the number of tokens available now, for metrics.
func (b *TokenBucket) Tokens() float64 {
	p := b.params.Load()
	if p.unlimited {
		return math.Inf(1)
	}
	if p.deny {
		return 0
	}
	now := b.clock.nanos()
	ahead := max(b.tat.Load(), now) - now
	return float64(p.tolerance-ahead) / float64(p.interval)
}

// Delay returns how long until one token is available; see [Limiter].
func (b *TokenBucket) Delay() time.Duration {
	p := b.params.Load()
	switch {
	case p.unlimited:
		return 0
	case p.deny:
		return -1
	}
	now := b.clock.nanos()
	return time.Duration(max(max(b.tat.Load(), now)+p.interval-p.tolerance-now, 0))
}

// Wait blocks until one token is available; see [Limiter].
func (b *TokenBucket) Wait(ctx context.Context) error { return b.WaitN(ctx, 1) }

// WaitN blocks until n tokens are available and takes them. It returns an
// error wrapping ErrRateLimited at once if n exceeds the burst or the wait
// would pass ctx's deadline, and ctx.Err() (returning the tokens) if ctx is
// done while waiting.
func (b *TokenBucket) WaitN(ctx context.Context, n int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p := b.params.Load()
	if p.unlimited || n <= 0 {
		return nil
	}
	if p.deny || int64(n) > p.burst {
		return errExceedsCapacity
	}
	cost := int64(n) * p.interval
	var delay int64
	for {
		now := b.clock.nanos()
		tat := b.tat.Load()
		newTat := max(tat, now) + cost
		delay = max(newTat-p.tolerance-now, 0)
		if delay > 0 {
			if left, ok := untilDeadline(ctx); ok && time.Duration(delay) > left {
				return errWaitPastDeadline
			}
		}
		if b.tat.CompareAndSwap(tat, newTat) {
			break
		}
	}
	if err := sleep(ctx, time.Duration(delay)); err != nil {
		// Give the reservation back; later reservations keep their slots, so
		// this may briefly allow a little more than the rate.
		b.tat.Add(-cost)
		return err
	}
	return nil
}

// LeakyBucketConfig configures a [LeakyBucket].
type LeakyBucketConfig struct {
	// Rate is the drain rate in events per second. Zero or negative denies
	// everything; +Inf (or more than 1e9) allows everything.
	Rate float64
	// Queue is the most events that may wait in Wait at once; zero means
	// Wait fails unless it could go at once.
	Queue int
	// Now returns the current time; nil means the real monotonic clock.
	Now func() time.Time
}

// LeakyBucket is a leaky bucket used as a pacer: events leave at exactly Rate
// per second, evenly spaced, with no burst. Allow succeeds only when no event
// is scheduled ahead of now; Wait queues the caller for the next free slot
// (in call order) if at most Queue events are ahead of it.
type LeakyBucket struct {
	setMu  sync.Mutex // serialises SetRate
	clock  clock
	next   atomic.Int64 // earliest time the next event may leave, ns since epoch
	params atomic.Pointer[leakyParams]
}

type leakyParams struct {
	interval  int64
	maxAhead  int64 // queue * interval
	unlimited bool
	deny      bool
}

func newLeakyParams(rate float64, queue int) *leakyParams {
	p := &leakyParams{}
	switch {
	case math.IsNaN(rate) || rate <= 0:
		p.deny = true
	case rate > 1e9:
		p.unlimited = true
	default:
		p.interval = int64(math.Round(1e9 / rate))
		p.maxAhead = p.interval * int64(max(queue, 0))
	}
	return p
}

// NewLeakyBucket returns an empty leaky bucket.
func NewLeakyBucket(cfg LeakyBucketConfig) *LeakyBucket {
	b := &LeakyBucket{clock: newClock(cfg.Now)}
	b.params.Store(newLeakyParams(cfg.Rate, cfg.Queue))
	return b
}

// SetRate changes the drain rate (events per second) and queue size; events
// already scheduled are rescheduled at the new rate. It is safe for
// concurrent use.
func (b *LeakyBucket) SetRate(rate float64, queue int) {
	b.setMu.Lock()
	defer b.setMu.Unlock()
	old, p := b.params.Load(), newLeakyParams(rate, queue)
	b.params.Store(p)
	if old.interval == 0 || p.interval == 0 {
		return
	}
	for {
		now := b.clock.nanos()
		next := b.next.Load()
		slots := float64(max(next-now, 0)) / float64(old.interval)
		if b.next.CompareAndSwap(next, now+int64(slots*float64(p.interval))) {
			return
		}
	}
}

// Allow reports whether one event may leave now.
func (b *LeakyBucket) Allow() bool { return b.AllowN(1) }

// AllowN reports whether n events may leave now; they occupy n slots.
func (b *LeakyBucket) AllowN(n int) bool {
	p := b.params.Load()
	if p.unlimited || n <= 0 {
		return true
	}
	if p.deny {
		return false
	}
	now := b.clock.nanos()
	for {
		next := b.next.Load()
		if next > now {
			return false
		}
		if b.next.CompareAndSwap(next, now+int64(n)*p.interval) {
			return true
		}
	}
}

// Delay returns how long until the next free slot; see [Limiter].
func (b *LeakyBucket) Delay() time.Duration {
	p := b.params.Load()
	switch {
	case p.unlimited:
		return 0
	case p.deny:
		return -1
	}
	now := b.clock.nanos()
	return time.Duration(max(b.next.Load()-now, 0))
}

// Wait blocks until the caller's slot comes; see [Limiter]. It returns an
// error wrapping ErrRateLimited at once if the queue is full or the slot
// would pass ctx's deadline.
func (b *LeakyBucket) Wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p := b.params.Load()
	if p.unlimited {
		return nil
	}
	if p.deny {
		return errExceedsCapacity
	}
	var delay int64
	for {
		now := b.clock.nanos()
		next := b.next.Load()
		start := max(next, now)
		delay = start - now
		if delay > p.maxAhead {
			return errQueueFull
		}
		if delay > 0 {
			if left, ok := untilDeadline(ctx); ok && time.Duration(delay) > left {
				return errWaitPastDeadline
			}
		}
		if b.next.CompareAndSwap(next, start+p.interval) {
			break
		}
	}
	if err := sleep(ctx, time.Duration(delay)); err != nil {
		b.next.Add(-p.interval)
		return err
	}
	return nil
}
