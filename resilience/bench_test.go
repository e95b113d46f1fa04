package resilience_test

import (
	"context"
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
