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
	if _, err := gw.Refund(ctx, p); !errors.Is(err, spike.ErrConflict) {
		t.Fatalf("Refund before success: %v", err)
	}
	if _, err := gw.Decide(ref, payment.Succeeded); err != nil {
		t.Fatal(err)
	}
	r1, err1 := gw.Refund(ctx, p)
	r2, err2 := gw.Refund(ctx, p)
	if err1 != nil || err2 != nil || r1 != r2 {
		t.Fatalf("Refund twice: %q %v, %q %v", r1, err1, r2, err2)
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
