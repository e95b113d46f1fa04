package resilience

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// KeyedConfig configures a [Keyed] limiter.
type KeyedConfig struct {
	// MaxKeys bounds how many keys are remembered; when full, the least
	// recently used key is forgotten (its limiter starts afresh if the key
	// returns). Zero means 65536.
	MaxKeys int
	// Shards is the number of independently locked shards, rounded up to a
	// power of two; zero means 32. More shards mean less lock contention.
	Shards int
	// OnEvict, if set, is called (under a shard lock; keep it short) with
	// each key evicted to respect MaxKeys.
	OnEvict func(key string)
}

// Keyed is a set of limiters, one per key (user, IP, sale), with bounded
// memory. Keys are spread over shards by hash; each shard keeps an LRU list.
// It is safe for concurrent use. Allow for a known key does not allocate.
type Keyed struct {
	seed       maphash.Seed
	shards     []keyedShard
	mask       uint64
	newLimiter func(key string) Limiter
	onEvict    func(string)
	evictions  atomic.Uint64
}

type keyedShard struct {
	mu      sync.Mutex
	entries map[string]*keyedEntry
	lru     keyedEntry // sentinel: lru.next is most recent, lru.prev least
	maxKeys int
	_       [40]byte // keep shards on separate cache lines
}

type keyedEntry struct {
	key        string
	limiter    Limiter
	prev, next *keyedEntry
}

// NewKeyed returns a keyed limiter that makes each key's limiter with
// newLimiter, for example:
//
//	perUser := resilience.NewKeyed(resilience.KeyedConfig{MaxKeys: 100_000},
//		func(string) resilience.Limiter {
//			return resilience.NewTokenBucket(resilience.TokenBucketConfig{Rate: 5, Burst: 10})
//		})
func NewKeyed(cfg KeyedConfig, newLimiter func(key string) Limiter) *Keyed {
	maxKeys := cfg.MaxKeys
	if maxKeys <= 0 {
		maxKeys = 1 << 16
	}
	shards := 1
	want := cfg.Shards
	if want <= 0 {
		want = 32
	}
	for shards < want && shards < maxKeys {
		shards <<= 1
	}
	k := &Keyed{
		seed:       maphash.MakeSeed(),
		shards:     make([]keyedShard, shards),
		mask:       uint64(shards - 1),
		newLimiter: newLimiter,
		onEvict:    cfg.OnEvict,
	}
	// Spread MaxKeys over the shards; the total never exceeds MaxKeys.
	for i := range k.shards {
		s := &k.shards[i]
		s.entries = make(map[string]*keyedEntry)
		s.lru.next, s.lru.prev = &s.lru, &s.lru
		s.maxKeys = maxKeys / shards
		if i < maxKeys%shards {
			s.maxKeys++
		}
	}
	return k
}

// Allow reports whether one event for key may happen now.
func (k *Keyed) Allow(key string) bool { return k.Limiter(key).Allow() }

// AllowN reports whether n events for key may happen now.
func (k *Keyed) AllowN(key string, n int) bool { return k.Limiter(key).AllowN(n) }

// Delay returns how long until an event for key would be allowed; see
// [Limiter].
func (k *Keyed) Delay(key string) time.Duration { return k.Limiter(key).Delay() }

// Wait blocks until an event for key may happen; see [Limiter].
func (k *Keyed) Wait(ctx context.Context, key string) error { return k.Limiter(key).Wait(ctx) }

// Limiter returns key's limiter, creating it (and evicting the least recently
// used key of its shard if needed) on first use.
func (k *Keyed) Limiter(key string) Limiter {
	s := &k.shards[maphash.String(k.seed, key)&k.mask]
	s.mu.Lock()
	e, ok := s.entries[key]
	if ok {
		s.unlink(e)
	} else {
		if len(s.entries) >= s.maxKeys {
			k.evict(s)
		}
		e = &keyedEntry{key: key, limiter: k.newLimiter(key)}
		s.entries[key] = e
	}
	s.pushFront(e)
	l := e.limiter
	s.mu.Unlock()
	return l
}

func (k *Keyed) evict(s *keyedShard) {
	oldest := s.lru.prev
	if oldest == &s.lru {
		return
	}
	s.unlink(oldest)
	delete(s.entries, oldest.key)
	k.evictions.Add(1)
	if k.onEvict != nil {
		k.onEvict(oldest.key)
	}
}

// Len returns the number of keys remembered.
func (k *Keyed) Len() int {
	n := 0
	for i := range k.shards {
		s := &k.shards[i]
		s.mu.Lock()
		n += len(s.entries)
		s.mu.Unlock()
	}
	return n
}

// Evictions returns how many keys were forgotten to respect MaxKeys.
func (k *Keyed) Evictions() uint64 { return k.evictions.Load() }

func (s *keyedShard) unlink(e *keyedEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
}

func (s *keyedShard) pushFront(e *keyedEntry) {
	e.prev, e.next = &s.lru, s.lru.next
	s.lru.next.prev = e
	s.lru.next = e
}
