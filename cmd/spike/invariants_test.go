package main

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

type userKeyT struct {
	user int64
	key  string
}

type acceptedOrder struct {
	user int64
	key  string
	qty  int64
}

// ledger is what buyers were told: every 202 and its order id.
type ledger struct {
	mu         sync.Mutex
	accepted   map[string]acceptedOrder // order id → what was asked
	byKey      map[userKeyT]string      // (user, key) → order id
	violations []string
}

func newLedger() *ledger {
	return &ledger{accepted: map[string]acceptedOrder{}, byKey: map[userKeyT]string{}}
}

// record notes a 202 and flags a key answered with two different orders.
func (l *ledger) record(user int64, key string, qty int64, p placed) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := userKeyT{user, key}
	if prev, ok := l.byKey[k]; ok && prev != p.OrderID {
		l.violations = append(l.violations, fmt.Sprintf("user %d key %s: order %s, then %s", user, key, prev, p.OrderID))
	}
	if p.Quantity != qty {
		l.violations = append(l.violations, fmt.Sprintf("user %d key %s: asked %d, got %d", user, key, qty, p.Quantity))
	}
	l.byKey[k] = p.OrderID
	l.accepted[p.OrderID] = acceptedOrder{user: user, key: key, qty: qty}
}

func (l *ledger) orderOf(user int64, key string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	id, ok := l.byKey[userKeyT{user, key}]
	return id, ok
}

// verifyInvariants checks I1–I5 from the outside once the stream drained:
// against what buyers were told, the orders they can read, their listings,
// the sale view and the server's own audit.
func verifyInvariants(t *testing.T, c *client, saleID string, stock, perUser int64, l *ledger, wantSoldOut bool) {
	t.Helper()
	rep := c.waitAudit(60e9)
	for _, ch := range rep.Checks {
		t.Logf("audit: %-20s ok=%v %s", ch.Name, ch.OK, ch.Detail)
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

	// The sale page lags the counters by up to 1 s (clustered: cached for
	// 500 ms): read it until it agrees, for a bounded time.
	var sv saleView
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		c.must("GET", "/v1/sales/"+saleID, "", nil, 200).decode(t, &sv)
		if sv.Sold == sold && sv.Remaining+sv.Sold == stock || time.Now().After(deadline) {
			break
		}
	}
	if sv.Sold != sold || sv.Remaining+sv.Sold != stock {
		t.Errorf("I4 conservation: sale says sold %d remaining %d of %d; buyers hold %d units", sv.Sold, sv.Remaining, stock, sold)
	}
	if wantSoldOut && (sv.Remaining != 0 || sv.State != "sold_out") {
		t.Errorf("sale should be sold out: %+v", sv)
	}

	// I2: every acknowledged order is persisted (created) and reads back as placed.
	ids := make([]string, 0, len(l.accepted))
	for id := range l.accepted {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var g errgroup.Group
	g.SetLimit(32)
	var mu sync.Mutex
	for _, id := range ids {
		a := l.accepted[id]
		g.Go(func() error {
			r, err := c.do(context.Background(), "GET", "/v1/orders/"+id, c.token(a.user, false), nil, nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil || r.status != 200 {
				t.Errorf("I2: order %s of user %d: status %d err %v %s", id, a.user, r.status, err, r.body)
				return nil
			}
			var o orderView
			r.decode(t, &o)
			if o.Status != "created" || o.UserID != a.user || o.Quantity != a.qty || o.SaleID != saleID || o.AmountCents != o.PriceCents*o.Quantity {
				t.Errorf("I2/I5: order %s reads %+v, want created, user %d, quantity %d", id, o, a.user, a.qty)
			}
			return nil
		})
	}
	g.Wait()

	// Listings: each buyer's orders, each exactly once across small pages.
	checked := 0
	for u, want := range perUserOrders {
		if checked == 50 {
			break
		}
		checked++
		got := listAll(t, c, u, 1+checked%3)
		sort.Strings(want)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("listing of user %d: got %v, want %v", u, got, want)
		}
	}
}

// listAll pages through a user's orders and returns their ids, sorted.
func listAll(t *testing.T, c *client, user int64, limit int) []string {
	t.Helper()
	tok := c.token(user, false)
	var ids []string
	seen := map[string]bool{}
	cursor := ""
	for pages := 0; pages < 1000; pages++ {
		var page struct {
			Orders     []orderView `json:"orders"`
			NextCursor string      `json:"next_cursor"`
		}
		c.must("GET", fmt.Sprintf("/v1/orders?limit=%d&cursor=%s", limit, url.QueryEscape(cursor)), tok, nil, 200).decode(t, &page)
		for _, o := range page.Orders {
			if seen[o.OrderID] {
				t.Errorf("listing of user %d: order %s twice", user, o.OrderID)
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
	t.Fatalf("listing of user %d never ended", user)
	return nil
}
