// Package payment: a minimal copy of the contract's types, so that the
// stores compile in the lifecycle branch. The payment engineer's package
// replaces this file at merge.
package payment

import (
	"context"
	"time"

	"github.com/spikehq/spike"
)

// Status is where a payment is.
type Status string

// Statuses of a payment.
const (
	RequiresAction Status = "requires_action"
	Processing     Status = "processing"
	Succeeded      Status = "succeeded"
	Failed         Status = "failed"
)

// Payment is one attempt to collect an order's amount.
type Payment struct {
	ID, OrderID    string
	UserID         int64
	Provider       string
	AmountCents    int64
	Status         Status
	IdempotencyKey string // the buyer's key, unique per (OrderID, IdempotencyKey)
	ProviderRef    string // the provider's id for it (sandbox: its own; stripe: the PaymentIntent id)
	CheckoutURL    string
	RefundedCents  int64
	RefundRef      string
	RefundedAt     time.Time
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// ErrPaymentNotFound: no such payment.
var ErrPaymentNotFound = &spike.Error{Kind: spike.ErrNotFound, Message: "payment not found"}

// Store keeps payment records. Implemented by internal/adapter/sqlitestore and mysqlstore
// (STORE helper) and by an in-memory fake in the payment package's tests.
type Store interface {
	// CreatePayment stores p unless one with (p.OrderID, p.IdempotencyKey) exists; returns the
	// stored record and created=true only when it stored p.
	CreatePayment(ctx context.Context, p Payment) (stored Payment, created bool, err error)
	Payment(ctx context.Context, id string) (Payment, error)
	PaymentByRef(ctx context.Context, provider, ref string) (Payment, error)
	OrderPayments(ctx context.Context, orderID string) ([]Payment, error)
	// UpdatePayment replaces the mutable fields (Status, ProviderRef, CheckoutURL, Refunded*,
	// UpdatedAt) iff the stored status is one of from (compare-and-set); applied=false otherwise.
	UpdatePayment(ctx context.Context, p Payment, from []Status) (stored Payment, applied bool, err error)
	// Payments lists all payments with ID > after, ordered by ID, up to limit (for the audit).
	Payments(ctx context.Context, after string, limit int) ([]Payment, error)
}
