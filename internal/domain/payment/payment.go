// TEMPORARY COPY for the stripe branch only: the types of the shared contract
// (notes/lifecycle.md) that internal/adapter/stripepay needs, so that it
// compiles on its own. The lead drops this file at merge in favour of the real
// payment package.
package payment

import (
	"context"
	"net/http"
	"time"
)

type Status string

const (
	RequiresAction Status = "requires_action"
	Processing     Status = "processing"
	Succeeded      Status = "succeeded"
	Failed         Status = "failed"
)

type Payment struct {
	ID, OrderID    string
	UserID         int64
	Provider       string
	AmountCents    int64
	Status         Status
	IdempotencyKey string
	ProviderRef    string
	CheckoutURL    string
	RefundedCents  int64
	RefundRef      string
	RefundedAt     time.Time
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

type Provider interface {
	Name() string
	Create(ctx context.Context, p Payment) (ref, checkoutURL string, st Status, err error)
	Refund(ctx context.Context, p Payment) (refundRef string, err error)
	Status(ctx context.Context, p Payment) (Status, error)
	VerifyWebhook(header http.Header, body []byte, now time.Time) (WebhookEvent, error)
}

type WebhookEvent struct {
	ID     string
	Ref    string
	Status Status
	At     time.Time
}
