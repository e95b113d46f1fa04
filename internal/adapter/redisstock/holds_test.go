package redisstock_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/spikehq/spike/internal/adapter/redisstock"
	"github.com/spikehq/spike/internal/domain/inventory"
)

// TestHoldsUnknownWhenCountersLost: with a sale's keys gone from Redis the
// counters cannot say whether they hold a reservation: HoldUnknown (the
// order workers retry rather than refuse a genuine order), and the sale is
// reported fenced so that it is rebuilt.
func TestHoldsUnknownWhenCountersLost(t *testing.T) {
	client := mustShared(t)
	ctx := context.Background()
	var fenced atomic.Int32
	c := newCounters(t, client, redisstock.Config{OnFenced: func(string) { fenced.Add(1) }})
	cp := campaign(t, 5, 2)
	deleteSale(t, client, "spiketest", cp.ID)
	if err := c.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	res, _, err := c.Reserve(ctx, req(cp, 1, "a", 1))
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Holds(ctx, []inventory.Reservation{res})
	if err != nil || got[0] != inventory.Held {
		t.Fatalf("Holds() = %v, %v; want held", got, err)
	}
	// Redis loses the sale's keys.
	base := "spiketest:{sale:" + cp.ID + "}:"
	if err := client.Do(ctx, client.B().Del().Key(base+"meta", base+"stock", base+"users", base+"keys").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	got, err = c.Holds(ctx, []inventory.Reservation{res})
	if err != nil || got[0] != inventory.HoldUnknown {
		t.Fatalf("Holds() after the keys were lost = %v, %v; want unknown", got, err)
	}
	if fenced.Load() == 0 {
		t.Error("OnFenced was not called")
	}
}
