// Package stocktest is the conformance suite every implementation of
// inventory.Stock must pass, so that the in-process counters and the Redis
// counters (standalone and Cluster) keep the same rules:
//
//	func TestConformance(t *testing.T) {
//		stocktest.Run(t, func(t *testing.T) (a, b inventory.Stock) {
//			c := newCounters(t) // cleaned up by t.Cleanup
//			return c, c         // or two instances sharing the same state
//		})
//	}
//
// newStock returns two instances that share their state (for in-process
// counters, the same value twice); the suite uses random sale ids, so the
// state may be shared with other tests.
package stocktest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/sale"
)

// NewStock returns two instances of the counters under test sharing one
// state.
type NewStock func(t *testing.T) (a, b inventory.Stock)

// Run runs the suite; newStock is called once per subtest.
func Run(t *testing.T, newStock NewStock) {
	tests := []struct {
		name string
		fn   func(t *testing.T, a, b inventory.Stock)
	}{
		{"Reserve", testReserve},
		{"QuantityCheckedWhenSoldOut", testQuantityWhenSoldOut},
		{"Release", testRelease},
		{"ConfirmOnlyItsOwn", testConfirmOnlyItsOwn},
		{"OpenTwiceKeepsCounters", testOpenTwice},
		{"UnknownSale", testUnknownSale},
		{"Restore", testRestore},
		{"Return", testReturn},
		{"ReturnAfterRestore", testReturnAfterRestore},
		{"ReserveConcurrent", testReserveConcurrent},
		{"ReturnConcurrent", testReturnConcurrent},
		{"Holds", testHolds},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := newStock(t)
			tt.fn(t, a, b)
		})
	}
}

var ctx = context.Background()

// ID returns a random sale id.
func ID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "st-" + hex.EncodeToString(b[:])
}

// active returns a sale with a random id, open from an hour ago for two
// hours.
func active(stock, limit int64) sale.Sale {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return sale.Sale{ID: ID(), SKU: "sku-1", Stock: stock, PriceCents: 999, PerUserLimit: limit,
		StartsAt: now.Add(-time.Hour), EndsAt: now.Add(time.Hour)}
}

func open(t *testing.T, c inventory.Stock, s sale.Sale) {
	t.Helper()
	if err := c.Open(ctx, s); err != nil {
		t.Fatalf("Open(%s) = %v", s.ID, err)
	}
}

func rq(s sale.Sale, user int64, key string, qty int64) inventory.Request {
	return inventory.Request{SaleID: s.ID, UserID: user, Key: key, Quantity: qty}
}

func ret(res inventory.Reservation) inventory.Return {
	return inventory.Return{SaleID: res.SaleID, OrderID: res.OrderID, UserID: res.UserID, Key: res.Key, Quantity: res.Quantity}
}

// KindOf returns the spike error kind of err, or err.
func KindOf(err error) error {
	for _, k := range []error{spike.ErrInvalid, spike.ErrNotFound, spike.ErrConflict, spike.ErrSoldOut,
		spike.ErrLimitExceeded, spike.ErrSaleNotActive, spike.ErrUnavailable} {
		if errors.Is(err, k) {
			return k
		}
	}
	return err
}

func mustReserve(t *testing.T, c inventory.Stock, r inventory.Request, confirm bool) inventory.Reservation {
	t.Helper()
	res, replay, err := c.Reserve(ctx, r)
	if err != nil || replay {
		t.Fatalf("Reserve(%+v) = replay %v, %v; want a new reservation", r, replay, err)
	}
	if confirm {
		if err := c.Confirm(ctx, res); err != nil {
			t.Fatalf("Confirm() = %v", err)
		}
	}
	return res
}

func stats(t *testing.T, c inventory.Stock, id string) inventory.Stats {
	t.Helper()
	st, ok, err := c.Stats(ctx, id)
	if err != nil || !ok {
		t.Fatalf("Stats(%s) = %v, %v", id, ok, err)
	}
	return st
}

func wantStats(t *testing.T, c inventory.Stock, id string, want inventory.Stats) {
	t.Helper()
	if diff := cmp.Diff(want, stats(t, c, id)); diff != "" {
		t.Errorf("Stats() mismatch (-want +got):\n%s", diff)
	}
}

func checkBalanced(t *testing.T, c inventory.Stock, id string) {
	t.Helper()
	st := stats(t, c, id)
	if st.Remaining+st.Held != st.Allocated || st.Remaining < 0 {
		t.Errorf("remaining %d + held %d != allocated %d", st.Remaining, st.Held, st.Allocated)
	}
}

// step is one Reserve call made before the request under test.
type step struct {
	user    int64
	key     string
	qty     int64
	confirm bool
}

func testReserve(t *testing.T, a, b inventory.Stock) {
	s := func(stock, limit int64) func(sale.Sale) sale.Sale {
		return func(sl sale.Sale) sale.Sale { sl.Stock, sl.PerUserLimit = stock, limit; return sl }
	}
	window := func(starts, ends time.Duration, noEnd bool) func(sale.Sale) sale.Sale {
		return func(sl sale.Sale) sale.Sale {
			now := time.Now().UTC().Truncate(time.Millisecond)
			sl.StartsAt, sl.EndsAt = now.Add(starts), now.Add(ends)
			if noEnd {
				sl.EndsAt = time.Time{}
			}
			return sl
		}
	}
	tests := []struct {
		name          string
		sale          []func(sale.Sale) sale.Sale
		setup         []step
		user          int64
		key           string
		qty           int64
		wantErr       error
		wantReplayOf  int // index in setup of the reservation replayed; -1: a new one
		wantRemaining int64
		unknownSale   bool
	}{
		{name: "first reservation", sale: nil, user: 1, key: "k1", qty: 2, wantReplayOf: -1, wantRemaining: 8},
		{name: "replay of a confirmed key", setup: []step{{1, "k1", 2, true}}, user: 1, key: "k1", qty: 2, wantReplayOf: 0, wantRemaining: 8},
		{name: "replay first, even after sold out", sale: []func(sale.Sale) sale.Sale{s(2, 2)},
			setup: []step{{1, "k1", 2, true}}, user: 1, key: "k1", qty: 2, wantReplayOf: 0, wantRemaining: 0},
		{name: "replay first, even when the buyer is at the limit",
			setup: []step{{1, "k1", 1, true}, {1, "k2", 1, true}}, user: 1, key: "k1", qty: 1, wantReplayOf: 0, wantRemaining: 8},
		{name: "same key, other quantity", setup: []step{{1, "k1", 1, true}}, user: 1, key: "k1", qty: 2, wantErr: spike.ErrConflict, wantRemaining: 9},
		{name: "same key, other quantity, after sold out", sale: []func(sale.Sale) sale.Sale{s(1, 2)},
			setup: []step{{1, "k1", 1, true}}, user: 1, key: "k1", qty: 2, wantErr: spike.ErrConflict, wantRemaining: 0},
		{name: "same key, other quantity, unconfirmed", setup: []step{{1, "k1", 1, false}}, user: 1, key: "k1", qty: 2, wantErr: spike.ErrConflict, wantRemaining: 9},
		{name: "unconfirmed replay is in progress", setup: []step{{1, "k1", 1, false}}, user: 1, key: "k1", qty: 1, wantErr: spike.ErrUnavailable, wantRemaining: 9},
		{name: "unconfirmed replay after sold out is in progress", sale: []func(sale.Sale) sale.Sale{s(1, 2)},
			setup: []step{{1, "k1", 1, false}}, user: 1, key: "k1", qty: 1, wantErr: spike.ErrUnavailable, wantRemaining: 0},
		{name: "same key, another buyer, is a new request", setup: []step{{1, "k1", 1, true}}, user: 2, key: "k1", qty: 1, wantReplayOf: -1, wantRemaining: 8},
		{name: "quantity 0", user: 1, key: "k1", qty: 0, wantErr: spike.ErrInvalid, wantRemaining: 10},
		{name: "quantity -1", user: 1, key: "k1", qty: -1, wantErr: spike.ErrInvalid, wantRemaining: 10},
		{name: "quantity above the limit", user: 1, key: "k1", qty: 3, wantErr: spike.ErrInvalid, wantRemaining: 10},
		{name: "quantity above the limit, before start", sale: []func(sale.Sale) sale.Sale{window(time.Hour, 2*time.Hour, false)},
			user: 1, key: "k1", qty: 3, wantErr: spike.ErrInvalid, wantRemaining: 10},
		{name: "before start", sale: []func(sale.Sale) sale.Sale{window(time.Hour, 2*time.Hour, false)},
			user: 1, key: "k1", qty: 1, wantErr: spike.ErrSaleNotActive, wantRemaining: 10},
		{name: "after end", sale: []func(sale.Sale) sale.Sale{window(-2*time.Hour, -time.Hour, false)},
			user: 1, key: "k1", qty: 1, wantErr: spike.ErrSaleNotActive, wantRemaining: 10},
		{name: "no end", sale: []func(sale.Sale) sale.Sale{window(-time.Hour, 0, true)}, user: 1, key: "k1", qty: 1, wantReplayOf: -1, wantRemaining: 9},
		{name: "limit: held + n > limit", setup: []step{{1, "k1", 1, true}}, user: 1, key: "k2", qty: 2, wantErr: spike.ErrLimitExceeded, wantRemaining: 9},
		{name: "limit: held + n == limit", setup: []step{{1, "k1", 1, true}}, user: 1, key: "k2", qty: 1, wantReplayOf: -1, wantRemaining: 8},
		{name: "limit counts unconfirmed holds", sale: []func(sale.Sale) sale.Sale{s(10, 1)},
			setup: []step{{1, "k1", 1, false}}, user: 1, key: "k2", qty: 1, wantErr: spike.ErrLimitExceeded, wantRemaining: 9},
		{name: "limit is per buyer", sale: []func(sale.Sale) sale.Sale{s(10, 1)},
			setup: []step{{1, "k1", 1, true}}, user: 2, key: "k2", qty: 1, wantReplayOf: -1, wantRemaining: 8},
		{name: "stock: less left than asked", sale: []func(sale.Sale) sale.Sale{s(3, 2)},
			setup: []step{{1, "k1", 2, true}}, user: 2, key: "k1", qty: 2, wantErr: spike.ErrSoldOut, wantRemaining: 1},
		{name: "stock: exactly what is left", sale: []func(sale.Sale) sale.Sale{s(3, 2)},
			setup: []step{{1, "k1", 2, true}}, user: 2, key: "k1", qty: 1, wantReplayOf: -1, wantRemaining: 0},
		{name: "sold out", sale: []func(sale.Sale) sale.Sale{s(2, 2)},
			setup: []step{{1, "k1", 2, true}}, user: 2, key: "k1", qty: 1, wantErr: spike.ErrSoldOut, wantRemaining: 0},
		{name: "sold out, before the buyer's limit check", sale: []func(sale.Sale) sale.Sale{s(2, 2)},
			setup: []step{{1, "k1", 2, true}}, user: 1, key: "k2", qty: 1, wantErr: spike.ErrSoldOut, wantRemaining: 0},
		{name: "unknown sale", unknownSale: true, user: 1, key: "k", qty: 1, wantErr: spike.ErrNotFound, wantRemaining: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sl := active(10, 2)
			for _, f := range tt.sale {
				sl = f(sl)
			}
			open(t, a, sl)
			var setup []inventory.Reservation
			for i, st := range tt.setup {
				c := a
				if i%2 == 1 {
					c = b
				}
				setup = append(setup, mustReserve(t, c, rq(sl, st.user, st.key, st.qty), st.confirm))
			}
			r := rq(sl, tt.user, tt.key, tt.qty)
			if tt.unknownSale {
				r.SaleID = ID()
			}
			before := time.Now().Add(-time.Second)
			res, replay, err := b.Reserve(ctx, r)
			if KindOf(err) != tt.wantErr {
				t.Fatalf("Reserve(%+v) error = %v, want %v", r, err, tt.wantErr)
			}
			if err != nil {
				var de *spike.Error
				if !errors.As(err, &de) || de.Message == "" {
					t.Errorf("Reserve() error %#v is not a *spike.Error with a message", err)
				}
				if errors.Is(err, inventory.ErrInProgress) {
					// The unconfirmed reservation comes with the error.
					if res.OrderID != setup[0].OrderID || res.Key != r.Key {
						t.Errorf("ErrInProgress came with %+v, want the pending reservation %+v", res, setup[0])
					}
				} else if diff := cmp.Diff(inventory.Reservation{}, res); diff != "" {
					t.Errorf("failed Reserve() returned a reservation (-want +got):\n%s", diff)
				}
			} else {
				if replay != (tt.wantReplayOf >= 0) {
					t.Errorf("Reserve() replay = %v, want %v", replay, tt.wantReplayOf >= 0)
				}
				want := inventory.Reservation{OrderID: res.OrderID, SaleID: sl.ID, SKU: "sku-1", UserID: r.UserID,
					Key: r.Key, Quantity: r.Quantity, PriceCents: 999, PlacedAt: res.PlacedAt}
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
					if res.PlacedAt.Location() != time.UTC || res.PlacedAt.Before(before) || res.PlacedAt.After(time.Now().Add(time.Second)) {
						t.Errorf("PlacedAt %v is not now, in UTC", res.PlacedAt)
					}
				}
				if diff := cmp.Diff(want, res); diff != "" {
					t.Errorf("Reserve() mismatch (-want +got):\n%s", diff)
				}
			}
			if got, _, _ := a.Remaining(ctx, sl.ID); got != tt.wantRemaining {
				t.Errorf("Remaining() = %d, want %d", got, tt.wantRemaining)
			}
			checkBalanced(t, a, sl.ID)
		})
	}
}

// testQuantityWhenSoldOut: n > per_user_limit is invalid even when the
// sold-out fast path could answer sold_out.
func testQuantityWhenSoldOut(t *testing.T, a, b inventory.Stock) {
	sl := active(2, 2)
	open(t, a, sl)
	mustReserve(t, a, rq(sl, 1, "k1", 2), true)
	for _, c := range []inventory.Stock{a, b} {
		for _, q := range []int64{0, -1, 3} {
			if _, _, err := c.Reserve(ctx, rq(sl, 2, "k1", q)); KindOf(err) != spike.ErrInvalid {
				t.Errorf("Reserve(quantity %d) on a sold-out sale = %v, want invalid", q, err)
			}
		}
	}
}

func testRelease(t *testing.T, a, b inventory.Stock) {
	sl := active(3, 3)
	open(t, a, sl)
	first := mustReserve(t, a, rq(sl, 1, "a", 3), false)
	if _, _, err := b.Reserve(ctx, rq(sl, 2, "b", 1)); KindOf(err) != spike.ErrSoldOut {
		t.Fatalf("Reserve on a sold-out sale = %v, want sold out", err)
	}
	// A release naming another order changes nothing.
	other := first
	other.OrderID = "someone-else"
	if err := a.Release(ctx, other); err != nil {
		t.Fatal(err)
	}
	wantStats(t, a, sl.ID, inventory.Stats{Allocated: 3, Remaining: 0, Held: 3, Buyers: 1, MaxPerBuyer: 3})
	// Release restores the units, clears the sold-out flag and forgets the
	// key; releasing twice changes nothing.
	for range 2 {
		if err := a.Release(ctx, first); err != nil {
			t.Fatal(err)
		}
		wantStats(t, a, sl.ID, inventory.Stats{Allocated: 3, Remaining: 3})
	}
	mustReserve(t, b, rq(sl, 2, "b", 1), true)
	// The released key is free again: the same buyer and key get a new order.
	again := mustReserve(t, b, rq(sl, 1, "a", 2), true)
	if again.OrderID == first.OrderID {
		t.Fatalf("Reserve of a released key reused order %s", first.OrderID)
	}
	// A stale Release of the first reservation must not undo the new one.
	if err := a.Release(ctx, first); err != nil {
		t.Fatal(err)
	}
	wantStats(t, a, sl.ID, inventory.Stats{Allocated: 3, Remaining: 0, Held: 3, Buyers: 2, MaxPerBuyer: 2})
	// Release of an unknown sale is a no-op.
	if err := a.Release(ctx, inventory.Reservation{SaleID: ID(), OrderID: again.OrderID, UserID: 1, Key: "a", Quantity: 2}); err != nil {
		t.Errorf("Release(unknown sale) = %v", err)
	}
}

func testConfirmOnlyItsOwn(t *testing.T, a, b inventory.Stock) {
	sl := active(10, 2)
	open(t, a, sl)
	res := mustReserve(t, a, rq(sl, 1, "k", 1), false)
	// Confirming another order id under the same key does not confirm this one.
	other := res
	other.OrderID = "someone-else"
	if err := b.Confirm(ctx, other); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Reserve(ctx, rq(sl, 1, "k", 1)); !errors.Is(err, inventory.ErrInProgress) {
		t.Fatalf("replay after a foreign Confirm = %v, want in progress", err)
	}
	if err := b.Confirm(ctx, res); err != nil {
		t.Fatal(err)
	}
	got, replay, err := a.Reserve(ctx, rq(sl, 1, "k", 1))
	if err != nil || !replay || !cmp.Equal(got, res) {
		t.Fatalf("replay after Confirm = %+v, replay %v, %v; want %+v", got, replay, err, res)
	}
}

func testOpenTwice(t *testing.T, a, b inventory.Stock) {
	sl := active(10, 2)
	open(t, a, sl)
	mustReserve(t, a, rq(sl, 1, "k", 2), true)
	open(t, b, sl)
	open(t, a, sl)
	if got, ok, err := b.Remaining(ctx, sl.ID); got != 8 || !ok || err != nil {
		t.Errorf("Remaining() after a second Open = %d, %v, %v; want 8", got, ok, err)
	}
}

func testUnknownSale(t *testing.T, a, _ inventory.Stock) {
	id := ID()
	if _, ok, err := a.Remaining(ctx, id); ok || err != nil {
		t.Errorf("Remaining(unknown) = ok %v, %v", ok, err)
	}
	if _, ok, err := a.Stats(ctx, id); ok || err != nil {
		t.Errorf("Stats(unknown) = ok %v, %v", ok, err)
	}
	if _, _, err := a.Reserve(ctx, inventory.Request{SaleID: id, UserID: 1, Key: "k", Quantity: 1}); !errors.Is(err, sale.ErrSaleNotFound) {
		t.Errorf("Reserve(unknown) = %v, want sale.ErrSaleNotFound", err)
	}
	if ok, err := a.Return(ctx, inventory.Return{SaleID: id, OrderID: "o", UserID: 1, Key: "k", Quantity: 1}); ok || !errors.Is(err, inventory.ErrNotOpen) {
		t.Errorf("Return(unknown sale) = %v, %v; want ErrNotOpen", ok, err)
	}
}

func testRestore(t *testing.T, a, b inventory.Stock) {
	placed := time.Now().UTC().Add(-time.Minute).Truncate(time.Millisecond).Add(123 * time.Microsecond)
	h := func(order string, user int64, key string, qty int64, returned bool) inventory.Holding {
		return inventory.Holding{OrderID: order, UserID: user, Key: key, Quantity: qty, PlacedAt: placed, Returned: returned}
	}
	tests := []struct {
		name      string
		allocated int64
		holdings  []inventory.Holding
		want      inventory.Stats
		soldOut   bool
	}{
		{"nothing", 5, nil, inventory.Stats{Allocated: 5, Remaining: 5}, false},
		{"two buyers", 5, []inventory.Holding{h("o1", 1, "a", 2, false), h("o2", 2, "b", 1, false)},
			inventory.Stats{Allocated: 5, Remaining: 2, Held: 3, Buyers: 2, MaxPerBuyer: 2}, false},
		{"each order id counted once", 5, []inventory.Holding{h("o1", 1, "a", 2, false), h("o1", 1, "a", 2, false), h("o1", 1, "a", 2, false)},
			inventory.Stats{Allocated: 5, Remaining: 3, Held: 2, Buyers: 1, MaxPerBuyer: 2}, false},
		{"one buyer, two keys", 5, []inventory.Holding{h("o1", 1, "a", 1, false), h("o2", 1, "b", 1, false)},
			inventory.Stats{Allocated: 5, Remaining: 3, Held: 2, Buyers: 1, MaxPerBuyer: 2}, false},
		{"all sold", 3, []inventory.Holding{h("o1", 1, "a", 2, false), h("o2", 2, "a", 1, false)},
			inventory.Stats{Allocated: 3, Remaining: 0, Held: 3, Buyers: 2, MaxPerBuyer: 2}, true},
		{"returned orders hold nothing", 3, []inventory.Holding{h("o1", 1, "a", 2, true), h("o2", 2, "a", 1, false)},
			inventory.Stats{Allocated: 3, Remaining: 2, Held: 1, Buyers: 1, MaxPerBuyer: 1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sl := active(tt.allocated, 2)
			// Restore replaces whatever was there.
			open(t, a, sl)
			mustReserve(t, a, rq(sl, 99, "gone", 1), true)
			if err := a.Restore(ctx, sl, tt.holdings); err != nil {
				t.Fatal(err)
			}
			wantStats(t, b, sl.ID, tt.want)
			// Restored holdings are confirmed, returned or not: their keys
			// replay, even when sold out.
			for _, h := range tt.holdings {
				res, replay, err := b.Reserve(ctx, rq(sl, h.UserID, h.Key, h.Quantity))
				want := inventory.Reservation{OrderID: h.OrderID, SaleID: sl.ID, SKU: "sku-1", UserID: h.UserID,
					Key: h.Key, Quantity: h.Quantity, PriceCents: 999, PlacedAt: h.PlacedAt.UTC()}
				if err != nil || !replay {
					t.Fatalf("replay of restored %+v = replay %v, %v", h, replay, err)
				}
				if diff := cmp.Diff(want, res); diff != "" {
					t.Errorf("replay mismatch (-want +got):\n%s", diff)
				}
			}
			_, _, err := b.Reserve(ctx, rq(sl, 100, "new", 1))
			if tt.soldOut != (KindOf(err) == spike.ErrSoldOut) {
				t.Errorf("new Reserve after Restore = %v, want sold out %v", err, tt.soldOut)
			}
		})
	}
}

func testReturn(t *testing.T, a, b inventory.Stock) {
	sl := active(3, 2)
	open(t, a, sl)
	o1 := mustReserve(t, a, rq(sl, 1, "a", 2), true)
	o2 := mustReserve(t, b, rq(sl, 2, "b", 1), true)
	// Sold out, on both instances.
	for _, c := range []inventory.Stock{a, b} {
		if _, _, err := c.Reserve(ctx, rq(sl, 3, "c", 1)); !errors.Is(err, inventory.ErrSoldOut) {
			t.Fatalf("Reserve() on a sold-out sale = %v", err)
		}
	}
	// An order the counters do not hold (unknown id, other key, other
	// quantity) returns nothing.
	for _, r := range []inventory.Return{
		{SaleID: sl.ID, OrderID: "nope", UserID: 1, Key: "a", Quantity: 2},
		{SaleID: sl.ID, OrderID: o1.OrderID, UserID: 1, Key: "z", Quantity: 2},
		{SaleID: sl.ID, OrderID: o1.OrderID, UserID: 1, Key: "a", Quantity: 1},
	} {
		if ok, err := a.Return(ctx, r); ok || !errors.Is(err, inventory.ErrNotHeld) {
			t.Errorf("Return(%+v) = %v, %v; want ErrNotHeld", r, ok, err)
		}
	}
	wantStats(t, a, sl.ID, inventory.Stats{Allocated: 3, Remaining: 0, Held: 3, Buyers: 2, MaxPerBuyer: 2})

	// Return once: the units are back and sellable at once on every
	// instance, and no longer count toward the buyer's limit.
	if ok, err := a.Return(ctx, ret(o1)); !ok || err != nil {
		t.Fatalf("Return() = %v, %v; want true", ok, err)
	}
	wantStats(t, b, sl.ID, inventory.Stats{Allocated: 3, Remaining: 2, Held: 1, Buyers: 1, MaxPerBuyer: 1})
	// Twice, on either instance: nothing changes.
	for _, c := range []inventory.Stock{a, b} {
		if ok, err := c.Return(ctx, ret(o1)); ok || err != nil {
			t.Errorf("second Return() = %v, %v; want false, nil", ok, err)
		}
	}
	wantStats(t, a, sl.ID, inventory.Stats{Allocated: 3, Remaining: 2, Held: 1, Buyers: 1, MaxPerBuyer: 1})
	// The replay of the returned order's key still answers with it: no new
	// order, on either instance.
	for _, c := range []inventory.Stock{a, b} {
		res, replay, err := c.Reserve(ctx, rq(sl, 1, "a", 2))
		if err != nil || !replay || !cmp.Equal(res, o1) {
			t.Errorf("replay after Return = %+v, replay %v, %v; want %+v", res, replay, err, o1)
		}
		if _, _, err := c.Reserve(ctx, rq(sl, 1, "a", 1)); !errors.Is(err, inventory.ErrKeyReused) {
			t.Errorf("other quantity under a returned key = %v, want ErrKeyReused", err)
		}
	}
	// Release of a returned order changes nothing.
	if err := a.Release(ctx, o1); err != nil {
		t.Fatal(err)
	}
	// The buyer's limit is freed: two more units under a new key.
	mustReserve(t, b, rq(sl, 1, "a2", 2), true)
	wantStats(t, a, sl.ID, inventory.Stats{Allocated: 3, Remaining: 0, Held: 3, Buyers: 2, MaxPerBuyer: 2})
	if _, _, err := a.Reserve(ctx, rq(sl, 3, "c", 1)); !errors.Is(err, inventory.ErrSoldOut) {
		t.Fatalf("Reserve() on a sold-out sale = %v", err)
	}
	// Sold out → active again, on the instance that saw the sell-out.
	if ok, err := b.Return(ctx, ret(o2)); !ok || err != nil {
		t.Fatalf("Return() = %v, %v; want true", ok, err)
	}
	mustReserve(t, a, rq(sl, 3, "c", 1), true)
	checkBalanced(t, a, sl.ID)
	// Returned on one instance is returned on the other.
	if ok, err := a.Return(ctx, ret(o2)); ok || err != nil {
		t.Errorf("Return() of an order returned on the other instance = %v, %v", ok, err)
	}
}

func testReturnAfterRestore(t *testing.T, a, b inventory.Stock) {
	sl := active(4, 2)
	open(t, a, sl)
	placed := time.Now().UTC().Truncate(time.Millisecond)
	// The rebuild found o1 cancelled: it holds nothing and a late Return of
	// it gives nothing back twice.
	if err := a.Restore(ctx, sl, []inventory.Holding{
		{OrderID: "o1", UserID: 1, Key: "a", Quantity: 2, PlacedAt: placed, Returned: true},
		{OrderID: "o2", UserID: 2, Key: "b", Quantity: 2, PlacedAt: placed},
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []inventory.Stock{a, b} {
		if ok, err := c.Return(ctx, inventory.Return{SaleID: sl.ID, OrderID: "o1", UserID: 1, Key: "a", Quantity: 2}); ok || err != nil {
			t.Errorf("late Return() of an order the rebuild excluded = %v, %v; want false, nil", ok, err)
		}
	}
	wantStats(t, a, sl.ID, inventory.Stats{Allocated: 4, Remaining: 2, Held: 2, Buyers: 1, MaxPerBuyer: 2})
	if ok, err := b.Return(ctx, inventory.Return{SaleID: sl.ID, OrderID: "o2", UserID: 2, Key: "b", Quantity: 2}); !ok || err != nil {
		t.Errorf("Return() of a restored live order = %v, %v; want true", ok, err)
	}
	wantStats(t, a, sl.ID, inventory.Stats{Allocated: 4, Remaining: 4})
}

// testReserveConcurrent has many buyers race for one sale on both
// instances, with replays, conflicting retries and releases, and checks
// that the counters balance and no buyer holds more than the limit.
func testReserveConcurrent(t *testing.T, a, b inventory.Stock) {
	const (
		allocated  = 300
		limit      = 3
		buyers     = 150
		goroutines = 16
		perG       = 150
	)
	sl := active(allocated, limit)
	open(t, a, sl)
	var (
		mu      sync.Mutex
		orders  = map[string]inventory.Reservation{} // live reservations by order id
		granted atomic.Int64
		wg      sync.WaitGroup
	)
	for g := range goroutines {
		wg.Go(func() {
			c := []inventory.Stock{a, b}[g%2]
			rng := mrand.New(mrand.NewPCG(uint64(g), 1))
			for i := range perG {
				user := int64(1 + rng.IntN(buyers))
				key := fmt.Sprintf("k%d", rng.IntN(8)) // keys collide on purpose
				qty := int64(1 + rng.IntN(limit))
				res, replay, err := c.Reserve(ctx, rq(sl, user, key, qty))
				switch {
				case err != nil:
					switch KindOf(err) {
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
					if i%10 == 0 { // the enqueue failed: give it back
						if err := c.Release(ctx, res); err != nil {
							t.Error(err)
						}
						continue
					}
					mu.Lock()
					orders[res.OrderID] = res
					mu.Unlock()
					if err := c.Confirm(ctx, res); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	checkHeld(t, a, sl, orders)
	if granted.Load() == 0 {
		t.Errorf("no reservation succeeded")
	}
}

// checkHeld checks the counters against the live orders.
func checkHeld(t *testing.T, c inventory.Stock, sl sale.Sale, live map[string]inventory.Reservation) {
	t.Helper()
	st := stats(t, c, sl.ID)
	var held int64
	perUser := map[int64]int64{}
	for _, r := range live {
		held += r.Quantity
		perUser[r.UserID] += r.Quantity
	}
	if st.Remaining+st.Held != sl.Stock || st.Remaining < 0 {
		t.Errorf("remaining %d + held %d != allocated %d", st.Remaining, st.Held, sl.Stock)
	}
	if st.Held != held {
		t.Errorf("counters hold %d units, live orders %d", st.Held, held)
	}
	if st.Buyers != len(perUser) {
		t.Errorf("counters have %d buyers, live orders %d", st.Buyers, len(perUser))
	}
	for u, n := range perUser {
		if n > sl.PerUserLimit {
			t.Errorf("buyer %d holds %d units, limit %d", u, n, sl.PerUserLimit)
		}
	}
	t.Logf("live %d orders (%d units), remaining %d", len(live), held, st.Remaining)
}

// testReturnConcurrent races reserves against returns (each order returned
// by two goroutines on both instances at once): every order comes back
// exactly once, and remaining + held = allocated.
func testReturnConcurrent(t *testing.T, a, b inventory.Stock) {
	const (
		allocated  = 60
		limit      = 2
		goroutines = 8
		perG       = 100
	)
	sl := active(allocated, limit)
	open(t, a, sl)
	var (
		mu       sync.Mutex
		live     = map[string]inventory.Reservation{}
		returned atomic.Int64
		wg       sync.WaitGroup
	)
	orders := make(chan inventory.Reservation, goroutines*perG)
	for g := range goroutines {
		wg.Go(func() {
			c := []inventory.Stock{a, b}[g%2]
			for i := range perG {
				user := int64(g*perG + i + 1)
				res, _, err := c.Reserve(ctx, rq(sl, user, "k", 1+int64(i%limit)))
				if err != nil {
					if !errors.Is(err, inventory.ErrSoldOut) {
						t.Errorf("Reserve: %v", err)
					}
				} else {
					if err := c.Confirm(ctx, res); err != nil {
						t.Error(err)
					}
					mu.Lock()
					live[res.OrderID] = res
					mu.Unlock()
					if i%2 == 0 {
						orders <- res
					}
				}
				select {
				case o := <-orders: // return it twice, racing
					var twice sync.WaitGroup
					var n atomic.Int32
					for _, rc := range []inventory.Stock{a, b} {
						twice.Go(func() {
							ok, err := rc.Return(ctx, ret(o))
							if err != nil {
								t.Errorf("Return: %v", err)
							}
							if ok {
								n.Add(1)
							}
						})
					}
					twice.Wait()
					if n.Load() != 1 {
						t.Errorf("order %s returned %d times", o.OrderID, n.Load())
					}
					returned.Add(1)
					mu.Lock()
					delete(live, o.OrderID)
					mu.Unlock()
				default:
				}
			}
		})
	}
	wg.Wait()
	close(orders)
	for o := range orders {
		if ok, err := a.Return(ctx, ret(o)); !ok || err != nil {
			t.Errorf("Return: %v, %v", ok, err)
		}
		delete(live, o.OrderID)
		returned.Add(1)
	}
	checkHeld(t, b, sl, live)
	if returned.Load() == 0 {
		t.Error("nothing was returned")
	}
}
