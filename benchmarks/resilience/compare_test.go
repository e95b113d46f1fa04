package benchmarks

import (
	"context"
	"testing"

	"github.com/failsafe-go/failsafe-go"
	fscircuitbreaker "github.com/failsafe-go/failsafe-go/circuitbreaker"
	fsratelimiter "github.com/failsafe-go/failsafe-go/ratelimiter"
	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"

	"github.com/spikehq/spike/resilience"
)

// run benchmarks op serially and in parallel (GOMAXPROCS goroutines).
func run(b *testing.B, op func()) {
	b.Run("mode=serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			op()
		}
	})
	b.Run("mode=parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				op()
			}
		})
	})
}

// The rate is high enough that every call is allowed: we measure the cost of
// the admission decision, not of rejections.
const (
	benchRate  = 1e9 - 1
	benchBurst = 1 << 20
)

func BenchmarkRateLimiterAllow(b *testing.B) {
	b.Run("impl=spike", func(b *testing.B) {
		l := resilience.NewTokenBucket(resilience.TokenBucketConfig{Rate: benchRate, Burst: benchBurst})
		run(b, func() { l.Allow() })
	})
	b.Run("impl=x-time-rate", func(b *testing.B) {
		l := rate.NewLimiter(rate.Limit(benchRate), benchBurst)
		run(b, func() { l.Allow() })
	})
	b.Run("impl=failsafe", func(b *testing.B) {
		l := fsratelimiter.NewBursty[any](benchBurst, 1e6) // 1<<20 per ms
		run(b, func() { l.TryAcquirePermit() })
	})
}

// BenchmarkRateLimiterReject measures a limiter that is out of tokens, the
// path taken by excess load during a flash sale.
func BenchmarkRateLimiterReject(b *testing.B) {
	b.Run("impl=spike", func(b *testing.B) {
		l := resilience.NewTokenBucket(resilience.TokenBucketConfig{Rate: 1e-3, Burst: 1})
		l.Allow()
		run(b, func() { l.Allow() })
	})
	b.Run("impl=x-time-rate", func(b *testing.B) {
		l := rate.NewLimiter(1e-3, 1)
		l.Allow()
		run(b, func() { l.Allow() })
	})
}

func BenchmarkBreakerSuccess(b *testing.B) {
	ctx := context.Background()
	ok := func(context.Context) error { return nil }
	b.Run("impl=spike-acquire", func(b *testing.B) {
		br := resilience.NewBreaker(resilience.BreakerConfig{})
		run(b, func() {
			if p, err := br.Acquire(); err == nil {
				p.Record(nil)
			}
		})
	})
	b.Run("impl=spike-do", func(b *testing.B) {
		br := resilience.NewBreaker(resilience.BreakerConfig{})
		run(b, func() { br.Do(ctx, ok) })
	})
	b.Run("impl=gobreaker-execute", func(b *testing.B) {
		br := gobreaker.NewCircuitBreaker[any](gobreaker.Settings{})
		run(b, func() { br.Execute(func() (any, error) { return nil, nil }) })
	})
	b.Run("impl=gobreaker-twostep", func(b *testing.B) {
		br := gobreaker.NewTwoStepCircuitBreaker[any](gobreaker.Settings{})
		run(b, func() {
			if done, err := br.Allow(); err == nil {
				done(nil)
			}
		})
	})
	b.Run("impl=failsafe-permit", func(b *testing.B) {
		br := fscircuitbreaker.NewWithDefaults[any]()
		run(b, func() {
			if br.TryAcquirePermit() {
				br.RecordSuccess()
			}
		})
	})
	b.Run("impl=failsafe-run", func(b *testing.B) {
		br := fscircuitbreaker.NewWithDefaults[any]()
		exec := failsafe.With[any](br)
		run(b, func() { exec.Run(func() error { return nil }) })
	})
}

// BenchmarkBreakerOpen measures rejection by an open breaker: the fail-fast
// path while a dependency is down.
func BenchmarkBreakerOpen(b *testing.B) {
	b.Run("impl=spike-acquire", func(b *testing.B) {
		br := resilience.NewBreaker(resilience.BreakerConfig{MinimumCalls: 1})
		if p, err := br.Acquire(); err == nil {
			p.Record(context.DeadlineExceeded) // trips: 1 of 1 calls failed
		}
		run(b, func() {
			if p, err := br.Acquire(); err == nil {
				p.Record(nil)
			}
		})
	})
	b.Run("impl=gobreaker-twostep", func(b *testing.B) {
		br := gobreaker.NewTwoStepCircuitBreaker[any](gobreaker.Settings{})
		for range 6 { // default ReadyToTrip: more than 5 consecutive failures
			if done, err := br.Allow(); err == nil {
				done(context.DeadlineExceeded)
			}
		}
		run(b, func() {
			if done, err := br.Allow(); err == nil {
				done(nil)
			}
		})
	})
	b.Run("impl=failsafe-permit", func(b *testing.B) {
		br := fscircuitbreaker.NewWithDefaults[any]()
		br.Open()
		run(b, func() {
			if br.TryAcquirePermit() {
				br.RecordSuccess()
			}
		})
	})
}
