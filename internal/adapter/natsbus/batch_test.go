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
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
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
