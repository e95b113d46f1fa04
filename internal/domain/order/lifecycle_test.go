package order_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/order"
)

// TestNext checks every (status, transition) pair: the allowed ones lead
// where the contract says, every other one is refused with ErrConflict.
func TestNext(t *testing.T) {
	type pair struct {
		s order.Status
		t order.Transition
	}
	allowed := map[pair]order.Status{
		{order.Pending, order.Pay}:      order.Paid,
		{order.Created, order.Pay}:      order.Paid,
		{order.Pending, order.Cancel}:   order.Cancelled,
		{order.Created, order.Cancel}:   order.Cancelled,
		{order.Pending, order.Expire}:   order.Cancelled,
		{order.Created, order.Expire}:   order.Cancelled,
		{order.Paid, order.Ship}:        order.Shipped,
		{order.Shipped, order.Deliver}:  order.Delivered,
		{order.Paid, order.Refund}:      order.Refunded,
		{order.Shipped, order.Refund}:   order.Refunded,
		{order.Delivered, order.Refund}: order.Refunded,
	}
	statuses := order.Statuses()
	if len(statuses) != 7 || len(order.Transitions()) != 6 {
		t.Fatalf("Statuses() = %v, Transitions() = %v", statuses, order.Transitions())
	}
	n := 0
	for _, s := range statuses {
		for _, tr := range order.Transitions() {
			got, err := order.Next(s, tr)
			want, ok := allowed[pair{s, tr}]
			switch {
			case ok:
				n++
				if err != nil || got != want {
					t.Errorf("Next(%s, %s) = %q, %v; want %s", s, tr, got, err, want)
				}
				if !slices.Contains(order.From(tr), s) {
					t.Errorf("From(%s) = %v, want it to hold %s", tr, order.From(tr), s)
				}
			default:
				var se *spike.Error
				if !errors.Is(err, spike.ErrConflict) || !errors.As(err, &se) || !strings.Contains(se.Message, string(s)) || got != "" {
					t.Errorf("Next(%s, %s) = %q, %v; want a conflict naming %s", s, tr, got, err, s)
				}
				if slices.Contains(order.From(tr), s) {
					t.Errorf("From(%s) = %v holds %s, which Next refuses", tr, order.From(tr), s)
				}
			}
		}
	}
	if n != len(allowed) {
		t.Errorf("checked %d allowed pairs, want %d", n, len(allowed))
	}
	if _, err := order.Next(order.Created, "teleport"); !errors.Is(err, spike.ErrInvalid) {
		t.Errorf("Next(created, teleport) = %v, want ErrInvalid", err)
	}
	if f := order.From("teleport"); f != nil {
		t.Errorf("From(teleport) = %v, want nil", f)
	}
}

func TestReturnsStock(t *testing.T) {
	for _, from := range order.Statuses() {
		for _, to := range order.Statuses() {
			want := to == order.Cancelled || (to == order.Refunded && from == order.Paid)
			if got := order.ReturnsStock(from, to); got != want {
				t.Errorf("ReturnsStock(%s, %s) = %v, want %v", from, to, got, want)
			}
		}
	}
}

func TestApply(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	var o order.Order
	o.Apply(order.Change{Transition: order.Pay, To: order.Paid, At: at})
	if o.Status != order.Paid || o.PaidAt != at || o.UpdatedAt != at {
		t.Errorf("after pay: %+v", o)
	}
	o.Apply(order.Change{Transition: order.Ship, To: order.Shipped, At: at.Add(time.Hour), Carrier: "dhl", Tracking: "T1"})
	if o.Status != order.Shipped || o.ShippedAt != at.Add(time.Hour) || o.Carrier != "dhl" || o.Tracking != "T1" || o.PaidAt != at {
		t.Errorf("after ship: %+v", o)
	}
	o.Apply(order.Change{Transition: order.Deliver, To: order.Delivered, At: at.Add(2 * time.Hour)})
	o.Apply(order.Change{Transition: order.Refund, To: order.Refunded, At: at.Add(3 * time.Hour)})
	if o.DeliveredAt != at.Add(2*time.Hour) || o.RefundedAt != at.Add(3*time.Hour) || o.UpdatedAt != o.RefundedAt {
		t.Errorf("after refund: %+v", o)
	}
	var c order.Order
	c.Apply(order.Change{Transition: order.Expire, To: order.Cancelled, At: at, CancelReason: order.ReasonPaymentTimeout})
	if c.CancelledAt != at || c.CancelReason != order.ReasonPaymentTimeout {
		t.Errorf("after expire: %+v", c)
	}
}

func TestPlacedOrderCopiesDeadline(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	e := order.Placed{V: 1, OrderID: "o", SaleID: "s", SKU: "k", UserID: 1, Quantity: 1, Key: "k", PlacedAt: at, PaymentDeadline: at.Add(15 * time.Minute)}
	if o := e.Order(); o.PaymentDeadline != e.PaymentDeadline || o.Status != order.Pending {
		t.Errorf("Order() = %+v, want the deadline copied", o)
	}
}
