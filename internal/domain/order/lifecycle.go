package order

import (
	"context"
	"slices"
	"time"

	"github.com/spikehq/spike"
)

// Transition is what moves an order: a buyer, an admin, a provider or the clock.
type Transition string

// Transitions of an order.
const (
	Pay     Transition = "pay"     // provider confirmed a payment: pending|created -> paid
	Cancel  Transition = "cancel"  // buyer/admin: pending|created -> cancelled
	Expire  Transition = "expire"  // payment deadline: pending|created -> cancelled (reason payment_timeout)
	Ship    Transition = "ship"    // admin: paid -> shipped
	Deliver Transition = "deliver" // admin: shipped -> delivered
	Refund  Transition = "refund"  // admin/auto: paid|shipped|delivered -> refunded
)

// Cancel reasons.
const (
	ReasonBuyer          = "buyer"
	ReasonAdmin          = "admin"
	ReasonPaymentTimeout = "payment_timeout"
)

// CauseDeadline is the Cause of the transitions the payment deadline makes.
const CauseDeadline = "deadline"

// transitions is the state machine: for each transition, the statuses it
// may start from and the status it leads to.
var transitions = map[Transition]struct {
	from []Status
	to   Status
}{
	Pay:     {[]Status{Pending, Created}, Paid},
	Cancel:  {[]Status{Pending, Created}, Cancelled},
	Expire:  {[]Status{Pending, Created}, Cancelled},
	Ship:    {[]Status{Paid}, Shipped},
	Deliver: {[]Status{Shipped}, Delivered},
	Refund:  {[]Status{Paid, Shipped, Delivered}, Refunded},
}

// Transitions lists every transition, in a fixed order.
func Transitions() []Transition {
	return []Transition{Pay, Cancel, Expire, Ship, Deliver, Refund}
}

// Statuses lists every status, in a fixed order.
func Statuses() []Status {
	return []Status{Pending, Created, Paid, Cancelled, Shipped, Delivered, Refunded}
}

// Next returns the status t leads to from s, or a spike.ErrConflict error
// naming s. An unknown transition is a spike.ErrInvalid error.
func Next(s Status, t Transition) (Status, error) {
	tr, ok := transitions[t]
	if !ok {
		return "", spike.Errorf(spike.ErrInvalid, "unknown transition %q", string(t))
	}
	if !slices.Contains(tr.from, s) {
		return "", spike.Errorf(spike.ErrConflict, "cannot %s an order that is %s", string(t), string(s))
	}
	return tr.to, nil
}

// From lists the statuses t may start from (for compare-and-set); nil for
// an unknown transition. The caller may not modify the slice.
func From(t Transition) []Status { return transitions[t].from }

// ReturnsStock reports whether an order that reaches `to` from `from` gives
// its units back (cancelled: always; refunded: only when from == Paid, i.e.
// not shipped).
func ReturnsStock(from, to Status) bool {
	switch to {
	case Cancelled:
		return true
	case Refunded:
		return from == Paid
	}
	return false
}

// Change is one transition to apply.
type Change struct {
	Transition   Transition
	To           Status
	At           time.Time
	Cause        string // who/what: "buyer:42", "admin:1", "payment:<id>", "deadline"
	CancelReason string
	Carrier      string
	Tracking     string
}

// HistoryEntry is one applied transition.
type HistoryEntry struct {
	OrderID    string
	From, To   Status
	Transition Transition
	Cause      string
	At         time.Time
}

// LifecycleStore applies transitions with a compare-and-set on the stored status.
type LifecycleStore interface {
	// Transition applies c iff the order's stored status is one of from; it sets the
	// timestamps/fields of c, UpdatedAt, and records a HistoryEntry in the same transaction.
	// applied=false (and the order as stored) when the status was not in from.
	// ErrOrderNotFound when no such order is stored.
	Transition(ctx context.Context, id string, from []Status, c Change) (o Order, applied bool, err error)
	// ExpireDue cancels (reason payment_timeout, Transition Expire, Cause "deadline") up to limit
	// orders in status created whose PaymentDeadline <= now, and returns the ones it cancelled.
	// Safe to call from many instances at once: each order is expired by exactly one call
	// (MySQL: per shard, SELECT ... FOR UPDATE SKIP LOCKED then UPDATE ... WHERE status='created').
	// Uses an index on (status, payment_deadline) so a million open deadlines cost nothing.
	ExpireDue(ctx context.Context, now time.Time, limit int) ([]Order, error)
	// StockToReturn lists up to limit orders that are cancelled, or refunded from paid, whose
	// StockReturnedTo is empty (the outbox of stock returns), oldest first.
	StockToReturn(ctx context.Context, limit int) ([]Order, error)
	// MarkStockReturned records where the units
	// went (StockReturnedTo: "sale" or "product"); the first mark wins, a
	// repeat changes nothing.
	MarkStockReturned(ctx context.Context, id, to string) error
	// History returns the order's applied transitions, oldest first.
	History(ctx context.Context, id string) ([]HistoryEntry, error)
}

// Apply sets on o the fields c sets: the status, UpdatedAt, the timestamp
// of the new status and the change's details (cancel reason, carrier and
// tracking).
// Stores use it so that every backend returns the same order after a
// transition.
func (o *Order) Apply(c Change) {
	o.Status = c.To
	o.UpdatedAt = c.At
	switch c.To {
	case Paid:
		o.PaidAt = c.At
	case Cancelled:
		o.CancelledAt = c.At
		o.CancelReason = c.CancelReason
	case Shipped:
		o.ShippedAt = c.At
		o.Carrier, o.Tracking = c.Carrier, c.Tracking
	case Delivered:
		o.DeliveredAt = c.At
	case Refunded:
		o.RefundedAt = c.At
	}
}
