package inventory_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/inventory"
)

var (
	ctx    = context.Background()
	starts = time.Date(2026, 11, 29, 20, 0, 0, 0, time.UTC)
	ends   = starts.Add(time.Hour)
)

func campaign(allocated, limit int64) inventory.Campaign {
	return inventory.Campaign{ID: "sale-1", SKU: "sku-1", Allocated: allocated, PriceCents: 999, PerUserLimit: limit, StartsAt: starts, EndsAt: ends}
}

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time   { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time)  { c.mu.Lock(); c.now = t; c.mu.Unlock() }
func newClock(t time.Time) *clock { return &clock{now: t} }
func during() time.Time           { return starts.Add(time.Minute) }
func req(user int64, key string, qty int64) inventory.Request {
	return inventory.Request{SaleID: "sale-1", UserID: user, Key: key, Quantity: qty}
}

func newCounters(t *testing.T, cp inventory.Campaign, clk *clock) *inventory.Counters {
	t.Helper()
	c := inventory.New(spike.NewIDGenerator())
	c.SetClock(clk.Now)
	c.Open(cp)
	return c
}

func kindOf(err error) error {
	for _, k := range []error{spike.ErrInvalid, spike.ErrNotFound, spike.ErrConflict, spike.ErrSoldOut,
		spike.ErrLimitExceeded, spike.ErrSaleNotActive, spike.ErrUnavailable} {
		if errors.Is(err, k) {
			return k
		}
	}
	return err
}

// step is one Reserve call made before the request under test.
type step struct {
	at      time.Time
	r       inventory.Request
	confirm bool
}

func TestReserve(t *testing.T) {
	tests := []struct {
		name          string
		cp            inventory.Campaign
		setup         []step
		at            time.Time
		r             inventory.Request
		wantErr       error
		wantReplayOf  int // index in setup of the reservation replayed; -1: a new one
		wantRemaining int64
	}{
		{name: "first reservation", cp: campaign(10, 2), at: during(), r: req(1, "k1", 2), wantReplayOf: -1, wantRemaining: 8},
		{name: "replay of a confirmed key", cp: campaign(10, 2),
			setup: []step{{during(), req(1, "k1", 2), true}}, at: during(), r: req(1, "k1", 2), wantReplayOf: 0, wantRemaining: 8},
		{name: "replay first, even after sold out", cp: campaign(2, 2),
			setup: []step{{during(), req(1, "k1", 2), true}}, at: during(), r: req(1, "k1", 2), wantReplayOf: 0, wantRemaining: 0},
		{name: "replay first, even after the end", cp: campaign(10, 2),
			setup: []step{{during(), req(1, "k1", 1), true}}, at: ends.Add(time.Hour), r: req(1, "k1", 1), wantReplayOf: 0, wantRemaining: 9},
		{name: "replay first, even when the buyer is at the limit", cp: campaign(10, 2),
			setup: []step{{during(), req(1, "k1", 1), true}, {during(), req(1, "k2", 1), true}}, at: during(), r: req(1, "k1", 1), wantReplayOf: 0, wantRemaining: 8},
		{name: "same key, other quantity", cp: campaign(10, 2),
			setup: []step{{during(), req(1, "k1", 1), true}}, at: during(), r: req(1, "k1", 2), wantErr: spike.ErrConflict, wantRemaining: 9},
		{name: "same key, other quantity, after sold out", cp: campaign(1, 2),
			setup: []step{{during(), req(1, "k1", 1), true}}, at: during(), r: req(1, "k1", 2), wantErr: spike.ErrConflict, wantRemaining: 0},
		{name: "same key, other quantity, unconfirmed", cp: campaign(10, 2),
			setup: []step{{during(), req(1, "k1", 1), false}}, at: during(), r: req(1, "k1", 2), wantErr: spike.ErrConflict, wantRemaining: 9},
		{name: "unconfirmed replay is in progress", cp: campaign(10, 2),
			setup: []step{{during(), req(1, "k1", 1), false}}, at: during(), r: req(1, "k1", 1), wantErr: spike.ErrUnavailable, wantRemaining: 9},
		{name: "unconfirmed replay after sold out is in progress", cp: campaign(1, 2),
			setup: []step{{during(), req(1, "k1", 1), false}}, at: during(), r: req(1, "k1", 1), wantErr: spike.ErrUnavailable, wantRemaining: 0},
		{name: "same key, another buyer, is a new request", cp: campaign(10, 2),
			setup: []step{{during(), req(1, "k1", 1), true}}, at: during(), r: req(2, "k1", 1), wantReplayOf: -1, wantRemaining: 8},
		{name: "quantity 0", cp: campaign(10, 2), at: during(), r: req(1, "k1", 0), wantErr: spike.ErrInvalid, wantRemaining: 10},
		{name: "quantity -1", cp: campaign(10, 2), at: during(), r: req(1, "k1", -1), wantErr: spike.ErrInvalid, wantRemaining: 10},
		{name: "quantity above the limit", cp: campaign(10, 2), at: during(), r: req(1, "k1", 3), wantErr: spike.ErrInvalid, wantRemaining: 10},
		{name: "quantity above the limit, before start", cp: campaign(10, 2), at: starts.Add(-time.Minute), r: req(1, "k1", 3), wantErr: spike.ErrInvalid, wantRemaining: 10},
		{name: "before start", cp: campaign(10, 2), at: starts.Add(-time.Microsecond), r: req(1, "k1", 1), wantErr: spike.ErrSaleNotActive, wantRemaining: 10},
		{name: "at start (inclusive)", cp: campaign(10, 2), at: starts, r: req(1, "k1", 1), wantReplayOf: -1, wantRemaining: 9},
		{name: "just before end", cp: campaign(10, 2), at: ends.Add(-time.Microsecond), r: req(1, "k1", 1), wantReplayOf: -1, wantRemaining: 9},
		{name: "at end (exclusive)", cp: campaign(10, 2), at: ends, r: req(1, "k1", 1), wantErr: spike.ErrSaleNotActive, wantRemaining: 10},
		{name: "after end", cp: campaign(10, 2), at: ends.Add(time.Hour), r: req(1, "k1", 1), wantErr: spike.ErrSaleNotActive, wantRemaining: 10},
		{name: "no end", cp: func() inventory.Campaign { c := campaign(10, 2); c.EndsAt = time.Time{}; return c }(),
			at: ends.Add(1000 * time.Hour), r: req(1, "k1", 1), wantReplayOf: -1, wantRemaining: 9},
		{name: "limit: held + n > limit", cp: campaign(10, 2),
			setup: []step{{during(), req(1, "k1", 1), true}}, at: during(), r: req(1, "k2", 2), wantErr: spike.ErrLimitExceeded, wantRemaining: 9},
		{name: "limit: held + n == limit", cp: campaign(10, 2),
			setup: []step{{during(), req(1, "k1", 1), true}}, at: during(), r: req(1, "k2", 1), wantReplayOf: -1, wantRemaining: 8},
		{name: "limit counts unconfirmed holds", cp: campaign(10, 1),
			setup: []step{{during(), req(1, "k1", 1), false}}, at: during(), r: req(1, "k2", 1), wantErr: spike.ErrLimitExceeded, wantRemaining: 9},
		{name: "limit is per buyer", cp: campaign(10, 1),
			setup: []step{{during(), req(1, "k1", 1), true}}, at: during(), r: req(2, "k2", 1), wantReplayOf: -1, wantRemaining: 8},
		{name: "stock: less left than asked", cp: campaign(3, 2),
			setup: []step{{during(), req(1, "k1", 2), true}}, at: during(), r: req(2, "k1", 2), wantErr: spike.ErrSoldOut, wantRemaining: 1},
		{name: "stock: exactly what is left", cp: campaign(3, 2),
			setup: []step{{during(), req(1, "k1", 2), true}}, at: during(), r: req(2, "k1", 1), wantReplayOf: -1, wantRemaining: 0},
		{name: "sold out", cp: campaign(2, 2),
			setup: []step{{during(), req(1, "k1", 2), true}}, at: during(), r: req(2, "k1", 1), wantErr: spike.ErrSoldOut, wantRemaining: 0},
		{name: "sold out, before the buyer's limit check", cp: campaign(2, 2),
			setup: []step{{during(), req(1, "k1", 2), true}}, at: during(), r: req(1, "k2", 1), wantErr: spike.ErrSoldOut, wantRemaining: 0},
		{name: "unknown sale", cp: campaign(10, 2), at: during(), r: inventory.Request{SaleID: "nope", UserID: 1, Key: "k", Quantity: 1}, wantErr: spike.ErrNotFound, wantRemaining: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock(during())
			c := newCounters(t, tt.cp, clk)
			var setup []inventory.Reservation
			for i, s := range tt.setup {
				clk.Set(s.at)
				res, replay, err := c.Reserve(ctx, s.r)
				if err != nil || replay {
					t.Fatalf("setup step %d: Reserve(%+v) = replay %v, %v", i, s.r, replay, err)
				}
				if s.confirm {
					if err := c.Confirm(ctx, res); err != nil {
						t.Fatal(err)
					}
				}
				setup = append(setup, res)
			}
			clk.Set(tt.at)
			res, replay, err := c.Reserve(ctx, tt.r)
			if kindOf(err) != tt.wantErr {
				t.Fatalf("Reserve(%+v) error = %v, want %v", tt.r, err, tt.wantErr)
			}
			if err != nil {
				var de *spike.Error
				if !errors.As(err, &de) || de.Message == "" {
					t.Errorf("Reserve() error %#v is not a *spike.Error with a message", err)
				}
				if errors.Is(err, inventory.ErrInProgress) {
					// The unconfirmed reservation comes with the error.
					if res.OrderID != setup[0].OrderID || res.Key != tt.r.Key {
						t.Errorf("ErrInProgress came with %+v, want the pending reservation %+v", res, setup[0])
					}
				} else if diff := cmp.Diff(inventory.Reservation{}, res); diff != "" {
					t.Errorf("failed Reserve() returned a reservation (-want +got):\n%s", diff)
				}
			} else {
				if replay != (tt.wantReplayOf >= 0) {
					t.Errorf("Reserve() replay = %v, want %v", replay, tt.wantReplayOf >= 0)
				}
				want := inventory.Reservation{OrderID: res.OrderID, SaleID: "sale-1", SKU: "sku-1", UserID: tt.r.UserID,
					Key: tt.r.Key, Quantity: tt.r.Quantity, PriceCents: 999, PlacedAt: tt.at.UTC().Truncate(time.Microsecond)}
				if tt.wantReplayOf >= 0 {
					want = setup[tt.wantReplayOf]
				} else {
					for _, s := range setup {
						if s.OrderID == res.OrderID {
							t.Errorf("new reservation reuses order id %s", res.OrderID)
						}
					}
					if len(res.OrderID) != 26 {
						t.Errorf("order id %q is not 26 characters", res.OrderID)
					}
				}
				if diff := cmp.Diff(want, res); diff != "" {
					t.Errorf("Reserve() mismatch (-want +got):\n%s", diff)
				}
			}
			if got, _ := c.Remaining("sale-1"); got != tt.wantRemaining {
				t.Errorf("Remaining() = %d, want %d", got, tt.wantRemaining)
			}
			checkBalanced(t, c, "sale-1")
		})
	}
}

// TestReserveQuantityCheckedWhenSoldOut: API.md says n > per_user_limit is
// 400 invalid; the sold-out fast path answers sold_out first.
func TestReserveQuantityCheckedWhenSoldOut(t *testing.T) {
	clk := newClock(during())
	c := newCounters(t, campaign(2, 2), clk)
	res, _, err := c.Reserve(ctx, req(1, "k1", 2))
	if err != nil {
		t.Fatal(err)
	}
	c.Confirm(ctx, res)
	for _, q := range []int64{0, -1, 3} {
		if _, _, err := c.Reserve(ctx, req(2, "k1", q)); kindOf(err) != spike.ErrInvalid {
			t.Errorf("Reserve(quantity %d) on a sold-out sale = %v, want invalid", q, err)
		}
	}
}

func checkBalanced(t *testing.T, c *inventory.Counters, saleID string) {
	t.Helper()
	st, ok := c.Stats(saleID)
	if !ok {
		t.Fatalf("Stats(%s): not open", saleID)
	}
	if st.Remaining+st.Held != st.Allocated {
		t.Errorf("remaining %d + held %d != allocated %d", st.Remaining, st.Held, st.Allocated)
	}
}

func TestRelease(t *testing.T) {
	clk := newClock(during())
	c := newCounters(t, campaign(3, 3), clk)
	a, _, err := c.Reserve(ctx, req(1, "a", 3))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Reserve(ctx, req(2, "b", 1)); kindOf(err) != spike.ErrSoldOut {
		t.Fatalf("Reserve on a sold-out sale = %v, want sold out", err)
	}

	// Release restores the units, clears the sold-out flag and forgets the key.
	if err := c.Release(ctx, a); err != nil {
		t.Fatal(err)
	}
	want := inventory.Stats{Allocated: 3, Remaining: 3}
	if got, _ := c.Stats("sale-1"); !cmp.Equal(want, got) {
		t.Errorf("Stats() after Release mismatch (-want +got):\n%s", cmp.Diff(want, got))
	}
	// Releasing twice changes nothing.
	if err := c.Release(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Stats("sale-1"); !cmp.Equal(want, got) {
		t.Errorf("Stats() after a second Release mismatch (-want +got):\n%s", cmp.Diff(want, got))
	}
	b, replay, err := c.Reserve(ctx, req(2, "b", 1))
	if err != nil || replay {
		t.Fatalf("Reserve after Release = replay %v, %v; want a new reservation", replay, err)
	}
	// The released key is free again: the same buyer and key get a new order.
	a2, replay, err := c.Reserve(ctx, req(1, "a", 2))
	if err != nil || replay || a2.OrderID == a.OrderID {
		t.Fatalf("Reserve of a released key = %+v, replay %v, %v; want a new order", a2, replay, err)
	}
	// A stale Release of the first reservation must not undo the new one.
	if err := c.Release(ctx, a); err != nil {
		t.Fatal(err)
	}
	want = inventory.Stats{Allocated: 3, Remaining: 0, Held: 3, Buyers: 2, MaxPerBuyer: 2}
	if got, _ := c.Stats("sale-1"); !cmp.Equal(want, got) {
		t.Errorf("Stats() after a stale Release mismatch (-want +got):\n%s", cmp.Diff(want, got))
	}
	// Release of an unknown sale is a no-op.
	if err := c.Release(ctx, inventory.Reservation{SaleID: "nope", OrderID: b.OrderID, UserID: 2, Key: "b"}); err != nil {
		t.Errorf("Release(unknown sale) = %v", err)
	}
	checkBalanced(t, c, "sale-1")
}

func TestConfirmOnlyItsOwnReservation(t *testing.T) {
	clk := newClock(during())
	c := newCounters(t, campaign(10, 2), clk)
	res, _, err := c.Reserve(ctx, req(1, "k", 1))
	if err != nil {
		t.Fatal(err)
	}
	// Confirming another order id under the same key does not confirm this one.
	other := res
	other.OrderID = "someone-else"
	c.Confirm(ctx, other)
	if _, _, err := c.Reserve(ctx, req(1, "k", 1)); kindOf(err) != spike.ErrUnavailable {
		t.Fatalf("replay after a foreign Confirm = %v, want in progress", err)
	}
	c.Confirm(ctx, res)
	got, replay, err := c.Reserve(ctx, req(1, "k", 1))
	if err != nil || !replay || got.OrderID != res.OrderID {
		t.Fatalf("replay after Confirm = %+v, replay %v, %v", got, replay, err)
	}
}

func TestOpenTwiceKeepsCounters(t *testing.T) {
	clk := newClock(during())
	c := newCounters(t, campaign(10, 2), clk)
	if _, _, err := c.Reserve(ctx, req(1, "k", 2)); err != nil {
		t.Fatal(err)
	}
	c.Open(campaign(10, 2))
	if got, _ := c.Remaining("sale-1"); got != 8 {
		t.Errorf("Remaining() after a second Open = %d, want 8", got)
	}
	if _, ok := c.Remaining("nope"); ok {
		t.Errorf("Remaining(unknown) ok = true")
	}
}

func TestRestore(t *testing.T) {
	placed := starts.Add(time.Minute).Add(123 * time.Microsecond)
	tests := []struct {
		name      string
		allocated int64
		holdings  []inventory.Holding
		want      inventory.Stats
		soldOut   bool
	}{
		{"nothing", 5, nil, inventory.Stats{Allocated: 5, Remaining: 5}, false},
		{"two buyers", 5, []inventory.Holding{
			{OrderID: "o1", UserID: 1, Key: "a", Quantity: 2, PlacedAt: placed},
			{OrderID: "o2", UserID: 2, Key: "b", Quantity: 1, PlacedAt: placed},
		}, inventory.Stats{Allocated: 5, Remaining: 2, Held: 3, Buyers: 2, MaxPerBuyer: 2}, false},
		{"each order id counted once", 5, []inventory.Holding{
			{OrderID: "o1", UserID: 1, Key: "a", Quantity: 2, PlacedAt: placed},
			{OrderID: "o1", UserID: 1, Key: "a", Quantity: 2, PlacedAt: placed},
			{OrderID: "o1", UserID: 1, Key: "a", Quantity: 2, PlacedAt: placed},
		}, inventory.Stats{Allocated: 5, Remaining: 3, Held: 2, Buyers: 1, MaxPerBuyer: 2}, false},
		{"one buyer, two keys", 5, []inventory.Holding{
			{OrderID: "o1", UserID: 1, Key: "a", Quantity: 1, PlacedAt: placed},
			{OrderID: "o2", UserID: 1, Key: "b", Quantity: 1, PlacedAt: placed},
		}, inventory.Stats{Allocated: 5, Remaining: 3, Held: 2, Buyers: 1, MaxPerBuyer: 2}, false},
		{"all sold", 3, []inventory.Holding{
			{OrderID: "o1", UserID: 1, Key: "a", Quantity: 2, PlacedAt: placed},
			{OrderID: "o2", UserID: 2, Key: "a", Quantity: 1, PlacedAt: placed},
		}, inventory.Stats{Allocated: 3, Remaining: 0, Held: 3, Buyers: 2, MaxPerBuyer: 2}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock(during())
			c := inventory.New(spike.NewIDGenerator())
			c.SetClock(clk.Now)
			// Restore replaces whatever was there.
			c.Open(campaign(tt.allocated, 2))
			c.Reserve(ctx, req(99, "gone", 1))
			c.Restore(campaign(tt.allocated, 2), tt.holdings)
			got, ok := c.Stats("sale-1")
			if !ok {
				t.Fatal("not open after Restore")
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Stats() mismatch (-want +got):\n%s", diff)
			}
			// Restored holdings are confirmed: their keys replay, even when sold out.
			for _, h := range tt.holdings {
				res, replay, err := c.Reserve(ctx, req(h.UserID, h.Key, h.Quantity))
				want := inventory.Reservation{OrderID: h.OrderID, SaleID: "sale-1", SKU: "sku-1", UserID: h.UserID,
					Key: h.Key, Quantity: h.Quantity, PriceCents: 999, PlacedAt: h.PlacedAt.UTC()}
				if err != nil || !replay {
					t.Fatalf("replay of restored %+v = replay %v, %v", h, replay, err)
				}
				if diff := cmp.Diff(want, res); diff != "" {
					t.Errorf("replay mismatch (-want +got):\n%s", diff)
				}
			}
			_, _, err := c.Reserve(ctx, req(100, "new", 1))
			if tt.soldOut != (kindOf(err) == spike.ErrSoldOut) {
				t.Errorf("new Reserve after Restore = %v, want sold out %v", err, tt.soldOut)
			}
		})
	}
}

// TestReserveConcurrent has many buyers race for one sale, with replays,
// conflicting retries and releases, and checks that the counters balance
// and no buyer holds more than the limit.
func TestReserveConcurrent(t *testing.T) {
	const (
		allocated  = 500
		limit      = 3
		buyers     = 200
		goroutines = 32
		perG       = 500
	)
	clk := newClock(during())
	c := newCounters(t, campaign(allocated, limit), clk)
	var (
		mu      sync.Mutex
		orders  = map[string]inventory.Reservation{} // live reservations by order id
		granted atomic.Int64
	)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for i := range perG {
				user := int64(1 + rng.IntN(buyers))
				key := fmt.Sprintf("k%d", rng.IntN(8)) // keys collide on purpose
				qty := int64(1 + rng.IntN(limit))
				res, replay, err := c.Reserve(ctx, req(user, key, qty))
				switch {
				case err != nil:
					switch kindOf(err) {
					case spike.ErrSoldOut, spike.ErrLimitExceeded, spike.ErrConflict, spike.ErrUnavailable:
					default:
						t.Errorf("Reserve: unexpected %v", err)
					}
				case replay:
					mu.Lock()
					prev, ok := orders[res.OrderID]
					mu.Unlock()
					if !ok || prev.UserID != user || prev.Key != key || prev.Quantity != qty {
						t.Errorf("replay %+v does not match a live reservation (%+v, %v)", res, prev, ok)
					}
				default:
					granted.Add(1)
					if i%10 == 0 {
						// Pretend the enqueue failed: give it back.
						c.Release(ctx, res)
						continue
					}
					mu.Lock()
					orders[res.OrderID] = res
					mu.Unlock()
					c.Confirm(ctx, res)
				}
			}
		})
	}
	wg.Wait()

	st, _ := c.Stats("sale-1")
	var held int64
	perUser := map[int64]int64{}
	for _, r := range orders {
		held += r.Quantity
		perUser[r.UserID] += r.Quantity
	}
	if st.Remaining+st.Held != allocated {
		t.Errorf("remaining %d + held %d != allocated %d", st.Remaining, st.Held, allocated)
	}
	if st.Held != held {
		t.Errorf("counters hold %d units, live reservations %d", st.Held, held)
	}
	if st.Remaining < 0 {
		t.Errorf("remaining %d < 0: oversold", st.Remaining)
	}
	if st.MaxPerBuyer > limit {
		t.Errorf("a buyer holds %d units, limit %d", st.MaxPerBuyer, limit)
	}
	for u, n := range perUser {
		if n > limit {
			t.Errorf("buyer %d holds %d units, limit %d", u, n, limit)
		}
	}
	if granted.Load() == 0 || st.Remaining == allocated {
		t.Errorf("no reservation succeeded")
	}
	t.Logf("granted %d, live %d orders (%d units), remaining %d", granted.Load(), len(orders), held, st.Remaining)
}
