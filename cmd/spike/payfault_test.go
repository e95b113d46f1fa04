package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/testkit/faultproxy"
	"github.com/spikehq/spike/internal/testkit/stripemock"
)

// TestSlowPaymentProvider runs the embedded app with the Stripe adapter
// against stripe-mock reached through a fault-injecting proxy, and makes
// the provider slow (every answer 4 s late, past the payments guard's 3 s
// slow-call threshold): the concurrent payment starts in flight complete
// slowly, the payments breaker opens, payments then answer 503 with
// Retry-After without waiting for the provider, and placements answer 202
// throughout. Once the proxy is healed and the breaker's open timeout has
// passed, payments succeed again and the breaker closes.
//
// Timings are logged, not asserted (the machine may be shared).
// stripe-mock is stateless: a created PaymentIntent is
// requires_payment_method, so a started payment is requires_action.
func TestSlowPaymentProvider(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test: waits out slow calls and the breaker's open timeout")
	}
	mockURL := stripemock.Start(t)
	u, err := url.Parse(mockURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := faultproxy.Start(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })

	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Data = t.TempDir()
	cfg.Payments.Provider = "stripe"
	cfg.Payments.Stripe.APIKey = "sk_test_123"
	cfg.Payments.Stripe.WebhookSecret = "whsec_test"
	cfg.Payments.Stripe.BackendURL = "http://" + proxy.Addr()
	a, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopApp(t, a) })
	c := newClient(t, a.addr, a.secret)
	const (
		saleID = "payfault"
		state  = `spike_breaker_state{dependency="payments"}`
	)
	c.SetupSale("sku-payfault", saleID, 10_000, 1)
	c.Must("PUT", "/v1/admin/switches/ratelimit.user_rps", c.Token(1, true), `{"value":0}`, 200)

	// place makes one order for a new user and returns its id and how
	// long the 202 took.
	var nextUser int64 = 1000
	var userMu sync.Mutex
	owner := map[string]int64{}
	place := func() (string, time.Duration) {
		t.Helper()
		userMu.Lock()
		nextUser++
		user := nextUser
		userMu.Unlock()
		began := time.Now()
		r, p, err := c.Place(context.Background(), user, c.Token(user, false), saleID, "k", 1)
		took := time.Since(began)
		if err != nil || r.Status != 202 || p.OrderID == "" {
			t.Errorf("placement of user %d: %v %d %s, want 202", user, err, r.Status, r.Body)
			return "", took
		}
		userMu.Lock()
		owner[p.OrderID] = user
		userMu.Unlock()
		return p.OrderID, took
	}
	type answer struct {
		status     int
		retryAfter string
		payStatus  string
		took       time.Duration
		err        error
	}
	pay := func(orderID, key string) answer {
		userMu.Lock()
		user := owner[orderID]
		userMu.Unlock()
		began := time.Now()
		r, err := c.Do(context.Background(), "POST", "/v1/orders/"+orderID+"/payments", c.Token(user, false), nil, map[string]string{"Idempotency-Key": key})
		a := answer{status: r.Status, retryAfter: r.Header.Get("Retry-After"), took: time.Since(began), err: err}
		var body struct {
			Status string `json:"status"`
		}
		if r.Status == 201 && json.Unmarshal(r.Body, &body) == nil {
			a.payStatus = body.Status
		}
		return a
	}
	// placements sends n placements one after the other and returns their
	// latencies.
	placements := func(n int) []time.Duration {
		var ds []time.Duration
		for range n {
			_, d := place()
			ds = append(ds, d)
		}
		return ds
	}
	summary := func(ds []time.Duration) string {
		if len(ds) == 0 {
			return "none"
		}
		s := slices.Clone(ds)
		slices.Sort(s)
		r := func(d time.Duration) time.Duration { return d.Round(100 * time.Microsecond) }
		return fmt.Sprintf("n=%d min %v median %v p90 %v max %v", len(s), r(s[0]), r(s[len(s)/2]), r(s[len(s)*9/10]), r(s[len(s)-1]))
	}

	// Healthy: payments are created at the provider (201, requires_action).
	var healthyPay []time.Duration
	for i := range 3 {
		id, _ := place()
		r := pay(id, "healthy")
		if r.err != nil || r.status != 201 || r.payStatus != "requires_action" {
			t.Fatalf("healthy payment %d: %v %d %q, want 201 requires_action", i, r.err, r.status, r.payStatus)
		}
		healthyPay = append(healthyPay, r.took)
	}
	healthyPlace := placements(30)
	if v := metric(c, state); v != 0 {
		t.Fatalf("%s = %v while healthy", state, v)
	}
	t.Logf("healthy: payments %s; placements %s", summary(healthyPay), summary(healthyPlace))

	// fault makes the provider fail (inject), fires enough payment starts
	// at once for the breaker's minimum of calls (they end as slow calls
	// or failures, and the breaker opens), checks that payments then fail
	// fast while placements go on, heals the provider and waits for the
	// breaker to close.
	fault := func(name string, inject, heal func(), want int) {
		t.Helper()
		const calls = 24
		var orders []string
		for range calls {
			id, _ := place()
			orders = append(orders, id)
		}
		inject()
		began := time.Now()
		answers := make([]answer, calls)
		var wg sync.WaitGroup
		for i, id := range orders {
			wg.Add(1)
			go func() { defer wg.Done(); answers[i] = pay(id, name) }()
		}
		// Placements while the calls are in flight, and when the slowest
		// of them began.
		// Those sent 1 s or more into the wave meet only calls waiting
		// on the provider, not the burst of payment starts' local work.
		var during, settled []time.Duration
		var slowestAt time.Duration
		for range 30 {
			at := time.Since(began)
			_, d := place()
			if len(during) == 0 || d > slices.Max(during) {
				slowestAt = at
			}
			during = append(during, d)
			if at >= time.Second {
				settled = append(settled, d)
			}
			time.Sleep(50 * time.Millisecond)
		}
		wg.Wait()
		wave := time.Since(began)
		counts := map[int]int{}
		var took []time.Duration
		for i, r := range answers {
			if r.err != nil {
				t.Errorf("%s: payment %d: %v", name, i, r.err)
				continue
			}
			counts[r.status]++
			took = append(took, r.took)
			if r.status != want && r.status != 503 {
				t.Errorf("%s: payment %d: %d, want %d or 503", name, i, r.status, want)
			}
			if r.status == 503 && r.retryAfter == "" {
				t.Errorf("%s: payment %d: 503 without Retry-After", name, i)
			}
		}
		t.Logf("%s: %d concurrent payment starts answered %v in %v (each %s); placements meanwhile %s, the slowest sent %v into the wave; those sent 1 s or more into it %s",
			name, calls, counts, wave.Round(time.Millisecond), summary(took), summary(during), slowestAt.Round(time.Millisecond), summary(settled))

		opened := waitFor(t, name+": the payments breaker opens", 10*time.Second, func() bool { return metric(c, state) == 1 })
		t.Logf("%s: %s = 1 seen %v after the wave's end", name, state, opened.Round(time.Millisecond))

		// Open: payments fail fast with 503 + Retry-After; placements unchanged.
		var openPay []time.Duration
		for i := range 10 {
			id, _ := place()
			r := pay(id, name+"-open")
			if r.err != nil || r.status != 503 || r.retryAfter == "" {
				t.Errorf("%s: payment %d with the breaker open: %v %d Retry-After %q, want 503 with Retry-After", name, i, r.err, r.status, r.retryAfter)
			}
			openPay = append(openPay, r.took)
		}
		openPlace := placements(30)
		t.Logf("%s, breaker open (provider still failing): payments %s; placements %s", name, summary(openPay), summary(openPlace))
		if v := metric(c, state); v != 1 {
			t.Errorf("%s: %s = %v after the open phase, want 1 (the open timeout is 5 s)", name, state, v)
		}

		// Heal: after the open timeout the breaker's trial calls succeed
		// and it closes.
		heal()
		healed := time.Now()
		time.Sleep(5 * time.Second)
		var first answer
		recovered := waitFor(t, name+": a payment succeeds after healing", 20*time.Second, func() bool {
			id, _ := place()
			first = pay(id, name+"-healed")
			return first.err == nil && first.status == 201
		})
		waitFor(t, name+": the payments breaker closes", 20*time.Second, func() bool {
			if metric(c, state) == 0 {
				return true
			}
			id, _ := place()
			pay(id, name+"-closing")
			return false
		})
		closedAfter := time.Since(healed)
		var afterPay []time.Duration
		for i := range 5 {
			id, _ := place()
			r := pay(id, name+"-after")
			if r.err != nil || r.status != 201 || r.payStatus != "requires_action" {
				t.Errorf("%s: payment %d after healing: %v %d %q, want 201 requires_action", name, i, r.err, r.status, r.payStatus)
			}
			afterPay = append(afterPay, r.took)
		}
		t.Logf("%s, healed: first 201 %v after the 5 s wait (took %v); breaker closed %v after healing; payments %s",
			name, recovered.Round(time.Millisecond), first.took.Round(time.Millisecond), closedAfter.Round(time.Millisecond), summary(afterPay))
	}

	// Slow: every answer of the provider 4 s late (slow calls that succeed:
	// the starts in flight answer 201 late).
	fault("slow", func() { proxy.SetLatency(0, 4*time.Second) }, func() { proxy.SetLatency(0, 0) }, 201)
	// Unresponsive: nothing comes back; the calls in flight end at the
	// guard's 10 s budget (503).
	fault("blackhole", func() { proxy.Blackhole(true) }, func() { proxy.Blackhole(false) }, 503)
	t.Logf("proxy accepted %d connections", proxy.Accepted())
}
