package redisstock_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/redisstock"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/order"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// runLease acquires a lease and renews it until stop is called (or the test
// ends).
func runLease(t *testing.T, l *redisstock.Lease) (stop func()) {
	t.Helper()
	if err := l.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Run(ctx) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

// TestLeaseExpiresWithItsInstance: another instance sees a lease alive
// while it is renewed and gone a TTL after renewals stop; the instance
// itself stops owning its ids half a TTL before that.
func TestLeaseExpiresWithItsInstance(t *testing.T) {
	client := mustShared(t)
	const ttl = 600 * time.Millisecond
	prefix := "spiketest-" + randomID(t)
	idsA, idsB := spike.NewIDGenerator(), spike.NewIDGenerator()
	a := redisstock.NewLease(client, idsA, prefix, ttl, discard)
	b := redisstock.NewLease(client, idsB, prefix, ttl, discard)
	stopA := runLease(t, a)
	runLease(t, b)
	ctx := context.Background()

	id := idsA.New()
	if !a.Owns(id) {
		t.Errorf("A does not own its fresh id %s", id)
	}
	if b.Owns(id) {
		t.Errorf("B owns A's id %s", id)
	}
	time.Sleep(2 * ttl) // several renewals
	if alive, err := b.Alive(ctx, id); err != nil || !alive {
		t.Fatalf("B sees A's lease alive = %v, %v while A renews it", alive, err)
	}
	if !a.Owns(id) {
		t.Errorf("A stopped owning %s while renewing its lease", id)
	}

	stopA() // A "dies": no more renewals
	stopped := time.Now()
	eventually(t, "A stops owning its ids", func() bool { return !a.Owns(id) })
	eventually(t, "B sees A's lease expire", func() bool {
		alive, err := b.Alive(ctx, id)
		return err == nil && !alive
	})
	if gone := time.Since(stopped); gone < ttl/2 {
		t.Errorf("A's lease expired %v after its last renewal, before half its TTL", gone)
	}
	if alive, _ := b.Alive(ctx, "not-an-order-id"); !alive {
		t.Errorf("an id naming no node is reported dead: nothing may be released on a guess")
	}
}

// TestLeaseLostTakesNewNode: when the lease key vanishes (Redis lost it),
// the instance never publishes under that node again: it goes on under a
// fresh node and lease, and its old ids are dead to everyone.
func TestLeaseLostTakesNewNode(t *testing.T) {
	client := mustShared(t)
	const ttl = 500 * time.Millisecond
	prefix := "spiketest-" + randomID(t)
	ids := spike.NewIDGenerator()
	l := redisstock.NewLease(client, ids, prefix, ttl, discard)
	runLease(t, l)
	ctx := context.Background()
	old := ids.New()
	first := l.Node()
	if err := client.Do(ctx, client.B().Del().Key(prefix+":lease:"+first).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a new node after the lease was lost", func() bool { return l.Lost() == 1 && l.Node() != first })
	eventually(t, "the new lease held", func() bool { return l.Owns(ids.New()) })
	if l.Owns(old) {
		t.Errorf("still owns %s, made under the lost lease", old)
	}
	if alive, err := l.Alive(ctx, old); err != nil || alive {
		t.Errorf("Alive(old id) = %v, %v; want false", alive, err)
	}
	if ids.Node() != l.Node() {
		t.Errorf("id generator node %s, lease node %s", ids.Node(), l.Node())
	}
}

// TestReplaySettlesDeadInstancesReservation: instance A reserves and dies
// before its event reaches the stream; a replay of the key on instance B
// answers "in progress" while A's lease lives and places the order afresh
// once it expired, long before AbandonAfter. The units are not held twice.
func TestReplaySettlesDeadInstancesReservation(t *testing.T) {
	client := mustShared(t)
	ctx := context.Background()
	const ttl = 600 * time.Millisecond
	prefix := "spiketest-" + randomID(t)
	cp := campaign(t, 1, 1)
	deleteSale(t, client, prefix, cp.ID)
	idsA, idsB := spike.NewIDGenerator(), spike.NewIDGenerator()
	counters := func(ids *spike.IDGenerator) *redisstock.Counters {
		c := redisstock.New(client, ids, redisstock.Config{Prefix: prefix, Settle: -1})
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = c.Run(runCtx) }()
		t.Cleanup(func() { cancel(); <-done })
		return c
	}
	ca, cb := counters(idsA), counters(idsB)
	if err := ca.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	leaseA := redisstock.NewLease(client, idsA, prefix, ttl, discard)
	leaseB := redisstock.NewLease(client, idsB, prefix, ttl, discard)
	stopA := runLease(t, leaseA)
	runLease(t, leaseB)

	// A reserves; its process dies before publishing (the reservation is
	// left unconfirmed in Redis, as a kill -9 leaves it).
	res, _, err := ca.Reserve(ctx, inventory.Request{SaleID: cp.ID, UserID: 7, Key: "k", Quantity: 1})
	if err != nil {
		t.Fatal(err)
	}
	st := &stream{}
	svcB := order.NewService(cb, st, emptyStore{}, discard)
	svcB.Lookup = st
	svcB.Leases = leaseB
	svcB.AbandonAfter = time.Hour
	replay := order.PlaceRequest{UserID: 7, SaleID: cp.ID, Key: "k", Quantity: 1}
	if _, err := svcB.Place(ctx, replay); !errors.Is(err, inventory.ErrInProgress) {
		t.Fatalf("replay while A lives = %v, want ErrInProgress", err)
	}
	stopA()
	died := time.Now()
	var o order.Order
	eventually(t, "the replay settles once A's lease expired", func() bool {
		o, err = svcB.Place(ctx, replay)
		return err == nil
	})
	t.Logf("settled %v after the last renewal (TTL %v)", time.Since(died).Round(time.Millisecond), ttl)
	if o.ID == res.OrderID {
		t.Errorf("the replay answered A's order %s, whose event was never stored", o.ID)
	}
	if node, _ := spike.IDNode(o.ID); node != leaseB.Node() {
		t.Errorf("the new order %s was not made by B (node %s)", o.ID, leaseB.Node())
	}
	if len(st.events) != 1 || st.events[0].OrderID != o.ID {
		t.Errorf("stream holds %+v, want only %s", st.events, o.ID)
	}
	// One unit, one buyer: another key of the same buyer is over the limit,
	// and nothing else can be sold.
	if _, err := svcB.Place(ctx, order.PlaceRequest{UserID: 8, SaleID: cp.ID, Key: "k2", Quantity: 1}); !errors.Is(err, inventory.ErrSoldOut) {
		t.Errorf("another buyer after the settled replay: %v, want ErrSoldOut", err)
	}
	again, err := svcB.Place(ctx, replay)
	if err != nil || again.ID != o.ID {
		t.Errorf("second replay = %s, %v; want %s", again.ID, err, o.ID)
	}
}

// TestLeaseLostRefusesPublish: a placement whose id was made under a lease
// this instance no longer holds is not published (another instance may
// free its units) and its units come back.
func TestLeaseLostRefusesPublish(t *testing.T) {
	client := mustShared(t)
	ctx := context.Background()
	prefix := "spiketest-" + randomID(t)
	cp := campaign(t, 1, 1)
	deleteSale(t, client, prefix, cp.ID)
	ids := spike.NewIDGenerator()
	c := redisstock.New(client, ids, redisstock.Config{Prefix: prefix, Settle: -1})
	if err := c.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	// A lease acquired and never renewed: after half its TTL it is no
	// longer held with time to spare.
	const ttl = 400 * time.Millisecond
	lease := redisstock.NewLease(client, ids, prefix, ttl, discard)
	if err := lease.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl/2 + 50*time.Millisecond)
	st := &stream{}
	svc := order.NewService(c, st, emptyStore{}, discard)
	svc.Leases = lease
	if _, err := svc.Place(ctx, order.PlaceRequest{UserID: 1, SaleID: cp.ID, Key: "a", Quantity: 1}); !errors.Is(err, order.ErrLeaseLost) {
		t.Fatalf("Place() without a lease held = %v, want ErrLeaseLost", err)
	}
	if len(st.events) != 0 {
		t.Errorf("%d events published without a lease", len(st.events))
	}
	if err := lease.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Place(ctx, order.PlaceRequest{UserID: 2, SaleID: cp.ID, Key: "b", Quantity: 1}); err != nil {
		t.Errorf("Place() after the unit came back and the lease was taken again: %v", err)
	}
}

// emptyStore is an order store that holds nothing: the replay path asks it
// whether an order was persisted.
type emptyStore struct{ order.Store }

func (emptyStore) Order(context.Context, string) (order.Order, error) {
	return order.Order{}, order.ErrOrderNotFound
}
