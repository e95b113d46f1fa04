package natsbus_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/adapter/natsbus"
	"github.com/spikehq/spike/internal/domain/order"
)

func TestStreamBatched(t *testing.T) {
	t.Parallel()
	nc := mustEmbedded(t)
	bus, err := natsbus.New(context.Background(), nc, natsbus.Config{AckWait: time.Second, PublishBatch: 64}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	testStream(t, bus)
}

// TestBatchedConcurrentEnqueue: concurrent placements share messages, each
// is found by id until persisted, a restarted bus finds them too, and the
// worker persists each exactly once.
func TestBatchedConcurrentEnqueue(t *testing.T) {
	ctx := context.Background()
	nc := mustEmbedded(t)
	cfg := natsbus.Config{AckWait: time.Second, PublishBatch: 64}
	bus, err := natsbus.New(ctx, nc, cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	const n = 2000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() { errs <- bus.Enqueue(ctx, event(i)) })
	}
	waitNoErrors(t, &wg, errs)
	msgs, err := bus.Backlog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events in %d stream messages", n, msgs)
	if msgs == 0 || msgs > n {
		t.Fatalf("backlog %d messages for %d events", msgs, n)
	}
	queued, err := bus.Unpersisted(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(queued) != n {
		t.Fatalf("Unpersisted: %d events, want %d", len(queued), n)
	}
	// A second bus over the same stream stands for a restarted process.
	restarted, err := natsbus.New(ctx, nc, cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(restarted.Close)
	for i := range n {
		for _, b := range []*natsbus.Bus{bus, restarted} {
			e, ok, err := b.Placed(ctx, event(i).OrderID)
			if err != nil || !ok || e != event(i) {
				t.Fatalf("Placed(%s) = %+v, %v, %v; want the event", event(i).OrderID, e, ok, err)
			}
		}
	}
	// The same order again is not stored twice.
	if err := bus.Enqueue(ctx, event(5)); err != nil {
		t.Fatal(err)
	}
	if again, _ := bus.Backlog(ctx); again != msgs {
		t.Fatalf("re-enqueueing a stored event added a message: %d → %d", msgs, again)
	}

	got := persistAll(t, bus, nil)
	if len(got) != n {
		t.Fatalf("persisted %d distinct events, want %d", len(got), n)
	}
	for i := range n {
		if _, ok, _ := bus.Placed(ctx, event(i).OrderID); ok {
			t.Fatalf("Placed(%s) still found after it was persisted", event(i).OrderID)
		}
	}
}

// TestBatchedWithdrawn: a caller that gives up gets ErrNotEnqueued only if
// its event will certainly not be stored; otherwise it is in doubt.
func TestBatchedWithdrawn(t *testing.T) {
	ctx := context.Background()
	nc := mustEmbedded(t)
	bus, err := natsbus.New(ctx, nc, natsbus.Config{PublishBatch: 16}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	const n = 500
	var wg sync.WaitGroup
	results := make([]error, n)
	for i := range n {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, time.Duration(i%7)*100*time.Microsecond)
			defer cancel()
			results[i] = bus.Enqueue(cctx, event(i))
		})
	}
	wg.Wait()
	time.Sleep(200 * time.Millisecond) // batches in flight settle
	queued, err := bus.Unpersisted(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for _, e := range queued {
		stored[e.OrderID] = true
	}
	var ok, refused, doubt int
	for i, err := range results {
		id := event(i).OrderID
		switch {
		case err == nil:
			ok++
			if !stored[id] {
				t.Errorf("%s acknowledged but not on the stream", id)
			}
		case errors.Is(err, order.ErrNotEnqueued):
			refused++
			if stored[id] {
				t.Errorf("%s refused as not enqueued but on the stream", id)
			}
		default:
			doubt++
		}
	}
	t.Logf("acknowledged %d, refused %d, in doubt %d", ok, refused, doubt)
}

func TestBatchedClosed(t *testing.T) {
	nc := mustEmbedded(t)
	bus, err := natsbus.New(context.Background(), nc, natsbus.Config{PublishBatch: 16}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	bus.Close()
	if err := bus.Enqueue(context.Background(), event(1)); !errors.Is(err, order.ErrNotEnqueued) {
		t.Fatalf("Enqueue on a closed bus: %v, want ErrNotEnqueued", err)
	}
}

// TestBatchedLinger: with PublishLinger, placements arriving together fill
// their messages (a NATS server pays per message), and a placement alone
// never waits for company: the linger starts only after a batch of
// several.
func TestBatchedLinger(t *testing.T) {
	ctx := context.Background()
	nc := mustEmbedded(t)
	busy, err := natsbus.New(ctx, nc, natsbus.Config{AckWait: time.Second, PublishBatch: 64, PublishLinger: 30 * time.Millisecond}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(busy.Close)
	const n = 640
	var wg sync.WaitGroup
	errs := make(chan error, n)
	// A burst of 64 at once (batches of several: the linger starts), then
	// one every 200 µs or more: without a linger most of those messages
	// would carry one or two (the stream answers faster).
	for i := range n {
		wg.Go(func() { errs <- busy.Enqueue(ctx, event(i)) })
		if i >= 64 {
			time.Sleep(200 * time.Microsecond)
		}
	}
	waitNoErrors(t, &wg, errs)
	msgs, events := busy.Published()
	t.Logf("%d placements in %d messages", events, msgs)
	if events != n || msgs > n/8 {
		t.Errorf("%d placements in %d messages; want %d in at most %d (a 30 ms linger fills batches)", events, msgs, n, n/8)
	}
	for i := range n {
		if _, ok, err := busy.Placed(ctx, event(i).OrderID); err != nil || !ok {
			t.Fatalf("Placed(%s) = %v, %v after a lingered batch", event(i).OrderID, ok, err)
		}
	}
	persistAll(t, busy, nil)

	// One placement at a time: with an hour's linger, each still goes at
	// once (a wait would time the test out).
	alone, err := natsbus.New(ctx, nc, natsbus.Config{AckWait: time.Second, PublishBatch: 64, PublishLinger: time.Hour}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(alone.Close)
	for i := n; i < n+20; i++ {
		if err := alone.Enqueue(ctx, event(i)); err != nil {
			t.Fatal(err)
		}
	}
	if msgs, events := alone.Published(); msgs != 20 || events != 20 {
		t.Errorf("sequential placements: %d in %d messages, want 20 in 20", events, msgs)
	}
}

// TestBatchedGatherBehindInFlight: embedded, a batch that is not full
// never goes out while another awaits its acknowledgement (it gathers
// more placements instead), and every placement is published, with batches
// of 64 (rarely full here) and of 2 (mostly full).
func TestBatchedGatherBehindInFlight(t *testing.T) {
	ctx := context.Background()
	nc := mustEmbedded(t)
	for _, size := range []int{64, 2} {
		bus, err := natsbus.New(ctx, nc, natsbus.Config{AckWait: time.Second, PublishBatch: size}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		// 64 buyers placing one order after another, as a load generator's
		// connections do: batches of several, one after another.
		const buyers, each = 64, 20
		var wg sync.WaitGroup
		errs := make(chan error, buyers*each)
		for b := range buyers {
			wg.Go(func() {
				for i := range each {
					errs <- bus.Enqueue(ctx, event(size*100000+b*each+i))
				}
			})
		}
		waitNoErrors(t, &wg, errs)
		msgs, events := bus.Published()
		t.Logf("batch size %d: %d placements in %d messages", size, events, msgs)
		if events != buyers*each {
			t.Fatalf("batch size %d: %d placements published, want %d", size, events, buyers*each)
		}
		if n := bus.PublishedBeside(); n != 0 {
			t.Errorf("batch size %d: %d batches that were not full went out beside one in flight", size, n)
		}
		persistAll(t, bus, nil)
		bus.Close()
	}
}

// waitNoErrors waits for wg, then fails the test on the first error that
// its goroutines sent on errs.
func waitNoErrors(t *testing.T, wg *sync.WaitGroup, errs chan error) {
	t.Helper()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}
