package stocktest

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike/internal/domain/inventory"
)

// testHolds checks the order workers' question: does a reservation match
// one the counters hold? Only the very reservation does, unconfirmed,
// confirmed or returned; a released one, or any field changed, does not.
func testHolds(t *testing.T, a, b inventory.Stock) {
	checker, ok := b.(inventory.HoldChecker)
	if !ok {
		t.Fatalf("%T does not implement inventory.HoldChecker", b)
	}
	sl := active(10, 3)
	open(t, a, sl)
	unconfirmed := mustReserve(t, a, rq(sl, 1, "k1", 1), false)
	confirmed := mustReserve(t, a, rq(sl, 2, "k2", 2), true)
	returned := mustReserve(t, a, rq(sl, 3, "k3", 1), true)
	if _, err := a.Return(ctx, ret(returned)); err != nil {
		t.Fatal(err)
	}
	released := mustReserve(t, a, rq(sl, 4, "k4", 1), false)
	if err := a.Release(ctx, released); err != nil {
		t.Fatal(err)
	}
	change := func(f func(r *inventory.Reservation)) inventory.Reservation {
		r := confirmed
		f(&r)
		return r
	}
	other := active(5, 1)
	asked := []inventory.Reservation{
		unconfirmed, confirmed, returned, released,
		change(func(r *inventory.Reservation) { r.OrderID = "forged" }),
		change(func(r *inventory.Reservation) { r.Quantity = 3 }),
		change(func(r *inventory.Reservation) { r.UserID = 99 }),
		change(func(r *inventory.Reservation) { r.Key = "other" }),
		change(func(r *inventory.Reservation) { r.PriceCents = 0 }),
		change(func(r *inventory.Reservation) { r.SKU = "sku-2" }),
		change(func(r *inventory.Reservation) { r.SaleID = other.ID }), // unknown sale
	}
	want := []inventory.HoldStatus{
		inventory.Held, inventory.Held, inventory.Held, inventory.NotHeld,
		inventory.NotHeld, inventory.NotHeld, inventory.NotHeld, inventory.NotHeld, inventory.NotHeld, inventory.NotHeld,
		inventory.NotHeld,
	}
	got, err := checker.Holds(ctx, asked)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Holds (-want +got):\n%s", diff)
	}
	if got, err := checker.Holds(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("Holds(nil) = %v, %v", got, err)
	}
}
