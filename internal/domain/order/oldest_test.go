package order_test

import (
	"context"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/domain/order"
)

// TestOldestPending: the oldest pending order over every buyer, until it is
// persisted; none when nothing is pending.
func TestOldestPending(t *testing.T) {
	svc, _, _ := newTestService()
	if _, ok := svc.OldestPending(); ok {
		t.Fatal("OldestPending on an empty service: got one")
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	events := []order.Placed{
		{V: 1, OrderID: "o-2", SaleID: "s", SKU: "p", UserID: 2, Quantity: 1, Key: "k2", PlacedAt: t0.Add(time.Second)},
		{V: 1, OrderID: "o-1", SaleID: "s", SKU: "p", UserID: 1, Quantity: 1, Key: "k1", PlacedAt: t0},
		{V: 1, OrderID: "o-3", SaleID: "s", SKU: "p", UserID: 2, Quantity: 1, Key: "k3", PlacedAt: t0.Add(2 * time.Second)},
	}
	svc.Restore(events)
	if got, ok := svc.OldestPending(); !ok || !got.Equal(t0) {
		t.Fatalf("OldestPending = %v, %v; want %v", got, ok, t0)
	}
	if err := svc.Persist(context.Background(), events[1:2]); err != nil {
		t.Fatal(err)
	}
	if got, ok := svc.OldestPending(); !ok || !got.Equal(t0.Add(time.Second)) {
		t.Fatalf("after persisting the oldest: OldestPending = %v, %v; want %v", got, ok, t0.Add(time.Second))
	}
}
