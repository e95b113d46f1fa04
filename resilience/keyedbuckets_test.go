package resilience_test

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spikehq/spike/resilience"
)

// TestKeyedBucketsMatchTokenBucket drives KeyedBuckets and one TokenBucket
// per key with the same random calls on one fake clock: every answer and
// every Delay must agree.
func TestKeyedBucketsMatchTokenBucket(t *testing.T) {
	for _, cfg := range []struct {
		rate  float64
		burst int
	}{{10, 3}, {1, 1}, {1000, 50}, {0.5, 2}} {
		clk := newFakeClock()
		kb := resilience.NewKeyedBuckets(resilience.KeyedBucketsConfig{Rate: cfg.rate, Burst: cfg.burst, Now: clk.Now})
		single := map[uint64]*resilience.TokenBucket{}
		rng := rand.New(rand.NewPCG(uint64(cfg.burst), 7))
		step := int64(2e9 / cfg.rate / float64(cfg.burst+1)) // about as often as tokens come back
		answers := map[bool]int{}
		for i := range 5000 {
			clk.Advance(time.Duration(rng.Int64N(step)))
			key := uint64(rng.IntN(20))
			tb := single[key]
			if tb == nil {
				tb = resilience.NewTokenBucket(resilience.TokenBucketConfig{Rate: cfg.rate, Burst: cfg.burst, Now: clk.Now})
				single[key] = tb
			}
			if got, want := kb.Delay(key), tb.Delay(); got != want {
				t.Fatalf("rate %v burst %d, call %d: Delay(%d) = %v, TokenBucket %v", cfg.rate, cfg.burst, i, key, got, want)
			}
			n := 1 + rng.IntN(cfg.burst+1)
			got, want := kb.AllowN(key, n), tb.AllowN(n)
			if got != want {
				t.Fatalf("rate %v burst %d, call %d: AllowN(%d, %d) = %v, TokenBucket %v", cfg.rate, cfg.burst, i, key, n, got, want)
			}
			answers[got]++
		}
		if answers[true] < 500 || answers[false] < 500 {
			t.Errorf("rate %v burst %d: answers %v; the test should see many of each", cfg.rate, cfg.burst, answers)
		}
	}
}

func TestKeyedBucketsDenyAndUnlimited(t *testing.T) {
	for _, tt := range []struct {
		rate  float64
		want  bool
		delay time.Duration
	}{{0, false, -1}, {-1, false, -1}, {math.NaN(), false, -1}, {math.Inf(1), true, 0}, {2e9, true, 0}} {
		kb := resilience.NewKeyedBuckets(resilience.KeyedBucketsConfig{Rate: tt.rate})
		for range 3 {
			if got := kb.Allow(42); got != tt.want {
				t.Errorf("rate %v: Allow() = %v, want %v", tt.rate, got, tt.want)
			}
		}
		if d := kb.Delay(42); d != tt.delay {
			t.Errorf("rate %v: Delay() = %v, want %v", tt.rate, d, tt.delay)
		}
		if n := kb.Len(); n != 0 {
			t.Errorf("rate %v: Len() = %d, want 0: no state needed", tt.rate, n)
		}
	}
}

// TestKeyedBucketsMemoryBound: a flood of new keys stays within MaxKeys,
// and a busy key (its bucket not full) survives it.
func TestKeyedBucketsMemoryBound(t *testing.T) {
	clk := newFakeClock()
	kb := resilience.NewKeyedBuckets(resilience.KeyedBucketsConfig{Rate: 1, Burst: 2, MaxKeys: 64, Shards: 4, Now: clk.Now})
	const hot = 1 << 40
	kb.AllowN(hot, 2) // empty: one token per second from now
	for i := range uint64(10_000) {
		clk.Advance(50 * time.Microsecond) // the flood takes half a second: hot is not refilled
		if !kb.Allow(i) {
			t.Fatalf("Allow(%d) = false for a new key", i)
		}
		if n := kb.Len(); n > 64 {
			t.Fatalf("Len() = %d after %d keys, want <= 64", n, i+1)
		}
	}
	if got := kb.Evictions(); got < 10_000-64 {
		t.Errorf("Evictions() = %d, want >= %d", got, 10_000-64)
	}
	if kb.Allow(hot) {
		t.Error("Allow(hot) = true, want false: the busy key was forgotten")
	}
}

func TestKeyedBucketsIsolateKeys(t *testing.T) {
	clk := newFakeClock()
	kb := resilience.NewKeyedBuckets(resilience.KeyedBucketsConfig{Rate: 1, Burst: 3, Now: clk.Now})
	got := map[uint64]int{}
	for range 100 {
		for _, key := range []uint64{7, 7, 7, 1, 2} {
			if kb.Allow(key) {
				got[key]++
			}
		}
	}
	if got[7] != 3 || got[1] != 3 || got[2] != 3 {
		t.Errorf("allowed per key = %v, want 3 each", got)
	}
	if n := kb.Len(); n != 3 {
		t.Errorf("Len() = %d, want 3", n)
	}
}

// TestKeyedBucketsConcurrentExact: with a frozen clock, goroutines racing
// on one key get exactly the burst, and each of many new keys exactly one
// token.
func TestKeyedBucketsConcurrentExact(t *testing.T) {
	clk := newFakeClock()
	kb := resilience.NewKeyedBuckets(resilience.KeyedBucketsConfig{Rate: 1, Burst: 100, Now: clk.Now})
	var one, fresh atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				if kb.Allow(1) {
					one.Add(1)
				}
				if kb.AllowN(uint64(2+g*1000+i), 100) {
					fresh.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := one.Load(); got != 100 {
		t.Errorf("one key: %d allowed by 8 goroutines, want exactly 100", got)
	}
	if got := fresh.Load(); got != 8000 {
		t.Errorf("new keys: %d allowed their whole burst, want 8000", got)
	}
}

func TestKeyedBucketsAllowDoesNotAllocate(t *testing.T) {
	kb := resilience.NewKeyedBuckets(resilience.KeyedBucketsConfig{Rate: 1e6, Burst: 1000})
	kb.Allow(1)
	if n := testing.AllocsPerRun(1000, func() { kb.Allow(1) }); n != 0 {
		t.Errorf("Allow of a known key: %v allocations, want 0", n)
	}
}

// TestKeyedBucketsForgetsFullBuckets: a stream of keys each seen once
// leaves state only for those whose bucket has not refilled yet (a full
// bucket is the same as none), and a key in debt is never forgotten.
func TestKeyedBucketsForgetsFullBuckets(t *testing.T) {
	clk := newFakeClock()
	kb := resilience.NewKeyedBuckets(resilience.KeyedBucketsConfig{Rate: 10, Burst: 2, MaxKeys: 1 << 20, Shards: 1, Now: clk.Now})
	const hot = 1 << 40
	kb.AllowN(hot, 2) // empty: the next token in 100 ms
	for i := range uint64(90) {
		clk.Advance(time.Millisecond)
		kb.Allow(i)
	}
	if kb.Allow(hot) {
		t.Fatal("Allow(hot) = true 90 ms after it emptied its bucket: it was forgotten")
	}
	for i := range uint64(10_000) {
		clk.Advance(time.Millisecond) // each bucket is full again 100 ms after its key's request
		if !kb.Allow(1000 + i) {
			t.Fatalf("Allow(%d) = false for a new key", 1000+i)
		}
	}
	// About 100 keys are in debt at any time; what the map holds between
	// two sweeps is at most twice that, plus the minimum between sweeps.
	if n := kb.Len(); n > 2*100+64 {
		t.Errorf("Len() = %d after 10,000 keys each seen once, want <= %d", n, 2*100+64)
	}
	if n := kb.Evictions(); n != 0 {
		t.Errorf("Evictions() = %d, want 0: nothing needed forgetting", n)
	}
}
