package payment_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/payment"
	"github.com/spikehq/spike/internal/testkit/paymenttest"
)

// countingStore counts the rows the sweep reads.
type countingStore struct {
	*paymenttest.Memory
	mu   sync.Mutex
	rows int
}

func (c *countingStore) Payments(ctx context.Context, after string, limit int) ([]payment.Payment, error) {
	ps, err := c.Memory.Payments(ctx, after, limit)
	c.mu.Lock()
	c.rows += len(ps)
	c.mu.Unlock()
	return ps, err
}

func (c *countingStore) read() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.rows
	c.rows = 0
	return n
}

func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func (f *fakeProvider) askedOf(ref string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.asked[ref]
}

func TestReconcileStuck(t *testing.T) {
	f := newFixture(t)
	cs := &countingStore{Memory: f.store}
	f.svc = payment.New(cs, map[string]payment.Provider{"fake": f.prov}, f.orders, payment.Config{
		DefaultProvider: "fake", ReconcileAfter: 5 * time.Minute, ReconcileHorizon: time.Hour,
		Now: func() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now },
	})
	ctx := context.Background()
	sweep := func(want int) {
		t.Helper()
		if n, err := f.svc.ReconcileStuck(ctx); err != nil || n != want {
			t.Fatalf("ReconcileStuck = %d, %v; want %d", n, err, want)
		}
	}
	stuck := f.start(t, "o1", "k")                      // the buyer never pays
	lost := f.start(t, "o2", "k")                       // paid, webhook lost
	done := f.start(t, "o3", "k")                       // failed, webhook received
	f.prov.status[lost.ProviderRef] = payment.Succeeded // no concurrency yet
	if err := f.deliver(done.ProviderRef, payment.Failed); err != nil {
		t.Fatal(err)
	}
	asked := func(p payment.Payment) int { return f.prov.askedOf(p.ProviderRef) }

	sweep(0) // nothing has been stuck for 5 minutes
	f.advance(5 * time.Minute)
	sweep(2)
	if f.orders.get("o2") != order.Paid || f.stored(t, lost.ID).Status != payment.Succeeded {
		t.Fatalf("lost webhook not reconciled: order %s", f.orders.get("o2"))
	}
	if asked(stuck) != 1 || asked(done) != 0 {
		t.Fatalf("asked stuck %d, done %d times", asked(stuck), asked(done))
	}
	// Asked again at 10, 20, 40 minutes only, whatever the sweeps between.
	for range 40 {
		f.advance(time.Minute)
		if _, err := f.svc.ReconcileStuck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if asked(stuck) != 4 || asked(lost) != 1 || asked(done) != 0 {
		t.Fatalf("after 45 minutes: asked stuck %d (want 4), lost %d, done %d", asked(stuck), asked(lost), asked(done))
	}
	// A sweep that misses a threshold (provider down) retries at the next one.
	f.advance(39 * time.Minute) // 84m: past the horizon for these; a new payment
	young := f.start(t, "o4", "k")
	f.advance(5 * time.Minute)
	f.prov.setDown(true)
	sweep(0)
	f.prov.setDown(false)
	f.advance(time.Minute)
	sweep(1)
	if asked(young) != 2 || asked(stuck) != 4 {
		t.Fatalf("asked young %d (want 2: down, retried), stuck %d (past the horizon: want 4)", asked(young), asked(stuck))
	}
	// The cursor has passed the payments beyond the horizon: a sweep reads
	// only the young one.
	cs.read()
	f.advance(time.Minute)
	sweep(0)
	if n := cs.read(); n != 1 {
		t.Fatalf("a sweep read %d payments; want 1", n)
	}
}

// TestRunReconciler runs the sweeps in a synctest bubble: fake time, and
// the bubble fails if RunReconciler leaves a goroutine behind.
func TestRunReconciler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		prov := newFakeProvider()
		orders := &fakeOrders{status: map[string]order.Status{"o1": order.Created}, paidBy: map[string]string{}}
		svc := payment.New(paymenttest.NewMemory(), map[string]payment.Provider{"fake": prov}, orders,
			payment.Config{DefaultProvider: "fake", ReconcileAfter: time.Minute})
		p, err := svc.Start(context.Background(), payment.OrderRef{ID: "o1", UserID: 1, AmountCents: 100, Status: order.Created}, "k", "")
		if err != nil {
			t.Fatal(err)
		}
		prov.mu.Lock()
		prov.status[p.ProviderRef] = payment.Succeeded // webhook lost
		prov.mu.Unlock()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- svc.RunReconciler(ctx, 30*time.Second) }()
		time.Sleep(59 * time.Second)
		synctest.Wait()
		if orders.get("o1") != order.Created || prov.askedOf(p.ProviderRef) != 0 {
			t.Fatalf("reconciled before ReconcileAfter: order %s", orders.get("o1"))
		}
		time.Sleep(2 * time.Second) // the sweep at 60s
		synctest.Wait()
		if orders.get("o1") != order.Paid {
			t.Fatalf("order %s after the sweep", orders.get("o1"))
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
