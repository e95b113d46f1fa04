// Package payment owns the payments of orders: the Payment record, the
// Store that keeps it, the Provider interface of a payment gateway, the
// webhook signature scheme, and the Service that starts payments, applies
// the providers' webhooks and refunds.
//
// A payment's status only moves forward: requires_action/processing →
// succeeded|failed (a failed payment may still succeed later: a buyer's
// second attempt at the provider; a succeeded one never fails). Every move
// is a compare-and-set on the stored status (Store.UpdatePayment), so
// duplicate, late and out-of-order webhook deliveries change nothing twice.
// Webhooks that never arrive are made up for by reconciliation: Reconcile
// asks the provider about one payment, and RunReconciler sweeps for the
// payments left requires_action/processing (see ReconcileStuck for its cost).
package payment

import (
	"context"
	"net/http"
	"time"

	"github.com/spikehq/spike"
)

// Status is where a payment is at its provider.
type Status string

// Statuses of a payment.
const (
	RequiresAction Status = "requires_action" // waiting for the buyer (checkout page)
	Processing     Status = "processing"      // the provider is collecting the money
	Succeeded      Status = "succeeded"       // the money is collected (may since be refunded: see RefundRef)
	Failed         Status = "failed"          // the attempt failed
)

// Valid reports whether s is one of the four statuses.
func (s Status) Valid() bool {
	switch s {
	case RequiresAction, Processing, Succeeded, Failed:
		return true
	}
	return false
}

// Payment is one attempt to collect an order's amount through a provider.
type Payment struct {
	ID             string
	OrderID        string
	UserID         int64
	Provider       string
	AmountCents    int64
	Status         Status
	IdempotencyKey string // the buyer's key, unique per (OrderID, IdempotencyKey)
	ProviderRef    string // the provider's id for it (sandbox: its own; stripe: the PaymentIntent id); "" until the provider accepted it
	CheckoutURL    string
	RefundedCents  int64
	RefundRef      string
	RefundedAt     time.Time
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// Refunded reports whether the payment's money was given back.
func (p *Payment) Refunded() bool { return p.RefundRef != "" }

// ErrPaymentNotFound is returned for an unknown payment.
var ErrPaymentNotFound = &spike.Error{Kind: spike.ErrNotFound, Message: "payment not found"}

// Store keeps payment records. Implemented by internal/adapter/sqlitestore
// and mysqlstore, and in memory by internal/testkit/paymenttest.Memory;
// paymenttest.Run checks an implementation against this contract.
type Store interface {
	// CreatePayment stores p unless one with (p.OrderID, p.IdempotencyKey) exists; returns the
	// stored record and created=true only when it stored p.
	CreatePayment(ctx context.Context, p Payment) (stored Payment, created bool, err error)
	// Payment returns the payment with that id, or ErrPaymentNotFound.
	Payment(ctx context.Context, id string) (Payment, error)
	// PaymentByRef returns the payment of that provider with that ProviderRef, or ErrPaymentNotFound.
	PaymentByRef(ctx context.Context, provider, ref string) (Payment, error)
	// OrderPayments returns the payments of an order (none: an empty list, no error).
	OrderPayments(ctx context.Context, orderID string) ([]Payment, error)
	// UpdatePayment replaces the mutable fields (Status, ProviderRef, CheckoutURL, Refunded*,
	// UpdatedAt) iff the stored status is one of from (compare-and-set); applied=false otherwise.
	// ErrPaymentNotFound when no payment has p.ID.
	UpdatePayment(ctx context.Context, p Payment, from []Status) (stored Payment, applied bool, err error)
	// Payments lists all payments with ID > after, ordered by ID, up to limit (for the audit).
	Payments(ctx context.Context, after string, limit int) ([]Payment, error)
}

// Provider is a payment gateway.
type Provider interface {
	Name() string
	// Create starts collecting amount for the payment; idempotent by p.ID (sent as the
	// provider's idempotency key). Returns ProviderRef, CheckoutURL and the initial status.
	Create(ctx context.Context, p Payment) (ref, checkoutURL string, st Status, err error)
	// Refund returns the money of a succeeded payment; idempotent by p.ID.
	Refund(ctx context.Context, p Payment) (refundRef string, err error)
	// Status asks the provider for the payment's current status (reconciliation).
	Status(ctx context.Context, p Payment) (Status, error)
	// VerifyWebhook checks the signature of a webhook delivery and decodes it. Errors are
	// spike.ErrUnauthenticated (bad/missing/old signature) or spike.ErrInvalid (malformed).
	VerifyWebhook(header http.Header, body []byte, now time.Time) (WebhookEvent, error)
}

// WebhookEvent is one decoded webhook delivery: the provider says that the
// payment it knows as Ref is in Status since At. ID identifies the event
// (a duplicate delivery carries the same ID).
type WebhookEvent struct {
	ID     string
	Ref    string
	Status Status
	At     time.Time
}

// Orders is the part of the order domain the Service moves.
type Orders interface {
	// MarkPaid moves the order to paid (CAS); returns applied=false with the order's status if
	// it was not payable (already paid, or cancelled/expired: then the Service refunds the
	// payment automatically).
	MarkPaid(ctx context.Context, orderID string, paymentID string, at time.Time) (applied bool, status string, err error)
}

// View is a payment as the API shows it (POST /v1/orders/{id}/payments,
// GET /v1/payments/{id}).
type View struct {
	PaymentID     string     `json:"payment_id"`
	OrderID       string     `json:"order_id"`
	Provider      string     `json:"provider"`
	AmountCents   int64      `json:"amount_cents"`
	Status        Status     `json:"status"`
	CheckoutURL   string     `json:"checkout_url,omitempty"`
	RefundedCents int64      `json:"refunded_cents,omitempty"`
	RefundedAt    *time.Time `json:"refunded_at,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
}

// View returns the API view of p.
func (p *Payment) View() View {
	v := View{PaymentID: p.ID, OrderID: p.OrderID, Provider: p.Provider, AmountCents: p.AmountCents,
		Status: p.Status, CheckoutURL: p.CheckoutURL, RefundedCents: p.RefundedCents,
		CreatedAt: p.CreatedAt.UTC(), UpdatedAt: p.UpdatedAt.UTC()}
	if !p.RefundedAt.IsZero() {
		t := p.RefundedAt.UTC()
		v.RefundedAt = &t
	}
	return v
}
