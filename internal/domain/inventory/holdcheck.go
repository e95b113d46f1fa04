package inventory

import "context"

// HoldStatus is what the counters know of a reservation (see HoldChecker).
type HoldStatus int

const (
	// HoldUnknown: the sale's counters are missing (lost, being rebuilt);
	// ask again later.
	HoldUnknown HoldStatus = iota
	// NotHeld: the counters hold no such reservation: no key of the buyer
	// in the sale names this order with this quantity, or the sale's SKU or
	// price differ, or the sale is unknown.
	NotHeld
	// Held: the buyer's key in the sale holds this order (confirmed or
	// not, returned or not).
	Held
)

// HoldChecker is implemented by the stock counters. The order workers ask
// it whether each OrderPlaced event they are handed matches a reservation
// before persisting it: a well-formed event that none holds was not placed
// through the counters (forged, or its units were released) and must not
// become an order.
type HoldChecker interface {
	// Holds reports, for each reservation (OrderID, SaleID, SKU, UserID,
	// Key, Quantity and PriceCents are compared), whether the counters
	// hold it. The answer is index-aligned with res.
	Holds(ctx context.Context, res []Reservation) ([]HoldStatus, error)
}

var _ HoldChecker = (*Counters)(nil)

// Holds implements HoldChecker. Counters in process hold every sale of the
// record (rebuilt at start), so a sale they do not know is NotHeld.
func (c *Counters) Holds(_ context.Context, res []Reservation) ([]HoldStatus, error) {
	out := make([]HoldStatus, len(res))
	for i, r := range res {
		out[i] = NotHeld
		st := c.sale(r.SaleID)
		if st == nil || st.s.SKU != r.SKU || st.s.PriceCents != r.PriceCents {
			continue
		}
		k := st.holds.hash(r.Key)
		st.mu.RLock()
		if rec, _, ok := st.holds.find(r.UserID, k); ok && st.holds.sameOrder(rec, r.OrderID) && st.holds.quantity(rec) == r.Quantity {
			out[i] = Held
		}
		st.mu.RUnlock()
	}
	return out, nil
}
