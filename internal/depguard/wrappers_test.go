package depguard_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/depguard"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/resilience"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// slowOrderStore answers Order after a delay.
type slowOrderStore struct {
	order.Store
	delay time.Duration
	calls atomic.Int64
}

func (s *slowOrderStore) Order(ctx context.Context, id string) (order.Order, error) {
	s.calls.Add(1)
	select {
	case <-time.After(s.delay):
		return order.Order{ID: id}, nil
	case <-ctx.Done():
		return order.Order{}, ctx.Err()
	}
}

// TestSlowOrderReadsAreShed: reads slower than the breaker's slow-call
// threshold open it, and then fail fast without reaching the database.
func TestSlowOrderReadsAreShed(t *testing.T) {
	if testing.Short() {
		t.Skip("takes over a second")
	}
	slow := &slowOrderStore{delay: 1200 * time.Millisecond}
	g := depguard.NewOrderStore(slow, depguard.OrderStoreConfig{})
	var wg sync.WaitGroup
	for range 30 {
		wg.Go(func() { g.Order(bg, "x") })
	}
	wg.Wait()
	before := slow.calls.Load()
	began := time.Now()
	_, err := g.Order(bg, "x")
	if !errors.Is(err, depguard.ErrOrderReadsShed) {
		t.Fatalf("after 30 slow reads: %v, want the shed error", err)
	}
	if slow.calls.Load() != before {
		t.Error("a shed read reached the database")
	}
	t.Logf("a shed read answered in %v", time.Since(began))
	// A read whose caller has less time than the store needs is cut at the budget.
	fast := depguard.NewOrderStore(&slowOrderStore{delay: time.Minute}, depguard.OrderStoreConfig{})
	ctx, cancel := context.WithTimeout(bg, 50*time.Millisecond)
	defer cancel()
	if _, err := fast.Order(ctx, "x"); err == nil {
		t.Error("a read past its deadline succeeded")
	}
}

// errRedisDown stands for redisstock.ErrUnavailable.
var errRedisDown = errors.New("redis unavailable")

func isRedisFailure(err error) bool {
	return err != nil && errors.Is(err, errRedisDown) && !errors.Is(err, context.Canceled)
}

// fakeReserver answers like redisstock: after delay, with err.
type fakeReserver struct {
	delay              atomic.Int64 // nanoseconds
	err                atomic.Pointer[error]
	reserves, releases atomic.Int64
	confirms           atomic.Int64
}

func (f *fakeReserver) wait(ctx context.Context) error {
	select {
	case <-time.After(time.Duration(f.delay.Load())):
	case <-ctx.Done():
		return fmt.Errorf("redis stock: %w", errors.Join(errRedisDown, ctx.Err()))
	}
	if e := f.err.Load(); e != nil {
		return *e
	}
	return nil
}

func (f *fakeReserver) Reserve(ctx context.Context, r inventory.Request) (inventory.Reservation, bool, error) {
	f.reserves.Add(1)
	return inventory.Reservation{OrderID: "o"}, false, f.wait(ctx)
}

func (f *fakeReserver) Confirm(ctx context.Context, res inventory.Reservation) error {
	f.confirms.Add(1)
	return f.wait(ctx)
}

func (f *fakeReserver) Release(ctx context.Context, res inventory.Reservation) error {
	f.releases.Add(1)
	return f.wait(ctx)
}

// TestStockGuard: domain answers never open the redis_stock breaker; slow
// calls do, and then reserves are refused without reaching Redis while
// confirms and releases still go through; a failed release is retried by
// Run, which returns when its context ends.
func TestStockGuard(t *testing.T) {
	f := &fakeReserver{}
	g := depguard.NewStock(f, depguard.StockConfig{IsFailure: isRedisFailure, Logger: discard()})
	ctx, stop := context.WithCancel(bg)
	ran := make(chan error)
	go func() { ran <- g.Run(ctx) }()
	defer func() {
		stop()
		if err := <-ran; err != nil {
			t.Error(err)
		}
	}()
	soldOut := error(inventory.ErrSoldOut)
	f.err.Store(&soldOut)
	for range 100 {
		g.Reserve(bg, inventory.Request{})
	}
	if s := g.Guard().Breaker().State(); s != resilience.Closed {
		t.Fatalf("after 100 sold-out answers the breaker is %v", s)
	}

	// Slow (300 ms ≥ the 250 ms slow-call mark): the breaker opens.
	f.err.Store(nil)
	f.delay.Store(int64(300 * time.Millisecond))
	var wg sync.WaitGroup
	for range 30 {
		wg.Go(func() { g.Reserve(bg, inventory.Request{}) })
	}
	wg.Wait()
	if s := g.Guard().Breaker().State(); s != resilience.Open {
		t.Fatalf("after 30 slow reserves the breaker is %v", s)
	}
	before := f.reserves.Load()
	if _, _, err := g.Reserve(bg, inventory.Request{}); !errors.Is(err, depguard.ErrStockBreakerOpen) || !errors.Is(err, spike.ErrUnavailable) {
		t.Fatalf("reserve with the breaker open: %v", err)
	}
	if f.reserves.Load() != before {
		t.Error("a refused reserve reached Redis")
	}
	// Confirm and release finish reservations already taken: not refused.
	f.delay.Store(0)
	if err := g.Confirm(bg, inventory.Reservation{}); err != nil || f.confirms.Load() != 1 {
		t.Errorf("confirm with the breaker open: %v (%d calls)", err, f.confirms.Load())
	}
	if err := g.Release(bg, inventory.Reservation{}); err != nil || f.releases.Load() != 1 {
		t.Errorf("release with the breaker open: %v (%d calls)", err, f.releases.Load())
	}

	// A release cut by the timeout is reported, then retried until it works.
	f.delay.Store(int64(time.Minute))
	rctx, cancel := context.WithTimeout(bg, 20*time.Millisecond)
	defer cancel()
	if err := g.Release(rctx, inventory.Reservation{}); err == nil {
		t.Fatal("a release past its deadline succeeded")
	}
	f.delay.Store(0)
	deadline := time.Now().Add(10 * time.Second)
	for f.releases.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("the failed release was not retried")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStockRetryStopsWithRun: retries waiting when Run's context ends are
// given up, and Run returns at once.
func TestStockRetryStopsWithRun(t *testing.T) {
	f := &fakeReserver{}
	f.err.Store(&errRedisDown)
	g := depguard.NewStock(f, depguard.StockConfig{IsFailure: isRedisFailure, Logger: discard(), RetryQueue: 2})
	for range 3 { // the third finds the queue full: not retried
		if err := g.Release(bg, inventory.Reservation{}); !errors.Is(err, errRedisDown) {
			t.Fatalf("release: %v", err)
		}
	}
	ctx, stop := context.WithCancel(bg)
	ran := make(chan error)
	go func() { ran <- g.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for f.releases.Load() < 5 { // 3 calls, then 2 retries
		if time.Now().After(deadline) {
			t.Fatalf("%d releases, want the 2 queued retried", f.releases.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

type fakeStream struct {
	delay time.Duration
	err   error
}

func (s fakeStream) Enqueue(ctx context.Context, e order.Placed) error {
	select {
	case <-time.After(s.delay):
		return s.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestStreamRefusals: refusals are certainly not enqueued.
func TestStreamRefusals(t *testing.T) {
	s := depguard.NewStream(fakeStream{err: errDown}, depguard.New(depguard.OrderStream, depguard.Config{}))
	for range 20 { // the breaker's minimum calls
		if err := s.Enqueue(bg, order.Placed{}); err != errDown {
			t.Fatalf("stream down: %v", err)
		}
	}
	err := s.Enqueue(bg, order.Placed{})
	if !errors.Is(err, depguard.ErrStreamBreakerOpen) || !errors.Is(err, order.ErrNotEnqueued) {
		t.Fatalf("after 20 failures: %v, want the breaker open (not enqueued)", err)
	}
	st := depguard.StreamLimits(1, 1, 3, 0)
	entered := make(chan struct{})
	busy := depguard.NewStream(blockedStream(entered), depguard.New(depguard.OrderStream, depguard.Config{Settings: &st}))
	ctx, cancel := context.WithCancel(bg)
	done := make(chan struct{})
	go func() { busy.Enqueue(ctx, order.Placed{}); close(done) }()
	<-entered
	if err := busy.Enqueue(bg, order.Placed{}); !errors.Is(err, depguard.ErrStreamBusy) || !errors.Is(err, order.ErrNotEnqueued) {
		t.Fatalf("with the one place taken: %v, want ErrStreamBusy (not enqueued)", err)
	}
	cancel()
	<-done
}

// blockedStream blocks every publish until its context ends, telling
// entered of the first.
type blockedStream chan struct{}

func (s blockedStream) Enqueue(ctx context.Context, e order.Placed) error {
	close(s)
	<-ctx.Done()
	return ctx.Err()
}

// failingInserts fails every insert and counts them.
type failingInserts struct {
	order.Store
	calls atomic.Int64
}

func (s *failingInserts) InsertOrders(context.Context, []order.Order) error {
	s.calls.Add(1)
	return errors.New("database down")
}

// TestDeadlineInsertsPassAnOpenBreaker: once failing inserts have opened
// the order_writes breaker, the workers' inserts are refused without
// reaching the database, but the deadline sweep's still reach it.
func TestDeadlineInsertsPassAnOpenBreaker(t *testing.T) {
	store := &failingInserts{}
	g := depguard.NewOrderStore(store, depguard.OrderStoreConfig{})
	batch := []order.Order{{ID: "o1"}}
	for range 10 {
		g.InsertOrders(bg, batch)
	}
	before := store.calls.Load()
	if err := g.InsertOrders(bg, batch); !errors.Is(err, depguard.ErrOrderWritesOpen) {
		t.Fatalf("after 10 failed inserts: %v, want the breaker open", err)
	}
	if store.calls.Load() != before {
		t.Fatal("an insert refused by the open breaker reached the database")
	}
	if err := g.InsertOrders(order.WithDeadlineWork(bg), batch); err == nil || errors.Is(err, depguard.ErrOrderWritesOpen) {
		t.Fatalf("the deadline sweep's insert: %v, want the database's own error", err)
	}
	if store.calls.Load() != before+1 {
		t.Fatal("the deadline sweep's insert did not reach the database")
	}
}
