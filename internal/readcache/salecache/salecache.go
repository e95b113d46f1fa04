// Package salecache makes sale page reads cheap: decorators of the
// sale.Store and sale.Counters that sale.Service takes, so that a flash
// sale's countdown page, polled by every buyer, costs the database and the
// stock counters a few reads per second instead of one per request.
//
//   - [Records] caches sale records, which never change once created, for a
//     long TTL; a not-found answer is not cached.
//   - [Counters] caches each sale's remaining units for a short freshness
//     window and serves the last known value, while it is younger than the
//     API's 1 s lag bound, when the counters fail.
//
// Both load each key once at a time (singleflight), behind the guard of
// their dependency (internal/depguard: a bulkhead, a circuit breaker and a
// timeout), and answer an error of kind
// spike.ErrUnavailable (503) when they cannot.
//
//	records := salecache.NewRecords(db, salecache.RecordsOptions{})
//	remaining := salecache.NewCounters(redisCounters, salecache.CountersOptions{})
//	svc := sale.NewService(records, remaining)
//
// See docs/caching.md ("Sale reads") for the design.
package salecache

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/depguard"
	"github.com/spikehq/spike/resilience"
)

// Stats are a cache's counters since it was created, for export as
// Prometheus counters (Entries, LoadsInFlight and Breaker as gauges).
type Stats struct {
	Hits          uint64           // reads answered from a fresh entry
	Misses        uint64           // reads that waited for a load (joined or started)
	Loads         uint64           // calls to the wrapped store or counters (not those refused)
	LoadErrors    uint64           // loads that failed, or were refused by the breaker or the bulkhead
	StaleServed   uint64           // reads answered with an older entry because the load failed
	Unavailable   uint64           // reads refused with ErrUnavailable
	Entries       int              // cached entries, estimated
	LoadsInFlight int              // slots of the bulkhead in use
	Breaker       resilience.State // of the breaker in front of the wrapped store or counters
}

type counters struct {
	hits, misses, loads, loadErrors, staleServed, unavailable atomic.Uint64
}

// newGuard returns the guard of a cache's loads (dep's, from
// depguard): a bulkhead of maxLoads slots waited for up to loadWait, the
// breaker cfg and a budget of loadTimeout per load. isAnswer reports
// whether an error is an answer of the dependency (a sale not found): a
// success for the breaker. A full bulkhead says nothing about the
// dependency's health, so it is not recorded by the breaker.
func newGuard(dep depguard.Dependency, cfg resilience.BreakerConfig, now func() time.Time, maxLoads int, loadWait, loadTimeout time.Duration, isAnswer func(error) bool, m *depguard.Metrics) *depguard.Guard {
	return depguard.New(dep, depguard.Config{
		Settings: &depguard.Settings{Breaker: cfg, Bulkhead: maxLoads, BulkheadWait: loadWait, Timeout: loadTimeout},
		IsAnswer: isAnswer,
		Metrics:  m,
		Now:      now,
	})
}

// errGaveUp is what a caller whose deadline passed while it waited for a
// load gets: a 503 that still matches context.DeadlineExceeded.
var errGaveUp = &spike.Error{Kind: spike.ErrUnavailable, Message: "the sale could not be read in time; try again later"}

// waitErr returns the error for a caller whose ctx ended while it waited.
func waitErr(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", errGaveUp, ctx.Err())
	}
	return ctx.Err()
}

// clock reads the time in nanoseconds for the caches and for otter; it
// gives otter no ticks, so otter starts no goroutine and expired entries
// are dropped on reads and writes (the size bound holds either way).
type clock struct {
	now   func() time.Time // nil: the runtime's monotonic clock
	epoch time.Time
}

func newClock(now func() time.Time) clock {
	if now == nil {
		return clock{epoch: time.Now()}
	}
	return clock{now: now}
}

func (c clock) NowNano() int64 {
	if c.now == nil {
		// time.Since takes the monotonic fast path; adding the epoch keeps
		// otter's times positive and Unix-like.
		return c.epoch.UnixNano() + int64(time.Since(c.epoch))
	}
	return c.now().UnixNano()
}

func (c clock) Tick(time.Duration) <-chan time.Time { return nil }
