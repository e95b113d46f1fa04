package sandboxpay_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/sandboxpay"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/payment"
	"github.com/spikehq/spike/internal/testkit/paymenttest"
)

var secret = []byte("whsec_sandbox_test")

type orders struct {
	mu      sync.Mutex
	status  map[string]order.Status
	applied int
}

func (o *orders) MarkPaid(_ context.Context, id, _ string, _ time.Time) (bool, string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := o.status[id]
	if st != order.Created {
		return false, string(st), nil
	}
	o.status[id] = order.Paid
	o.applied++
	return true, string(order.Paid), nil
}

func (o *orders) get(id string) order.Status {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.status[id]
}

type received struct {
	ev     map[string]any
	header string
	body   []byte
}

// spike is a stand-in for Spike's server: the webhook route feeds a real
// payment.Service; the checkout pages are mounted at /sandbox/checkout/.
type spikeServer struct {
	*httptest.Server
	gw     *sandboxpay.Gateway
	svc    *payment.Service
	orders *orders
	store  *paymenttest.Memory

	mu       sync.Mutex
	got      []received
	failNext int // answer 500 to that many deliveries
}

func newSpike(t *testing.T, cfg sandboxpay.Config) *spikeServer {
	t.Helper()
	s := &spikeServer{orders: &orders{status: map[string]order.Status{}}, store: paymenttest.NewMemory()}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/payments/webhooks/sandbox", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		if s.failNext > 0 {
			s.failNext--
			s.mu.Unlock()
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		var ev map[string]any
		_ = json.Unmarshal(body, &ev)
		s.got = append(s.got, received{ev: ev, header: r.Header.Get(payment.SignatureHeader), body: body})
		s.mu.Unlock()
		if err := s.svc.HandleWebhook(r.Context(), "sandbox", r.Header, body); err != nil {
			code := http.StatusInternalServerError
			if errors.Is(err, spike.ErrUnauthenticated) {
				code = http.StatusUnauthorized
			}
			http.Error(w, err.Error(), code)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	cfg.Secret = secret
	cfg.WebhookURL = s.URL + "/v1/payments/webhooks/sandbox"
	cfg.CheckoutBase = s.URL + "/sandbox/checkout/"
	if cfg.RetryMin == 0 {
		cfg.RetryMin, cfg.RetryMax = 5*time.Millisecond, 20*time.Millisecond
	}
	s.gw = sandboxpay.New(cfg)
	mux.Handle("/sandbox/checkout/", s.gw.Handler())
	s.svc = payment.New(s.store, map[string]payment.Provider{"sandbox": s.gw}, s.orders, payment.Config{})
	return s
}

// run runs the gateway's deliveries for the test's life.
func (s *spikeServer) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.gw.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context was cancelled")
		}
	})
}

func (s *spikeServer) start(t *testing.T, orderID string) payment.Payment {
	t.Helper()
	s.orders.mu.Lock()
	s.orders.status[orderID] = order.Created
	s.orders.mu.Unlock()
	p, err := s.svc.Start(context.Background(), payment.OrderRef{ID: orderID, UserID: 7, AmountCents: 2599, Status: order.Created}, "key", "")
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return p
}

func (s *spikeServer) received() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.got...)
}

func post(t *testing.T, u, contentType, body string) (*http.Response, string) {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Post(u, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFullLoop(t *testing.T) {
	s := newSpike(t, sandboxpay.Config{})
	s.run(t)
	p := s.start(t, "o1")
	if p.Provider != "sandbox" || p.Status != payment.RequiresAction || p.CheckoutURL != s.URL+"/sandbox/checkout/"+p.ProviderRef {
		t.Fatalf("Start = %+v", p)
	}
	resp, err := http.Get(p.CheckoutURL)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "25.99") || !strings.Contains(string(page), ">Pay<") || !strings.Contains(string(page), ">Fail<") {
		t.Fatalf("checkout page: %d\n%s", resp.StatusCode, page)
	}
	r, body := post(t, p.CheckoutURL, "application/json", `{"outcome":"succeeded"}`)
	if r.StatusCode != 200 || !strings.Contains(body, `"succeeded"`) {
		t.Fatalf("POST checkout: %d %s", r.StatusCode, body)
	}
	eventually(t, "the order to be paid", func() bool { return s.orders.get("o1") == order.Paid })
	eventually(t, "no pending deliveries", func() bool { return s.gw.Pending() == 0 })
	got := s.received()
	if len(got) != 1 {
		t.Fatalf("%d deliveries; want 1", len(got))
	}
	if err := payment.Verify(secret, got[0].header, got[0].body, time.Now(), 0); err != nil {
		t.Fatalf("delivery signature: %v", err)
	}
	ev := got[0].ev
	if ev["ref"] != p.ProviderRef || ev["status"] != "succeeded" || ev["id"] == "" || ev["at"] == nil {
		t.Fatalf("delivery body: %v", ev)
	}
	stored, _ := s.svc.Payment(context.Background(), p.ID)
	if stored.Status != payment.Succeeded {
		t.Fatalf("payment %s", stored.Status)
	}
	if st, err := s.gw.Status(context.Background(), stored); err != nil || st != payment.Succeeded {
		t.Fatalf("Status = %s, %v", st, err)
	}
	// The page now says so; the same outcome again is fine, another is a conflict.
	if r, _ := post(t, p.CheckoutURL, "application/json", `{"outcome":"succeeded"}`); r.StatusCode != 200 {
		t.Fatalf("same outcome again: %d", r.StatusCode)
	}
	if r, _ := post(t, p.CheckoutURL, "application/json", `{"outcome":"failed"}`); r.StatusCode != http.StatusConflict {
		t.Fatalf("another outcome: %d", r.StatusCode)
	}
	// Admin refund through the gateway.
	ps, err := s.svc.Refund(context.Background(), "o1")
	if err != nil || len(ps) != 1 || !strings.HasPrefix(ps[0].RefundRef, "sbr_") {
		t.Fatalf("Refund = %+v, %v", ps, err)
	}
	time.Sleep(20 * time.Millisecond)
	if n := len(s.received()); n != 1 {
		t.Fatalf("%d deliveries after the repeated outcome; want still 1", n)
	}
}

func TestFormCheckoutAndFailure(t *testing.T) {
	s := newSpike(t, sandboxpay.Config{})
	s.run(t)
	p := s.start(t, "o1")
	r, _ := post(t, p.CheckoutURL, "application/x-www-form-urlencoded", url.Values{"outcome": {"failed"}}.Encode())
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("form POST: %d", r.StatusCode)
	}
	eventually(t, "the payment to fail", func() bool {
		q, _ := s.svc.Payment(context.Background(), p.ID)
		return q.Status == payment.Failed
	})
	if s.orders.get("o1") != order.Created {
		t.Fatalf("order %s after a failed payment", s.orders.get("o1"))
	}
	resp, _ := http.Get(p.CheckoutURL)
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), "failed") || strings.Contains(string(page), "<form") {
		t.Fatalf("page after the outcome:\n%s", page)
	}
}

func TestDuplicatesAndReorders(t *testing.T) {
	s := newSpike(t, sandboxpay.Config{DuplicateRate: 1, ReorderRate: 1})
	s.run(t)
	p := s.start(t, "o1")
	if r, _ := post(t, p.CheckoutURL, "application/json", `{"outcome":"succeeded"}`); r.StatusCode != 200 {
		t.Fatal(r.StatusCode)
	}
	eventually(t, "three deliveries", func() bool { return len(s.received()) == 3 && s.gw.Pending() == 0 })
	got := s.received()
	first := got[0].ev
	if first["status"] != "succeeded" {
		t.Fatalf("first delivery %v", first)
	}
	var dup, stale bool
	for _, g := range got[1:] {
		switch {
		case g.ev["id"] == first["id"] && g.ev["status"] == "succeeded":
			dup = true
		case g.ev["status"] == "processing":
			at1, _ := time.Parse(time.RFC3339Nano, first["at"].(string))
			at2, _ := time.Parse(time.RFC3339Nano, g.ev["at"].(string))
			stale = at2.Before(at1)
		}
	}
	if !dup || !stale {
		t.Fatalf("want a duplicate and a stale processing delivered after the outcome: %v", got)
	}
	q, _ := s.svc.Payment(context.Background(), p.ID)
	if q.Status != payment.Succeeded || s.orders.get("o1") != order.Paid || s.orders.applied != 1 {
		t.Fatalf("payment %s, order %s, paid %d times", q.Status, s.orders.get("o1"), s.orders.applied)
	}
}

func TestRetriesUntil2xx(t *testing.T) {
	s := newSpike(t, sandboxpay.Config{})
	s.failNext = 3
	s.run(t)
	p := s.start(t, "o1")
	post(t, p.CheckoutURL, "application/json", `{"outcome":"succeeded"}`)
	eventually(t, "the order to be paid", func() bool { return s.orders.get("o1") == order.Paid })
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failNext != 0 || len(s.got) != 1 {
		t.Fatalf("failNext %d, accepted deliveries %d", s.failNext, len(s.got))
	}
}

func TestRunStopsAndResumes(t *testing.T) {
	s := newSpike(t, sandboxpay.Config{RetryMin: time.Millisecond, RetryMax: 2 * time.Millisecond})
	s.failNext = 1 << 30
	p := s.start(t, "o1")
	post(t, p.CheckoutURL, "application/json", `{"outcome":"succeeded"}`)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.gw.Run(ctx) }()
	time.Sleep(30 * time.Millisecond)
	if err := s.gw.Run(ctx); err == nil {
		t.Fatal("a second concurrent Run was accepted")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	if s.gw.Pending() != 1 || s.orders.get("o1") != order.Created {
		t.Fatalf("pending %d, order %s", s.gw.Pending(), s.orders.get("o1"))
	}
	s.mu.Lock()
	s.failNext = 0
	s.mu.Unlock()
	s.run(t) // a later Run delivers what was left
	eventually(t, "the order to be paid", func() bool { return s.orders.get("o1") == order.Paid })
}

func TestQueueBound(t *testing.T) {
	s := newSpike(t, sandboxpay.Config{QueueSize: 1}) // no Run: nothing drains
	p1, p2 := s.start(t, "o1"), s.start(t, "o2")
	if r, _ := post(t, p1.CheckoutURL, "application/json", `{"outcome":"succeeded"}`); r.StatusCode != 200 {
		t.Fatal(r.StatusCode)
	}
	r, _ := post(t, p2.CheckoutURL, "application/json", `{"outcome":"succeeded"}`)
	if r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
		t.Fatalf("full queue: %d", r.StatusCode)
	}
	// Nothing changed: the buyer may press again later.
	if st, _ := s.gw.Status(context.Background(), p2); st != payment.RequiresAction {
		t.Fatalf("refused outcome recorded: %s", st)
	}
}

func TestCheckoutErrors(t *testing.T) {
	s := newSpike(t, sandboxpay.Config{})
	p := s.start(t, "o1")
	unknown := s.URL + "/sandbox/checkout/sbx_nope"
	if resp, _ := http.Get(unknown); resp.StatusCode != 404 {
		t.Errorf("GET unknown: %d", resp.StatusCode)
	}
	if r, _ := post(t, unknown, "application/json", `{"outcome":"succeeded"}`); r.StatusCode != 404 {
		t.Errorf("POST unknown: %d", r.StatusCode)
	}
	for _, body := range []string{`{`, `{"outcome":"maybe"}`, `{}`, `[]`, strings.Repeat(" ", 5000) + `{"outcome":"succeeded"}`} {
		if r, _ := post(t, p.CheckoutURL, "application/json", body); r.StatusCode != 400 {
			t.Errorf("POST %.20q: %d; want 400", body, r.StatusCode)
		}
	}
	req, _ := http.NewRequest(http.MethodPut, p.CheckoutURL, nil)
	if resp, _ := http.DefaultClient.Do(req); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d", resp.StatusCode)
	}
}

func TestLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // fake time: no real waiting, no duration asserted on a real clock
		gw := sandboxpay.New(sandboxpay.Config{Latency: 50 * time.Millisecond})
		p := payment.Payment{ID: "p1", AmountCents: 100}
		t0 := time.Now()
		if _, _, _, err := gw.Create(context.Background(), p); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(t0); d != 50*time.Millisecond {
			t.Fatalf("Create took %v; want 50ms", d)
		}
		t0 = time.Now()
		if _, err := gw.Status(context.Background(), payment.Payment{ID: "p1"}); err != nil || time.Since(t0) != 50*time.Millisecond {
			t.Fatalf("Status: %v after %v", err, time.Since(t0))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		defer cancel()
		if _, _, _, err := gw.Create(ctx, p); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Create past its deadline: %v", err)
		}
	})
}

// roundTripper answers webhook deliveries in memory.
type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestRunOwnsItsDeliveries runs in a synctest bubble, which fails unless
// every goroutine Run started has exited when the test function returns;
// it also checks the backoff between attempts in fake time.
func TestRunOwnsItsDeliveries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var attempts []time.Time
		answer := http.StatusServiceUnavailable
		client := &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
			body, _ := io.ReadAll(r.Body)
			if err := payment.Verify(secret, r.Header.Get(payment.SignatureHeader), body, time.Now(), 0); err != nil {
				t.Errorf("delivery: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			attempts = append(attempts, time.Now())
			return &http.Response{StatusCode: answer, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
		})}
		gw := sandboxpay.New(sandboxpay.Config{Secret: secret, WebhookURL: "http://spike.invalid/v1/payments/webhooks/sandbox",
			HTTPClient: client, RetryMin: time.Second, RetryMax: 4 * time.Second, Workers: 3})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- gw.Run(ctx) }()
		for i := range 5 {
			ref, _, _, err := gw.Create(context.Background(), payment.Payment{ID: "p" + string(rune('0'+i)), AmountCents: 100})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := gw.Decide(ref, payment.Succeeded); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Minute) // fake
		synctest.Wait()
		mu.Lock()
		n := len(attempts)
		mu.Unlock()
		// Each of 5 deliveries: attempts at 0, then backoff 0.5–1s, 1–2s, 2–4s, 2–4s, ... within a minute:
		// at least 5 × 10 attempts, at most 5 × 60.
		if n < 50 || n > 300 {
			t.Fatalf("%d attempts in a minute of failures", n)
		}
		if gw.Pending() != 5 {
			t.Fatalf("pending %d; want 5", gw.Pending())
		}
		mu.Lock()
		answer = http.StatusOK
		mu.Unlock()
		time.Sleep(5 * time.Second) // past the longest backoff
		synctest.Wait()
		if gw.Pending() != 0 {
			t.Fatalf("pending %d after the receiver healed", gw.Pending())
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		// Returning from here with a goroutine of Run still alive would fail the bubble.
	})
}

func TestFailureRate(t *testing.T) {
	gw := sandboxpay.New(sandboxpay.Config{FailureRate: 1})
	if _, _, _, err := gw.Create(context.Background(), payment.Payment{ID: "p1", AmountCents: 100}); !errors.Is(err, spike.ErrUnavailable) {
		t.Fatalf("Create = %v; want spike.ErrUnavailable", err)
	}
	svc := payment.New(paymenttest.NewMemory(), map[string]payment.Provider{"sandbox": gw}, &orders{}, payment.Config{})
	_, err := svc.Start(context.Background(), payment.OrderRef{ID: "o1", UserID: 1, AmountCents: 100, Status: order.Created}, "k", "")
	if !errors.Is(err, spike.ErrUnavailable) {
		t.Fatalf("Start = %v; want spike.ErrUnavailable", err)
	}
}

func TestProviderCalls(t *testing.T) {
	gw := sandboxpay.New(sandboxpay.Config{CheckoutBase: "https://spike.example/sandbox/checkout"})
	ctx := context.Background()
	p := payment.Payment{ID: "p1", AmountCents: 100}
	ref, u, st, err := gw.Create(ctx, p)
	if err != nil || !strings.HasPrefix(ref, "sbx_") || u != "https://spike.example/sandbox/checkout/"+ref || st != payment.RequiresAction {
		t.Fatalf("Create = %q %q %q %v", ref, u, st, err)
	}
	ref2, _, _, _ := gw.Create(ctx, p)
	if ref2 != ref {
		t.Fatal("Create is not idempotent by payment id")
	}
	p.ProviderRef = ref
	if st, err := gw.Status(ctx, p); err != nil || st != payment.RequiresAction {
		t.Fatalf("Status before the outcome = %s, %v", st, err)
	}
	if _, err := gw.Decide(ref, payment.Succeeded); err != nil {
		t.Fatal(err)
	}
	if st, err := gw.Status(ctx, p); err != nil || st != payment.Succeeded {
		t.Fatalf("Status after the outcome = %s, %v", st, err)
	}
	// Refund does not consult what this instance remembers (another one may
	// have taken the success): idempotent by payment id.
	r1, err1 := gw.Refund(ctx, p)
	r2, err2 := gw.Refund(ctx, p)
	if err1 != nil || err2 != nil || r1 != r2 || r1 != "sbr_p1" {
		t.Fatalf("Refund twice: %q %v, %q %v", r1, err1, r2, err2)
	}
	if _, err := gw.Status(ctx, payment.Payment{ID: "p2", ProviderRef: ref}); !errors.Is(err, spike.ErrNotFound) {
		t.Fatalf("Status of a ref naming another payment: %v", err)
	}
	if _, _, _, err := gw.Create(ctx, payment.Payment{ID: strings.Repeat("x", sandboxpay.MaxPaymentID+1), AmountCents: 1}); !errors.Is(err, spike.ErrInvalid) {
		t.Fatalf("Create with a 65-byte id: %v", err)
	}
	if _, err := gw.Status(ctx, payment.Payment{ID: "gone", ProviderRef: "sbx_gone"}); !errors.Is(err, spike.ErrNotFound) {
		t.Fatalf("Status of an unknown payment: %v", err)
	}
	// VerifyWebhook.
	now := time.Now()
	body := []byte(`{"id":"evt_1","ref":"` + ref + `","status":"succeeded","at":"2026-01-01T00:00:00Z"}`)
	h := http.Header{}
	h.Set(payment.SignatureHeader, payment.Sign([]byte("other"), now, body))
	if _, err := gw.VerifyWebhook(h, body, now); !errors.Is(err, spike.ErrUnauthenticated) {
		t.Fatalf("VerifyWebhook with another secret: %v", err)
	}
}

func TestVerifyWebhook(t *testing.T) {
	gw := sandboxpay.New(sandboxpay.Config{Secret: secret})
	now := time.Now()
	sign := func(body string) http.Header {
		h := http.Header{}
		h.Set(payment.SignatureHeader, payment.Sign(secret, now, []byte(body)))
		return h
	}
	good := `{"id":"evt_1","ref":"sbx_1","status":"processing","at":"2026-01-01T00:00:00Z"}`
	ev, err := gw.VerifyWebhook(sign(good), []byte(good), now)
	if err != nil || ev.ID != "evt_1" || ev.Ref != "sbx_1" || ev.Status != payment.Processing || ev.At.IsZero() {
		t.Fatalf("VerifyWebhook = %+v, %v", ev, err)
	}
	for _, bad := range []string{`{`, `{"ref":"sbx_1","status":"paid"}`, `{"status":"succeeded"}`} {
		if _, err := gw.VerifyWebhook(sign(bad), []byte(bad), now); !errors.Is(err, spike.ErrInvalid) {
			t.Errorf("VerifyWebhook(%s) = %v; want spike.ErrInvalid", bad, err)
		}
	}
	if _, err := gw.VerifyWebhook(http.Header{}, []byte(good), now); !errors.Is(err, spike.ErrUnauthenticated) {
		t.Errorf("unsigned: %v", err)
	}
}

// instance is another Spike instance of the same cluster: its own Gateway
// (same secret, its own memory) serving the checkout pages at the same path
// on its own server, delivering to the shared webhook route.
func (s *spikeServer) instance(t *testing.T) (*sandboxpay.Gateway, string) {
	t.Helper()
	gw := sandboxpay.New(sandboxpay.Config{Secret: secret, WebhookURL: s.URL + "/v1/payments/webhooks/sandbox",
		CheckoutBase: "/ignored", RetryMin: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond})
	mux := http.NewServeMux()
	mux.Handle("/sandbox/checkout/", gw.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- gw.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return gw, srv.URL
}

// on returns the checkout URL of p as reached on the server at base.
func on(base string, p payment.Payment) string {
	u, _ := url.Parse(p.CheckoutURL)
	return base + u.Path
}

func (s *spikeServer) status(t *testing.T, id string) payment.Status {
	t.Helper()
	p, err := s.svc.Payment(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return p.Status
}

// TestCheckoutOnAnotherInstance: the buyer's POST reaches an instance that
// did not create the payment; that instance delivers the webhook and the
// Service marks the payment. A second, different outcome pressed on the
// other instance (which remembers nothing) is accepted there and sorted out
// by the Service's forward-only moves.
func TestCheckoutOnAnotherInstance(t *testing.T) {
	s := newSpike(t, sandboxpay.Config{}) // instance A: creates the payments
	s.run(t)
	b, bURL := s.instance(t) // instance B

	p := s.start(t, "o1")
	resp, err := http.Get(on(bURL, p))
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "25.99") || !strings.Contains(string(page), ">Pay<") {
		t.Fatalf("checkout page on B: %d\n%s", resp.StatusCode, page)
	}
	if r, body := post(t, on(bURL, p), "application/json", `{"outcome":"succeeded"}`); r.StatusCode != 200 {
		t.Fatalf("POST on B: %d %s", r.StatusCode, body)
	}
	eventually(t, "the order to be paid", func() bool { return s.orders.get("o1") == order.Paid })
	eventually(t, "B to have delivered", func() bool { return b.Pending() == 0 })
	if st := s.status(t, p.ID); st != payment.Succeeded {
		t.Fatalf("payment %s", st)
	}
	if got := s.received(); len(got) != 1 || got[0].ev["ref"] != p.ProviderRef {
		t.Fatalf("deliveries %v", got)
	}
	// B remembers its outcome: the other one there is a conflict.
	if r, _ := post(t, on(bURL, p), "application/json", `{"outcome":"failed"}`); r.StatusCode != http.StatusConflict {
		t.Fatalf("other outcome on B: %d", r.StatusCode)
	}
	// A does not: it accepts "failed" and delivers it; the Service ignores
	// a failed after a succeeded.
	if r, _ := post(t, p.CheckoutURL, "application/json", `{"outcome":"failed"}`); r.StatusCode != 200 {
		t.Fatalf("other outcome on A: %d", r.StatusCode)
	}
	eventually(t, "A's delivery", func() bool { return len(s.received()) == 2 && s.gw.Pending() == 0 })
	if st := s.status(t, p.ID); st != payment.Succeeded || s.orders.get("o1") != order.Paid || s.orders.applied != 1 {
		t.Fatalf("after a late failed: payment %s, order %s, paid %d times", st, s.orders.get("o1"), s.orders.applied)
	}

	// The other way round: failed on A, then succeeded on B: the Service
	// takes failed → succeeded (a buyer's second attempt), the order is paid.
	q := s.start(t, "o2")
	if r, _ := post(t, q.CheckoutURL, "application/json", `{"outcome":"failed"}`); r.StatusCode != 200 {
		t.Fatal(r.StatusCode)
	}
	eventually(t, "the payment to fail", func() bool { return s.status(t, q.ID) == payment.Failed })
	if r, _ := post(t, on(bURL, q), "application/json", `{"outcome":"succeeded"}`); r.StatusCode != 200 {
		t.Fatal(r.StatusCode)
	}
	eventually(t, "the order to be paid", func() bool { return s.orders.get("o2") == order.Paid })
	if st := s.status(t, q.ID); st != payment.Succeeded {
		t.Fatalf("payment %s", st)
	}
}

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func TestTamperedRef(t *testing.T) {
	s := newSpike(t, sandboxpay.Config{})
	p := s.start(t, "o1")
	ref := p.ProviderRef
	if !strings.HasPrefix(ref, "sbx_") || len(ref) > sandboxpay.MaxRef || url.PathEscape(ref) != ref {
		t.Fatalf("ref %q", ref)
	}
	enc, mac, _ := strings.Cut(strings.TrimPrefix(ref, "sbx_"), ".")
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	other := sandboxpay.New(sandboxpay.Config{Secret: []byte("another secret")})
	foreign, _, _, _ := other.Create(context.Background(), payment.Payment{ID: p.ID, AmountCents: 1, CreatedAt: p.CreatedAt})
	bad := map[string]string{
		"payload":      "sbx_" + flip(enc, 3) + "." + mac,
		"mac":          "sbx_" + enc + "." + flip(mac, 5),
		"no mac":       "sbx_" + enc,
		"short mac":    "sbx_" + enc + "." + mac[:10],
		"other secret": foreign,
		"no prefix":    strings.TrimPrefix(ref, "sbx_"),
		"long":         ref + strings.Repeat("A", 200),
		// The same MAC bytes with a non-zero unused bit in the last
		// character: lenient base64 would accept it, the ref would not
		// be the stored one.
		"trailing bits": "sbx_" + enc + "." + mac[:len(mac)-1] + string(alphabet[strings.IndexByte(alphabet, mac[len(mac)-1])^1]),
	}
	for name, r := range bad {
		u := s.URL + "/sandbox/checkout/" + r
		if resp, err := http.Get(u); err != nil || resp.StatusCode != 404 {
			t.Errorf("%s: GET %v %v", name, resp.StatusCode, err)
		}
		if resp, _ := post(t, u, "application/json", `{"outcome":"succeeded"}`); resp.StatusCode != 404 {
			t.Errorf("%s: POST %d", name, resp.StatusCode)
		}
		if _, err := s.gw.Status(context.Background(), payment.Payment{ProviderRef: r}); !errors.Is(err, spike.ErrNotFound) {
			t.Errorf("%s: Status %v", name, err)
		}
		if _, err := s.gw.Refund(context.Background(), payment.Payment{ProviderRef: r}); !errors.Is(err, spike.ErrNotFound) {
			t.Errorf("%s: Refund %v", name, err)
		}
	}
	if s.gw.Pending() != 0 || s.status(t, p.ID) != payment.RequiresAction {
		t.Fatal("a tampered ref changed something")
	}
}

// TestRestart: a new Gateway (same secret, empty memory) serves, answers
// Status and refunds the payments of the one before.
func TestRestart(t *testing.T) {
	s := newSpike(t, sandboxpay.Config{})
	s.run(t)
	p := s.start(t, "o1")
	open := s.start(t, "o2")
	post(t, p.CheckoutURL, "application/json", `{"outcome":"succeeded"}`)
	eventually(t, "the order to be paid", func() bool { return s.orders.get("o1") == order.Paid })
	paid, _ := s.svc.Payment(context.Background(), p.ID)

	// Restart: a new Gateway and a new Service over the same store.
	gw := sandboxpay.New(sandboxpay.Config{Secret: secret, WebhookURL: s.URL + "/v1/payments/webhooks/sandbox",
		CheckoutBase: s.URL + "/sandbox/checkout/"})
	svc := payment.New(s.store, map[string]payment.Provider{"sandbox": gw}, s.orders, payment.Config{})
	ctx := context.Background()
	if ref, u, _, err := gw.Create(ctx, paid); err != nil || ref != paid.ProviderRef || u != paid.CheckoutURL {
		t.Fatalf("Create after restart = %q %q %v; want the same ref and URL", ref, u, err)
	}
	// The simulator cannot know the outcome decided before the restart.
	if st, err := gw.Status(ctx, paid); err != nil || st != payment.RequiresAction {
		t.Fatalf("Status after restart = %s, %v", st, err)
	}
	if st, err := gw.Status(ctx, open); err != nil || st != payment.RequiresAction {
		t.Fatalf("Status of the open one = %s, %v", st, err)
	}
	// Reconcile with that answer changes nothing.
	if q, err := svc.Reconcile(ctx, paid.ID); err != nil || q.Status != payment.Succeeded {
		t.Fatalf("Reconcile after restart = %s, %v", q.Status, err)
	}
	ps, err := svc.Refund(ctx, "o1")
	if err != nil || len(ps) != 1 || ps[0].RefundRef != "sbr_"+p.ID {
		t.Fatalf("Refund after restart = %+v, %v", ps, err)
	}
	if r1, err := gw.Refund(ctx, paid); err != nil || r1 != ps[0].RefundRef {
		t.Fatalf("Refund again = %q, %v", r1, err)
	}
	// The checkout page of the open payment still works and decides.
	mux := http.NewServeMux()
	mux.Handle("/sandbox/checkout/", gw.Handler())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctxRun, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- gw.Run(ctxRun) }()
	defer func() { cancel(); <-done }()
	if r, _ := post(t, on(srv.URL, open), "application/json", `{"outcome":"succeeded"}`); r.StatusCode != 200 {
		t.Fatalf("POST after restart: %d", r.StatusCode)
	}
	eventually(t, "the second order to be paid", func() bool { return s.orders.get("o2") == order.Paid })
}

func TestCreateSameOnEveryInstance(t *testing.T) {
	a := sandboxpay.New(sandboxpay.Config{Secret: secret, CheckoutBase: "https://a.example/c"})
	b := sandboxpay.New(sandboxpay.Config{Secret: secret, CheckoutBase: "https://a.example/c"})
	p := payment.Payment{ID: strings.Repeat("Z", sandboxpay.MaxPaymentID), AmountCents: 1<<63 - 1, CreatedAt: time.Unix(1<<40, 0)}
	ra, ua, _, err1 := a.Create(context.Background(), p)
	rb, ub, _, err2 := b.Create(context.Background(), p)
	if err1 != nil || err2 != nil || ra != rb || ua != ub {
		t.Fatalf("Create on two instances: %q %v, %q %v", ra, err1, rb, err2)
	}
	if len(ra) > sandboxpay.MaxRef {
		t.Fatalf("ref of %d characters", len(ra))
	}
	p.AmountCents = 5
	if rc, _, _, _ := a.Create(context.Background(), p); rc == ra {
		t.Fatal("the ref does not depend on the amount")
	}
}

func TestRecordsBound(t *testing.T) {
	gw := sandboxpay.New(sandboxpay.Config{Secret: secret, Records: 2})
	ctx := context.Background()
	var ps []payment.Payment
	for _, id := range []string{"p1", "p2", "p3"} {
		p := payment.Payment{ID: id, AmountCents: 100}
		p.ProviderRef, _, _, _ = gw.Create(ctx, p)
		if _, err := gw.Decide(p.ProviderRef, payment.Succeeded); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	// p1 is forgotten: requires_action, and the other outcome is accepted.
	if st, _ := gw.Status(ctx, ps[0]); st != payment.RequiresAction {
		t.Fatalf("forgotten: %s", st)
	}
	if st, _ := gw.Status(ctx, ps[2]); st != payment.Succeeded {
		t.Fatalf("remembered: %s", st)
	}
	if _, err := gw.Decide(ps[0].ProviderRef, payment.Failed); err != nil {
		t.Fatalf("Decide of a forgotten payment: %v", err)
	}
}
