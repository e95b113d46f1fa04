package payment_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/payment"
	"github.com/spikehq/spike/internal/testkit/paymenttest"
)

var secret = []byte("whsec_test")

// fakeProvider is a gateway that deduplicates by payment id.
type fakeProvider struct {
	mu       sync.Mutex
	down     bool
	refs     map[string]string // payment id -> ref
	refunds  map[string]string // payment id -> refund ref
	status   map[string]payment.Status
	creates  int
	refundsN int
	asked    map[string]int // Status calls by ref
	initial  payment.Status
}

func newFakeProvider() *fakeProvider {
	return &fakeProvider{refs: map[string]string{}, refunds: map[string]string{}, status: map[string]payment.Status{}, asked: map[string]int{}, initial: payment.RequiresAction}
}

var errDown = errors.New("connection refused")

func (f *fakeProvider) Name() string   { return "fake" }
func (f *fakeProvider) setDown(d bool) { f.mu.Lock(); f.down = d; f.mu.Unlock() }

func (f *fakeProvider) Create(_ context.Context, p payment.Payment) (string, string, payment.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates++
	if f.down {
		return "", "", "", errDown
	}
	ref, ok := f.refs[p.ID]
	if !ok {
		ref = "ref_" + p.ID
		f.refs[p.ID] = ref
		f.status[ref] = f.initial
	}
	return ref, "https://pay.example/" + ref, f.status[ref], nil
}

func (f *fakeProvider) Refund(_ context.Context, p payment.Payment) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refundsN++
	if f.down {
		return "", errDown
	}
	r, ok := f.refunds[p.ID]
	if !ok {
		r = "rf_" + p.ID
		f.refunds[p.ID] = r
	}
	return r, nil
}

func (f *fakeProvider) Status(_ context.Context, p payment.Payment) (payment.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked[p.ProviderRef]++
	if f.down {
		return "", errDown
	}
	st, ok := f.status[p.ProviderRef]
	if !ok {
		return "", spike.Errorf(spike.ErrNotFound, "no such payment")
	}
	return st, nil
}

type wire struct {
	ID     string         `json:"id"`
	Ref    string         `json:"ref"`
	Status payment.Status `json:"status"`
	At     time.Time      `json:"at"`
}

func (f *fakeProvider) VerifyWebhook(h http.Header, body []byte, now time.Time) (payment.WebhookEvent, error) {
	if err := payment.Verify(secret, h.Get(payment.SignatureHeader), body, now, 0); err != nil {
		return payment.WebhookEvent{}, err
	}
	var w wire
	if err := json.Unmarshal(body, &w); err != nil {
		return payment.WebhookEvent{}, spike.Errorf(spike.ErrInvalid, "malformed webhook")
	}
	return payment.WebhookEvent{ID: w.ID, Ref: w.Ref, Status: w.Status, At: w.At}, nil
}

// delivery returns a signed webhook for ref.
func delivery(ref string, st payment.Status, at time.Time) (http.Header, []byte) {
	body, _ := json.Marshal(wire{ID: "evt_" + ref + string(st), Ref: ref, Status: st, At: at})
	h := http.Header{}
	h.Set(payment.SignatureHeader, payment.Sign(secret, at, body))
	return h, body
}

// fakeOrders is the order side.
type fakeOrders struct {
	mu      sync.Mutex
	status  map[string]order.Status
	paidBy  map[string]string
	applied int
	err     error
}

func (o *fakeOrders) MarkPaid(_ context.Context, id, paymentID string, _ time.Time) (bool, string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil {
		return false, "", o.err
	}
	st := o.status[id]
	if st != order.Pending && st != order.Created {
		return false, string(st), nil
	}
	o.status[id] = order.Paid
	o.paidBy[id] = paymentID
	o.applied++
	return true, string(order.Paid), nil
}

func (o *fakeOrders) get(id string) order.Status {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.status[id]
}

func (o *fakeOrders) set(id string, st order.Status) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.status[id] = st
}

type fixture struct {
	svc    *payment.Service
	store  *paymenttest.Memory
	prov   *fakeProvider
	orders *fakeOrders
	now    time.Time
	calls  int
	mu     sync.Mutex
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{store: paymenttest.NewMemory(), prov: newFakeProvider(),
		orders: &fakeOrders{status: map[string]order.Status{}, paidBy: map[string]string{}},
		now:    time.Unix(1_800_000_000, 0)}
	f.svc = payment.New(f.store, map[string]payment.Provider{"fake": f.prov}, f.orders, payment.Config{
		DefaultProvider: "fake",
		Now:             func() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now },
		Call: func(ctx context.Context, fn func(context.Context) error) error {
			f.mu.Lock()
			f.calls++
			f.mu.Unlock()
			return fn(ctx)
		},
	})
	return f
}

func (f *fixture) order(id string) payment.OrderRef {
	if f.orders.get(id) == "" {
		f.orders.set(id, order.Created)
	}
	return payment.OrderRef{ID: id, UserID: 42, AmountCents: 1999, Status: f.orders.get(id), PaymentDeadline: f.now.Add(15 * time.Minute)}
}

func (f *fixture) start(t *testing.T, orderID, key string) payment.Payment {
	t.Helper()
	p, err := f.svc.Start(context.Background(), f.order(orderID), key, "")
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return p
}

func (f *fixture) deliver(ref string, st payment.Status) error {
	h, body := delivery(ref, st, f.now)
	return f.svc.HandleWebhook(context.Background(), "fake", h, body)
}

func (f *fixture) stored(t *testing.T, id string) payment.Payment {
	t.Helper()
	p, err := f.svc.Payment(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStartIsIdempotentByKey(t *testing.T) {
	f := newFixture(t)
	p := f.start(t, "o1", "k1")
	if p.Status != payment.RequiresAction || p.ProviderRef == "" || p.CheckoutURL == "" || p.Provider != "fake" ||
		p.AmountCents != 1999 || p.UserID != 42 || p.OrderID != "o1" || p.IdempotencyKey != "k1" || p.ID == "" {
		t.Fatalf("Start = %+v", p)
	}
	again := f.start(t, "o1", "k1")
	if again.ID != p.ID || again.CheckoutURL != p.CheckoutURL {
		t.Fatalf("same key gave %s, first %s", again.ID, p.ID)
	}
	if f.prov.creates != 1 || f.calls != 1 {
		t.Fatalf("provider Create called %d times (%d through Call); want once", f.prov.creates, f.calls)
	}
	other := f.start(t, "o1", "k2")
	if other.ID == p.ID {
		t.Fatal("another key gave the same payment")
	}
	if _, err := f.svc.Start(context.Background(), f.order("o1"), "k1", "stripe"); !errors.Is(err, spike.ErrInvalid) {
		t.Fatalf("unknown provider: %v", err)
	}
	ps, _ := f.svc.OrderPayments(context.Background(), "o1")
	if len(ps) != 2 {
		t.Fatalf("OrderPayments = %d", len(ps))
	}
}

func TestStartRefusesUnpayableOrders(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, st := range []order.Status{order.Paid, order.Cancelled, order.Shipped, order.Refunded} {
		o := f.order("o-" + string(st))
		o.Status = st
		_, err := f.svc.Start(ctx, o, "k", "")
		if !errors.Is(err, spike.ErrConflict) || !strings.Contains(err.Error(), string(st)) {
			t.Errorf("order %s: Start = %v; want a conflict naming it", st, err)
		}
	}
	o := f.order("late")
	o.PaymentDeadline = f.now
	if _, err := f.svc.Start(ctx, o, "k", ""); !errors.Is(err, spike.ErrConflict) {
		t.Errorf("past the deadline: %v", err)
	}
	o.PaymentDeadline = time.Time{} // none
	if _, err := f.svc.Start(ctx, o, "k", ""); err != nil {
		t.Errorf("no deadline: %v", err)
	}
	if _, err := f.svc.Start(ctx, f.order("o2"), "", ""); !errors.Is(err, spike.ErrInvalid) {
		t.Errorf("empty key: %v", err)
	}
	if ps, _ := f.store.Payments(ctx, "", 100); len(ps) != 1 {
		t.Errorf("refused starts stored payments: %d", len(ps))
	}
}

func TestStartProviderDownIsRetryable(t *testing.T) {
	f := newFixture(t)
	f.prov.setDown(true)
	_, err := f.svc.Start(context.Background(), f.order("o1"), "k", "")
	if !errors.Is(err, spike.ErrUnavailable) {
		t.Fatalf("provider down: Start = %v; want spike.ErrUnavailable", err)
	}
	f.prov.setDown(false)
	p := f.start(t, "o1", "k")
	if p.ProviderRef == "" {
		t.Fatalf("retry: %+v", p)
	}
	if ps, _ := f.svc.OrderPayments(context.Background(), "o1"); len(ps) != 1 {
		t.Fatalf("the retry made another payment: %d", len(ps))
	}
}

func TestStartThroughTheGuard(t *testing.T) {
	f := newFixture(t)
	open := errors.New("breaker open")
	svc := payment.New(f.store, map[string]payment.Provider{"fake": f.prov}, f.orders, payment.Config{
		DefaultProvider: "fake",
		Call:            func(context.Context, func(context.Context) error) error { return open },
	})
	if _, err := svc.Start(context.Background(), f.order("o1"), "k", ""); !errors.Is(err, spike.ErrUnavailable) {
		t.Fatalf("guard refusing: %v", err)
	}
	if f.prov.creates != 0 {
		t.Fatal("the guard was bypassed")
	}
}

func TestStartAgainAfterThePaymentSucceeded(t *testing.T) {
	f := newFixture(t)
	p := f.start(t, "o1", "k")
	if err := f.deliver(p.ProviderRef, payment.Succeeded); err != nil {
		t.Fatal(err)
	}
	again, err := f.svc.Start(context.Background(), f.order("o1"), "k", "") // the order is paid now
	if err != nil || again.ID != p.ID || again.Status != payment.Succeeded {
		t.Fatalf("the same key after payment: %+v, %v", again, err)
	}
	if _, err := f.svc.Start(context.Background(), f.order("o1"), "new", ""); !errors.Is(err, spike.ErrConflict) {
		t.Fatalf("a new key for a paid order: %v", err)
	}
}

func TestWebhookSucceededPaysOnce(t *testing.T) {
	f := newFixture(t)
	p := f.start(t, "o1", "k")
	if err := f.deliver(p.ProviderRef, payment.Succeeded); err != nil {
		t.Fatal(err)
	}
	got := f.stored(t, p.ID)
	if got.Status != payment.Succeeded || f.orders.get("o1") != order.Paid || f.orders.paidBy["o1"] != p.ID {
		t.Fatalf("after success: payment %s, order %s", got.Status, f.orders.get("o1"))
	}
	// Replayed (a valid signature, delivered again) and late deliveries.
	f.now = f.now.Add(time.Minute)
	for _, st := range []payment.Status{payment.Succeeded, payment.Failed, payment.Processing, payment.RequiresAction, payment.Succeeded} {
		if err := f.deliver(p.ProviderRef, st); err != nil {
			t.Fatalf("late %s: %v", st, err)
		}
	}
	again := f.stored(t, p.ID)
	paymenttest.Same(t, again, got)
	if f.orders.applied != 1 {
		t.Fatalf("order marked paid %d times", f.orders.applied)
	}
}

func TestWebhookConcurrentDuplicates(t *testing.T) {
	f := newFixture(t)
	p := f.start(t, "o1", "k")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := f.deliver(p.ProviderRef, payment.Succeeded); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if f.orders.applied != 1 || f.stored(t, p.ID).Status != payment.Succeeded {
		t.Fatalf("applied %d", f.orders.applied)
	}
}

func TestWebhookReordered(t *testing.T) {
	f := newFixture(t)
	// processing, then the failure, then processing again (late): failed.
	p := f.start(t, "o1", "k")
	for _, st := range []payment.Status{payment.Processing, payment.Failed, payment.Processing} {
		if err := f.deliver(p.ProviderRef, st); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.stored(t, p.ID).Status; got != payment.Failed || f.orders.get("o1") != order.Created {
		t.Fatalf("got %s, order %s", got, f.orders.get("o1"))
	}
	// A later success (the buyer's second attempt at the provider) wins.
	if err := f.deliver(p.ProviderRef, payment.Succeeded); err != nil {
		t.Fatal(err)
	}
	if got := f.stored(t, p.ID).Status; got != payment.Succeeded || f.orders.get("o1") != order.Paid {
		t.Fatalf("got %s, order %s", got, f.orders.get("o1"))
	}
	// Succeeded delivered before processing: processing is ignored.
	q := f.start(t, "o2", "k")
	for _, st := range []payment.Status{payment.Succeeded, payment.Processing} {
		if err := f.deliver(q.ProviderRef, st); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.stored(t, q.ID).Status; got != payment.Succeeded {
		t.Fatalf("got %s", got)
	}
}

func TestWebhookRefused(t *testing.T) {
	f := newFixture(t)
	p := f.start(t, "o1", "k")
	ctx := context.Background()
	h, body := delivery(p.ProviderRef, payment.Succeeded, f.now)
	bad := http.Header{}
	bad.Set(payment.SignatureHeader, payment.Sign([]byte("wrong"), f.now, body))
	old := http.Header{}
	old.Set(payment.SignatureHeader, payment.Sign(secret, f.now.Add(-6*time.Minute), body))
	future := http.Header{}
	future.Set(payment.SignatureHeader, payment.Sign(secret, f.now.Add(6*time.Minute), body))
	for name, hh := range map[string]http.Header{"bad": bad, "missing": {}, "old": old, "future": future} {
		if err := f.svc.HandleWebhook(ctx, "fake", hh, body); !errors.Is(err, spike.ErrUnauthenticated) {
			t.Errorf("%s signature: %v; want spike.ErrUnauthenticated", name, err)
		}
	}
	if err := f.svc.HandleWebhook(ctx, "fake", h, append(body, ' ')); !errors.Is(err, spike.ErrUnauthenticated) {
		t.Errorf("tampered body: %v", err)
	}
	if err := f.svc.HandleWebhook(ctx, "nope", h, body); !errors.Is(err, spike.ErrInvalid) {
		t.Errorf("unknown provider: %v", err)
	}
	if got := f.stored(t, p.ID); got.Status != payment.RequiresAction || f.orders.applied != 0 {
		t.Fatalf("a refused delivery changed something: %s", got.Status)
	}
	hu, bu := delivery("ref_unknown", payment.Succeeded, f.now)
	if err := f.svc.HandleWebhook(ctx, "fake", hu, bu); !errors.Is(err, spike.ErrNotFound) {
		t.Errorf("unknown ref: %v", err)
	}
	hm := http.Header{}
	hm.Set(payment.SignatureHeader, payment.Sign(secret, f.now, []byte("{")))
	if err := f.svc.HandleWebhook(ctx, "fake", hm, []byte("{")); !errors.Is(err, spike.ErrInvalid) {
		t.Errorf("malformed: %v", err)
	}
}

func TestWebhookOrderSideFailsThenRedelivered(t *testing.T) {
	f := newFixture(t)
	p := f.start(t, "o1", "k")
	f.orders.err = errors.New("db down")
	if err := f.deliver(p.ProviderRef, payment.Succeeded); err == nil {
		t.Fatal("MarkPaid failing: HandleWebhook = nil; the provider would not redeliver")
	}
	f.orders.err = nil
	if err := f.deliver(p.ProviderRef, payment.Succeeded); err != nil {
		t.Fatal(err)
	}
	if f.orders.get("o1") != order.Paid {
		t.Fatal("the redelivery did not complete the order side")
	}
}

func TestSuccessForCancelledOrderIsRefunded(t *testing.T) {
	f := newFixture(t)
	p := f.start(t, "o1", "k")
	f.orders.set("o1", order.Cancelled) // the deadline passed meanwhile
	f.prov.setDown(true)
	if err := f.deliver(p.ProviderRef, payment.Succeeded); !errors.Is(err, spike.ErrUnavailable) {
		t.Fatalf("refund unreachable: %v; want spike.ErrUnavailable (redeliver)", err)
	}
	f.prov.setDown(false)
	for range 3 { // the redelivery refunds; later ones change nothing
		if err := f.deliver(p.ProviderRef, payment.Succeeded); err != nil {
			t.Fatal(err)
		}
	}
	got := f.stored(t, p.ID)
	if got.RefundRef != "rf_"+p.ID || got.RefundedCents != p.AmountCents || got.RefundedAt.IsZero() || got.Status != payment.Succeeded {
		t.Fatalf("refund not recorded: %+v", got)
	}
	if f.orders.get("o1") != order.Cancelled {
		t.Fatalf("order is %s", f.orders.get("o1"))
	}
	if f.prov.refundsN != 2 { // the failed call, then one that succeeded
		t.Fatalf("provider Refund called %d times", f.prov.refundsN)
	}
}

func TestAdminRefund(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	p := f.start(t, "o1", "k")
	if _, err := f.svc.Refund(ctx, "o1"); !errors.Is(err, spike.ErrConflict) {
		t.Fatalf("refund of an unpaid order: %v", err)
	}
	if err := f.deliver(p.ProviderRef, payment.Succeeded); err != nil {
		t.Fatal(err)
	}
	f.prov.setDown(true)
	if _, err := f.svc.Refund(ctx, "o1"); !errors.Is(err, spike.ErrUnavailable) {
		t.Fatalf("provider down: %v", err)
	}
	f.prov.setDown(false)
	for range 2 {
		ps, err := f.svc.Refund(ctx, "o1")
		if err != nil || len(ps) != 1 || ps[0].RefundRef == "" || ps[0].ID != p.ID {
			t.Fatalf("Refund = %+v, %v", ps, err)
		}
	}
	if f.prov.refundsN != 2 {
		t.Fatalf("provider Refund called %d times; want 2 (down, then ok)", f.prov.refundsN)
	}
	if _, err := f.svc.RefundPayment(ctx, "nope"); !errors.Is(err, spike.ErrNotFound) {
		t.Fatal(err)
	}
}

func TestReconcile(t *testing.T) {
	f := newFixture(t)
	p := f.start(t, "o1", "k")
	f.prov.mu.Lock()
	f.prov.status[p.ProviderRef] = payment.Succeeded // its webhook was lost
	f.prov.mu.Unlock()
	got, err := f.svc.Reconcile(context.Background(), p.ID)
	if err != nil || got.Status != payment.Succeeded || f.orders.get("o1") != order.Paid {
		t.Fatalf("Reconcile = %+v, %v; order %s", got, err, f.orders.get("o1"))
	}
}

func TestStartSettledAtOnce(t *testing.T) {
	f := newFixture(t)
	f.prov.initial = payment.Succeeded
	p := f.start(t, "o1", "k")
	if p.Status != payment.Succeeded || f.orders.get("o1") != order.Paid {
		t.Fatalf("payment %s, order %s", p.Status, f.orders.get("o1"))
	}
}

func ExampleSign() {
	body := []byte(`{"id":"evt_1"}`)
	fmt.Println(payment.Sign([]byte("secret"), time.Unix(1_800_000_000, 0), body)[:16])
	// Output: t=1800000000,v1=
}

func TestStartConcurrentSameKey(t *testing.T) {
	f := newFixture(t)
	f.orders.set("o1", order.Created)
	o := f.order("o1")
	const n = 8
	got := make([]payment.Payment, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			p, err := f.svc.Start(context.Background(), o, "k", "")
			if err != nil {
				t.Error(err)
			}
			got[i] = p
		})
	}
	wg.Wait()
	for _, p := range got {
		if p.ID != got[0].ID || p.ProviderRef != got[0].ProviderRef || p.ProviderRef == "" {
			t.Fatalf("concurrent starts: %+v vs %+v", p, got[0])
		}
	}
	if ps, _ := f.svc.OrderPayments(context.Background(), "o1"); len(ps) != 1 {
		t.Fatalf("%d payments", len(ps))
	}
}

func TestView(t *testing.T) {
	p := payment.Payment{ID: "p1", OrderID: "o1", Provider: "sandbox", AmountCents: 100, Status: payment.Succeeded, CheckoutURL: "u"}
	b, _ := json.Marshal(p.View())
	want := `{"payment_id":"p1","order_id":"o1","provider":"sandbox","amount_cents":100,"status":"succeeded","checkout_url":"u","created_at":"0001-01-01T00:00:00Z","updated_at":"0001-01-01T00:00:00Z"}`
	if string(b) != want {
		t.Fatalf("View JSON\n got  %s\n want %s", b, want)
	}
}
