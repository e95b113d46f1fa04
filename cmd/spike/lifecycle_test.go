package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/spikehq/spike/internal/testkit/apitest"
)

// testLog is a test server's logger: nothing, or with SPIKE_TEST_LOGDIR
// set, a file there per test, to see afterwards why a run failed.
func testLog(t *testing.T) *slog.Logger {
	dir := os.Getenv("SPIKE_TEST_LOGDIR")
	if dir == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	f, err := os.CreateTemp(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return slog.New(slog.NewTextHandler(f, nil))
}

// startLifecycleApp runs an embedded Spike whose sandbox gateway delivers
// webhooks twice and out of order, as real providers do, and whose sales
// settle a moment after they end.
func startLifecycleApp(t *testing.T) *app {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Data = t.TempDir()
	cfg.Payments.Sandbox.DuplicateRate = 0.5
	cfg.Payments.Sandbox.ReorderRate = 0.5
	cfg.Payments.SettleAfter = 500 * time.Millisecond
	a, err := start(context.Background(), cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopApp(t, a) })
	return a
}

// TestOrderLifecycle: 1,000 buyers on a sale of 500 units with a payment
// window of 8 s; some pay (webhooks duplicated and reordered), some
// cancel, the rest let the deadline pass; a second wave buys exactly the
// freed units; refunds, shipping and the sale's end follow; then every
// order is where its history says and I1–I7 and product conservation
// hold (apitest.RunLifecycle).
func TestOrderLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("load test: 2,000 buyers and a payment window to wait out")
	}
	a := startLifecycleApp(t)
	c := newClient(t, a.addr, a.secret)
	apitest.RunLifecycle(t, c, apitest.LifecycleOptions{SKU: "sku-life", SaleID: "life", Units: 500, Buyers: 1000, PaymentWindow: 8})
}

// TestLifecycleRaces: a payment's success at its order's deadline, and a
// cancel, a payment and a refund at once on one order: exactly one of each
// race wins, money and units counted once.
func TestLifecycleRaces(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out payment deadlines")
	}
	a := startLifecycleApp(t)
	c := newClient(t, a.addr, a.secret)
	apitest.RunRaces(t, c, "sku-race", "race", 40)
}

// TestLifecycleRoutesSmall checks the after-the-202 routes' answers one by
// one: it is the quick version of TestOrderLifecycle (it runs with -short).
func TestLifecycleRoutesSmall(t *testing.T) {
	a := startLifecycleApp(t)
	c := newClient(t, a.addr, a.secret)
	admin := c.Token(1, true)
	c.Must("POST", "/v1/products", admin, map[string]any{"sku": "sku-s", "name": "S", "price_cents": 100, "stock": 10}, 201)
	r := c.Must("POST", "/v1/sales", admin, map[string]any{"id": "s1", "sku": "sku-s", "stock": 4, "price_cents": 50, "per_user_limit": 2}, 201)
	if !strings.Contains(string(r.Body), `"payment_window":900`) {
		t.Fatalf("a sale without payment_window gets 900 s: %s", r.Body)
	}
	// Refused at creation: ends in the past, before it starts, bad windows.
	c.Must("POST", "/v1/sales", admin, map[string]any{"id": "s2", "sku": "sku-s", "stock": 1, "price_cents": 1, "ends_at": time.Now().Add(-time.Minute)}, 400)
	c.Must("POST", "/v1/sales", admin, map[string]any{"id": "s2", "sku": "sku-s", "stock": 1, "price_cents": 1,
		"starts_at": time.Now().Add(time.Hour), "ends_at": time.Now().Add(time.Minute)}, 400)
	c.Must("POST", "/v1/sales", admin, map[string]any{"id": "s2", "sku": "sku-s", "stock": 1, "price_cents": 1, "payment_window": -1}, 400)

	user := int64(42)
	_, p, err := c.Place(context.Background(), user, c.Token(user, false), "s1", "k1", 2)
	if err != nil || p.OrderID == "" {
		t.Fatalf("place: %v %+v", err, p)
	}
	// Pay: bad and missing keys, another buyer, then the sandbox's page.
	for _, hdr := range []map[string]string{nil, {"Idempotency-Key": ""}} {
		r, _ := c.Do(context.Background(), "POST", "/v1/orders/"+p.OrderID+"/payments", c.Token(user, false), nil, hdr)
		if r.Status != 400 {
			t.Fatalf("payment without a key: %d %s", r.Status, r.Body)
		}
	}
	r, _ = c.Do(context.Background(), "POST", "/v1/orders/"+p.OrderID+"/payments", c.Token(7, false), nil, map[string]string{"Idempotency-Key": "x"})
	if r.Status != 404 {
		t.Fatalf("another buyer's payment: %d", r.Status)
	}
	r, _ = c.Do(context.Background(), "POST", "/v1/orders/"+p.OrderID+"/payments", c.Token(user, false), `{"provider":"nope"}`, map[string]string{"Idempotency-Key": "x"})
	if r.Status/100 != 4 {
		t.Fatalf("unknown provider: %d %s", r.Status, r.Body)
	}
	pay, err := c.Pay(context.Background(), user, p.OrderID, "pay-1", "")
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Pay(context.Background(), user, p.OrderID, "pay-1", "")
	if err != nil || again.PaymentID != pay.PaymentID {
		t.Fatalf("the same key gives the same payment: %v %+v %+v", err, pay, again)
	}
	var got apitest.Payment
	c.Must("GET", "/v1/payments/"+pay.PaymentID, c.Token(user, false), nil, 200).Decode(t, &got)
	if got.Status != "requires_action" || got.AmountCents != 100 {
		t.Fatalf("payment: %+v", got)
	}
	c.Must("GET", "/v1/payments/"+pay.PaymentID, c.Token(8, false), nil, 404)
	// The webhook refuses what the provider did not sign.
	for _, sig := range []string{"", "t=1,v1=00", fmt.Sprintf("t=%d,v1=%s", time.Now().Unix(), strings.Repeat("ab", 32))} {
		r, _ := c.Do(context.Background(), "POST", "/v1/payments/webhooks/sandbox", "", `{"id":"e1","ref":"x","status":"succeeded"}`, map[string]string{"X-Spike-Signature": sig})
		if r.Status != 401 {
			t.Fatalf("webhook with signature %q: %d %s", sig, r.Status, r.Body)
		}
	}
	// Ship before paid is a conflict naming the state; a buyer may not ship.
	r, _ = c.Do(context.Background(), "POST", "/v1/orders/"+p.OrderID+"/ship", admin, map[string]string{"carrier": "UPS", "tracking": "1Z"}, nil)
	if r.Status != 409 {
		t.Fatalf("ship an unpaid order: %d %s", r.Status, r.Body)
	}
	c.Must("POST", "/v1/orders/"+p.OrderID+"/ship", c.Token(user, false), map[string]string{"carrier": "UPS", "tracking": "1Z"}, 403)
	path, _ := strings.CutPrefix(pay.CheckoutURL, c.Base)
	c.Must("GET", path, "", nil, 200)
	c.Must("POST", path, "", map[string]string{"outcome": "succeeded"}, 200)
	c.WaitOrder(t, p.OrderID, 30*time.Second, "paid", func(o apitest.LifeOrder) bool { return o.Status == "paid" })
	r, _ = c.Do(context.Background(), "POST", "/v1/orders/"+p.OrderID+"/cancel", c.Token(user, false), nil, nil)
	if r.Status != 409 || r.Code() != "conflict" {
		t.Fatalf("cancel a paid order: %d %s", r.Status, r.Body)
	}
	c.Must("POST", "/v1/orders/"+p.OrderID+"/ship", admin, `{"carrier":"UPS"}`, 400)
	c.Must("POST", "/v1/orders/"+p.OrderID+"/ship", admin, `{"carrier":"UPS","tracking":"1Z","x":1}`, 400)
	c.Must("POST", "/v1/orders/"+p.OrderID+"/ship", admin, map[string]string{"carrier": "UPS", "tracking": "1Z"}, 200)
	o := c.Must("POST", "/v1/orders/"+p.OrderID+"/deliver", admin, nil, 200)
	if !strings.Contains(string(o.Body), `"delivered_at"`) || !strings.Contains(string(o.Body), `"tracking":"1Z"`) {
		t.Fatalf("delivered order: %s", o.Body)
	}
	c.Must("POST", "/v1/orders/nope/cancel", admin, nil, 404)
	c.Must("POST", "/v1/sales/nope/end", admin, nil, 404)
	c.Must("POST", "/v1/products/nope/stock", admin, map[string]int{"delta": 1}, 400) // no Idempotency-Key
	r, _ = c.Do(context.Background(), "POST", "/v1/products/sku-s/stock", admin, map[string]int{"delta": 0}, map[string]string{"Idempotency-Key": "z"})
	if r.Status != 400 {
		t.Fatalf("delta 0: %d", r.Status)
	}
	rep, ok := c.WaitAudit(30 * time.Second)
	if !ok {
		t.Fatalf("audit: %+v", rep)
	}
}

// TestLifecycleCrash kills `spike serve` with SIGKILL while payment
// deadlines are firing and webhooks arriving, restarts it on the same data
// folder and checks that no deadline was lost or applied twice and no unit
// came back twice: every order ends paid or cancelled by its deadline, and
// the audit (I1–I7, product conservation) passes.
func TestLifecycleCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	const units = 300
	dir := t.TempDir()
	addr := freeAddr(t)
	env := []string{"SPIKE_PAYMENTS_SANDBOX_DUPLICATE_RATE=0.5", "SPIKE_PAYMENTS_SANDBOX_REORDER_RATE=0.5"}
	ch := startChild(t, dir, addr, env...)
	secret, err := (&Config{Data: dir}).secret()
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, addr, secret)
	c.RetryTransient = true
	admin := c.Token(1, true)
	c.Must("POST", "/v1/products", admin, map[string]any{"sku": "sku-crash", "name": "C", "price_cents": 100, "stock": units}, 201)
	c.Must("POST", "/v1/sales", admin, map[string]any{"id": "crash", "sku": "sku-crash", "stock": units, "price_cents": 10, "per_user_limit": 1, "payment_window": 2}, 201)

	orders := make(map[int64]string)
	var mu sync.Mutex
	var g errgroup.Group
	g.SetLimit(32)
	for i := range units {
		user := int64(500_000 + i)
		g.Go(func() error {
			for {
				r, p, err := c.Place(context.Background(), user, c.Token(user, false), "crash", "k", 1)
				if err == nil && r.Status == 202 {
					mu.Lock()
					orders[user] = p.OrderID
					mu.Unlock()
					return nil
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	// Half the buyers pay, spread over the window, while deadlines fire;
	// the server is killed in the middle of it.
	var payers []int64
	for u := range orders {
		if u%2 == 0 {
			payers = append(payers, u)
		}
	}
	killed := make(chan struct{})
	go func() {
		time.Sleep(2200 * time.Millisecond)
		ch.kill(t)
		close(killed)
	}()
	var pays sync.WaitGroup
	for i, u := range payers {
		pays.Go(func() {
			time.Sleep(time.Duration(i%40) * 60 * time.Millisecond)
			c.Pay(context.Background(), u, orders[u], "p", "succeeded") // may fail: the server dies
		})
	}
	pays.Wait()
	<-killed
	startChild(t, dir, addr, env...)
	// Buyers whose page died press again (the sandbox's undelivered
	// webhooks died with it); orders already cancelled get refunded.
	for _, u := range payers {
		c.Pay(context.Background(), u, orders[u], "p", "succeeded")
	}
	for u, id := range orders {
		o := c.WaitOrder(t, id, 60*time.Second, "paid or cancelled", func(o apitest.LifeOrder) bool {
			return o.Status == "paid" || o.Status == "cancelled"
		})
		if o.Status == "cancelled" && o.CancelReason != "payment_timeout" {
			t.Fatalf("order of %d: cancelled with reason %q", u, o.CancelReason)
		}
		// One transition each: no deadline applied twice, none after a payment.
		var h struct {
			History []struct{ From, To string } `json:"history"`
		}
		c.Must("GET", "/v1/orders/"+id+"/history", admin, nil, 200).Decode(t, &h)
		if len(h.History) != 1 || h.History[0].To != o.Status {
			t.Fatalf("order %s (%s): history %+v, want one transition", id, o.Status, h.History)
		}
	}
	rep, ok := c.WaitAudit(60 * time.Second)
	if !ok {
		t.Fatalf("audit after the crash: %+v", rep)
	}
}

// TestPaymentProviderFailing: while the payment provider fails every call,
// payments answer 503 with Retry-After, the payments breaker opens (after
// which they fail without calling the provider), and placements are not
// affected at all.
func TestPaymentProviderFailing(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Data = t.TempDir()
	cfg.Payments.Sandbox.FailureRate = 1
	cfg.Payments.Sandbox.Latency = 20 * time.Millisecond
	a, err := start(context.Background(), cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopApp(t, a) })
	c := newClient(t, a.addr, a.secret)
	c.SetupSale("sku-pf", "pf", 100, 1)

	var orders []string
	for i := range 30 {
		user := int64(1000 + i)
		_, p, err := c.Place(context.Background(), user, c.Token(user, false), "pf", "k", 1)
		if err != nil || p.OrderID == "" {
			t.Fatalf("place: %v", err)
		}
		orders = append(orders, p.OrderID)
	}
	var slowest, fastestLate time.Duration
	for i, id := range orders[:20] {
		user := int64(1000 + i)
		began := time.Now()
		r, err := c.Do(context.Background(), "POST", "/v1/orders/"+id+"/payments", c.Token(user, false), nil, map[string]string{"Idempotency-Key": "p"})
		took := time.Since(began)
		if err != nil || r.Status != 503 || r.Header.Get("Retry-After") == "" {
			t.Fatalf("payment %d with the provider failing: %v %d %s, want 503 with Retry-After", i, err, r.Status, r.Body)
		}
		if i < 10 {
			slowest = max(slowest, took)
		} else if fastestLate == 0 || took < fastestLate {
			fastestLate = took
		}
		// Placements meanwhile are unaffected.
		u := int64(5000 + i)
		if r, _, err := c.Place(context.Background(), u, c.Token(u, false), "pf", "k", 1); err != nil || r.Status != 202 {
			t.Fatalf("a placement while payments fail: %v %d %s", err, r.Status, r.Body)
		}
	}
	m := c.Must("GET", "/metrics", "", nil, 200)
	if !strings.Contains(string(m.Body), `spike_breaker_state{dependency="payments"} 1`) {
		t.Errorf("the payments breaker is not open after 20 failed calls:\n%s", grep(string(m.Body), `dependency="payments"`))
	}
	t.Logf("payment answers: slowest while calling the provider %v, fastest once the breaker is open %v", slowest, fastestLate)
}
