package resilience

import (
	"sync"
	"sync/atomic"
	"time"
)

// KeyedBucketsConfig configures [KeyedBuckets].
type KeyedBucketsConfig struct {
	// Rate is each key's refill rate in tokens per second. Zero or negative
	// denies everything; +Inf (or more than 1e9) allows everything.
	Rate float64
	// Burst is each key's bucket size; zero means 1.
	Burst int
	// MaxKeys bounds how many keys are remembered; zero means 65536. When
	// full, a new key makes room by forgetting the fullest of a few sampled
	// buckets: a full bucket is the same as a new one, so that usually
	// forgets nothing that mattered.
	MaxKeys int
	// Shards is the number of independently locked shards, rounded up to a
	// power of two; zero means 32.
	Shards int
	// Now returns the current time; nil means the real monotonic clock.
	Now func() time.Time
}

// KeyedBuckets is a token bucket per integer key (a user id, say), like
// [Keyed] of [TokenBucket] but for many short-lived keys: a key's whole
// state is 16 bytes in a map, stored by value. A key gets state only once
// it takes a token (a full bucket needs none) and loses it, in a sweep,
// once its bucket is full again, so the maps hold the keys of about one
// refill interval rather than every key seen; no call allocates except
// when a shard's map grows, and a key needs no string formatting. It is
// safe for concurrent use.
type KeyedBuckets struct {
	p         bucketParams // immutable
	clock     clock
	shards    []bucketShard
	mask      uint64
	evictions atomic.Uint64
}

type bucketShard struct {
	mu      sync.Mutex
	tat     map[uint64]int64 // key → theoretical arrival time (ns on clock); absent: full
	maxKeys int
	// New keys since the last sweep, and how many make the next one.
	sinceSweep, sweepEvery int
	_                      [24]byte // keep shards on separate cache lines
}

// minSweepEvery is the fewest new keys between two sweeps of a shard.
const minSweepEvery = 64

// evictSample is how many buckets a full shard compares to pick the one it
// forgets.
const evictSample = 8

// NewKeyedBuckets returns token buckets that are all full.
func NewKeyedBuckets(cfg KeyedBucketsConfig) *KeyedBuckets {
	maxKeys := cfg.MaxKeys
	if maxKeys <= 0 {
		maxKeys = 1 << 16
	}
	want := cfg.Shards
	if want <= 0 {
		want = 32
	}
	shards := 1
	for shards < want && shards < maxKeys {
		shards <<= 1
	}
	b := &KeyedBuckets{
		p:      *newBucketParams(cfg.Rate, cfg.Burst),
		clock:  newClock(cfg.Now),
		shards: make([]bucketShard, shards),
		mask:   uint64(shards - 1),
	}
	// Spread MaxKeys over the shards; the total never exceeds MaxKeys.
	for i := range b.shards {
		s := &b.shards[i]
		s.tat = make(map[uint64]int64)
		s.sweepEvery = minSweepEvery
		s.maxKeys = maxKeys / shards
		if i < maxKeys%shards {
			s.maxKeys++
		}
	}
	return b
}

// shard returns key's shard; consecutive keys (user ids) spread evenly.
func (b *KeyedBuckets) shard(key uint64) *bucketShard {
	key *= 0x9e3779b97f4a7c15
	return &b.shards[(key>>32)&b.mask]
}

// Allow reports whether one event for key may happen now, taking a token
// if so.
func (b *KeyedBuckets) Allow(key uint64) bool { return b.AllowN(key, 1) }

// AllowN reports whether n events for key may happen now, taking n tokens
// if so. It returns false if n exceeds the burst.
func (b *KeyedBuckets) AllowN(key uint64, n int) bool {
	p := &b.p
	if p.unlimited || n <= 0 {
		return true
	}
	if p.deny || int64(n) > p.burst {
		return false
	}
	now := b.clock.nanos()
	s := b.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	tat, known := s.tat[key]
	newTat := max(tat, now) + int64(n)*p.interval
	if newTat-now > p.tolerance {
		return false
	}
	if !known {
		if s.sinceSweep++; s.sinceSweep >= s.sweepEvery {
			s.sweep(now)
		}
		if len(s.tat) >= s.maxKeys {
			b.evict(s)
		}
	}
	s.tat[key] = newTat
	return true
}

// sweep forgets every full bucket (tat <= now), which is the same as
// remembering it (an absent key is full): without it, a flash sale's
// buyers, each seen once, would fill the map up to MaxKeys, and every new
// buyer's lookup would miss the CPU caches in a map of a million keys.
// With it the map holds about the buyers of the last refill interval. A
// sweep comes after as many new keys as the shard kept at the last one
// (at least minSweepEvery), so it costs O(1) a new key.
func (s *bucketShard) sweep(now int64) {
	for k, tat := range s.tat {
		if tat <= now {
			delete(s.tat, k)
		}
	}
	s.sinceSweep = 0
	s.sweepEvery = max(minSweepEvery, len(s.tat))
}

// evict forgets the fullest (earliest theoretical arrival time) of a few
// buckets of s, taken from a random place in its map; s.mu is held.
func (b *KeyedBuckets) evict(s *bucketShard) {
	var victim uint64
	oldest, seen := int64(0), 0
	for k, tat := range s.tat {
		if seen == 0 || tat < oldest {
			victim, oldest = k, tat
		}
		if seen++; seen == evictSample {
			break
		}
	}
	if seen > 0 {
		delete(s.tat, victim)
		b.evictions.Add(1)
	}
}

// Delay returns how long until one event for key would be allowed: zero
// if now, negative if never. It takes nothing; use it for Retry-After.
func (b *KeyedBuckets) Delay(key uint64) time.Duration {
	p := &b.p
	switch {
	case p.unlimited:
		return 0
	case p.deny:
		return -1
	}
	now := b.clock.nanos()
	s := b.shard(key)
	s.mu.Lock()
	tat := s.tat[key]
	s.mu.Unlock()
	return time.Duration(max(max(tat, now)+p.interval-p.tolerance-now, 0))
}

// Len returns the number of keys remembered.
func (b *KeyedBuckets) Len() int {
	n := 0
	for i := range b.shards {
		s := &b.shards[i]
		s.mu.Lock()
		n += len(s.tat)
		s.mu.Unlock()
	}
	return n
}

// Evictions returns how many keys were forgotten to respect MaxKeys.
func (b *KeyedBuckets) Evictions() uint64 { return b.evictions.Load() }
