package natsbus

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/domain/order"
)

// TestSweepOrphans: events on the stream at or below the consumer's ack
// floor are persisted, then removed, and no longer found by id. The floor is
// faked: a healthy work-queue stream cannot be made to keep acknowledged
// events, which is the state a killed server can leave behind.
func TestSweepOrphans(t *testing.T) {
	for _, batch := range []int{0, 16} {
		t.Run(fmt.Sprint("publish_batch=", batch), func(t *testing.T) {
			ctx := context.Background()
			e, err := StartEmbedded(t.TempDir(), "", false)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(e.Shutdown)
			nc, err := e.Connect("test")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			bus, err := New(ctx, nc, Config{PublishBatch: batch}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(bus.Close)
			for i := range 5 {
				ev := order.Placed{V: 1, OrderID: fmt.Sprintf("order-%d", i), SaleID: "s", SKU: "p", UserID: 1, Quantity: 1, PriceCents: 1,
					Key: fmt.Sprint("k", i), PlacedAt: time.Now().UTC()}
				if err := bus.Enqueue(ctx, ev); err != nil {
					t.Fatal(err)
				}
			}
			info, err := bus.stream.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// Everything but the last message sits below the (faked) floor.
			floor := info.State.LastSeq - 1
			saved := ackFloor
			ackFloor = func(context.Context, *Bus) (uint64, error) { return floor, nil }
			t.Cleanup(func() { ackFloor = saved })

			var persisted []string
			n, err := bus.sweepOrphans(ctx, func(_ context.Context, evs []order.Placed) error {
				for _, e := range evs {
					persisted = append(persisted, e.OrderID)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if n != len(persisted) || n == 0 || n > 4 {
				t.Fatalf("swept %d, persisted %v", n, persisted)
			}
			for _, id := range persisted {
				if _, ok, _ := bus.Placed(ctx, id); ok {
					t.Errorf("%s persisted as an orphan but still found on the stream", id)
				}
			}
			left, err := bus.Unpersisted(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(left)+n != 5 {
				t.Fatalf("%d swept + %d left on the stream, want 5", n, len(left))
			}
			if again, _ := bus.sweepOrphans(ctx, func(context.Context, []order.Placed) error { return nil }); again != 0 {
				t.Fatalf("a second sweep found %d more", again)
			}
		})
	}
}
