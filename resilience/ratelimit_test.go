package resilience_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike/resilience"
)

// step advances the clock by wait, then calls AllowN(n) and records the
// result.
type step struct {
	wait time.Duration
	n    int
	want bool
}

func runSteps(t *testing.T, clk *fakeClock, l resilience.Limiter, steps []step) {
	t.Helper()
	var want, got []string
	var at time.Duration
	for _, s := range steps {
		clk.Advance(s.wait)
		at += s.wait
		n := max(s.n, 1)
		want = append(want, fmt.Sprintf("t=%v n=%d %v", at, n, s.want))
		got = append(got, fmt.Sprintf("t=%v n=%d %v", at, n, l.AllowN(n)))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("AllowN() mismatch (-want +got):\n%s", diff)
	}
}

func TestLimiterWindows(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name  string
		new   func(now func() time.Time) resilience.Limiter
		steps []step
	}{
		{
			name: "token bucket refills at rate up to burst",
			new: func(now func() time.Time) resilience.Limiter {
				return resilience.NewTokenBucket(resilience.TokenBucketConfig{Rate: 10, Burst: 3, Now: now})
			},
			steps: []step{
				{0, 1, true}, {0, 1, true}, {0, 1, true}, {0, 1, false}, // burst spent
				{99 * ms, 1, false}, {1 * ms, 1, true}, {0, 1, false}, // one token per 100ms
				{10 * time.Second, 3, true}, {0, 1, false}, // refills to burst only
				{200 * ms, 3, false}, {100 * ms, 3, true}, // AllowN needs all n
				{time.Hour, 4, false}, // more than burst never fits
			},
		},
		{
			name: "leaky bucket paces evenly without burst",
			new: func(now func() time.Time) resilience.Limiter {
				return resilience.NewLeakyBucket(resilience.LeakyBucketConfig{Rate: 10, Now: now})
			},
			steps: []step{
				{0, 1, true}, {0, 1, false}, {50 * ms, 1, false}, {50 * ms, 1, true},
				{time.Second, 1, true}, {0, 1, false}, // idle time does not bank a burst
			},
		},
		{
			name: "fixed window resets at the boundary",
			new: func(now func() time.Time) resilience.Limiter {
				return resilience.NewFixedWindow(resilience.WindowConfig{Limit: 3, Window: time.Second, Now: now})
			},
			steps: []step{
				{0, 2, true}, {500 * ms, 1, true}, {0, 1, false},
				{499 * ms, 1, false}, // t=999ms: same window
				{1 * ms, 3, true},    // t=1s: new window
				{0, 1, false},
				{2500 * ms, 3, true}, // t=3.5s: window aligned to 3s
				{499 * ms, 1, false}, {1 * ms, 1, true},
			},
		},
		{
			name: "sliding log expires each event after exactly one window",
			new: func(now func() time.Time) resilience.Limiter {
				return resilience.NewSlidingLog(resilience.WindowConfig{Limit: 3, Window: time.Second, Now: now})
			},
			steps: []step{
				{0, 1, true}, {400 * ms, 1, true}, {400 * ms, 1, true}, {0, 1, false},
				{199 * ms, 1, false}, // t=999ms: event at 0 still inside
				{1 * ms, 1, true},    // t=1s: event at 0 left
				{0, 1, false},
				{400 * ms, 1, true}, // t=1.4s: 400ms event left; 800ms and 1s remain
				{0, 1, false},
				{400 * ms, 1, true}, // t=1.8s: 800ms event left
				{time.Hour, 4, false},
			},
		},
		{
			name: "sliding window weights the previous window",
			new: func(now func() time.Time) resilience.Limiter {
				return resilience.NewSlidingWindow(resilience.WindowConfig{Limit: 10, Window: time.Second, Now: now})
			},
			steps: []step{
				{0, 10, true}, {0, 1, false},
				{999 * ms, 1, false}, // still the first window
				{501 * ms, 5, true},  // t=1.5s: previous counts half (5)
				{0, 1, false},
				{250 * ms, 2, true}, // t=1.75s: 10*0.25 + 5 = 7.5, room for 2
				{0, 1, false},
				{1250 * ms, 10, true}, // t=3s: previous window (1s..2s) had 7, now fully out
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			runSteps(t, clk, tt.new(clk.Now), tt.steps)
		})
	}
}

func TestLimiterSetRate(t *testing.T) {
	clk := newFakeClock()
	tb := resilience.NewTokenBucket(resilience.TokenBucketConfig{Rate: 1, Burst: 1, Now: clk.Now})
	fw := resilience.NewFixedWindow(resilience.WindowConfig{Limit: 1, Now: clk.Now})
	sl := resilience.NewSlidingLog(resilience.WindowConfig{Limit: 1, Now: clk.Now})
	sw := resilience.NewSlidingWindow(resilience.WindowConfig{Limit: 1, Now: clk.Now})
	lb := resilience.NewLeakyBucket(resilience.LeakyBucketConfig{Rate: 1, Now: clk.Now})
	for _, l := range []resilience.Limiter{tb, fw, sl, sw, lb} {
		l.Allow()
	}
	tb.SetRate(1000, 5)
	fw.SetLimit(5)
	sl.SetLimit(5)
	sw.SetLimit(5)
	lb.SetRate(1000, 0)
	clk.Advance(5 * time.Millisecond)
	for name, l := range map[string]resilience.Limiter{"token": tb, "fixed": fw, "log": sl, "sliding": sw} {
		if !l.AllowN(4) {
			t.Errorf("%s: AllowN(4) after raising the limit = false, want true", name)
		}
		if l.AllowN(2) {
			t.Errorf("%s: AllowN(2) beyond the new limit = true, want false", name)
		}
	}
	if !lb.Allow() { // the slot 1s ahead at 1/s is 1ms ahead at 1000/s
		t.Errorf("leaky: Allow() after SetRate = false, want true")
	}
	tb.SetRate(0, 1)
	clk.Advance(time.Hour)
	if tb.Allow() {
		t.Errorf("token: Allow() at rate 0 = true, want false")
	}
}

func TestWaitFailsFastPastDeadline(t *testing.T) {
	tests := []struct {
		name       string
		newLimiter func() resilience.Limiter
		wait       time.Duration // until the second event may happen
	}{
		{"token", func() resilience.Limiter {
			return resilience.NewTokenBucket(resilience.TokenBucketConfig{Rate: 1, Burst: 1})
		}, time.Second},
		{"leaky", func() resilience.Limiter {
			return resilience.NewLeakyBucket(resilience.LeakyBucketConfig{Rate: 1, Queue: 10})
		}, time.Second},
		{"fixed", func() resilience.Limiter { return resilience.NewFixedWindow(resilience.WindowConfig{Limit: 1}) }, time.Second},
		{"log", func() resilience.Limiter { return resilience.NewSlidingLog(resilience.WindowConfig{Limit: 1}) }, time.Second},
		// The previous window's event weighs on the next until it ends.
		{"sliding", func() resilience.Limiter { return resilience.NewSlidingWindow(resilience.WindowConfig{Limit: 1}) }, 2 * time.Second},
	}
	for _, tt := range tests {
		newLimiter := tt.newLimiter
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := newLimiter()
				if !l.Allow() {
					t.Fatal("first Allow() = false")
				}
				start := time.Now()
				ctx, cancel := context.WithTimeout(t.Context(), tt.wait/2)
				defer cancel()
				err := l.Wait(ctx)
				if !errors.Is(err, resilience.ErrRateLimited) {
					t.Errorf("Wait() with a short deadline = %v, want ErrRateLimited", err)
				}
				if waited := time.Since(start); waited != 0 {
					t.Errorf("Wait() failed after %v, want at once", waited)
				}
				ctx2, cancel2 := context.WithTimeout(t.Context(), tt.wait*3/2)
				defer cancel2()
				if err := l.Wait(ctx2); err != nil {
					t.Errorf("Wait() with room before the deadline = %v, want nil", err)
				}
				if waited := time.Since(start); waited < tt.wait || waited > tt.wait+time.Millisecond {
					t.Errorf("Wait() returned after %v, want %v", waited, tt.wait)
				}
			})
		})
	}
}

func TestWaitIsFairAndPaced(t *testing.T) {
	limiters := map[string]func() resilience.Limiter{
		"token": func() resilience.Limiter {
			return resilience.NewTokenBucket(resilience.TokenBucketConfig{Rate: 10, Burst: 1})
		},
		"leaky": func() resilience.Limiter {
			return resilience.NewLeakyBucket(resilience.LeakyBucketConfig{Rate: 10, Queue: 10})
		},
	}
	for name, newLimiter := range limiters {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := newLimiter()
				l.Allow()
				start := time.Now()
				var mu sync.Mutex
				var got []string
				var wg sync.WaitGroup
				for i := range 5 {
					wg.Go(func() {
						if err := l.Wait(context.Background()); err != nil {
							t.Errorf("Wait() = %v", err)
						}
						mu.Lock()
						got = append(got, fmt.Sprintf("waiter %d at %v", i, time.Since(start)))
						mu.Unlock()
					})
					synctest.Wait() // waiter i is queued before waiter i+1 arrives
				}
				wg.Wait()
				var want []string
				for i := range 5 {
					want = append(want, fmt.Sprintf("waiter %d at %v", i, time.Duration(i+1)*100*time.Millisecond))
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("Wait() order mismatch (-want +got):\n%s", diff)
				}
			})
		})
	}
}

func TestWaitCancelReturnsReservation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tb := resilience.NewTokenBucket(resilience.TokenBucketConfig{Rate: 1, Burst: 1})
		tb.Allow()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- tb.Wait(ctx) }()
		synctest.Wait()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Wait() after cancel = %v, want context.Canceled", err)
		}
		time.Sleep(time.Second)
		if !tb.Allow() {
			t.Errorf("Allow() 1s after a cancelled Wait = false, want true (reservation returned)")
		}
	})
}

func TestLeakyBucketQueueFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := resilience.NewLeakyBucket(resilience.LeakyBucketConfig{Rate: 10, Queue: 2})
		lb.Allow()
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() { lb.Wait(context.Background()) })
		}
		synctest.Wait()
		if err := lb.Wait(context.Background()); !errors.Is(err, resilience.ErrRateLimited) {
			t.Errorf("Wait() with a full queue = %v, want ErrRateLimited", err)
		}
		wg.Wait()
	})
}

func TestKeyedMemoryBound(t *testing.T) {
	clk := newFakeClock()
	newBucket := func(string) resilience.Limiter {
		return resilience.NewTokenBucket(resilience.TokenBucketConfig{Rate: 1, Burst: 2, Now: clk.Now})
	}
	k := resilience.NewKeyed(resilience.KeyedConfig{MaxKeys: 64, Shards: 4}, newBucket)
	for i := range 10_000 {
		k.Allow(fmt.Sprintf("ip-%d", i))
		k.Allow("hot") // touched constantly, so never least recently used
		if n := k.Len(); n > 64 {
			t.Fatalf("Len() = %d after %d keys, want <= 64", n, i+1)
		}
	}
	if got := k.Evictions(); got < 10_000-64 {
		t.Errorf("Evictions() = %d, want >= %d", got, 10_000-64)
	}
	// "hot" used its burst of 2 on the first iteration and was never evicted,
	// so it is still limited.
	if k.Allow("hot") {
		t.Errorf("Allow(hot) = true, want false: hot key was evicted")
	}
}

func TestKeyedIsolatesKeys(t *testing.T) {
	clk := newFakeClock()
	k := resilience.NewKeyed(resilience.KeyedConfig{}, func(string) resilience.Limiter {
		return resilience.NewFixedWindow(resilience.WindowConfig{Limit: 3, Now: clk.Now})
	})
	got := map[string]int{}
	for range 100 {
		for _, key := range []string{"noisy", "noisy", "noisy", "alice", "bob"} {
			if k.Allow(key) {
				got[key]++
			}
		}
	}
	want := map[string]int{"noisy": 3, "alice": 3, "bob": 3}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("allowed per key mismatch (-want +got):\n%s", diff)
	}
}

// TestLimitersConcurrentExact checks that concurrent callers never get more
// than the limit: with a frozen clock exactly Limit events are allowed.
func TestLimitersConcurrentExact(t *testing.T) {
	clk := newFakeClock()
	limiters := map[string]resilience.Limiter{
		"token":   resilience.NewTokenBucket(resilience.TokenBucketConfig{Rate: 1, Burst: 100, Now: clk.Now}),
		"fixed":   resilience.NewFixedWindow(resilience.WindowConfig{Limit: 100, Now: clk.Now}),
		"log":     resilience.NewSlidingLog(resilience.WindowConfig{Limit: 100, Now: clk.Now}),
		"sliding": resilience.NewSlidingWindow(resilience.WindowConfig{Limit: 100, Now: clk.Now}),
		"keyed": resilience.NewKeyed(resilience.KeyedConfig{}, func(string) resilience.Limiter {
			return resilience.NewTokenBucket(resilience.TokenBucketConfig{Rate: 1, Burst: 100, Now: clk.Now})
		}).Limiter("sale-1"),
	}
	for name, l := range limiters {
		var allowed atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 1000 {
					if l.Allow() {
						allowed.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if got := allowed.Load(); got != 100 {
			t.Errorf("%s: %d allowed by 8 goroutines, want exactly 100", name, got)
		}
	}
}

func TestLimiterDelay(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name string
		new  func(now func() time.Time) resilience.Limiter
		want time.Duration // Delay() 300ms after the only allowed event
	}{
		{"token", func(now func() time.Time) resilience.Limiter {
			return resilience.NewTokenBucket(resilience.TokenBucketConfig{Rate: 1, Burst: 1, Now: now})
		}, 700 * ms},
		{"leaky", func(now func() time.Time) resilience.Limiter {
			return resilience.NewLeakyBucket(resilience.LeakyBucketConfig{Rate: 1, Now: now})
		}, 700 * ms},
		{"fixed", func(now func() time.Time) resilience.Limiter {
			return resilience.NewFixedWindow(resilience.WindowConfig{Limit: 1, Now: now})
		}, 700 * ms},
		{"log", func(now func() time.Time) resilience.Limiter {
			return resilience.NewSlidingLog(resilience.WindowConfig{Limit: 1, Now: now})
		}, 700 * ms},
		{"sliding", func(now func() time.Time) resilience.Limiter {
			return resilience.NewSlidingWindow(resilience.WindowConfig{Limit: 1, Now: now})
		}, 1700 * ms},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			l := tt.new(clk.Now)
			if d := l.Delay(); d != 0 {
				t.Errorf("Delay() before any event = %v, want 0", d)
			}
			l.Allow()
			clk.Advance(300 * ms)
			if d := l.Delay(); d != tt.want {
				t.Errorf("Delay() = %v, want %v", d, tt.want)
			}
			clk.Advance(tt.want - 1)
			if l.Allow() {
				t.Errorf("Allow() just before Delay() elapsed = true, want false")
			}
			clk.Advance(1)
			if !l.Allow() {
				t.Errorf("Allow() after Delay() = false, want true")
			}
		})
	}
}
