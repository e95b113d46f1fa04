package notify_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/spikehq/spike/internal/domain/notify"
	"github.com/spikehq/spike/resilience"
)

// TestMain fails the package if any goroutine outlives the tests: every
// notifier's workers belong to its Run, which each test waits for.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start runs n's workers for the rest of the test, as the test's own:
// Close (or the end of the test) stops them, and the test waits for them.
func start(t *testing.T, n *notify.Notifier) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- n.Run(t.Context()) }()
	t.Cleanup(func() {
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// fakeProvider records calls and answers with fn (nil: success).
type fakeProvider struct {
	mu    sync.Mutex
	calls []notify.Notification
	fn    func(ctx context.Context, call int, n notify.Notification) error
}

func (p *fakeProvider) Send(ctx context.Context, n notify.Notification) error {
	p.mu.Lock()
	p.calls = append(p.calls, n)
	call, fn := len(p.calls), p.fn
	p.mu.Unlock()
	if fn == nil {
		return nil
	}
	return fn(ctx, call, n)
}

func (p *fakeProvider) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.calls)
}

// gate blocks sends until it is opened (or their context ends).
type gate chan struct{}

func (g gate) wait(ctx context.Context) error {
	select {
	case <-g:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func orderCreated(i int) notify.Notification {
	return notify.Notification{Kind: notify.KindOrderCreated, OrderID: fmt.Sprintf("o%d", i), UserID: int64(100 + i)}
}

// closeNow closes n; sends still in flight are cancelled.
func closeNow(n *notify.Notifier) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n.Close(ctx)
}

func TestNotifierSends(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakeProvider{}
		n := notify.New(p, notify.Config{})
		start(t, n)
		for i := range 3 {
			if err := n.Notify(orderCreated(i)); err != nil {
				t.Fatalf("Notify: %v", err)
			}
		}
		n.Close(context.Background()) // waits for the queue to drain
		if s := n.Stats(); s.Sent != 3 || s.Failed != 0 || s.Queued != 0 {
			t.Errorf("stats %v, want 3 sent", s)
		}
		got := map[string]notify.Notification{}
		for _, c := range p.calls {
			got[c.ID] = c
		}
		c, ok := got["order_created:o1"]
		if len(got) != 3 || !ok || c.V != notify.Version || c.OrderID != "o1" || c.UserID != 101 {
			t.Errorf("provider got %+v", p.calls)
		}
		if err := n.Notify(orderCreated(9)); !errors.Is(err, resilience.ErrClosed) {
			t.Errorf("Notify after Close: %v, want ErrClosed", err)
		}
		if s := n.Stats(); s.DroppedFor(notify.Shutdown) != 1 {
			t.Errorf("stats %v, want 1 dropped at shutdown", s)
		}
	})
}

func TestNotifierSwitchOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var on atomic.Bool
		g := make(gate)
		p := &fakeProvider{fn: func(ctx context.Context, _ int, _ notify.Notification) error { return g.wait(ctx) }}
		n := notify.New(p, notify.Config{Workers: 1, Enabled: on.Load})
		start(t, n)
		defer closeNow(n)

		// Off: nothing is queued or sent, and each is counted.
		for i := range 5 {
			if err := n.Notify(orderCreated(i)); !errors.Is(err, notify.ErrSwitchedOff) {
				t.Fatalf("Notify with the switch off: %v", err)
			}
		}
		synctest.Wait()
		if s := n.Stats(); p.count() != 0 || s.DroppedFor(notify.SwitchOff) != 5 || s.Sent != 0 {
			t.Fatalf("switch off: %d sends, stats %v", p.count(), s)
		}

		// Switched off while queued: skipped when a worker gets to it.
		on.Store(true)
		n.Notify(orderCreated(10)) // taken by the worker, which blocks in the provider
		synctest.Wait()
		n.Notify(orderCreated(11)) // waits in the queue
		on.Store(false)
		close(g)
		synctest.Wait()
		if s := n.Stats(); p.count() != 1 || s.Sent != 1 || s.DroppedFor(notify.SwitchOff) != 6 {
			t.Errorf("switched off while queued: %d sends, stats %v", p.count(), s)
		}
	})
}

func TestNotifierPoolFullDropsWithoutBlocking(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := make(gate)
		p := &fakeProvider{fn: func(ctx context.Context, _ int, _ notify.Notification) error { return g.wait(ctx) }}
		n := notify.New(p, notify.Config{Workers: 1, Queue: 2})
		start(t, n)
		defer closeNow(n)

		n.Notify(orderCreated(0))
		synctest.Wait() // the worker holds it, blocked in the provider
		var errs []error
		for i := 1; i <= 5; i++ {
			// A Notify that blocked would deadlock the bubble: synctest fails the test.
			errs = append(errs, n.Notify(orderCreated(i)))
		}
		for i, err := range errs {
			want := error(nil)
			if i >= 2 {
				want = resilience.ErrBulkheadFull
			}
			if !errors.Is(err, want) {
				t.Errorf("Notify #%d: %v, want %v", i+1, err, want)
			}
		}
		if s := n.Stats(); s.DroppedFor(notify.PoolFull) != 3 || s.Queued != 2 {
			t.Errorf("stats %v, want 3 dropped (pool_full) and 2 queued", s)
		}
		close(g)
		synctest.Wait()
		if s := n.Stats(); s.Sent != 3 || p.count() != 3 {
			t.Errorf("after release: %d sends, stats %v, want 3 sent", p.count(), s)
		}
	})
}

func TestNotifierBreakerOpensAndFailsFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var healthy atomic.Bool
		p := &fakeProvider{fn: func(context.Context, int, notify.Notification) error {
			if healthy.Load() {
				return nil
			}
			return errors.New("provider down") // final: not retried
		}}
		n := notify.New(p, notify.Config{
			Workers: 1,
			Breaker: resilience.BreakerConfig{WindowSize: 10, MinimumCalls: 10, OpenTimeout: time.Minute, HalfOpenCalls: 2},
		})
		start(t, n)
		defer closeNow(n)

		for i := range 10 {
			n.Notify(orderCreated(i))
		}
		synctest.Wait()
		if s := n.Stats(); s.Failed != 10 || s.Breaker != resilience.Open || p.count() != 10 {
			t.Fatalf("after 10 failures: %d sends, stats %v, want the breaker open", p.count(), s)
		}
		// Open: refused without calling the provider.
		for i := range 20 {
			n.Notify(orderCreated(100 + i))
		}
		synctest.Wait()
		if s := n.Stats(); p.count() != 10 || s.DroppedFor(notify.BreakerOpen) != 20 {
			t.Fatalf("breaker open: %d sends, stats %v, want 10 sends and 20 dropped (breaker_open)", p.count(), s)
		}
		// After OpenTimeout (fake time) trials go through and close it.
		healthy.Store(true)
		time.Sleep(time.Minute)
		for i := range 3 {
			n.Notify(orderCreated(200 + i))
		}
		synctest.Wait()
		if s := n.Stats(); s.Sent != 3 || s.Breaker != resilience.Closed {
			t.Errorf("after recovery: stats %v, want 3 sent and the breaker closed", s)
		}
	})
}

func TestNotifierRetries(t *testing.T) {
	down := errors.New("503")
	tests := []struct {
		name      string
		fn        func(ctx context.Context, call int) error
		wantCalls int
		wantSent  uint64
	}{
		{"retryable, then success", func(_ context.Context, call int) error {
			if call == 1 {
				return resilience.Retryable(down)
			}
			return nil
		}, 2, 1},
		{"final error is not retried", func(context.Context, int) error { return down }, 1, 0},
		{"retryable every time: attempts run out", func(context.Context, int) error { return resilience.Retryable(down) }, 3, 0},
		{"attempt timed out: retried", func(ctx context.Context, call int) error {
			if call == 1 {
				<-ctx.Done() // hangs until the per-attempt timeout
				return ctx.Err()
			}
			return nil
		}, 2, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := &fakeProvider{fn: func(ctx context.Context, call int, _ notify.Notification) error { return tt.fn(ctx, call) }}
				n := notify.New(p, notify.Config{Timeout: 2 * time.Second, Retry: resilience.RetryConfig{MaxAttempts: 3}})
				start(t, n)
				n.Notify(orderCreated(1))
				n.Close(context.Background())
				if s := n.Stats(); p.count() != tt.wantCalls || s.Sent != tt.wantSent || s.Sent+s.Failed != 1 {
					t.Errorf("%d calls, stats %v; want %d calls, %d sent", p.count(), s, tt.wantCalls, tt.wantSent)
				}
			})
		})
	}
}

func TestNotifierTimeoutBoundsEachAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var took []time.Duration
		p := &fakeProvider{fn: func(ctx context.Context, _ int, _ notify.Notification) error {
			start := time.Now()
			<-ctx.Done()
			mu.Lock()
			took = append(took, time.Since(start))
			mu.Unlock()
			return ctx.Err()
		}}
		n := notify.New(p, notify.Config{
			Timeout: 2 * time.Second,
			Retry:   resilience.RetryConfig{MaxAttempts: 2, Jitter: func(time.Duration) time.Duration { return 0 }},
		})
		start(t, n)
		n.Notify(orderCreated(1))
		n.Close(context.Background())
		// Fake time: each attempt ends exactly at its timeout.
		if s := n.Stats(); s.Failed != 1 || len(took) != 2 || took[0] != 2*time.Second || took[1] != 2*time.Second {
			t.Errorf("attempts took %v, stats %v; want 2 attempts of 2s and 1 failure", took, s)
		}
	})
}

func TestNotifierRetryBudgetBoundsRetriesInOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakeProvider{fn: func(context.Context, int, notify.Notification) error {
			return resilience.Retryable(errors.New("503"))
		}}
		budget := resilience.NewRetryBudget(resilience.RetryBudgetConfig{Ratio: 0.1, MinPerSecond: -1, Window: time.Minute})
		n := notify.New(p, notify.Config{
			Workers: 1,
			Queue:   1000,
			// The breaker stays closed here, to look at the budget alone.
			Breaker: resilience.BreakerConfig{WindowSize: 10_000, MinimumCalls: 10_000},
			Retry: resilience.RetryConfig{
				MaxAttempts: 3, Budget: budget,
				Jitter: func(time.Duration) time.Duration { return 0 },
			},
		})
		start(t, n)
		const sends = 500
		for i := range sends {
			if err := n.Notify(orderCreated(i)); err != nil {
				t.Fatal(err)
			}
		}
		n.Close(context.Background())
		s := n.Stats()
		// Without the budget: 500 × 3 = 1500 calls. With it: ≤ 10% retries.
		if s.Failed != sends || s.Retries > sends/10 || p.count() != sends+int(s.Retries) || s.Refused == 0 {
			t.Errorf("%d calls, stats %v (refused %d); want %d failures and at most %d retries",
				p.count(), s, s.Refused, sends, sends/10)
		}
	})
}

func TestNotifierCloseCancelsInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := make(gate) // never opened
		p := &fakeProvider{fn: func(ctx context.Context, _ int, _ notify.Notification) error { return g.wait(ctx) }}
		n := notify.New(p, notify.Config{Workers: 1, Timeout: time.Hour})
		start(t, n)
		for i := range 3 {
			n.Notify(orderCreated(i))
		}
		synctest.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		n.Close(ctx) // gives up after 1s (fake), cancels the send in flight
		if s := n.Stats(); s.DroppedFor(notify.Shutdown) != 3 || s.Sent != 0 || s.Failed != 0 || p.count() != 1 {
			t.Errorf("%d calls, stats %v; want 1 call and 3 dropped (shutdown)", p.count(), s)
		}
	})
}
