// Package stripepay is the Stripe payment.Provider: a payment is one
// PaymentIntent, a refund one Refund of it, and Stripe's webhooks
// (payment_intent.succeeded, payment_intent.payment_failed,
// payment_intent.canceled) report the outcome.
//
// What the adapter does with each call of payment.Provider:
//
//   - Create makes a PaymentIntent of p.AmountCents in Config.Currency with
//     metadata order_id and payment_id, sent with Idempotency-Key p.ID, so a
//     retried Create returns the same intent (Stripe keeps idempotency keys for
//     at least 24 hours; a retry after that makes a second intent). The ref is
//     the intent id (pi_...). The checkout URL is the intent's
//     next_action.redirect_to_url when Stripe gives one, else empty: a new
//     intent has none, since the buyer's payment method is collected in the
//     browser with Stripe.js and the intent's client_secret. That secret is
//     deliberately NOT returned as the checkout URL: Stripe asks that it be
//     neither stored nor logged, and the checkout URL is stored with the
//     payment and shown in API bodies. A front end that confirms with
//     Stripe.js fetches it on demand (PaymentIntent retrieve) for the buyer.
//   - Refund refunds the whole PaymentIntent p.ProviderRef, with
//     Idempotency-Key "refund-"+p.ID, and returns the refund id (re_...).
//   - Status retrieves the PaymentIntent p.ProviderRef and maps its status.
//   - VerifyWebhook checks the Stripe-Signature header with stripe-go's
//     webhook package (HMAC-SHA256 with Config.WebhookSecret) and rejects a
//     signature timestamp older than 5 minutes before now.
//
// Status mapping (PaymentIntent -> payment.Status): requires_payment_method,
// requires_confirmation, requires_action -> RequiresAction; processing and
// requires_capture -> Processing; succeeded -> Succeeded; canceled -> Failed.
//
// Errors are *spike.Error kinds wrapped together with the cause (errors.As
// finds the client-safe *spike.Error; Error() also carries Stripe's message):
// network failures, timeouts, 429, 5xx and Stripe rejecting the API key ->
// spike.ErrUnavailable; 404 -> spike.ErrNotFound; a reused idempotency key
// with other parameters, or an intent already refunded -> spike.ErrConflict;
// other 4xx -> spike.ErrInvalid.
package stripepay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v82"
	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/payment"
)

// Name is the provider name stored in payment.Payment.Provider.
const Name = "stripe"

// WebhookTolerance is how old a webhook signature's timestamp may be.
const WebhookTolerance = 5 * time.Minute

// Webhook event types the adapter turns into a status. Every other type is
// returned with an empty Status (see VerifyWebhook).
const (
	EventSucceeded = "payment_intent.succeeded"
	EventFailed    = "payment_intent.payment_failed"
	EventCanceled  = "payment_intent.canceled"
)

// Config configures the adapter.
type Config struct {
	// APIKey is the secret key (sk_live_..., sk_test_...; stripe-mock takes
	// any sk_test_ key).
	APIKey string
	// WebhookSecret is the endpoint's signing secret (whsec_...).
	WebhookSecret string
	// BackendURL replaces Stripe's API base URL, e.g. "http://127.0.0.1:12111"
	// for stripe-mock. Empty: Stripe's API.
	BackendURL string
	// HTTPClient makes the API requests. Nil: stripe-go's default client
	// (80 s timeout). The caller's context bounds every call either way.
	HTTPClient *http.Client
	// Currency is the ISO code of every PaymentIntent, lower case. Empty: "usd".
	Currency string
}

// Provider is the Stripe payment.Provider. It is safe for concurrent use.
type Provider struct {
	sc       *stripe.Client
	secret   string
	currency string
}

var _ payment.Provider = (*Provider)(nil)

// New returns the Stripe provider. It makes no request.
func New(cfg Config) (*Provider, error) {
	if cfg.APIKey == "" {
		return nil, errors.New("stripepay: APIKey is required")
	}
	if cfg.WebhookSecret == "" {
		return nil, errors.New("stripepay: WebhookSecret is required")
	}
	cur := strings.ToLower(strings.TrimSpace(cfg.Currency))
	if cur == "" {
		cur = "usd"
	}
	bc := &stripe.BackendConfig{
		HTTPClient: cfg.HTTPClient,
		// Errors are returned to the caller, who logs them; the SDK logs nothing.
		LeveledLogger: &stripe.LeveledLogger{Level: stripe.LevelNull},
	}
	if cfg.BackendURL != "" {
		bc.URL = stripe.String(strings.TrimRight(cfg.BackendURL, "/"))
	}
	sc := stripe.NewClient(cfg.APIKey, stripe.WithBackends(stripe.NewBackendsWithConfig(bc)))
	return &Provider{sc: sc, secret: cfg.WebhookSecret, currency: cur}, nil
}

// Name returns "stripe".
func (*Provider) Name() string { return Name }

// Create makes the PaymentIntent of p, idempotently by p.ID.
func (s *Provider) Create(ctx context.Context, p payment.Payment) (ref, checkoutURL string, st payment.Status, err error) {
	if p.ID == "" {
		return "", "", "", spike.Errorf(spike.ErrInvalid, "stripe: payment has no id")
	}
	if p.AmountCents <= 0 {
		return "", "", "", spike.Errorf(spike.ErrInvalid, "stripe: amount must be positive")
	}
	params := &stripe.PaymentIntentCreateParams{
		Amount:   stripe.Int64(p.AmountCents),
		Currency: stripe.String(s.currency),
	}
	params.AddMetadata("order_id", p.OrderID)
	params.AddMetadata("payment_id", p.ID)
	params.SetIdempotencyKey(p.ID)
	pi, err := s.sc.V1PaymentIntents.Create(ctx, params)
	if err != nil {
		return "", "", "", wrap(ctx, "create payment", err)
	}
	st, err = mapStatus(pi.Status)
	if err != nil {
		return "", "", "", err
	}
	if pi.NextAction != nil && pi.NextAction.RedirectToURL != nil {
		checkoutURL = pi.NextAction.RedirectToURL.URL
	}
	return pi.ID, checkoutURL, st, nil
}

// Refund refunds the whole PaymentIntent of p, idempotently by p.ID.
func (s *Provider) Refund(ctx context.Context, p payment.Payment) (string, error) {
	if p.ID == "" || p.ProviderRef == "" {
		return "", spike.Errorf(spike.ErrInvalid, "stripe: payment has no id or no provider ref")
	}
	params := &stripe.RefundCreateParams{PaymentIntent: stripe.String(p.ProviderRef)}
	params.AddMetadata("order_id", p.OrderID)
	params.AddMetadata("payment_id", p.ID)
	params.SetIdempotencyKey("refund-" + p.ID)
	r, err := s.sc.V1Refunds.Create(ctx, params)
	if err != nil {
		return "", wrap(ctx, "refund payment", err)
	}
	return r.ID, nil
}

// Status retrieves the PaymentIntent of p and maps its status.
func (s *Provider) Status(ctx context.Context, p payment.Payment) (payment.Status, error) {
	if p.ProviderRef == "" {
		return "", spike.Errorf(spike.ErrInvalid, "stripe: payment has no provider ref")
	}
	pi, err := s.sc.V1PaymentIntents.Retrieve(ctx, p.ProviderRef, nil)
	if err != nil {
		return "", wrap(ctx, "payment status", err)
	}
	return mapStatus(pi.Status)
}

// VerifyWebhook checks the Stripe-Signature of body and decodes the event.
//
// A bad, missing or malformed signature header, or a signature timestamp more
// than WebhookTolerance before now, is spike.ErrUnauthenticated. A signed body
// that is not a JSON event (or a payment_intent event without an intent id) is
// spike.ErrInvalid.
//
// The result for payment_intent.succeeded is Succeeded, for
// payment_intent.payment_failed and payment_intent.canceled Failed, with ID the
// event id (evt_...), Ref the intent id and At the event's creation time.
// Every other event type is returned with an EMPTY Status and a nil error: it
// is authentic but says nothing Spike acts on, so the service ignores it and
// answers 2xx (Stripe would otherwise retry it for days).
//
// The event's API version is not compared with stripe-go's: only the event's
// id, type, created and data.object.id are read, which every version has.
func (s *Provider) VerifyWebhook(header http.Header, body []byte, now time.Time) (payment.WebhookEvent, error) {
	sig := header.Get("Stripe-Signature")
	// stripe-go checks the tolerance against the wall clock; the signature is
	// checked there and the age here against now, so callers and tests decide
	// what now is.
	ev, err := webhook.ConstructEventWithOptions(body, sig, s.secret, webhook.ConstructEventOptions{
		IgnoreTolerance:          true,
		IgnoreAPIVersionMismatch: true,
	})
	if err != nil {
		if isSignatureError(err) {
			return payment.WebhookEvent{}, spike.Errorf(spike.ErrUnauthenticated, "stripe webhook: %s", err.Error())
		}
		return payment.WebhookEvent{}, spike.Errorf(spike.ErrInvalid, "stripe webhook: malformed event")
	}
	ts, ok := signatureTime(sig)
	if !ok {
		return payment.WebhookEvent{}, spike.Errorf(spike.ErrUnauthenticated, "stripe webhook: %s", webhook.ErrInvalidHeader.Error())
	}
	if now.Sub(ts) > WebhookTolerance {
		return payment.WebhookEvent{}, spike.Errorf(spike.ErrUnauthenticated, "stripe webhook: %s", webhook.ErrTooOld.Error())
	}
	if ev.ID == "" || ev.Type == "" {
		return payment.WebhookEvent{}, spike.Errorf(spike.ErrInvalid, "stripe webhook: event has no id or type")
	}
	out := payment.WebhookEvent{ID: ev.ID, At: time.Unix(ev.Created, 0).UTC()}
	switch string(ev.Type) {
	case EventSucceeded:
		out.Status = payment.Succeeded
	case EventFailed, EventCanceled:
		out.Status = payment.Failed
	default:
		return out, nil // ignored: empty Status
	}
	var obj struct {
		ID     string `json:"id"`
		Object string `json:"object"`
	}
	if ev.Data == nil || json.Unmarshal(ev.Data.Raw, &obj) != nil || obj.ID == "" ||
		(obj.Object != "" && obj.Object != "payment_intent") {
		return payment.WebhookEvent{}, spike.Errorf(spike.ErrInvalid, "stripe webhook: %s event without a payment intent", ev.Type)
	}
	out.Ref = obj.ID
	return out, nil
}

// isSignatureError reports whether err is one of stripe-go's signature errors.
func isSignatureError(err error) bool {
	return errors.Is(err, webhook.ErrNotSigned) || errors.Is(err, webhook.ErrInvalidHeader) ||
		errors.Is(err, webhook.ErrNoValidSignature) || errors.Is(err, webhook.ErrTooOld)
}

// signatureTime returns the t= timestamp of a Stripe-Signature header
// ("t=1495999758,v1=...,v0=...").
func signatureTime(header string) (time.Time, bool) {
	for pair := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(pair, "=")
		if ok && k == "t" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return time.Time{}, false
			}
			return time.Unix(n, 0), true
		}
	}
	return time.Time{}, false
}

// mapStatus maps a PaymentIntent status to a payment status.
func mapStatus(s stripe.PaymentIntentStatus) (payment.Status, error) {
	switch s {
	case stripe.PaymentIntentStatusRequiresPaymentMethod,
		stripe.PaymentIntentStatusRequiresConfirmation,
		stripe.PaymentIntentStatusRequiresAction:
		return payment.RequiresAction, nil
	case stripe.PaymentIntentStatusProcessing,
		// Authorised, not captured: only with capture_method=manual, which
		// Create does not ask for.
		stripe.PaymentIntentStatusRequiresCapture:
		return payment.Processing, nil
	case stripe.PaymentIntentStatusSucceeded:
		return payment.Succeeded, nil
	case stripe.PaymentIntentStatusCanceled:
		return payment.Failed, nil
	}
	return "", spike.Errorf(spike.ErrUnavailable, "stripe: unknown payment intent status %q", string(s))
}

// wrap turns an error of stripe-go into a *spike.Error of the right kind,
// keeping the cause in the chain (errors.Is(err, context.DeadlineExceeded),
// errors.As(err, **stripe.Error) still work).
func wrap(ctx context.Context, op string, err error) error {
	kind, msg := spike.ErrUnavailable, "payment provider unavailable"
	var se *stripe.Error
	switch {
	case ctx.Err() != nil:
		// Timeout or cancellation of the caller: transient.
	case errors.As(err, &se):
		switch {
		case se.Type == stripe.ErrorTypeIdempotency:
			kind, msg = spike.ErrConflict, "payment provider: idempotency key reused with other parameters"
		case se.Code == stripe.ErrorCodeChargeAlreadyRefunded:
			kind, msg = spike.ErrConflict, "payment provider: already refunded"
		case se.HTTPStatusCode == http.StatusNotFound || se.Code == stripe.ErrorCodeResourceMissing:
			kind, msg = spike.ErrNotFound, "payment provider: no such payment"
		case se.HTTPStatusCode == http.StatusUnauthorized || se.HTTPStatusCode == http.StatusForbidden,
			se.HTTPStatusCode == http.StatusConflict, // a concurrent request with the same idempotency key
			se.HTTPStatusCode == http.StatusTooManyRequests,
			se.HTTPStatusCode >= 500:
			// Misconfigured key, contention, rate limit, outage: not the buyer's doing.
		case se.HTTPStatusCode >= 400:
			kind, msg = spike.ErrInvalid, "payment provider rejected the request"
		}
	}
	return fmt.Errorf("stripe: %s: %w: %w", op, spike.Errorf(kind, "%s", msg), err)
}
