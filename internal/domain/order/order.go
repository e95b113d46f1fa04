// Package order owns the order state machine and the placement flow of a
// flash sale: reserve stock, durably enqueue an OrderPlaced event, answer;
// order workers then persist the events in batches.
//
// Between the enqueue and the insert an order exists only on the stream
// (and in this instance's pending index, so its buyer can read it): the
// stream is the durable record of every acknowledged placement.
package order

import (
	"context"
	"time"

	"github.com/spikehq/spike"
)

// Status is where an order is in its life.
type Status string

// Statuses of an order.
const (
	Pending   Status = "pending" // acknowledged, not yet persisted
	Created   Status = "created"
	Paid      Status = "paid"
	Cancelled Status = "cancelled"
	Shipped   Status = "shipped"
	Delivered Status = "delivered"
	Refunded  Status = "refunded"
)

// Live reports whether an order in status s still holds its stock.
func (s Status) Live() bool { return s != Cancelled && s != Refunded }

// Order is a buyer's order of units of one sale.
type Order struct {
	ID             string
	SaleID         string
	SKU            string
	UserID         int64
	Quantity       int64
	PriceCents     int64 // the sale's unit price
	Status         Status
	IdempotencyKey string
	CreatedAt      time.Time // when it was placed, to the microsecond

	// The lifecycle (see lifecycle.go); a zero value is not set. Stores
	// keep times to the microsecond.
	UpdatedAt       time.Time // the last change of status (CreatedAt until the first)
	PaymentDeadline time.Time // a created order not paid by then is cancelled
	PaidAt          time.Time
	CancelledAt     time.Time
	CancelReason    string // ReasonBuyer, ReasonAdmin or ReasonPaymentTimeout
	Carrier         string
	Tracking        string
	ShippedAt       time.Time
	DeliveredAt     time.Time
	RefundedAt      time.Time
	// StockReturnedTo is where the units of a cancelled (or refunded
	// before shipping) order went back to: "sale" (while it ran) or
	// "product" (after it ended); empty until they are back (the outbox of
	// stock returns is the orders where it is empty).
	StockReturnedTo string
}

// AmountCents is the price of the whole order.
func (o *Order) AmountCents() int64 { return o.PriceCents * o.Quantity }

// Placed is the OrderPlaced event, version 1. Consumers ignore fields they
// do not know, so fields may be added without a new version.
type Placed struct {
	V          int       `json:"v"`
	OrderID    string    `json:"order_id"`
	SaleID     string    `json:"sale_id"`
	SKU        string    `json:"sku"`
	UserID     int64     `json:"user_id"`
	Quantity   int64     `json:"quantity"`
	PriceCents int64     `json:"price_cents"`
	Key        string    `json:"idempotency_key"`
	PlacedAt   time.Time `json:"placed_at"`
	// PaymentDeadline is PlacedAt plus the sale's payment window; zero:
	// no deadline. (omitzero: omitempty never omits a time.Time.)
	PaymentDeadline time.Time `json:"payment_deadline,omitzero"`
}

// Order returns the order the event places, in status Pending.
func (e *Placed) Order() Order {
	return Order{
		ID: e.OrderID, SaleID: e.SaleID, SKU: e.SKU, UserID: e.UserID,
		Quantity: e.Quantity, PriceCents: e.PriceCents, Status: Pending,
		IdempotencyKey: e.Key, CreatedAt: e.PlacedAt, PaymentDeadline: e.PaymentDeadline,
	}
}

// Validate reports whether the event is well formed; the consumer drops
// (and counts) events that are not.
func (e *Placed) Validate() error {
	if e.V < 1 || e.OrderID == "" || len(e.OrderID) > 64 || !spike.ValidID(e.SaleID) || !spike.ValidID(e.SKU) ||
		e.UserID <= 0 || e.Quantity < 1 || e.PriceCents < 0 || !spike.ValidIdempotencyKey(e.Key) || e.PlacedAt.IsZero() {
		return spike.Errorf(spike.ErrInvalid, "malformed OrderPlaced event %q", e.OrderID)
	}
	return nil
}

// Errors.
var (
	ErrOrderNotFound = &spike.Error{Kind: spike.ErrNotFound, Message: "order not found"}
	ErrStreamDown    = &spike.Error{Kind: spike.ErrUnavailable, Message: "the order stream is unavailable; nothing was placed"}
	ErrInDoubt       = &spike.Error{Kind: spike.ErrUnavailable, Message: "the order stream did not confirm in time; retry with the same Idempotency-Key"}
)

// Store keeps persisted orders.
type Store interface {
	// InsertOrders stores orders in status Created. An order whose id is
	// already stored is skipped, so a batch can be inserted again safely.
	InsertOrders(ctx context.Context, orders []Order) error
	// Order returns the order, or ErrOrderNotFound.
	Order(ctx context.Context, id string) (Order, error)
	// ListOrders returns up to limit of the user's orders that sort after
	// the cursor (newest first by CreatedAt, then ID); a zero Cursor starts
	// at the newest.
	ListOrders(ctx context.Context, userID int64, after Cursor, limit int) ([]Order, error)
	// ScanSaleOrders calls fn with every order of the sale, in no
	// particular order, as it reads them, for rebuilds and audits: those
	// of a sale of a million orders then hold none of them at once. An error from fn stops the
	// scan and is returned. fn is never called concurrently and must not
	// keep the pointer.
	ScanSaleOrders(ctx context.Context, saleID string, fn func(*Order) error) error
}

// Stream is the durable queue of OrderPlaced events.
type Stream interface {
	// Enqueue durably appends e, deduplicated by e.OrderID, and returns once
	// the stream has acknowledged it. An error that wraps ErrNotEnqueued
	// means e was certainly not stored; any other error leaves it in doubt.
	Enqueue(ctx context.Context, e Placed) error
}

// TimedStream is a Stream that bounds how long an enqueue waits for the
// acknowledgement itself, more cheaply than a context timer per call (a
// timer per placement cost a flash sale 5 % of its CPU): natsbus's batched
// publisher shares coarse timers. EnqueueWithin is Enqueue that gives up
// after about d (at most a few tens of milliseconds later), with the same
// meaning of errors.
type TimedStream interface {
	EnqueueWithin(ctx context.Context, e Placed, d time.Duration) error
}

// EnqueueWithin enqueues e on s, giving up after about d: s's own way if
// it is a TimedStream, else with a context timer.
func EnqueueWithin(ctx context.Context, s Stream, e Placed, d time.Duration) error {
	if ts, ok := s.(TimedStream); ok {
		return ts.EnqueueWithin(ctx, e, d)
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return s.Enqueue(ctx, e)
}

// ErrNotEnqueued marks Stream errors after which the event is certainly not
// on the stream.
var ErrNotEnqueued = spike.Errorf(spike.ErrUnavailable, "not enqueued")
