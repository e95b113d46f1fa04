package sqlitestore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/adapter/sqlitestore"
	"github.com/spikehq/spike/internal/domain/order"
)

// timedStore times every ExpireDue call of the sweep.
type timedStore struct {
	*sqlitestore.Store
	mu    sync.Mutex
	calls []time.Duration // of the calls that expired something
	empty int
	rows  int
}

func (s *timedStore) ExpireDue(ctx context.Context, now time.Time, limit int) ([]order.Order, error) {
	start := time.Now()
	out, err := s.Store.ExpireDue(ctx, now, limit)
	d := time.Since(start)
	s.mu.Lock()
	if len(out) > 0 {
		s.calls = append(s.calls, d)
	} else {
		s.empty++
	}
	s.rows += len(out)
	s.mu.Unlock()
	return out, err
}

// TestExpiryLag measures how late the real sweeper (order.Lifecycle.RunDeadlines
// every 500 ms over a real SQLite store) cancels unpaid orders whose payment
// deadlines fall at 10 000 per second for 5 s (50 000 orders). It reports
// the distribution of cancelled_at − payment_deadline (the sweep's clock
// when it expired the order), of the moment the transition was applied
// (after the commit; Notify) − payment_deadline, and the sweep's
// throughput (orders expired per second of time spent in ExpireDue). It
// asserts only that every order was expired: the figures depend on the
// machine, so it is skipped unless SPIKE_BENCH_EXPIRY=1.
//
//	SPIKE_BENCH_EXPIRY=1 go test -run TestExpiryLag -v -count 3 ./internal/adapter/sqlitestore
//
// SPIKE_EXPIRY_RATE and SPIKE_EXPIRY_SECS change the rate (default 10000/s)
// and the span (default 5 s).
func TestExpiryLag(t *testing.T) {
	if os.Getenv("SPIKE_BENCH_EXPIRY") != "1" {
		t.Skip("a measurement: set SPIKE_BENCH_EXPIRY=1 to run it")
	}
	rate, secs := 10_000, 5
	if v := os.Getenv("SPIKE_EXPIRY_RATE"); v != "" {
		fmt.Sscan(v, &rate)
	}
	if v := os.Getenv("SPIKE_EXPIRY_SECS"); v != "" {
		fmt.Sscan(v, &secs)
	}
	n := rate * secs
	step := time.Second / time.Duration(rate)
	ctx := context.Background()
	s, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "spike.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// Orders as the order workers persist them: created, deadline i×step
	// after base, in batches of 512. The sweep's clock is shifted below so
	// that the first deadline comes 1 s after the inserts end.
	base := time.Now().UTC().Truncate(time.Microsecond)
	deadlines := make(map[string]time.Time, n)
	batch := make([]order.Order, 0, 512)
	insStart := time.Now()
	for i := range n {
		id := fmt.Sprintf("lag-%08d", i)
		d := base.Add(time.Duration(i) * step)
		deadlines[id] = d
		batch = append(batch, order.Order{ID: id, SaleID: "bf", SKU: "phone", UserID: int64(1000 + i%200_000), Quantity: 1,
			PriceCents: 100, Status: order.Created, IdempotencyKey: id, CreatedAt: base.Add(-15 * time.Minute),
			PaymentDeadline: d})
		if len(batch) == cap(batch) || i == n-1 {
			if err := s.InsertOrders(ctx, batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	insDur := time.Since(insStart)
	offset := base.Sub(time.Now().Add(time.Second)) // sweep clock = real clock + offset
	now := func() time.Time { return time.Now().Add(offset) }

	ts := &timedStore{Store: s}
	var mu sync.Mutex
	recorded := make([]time.Duration, 0, n) // cancelled_at − deadline
	applied := make([]time.Duration, 0, n)  // applied (after commit) − deadline
	var last time.Time
	done := make(chan struct{})
	l := order.NewLifecycle(ts, nil, order.LifecycleConfig{
		Now: now,
		Notify: func(o order.Order, e order.TransitionEvent) {
			at := now()
			dl, ok := deadlines[o.ID]
			if !ok || e.Transition != order.Expire {
				return
			}
			mu.Lock()
			recorded = append(recorded, o.CancelledAt.Sub(dl))
			applied = append(applied, at.Sub(dl))
			last = at
			if len(applied) == n {
				close(done)
			}
			mu.Unlock()
		},
	})
	rctx, cancel := context.WithCancel(ctx)
	swept := make(chan error, 1)
	sweepStart := time.Now()
	go func() { swept <- l.RunDeadlines(rctx, 500*time.Millisecond) }()
	select {
	case <-done:
	case <-time.After(time.Duration(secs)*time.Second + time.Minute):
	}
	cancel()
	if err := <-swept; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(applied) != n {
		t.Fatalf("%d of %d orders expired", len(applied), n)
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var busy time.Duration
	for _, d := range ts.calls {
		busy += d
	}
	calls := slices.Clone(ts.calls)
	lastDeadline := base.Add(time.Duration(n-1) * step)
	q := func(xs []time.Duration) string {
		slices.Sort(xs)
		p := func(f float64) time.Duration { return xs[min(len(xs)-1, int(f*float64(len(xs))))] }
		return fmt.Sprintf("p50 %v  p90 %v  p99 %v  max %v", p(0.5).Round(time.Millisecond),
			p(0.9).Round(time.Millisecond), p(0.99).Round(time.Millisecond), xs[len(xs)-1].Round(time.Millisecond))
	}
	t.Logf("%d orders, deadlines at %d/s over %d s; inserted in %v (%.0f orders/s, batches of 512)",
		n, rate, secs, insDur.Round(time.Millisecond), float64(n)/insDur.Seconds())
	t.Logf("cancelled_at − deadline:  %s", q(recorded))
	t.Logf("applied − deadline:       %s", q(applied))
	t.Logf("last order applied %v after the last deadline; sweep ran %v in all",
		last.Sub(lastDeadline).Round(time.Millisecond), time.Since(sweepStart).Round(time.Millisecond))
	t.Logf("sweep: %d ExpireDue calls that expired orders (and %d empty), %v in them for %d orders: %.0f orders/s of sweep time, %.1f µs/order; call %s",
		len(calls), ts.empty, busy.Round(time.Millisecond), ts.rows, float64(ts.rows)/busy.Seconds(),
		float64(busy.Microseconds())/float64(ts.rows), q(calls))
}
