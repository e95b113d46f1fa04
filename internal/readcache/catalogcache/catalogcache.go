// Package catalogcache makes product reads fast: a catalog.Store decorator
// with an in-process L1 cache (otter), an optional shared L2 (Redis, see
// package rediscache), one database load per key at a time, negative
// caching, TTLs with jitter, invalidation on every write (published to the
// other instances), hot keys detected and kept fresh in L1, and a database
// fallback behind a guard (internal/depguard: a concurrency cap and a
// circuit breaker) that serves stale entries rather than failing.
//
//	cache := catalogcache.New(db, catalogcache.Options{
//		Invalidator: natsbus.NewInvalidations(nc, ""),
//		CacheOnly:   func() bool { return board.On(switches.ReadsCacheOnly) },
//	})
//	go cache.Run(ctx)                                   // hot keys, repeated evictions
//	go invalidations.Subscribe(ctx, cache.Invalidate)   // other instances' writes
//	svc := catalog.NewService(cache)
//
// See docs/caching.md for the design.
package catalogcache

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
	"golang.org/x/sync/singleflight"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/depguard"
	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/resilience"
)

// L2 is a cache shared by instances (Redis in production, see package
// rediscache). Its errors never fail a read: they count as misses.
type L2 interface {
	// Get returns the cached product and whether there was one.
	Get(ctx context.Context, sku string) (catalog.Product, bool, error)
	// Set caches p for ttl.
	Set(ctx context.Context, p catalog.Product, ttl time.Duration) error
	// Delete removes the product with the given SKU; a missing one is no error.
	Delete(ctx context.Context, sku string) error
}

// Invalidator tells the other instances that a product changed; they call
// [Store.Invalidate] with the SKU (natsbus.Invalidations does this on NATS).
type Invalidator interface {
	Publish(ctx context.Context, sku string) error
}

// Errors returned by [Store.Product] when it cannot answer.
var (
	// ErrCacheOnly is returned on a cache miss while reads are switched to
	// caches only (Options.CacheOnly).
	ErrCacheOnly = &spike.Error{Kind: spike.ErrUnavailable, Message: "product reads are served from cache only for now; try again later"}
	// ErrUnavailable is returned on a miss when the database is not called
	// because its circuit breaker is open or its concurrency cap is reached,
	// and no stale copy is at hand.
	ErrUnavailable = &spike.Error{Kind: spike.ErrUnavailable, Message: "the product catalogue is unavailable for now; try again later"}
)

// Options configures a Store. The zero value is valid: every zero field
// takes the default given.
type Options struct {
	// MaxEntries bounds L1. If zero, 100_000 is used.
	MaxEntries int
	// TTL is how long an L1 entry is served before it is loaded again; each
	// entry's TTL is drawn within ±Jitter of it, so entries loaded together
	// do not expire together. If zero, 30s is used.
	TTL time.Duration
	// Jitter is the relative spread of TTLs. If zero, 0.1 is used; negative
	// means none.
	Jitter float64
	// NegativeTTL is how long a not-found result is cached. If zero, 2s is
	// used.
	NegativeTTL time.Duration
	// StaleFor is how long an expired L1 entry is kept to be served while
	// the database fails or reads are cache-only. If zero, 5m is used.
	StaleFor time.Duration

	// L2 is an optional shared cache between L1 and the database.
	L2 L2
	// L2TTL is the TTL of L2 entries. If zero, TTL is used.
	L2TTL time.Duration
	// L2Timeout bounds each L2 call. If zero, 100ms is used.
	L2Timeout time.Duration
	// L2Breaker configures the circuit breaker around L2 calls: while it
	// is open, reads skip L2 and go to the database (behind its own
	// breaker and cap), writes skip the L2 deletion (whose entry then
	// expires by L2TTL).
	L2Breaker resilience.BreakerConfig
	// RepeatEvict is how long after a write the L2 entry is deleted and the
	// invalidation published once more (only with an L2): it removes a
	// value that a concurrent load on another instance read before the
	// write and stored in L2 after it. If zero, 300ms is used; negative
	// disables it. Run does the repeated evictions: without it they are
	// not done.
	RepeatEvict time.Duration

	// Invalidator publishes this instance's writes. If nil, writes only
	// invalidate this instance's caches.
	Invalidator Invalidator
	// CacheOnly reports whether reads must not reach the database (the
	// reads.cache_only switch). It is called on every miss. If nil, never.
	CacheOnly func() bool

	// Breaker configures the circuit breaker around database reads.
	// Not-found results count as successes; a caller's cancellation is
	// ignored unless Breaker.IsFailure says otherwise. A load refused by
	// the full concurrency cap does not reach the breaker (the cap comes
	// first: it says nothing of the database's health).
	Breaker resilience.BreakerConfig
	// MaxLoads caps concurrent database reads. If zero, 32 is used.
	MaxLoads int
	// LoadWait is how long a load waits for one of MaxLoads. If zero,
	// 100ms is used.
	LoadWait time.Duration
	// LoadTimeout bounds one load (L2 and database). If zero, 2s is used.
	LoadTimeout time.Duration

	// HotKeys is how many of the most read SKUs are kept hot. If zero, 16
	// is used; negative disables hot-key detection.
	HotKeys int
	// HotWindow is the sliding window over which reads are counted. If
	// zero, 10s is used.
	HotWindow time.Duration
	// HotMinReads is the number of reads within HotWindow that makes a SKU
	// eligible to be hot. If zero, 100 is used.
	HotMinReads int
	// HotTTL is the TTL of a hot key's L1 entry; Run reloads hot keys every
	// HotRefresh, so they stay fresh and never expire while hot. If zero,
	// 3s and 1s are used.
	HotTTL, HotRefresh time.Duration

	// Metrics exports the guards of database reads (dependency
	// catalog_db) and L2 calls (catalog_l2). If nil, they are not
	// exported.
	Metrics *depguard.Metrics
	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
	// Logger receives warnings about failed invalidations. If nil, they are
	// only counted.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = 100_000
	}
	def(&o.TTL, 30*time.Second)
	if o.Jitter == 0 {
		o.Jitter = 0.1
	}
	o.Jitter = min(max(o.Jitter, 0), 0.9)
	def(&o.NegativeTTL, 2*time.Second)
	def(&o.StaleFor, 5*time.Minute)
	def(&o.L2TTL, o.TTL)
	def(&o.L2Timeout, 100*time.Millisecond)
	def(&o.RepeatEvict, 300*time.Millisecond)
	if o.MaxLoads <= 0 {
		o.MaxLoads = 32
	}
	def(&o.LoadWait, 100*time.Millisecond)
	def(&o.LoadTimeout, 2*time.Second)
	if o.HotKeys == 0 {
		o.HotKeys = 16
	}
	def(&o.HotWindow, 10*time.Second)
	if o.HotMinReads <= 0 {
		o.HotMinReads = 100
	}
	def(&o.HotTTL, 3*time.Second)
	def(&o.HotRefresh, time.Second)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Store is a caching catalog.Store in front of another one (the database).
// It is safe for concurrent use. Reads that hit L1 do not allocate.
//
// Consistency: a write through this Store is visible to its next read. A
// write through another instance is visible here once its invalidation
// arrives (milliseconds on NATS) or, if the message is lost, once the entry
// expires (TTL, at most TTL×(1+Jitter)). Changes made to the database
// behind the cache's back, such as the stock a sale takes from its product
// (sale.Store.CreateSale), are visible after the TTL unless the writer
// calls [Store.Evict].
type Store struct {
	next   catalog.Store
	opts   Options
	now    func() int64       // UnixNano
	coarse *otter.CoarseClock // nil with Options.Now
	l1     *otter.Cache[string, *entry]
	group  singleflight.Group
	// seq counts invalidations: a load stores its result only if none
	// happened while it ran, so a value read before a write is not cached
	// after the write's invalidation.
	seq     atomic.Uint64
	db      *depguard.Guard // database reads
	l2      *depguard.Guard // L2 calls
	hot     *hotTracker     // nil if disabled
	stats   counters
	repeats chan repeatEvict // evictions for Run to repeat
}

// repeatEvict is an eviction Run repeats at the given clock time.
type repeatEvict struct {
	sku string
	at  time.Time
}

// maxRepeats bounds the evictions waiting to be repeated; an eviction
// made while the queue is full is not repeated (the TTL is the backstop).
const maxRepeats = 1024

var _ catalog.Store = (*Store)(nil)

// entry is an immutable L1 value.
type entry struct {
	p      catalog.Product
	found  bool
	fresh  int64         // UnixNano until which it is served without a load
	retain time.Duration // how long L1 keeps it after it is written
}

func (e *entry) result() (catalog.Product, error) {
	if !e.found {
		return catalog.Product{}, catalog.ErrProductNotFound
	}
	return e.p, nil
}

// New returns a Store that caches next's products.
func New(next catalog.Store, opts Options) *Store {
	opts.setDefaults()
	s := &Store{next: next, opts: opts}
	oo := &otter.Options[string, *entry]{
		MaximumSize: opts.MaxEntries,
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, *entry]) time.Duration {
			return e.Value.retain
		}),
	}
	if opts.Now != nil {
		c := clock{opts.Now}
		oo.Clock, s.now = c, c.NowNano
	} else {
		// Reading the precise time is a large part of a cache hit; a clock
		// a millisecond behind is precise enough for TTLs of seconds.
		s.coarse = otter.NewCoarseClock(time.Millisecond)
		oo.Clock, s.now = s.coarse, s.coarse.NowNano
	}
	s.l1 = otter.Must(oo)

	bc := opts.Breaker
	isFailure := bc.IsFailure
	bc.IsFailure = func(err error) bool {
		switch {
		case err == nil, errors.Is(err, context.Canceled):
			return false
		case isFailure != nil:
			return isFailure(err)
		}
		return true
	}
	s.db = depguard.New(depguard.CatalogDB, depguard.Config{
		Settings: &depguard.Settings{Breaker: bc, Bulkhead: opts.MaxLoads, BulkheadWait: opts.LoadWait},
		Metrics:  opts.Metrics, Now: opts.Now,
	})
	s.l2 = depguard.New(depguard.CatalogL2, depguard.Config{
		Settings: &depguard.Settings{Breaker: opts.L2Breaker, Timeout: opts.L2Timeout},
		Metrics:  opts.Metrics, Now: opts.Now,
	})
	s.repeats = make(chan repeatEvict, maxRepeats)
	if opts.HotKeys > 0 {
		s.hot = newHotTracker(opts.HotKeys, opts.HotMinReads, opts.HotWindow, s.now())
	}
	return s
}

// clock adapts Options.Now for otter; it gives no ticks, so expired entries
// are dropped on writes and reads only.
type clock struct{ now func() time.Time }

func (c clock) NowNano() int64                      { return c.now().UnixNano() }
func (c clock) Tick(time.Duration) <-chan time.Time { return nil }

// Close stops the Store's background goroutines (those of L1 and its
// clock). The Store still works afterwards, only without them.
func (s *Store) Close() {
	s.l1.StopAllGoroutines()
	if s.coarse != nil {
		s.coarse.Stop()
	}
}

// Product implements catalog.Store. It returns the product from L1, L2 or
// the database, in that order, loading each SKU once at a time; or
// catalog.ErrProductNotFound. When the database fails it returns an
// expired copy if one is kept (Options.StaleFor), else the database's
// error, or ErrUnavailable if the breaker or the concurrency cap refused
// the load. While Options.CacheOnly reports true, a miss returns
// ErrCacheOnly instead of reading the database.
func (s *Store) Product(ctx context.Context, sku string) (catalog.Product, error) {
	now := s.now()
	if s.hot != nil {
		s.hot.record(sku, now)
	}
	e, ok := s.l1.GetIfPresent(sku)
	if ok && now < e.fresh {
		s.stats.hits.Add(1)
		return e.result()
	}
	return s.miss(ctx, sku, e)
}

// miss answers a read that L1 could not; stale is the expired entry, or nil.
func (s *Store) miss(ctx context.Context, sku string, stale *entry) (catalog.Product, error) {
	if s.opts.CacheOnly != nil && s.opts.CacheOnly() {
		if s.opts.L2 != nil {
			if e := s.loadL2(ctx, sku, s.seq.Load()); e != nil {
				return e.result()
			}
		}
		if stale != nil {
			s.stats.staleServed.Add(1)
			return stale.result()
		}
		s.stats.unavailable.Add(1)
		return catalog.Product{}, ErrCacheOnly
	}
	s.stats.misses.Add(1)
	ch := s.group.DoChan(sku, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.LoadTimeout)
		defer cancel()
		return s.load(ctx, sku, false)
	})
	var r singleflight.Result
	select {
	case r = <-ch:
	case <-ctx.Done():
		return catalog.Product{}, ctx.Err()
	}
	if r.Err == nil {
		return r.Val.(*entry).result()
	}
	if stale != nil {
		s.stats.staleServed.Add(1)
		return stale.result()
	}
	if errors.Is(r.Err, resilience.ErrBreakerOpen) || errors.Is(r.Err, resilience.ErrBulkheadFull) {
		s.stats.unavailable.Add(1)
		return catalog.Product{}, ErrUnavailable
	}
	return catalog.Product{}, r.Err
}

// load reads sku from L2 (unless hot) and then the database, stores the
// result in L1 (and L2) and returns it. Hot loads skip L2, which may be
// older than the database, and get Options.HotTTL.
func (s *Store) load(ctx context.Context, sku string, hot bool) (*entry, error) {
	seq := s.seq.Load()
	if !hot && s.opts.L2 != nil {
		if e := s.loadL2(ctx, sku, seq); e != nil {
			return e, nil
		}
	}
	s.stats.loads.Add(1)
	var p catalog.Product
	var notFound bool
	err := s.db.Do(ctx, func(ctx context.Context) error {
		var err error
		p, err = s.next.Product(ctx, sku)
		if errors.Is(err, spike.ErrNotFound) {
			notFound = true // an answer: a success for the breaker
			return nil
		}
		return err
	})
	switch {
	case notFound:
		return s.store(sku, catalog.Product{}, false, s.opts.NegativeTTL, seq), nil
	case err != nil:
		s.stats.loadErrors.Add(1)
		return nil, err
	}
	ttl := s.opts.TTL
	if hot {
		ttl = s.opts.HotTTL
	}
	e := s.store(sku, p, true, ttl, seq)
	if s.opts.L2 != nil && s.seq.Load() == seq {
		s.l2Do(ctx, func(ctx context.Context) error { return s.opts.L2.Set(ctx, p, s.jitter(s.opts.L2TTL)) })
	}
	return e, nil
}

// loadL2 returns the L2 entry for sku, stored in L1, or nil.
func (s *Store) loadL2(ctx context.Context, sku string, seq uint64) *entry {
	var p catalog.Product
	var ok bool
	err := s.l2Do(ctx, func(ctx context.Context) error {
		var err error
		p, ok, err = s.opts.L2.Get(ctx, sku)
		return err
	})
	switch {
	case err != nil, !ok, p.SKU != sku:
		return nil
	}
	s.stats.l2Hits.Add(1)
	return s.store(sku, p, true, s.opts.TTL, seq)
}

// store puts a new entry in L1 unless an invalidation happened since seq,
// and returns it either way.
func (s *Store) store(sku string, p catalog.Product, found bool, ttl time.Duration, seq uint64) *entry {
	if found {
		ttl = s.jitter(ttl)
	}
	e := &entry{p: p, found: found, fresh: s.now() + int64(ttl), retain: ttl}
	if found {
		e.retain += s.opts.StaleFor
	}
	if s.seq.Load() != seq {
		return e
	}
	s.l1.Set(sku, e)
	// An invalidation between the check above and Set would have deleted
	// nothing; seeing it now, delete what Set stored.
	if s.seq.Load() != seq {
		s.l1.Invalidate(sku)
	}
	return e
}

// l2Do runs an L2 call behind the L2 guard (a breaker, Options.L2Timeout),
// and counts its failure.
func (s *Store) l2Do(ctx context.Context, fn func(context.Context) error) error {
	err := s.l2.Do(ctx, fn)
	if err != nil {
		s.stats.l2Errors.Add(1)
	}
	return err
}

func (s *Store) jitter(d time.Duration) time.Duration {
	if s.opts.Jitter == 0 {
		return d
	}
	return time.Duration(float64(d) * (1 + s.opts.Jitter*(2*rand.Float64()-1)))
}

// Invalidate drops this instance's L1 entry for sku, fresh or stale, and
// makes loads already running for it not cache their result. It is what
// incoming invalidations call (natsbus.Invalidations.Subscribe); it does
// not touch L2 or publish anything (see [Store.Evict]). It never blocks.
func (s *Store) Invalidate(sku string) {
	s.seq.Add(1)
	s.group.Forget(sku)
	s.l1.Invalidate(sku)
	s.stats.invalidations.Add(1)
}

// Evict is what to call after changing a product in the database other
// than through this Store, for instance after sale.Store.CreateSale took
// stock from it: it invalidates L1 here, deletes the L2 entry and publishes
// the invalidation to the other instances; with an L2 it does the L2
// deletion and the publication again Options.RepeatEvict later (done by
// Run). It returns
// the L2 and publication errors (the local invalidation always happens);
// the product then stays stale elsewhere for at most the TTL.
func (s *Store) Evict(ctx context.Context, sku string) error {
	err := s.evict(ctx, sku)
	if s.opts.L2 != nil && s.opts.RepeatEvict > 0 {
		select {
		case s.repeats <- repeatEvict{sku: sku, at: time.Now().Add(s.opts.RepeatEvict)}:
		default:
			s.opts.Logger.Warn("repeat product cache invalidation: queue full, not repeated", "sku", sku)
		}
	}
	return err
}

func (s *Store) evict(ctx context.Context, sku string) error {
	s.Invalidate(sku)
	var l2Err, pubErr error
	if s.opts.L2 != nil {
		l2Err = s.l2Do(ctx, func(ctx context.Context) error { return s.opts.L2.Delete(ctx, sku) })
	}
	if s.opts.Invalidator != nil {
		if pubErr = s.opts.Invalidator.Publish(ctx, sku); pubErr != nil {
			s.stats.publishErrors.Add(1)
		}
	}
	return errors.Join(l2Err, pubErr)
}

// written evicts sku after a successful write. The write stands even if
// the invalidation fails, so the failure is logged (and counted), not
// returned.
func (s *Store) written(ctx context.Context, sku string) {
	if err := s.Evict(ctx, sku); err != nil {
		s.opts.Logger.WarnContext(ctx, "product cache invalidation", "sku", sku, "err", err)
	}
}

// CreateProduct implements catalog.Store: it creates p in the database and
// evicts any cached not-found for its SKU everywhere.
func (s *Store) CreateProduct(ctx context.Context, p catalog.Product) error {
	if err := s.next.CreateProduct(ctx, p); err != nil {
		return err
	}
	s.written(ctx, p.SKU)
	return nil
}

// UpdateProduct implements catalog.Store: it updates the database and
// evicts the cached product everywhere.
func (s *Store) UpdateProduct(ctx context.Context, sku string, u catalog.ProductUpdate) (catalog.Product, error) {
	p, err := s.next.UpdateProduct(ctx, sku, u)
	if err != nil {
		return p, err
	}
	s.written(ctx, sku)
	return p, nil
}

// AdjustStock implements catalog.StockLedger: the move is applied by the
// store underneath, then the product is evicted here and on every instance
// like any other write.
func (s *Store) AdjustStock(ctx context.Context, m catalog.StockMove) (catalog.Product, bool, error) {
	l, ok := s.next.(catalog.StockLedger)
	if !ok {
		return catalog.Product{}, false, spike.Errorf(spike.ErrUnavailable, "this store does not record stock moves")
	}
	p, applied, err := l.AdjustStock(ctx, m)
	if err != nil {
		return p, applied, err
	}
	if applied {
		s.written(ctx, m.SKU)
	}
	return p, applied, nil
}

// StockMoves implements catalog.StockLedger; it is not cached.
func (s *Store) StockMoves(ctx context.Context, sku string) ([]catalog.StockMove, error) {
	l, ok := s.next.(catalog.StockLedger)
	if !ok {
		return nil, spike.Errorf(spike.ErrUnavailable, "this store does not record stock moves")
	}
	return l.StockMoves(ctx, sku)
}
