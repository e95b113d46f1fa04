package apitest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// LifeOrder is an order as GET /v1/orders/{id} shows it after the 202.
type LifeOrder struct {
	OrderView
	UpdatedAt       time.Time  `json:"updated_at"`
	PaymentDeadline *time.Time `json:"payment_deadline"`
	PaidAt          *time.Time `json:"paid_at"`
	CancelledAt     *time.Time `json:"cancelled_at"`
	CancelReason    string     `json:"cancel_reason"`
	RefundedAt      *time.Time `json:"refunded_at"`
	Shipment        *struct {
		Carrier     string     `json:"carrier"`
		Tracking    string     `json:"tracking"`
		ShippedAt   time.Time  `json:"shipped_at"`
		DeliveredAt *time.Time `json:"delivered_at"`
	} `json:"shipment"`
}

// Payment is a payment as the API shows it.
type Payment struct {
	PaymentID   string `json:"payment_id"`
	OrderID     string `json:"order_id"`
	Provider    string `json:"provider"`
	AmountCents int64  `json:"amount_cents"`
	Status      string `json:"status"`
	CheckoutURL string `json:"checkout_url"`
}

// DoRetry is Do, sending the request again while it is answered 429 or
// 503 (a dependency paused or shedding, with Retry-After), as a client
// would, for up to 30 s.
func (c *Client) DoRetry(ctx context.Context, method, path, token string, body any, hdr map[string]string) (Response, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := c.Do(ctx, method, path, token, body, hdr)
		if err != nil || (r.Status != 429 && r.Status != 503) || time.Now().After(deadline) {
			return r, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Order reads an order as an admin.
func (c *Client) Order(t testing.TB, id string) LifeOrder {
	t.Helper()
	var o LifeOrder
	c.Must("GET", "/v1/orders/"+id, c.Token(1, true), nil, 200).Decode(t, &o)
	return o
}

// WaitOrder polls an order until cond holds or timeout passes.
func (c *Client) WaitOrder(t testing.TB, id string, timeout time.Duration, what string, cond func(LifeOrder) bool) LifeOrder {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		o := c.Order(t, id)
		if cond(o) {
			return o
		}
		if time.Now().After(deadline) {
			h := c.Must("GET", "/v1/orders/"+id+"/history", c.Token(1, true), nil, 200)
			t.Fatalf("order %s: still %s after %s, want %s: %+v; history %s", id, o.Status, timeout, what, o, h.Body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Sale reads a sale.
func (c *Client) Sale(t testing.TB, id string) SaleView {
	t.Helper()
	var s SaleView
	c.Must("GET", "/v1/sales/"+id, "", nil, 200).Decode(t, &s)
	return s
}

// Pay starts a payment of the buyer's order and presses outcome on the
// sandbox's checkout page, as a person would; the order becomes paid only
// when the sandbox's signed webhook reaches the server.
func (c *Client) Pay(ctx context.Context, user int64, orderID, key, outcome string) (Payment, error) {
	var p Payment
	r, err := c.DoRetry(ctx, "POST", "/v1/orders/"+orderID+"/payments", c.Token(user, false), `{}`, map[string]string{"Idempotency-Key": key})
	if err != nil {
		return p, err
	}
	if r.Status != http.StatusCreated {
		o, _ := c.Do(ctx, "GET", "/v1/orders/"+orderID, c.Token(1, true), nil, nil)
		return p, fmt.Errorf("start payment of %s at %s: %d %s (order: %s)", orderID, time.Now().UTC().Format(time.RFC3339Nano), r.Status, r.Body, o.Body)
	}
	if err := json.Unmarshal(r.Body, &p); err != nil {
		return p, err
	}
	if outcome == "" {
		return p, nil
	}
	path, ok := strings.CutPrefix(p.CheckoutURL, c.Base)
	if !ok {
		return p, fmt.Errorf("checkout_url %q is not on the server %s", p.CheckoutURL, c.Base)
	}
	r, err = c.DoRetry(ctx, "POST", path, "", map[string]string{"outcome": outcome}, nil)
	if err != nil {
		return p, err
	}
	if r.Status/100 != 2 {
		return p, fmt.Errorf("checkout %s: %d %s", p.CheckoutURL, r.Status, r.Body)
	}
	return p, nil
}

// LifecycleOptions shape RunLifecycle.
type LifecycleOptions struct {
	SKU, SaleID   string
	Units         int64 // the sale's stock
	Buyers        int   // first wave; as many again in the second wave
	PaymentWindow int64 // seconds
}

// RunLifecycle plays a whole sale through the API: a first wave of buyers
// twice the stock; some of the winners pay (the sandbox duplicating and
// reordering its webhooks, as configured on the server), some cancel, the
// rest let the payment deadline pass; a second wave buys the freed units;
// an admin refunds, ships, delivers and ends the sale. It then checks that
// every order is in the state its history says, that deadlines were kept,
// that stock came back exactly once (to the sale, then the product), and
// that the server's audit (I1–I7, product conservation) passes.
func RunLifecycle(t *testing.T, c *Client, o LifecycleOptions) {
	admin := c.Token(1, true)
	// 503 + Retry-After is a valid answer under load (writes paused while
	// the database is slow): retried, as a client would.
	defer func(prev bool) { c.RetryTransient = prev }(c.RetryTransient)
	c.RetryTransient = true
	const extra = 100
	c.Must("POST", "/v1/products", admin, map[string]any{"sku": o.SKU, "name": "Item " + o.SKU, "price_cents": 1999, "stock": o.Units + extra}, 201)
	c.Must("POST", "/v1/sales", admin, map[string]any{"id": o.SaleID, "sku": o.SKU, "stock": o.Units, "price_cents": 999,
		"per_user_limit": 1, "payment_window": o.PaymentWindow}, 201)

	// Restocks and write-offs: recorded, idempotent, never below zero.
	restock := map[string]string{"Idempotency-Key": "restock-1"}
	for range 2 {
		r, err := c.DoRetry(context.Background(), "POST", "/v1/products/"+o.SKU+"/stock", admin, map[string]any{"delta": 50, "reason": "delivery"}, restock)
		if err != nil || r.Status != 200 {
			t.Fatalf("restock: %v %d %s", err, r.Status, r.Body)
		}
	}
	var prod struct{ Stock int64 }
	c.Must("GET", "/v1/products/"+o.SKU, "", nil, 200).Decode(t, &prod)
	if prod.Stock != extra+50 {
		t.Fatalf("after one restock of 50 sent twice: stock %d, want %d", prod.Stock, extra+50)
	}
	r, _ := c.DoRetry(context.Background(), "POST", "/v1/products/"+o.SKU+"/stock", admin, map[string]any{"delta": -1_000_000, "reason": "x"}, map[string]string{"Idempotency-Key": "writeoff-1"})
	if r.Status != 409 || r.Code() != "insufficient_stock" {
		t.Fatalf("write-off below zero: %d %s, want 409 insufficient_stock", r.Status, r.Body)
	}
	c.Must("PATCH", "/v1/products/"+o.SKU, admin, map[string]any{"stock": 5}, 400)

	// A wave of buyers; each winner acts on its order at once (onWin), as a
	// buyer at a checkout does, so the payment window is not spent waiting
	// for the rest of the wave.
	wave := func(first int64, n int, onWin func(user int64, orderID string) error) map[int64]string {
		won := make(map[int64]string)
		var mu sync.Mutex
		var g errgroup.Group
		g.SetLimit(64)
		for i := range n {
			user := first + int64(i)
			g.Go(func() error {
				for attempt := 0; ; attempt++ {
					r, p, err := c.Place(context.Background(), user, c.Token(user, false), o.SaleID, "k1", 1)
					switch {
					case err == nil && r.Status == 202:
						mu.Lock()
						won[user] = p.OrderID
						mu.Unlock()
						if onWin != nil {
							return onWin(user, p.OrderID)
						}
						return nil
					case err == nil && r.Status == 409:
						return nil
					case attempt < 50:
						time.Sleep(100 * time.Millisecond) // 429/503: retry the same key, as a client would
					default:
						return fmt.Errorf("user %d: %v %d %s", user, err, r.Status, r.Body)
					}
				}
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		return won
	}

	// The winners of the first wave: 2 in 5 pay, 1 in 5 cancels, the rest
	// never pay.
	const (
		pays    = "pay"
		cancels = "cancel"
		sleeps  = "sleep"
	)
	role := func(user int64) string {
		switch user % 5 {
		case 0, 1:
			return pays
		case 2:
			return cancels
		}
		return sleeps
	}
	var payFailures atomic.Int64
	var payMu sync.Mutex
	payments := make(map[int64]Payment)
	won := wave(100_000, o.Buyers, func(u int64, id string) error {
		switch role(u) {
		case pays:
			for attempt := 0; ; attempt++ {
				p, err := c.Pay(context.Background(), u, id, "pay-1", "succeeded")
				if err == nil {
					payMu.Lock()
					payments[u] = p
					payMu.Unlock()
					return nil
				}
				if strings.Contains(err.Error(), "409") {
					return nil // the deadline came first on a slow machine: counted below
				}
				if attempt == 20 {
					return err
				}
				payFailures.Add(1)
				time.Sleep(100 * time.Millisecond)
			}
		case cancels:
			for range 2 { // the second cancel answers the order as it is
				r, err := c.DoRetry(context.Background(), "POST", "/v1/orders/"+id+"/cancel", c.Token(u, false), nil, nil)
				// On a slow machine the deadline may win the race: cancelled either way.
				if err != nil || r.Status != 200 || !strings.Contains(string(r.Body), `"status":"cancelled"`) {
					return fmt.Errorf("cancel %s: %v %d %s", id, err, r.Status, r.Body)
				}
			}
		}
		return nil
	})
	// Units cancelled during the wave were sold again within it.
	if int64(len(won)) < o.Units {
		t.Fatalf("first wave: %d orders accepted, want at least the %d units", len(won), o.Units)
	}
	if n := payFailures.Load(); n > 0 {
		t.Logf("%d payment starts were retried", n)
	}
	var payers, cancellers, sleepers []int64
	for user := range won {
		switch role(user) {
		case pays:
			payers = append(payers, user)
		case cancels:
			cancellers = append(cancellers, user)
		default:
			sleepers = append(sleepers, user)
		}
	}
	// Another buyer cannot cancel or pay someone else's order.
	if r, _ := c.DoRetry(context.Background(), "POST", "/v1/orders/"+won[payers[0]]+"/cancel", c.Token(7, false), nil, nil); r.Status != 404 {
		t.Fatalf("another buyer's cancel: %d, want 404", r.Status)
	}

	window := time.Duration(o.PaymentWindow) * time.Second
	wait := window + 30*time.Second
	// A payer's order ends paid, or, where its confirmation came after the
	// deadline (a slow machine), cancelled with the payment refunded: the
	// money is never kept for a cancelled order (I7).
	var paid []int64
	lateRefunded := 0
	for _, u := range payers {
		lo := c.WaitOrder(t, won[u], wait, "paid or cancelled", func(o LifeOrder) bool { return o.Status == "paid" || o.Status == "cancelled" })
		if lo.Status == "paid" {
			paid = append(paid, u)
			continue
		}
		if p, ok := payments[u]; ok {
			deadline := time.Now().Add(30 * time.Second)
			for {
				var got struct {
					Status     string     `json:"status"`
					RefundedAt *time.Time `json:"refunded_at"`
				}
				c.Must("GET", "/v1/payments/"+p.PaymentID, c.Token(u, false), nil, 200).Decode(t, &got)
				if got.Status != "succeeded" || got.RefundedAt != nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("payment %s succeeded for cancelled order %s and was not refunded", p.PaymentID, lo.OrderID)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		lateRefunded++
	}
	t.Logf("%d of %d payers paid in time; %d were cancelled by their deadline first (payment refunded or never captured)", len(paid), len(payers), lateRefunded)
	if len(paid) < 20 {
		t.Fatalf("only %d payers paid within the %s window", len(paid), window)
	}
	for _, u := range sleepers {
		lo := c.WaitOrder(t, won[u], wait, "cancelled by its deadline", func(o LifeOrder) bool { return o.Status == "cancelled" })
		if lo.CancelReason != "payment_timeout" || lo.PaymentDeadline == nil || lo.CancelledAt == nil {
			t.Fatalf("order %s: cancelled with reason %q, deadline %v, at %v", lo.OrderID, lo.CancelReason, lo.PaymentDeadline, lo.CancelledAt)
		}
		if late := lo.CancelledAt.Sub(*lo.PaymentDeadline); late > 5*time.Second || late < 0 {
			t.Errorf("order %s: cancelled %s after its deadline (I6: within 5 s)", lo.OrderID, late)
		}
	}
	// A cancelled order cannot be paid; its key still replays its 202.
	u := cancellers[0]
	if r, _ := c.DoRetry(context.Background(), "POST", "/v1/orders/"+won[u]+"/payments", c.Token(u, false), nil, map[string]string{"Idempotency-Key": "late"}); r.Status != 409 {
		t.Fatalf("paying a cancelled order: %d %s, want 409", r.Status, r.Body)
	}
	if _, p, _ := c.Place(context.Background(), u, c.Token(u, false), o.SaleID, "k1", 1); p.OrderID != won[u] {
		t.Fatalf("replay of a cancelled order's key: order %q, want %q", p.OrderID, won[u])
	}

	freed := o.Units - int64(len(paid))
	waitRemaining := func(want int64) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			s := c.Sale(t, o.SaleID)
			if s.Remaining == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("sale remaining %d, want %d (units back exactly once)", s.Remaining, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitRemaining(freed)

	// The second wave buys exactly the freed units, at once.
	won2 := wave(200_000, o.Buyers, nil)
	if int64(len(won2)) != freed {
		t.Fatalf("second wave: %d orders accepted, want the %d freed units", len(won2), freed)
	}
	waitRemaining(0)

	// Admin: refund some paid orders (units back), ship and deliver others,
	// refund a delivered one (its units stay with the buyer).
	refunded, shipped := paid[:5], paid[5:15]
	for _, u := range refunded {
		for range 2 {
			r := c.Must("POST", "/v1/orders/"+won[u]+"/refund", admin, nil, 200)
			if !strings.Contains(string(r.Body), `"status":"refunded"`) {
				t.Fatalf("refund: %s", r.Body)
			}
		}
	}
	for _, u := range shipped {
		c.Must("POST", "/v1/orders/"+won[u]+"/ship", admin, map[string]string{"carrier": "DHL", "tracking": "T-" + won[u]}, 200)
	}
	for _, u := range shipped[:5] {
		c.Must("POST", "/v1/orders/"+won[u]+"/deliver", admin, nil, 200)
	}
	c.Must("POST", "/v1/orders/"+won[shipped[0]]+"/refund", admin, nil, 200)
	if r, _ := c.DoRetry(context.Background(), "POST", "/v1/orders/"+won[shipped[1]]+"/cancel", admin, nil, nil); r.Status != 409 || r.Code() != "conflict" {
		t.Fatalf("cancel of a delivered order: %d %s, want 409 conflict", r.Status, r.Body)
	}
	waitRemaining(int64(len(refunded)))

	// End the sale: its unsold units go back to the product, once.
	c.Must("POST", "/v1/sales/"+o.SaleID+"/end", admin, nil, 200)
	c.Must("POST", "/v1/sales/"+o.SaleID+"/end", admin, nil, 200)
	want := extra + 50 + int64(len(refunded))
	deadline := time.Now().Add(60 * time.Second)
	for {
		c.Must("GET", "/v1/products/"+o.SKU, "", nil, 200).Decode(t, &prod)
		if prod.Stock == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("product stock %d after the sale ended, want %d", prod.Stock, want)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Every order is where its history says.
	all := make(map[int64]string, len(won)+len(won2))
	for u, id := range won {
		all[u] = id
	}
	for u, id := range won2 {
		all[u] = id
	}
	// historyEnd walks an order's history and returns where it ends.
	historyEnd := func(id string) string {
		var h struct {
			History []struct{ From, To string } `json:"history"`
		}
		c.Must("GET", "/v1/orders/"+id+"/history", admin, nil, 200).Decode(t, &h)
		status := "created"
		for _, e := range h.History {
			if e.From != status && !(status == "created" && e.From == "pending") {
				t.Fatalf("order %s: history goes %s → %s from %s", id, e.From, e.To, status)
			}
			status = e.To
		}
		return status
	}
	for _, id := range all {
		// An unpaid order may expire between two reads: the order must be
		// where its history ended just before, or just after, it was read.
		before := historyEnd(id)
		lo := c.Order(t, id)
		if lo.Status != before {
			if after := historyEnd(id); lo.Status != after {
				t.Fatalf("order %s is %s, its history ends at %s (read before) and %s (after)", id, lo.Status, before, after)
			}
		}
	}
	rep, ok := c.WaitAudit(60 * time.Second)
	if !ok {
		t.Fatalf("audit failed: %+v", rep)
	}
	names := make([]string, 0, len(rep.Checks))
	for _, ch := range rep.Checks {
		names = append(names, ch.Name)
	}
	for _, need := range []string{"I6", "I7", "product conservation"} {
		if !strings.Contains(strings.Join(names, ","), need) {
			t.Fatalf("the audit has no %s check: %v", need, names)
		}
	}
}

// RunRaces races transitions of the same orders against each other and
// checks that exactly one of each race won and the money and units were
// counted once:
//   - a payment's success pressed at its order's deadline instant: the
//     order ends paid, or cancelled with the payment refunded, never both;
//   - a buyer's cancel, the payment's success and an admin's refund sent
//     at once from several goroutines.
func RunRaces(t *testing.T, c *Client, sku, saleID string, orders int) {
	admin := c.Token(1, true)
	defer func(prev bool) { c.RetryTransient = prev }(c.RetryTransient)
	c.RetryTransient = true
	const window = 4 // seconds
	c.Must("POST", "/v1/products", admin, map[string]any{"sku": sku, "name": "Item " + sku, "price_cents": 500, "stock": 2 * orders}, 201)
	// Race 1's sale has a short payment window; race 2's the default one,
	// so that only the race it is about decides each order.
	c.Must("POST", "/v1/sales", admin, map[string]any{"id": saleID + "-d", "sku": sku, "stock": orders, "price_cents": 100,
		"per_user_limit": 1, "payment_window": window}, 201)
	c.Must("POST", "/v1/sales", admin, map[string]any{"id": saleID + "-x", "sku": sku, "stock": orders, "price_cents": 100,
		"per_user_limit": 1}, 201)
	place := func(saleID string, user int64) string {
		for attempt := 0; ; attempt++ {
			r, p, err := c.Place(context.Background(), user, c.Token(user, false), saleID, "race", 1)
			if err == nil && r.Status == 202 {
				return p.OrderID
			}
			if attempt == 50 {
				t.Fatalf("place: %v %d %s", err, r.Status, r.Body)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var g errgroup.Group
	// Race 1: the success arrives at the deadline.
	for i := range orders {
		user := int64(300_000 + i)
		g.Go(func() error {
			id := place(saleID+"-d", user)
			p, err := c.Pay(context.Background(), user, id, "p", "")
			if err != nil {
				if strings.Contains(err.Error(), "past its payment deadline") || strings.Contains(err.Error(), "order is cancelled") {
					return nil // the deadline won before the race began (a slow machine)
				}
				return err
			}
			lo := c.Order(t, id)
			if lo.PaymentDeadline == nil {
				return fmt.Errorf("order %s has no deadline", id)
			}
			// Press "pay" within ±300 ms of the deadline.
			at := lo.PaymentDeadline.Add(time.Duration(i%7-3) * 100 * time.Millisecond)
			time.Sleep(time.Until(at))
			path, _ := strings.CutPrefix(p.CheckoutURL, c.Base)
			c.DoRetry(context.Background(), "POST", path, "", map[string]string{"outcome": "succeeded"}, nil)
			return nil
		})
	}
	// Race 2: cancel, pay and refund at once.
	for i := range orders {
		user := int64(400_000 + i)
		g.Go(func() error {
			id := place(saleID+"-x", user)
			p, err := c.Pay(context.Background(), user, id, "p", "")
			if err != nil {
				return err
			}
			path, _ := strings.CutPrefix(p.CheckoutURL, c.Base)
			var race sync.WaitGroup
			for range 3 {
				race.Go(func() {
					c.DoRetry(context.Background(), "POST", "/v1/orders/"+id+"/cancel", c.Token(user, false), nil, nil)
				})
				race.Go(func() {
					c.DoRetry(context.Background(), "POST", path, "", map[string]string{"outcome": "succeeded"}, nil)
				})
				race.Go(func() { c.DoRetry(context.Background(), "POST", "/v1/orders/"+id+"/refund", admin, nil, nil) })
			}
			race.Wait()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	// Each order ends in exactly one of the outcomes the rules allow, its
	// payment agreeing with it; the audit counts units and money.
	rep, ok := c.WaitAudit(60 * time.Second)
	if !ok {
		t.Fatalf("audit failed after the races: %+v", rep)
	}
}
