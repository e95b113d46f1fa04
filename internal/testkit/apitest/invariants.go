package apitest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

type userKey struct {
	user int64
	key  string
}

type accepted struct {
	user int64
	key  string
	qty  int64
}

// Ledger is what buyers were told: every 202 and its order id. It is safe
// for concurrent use.
type Ledger struct {
	mu         sync.Mutex
	accepted   map[string]accepted // order id → what was asked
	byKey      map[userKey]string  // (user, key) → order id
	violations []string
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{accepted: map[string]accepted{}, byKey: map[userKey]string{}}
}

// Record notes a 202 for user's key asking qty units, and flags a key
// answered with two different orders, an order id given for two different
// keys, or a quantity other than asked.
func (l *Ledger) Record(user int64, key string, qty int64, p Placed) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := userKey{user, key}
	if prev, ok := l.byKey[k]; ok && prev != p.OrderID {
		l.violations = append(l.violations, fmt.Sprintf("user %d key %s: order %s, then %s", user, key, prev, p.OrderID))
	}
	if a, ok := l.accepted[p.OrderID]; ok && (a.user != user || a.key != key) {
		l.violations = append(l.violations, fmt.Sprintf("order %s given to user %d key %s and to user %d key %s", p.OrderID, a.user, a.key, user, key))
	}
	if p.Quantity != qty {
		l.violations = append(l.violations, fmt.Sprintf("user %d key %s: asked %d, got %d", user, key, qty, p.Quantity))
	}
	l.byKey[k] = p.OrderID
	l.accepted[p.OrderID] = accepted{user: user, key: key, qty: qty}
}

// OrderOf returns the order id user's key was acknowledged with.
func (l *Ledger) OrderOf(user int64, key string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	id, ok := l.byKey[userKey{user, key}]
	return id, ok
}

// Units returns the units acknowledged in all.
func (l *Ledger) Units() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for _, a := range l.accepted {
		n += a.qty
	}
	return n
}

// VerifyInvariants checks I1–I5 from the outside once the load has
// stopped: waits for the server's own audit to pass (the stream drained),
// then checks what buyers were told (l) against the per-buyer limit, the
// sale view (polled: it lags by up to 1 s), every acknowledged order read
// back by its buyer, and the listings of some buyers. With wantSoldOut the
// sale must be sold out.
func VerifyInvariants(t *testing.T, c *Client, saleID string, stock, perUser int64, l *Ledger, wantSoldOut bool) {
	t.Helper()
	began := time.Now()
	rep, ok := c.WaitAudit(2 * time.Minute)
	for _, ch := range rep.Checks {
		t.Logf("audit: %-20s ok=%v %s", ch.Name, ch.OK, ch.Detail)
	}
	if !ok {
		t.Errorf("I1–I5: audit did not pass within 2m: %+v", rep)
	} else {
		t.Logf("audit ok %v after the load stopped", time.Since(began).Round(time.Millisecond))
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	for _, v := range l.violations {
		t.Errorf("I3 idempotency: %s", v)
	}
	var sold int64
	perUserUnits := map[int64]int64{}
	perUserOrders := map[int64][]string{}
	for id, a := range l.accepted {
		sold += a.qty
		perUserUnits[a.user] += a.qty
		perUserOrders[a.user] = append(perUserOrders[a.user], id)
	}
	if sold > stock {
		t.Errorf("I1 oversell: buyers were acknowledged %d units of %d", sold, stock)
	}
	for u, n := range perUserUnits {
		if n > perUser {
			t.Errorf("I3 limit: user %d holds %d units (limit %d)", u, n, perUser)
		}
	}

	// The sale view lags by at most 1 s: poll it (bounded).
	var sv SaleView
	deadline := time.Now().Add(30 * time.Second)
	for {
		c.Must("GET", "/v1/sales/"+saleID, "", nil, 200).Decode(t, &sv)
		if sv.Sold == sold && sv.Remaining+sv.Sold == stock || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if sv.Sold != sold || sv.Remaining+sv.Sold != stock {
		t.Errorf("I4 conservation: sale says sold %d remaining %d of %d; buyers hold %d units", sv.Sold, sv.Remaining, stock, sold)
	}
	if wantSoldOut && (sv.Remaining != 0 || sv.State != "sold_out") {
		t.Errorf("sale should be sold out: %+v", sv)
	}
	t.Logf("sale %s: %d of %d units acknowledged in %d orders, state %s", saleID, sold, stock, len(l.accepted), sv.State)

	// I2, I5: every acknowledged order reads back to its buyer, as created
	// and as placed.
	ids := make([]string, 0, len(l.accepted))
	for id := range l.accepted {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var g errgroup.Group
	g.SetLimit(16)
	var mu sync.Mutex
	var bad int
	for _, id := range ids {
		a := l.accepted[id]
		g.Go(func() error {
			o, r, err := c.ReadOrder(id, a.user)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil || r.Status != 200:
				bad++
				if bad <= 20 {
					t.Errorf("I2: order %s of user %d (key %s): status %d err %v %s", id, a.user, a.key, r.Status, err, r.Body)
				}
			case o.Status != "created" || o.UserID != a.user || o.Quantity != a.qty || o.SaleID != saleID || o.AmountCents != o.PriceCents*o.Quantity:
				bad++
				if bad <= 20 {
					t.Errorf("I2/I5: order %s reads %+v, want created, user %d, quantity %d", id, o, a.user, a.qty)
				}
			}
			return nil
		})
	}
	g.Wait()
	if bad > 20 {
		t.Errorf("... %d orders in all failed the read-back", bad)
	}

	// Listings: some buyers' orders, each exactly once across small pages.
	checked := 0
	for u, want := range perUserOrders {
		if checked == 30 {
			break
		}
		checked++
		got := c.ListAll(u, 1+checked%3)
		sort.Strings(want)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("listing of user %d: got %v, want %v", u, got, want)
		}
	}
}

// ReadOrder reads an order as its buyer, waiting (bounded) while it is
// still pending or the call fails transiently.
func (c *Client) ReadOrder(id string, user int64) (OrderView, Response, error) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := c.Do(ctx, "GET", "/v1/orders/"+id, c.Token(user, false), nil, nil)
		cancel()
		var o OrderView
		if err == nil && r.Status == 200 {
			json.Unmarshal(r.Body, &o)
		}
		// 429: the buyer's read limit (ratelimit.buyer_rps), as a client would.
		retry := err != nil || r.Status >= 500 || r.Status == 429 || r.Status == 200 && o.Status == "pending"
		if !retry || time.Now().After(deadline) {
			return o, r, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ListAll pages through user's orders, limit per page, and returns their
// ids, sorted; an order listed twice fails the test.
func (c *Client) ListAll(user int64, limit int) []string {
	c.t.Helper()
	tok := c.Token(user, false)
	var ids []string
	seen := map[string]bool{}
	cursor := ""
	for pages := 0; pages < 1000; pages++ {
		var page struct {
			Orders     []OrderView `json:"orders"`
			NextCursor string      `json:"next_cursor"`
		}
		path := "/v1/orders?limit=" + strconv.Itoa(limit) + "&cursor=" + url.QueryEscape(cursor)
		r, err := c.DoRetry(context.Background(), "GET", path, tok, nil, nil) // 429: the buyer's read limit
		if err != nil || r.Status != 200 {
			c.t.Fatalf("GET %s: %v %d %s", path, err, r.Status, r.Body)
		}
		r.Decode(c.t, &page)
		for _, o := range page.Orders {
			if seen[o.OrderID] {
				c.t.Errorf("listing of user %d: order %s twice", user, o.OrderID)
			}
			seen[o.OrderID] = true
			ids = append(ids, o.OrderID)
		}
		if page.NextCursor == "" {
			sort.Strings(ids)
			return ids
		}
		cursor = page.NextCursor
	}
	c.t.Fatalf("listing of user %d never ended", user)
	return nil
}

// Ack is an acknowledged placement.
type Ack struct {
	OrderID string
	User    int64
	Key     string
	Qty     int64
}

// Acks returns every acknowledged placement, in no order.
func (l *Ledger) Acks() []Ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	acks := make([]Ack, 0, len(l.accepted))
	for id, a := range l.accepted {
		acks = append(acks, Ack{OrderID: id, User: a.user, Key: a.key, Qty: a.qty})
	}
	return acks
}
