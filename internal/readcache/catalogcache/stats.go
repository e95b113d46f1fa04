package catalogcache

import (
	"sync/atomic"

	"github.com/spikehq/spike/resilience"
)

// Stats are a Store's counters since it was created, for export as
// Prometheus counters (and Breaker as a gauge).
type Stats struct {
	Hits          uint64           // reads answered from a fresh L1 entry, found or not found
	Misses        uint64           // reads that waited for a load (joined or started)
	L2Hits        uint64           // loads answered by L2
	Loads         uint64           // database reads, including hot-key refreshes
	LoadErrors    uint64           // database reads that failed (not found is no failure), or refused by the breaker or cap
	StaleServed   uint64           // reads answered with an expired entry: database failing or cache-only
	Unavailable   uint64           // reads refused: cache-only miss, breaker open or cap reached, no stale entry
	Invalidations uint64           // L1 invalidations, local and received
	PublishErrors uint64           // invalidations that could not be published
	L2Errors      uint64           // failed L2 calls, or refused by the L2 breaker (a read then goes to the database)
	HotRefreshes  uint64           // hot-key reloads
	Entries       int              // L1 entries, estimated, including stale ones
	Breaker       resilience.State // of the database breaker
	L2Breaker     resilience.State
}

type counters struct {
	hits, misses, l2Hits, loads, loadErrors, staleServed, unavailable,
	invalidations, publishErrors, l2Errors, hotRefreshes atomic.Uint64
}

// Stats returns the current counters.
func (s *Store) Stats() Stats {
	c := &s.stats
	return Stats{
		Hits:          c.hits.Load(),
		Misses:        c.misses.Load(),
		L2Hits:        c.l2Hits.Load(),
		Loads:         c.loads.Load(),
		LoadErrors:    c.loadErrors.Load(),
		StaleServed:   c.staleServed.Load(),
		Unavailable:   c.unavailable.Load(),
		Invalidations: c.invalidations.Load(),
		PublishErrors: c.publishErrors.Load(),
		L2Errors:      c.l2Errors.Load(),
		HotRefreshes:  c.hotRefreshes.Load(),
		Entries:       s.l1.EstimatedSize(),
		Breaker:       s.db.Breaker().State(),
		L2Breaker:     s.l2.Breaker().State(),
	}
}

// Breaker returns the circuit breaker in front of the database, for
// operators' overrides (Stats reports its state).
func (s *Store) Breaker() *resilience.Breaker { return s.db.Breaker() }
