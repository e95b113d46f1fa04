package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/natsbus"
	"github.com/spikehq/spike/internal/adapter/sandboxpay"
	"github.com/spikehq/spike/internal/adapter/stripepay"
	"github.com/spikehq/spike/internal/depguard"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/notify"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/payment"
	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/internal/ledger"
)

// afterThe202 is what moves orders after the 202: the state machine,
// payments and their providers, payment deadlines, and the stock returns.
type afterThe202 struct {
	lifecycle *order.Lifecycle
	payments  *payment.Service
	returns   *ledger.Returns
	sandbox   *sandboxpay.Gateway // nil: not configured
	checkout  map[string]http.Handler
	breaker   *depguard.Guard
}

// newAfterThe202 builds it; publicURL is where buyers and the sandbox
// reach this API. The caller starts the Run loops (see runAfterThe202).
func (a *app) newAfterThe202(ctx context.Context, cfg Config, publicURL string, counters inventory.Stock,
	sales ledger.SaleLedger, guards *depguard.Metrics, ids *spike.IDGenerator, log *slog.Logger) (*afterThe202, error) {
	events, err := natsbus.NewEvents(ctx, a.bus, natsbus.EventsConfig{Replicas: cfg.NATS.Replicas})
	if err != nil {
		return nil, err
	}
	x := &afterThe202{checkout: map[string]http.Handler{}}
	x.returns = ledger.NewReturns(counters, a.store, a.products, sales, ledger.ReturnsConfig{
		SettleAfter: cfg.Payments.SettleAfter, Logger: log.With("component", "returns"),
	})
	now, err := skewedClock(os.Getenv(clockSkewEnv), log)
	if err != nil {
		return nil, err
	}
	lc := order.LifecycleConfig{Events: events, StockFreed: x.returns.Kick, Overdue: a.bus, Now: now, Logger: log.With("component", "lifecycle")}
	if a.notifier != nil {
		n := a.notifier
		lc.Notify = func(o order.Order, e order.TransitionEvent) {
			n.Notify(notify.Notification{Kind: notify.Kind("order_" + string(e.To)), OrderID: o.ID, UserID: o.UserID,
				SaleID: o.SaleID, SKU: o.SKU, Quantity: o.Quantity, AmountCents: o.AmountCents(), At: e.At})
		}
	}
	if m, ok := a.store.(interface {
		MinPaymentWindow(context.Context) (time.Duration, bool, error)
	}); ok {
		lc.MinPaymentWindow = m.MinPaymentWindow
	}
	x.lifecycle = order.NewLifecycle(a.store, a.orders, lc)

	providers := map[string]payment.Provider{}
	secret := cfg.Payments.Sandbox.Secret
	if secret == "" {
		// Every instance shares the JWT secret, so each derives the same key.
		m := hmac.New(sha256.New, a.secret)
		m.Write([]byte("spike sandbox payments"))
		secret = Secret(m.Sum(nil))
	}
	x.sandbox = sandboxpay.New(sandboxpay.Config{
		Secret:        []byte(secret),
		WebhookURL:    publicURL + "/v1/payments/webhooks/" + sandboxpay.Name,
		CheckoutBase:  publicURL + "/sandbox/checkout",
		Latency:       cfg.Payments.Sandbox.Latency,
		FailureRate:   cfg.Payments.Sandbox.FailureRate,
		DuplicateRate: cfg.Payments.Sandbox.DuplicateRate,
		ReorderRate:   cfg.Payments.Sandbox.ReorderRate,
		Workers:       16, // a real provider delivers webhooks in parallel
		Now:           now,
		Logger:        log.With("component", "sandboxpay"),
	})
	providers[sandboxpay.Name] = x.sandbox
	// By method, so that another method is a 405 with Allow (api/openapi.yaml).
	x.checkout["GET /sandbox/checkout/{ref}"] = x.sandbox.Handler()
	x.checkout["POST /sandbox/checkout/{ref}"] = x.sandbox.Handler()
	if cfg.Payments.Stripe.APIKey != "" {
		sp, err := stripepay.New(stripepay.Config{APIKey: string(cfg.Payments.Stripe.APIKey),
			WebhookSecret: string(cfg.Payments.Stripe.WebhookSecret), BackendURL: cfg.Payments.Stripe.BackendURL})
		if err != nil {
			return nil, fmt.Errorf("payments.stripe: %w", err)
		}
		providers["stripe"] = sp
	}
	// A slow or failing provider fails payments fast (503 + Retry-After)
	// and never touches placements: its calls have a guard of their own.
	x.breaker = depguard.New(depguard.Payments, depguard.Config{Metrics: guards})
	x.payments = payment.New(a.store, providers, x.lifecycle, payment.Config{
		DefaultProvider: cfg.Payments.Provider,
		Call:            x.breaker.Do,
		IDs:             ids,
		Now:             now,
		Logger:          log.With("component", "payments"),
	})
	return x, nil
}

// clockSkewEnv names a test-only hook: a duration (e.g. "2s", "-1.5s")
// added to the clock of the order's life on this instance (transitions,
// the deadline sweep, payments and the sandbox's webhooks), with which
// e2e's chaos test skews one instance's clock. Placement times come from
// the stock counters and are not skewed.
const clockSkewEnv = "SPIKE_TEST_CLOCK_SKEW"

// skewedClock returns time.Now shifted by skew ("" or "0": time.Now).
func skewedClock(skew string, log *slog.Logger) (func() time.Time, error) {
	if skew == "" {
		return time.Now, nil
	}
	d, err := time.ParseDuration(skew)
	if err != nil {
		return nil, fmt.Errorf("%s: %q is not a duration like 2s", clockSkewEnv, skew)
	}
	if d == 0 {
		return time.Now, nil
	}
	log.Warn("test hook: the clock of the order's life is skewed", "env", clockSkewEnv, "skew", d)
	return func() time.Time { return time.Now().Add(d) }, nil
}

// run starts the Run loops of the order's life on the app's work group.
func (a *app) runAfterThe202(workCtx context.Context, cfg Config, x *afterThe202) {
	a.goWork(func() error { return x.returns.Run(workCtx) })
	a.goWork(func() error { return x.lifecycle.RunDeadlines(workCtx, cfg.Payments.DeadlineSweep) })
	a.goWork(func() error { return x.sandbox.Run(workCtx) })
	a.goWork(func() error { return x.payments.RunReconciler(workCtx, 0) })
}

// paymentWindow reads a sale's payment window for order persistence; an
// unknown sale has none.
func paymentWindow(sales sale.Store) func(ctx context.Context, saleID string) (time.Duration, error) {
	return func(ctx context.Context, saleID string) (time.Duration, error) {
		s, err := sales.Sale(ctx, saleID)
		if errors.Is(err, sale.ErrSaleNotFound) {
			return 0, nil
		}
		return s.PaymentWindow, err
	}
}

// publicURL is where this API is reached: payments.public_url, else the
// listen address.
func publicURL(cfg Config, addr string) string {
	if cfg.Payments.PublicURL != "" {
		return strings.TrimRight(cfg.Payments.PublicURL, "/")
	}
	return "http://" + addr
}
