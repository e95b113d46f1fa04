package resilience_test

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/spikehq/spike/resilience"
)

func BenchmarkLimiters(b *testing.B) {
	limiters := []struct {
		name string
		l    resilience.Limiter
	}{
		{"TokenBucket", resilience.NewTokenBucket(resilience.TokenBucketConfig{Rate: 1e8, Burst: 1000})},
		{"LeakyBucket", resilience.NewLeakyBucket(resilience.LeakyBucketConfig{Rate: 1e8})},
		{"FixedWindow", resilience.NewFixedWindow(resilience.WindowConfig{Limit: 1e8})},
		{"SlidingLog", resilience.NewSlidingLog(resilience.WindowConfig{Limit: 1000, Window: time.Millisecond})},
		{"SlidingWindow", resilience.NewSlidingWindow(resilience.WindowConfig{Limit: 1e8})},
	}
	for _, tt := range limiters {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tt.l.Allow()
			}
		})
		b.Run(tt.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					tt.l.Allow()
				}
			})
		})
	}
}

func BenchmarkKeyedAllow(b *testing.B) {
	k := resilience.NewKeyed(resilience.KeyedConfig{MaxKeys: 10_000}, func(string) resilience.Limiter {
		return resilience.NewTokenBucket(resilience.TokenBucketConfig{Rate: 1e8, Burst: 1000})
	})
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			k.Allow(keys[i&1023])
			i++
		}
	})
}

func BenchmarkBreaker(b *testing.B) {
	ctx := context.Background()
	ok := func(context.Context) error { return nil }
	b.Run("Acquire-Record", func(b *testing.B) {
		br := resilience.NewBreaker(resilience.BreakerConfig{})
		b.ReportAllocs()
		for b.Loop() {
			p, err := br.Acquire()
			if err == nil {
				p.Record(nil)
			}
		}
	})
	b.Run("Do", func(b *testing.B) {
		br := resilience.NewBreaker(resilience.BreakerConfig{})
		b.ReportAllocs()
		for b.Loop() {
			br.Do(ctx, ok)
		}
	})
	b.Run("Do/slow-call-tracking", func(b *testing.B) {
		br := resilience.NewBreaker(resilience.BreakerConfig{SlowCallDuration: time.Second})
		b.ReportAllocs()
		for b.Loop() {
			br.Do(ctx, ok)
		}
	})
	b.Run("Do/time-window", func(b *testing.B) {
		br := resilience.NewBreaker(resilience.BreakerConfig{Window: resilience.TimeWindow})
		b.ReportAllocs()
		for b.Loop() {
			br.Do(ctx, ok)
		}
	})
	b.Run("Do/open", func(b *testing.B) {
		br := resilience.NewBreaker(resilience.BreakerConfig{})
		br.ForceOpen()
		b.ReportAllocs()
		for b.Loop() {
			br.Do(ctx, ok)
		}
	})
	b.Run("Do/parallel", func(b *testing.B) {
		br := resilience.NewBreaker(resilience.BreakerConfig{})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				br.Do(ctx, ok)
			}
		})
	})
}

func BenchmarkAdaptive(b *testing.B) {
	a := resilience.NewAdaptive(resilience.AdaptiveConfig{InitialLimit: 1000, MaxLimit: 1000})
	b.Run("Acquire-Success", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if t, ok := a.Acquire(resilience.Normal); ok {
				t.Success()
			}
		}
	})
	b.Run("Acquire-Success/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if t, ok := a.Acquire(resilience.Normal); ok {
					t.Success()
				}
			}
		})
	})
}

// BenchmarkFirstTimeKeys measures a per-buyer rate limit in a flash sale,
// where nearly every request is a buyer never seen before: each Allow is
// for a new user id, with room for all of them (MaxKeys 1<<20, as the
// HTTP guards use). "Keyed" is a Keyed of TokenBucket with the user id
// formatted per call, as the guards did; "KeyedBuckets" takes the id as
// is. heap-bytes/key is the memory each key keeps.
//
//	go test -run '^$' -bench FirstTimeKeys -benchmem -benchtime 100000x ./resilience
func BenchmarkFirstTimeKeys(b *testing.B) {
	const maxKeys = 1 << 20
	b.Run("Keyed", func(b *testing.B) {
		k := resilience.NewKeyed(resilience.KeyedConfig{MaxKeys: maxKeys}, func(string) resilience.Limiter {
			return resilience.NewTokenBucket(resilience.TokenBucketConfig{Rate: 5, Burst: 10})
		})
		perKey(b, func(user int64) bool { return k.Allow(strconv.FormatInt(user, 10)) })
		runtime.KeepAlive(k)
	})
	b.Run("KeyedBuckets", func(b *testing.B) {
		k := resilience.NewKeyedBuckets(resilience.KeyedBucketsConfig{Rate: 5, Burst: 10, MaxKeys: maxKeys})
		perKey(b, func(user int64) bool { return k.Allow(uint64(user)) })
		runtime.KeepAlive(k)
	})
	// A flash sale's pace: 30,000 new buyers a second on the clock (a
	// fake one, moved on by each call), at the guards' default per-buyer
	// limit (20/s, burst 40): a bucket is full again 50 ms after its
	// buyer's one request.
	b.Run("KeyedBuckets/30k-per-s", func(b *testing.B) {
		var now time.Time
		k := resilience.NewKeyedBuckets(resilience.KeyedBucketsConfig{Rate: 20, Burst: 40, MaxKeys: maxKeys, Now: func() time.Time { return now }})
		perKey(b, func(user int64) bool {
			now = now.Add(time.Second / 30_000)
			return k.Allow(uint64(user))
		})
		runtime.KeepAlive(k)
	})
}

// perKey calls allow once for each of b.N new user ids and reports the
// heap the limiter kept per key, and the process's CPU time per call
// (cpu-ns/op: on a shared machine the wall clock measures the neighbours).
func perKey(b *testing.B, allow func(user int64) bool) {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	for i := range b.N {
		if !allow(int64(1_000_000 + i)) {
			b.Fatal("a new key was refused")
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(b.N), "heap-bytes/key")
}

// BenchmarkKeyedBucketsAllow is BenchmarkKeyedAllow for KeyedBuckets: known
// keys, from all Ps.
func BenchmarkKeyedBucketsAllow(b *testing.B) {
	k := resilience.NewKeyedBuckets(resilience.KeyedBucketsConfig{Rate: 1e8, Burst: 1000, MaxKeys: 10_000})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := uint64(0)
		for pb.Next() {
			k.Allow(i & 1023)
			i++
		}
	})
}
