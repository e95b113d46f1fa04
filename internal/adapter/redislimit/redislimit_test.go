package redislimit_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/spikehq/spike/internal/adapter/redislimit"
	"github.com/spikehq/spike/resilience"
)

// algCase is one algorithm configured so that a fresh key allows exactly
// burst events, and no more until horizon has passed. Redis time cannot be
// faked, so assertions are counts within one horizon (skipped if the
// machine was too slow to finish the burst within it) and "allowed again"
// with generous polling.
type algCase struct {
	name    string
	cfg     redislimit.Config
	burst   int
	horizon time.Duration
}

var algCases = []algCase{
	{"token_bucket", redislimit.Config{Algorithm: redislimit.TokenBucket, Rate: 1, Burst: 5}, 5, time.Second},
	{"leaky_bucket", redislimit.Config{Algorithm: redislimit.LeakyBucket, Rate: 2}, 1, 500 * time.Millisecond},
	{"fixed_window", redislimit.Config{Algorithm: redislimit.FixedWindow, Limit: 5, Window: 400 * time.Millisecond}, 5, 400 * time.Millisecond},
	{"sliding_window", redislimit.Config{Algorithm: redislimit.SlidingWindow, Limit: 5, Window: 400 * time.Millisecond}, 5, 400 * time.Millisecond},
	{"sliding_log", redislimit.Config{Algorithm: redislimit.SlidingLog, Limit: 5, Window: 400 * time.Millisecond}, 5, 400 * time.Millisecond},
}

func TestWindowBoundaries(t *testing.T) {
	client := mustShared(t)
	for _, tc := range algCases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Name = randomName(t)
			// The default 50 ms budget is for production; a loaded CI
			// machine running -race can miss it, which is not what this
			// test is about.
			cfg.Timeout = 2 * time.Second
			l := redislimit.New(client, cfg)
			ctx := context.Background()
			const key = "buyer-1"

			start := time.Now()
			allowed := 0
			var lastRetry time.Duration
			for range 3 * tc.burst {
				ok, retry, err := l.AllowN(ctx, key, 1)
				if err != nil {
					t.Fatalf("AllowN: %v", err)
				}
				if ok {
					allowed++
				} else {
					lastRetry = retry
				}
			}
			if elapsed := time.Since(start); elapsed < tc.horizon/2 {
				if allowed != tc.burst {
					t.Errorf("allowed %d of %d within %v, want %d", allowed, 3*tc.burst, elapsed, tc.burst)
				}
				if lastRetry <= 0 || lastRetry > 2*tc.horizon {
					t.Errorf("retryAfter = %v, want in (0, %v]", lastRetry, 2*tc.horizon)
				}
				d, err := l.Delay(ctx, key)
				if err != nil || d <= 0 {
					t.Errorf("Delay() = %v, %v; want > 0", d, err)
				}
			} else {
				t.Logf("burst took %v, longer than half the window: count not checked", elapsed)
			}

			// Every key the limiter wrote expires, once its state no longer
			// matters: a full bucket refill or two windows.
			maxTTL := 2 * tc.horizon
			if tc.cfg.Algorithm == redislimit.TokenBucket {
				maxTTL = time.Duration(float64(tc.cfg.Burst) / tc.cfg.Rate * float64(time.Second))
			}
			pttl, err := client.Do(ctx, client.B().Pttl().Key(l.Key(key)).Build()).AsInt64()
			if err != nil || pttl <= 0 || pttl > maxTTL.Milliseconds()+10 {
				t.Errorf("PTTL %s = %d, %v; want in (0, %v]", l.Key(key), pttl, err, maxTTL)
			}
			if tc.cfg.Algorithm == redislimit.SlidingLog {
				n, _ := client.Do(ctx, client.B().Zcard().Key(l.Key(key)).Build()).AsInt64()
				if n > int64(tc.cfg.Limit) {
					t.Errorf("ZCARD = %d, want ≤ %d", n, tc.cfg.Limit)
				}
			}

			// Over the capacity: never.
			// Over the capacity: never (the pacer has no capacity: n events
			// just take n slots).
			if tc.cfg.Algorithm != redislimit.LeakyBucket {
				if ok, retry, _ := l.AllowN(ctx, "other", tc.burst+1); ok || retry >= 0 {
					t.Errorf("AllowN(burst+1) = %v, %v; want false, negative", ok, retry)
				}
			}

			eventually(t, "allowed again after the window", func() bool {
				ok, _ := l.Allow(ctx, key)
				return ok
			})
			if s := l.Stats(); s.Fallbacks != 0 || s.RedisErrors != 0 {
				t.Errorf("Stats() = %+v, want no fallbacks or errors", s)
			}
		})
	}
}

// TestShared checks that two clients (two instances) share one limit: the
// sum of what they allow is at most the limit.
func TestShared(t *testing.T) {
	addr := mustRedisAddr(t)
	c1, c2 := newClient(t, addr), newClient(t, addr)
	for _, tc := range algCases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Name = randomName(t)
			cfg.Instances = 2
			l1, l2 := redislimit.New(c1, cfg), redislimit.New(c2, cfg)
			var allowed atomic.Int64
			var wg sync.WaitGroup
			start := time.Now()
			for _, l := range []*redislimit.Limiter{l1, l2, l1, l2} {
				wg.Go(func() {
					for range 2 * tc.burst {
						if ok, err := l.Allow(context.Background(), "sale-1"); err != nil {
							t.Errorf("Allow: %v", err)
						} else if ok {
							allowed.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if elapsed := time.Since(start); elapsed >= tc.horizon/2 {
				t.Skipf("attempts took %v, longer than half the window", elapsed)
			}
			if got := allowed.Load(); got != int64(tc.burst) {
				t.Errorf("allowed %d across two clients, want %d", got, tc.burst)
			}
		})
	}
}

// TestFallback stops its own Redis and checks that decisions go local at
// the configured limit divided by Instances, that the breaker opens, and
// that Redis is used again once it is back.
func TestFallback(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test: stops private Redis servers")
	}
	for _, tc := range []struct {
		name  string
		cfg   redislimit.Config
		local int
	}{
		{"fixed_window", redislimit.Config{Algorithm: redislimit.FixedWindow, Limit: 40, Window: time.Minute}, 10},
		{"sliding_log", redislimit.Config{Algorithm: redislimit.SlidingLog, Limit: 40, Window: time.Minute}, 10},
		{"token_bucket", redislimit.Config{Algorithm: redislimit.TokenBucket, Rate: 0.01, Burst: 40}, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startRedis(t)
			client := newClient(t, srv.Addr())
			cfg := tc.cfg
			cfg.Name = "fb"
			cfg.Instances = 4
			cfg.Breaker = resilience.BreakerConfig{OpenTimeout: 200 * time.Millisecond}
			l := redislimit.New(client, cfg)
			ctx := context.Background()
			if ok, err := l.Allow(ctx, "warm"); !ok || err != nil {
				t.Fatalf("Allow with Redis up = %v, %v", ok, err)
			}

			srv.Kill()
			allowed := 0
			for range 3 * tc.local {
				ok, err := l.Allow(ctx, "buyer")
				if err != nil {
					t.Fatalf("Allow with Redis down: %v", err)
				}
				if ok {
					allowed++
				}
			}
			if allowed != tc.local {
				t.Errorf("allowed %d locally, want %d (limit/instances)", allowed, tc.local)
			}
			s := l.Stats()
			// The warm-up call counts too if a loaded machine made it miss
			// its Redis budget.
			if s.Fallbacks < uint64(3*tc.local) || s.Fallbacks > uint64(3*tc.local+1) || s.RedisErrors == 0 {
				t.Errorf("Stats() = %+v, want %d fallbacks and some Redis errors", s, 3*tc.local)
			}
			if s.Breaker != resilience.Open {
				t.Errorf("breaker %v, want open", s.Breaker)
			}
			if ok, retry, _ := l.AllowN(ctx, "buyer", 1); ok || retry <= 0 {
				t.Errorf("local AllowN = %v, %v; want false with a retry delay", ok, retry)
			}

			srv.Start()
			eventually(t, "breaker closed after Redis is back", func() bool {
				_, _ = l.Allow(ctx, "probe")
				return l.Breaker().State() == resilience.Closed
			})
			before := l.Stats()
			if ok, err := l.Allow(ctx, "again"); !ok || err != nil {
				t.Fatalf("Allow with Redis back = %v, %v", ok, err)
			}
			if after := l.Stats(); after.Fallbacks != before.Fallbacks || after.RedisCalls == before.RedisCalls {
				t.Errorf("after recovery Stats() = %+v, before %+v: want a Redis call, no fallback", after, before)
			}
		})
	}
}

func TestDisableFallback(t *testing.T) {
	srv := startRedis(t)
	client := newClient(t, srv.Addr())
	l := redislimit.New(client, redislimit.Config{Name: "nf", Rate: 10, Burst: 10, DisableFallback: true})
	srv.Kill()
	ok, err := l.Allow(context.Background(), "k")
	if ok || err == nil {
		t.Fatalf("Allow with Redis down and no fallback = %v, %v; want false, error", ok, err)
	}
	if l.For("k").Allow() {
		t.Error("Bound.Allow with Redis down and no fallback = true, want false")
	}
}

// TestClusterKeys checks the key layout on a one-node Redis Cluster: each
// key is in the slot of its hash tag "{rl:<name>:<key>}" (so whatever a
// call touches is in one slot), different limiter keys spread over slots,
// and the scripts run in cluster mode.
func TestClusterKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a private Redis Cluster node")
	}
	srv := startRedis(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	admin := newClient(t, srv.Addr())
	ctx := context.Background()
	if err := admin.Do(ctx, admin.B().ClusterAddslotsrange().StartSlotEndSlot().StartSlotEndSlot(0, 16383).Build()).Error(); err != nil {
		t.Fatalf("CLUSTER ADDSLOTSRANGE: %v", err)
	}
	eventually(t, "cluster_state:ok", func() bool {
		info, _ := admin.Do(ctx, admin.B().ClusterInfo().Build()).ToString()
		return strings.Contains(info, "cluster_state:ok")
	})
	client := newClient(t, srv.Addr())
	if _, ok := client.Nodes()[srv.Addr()]; !ok || client.Mode() != rueidis.ClientModeCluster {
		t.Fatalf("client mode %v, want cluster", client.Mode())
	}
	keyslot := func(k string) int64 {
		n, err := client.Do(ctx, client.B().ClusterKeyslot().Key(k).Build()).AsInt64()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %s: %v", k, err)
		}
		return n
	}
	slots := map[int64]bool{}
	for _, tc := range algCases {
		cfg := tc.cfg
		cfg.Name = "buyer"
		l := redislimit.New(client, cfg)
		for i, key := range []string{"u1", "u2", "203.0.113.7", "sale:S-1", "odd}key{", "{x}", ""} {
			k := l.Key(key)
			tag := "{rl:buyer:" + key + "}"
			if got, want := keyslot(k), keyslot(tag); got != want {
				t.Errorf("%s: slot(%q) = %d, want slot(%q) = %d", tc.name, k, got, tag, want)
			}
			cmd := client.B().Get().Key(k).Build()
			if got, want := int64(cmd.Slot()), keyslot(k); got != want {
				t.Errorf("rueidis slot(%q) = %d, CLUSTER KEYSLOT = %d", k, got, want)
			}
			slots[keyslot(k)] = true
			if ok, err := l.Allow(ctx, key); err != nil || !ok {
				t.Errorf("%s: Allow(%q) on cluster = %v, %v (key %d)", tc.name, key, ok, err, i)
			}
		}
		if s := l.Stats(); s.Fallbacks != 0 {
			t.Errorf("%s: %d fallbacks on cluster", tc.name, s.Fallbacks)
		}
	}
	if len(slots) < 4 {
		t.Errorf("limiter keys fell in %d slots, want them spread", len(slots))
	}
}

// TestSetLimitConcurrent changes limits while other goroutines decide (run
// with -race) and checks that a new limit applies to the next call.
func TestSetLimitConcurrent(t *testing.T) {
	client := mustShared(t)
	fixed := redislimit.New(client, redislimit.Config{Name: randomName(t), Algorithm: redislimit.FixedWindow, Limit: 100, Window: 2 * time.Second})
	bucket := redislimit.New(client, redislimit.Config{Name: randomName(t), Rate: 100, Burst: 100})
	ctx := context.Background()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				key := "k" + strconv.Itoa(i)
				_, _ = fixed.Allow(ctx, key)
				_, _ = bucket.Allow(ctx, key)
				_ = bucket.For(key).Delay()
			}
		})
	}
	for i := range 20 {
		fixed.SetLimit(50 + i)
		bucket.SetRate(float64(50+i), 50+i)
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	fixed.SetLimit(2)
	allowed := 0
	for range 5 {
		if ok, _ := fixed.Allow(ctx, "fresh"); ok {
			allowed++
		}
	}
	if allowed != 2 {
		t.Errorf("after SetLimit(2) allowed %d, want 2", allowed)
	}
	bucket.SetRate(0, 1)
	if ok, retry, _ := bucket.AllowN(ctx, "fresh", 1); ok || retry >= 0 {
		t.Errorf("after SetRate(0) AllowN = %v, %v; want false, never", ok, retry)
	}
}

// TestBound checks the resilience.Limiter adapter, including Wait.
func TestBound(t *testing.T) {
	client := mustShared(t)
	ctx := context.Background()
	t.Run("token_bucket", func(t *testing.T) {
		var lim resilience.Limiter = redislimit.New(client, redislimit.Config{Name: randomName(t), Rate: 20, Burst: 1}).For("all")
		if !lim.Allow() {
			t.Fatal("first Allow = false")
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := lim.Wait(wctx); err != nil {
			t.Fatalf("Wait: %v", err)
		}
		// A token every 10 s: no pause of a loaded machine between the
		// Allow that empties the bucket and the Wait refills it.
		var slow resilience.Limiter = redislimit.New(client, redislimit.Config{Name: randomName(t), Rate: 0.1, Burst: 1}).For("all")
		if !slow.Allow() {
			t.Fatal("first Allow of the slow bucket = false")
		}
		short, cancel2 := context.WithTimeout(ctx, time.Millisecond)
		defer cancel2()
		if err := slow.Wait(short); !errors.Is(err, resilience.ErrRateLimited) && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Wait past deadline = %v, want ErrRateLimited", err)
		}
	})
	t.Run("leaky_bucket", func(t *testing.T) {
		l := redislimit.New(client, redislimit.Config{Name: randomName(t), Algorithm: redislimit.LeakyBucket, Rate: 20, Burst: 2})
		lim := l.For("all")
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		// Book the slot now and two queued; a fourth finds the queue full
		// (as long as the three bookings took less than a slot, 50ms).
		var errs [4]error
		start := time.Now()
		var wg sync.WaitGroup
		for i := range 3 {
			wg.Go(func() { errs[i] = lim.Wait(wctx) })
		}
		wg.Wait()
		for i, err := range errs[:3] {
			if err != nil {
				t.Errorf("Wait %d: %v", i, err)
			}
		}
		if time.Since(start) < 50*time.Millisecond {
			t.Errorf("three paced Waits took %v, want ≥ 2 slots (100ms)", time.Since(start))
		}
		for range 3 {
			_ = lim.Wait(wctx)
		}
		_ = l.Stats()
	})
}

// BenchmarkAllow measures parallel Allow against SPIKE_TEST_REDIS_ADDR and
// reports the requests sent to Redis per decision.
func BenchmarkAllow(b *testing.B) {
	client := &countingClient{Client: mustShared(b)}
	for _, tc := range algCases {
		b.Run(tc.name, func(b *testing.B) {
			cfg := tc.cfg
			cfg.Name = randomName(b)
			cfg.Rate, cfg.Burst, cfg.Limit = 1e5, 1000, 1000
			l := redislimit.New(client, cfg)
			var seq atomic.Int64
			client.n.Store(0)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				i := seq.Add(1)
				for pb.Next() {
					i++
					if _, err := l.Allow(ctx, fmt.Sprintf("buyer-%d", i%1000)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(client.n.Load())/float64(b.N), "roundtrips/op")
			if s := l.Stats(); s.Fallbacks > 0 {
				b.ReportMetric(float64(s.Fallbacks)/float64(b.N), "fallbacks/op")
			}
		})
	}
}
