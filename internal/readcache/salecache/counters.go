package salecache

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
	"golang.org/x/sync/singleflight"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/depguard"
	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/resilience"
)

// ErrRemainingUnavailable is returned by [Counters.Remaining] when the
// counters cannot be read and the last known value is MaxLag old or more.
var ErrRemainingUnavailable = &spike.Error{Kind: spike.ErrUnavailable, Message: "the sale's remaining units cannot be read for now; try again later"}

// CountersOptions configures [Counters]. The zero value is valid: every
// zero field takes the default given.
type CountersOptions struct {
	// MaxEntries bounds the number of sales cached. If zero, 10_000 is used.
	MaxEntries int
	// Fresh is how long a value is served before it is loaded again,
	// counted from the start of the load that read it. If zero, 500ms is
	// used.
	Fresh time.Duration
	// MaxLag is the age (from the start of its load) past which a value is
	// never served, even when the counters fail: the API's bound on how far
	// remaining and sold lag the truth. If zero, 1s is used; it is raised
	// to Fresh if below.
	MaxLag time.Duration
	// MaxLoads caps concurrent counter reads. If zero, 32 is used.
	MaxLoads int
	// LoadWait is how long a load waits for one of MaxLoads before it is
	// refused. If zero, 50ms is used.
	LoadWait time.Duration
	// LoadTimeout bounds one counter read. If zero or above MaxLag, MaxLag
	// is used: a value read more slowly may already be older than that.
	LoadTimeout time.Duration
	// Breaker configures the circuit breaker in front of the counters;
	// timeouts are failures. Its zero value is resilience's defaults.
	Breaker resilience.BreakerConfig
	// Metrics exports the guard of the loads (breaker, bulkhead) under
	// the dependency sale_counters. If nil, it is not exported.
	Metrics *depguard.Metrics
	// Now returns the current time. If nil, the runtime's clock is used.
	Now func() time.Time
}

func (o *CountersOptions) setDefaults() {
	if o.MaxEntries <= 0 {
		o.MaxEntries = 10_000
	}
	def(&o.Fresh, 500*time.Millisecond)
	def(&o.MaxLag, time.Second)
	o.MaxLag = max(o.MaxLag, o.Fresh)
	if o.MaxLoads <= 0 {
		o.MaxLoads = 32
	}
	def(&o.LoadWait, 50*time.Millisecond)
	if o.LoadTimeout <= 0 || o.LoadTimeout > o.MaxLag {
		o.LoadTimeout = o.MaxLag
	}
}

// Counters is a sale.Counters whose Remaining is served from memory for
// [CountersOptions].Fresh, so a sale page polled by every buyer reads the
// stock counters (Redis) about twice a second per instance whatever the
// number of buyers, and never shows a value older than
// [CountersOptions].MaxLag. It is safe for concurrent use.
type Counters struct {
	next  sale.Counters
	opts  CountersOptions
	clock clock
	cache *otter.Cache[string, *count]
	group singleflight.Group
	guard *depguard.Guard
	// gen counts Opens: a load stores its value only if no Open happened
	// while it ran, so a value read before a sale's counters were opened
	// is not cached after.
	gen   atomic.Uint64
	stats counters
}

var _ sale.Counters = (*Counters)(nil)

type count struct {
	remaining int64
	at        int64 // clock nanoseconds when the load that read it started
}

// loaded is a load's answer.
type loaded struct {
	remaining int64
	ok        bool
}

// NewCounters returns a Counters that caches next's remaining units.
func NewCounters(next sale.Counters, opts CountersOptions) *Counters {
	opts.setDefaults()
	c := &Counters{next: next, opts: opts, clock: newClock(opts.Now)}
	c.cache = otter.Must(&otter.Options[string, *count]{
		MaximumSize:      opts.MaxEntries,
		ExpiryCalculator: otter.ExpiryWriting[string, *count](opts.MaxLag),
		Clock:            c.clock,
	})
	never := func(error) bool { return false }
	c.guard = newGuard(depguard.SaleCounters, opts.Breaker, opts.Now, opts.MaxLoads, opts.LoadWait, opts.LoadTimeout, never, opts.Metrics)
	return c
}

// Breaker returns the circuit breaker in front of the counters, for
// metrics.
func (c *Counters) Breaker() *resilience.Breaker { return c.guard.Breaker() }

// Remaining implements sale.Counters. It returns a value read less than
// [CountersOptions].Fresh ago, or loads one (once per sale at a time;
// concurrent readers wait for that load, each at most until its ctx ends).
// If the load fails it returns the last value while it is younger than
// [CountersOptions].MaxLag, else ErrRemainingUnavailable. ok=false from the
// counters (being rebuilt) is returned as is and drops the cached value.
func (c *Counters) Remaining(ctx context.Context, saleID string) (int64, bool, error) {
	last, cached := c.cache.GetIfPresent(saleID)
	if cached && c.clock.NowNano()-last.at < int64(c.opts.Fresh) {
		c.stats.hits.Add(1)
		return last.remaining, true, nil
	}
	c.stats.misses.Add(1)
	ch := c.group.DoChan(saleID, func() (any, error) { return c.load(context.WithoutCancel(ctx), saleID) })
	var res singleflight.Result
	select {
	case res = <-ch:
	case <-ctx.Done():
		return 0, false, waitErr(ctx)
	}
	if res.Err == nil {
		v := res.Val.(loaded)
		return v.remaining, v.ok, nil
	}
	if cached && c.clock.NowNano()-last.at < int64(c.opts.MaxLag) {
		c.stats.staleServed.Add(1)
		return last.remaining, true, nil
	}
	c.stats.unavailable.Add(1)
	return 0, false, fmt.Errorf("%w (%w)", ErrRemainingUnavailable, res.Err)
}

func (c *Counters) load(ctx context.Context, saleID string) (loaded, error) {
	gen, at := c.gen.Load(), c.clock.NowNano()
	var v loaded
	err := c.guard.Do(ctx, func(ctx context.Context) (err error) {
		c.stats.loads.Add(1)
		v.remaining, v.ok, err = c.next.Remaining(ctx, saleID)
		return err
	})
	switch {
	case err != nil:
		c.stats.loadErrors.Add(1)
		return v, err
	case !v.ok:
		// Being rebuilt (Redis lost them, say): the old value may be wrong.
		c.cache.Invalidate(saleID)
		return v, nil
	}
	if c.gen.Load() == gen {
		c.cache.Set(saleID, &count{remaining: v.remaining, at: at})
		if c.gen.Load() != gen { // an Open between the check and Set
			c.cache.Invalidate(saleID)
		}
	}
	return v, nil
}

// Open implements sale.Counters: it opens the sale's counters and drops
// any value cached for it.
func (c *Counters) Open(ctx context.Context, s sale.Sale) error {
	err := c.next.Open(ctx, s)
	c.gen.Add(1)
	c.group.Forget(s.ID)
	c.cache.Invalidate(s.ID)
	return err
}

// End implements sale.Counters: it ends the sale's window and drops any
// value cached for it.
func (c *Counters) End(ctx context.Context, saleID string, at time.Time) error {
	err := c.next.End(ctx, saleID, at)
	c.gen.Add(1)
	c.group.Forget(saleID)
	c.cache.Invalidate(saleID)
	return err
}

// Stats returns the current counters.
func (c *Counters) Stats() Stats {
	return c.stats.snapshot(c.cache.EstimatedSize(), c.guard)
}
