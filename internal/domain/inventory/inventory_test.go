package inventory_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/internal/testkit/stocktest"
)

// TestConformance holds the in-process counters to the rules every
// inventory.Stock keeps.
func TestConformance(t *testing.T) {
	stocktest.Run(t, func(t *testing.T) (a, b inventory.Stock) {
		c := inventory.New(spike.NewIDGenerator())
		return c, c
	})
}

var (
	ctx    = context.Background()
	starts = time.Date(2026, 11, 29, 20, 0, 0, 0, time.UTC)
	ends   = starts.Add(time.Hour)
)

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

// TestWindowBoundaries checks the sale window to the microsecond, on a
// test clock (the conformance suite uses real time): the start is
// inclusive, the end exclusive, and a replay is answered after the end.
func TestWindowBoundaries(t *testing.T) {
	clk := &clock{now: starts}
	c := inventory.New(spike.NewIDGenerator())
	inventory.SetClock(c, clk.Now)
	s := sale.Sale{ID: "sale-1", SKU: "sku-1", Stock: 10, PriceCents: 999, PerUserLimit: 5, StartsAt: starts, EndsAt: ends}
	if err := c.Open(ctx, s); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		at      time.Time
		key     string
		wantErr error
	}{
		{"just before start", starts.Add(-time.Microsecond), "a", inventory.ErrNotActive},
		{"at start (inclusive)", starts, "b", nil},
		{"just before end", ends.Add(-time.Microsecond), "c", nil},
		{"at end (exclusive)", ends, "d", inventory.ErrNotActive},
		{"replay after the end", ends.Add(time.Hour), "b", nil},
	}
	for _, tt := range tests {
		clk.Set(tt.at)
		res, _, err := c.Reserve(ctx, inventory.Request{SaleID: s.ID, UserID: 1, Key: tt.key, Quantity: 1})
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: Reserve() = %v, want %v", tt.name, err, tt.wantErr)
		}
		if err == nil {
			c.Confirm(ctx, res)
			if tt.key != "b" && !res.PlacedAt.Equal(tt.at.Truncate(time.Microsecond)) {
				t.Errorf("%s: PlacedAt %v, want %v", tt.name, res.PlacedAt, tt.at)
			}
		}
	}
}

// TestHugeQuantity: a quantity beyond what a hold record keeps (possible
// only for a sale opened without sale.Validate's limit) replays exactly.
func TestHugeQuantity(t *testing.T) {
	c := inventory.New(spike.NewIDGenerator())
	s := sale.Sale{ID: "huge", SKU: "sku-1", Stock: 1 << 40, PerUserLimit: 1 << 40, StartsAt: time.Now().Add(-time.Hour)}
	if err := c.Open(ctx, s); err != nil {
		t.Fatal(err)
	}
	r := inventory.Request{SaleID: s.ID, UserID: 1, Key: "k", Quantity: 1<<33 + 5}
	res, _, err := c.Reserve(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	c.Confirm(ctx, res)
	again, replay, err := c.Reserve(ctx, r)
	if err != nil || !replay || again != res {
		t.Fatalf("replay = %+v, %v, %v; want %+v", again, replay, err, res)
	}
	if ok, err := c.Return(ctx, inventory.Return{SaleID: s.ID, OrderID: res.OrderID, UserID: 1, Key: "k", Quantity: r.Quantity}); !ok || err != nil {
		t.Fatalf("Return() = %v, %v", ok, err)
	}
	if left, _, _ := c.Remaining(ctx, s.ID); left != 1<<40 {
		t.Errorf("Remaining() = %d after the return, want %d", left, int64(1<<40))
	}
}
