package natsbus_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/adapter/natsbus"
	"github.com/spikehq/spike/internal/domain/order"
)

// TestAnnouncePersisted: a committed batch is announced to every follower,
// each order with its buyer; a batch whose persist failed is not.
func TestAnnouncePersisted(t *testing.T) {
	a, b := twoConns(t)
	ctx, cancel := context.WithCancel(context.Background())
	type heard struct {
		user int64
		id   string
	}
	got := make(chan heard, 4096)
	done := make(chan error, 1)
	go func() {
		done <- natsbus.FollowPersisted(ctx, b, "test.persisted", func(u int64, id string) { got <- heard{u, id} })
	}()
	defer func() { cancel(); <-done }()

	fail := errors.New("insert failed")
	var persistErr error
	persist := natsbus.AnnouncePersisted(a, "test.persisted", func(context.Context, []order.Placed) error { return persistErr }, quiet)
	// Wait until the follower hears a probe: its subscription is in place.
	probe := []order.Placed{event(9999)}
	for subscribed := false; !subscribed; {
		if err := persist(context.Background(), probe); err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
			subscribed = true
		case <-time.After(200 * time.Millisecond):
		}
	}
	for len(got) > 0 {
		<-got // late copies of the probe
	}

	persistErr = fail
	if err := persist(context.Background(), []order.Placed{event(1), event(2)}); !errors.Is(err, fail) {
		t.Fatalf("persist = %v, want the persist error", err)
	}
	persistErr = nil
	var batch []order.Placed
	for i := range 2500 { // more than one announcement
		batch = append(batch, event(10+i))
	}
	if err := persist(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	for i, e := range batch {
		select {
		case h := <-got:
			if h.user != e.UserID || h.id != e.OrderID {
				t.Fatalf("announcement %d = %d %s, want %d %s (the failed batch must not be announced)", i, h.user, h.id, e.UserID, e.OrderID)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("heard %d of %d announced orders", i, len(batch))
		}
	}
}

// TestConcurrentPublishersOwnAcks: three buses (three instances' connections)
// publish to one stream from many goroutines at once, some publishing the
// same order id as another instance. Every Enqueue that returns nil has its
// own event on the stream, each order id once, and a worker persists each.
func TestConcurrentPublishersOwnAcks(t *testing.T) {
	t.Parallel()
	suffix := fmt.Sprint(rand.Uint32())
	cfg := natsbus.Config{AckWait: time.Second, Stream: "TEST_ORDERS_" + suffix, Subject: "test.orders." + suffix}
	var buses []*natsbus.Bus
	for range 3 {
		bus, err := natsbus.New(context.Background(), mustExternal(t), cfg, quiet)
		if err != nil {
			t.Fatal(err)
		}
		buses = append(buses, bus)
	}
	t.Cleanup(func() { buses[0].DeleteStream(context.Background()) })
	const perBus, dups = 600, 50
	var wg sync.WaitGroup
	errs := make(chan error, 3*perBus+dups)
	for i, bus := range buses {
		for j := range perBus {
			wg.Go(func() { errs <- bus.Enqueue(context.Background(), event(i*perBus+j)) })
		}
	}
	for j := range dups { // the first bus's orders, again, from the last bus
		wg.Go(func() { errs <- buses[2].Enqueue(context.Background(), event(j)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Enqueue = %v", err)
		}
	}
	queued, err := buses[1].Unpersisted(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(queued) != 3*perBus {
		t.Fatalf("%d distinct events on the stream, want %d", len(queued), 3*perBus)
	}
	if n, err := buses[1].Backlog(context.Background()); err != nil || n != 3*perBus {
		t.Fatalf("Backlog() = %d, %v; want %d messages (duplicates dropped by Nats-Msg-Id)", n, err, 3*perBus)
	}
	got := persistAll(t, buses[0], nil)
	for i := range 3 * perBus {
		if got[event(i).OrderID] < 1 {
			t.Fatalf("order %s acknowledged but never persisted", event(i).OrderID)
		}
	}
}

// TestCrashBetweenInsertAndAck: a worker whose batch is inserted (committed)
// but whose instance dies before acknowledging it leaves the events on the
// stream; another instance's worker gets them after AckWait, and the
// idempotent insert keeps one copy of each order.
func TestCrashBetweenInsertAndAck(t *testing.T) {
	t.Parallel()
	suffix := fmt.Sprint(rand.Uint32())
	cfg := natsbus.Config{AckWait: time.Second, Stream: "TEST_ORDERS_" + suffix, Subject: "test.orders." + suffix, Linger: time.Millisecond}
	crashing, err := natsbus.New(context.Background(), mustExternal(t), cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { crashing.DeleteStream(context.Background()) })
	const n = 200
	for i := range n {
		if err := crashing.Enqueue(context.Background(), event(i)); err != nil {
			t.Fatal(err)
		}
	}
	// The store: inserts idempotent by order id, as both stores' are.
	var mu sync.Mutex
	rows, inserts := map[string]order.Placed{}, 0
	insert := func(evs []order.Placed) {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range evs {
			inserts++
			if _, ok := rows[e.OrderID]; !ok {
				rows[e.OrderID] = e
			}
		}
	}
	ctx, crash := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- crashing.RunWorker(ctx, func(_ context.Context, evs []order.Placed) error {
			insert(evs)
			crash() // dies after the commit, before the acks
			return errors.New("crashed")
		})
	}()
	<-done
	mu.Lock()
	first := inserts
	mu.Unlock()
	if first == 0 {
		t.Fatal("the crashing worker inserted nothing")
	}
	other, err := natsbus.New(context.Background(), mustExternal(t), cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(context.Background())
	wdone := make(chan error, 1)
	go func() {
		wdone <- other.RunWorker(wctx, func(_ context.Context, evs []order.Placed) error { insert(evs); return nil })
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		left, err := other.Backlog(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backlog %d never drained", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	<-wdone
	mu.Lock()
	defer mu.Unlock()
	if len(rows) != n {
		t.Errorf("%d orders stored, want %d", len(rows), n)
	}
	if inserts < n+1 {
		t.Errorf("%d inserts in all: the crashed batch (%d) was not delivered again", inserts, first)
	}
	for i := range n {
		if rows[event(i).OrderID] != event(i) {
			t.Errorf("order %d stored as %+v", i, rows[event(i).OrderID])
		}
	}
}
