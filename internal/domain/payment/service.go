package payment

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/order"
)

// Config configures a Service. Every field has a usable zero value.
type Config struct {
	// DefaultProvider is used when Start is given no provider name.
	// Zero: "sandbox".
	DefaultProvider string
	// Call runs every provider call (Create, Refund, Status); the guard
	// (timeout, breaker, bulkhead) plugs in here. Zero: call fn directly.
	Call func(ctx context.Context, fn func(ctx context.Context) error) error
	// Now is the clock. Zero: time.Now.
	Now func() time.Time
	// IDs makes payment ids. Zero: spike.NewIDGenerator().
	IDs *spike.IDGenerator
	// Logger receives the provider errors hidden behind a 503 and the
	// automatic refunds. Zero: discard.
	Logger *slog.Logger
	// ReconcileAfter is how long a payment stays requires_action or
	// processing without moving before the reconciliation sweep asks its
	// provider (RunReconciler). Zero: DefaultReconcileAfter (5m).
	ReconcileAfter time.Duration
	// ReconcileHorizon is how long after its creation a stuck payment is
	// still swept. Zero: DefaultReconcileHorizon (24h).
	ReconcileHorizon time.Duration
}

// OrderRef is what Start needs to know of the order it pays.
type OrderRef struct {
	ID              string
	UserID          int64
	AmountCents     int64
	Status          order.Status
	PaymentDeadline time.Time // zero: none
}

// Service starts payments, applies provider webhooks and refunds. It is
// safe for concurrent use, and across instances sharing a Store: every
// change is a compare-and-set on the stored status, every provider call is
// idempotent by payment id.
type Service struct {
	store     Store
	providers map[string]Provider
	orders    Orders
	def       string
	call      func(ctx context.Context, fn func(ctx context.Context) error) error
	now       func() time.Time
	ids       *spike.IDGenerator
	log       *slog.Logger

	reconAfter, reconHorizon time.Duration
	sweep                    sweeper
}

// New returns a Service over store, the providers by name, and orders.
func New(store Store, providers map[string]Provider, orders Orders, cfg Config) *Service {
	s := &Service{store: store, providers: make(map[string]Provider, len(providers)), orders: orders,
		def: cfg.DefaultProvider, call: cfg.Call, now: cfg.Now, ids: cfg.IDs, log: cfg.Logger,
		reconAfter: cfg.ReconcileAfter, reconHorizon: cfg.ReconcileHorizon}
	if s.reconAfter <= 0 {
		s.reconAfter = DefaultReconcileAfter
	}
	if s.reconHorizon <= 0 {
		s.reconHorizon = DefaultReconcileHorizon
	}
	for name, p := range providers {
		s.providers[name] = p
	}
	if s.def == "" {
		s.def = "sandbox"
	}
	if s.call == nil {
		s.call = func(ctx context.Context, fn func(context.Context) error) error { return fn(ctx) }
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.ids == nil {
		s.ids = spike.NewIDGenerator()
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// Provider returns the provider of that name ("" = the default).
func (s *Service) Provider(name string) (Provider, bool) {
	if name == "" {
		name = s.def
	}
	p, ok := s.providers[name]
	return p, ok
}

var errUnavailable = &spike.Error{Kind: spike.ErrUnavailable, Message: "payment provider unavailable"}

// providerErr hides a provider's error behind a 503 (the caller may retry
// with the same key), logging it. A cancelled caller gets its own error.
func (s *Service) providerErr(ctx context.Context, op string, p Payment, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	s.log.Warn("payment provider call failed", "op", op, "provider", p.Provider, "payment", p.ID, "order", p.OrderID, "err", err)
	return errUnavailable
}

// Start starts paying order o through provider ("" = the default) under the
// buyer's idempotency key: the same (order, key) always gives the same
// payment. The order must be unpaid (pending or created) and before its
// payment deadline, else spike.ErrConflict; an unknown provider or a bad key
// is spike.ErrInvalid. When the provider cannot be reached the error is
// spike.ErrUnavailable and the payment stays retryable with the same key.
// A key already used for the order with another provider is spike.ErrConflict.
func (s *Service) Start(ctx context.Context, o OrderRef, key, provider string) (Payment, error) {
	if !spike.ValidIdempotencyKey(key) {
		return Payment{}, spike.Errorf(spike.ErrInvalid, "idempotency key must be 1-128 printable ASCII characters")
	}
	if provider == "" {
		provider = s.def
	}
	prov, ok := s.providers[provider]
	if !ok {
		return Payment{}, spike.Errorf(spike.ErrInvalid, "unknown payment provider %q", provider)
	}
	now := s.now()
	if err := payable(o, now); err != nil {
		// A retry of a Start that succeeded before the order moved on still
		// gets its payment.
		if ps, lerr := s.store.OrderPayments(ctx, o.ID); lerr == nil {
			for _, p := range ps {
				if p.IdempotencyKey == key && p.ProviderRef != "" && p.Provider == provider {
					return p, nil
				}
			}
		}
		return Payment{}, err
	}
	p, _, err := s.store.CreatePayment(ctx, Payment{
		ID: s.ids.New(), OrderID: o.ID, UserID: o.UserID, Provider: provider,
		AmountCents: o.AmountCents, Status: RequiresAction, IdempotencyKey: key,
		CreatedAt: now, UpdatedAt: now,
	})
	if err != nil {
		return Payment{}, err
	}
	if p.Provider != provider {
		return Payment{}, spike.Errorf(spike.ErrConflict, "idempotency key already used with provider %q", p.Provider)
	}
	if p.ProviderRef != "" {
		return p, nil // the same key again
	}
	// New, or a previous attempt did not reach the provider: (re)create it
	// there; the provider deduplicates by p.ID.
	var ref, url string
	var st Status
	err = s.call(ctx, func(ctx context.Context) error {
		var err error
		ref, url, st, err = prov.Create(ctx, p)
		return err
	})
	if err == nil && (ref == "" || !st.Valid()) {
		err = errors.New("provider answered no reference or an unknown status")
	}
	if err != nil {
		return Payment{}, s.providerErr(ctx, "create", p, err)
	}
	next := p
	next.ProviderRef, next.CheckoutURL, next.Status, next.UpdatedAt = ref, url, st, s.now()
	stored, applied, err := s.store.UpdatePayment(ctx, next, []Status{RequiresAction})
	if err != nil {
		return Payment{}, err
	}
	if !applied {
		return stored, nil // a concurrent Start (or a webhook) got there first
	}
	if st == Succeeded {
		// Settled at once: the order side as for a webhook.
		if stored, err = s.settle(ctx, stored); err != nil {
			return stored, err
		}
	}
	return stored, nil
}

func payable(o OrderRef, now time.Time) error {
	if o.Status != order.Pending && o.Status != order.Created {
		return spike.Errorf(spike.ErrConflict, "order is %s", o.Status)
	}
	if !o.PaymentDeadline.IsZero() && !now.Before(o.PaymentDeadline) {
		return spike.Errorf(spike.ErrConflict, "order is past its payment deadline")
	}
	return nil
}

// from lists the statuses a payment may move to st from.
func from(st Status) []Status {
	switch st {
	case Processing:
		return []Status{RequiresAction}
	case Succeeded:
		// failed → succeeded: the buyer's next attempt at the provider
		// collected the money; it must not be lost.
		return []Status{RequiresAction, Processing, Failed}
	case Failed:
		return []Status{RequiresAction, Processing}
	}
	return nil // nothing goes back to requires_action
}

// HandleWebhook verifies and applies one webhook delivery of provider:
// spike.ErrUnauthenticated (bad signature) or spike.ErrInvalid (malformed,
// unknown provider) and nothing changes; ErrPaymentNotFound when the
// provider's reference is not one of ours. A delivery moves the payment
// forward at most once; duplicates, late and out-of-order deliveries (a
// failed after a succeeded, a processing after either) change nothing.
// On success the order is marked paid; if it was cancelled meanwhile the
// payment is refunded through the provider and the order stays cancelled.
// Any error other than the ones above (store, order or refund trouble) means
// "deliver again": the retry completes what this one could not, and only that.
func (s *Service) HandleWebhook(ctx context.Context, provider string, header http.Header, body []byte) error {
	prov, ok := s.providers[provider]
	if !ok {
		return spike.Errorf(spike.ErrInvalid, "unknown payment provider %q", provider)
	}
	ev, err := prov.VerifyWebhook(header, body, s.now())
	if err != nil {
		return err
	}
	if !ev.Status.Valid() {
		return spike.Errorf(spike.ErrInvalid, "unknown payment status %q", ev.Status)
	}
	p, err := s.store.PaymentByRef(ctx, provider, ev.Ref)
	if err != nil {
		return err
	}
	p, err = s.apply(ctx, p, ev.Status)
	if err != nil {
		return err
	}
	s.log.Debug("payment webhook", "provider", provider, "event", ev.ID, "payment", p.ID, "status", ev.Status, "now", p.Status)
	return nil
}

// apply moves p to st if that is a move forward, then, whenever the payment
// is (now or already) succeeded, makes sure the order side is done.
func (s *Service) apply(ctx context.Context, p Payment, st Status) (Payment, error) {
	if fr := from(st); len(fr) > 0 && p.Status != st {
		next := p
		next.Status, next.UpdatedAt = st, s.now()
		stored, _, err := s.store.UpdatePayment(ctx, next, fr)
		if err != nil {
			return p, err
		}
		p = stored
	}
	if st == Succeeded && p.Status == Succeeded {
		// Also on a duplicate: a crash between the update above and
		// MarkPaid is completed by the provider's next delivery.
		return s.settle(ctx, p)
	}
	return p, nil
}

// settle marks the order of a succeeded payment paid, or refunds the
// payment when the order was cancelled first. Idempotent.
func (s *Service) settle(ctx context.Context, p Payment) (Payment, error) {
	if p.Refunded() {
		return p, nil
	}
	applied, status, err := s.orders.MarkPaid(ctx, p.OrderID, p.ID, p.UpdatedAt)
	if err != nil {
		return p, err
	}
	if applied || order.Status(status) != order.Cancelled {
		// Paid now, or already (by this payment, or by another one: see the
		// package documentation of what is left to reconciliation).
		return p, nil
	}
	s.log.Info("payment succeeded for a cancelled order: refunding", "payment", p.ID, "order", p.OrderID)
	return s.refund(ctx, p)
}

// refund gives back the money of a succeeded payment through its provider
// and records it. Idempotent: a refunded payment is returned as is.
func (s *Service) refund(ctx context.Context, p Payment) (Payment, error) {
	if p.Refunded() {
		return p, nil
	}
	if p.Status != Succeeded {
		return p, spike.Errorf(spike.ErrConflict, "payment is %s", p.Status)
	}
	prov, ok := s.providers[p.Provider]
	if !ok {
		s.log.Error("refund: payment provider not configured", "payment", p.ID, "provider", p.Provider)
		return p, errUnavailable
	}
	var ref string
	err := s.call(ctx, func(ctx context.Context) error {
		var err error
		ref, err = prov.Refund(ctx, p)
		return err
	})
	if err == nil && ref == "" {
		err = errors.New("provider answered no refund reference")
	}
	if err != nil {
		return p, s.providerErr(ctx, "refund", p, err)
	}
	next := p
	now := s.now()
	next.RefundRef, next.RefundedCents, next.RefundedAt, next.UpdatedAt = ref, p.AmountCents, now, now
	// CAS from succeeded: a concurrent refund of the same payment writes
	// the same reference (the provider deduplicates by p.ID).
	stored, _, err := s.store.UpdatePayment(ctx, next, []Status{Succeeded})
	return stored, err
}

// RefundPayment refunds one succeeded payment through its provider and
// records RefundRef/RefundedAt. spike.ErrConflict if it has not succeeded;
// spike.ErrUnavailable while the provider cannot be reached (retrying is
// safe: the provider deduplicates by payment id and a refunded payment is
// returned as is).
func (s *Service) RefundPayment(ctx context.Context, id string) (Payment, error) {
	p, err := s.store.Payment(ctx, id)
	if err != nil {
		return Payment{}, err
	}
	return s.refund(ctx, p)
}

// Refund refunds every succeeded, not yet refunded payment of an order (the
// admin refund) and returns the order's succeeded payments as now stored.
// spike.ErrConflict when the order has no succeeded payment; the errors of
// RefundPayment otherwise (retrying is safe). Call it before the order's
// Refund transition.
func (s *Service) Refund(ctx context.Context, orderID string) ([]Payment, error) {
	ps, err := s.store.OrderPayments(ctx, orderID)
	if err != nil {
		return nil, err
	}
	var out []Payment
	for _, p := range ps {
		if p.Status != Succeeded {
			continue
		}
		p, err := s.refund(ctx, p)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, spike.Errorf(spike.ErrConflict, "order has no succeeded payment")
	}
	return out, nil
}

// Reconcile asks the payment's provider for its status and applies it like
// a webhook (the order becomes paid only on the provider's word). For a
// payment whose webhooks were lost; RunReconciler calls it on the payments
// that look stuck. spike.ErrUnavailable when the provider cannot be reached.
func (s *Service) Reconcile(ctx context.Context, id string) (Payment, error) {
	p, err := s.store.Payment(ctx, id)
	if err != nil {
		return Payment{}, err
	}
	if p.ProviderRef == "" {
		return p, nil // never reached the provider
	}
	prov, ok := s.providers[p.Provider]
	if !ok {
		return p, errUnavailable
	}
	var st Status
	err = s.call(ctx, func(ctx context.Context) error {
		var err error
		st, err = prov.Status(ctx, p)
		return err
	})
	if err == nil && !st.Valid() {
		err = errors.New("provider answered an unknown status")
	}
	if err != nil {
		return p, s.providerErr(ctx, "status", p, err)
	}
	return s.apply(ctx, p, st)
}

// Payment returns a payment by id (ErrPaymentNotFound).
func (s *Service) Payment(ctx context.Context, id string) (Payment, error) {
	return s.store.Payment(ctx, id)
}

// OrderPayments returns the payments of an order.
func (s *Service) OrderPayments(ctx context.Context, orderID string) ([]Payment, error) {
	return s.store.OrderPayments(ctx, orderID)
}
