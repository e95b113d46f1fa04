package salecache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/maypok86/otter/v2"
	"golang.org/x/sync/singleflight"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/depguard"
	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/resilience"
)

// ErrRecordsUnavailable is returned by [Records.Sale] on a miss when the
// database is not called (breaker open, bulkhead full) or does not answer
// within the load timeout, and no earlier copy is at hand.
var ErrRecordsUnavailable = &spike.Error{Kind: spike.ErrUnavailable, Message: "sales cannot be read from the database for now; try again later"}

// ErrCacheOnly is returned by [Records.Sale] on a miss while reads are
// switched to caches only (RecordsOptions.CacheOnly).
var ErrCacheOnly = &spike.Error{Kind: spike.ErrUnavailable, Message: "sales are read from cache only for now; try again later"}

// RecordsOptions configures [Records]. The zero value is valid: every zero
// field takes the default given.
type RecordsOptions struct {
	// MaxEntries bounds the cache. If zero, 10_000 is used.
	MaxEntries int
	// TTL is how long a record is served before it is loaded again. Records
	// never change, so it only bounds how long a record nobody reads is
	// kept besides the size bound. If zero, 10m is used.
	TTL time.Duration
	// StaleFor is how long after its TTL a record is kept to be served
	// when the reload fails. If zero, 1h is used.
	StaleFor time.Duration
	// MaxLoads caps concurrent database reads. If zero, 32 is used.
	MaxLoads int
	// LoadWait is how long a load waits for one of MaxLoads before it is
	// refused. If zero, 100ms is used.
	LoadWait time.Duration
	// LoadTimeout bounds one database read. If zero, 2s is used.
	LoadTimeout time.Duration
	// Breaker configures the circuit breaker in front of the database.
	// Not-found answers are successes; timeouts are failures. Its zero
	// value is resilience's defaults.
	Breaker resilience.BreakerConfig
	// CacheOnly reports whether reads must not reach the database (the
	// reads.cache_only switch): a cached record, expired or not, is served
	// as is, and a miss gets ErrCacheOnly. Nil means never.
	CacheOnly func() bool
	// Metrics exports the guard of the loads (breaker, bulkhead) under
	// the dependency sale_db. If nil, it is not exported.
	Metrics *depguard.Metrics
	// Now returns the current time. If nil, the runtime's clock is used.
	Now func() time.Time
}

func (o *RecordsOptions) setDefaults() {
	if o.MaxEntries <= 0 {
		o.MaxEntries = 10_000
	}
	def(&o.TTL, 10*time.Minute)
	def(&o.StaleFor, time.Hour)
	if o.MaxLoads <= 0 {
		o.MaxLoads = 32
	}
	def(&o.LoadWait, 100*time.Millisecond)
	def(&o.LoadTimeout, 2*time.Second)
}

func def(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

// Records is a sale.Store that serves sale records from memory. Sales never
// change once created (the API has no route to change one), so a cached
// record is never wrong; a sale created on another instance is visible at
// once because not-found is not cached. It is safe for concurrent use.
type Records struct {
	next  sale.Store
	opts  RecordsOptions
	clock clock
	cache *otter.Cache[string, *record]
	group singleflight.Group
	guard *depguard.Guard
	stats counters
}

var _ sale.Store = (*Records)(nil)

type record struct {
	s     sale.Sale
	fresh int64 // clock nanoseconds until which it is served without a load
}

// NewRecords returns a Records that caches next's sale records.
func NewRecords(next sale.Store, opts RecordsOptions) *Records {
	opts.setDefaults()
	r := &Records{next: next, opts: opts, clock: newClock(opts.Now)}
	r.cache = otter.Must(&otter.Options[string, *record]{
		MaximumSize:      opts.MaxEntries,
		ExpiryCalculator: otter.ExpiryWriting[string, *record](opts.TTL + opts.StaleFor),
		Clock:            r.clock,
	})
	notFound := func(err error) bool { return errors.Is(err, spike.ErrNotFound) }
	r.guard = newGuard(depguard.SaleDB, opts.Breaker, opts.Now, opts.MaxLoads, opts.LoadWait, opts.LoadTimeout, notFound, opts.Metrics)
	return r
}

// Breaker returns the circuit breaker in front of the database, for
// metrics.
func (r *Records) Breaker() *resilience.Breaker { return r.guard.Breaker() }

// Sale implements sale.Store. It returns the cached record, or loads it
// (once per id at a time; concurrent readers wait for that load, each at
// most until its ctx ends). It returns sale.ErrSaleNotFound, never cached.
// When the load fails it returns an expired copy if one is kept; without
// one, ErrRecordsUnavailable (wrapping the load's error).
func (r *Records) Sale(ctx context.Context, id string) (sale.Sale, error) {
	e, ok := r.cache.GetIfPresent(id)
	if ok && r.clock.NowNano() < e.fresh {
		r.stats.hits.Add(1)
		return e.s, nil
	}
	r.stats.misses.Add(1)
	if r.opts.CacheOnly != nil && r.opts.CacheOnly() {
		if ok {
			r.stats.staleServed.Add(1) // a record never changes: the old copy is right
			return e.s, nil
		}
		r.stats.unavailable.Add(1)
		return sale.Sale{}, ErrCacheOnly
	}
	// The load is shared by every reader of id: the most impatient one
	// must not cut it for the others, so it runs without their
	// cancellation, bounded by LoadTimeout.
	ch := r.group.DoChan(id, func() (any, error) { return r.load(context.WithoutCancel(ctx), id) })
	var res singleflight.Result
	select {
	case res = <-ch:
	case <-ctx.Done():
		return sale.Sale{}, waitErr(ctx)
	}
	switch {
	case res.Err == nil:
		return res.Val.(sale.Sale), nil
	case errors.Is(res.Err, spike.ErrNotFound):
		return sale.Sale{}, res.Err
	case ok:
		r.stats.staleServed.Add(1) // a record never changes: the old copy is right
		return e.s, nil
	}
	// Refused, timed out or failed: the database is down or slow, which
	// is a 503 for the reader, not a bug (a 500).
	r.stats.unavailable.Add(1)
	return sale.Sale{}, fmt.Errorf("%w (%w)", ErrRecordsUnavailable, res.Err)
}

func (r *Records) load(ctx context.Context, id string) (sale.Sale, error) {
	var s sale.Sale
	err := r.guard.Do(ctx, func(ctx context.Context) (err error) {
		r.stats.loads.Add(1)
		s, err = r.next.Sale(ctx, id)
		return err
	})
	switch {
	case errors.Is(err, spike.ErrNotFound):
		return s, err
	case err != nil:
		r.stats.loadErrors.Add(1)
		return s, err
	}
	r.put(s)
	return s, nil
}

func (r *Records) put(s sale.Sale) {
	r.cache.Set(s.ID, &record{s: s, fresh: r.clock.NowNano() + int64(r.opts.TTL)})
}

// CreateSale implements sale.Store: it creates s in the database and caches
// it, so the first page views after a sale is scheduled cost no read.
func (r *Records) CreateSale(ctx context.Context, s sale.Sale) error {
	if err := r.next.CreateSale(ctx, s); err != nil {
		return err
	}
	r.put(s)
	return nil
}

// Sales implements sale.Store; it is not cached (admin listings and
// audits want every sale, read rarely).
func (r *Records) Sales(ctx context.Context) ([]sale.Sale, error) { return r.next.Sales(ctx) }

// Stats returns the current counters.
func (r *Records) Stats() Stats {
	return r.stats.snapshot(r.cache.EstimatedSize(), r.guard)
}

func (c *counters) snapshot(entries int, g *depguard.Guard) Stats {
	return Stats{
		Hits:          c.hits.Load(),
		Misses:        c.misses.Load(),
		Loads:         c.loads.Load(),
		LoadErrors:    c.loadErrors.Load(),
		StaleServed:   c.staleServed.Load(),
		Unavailable:   c.unavailable.Load(),
		Entries:       entries,
		LoadsInFlight: g.InFlight(),
		Breaker:       g.Breaker().State(),
	}
}

// EndSale implements sale.Ender: it ends the sale in the store and caches
// the result, so this instance serves the new end at once; other instances
// drop their copy when told (Invalidate).
func (r *Records) EndSale(ctx context.Context, id string, at time.Time) (sale.Sale, error) {
	e, ok := r.next.(sale.Ender)
	if !ok {
		return sale.Sale{}, spike.Errorf(spike.ErrUnavailable, "this store cannot end sales")
	}
	s, err := e.EndSale(ctx, id, at)
	if err != nil {
		return s, err
	}
	r.put(s)
	return s, nil
}

// SettleSale implements sale.Ender; the cached record is dropped.
func (r *Records) SettleSale(ctx context.Context, id string, unsold int64, at time.Time) (sale.Sale, bool, error) {
	e, ok := r.next.(sale.Ender)
	if !ok {
		return sale.Sale{}, false, spike.Errorf(spike.ErrUnavailable, "this store cannot settle sales")
	}
	s, applied, err := e.SettleSale(ctx, id, unsold, at)
	r.Invalidate(id)
	return s, applied, err
}

// Invalidate drops the cached record of a sale changed elsewhere.
func (r *Records) Invalidate(id string) {
	r.group.Forget(id)
	r.cache.Invalidate(id)
}
