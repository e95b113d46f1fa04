package stripepay_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v82"
	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/stripepay"
	"github.com/spikehq/spike/internal/domain/payment"
)

const (
	testKey    = "sk_test_123"
	testSecret = "whsec_test_secret"
)

func newProvider(t *testing.T, backendURL string, rt http.RoundTripper) *stripepay.Provider {
	t.Helper()
	var hc *http.Client
	if rt != nil {
		hc = &http.Client{Transport: rt, Timeout: 20 * time.Second}
	}
	p, err := stripepay.New(stripepay.Config{
		APIKey: testKey, WebhookSecret: testSecret, BackendURL: backendURL, HTTPClient: hc,
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func testPayment() payment.Payment {
	return payment.Payment{ID: "pay_01HX", OrderID: "ord_42", UserID: 42, Provider: "stripe", AmountCents: 1999}
}

func TestNew(t *testing.T) {
	if _, err := stripepay.New(stripepay.Config{WebhookSecret: testSecret}); err == nil {
		t.Error("New without APIKey: no error")
	}
	if _, err := stripepay.New(stripepay.Config{APIKey: testKey}); err == nil {
		t.Error("New without WebhookSecret: no error")
	}
	p := newProvider(t, "", nil)
	if p.Name() != "stripe" {
		t.Errorf("Name() = %q", p.Name())
	}
	var _ payment.Provider = p
}

// --- against stripe-mock -------------------------------------------------
//
// stripe-mock validates each request against Stripe's OpenAPI spec (path,
// method, parameter names and types) and answers with a fixture. It is
// stateless: it does not keep the intent, does not honour Idempotency-Key
// (every create returns a fresh random id), does not echo a status that
// depends on earlier calls, and does not check that a refund's intent exists
// or succeeded. So these tests check what the adapter SENDS (recorded on the
// way out: idempotency keys, amount, currency, metadata) and that it parses
// and maps what comes back; Stripe's behaviour behind those is not tested.

func TestCreateStripeMock(t *testing.T) {
	base := stripeMock(t)
	rec := &recorder{}
	prov := newProvider(t, base, rec)
	p := testPayment()

	ref, checkout, st, err := prov.Create(ctxT(t), p)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if !strings.HasPrefix(ref, "pi_") {
		t.Errorf("ref = %q, want a PaymentIntent id", ref)
	}
	// The fixture intent is requires_payment_method, with no redirect.
	if st != payment.RequiresAction {
		t.Errorf("status = %q, want %q", st, payment.RequiresAction)
	}
	if checkout != "" {
		t.Errorf("checkout URL = %q, want empty (the client secret is not exposed)", checkout)
	}
	r := rec.last(t)
	if r.Method != http.MethodPost || r.Path != "/v1/payment_intents" {
		t.Errorf("request %s %s", r.Method, r.Path)
	}
	if r.IdempotencyKey != p.ID {
		t.Errorf("Idempotency-Key = %q, want %q", r.IdempotencyKey, p.ID)
	}
	for k, want := range map[string]string{
		"amount": "1999", "currency": "usd",
		"metadata[order_id]": p.OrderID, "metadata[payment_id]": p.ID,
	} {
		if got := r.Form.Get(k); got != want {
			t.Errorf("form %s = %q, want %q", k, got, want)
		}
	}
}

func TestCreateIdempotentStripeMock(t *testing.T) {
	base := stripeMock(t)
	rec := &recorder{}
	prov := newProvider(t, base, rec)
	p := testPayment()

	ref1, _, _, err := prov.Create(ctxT(t), p)
	if err != nil {
		t.Fatal(err)
	}
	ref2, _, _, err := prov.Create(ctxT(t), p)
	if err != nil {
		t.Fatal(err)
	}
	// What is checked: both calls carry the same Idempotency-Key and the same
	// parameters, which is what makes Stripe return the first intent again.
	// stripe-mock ignores the key, so ref1 == ref2 cannot be asserted here.
	if len(rec.reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(rec.reqs))
	}
	a, b := rec.reqs[0], rec.reqs[1]
	if a.IdempotencyKey != p.ID || b.IdempotencyKey != p.ID {
		t.Errorf("Idempotency-Keys %q, %q; want %q twice", a.IdempotencyKey, b.IdempotencyKey, p.ID)
	}
	if a.Form.Encode() != b.Form.Encode() {
		t.Errorf("parameters differ between retries: %q vs %q", a.Form.Encode(), b.Form.Encode())
	}
	t.Logf("stripe-mock refs %s, %s (stateless: equal only on real Stripe)", ref1, ref2)

	// Another payment gets another key.
	q := p
	q.ID = "pay_other"
	if _, _, _, err := prov.Create(ctxT(t), q); err != nil {
		t.Fatal(err)
	}
	if k := rec.last(t).IdempotencyKey; k != q.ID {
		t.Errorf("Idempotency-Key = %q, want %q", k, q.ID)
	}
}

func TestCurrencyStripeMock(t *testing.T) {
	base := stripeMock(t)
	rec := &recorder{}
	prov, err := stripepay.New(stripepay.Config{
		APIKey: testKey, WebhookSecret: testSecret, BackendURL: base + "/",
		HTTPClient: &http.Client{Transport: rec}, Currency: "EUR",
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := prov.Create(ctxT(t), testPayment()); err != nil {
		t.Fatal(err)
	}
	if got := rec.last(t).Form.Get("currency"); got != "eur" {
		t.Errorf("currency = %q, want eur", got)
	}
}

func TestRefundStripeMock(t *testing.T) {
	base := stripeMock(t)
	rec := &recorder{}
	prov := newProvider(t, base, rec)
	p := testPayment()
	p.ProviderRef = "pi_3Test"
	p.Status = payment.Succeeded

	ref, err := prov.Refund(ctxT(t), p)
	if err != nil {
		t.Fatalf("Refund: %v", err)
	}
	if !strings.HasPrefix(ref, "re_") {
		t.Errorf("refund ref = %q", ref)
	}
	r := rec.last(t)
	if r.Method != http.MethodPost || r.Path != "/v1/refunds" {
		t.Errorf("request %s %s", r.Method, r.Path)
	}
	if r.IdempotencyKey != "refund-"+p.ID {
		t.Errorf("Idempotency-Key = %q", r.IdempotencyKey)
	}
	if got := r.Form.Get("payment_intent"); got != p.ProviderRef {
		t.Errorf("payment_intent = %q", got)
	}
	if got := r.Form.Get("amount"); got != "" {
		t.Errorf("amount = %q, want none (whole intent)", got)
	}
	if _, err := prov.Refund(ctxT(t), testPayment()); !errors.Is(err, spike.ErrInvalid) {
		t.Errorf("Refund without ref: %v, want ErrInvalid", err)
	}
}

func TestStatusStripeMock(t *testing.T) {
	base := stripeMock(t)
	rec := &recorder{}
	prov := newProvider(t, base, rec)
	p := testPayment()
	p.ProviderRef = "pi_3Status"

	st, err := prov.Status(ctxT(t), p)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st != payment.RequiresAction { // the fixture's requires_payment_method
		t.Errorf("status = %q", st)
	}
	r := rec.last(t)
	if r.Method != http.MethodGet || r.Path != "/v1/payment_intents/"+p.ProviderRef {
		t.Errorf("request %s %s", r.Method, r.Path)
	}
	if _, err := prov.Status(ctxT(t), testPayment()); !errors.Is(err, spike.ErrInvalid) {
		t.Errorf("Status without ref: %v, want ErrInvalid", err)
	}
}

// --- status mapping and errors, against a scripted server ------------------

// scripted answers every request with status code and body.
func scripted(t *testing.T, code int, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Stripe-Should-Retry", "false")
		w.WriteHeader(code)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestStatusMapping(t *testing.T) {
	for stripeStatus, want := range map[string]payment.Status{
		"requires_payment_method": payment.RequiresAction,
		"requires_confirmation":   payment.RequiresAction,
		"requires_action":         payment.RequiresAction,
		"processing":              payment.Processing,
		"requires_capture":        payment.Processing,
		"succeeded":               payment.Succeeded,
		"canceled":                payment.Failed,
	} {
		url := scripted(t, 200, `{"id":"pi_1","object":"payment_intent","status":"`+stripeStatus+`"}`)
		prov := newProvider(t, url, nil)
		p := testPayment()
		p.ProviderRef = "pi_1"
		got, err := prov.Status(ctxT(t), p)
		if err != nil || got != want {
			t.Errorf("Status(%s) = %q, %v; want %q", stripeStatus, got, err, want)
		}
		ref, _, got, err := prov.Create(ctxT(t), testPayment())
		if err != nil || got != want || ref != "pi_1" {
			t.Errorf("Create(%s) = %q, %q, %v; want pi_1, %q", stripeStatus, ref, got, err, want)
		}
	}
	prov := newProvider(t, scripted(t, 200, `{"id":"pi_1","object":"payment_intent","status":"brand_new"}`), nil)
	p := testPayment()
	p.ProviderRef = "pi_1"
	if _, err := prov.Status(ctxT(t), p); err == nil {
		t.Error("unknown status: no error")
	}
}

func TestCheckoutURLRedirect(t *testing.T) {
	url := scripted(t, 200, `{"id":"pi_1","object":"payment_intent","status":"requires_action",
		"client_secret":"pi_1_secret_x",
		"next_action":{"type":"redirect_to_url","redirect_to_url":{"url":"https://hooks.example/3ds","return_url":"https://shop.example/r"}}}`)
	_, checkout, st, err := newProvider(t, url, nil).Create(ctxT(t), testPayment())
	if err != nil || st != payment.RequiresAction || checkout != "https://hooks.example/3ds" {
		t.Errorf("Create = %q, %q, %v", checkout, st, err)
	}
}

func TestCreateRejectsBadPayment(t *testing.T) {
	prov := newProvider(t, scripted(t, 500, `{}`), nil)
	for _, p := range []payment.Payment{{ID: "", AmountCents: 100}, {ID: "pay_1", AmountCents: 0}, {ID: "pay_1", AmountCents: -5}} {
		if _, _, _, err := prov.Create(ctxT(t), p); !errors.Is(err, spike.ErrInvalid) {
			t.Errorf("Create(%+v): %v, want ErrInvalid", p, err)
		}
	}
}

func TestErrorKinds(t *testing.T) {
	cases := []struct {
		code int
		body string
		want error
	}{
		{404, `{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such payment_intent"}}`, spike.ErrNotFound},
		{400, `{"error":{"type":"idempotency_error","message":"Keys for idempotent requests can only be used with the same parameters"}}`, spike.ErrConflict},
		{400, `{"error":{"type":"invalid_request_error","code":"charge_already_refunded","message":"already refunded"}}`, spike.ErrConflict},
		{400, `{"error":{"type":"invalid_request_error","code":"parameter_invalid_integer","message":"bad amount"}}`, spike.ErrInvalid},
		{401, `{"error":{"type":"invalid_request_error","message":"Invalid API Key provided"}}`, spike.ErrUnavailable},
		{429, `{"error":{"type":"invalid_request_error","code":"rate_limit","message":"Too many requests"}}`, spike.ErrUnavailable},
		{500, `{"error":{"type":"api_error","message":"boom"}}`, spike.ErrUnavailable},
		{503, `not json`, spike.ErrUnavailable},
	}
	for _, c := range cases {
		prov := newProvider(t, scripted(t, c.code, c.body), nil)
		p := testPayment()
		p.ProviderRef = "pi_1"
		_, err := prov.Refund(ctxT(t), p)
		if !errors.Is(err, c.want) {
			t.Errorf("%d %s: %v, want %v", c.code, c.body, err, c.want)
			continue
		}
		var se *spike.Error
		if !errors.As(err, &se) || strings.Contains(se.Message, "{") {
			t.Errorf("%d: client-safe message = %+v", c.code, se)
		}
		if c.body != `not json` {
			var stripeErr *stripe.Error
			if !errors.As(err, &stripeErr) {
				t.Errorf("%d: cause *stripe.Error not in the chain: %v", c.code, err)
			}
		}
	}
}

func TestTimeoutIsUnavailable(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(block); srv.Close() })
	prov := newProvider(t, srv.URL, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, _, err := prov.Create(ctx, testPayment())
	if !errors.Is(err, spike.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want ErrUnavailable wrapping DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v: the context did not bound the call", d)
	}
}

// --- webhooks ---------------------------------------------------------------

func eventBody(id, typ, object string) []byte {
	return []byte(fmt.Sprintf(`{"id":%q,"object":"event","api_version":"2025-08-27.basil","created":1767225600,"livemode":false,"type":%q,"data":{"object":%s}}`, id, typ, object))
}

func signed(body []byte, secret string, ts time.Time) http.Header {
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: secret, Timestamp: ts})
	h := http.Header{}
	h.Set("Stripe-Signature", sp.Header)
	return h
}

func TestVerifyWebhook(t *testing.T) {
	prov := newProvider(t, "", nil)
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	intent := `{"id":"pi_3Abc","object":"payment_intent","status":"succeeded","amount":1999}`

	for typ, want := range map[string]payment.Status{
		"payment_intent.succeeded":      payment.Succeeded,
		"payment_intent.payment_failed": payment.Failed,
		"payment_intent.canceled":       payment.Failed,
	} {
		body := eventBody("evt_1", typ, intent)
		ev, err := prov.VerifyWebhook(signed(body, testSecret, now.Add(-time.Minute)), body, now)
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		wantEv := payment.WebhookEvent{ID: "evt_1", Ref: "pi_3Abc", Status: want, At: time.Unix(1767225600, 0).UTC()}
		if ev != wantEv {
			t.Errorf("%s: %+v, want %+v", typ, ev, wantEv)
		}
	}

	// An event of another API version is still read (only id/type/object id).
	body := []byte(strings.Replace(string(eventBody("evt_2", "payment_intent.succeeded", intent)), "2025-08-27.basil", "2024-06-20", 1))
	if ev, err := prov.VerifyWebhook(signed(body, testSecret, now), body, now); err != nil || ev.Status != payment.Succeeded {
		t.Errorf("old API version: %+v, %v", ev, err)
	}

	// A type Spike does not act on: authentic, empty Status, no error.
	body = eventBody("evt_3", "charge.refunded", `{"id":"ch_1","object":"charge"}`)
	ev, err := prov.VerifyWebhook(signed(body, testSecret, now), body, now)
	if err != nil || ev.Status != "" || ev.ID != "evt_3" {
		t.Errorf("ignored type: %+v, %v; want empty Status, nil", ev, err)
	}
}

func TestVerifyWebhookRejects(t *testing.T) {
	prov := newProvider(t, "", nil)
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	body := eventBody("evt_1", "payment_intent.succeeded", `{"id":"pi_3Abc","object":"payment_intent"}`)
	good := signed(body, testSecret, now.Add(-10*time.Second))

	tampered := []byte(strings.Replace(string(body), "pi_3Abc", "pi_3Evil", 1))
	noT := http.Header{}
	noT.Set("Stripe-Signature", "v1="+strings.SplitN(good.Get("Stripe-Signature"), "v1=", 2)[1])
	garbage := http.Header{}
	garbage.Set("Stripe-Signature", "nonsense")

	for _, c := range []struct {
		name   string
		header http.Header
		body   []byte
		now    time.Time
		want   error
	}{
		{"wrong secret", signed(body, "whsec_other", now), body, now, spike.ErrUnauthenticated},
		{"old timestamp", signed(body, testSecret, now.Add(-6*time.Minute)), body, now, spike.ErrUnauthenticated},
		{"tampered body", good, tampered, now, spike.ErrUnauthenticated},
		{"no header", http.Header{}, body, now, spike.ErrUnauthenticated},
		{"header without timestamp", noT, body, now, spike.ErrUnauthenticated},
		{"garbage header", garbage, body, now, spike.ErrUnauthenticated},
		{"good, judged 10 minutes later", good, body, now.Add(10 * time.Minute), spike.ErrUnauthenticated},
		{"signed non-JSON", signed([]byte("not json"), testSecret, now), []byte("not json"), now, spike.ErrInvalid},
		{"signed event without intent id", signed(eventBody("evt_1", "payment_intent.succeeded", `{"object":"payment_intent"}`), testSecret, now),
			eventBody("evt_1", "payment_intent.succeeded", `{"object":"payment_intent"}`), now, spike.ErrInvalid},
		{"signed event without id", signed(eventBody("", "payment_intent.succeeded", `{"id":"pi_1"}`), testSecret, now),
			eventBody("", "payment_intent.succeeded", `{"id":"pi_1"}`), now, spike.ErrInvalid},
	} {
		_, err := prov.VerifyWebhook(c.header, c.body, c.now)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}

	// Within tolerance (4m59s old) it passes.
	if _, err := prov.VerifyWebhook(signed(body, testSecret, now.Add(-299*time.Second)), body, now); err != nil {
		t.Errorf("4m59s old: %v", err)
	}
}
