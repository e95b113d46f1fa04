package order_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/order"
)

// TestMain fails the package if a goroutine outlives the tests: the
// Service's background work belongs to Run, which each test waits for.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeReserver struct {
	mu        sync.Mutex
	confirmed map[string]bool
}

func (r *fakeReserver) Reserve(_ context.Context, req inventory.Request) (inventory.Reservation, bool, error) {
	return inventory.Reservation{OrderID: "o-" + req.Key, SaleID: req.SaleID, SKU: "p", UserID: req.UserID, Key: req.Key,
		Quantity: req.Quantity, PriceCents: 100, PlacedAt: time.Now()}, false, nil
}

func (r *fakeReserver) Confirm(_ context.Context, res inventory.Reservation) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.confirmed == nil {
		r.confirmed = map[string]bool{}
	}
	r.confirmed[res.OrderID] = true
	return nil
}

func (r *fakeReserver) isConfirmed(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.confirmed[id]
}

func (r *fakeReserver) Release(context.Context, inventory.Reservation) error { return nil }

// lossyStream loses every acknowledgement while lossy is set: each
// enqueue is then in doubt.
type lossyStream struct {
	lossy    atomic.Bool
	enqueues atomic.Int64
}

func (s *lossyStream) Enqueue(context.Context, order.Placed) error {
	s.enqueues.Add(1)
	if s.lossy.Load() {
		return errors.New("acknowledgement lost")
	}
	return nil
}

type emptyStore struct{}

func (emptyStore) InsertOrders(context.Context, []order.Order) error { return nil }
func (emptyStore) Order(context.Context, string) (order.Order, error) {
	return order.Order{}, order.ErrOrderNotFound
}
func (emptyStore) ListOrders(context.Context, int64, order.Cursor, int) ([]order.Order, error) {
	return nil, nil
}
func (emptyStore) ScanSaleOrders(context.Context, string, func(*order.Order) error) error {
	return nil
}

func newTestService() (*order.Service, *fakeReserver, *lossyStream) {
	r, s := &fakeReserver{}, &lossyStream{}
	svc := order.NewService(r, s, emptyStore{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	svc.EnqueueTimeout = time.Second
	return svc, r, s
}

// run starts svc.Run as the test's own and returns its stop, which cancels
// it and waits for it to return.
func run(t *testing.T, svc *order.Service) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after its context was cancelled")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func place(svc *order.Service, key string) error {
	_, err := svc.Place(context.Background(), order.PlaceRequest{UserID: 7, SaleID: "s", Key: key, Quantity: 1})
	return err
}

// TestRunResolvesInDoubt: a placement whose acknowledgement was lost is
// published again by Run until the stream takes it, then confirmed.
func TestRunResolvesInDoubt(t *testing.T) {
	svc, res, stream := newTestService()
	stream.lossy.Store(true)
	if err := place(svc, "k1"); !errors.Is(err, order.ErrInDoubt) {
		t.Fatalf("Place with a lossy stream: %v, want ErrInDoubt", err)
	}
	run(t, svc)
	for stream.enqueues.Load() < 3 { // Run retries while it is lossy
		time.Sleep(10 * time.Millisecond)
	}
	stream.lossy.Store(false)
	waitConfirmed(t, res, "o-k1", "the in-doubt reservation was never confirmed")
}

// waitConfirmed waits up to 10 s for the reservation of id to be
// confirmed, failing with msg if it is not.
func waitConfirmed(t *testing.T, res *fakeReserver, id, msg string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !res.isConfirmed(id) {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRunStopsWithItsContext: Run returns once its context is done, even
// with resolvers retrying, and nothing of it runs afterwards.
func TestRunStopsWithItsContext(t *testing.T) {
	svc, _, stream := newTestService()
	stream.lossy.Store(true)
	for _, k := range []string{"a", "b", "c"} {
		if err := place(svc, k); !errors.Is(err, order.ErrInDoubt) {
			t.Fatalf("Place: %v, want ErrInDoubt", err)
		}
	}
	stop := run(t, svc)
	for stream.enqueues.Load() < 6 {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	n := stream.enqueues.Load()
	time.Sleep(100 * time.Millisecond)
	if m := stream.enqueues.Load(); m != n {
		t.Errorf("%d enqueues after Run returned", m-n)
	}
}

// TestInDoubtBacklogFullStartsNoGoroutine: when the resolvers' bounded
// queue is full, Place starts no goroutine of its own; the reservation is
// left held (settled by a replay or the next rebuild).
func TestInDoubtBacklogFullStartsNoGoroutine(t *testing.T) {
	svc, _, stream := newTestService()
	stream.lossy.Store(true)
	before := runtime.NumGoroutine()
	for i := range 4096 + 50 { // the queue holds 4096
		if err := place(svc, fmt.Sprint("k", i)); !errors.Is(err, order.ErrInDoubt) {
			t.Fatalf("Place: %v, want ErrInDoubt", err)
		}
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Errorf("%d goroutines after filling the in-doubt queue, %d before", after, before)
	}
}

// laterReserver confirms only through ConfirmLater, which records the
// reservations handed to it.
type laterReserver struct {
	fakeReserver
	later []inventory.Reservation
}

func (r *laterReserver) Confirm(context.Context, inventory.Reservation) error {
	panic("a placement acknowledged by the stream must confirm through ConfirmLater")
}

func (r *laterReserver) ConfirmLater(_ context.Context, res inventory.Reservation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.later = append(r.later, res)
}

// TestPlaceConfirmsLater: with a LaterConfirmer, an acknowledged placement
// hands its reservation to ConfirmLater and returns at once; a placement
// the stream refused confirms nothing.
func TestPlaceConfirmsLater(t *testing.T) {
	r, s := &laterReserver{}, &lossyStream{}
	svc := order.NewService(r, s, emptyStore{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	o, err := svc.Place(context.Background(), order.PlaceRequest{UserID: 7, SaleID: "s", Key: "k1", Quantity: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.later) != 1 || r.later[0].OrderID != o.ID {
		t.Fatalf("ConfirmLater got %+v, want the placed order %s", r.later, o.ID)
	}
	s.lossy.Store(true)
	if err := place(svc, "k2"); !errors.Is(err, order.ErrInDoubt) {
		t.Fatalf("Place with a lossy stream: %v, want ErrInDoubt", err)
	}
	if len(r.later) != 1 {
		t.Errorf("a placement in doubt was confirmed: %+v", r.later)
	}
}

// TestPersistedElsewhere: an order announced as persisted by another
// instance's worker leaves this instance's pending index; another buyer's
// id with the same order id changes nothing.
func TestPersistedElsewhere(t *testing.T) {
	svc, _, _ := newTestService()
	o, err := svc.Place(context.Background(), order.PlaceRequest{UserID: 7, SaleID: "s", Key: "k1", Quantity: 1})
	if err != nil {
		t.Fatal(err)
	}
	svc.Persisted(8, o.ID)
	if n := svc.PendingCount(); n != 1 {
		t.Fatalf("PendingCount() = %d after another buyer's announcement, want 1", n)
	}
	svc.Persisted(7, o.ID)
	if n := svc.PendingCount(); n != 0 {
		t.Errorf("PendingCount() = %d after the announcement, want 0", n)
	}
}

// switchLeases is an order.Leases whose ownership a test switches.
type switchLeases struct{ owns atomic.Bool }

func (l *switchLeases) Owns(string) bool                            { return l.owns.Load() }
func (l *switchLeases) Alive(context.Context, string) (bool, error) { return true, nil }

// TestResolverWaitsForItsLease: an in-doubt event is not published again
// while the instance does not hold its lease with time to spare (another
// instance may free its units once the lease expires); it is once the
// lease renews.
func TestResolverWaitsForItsLease(t *testing.T) {
	svc, res, stream := newTestService()
	leases := &switchLeases{}
	leases.owns.Store(true)
	svc.Leases = leases
	stream.lossy.Store(true)
	if err := place(svc, "k1"); !errors.Is(err, order.ErrInDoubt) {
		t.Fatalf("Place with a lossy stream: %v, want ErrInDoubt", err)
	}
	leases.owns.Store(false)
	stream.lossy.Store(false)
	n := stream.enqueues.Load()
	run(t, svc)
	time.Sleep(300 * time.Millisecond) // several retry rounds
	if m := stream.enqueues.Load(); m != n || res.isConfirmed("o-k1") {
		t.Fatalf("%d publishes without the lease (confirmed %v)", m-n, res.isConfirmed("o-k1"))
	}
	leases.owns.Store(true)
	waitConfirmed(t, res, "o-k1", "the in-doubt reservation was never confirmed once the lease was held again")
}

// TestPlaceWithoutLeasePublishesNothing: a placement made while the lease
// is not held is refused with ErrLeaseLost before anything is published.
func TestPlaceWithoutLeasePublishesNothing(t *testing.T) {
	svc, _, stream := newTestService()
	svc.Leases = &switchLeases{}
	if err := place(svc, "k1"); !errors.Is(err, order.ErrLeaseLost) {
		t.Fatalf("Place without the lease: %v, want ErrLeaseLost", err)
	}
	if n := stream.enqueues.Load(); n != 0 {
		t.Errorf("%d publishes without the lease", n)
	}
}
