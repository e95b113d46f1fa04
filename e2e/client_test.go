package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/spikehq/spike/httpapi"
)

// client speaks the API the way an outside client would.
type client struct {
	t      testing.TB
	base   string
	secret []byte
	http   *http.Client

	mu     sync.Mutex
	tokens map[int64]string
}

func newClient(t testing.TB, addr string, secret []byte) *client {
	tr := &http.Transport{MaxIdleConns: 1000, MaxIdleConnsPerHost: 1000, IdleConnTimeout: 20 * time.Second} // below HAProxy's keep-alive timeout (30 s)
	t.Cleanup(tr.CloseIdleConnections)
	return &client{t: t, base: "http://" + addr, secret: secret, tokens: map[int64]string{},
		http: &http.Client{Transport: tr, Timeout: 20 * time.Second}}
}

func (c *client) token(user int64, admin bool) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := user
	if admin {
		k = -user
	}
	if tok, ok := c.tokens[k]; ok {
		return tok
	}
	tok, err := httpapi.Sign(c.secret, user, admin, time.Hour)
	if err != nil {
		c.t.Fatal(err)
	}
	c.tokens[k] = tok
	return tok
}

type apiResponse struct {
	status int
	body   []byte
	header http.Header
}

func (r apiResponse) code() string {
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	json.Unmarshal(r.body, &e)
	return e.Error.Code
}

func (r apiResponse) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// do sends a request; a transport error is returned, not fatal.
func (c *client) do(ctx context.Context, method, path, token string, body any, hdr map[string]string) (apiResponse, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewBufferString(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return apiResponse{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return apiResponse{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return apiResponse{}, err
	}
	return apiResponse{status: resp.StatusCode, body: b, header: resp.Header}, nil
}

// must sends a request, retrying transport errors and 502/503/504 for up
// to 30 s, and fails the test unless the final status is want.
func (c *client) must(method, path, token string, body any, want int) apiResponse {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := c.do(context.Background(), method, path, token, body, nil)
		transient := err != nil || r.status == 502 || r.status == 503 || r.status == 504
		if !transient || time.Now().After(deadline) {
			if err != nil {
				c.t.Fatalf("%s %s: %v", method, path, err)
			}
			if r.status != want {
				c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, want, r.body)
			}
			return r
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type placed struct {
	OrderID  string `json:"order_id"`
	SaleID   string `json:"sale_id"`
	Quantity int64  `json:"quantity"`
	Status   string `json:"status"`
}

func (c *client) place(ctx context.Context, user int64, saleID, key string, qty int64) (apiResponse, placed, error) {
	r, err := c.do(ctx, "POST", "/v1/sales/"+saleID+"/orders", c.token(user, false), fmt.Sprintf(`{"quantity":%d}`, qty), map[string]string{"Idempotency-Key": key})
	var p placed
	if err == nil && r.status == http.StatusAccepted {
		json.Unmarshal(r.body, &p)
	}
	return r, p, err
}

type orderView struct {
	OrderID     string `json:"order_id"`
	SaleID      string `json:"sale_id"`
	UserID      int64  `json:"user_id"`
	Quantity    int64  `json:"quantity"`
	PriceCents  int64  `json:"price_cents"`
	AmountCents int64  `json:"amount_cents"`
	Status      string `json:"status"`
}

type saleView struct {
	ID        string `json:"id"`
	Stock     int64  `json:"stock"`
	Remaining int64  `json:"remaining"`
	Sold      int64  `json:"sold"`
	State     string `json:"state"`
}

type auditReport struct {
	OK     bool `json:"ok"`
	Checks []struct {
		Name   string `json:"name"`
		OK     bool   `json:"ok"`
		Detail string `json:"detail"`
	} `json:"checks"`
}

// waitAudit polls base's audit until every invariant holds (the stream
// has drained) or timeout passes; it returns the last report and whether
// it passed.
func (c *client) waitAudit(timeout time.Duration) (auditReport, bool) {
	admin := c.token(1, true)
	deadline := time.Now().Add(timeout)
	var rep auditReport
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := c.do(ctx, "GET", "/v1/admin/audit", admin, nil, nil)
		cancel()
		if err == nil && r.status == 200 {
			rep = auditReport{}
			r.decode(c.t, &rep)
			if rep.OK {
				return rep, true
			}
		}
		if time.Now().After(deadline) {
			return rep, false
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// setupSale creates a product and a sale on it.
func (c *client) setupSale(sku, saleID string, stock, perUser int64) {
	c.t.Helper()
	admin := c.token(1, true)
	c.must("POST", "/v1/products", admin, map[string]any{"sku": sku, "name": "Item " + sku, "price_cents": 1999, "stock": stock * 2}, 201)
	c.must("POST", "/v1/sales", admin, map[string]any{"id": saleID, "sku": sku, "stock": stock, "price_cents": 999, "per_user_limit": perUser}, 201)
}

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

// record notes a 202 and flags a key answered with two different orders
// or an order id given for two different keys.
func (l *ledger) record(user int64, key string, qty int64, p placed) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := userKeyT{user, key}
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
	l.accepted[p.OrderID] = acceptedOrder{user: user, key: key, qty: qty}
}

func (l *ledger) units() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for _, a := range l.accepted {
		n += a.qty
	}
	return n
}

// verifyInvariants checks I1–I5 from the outside once the stream drained:
// against what buyers were told, the orders they can read, their
// listings, the sale view and the server's own audit. It reports whether
// every check passed.
func verifyInvariants(t *testing.T, c *client, saleID string, stock, perUser int64, l *ledger) {
	t.Helper()
	began := time.Now()
	rep, ok := c.waitAudit(2 * time.Minute)
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
	var sv saleView
	deadline := time.Now().Add(30 * time.Second)
	for {
		c.must("GET", "/v1/sales/"+saleID, "", nil, 200).decode(t, &sv)
		if sv.Sold == sold && sv.Remaining+sv.Sold == stock || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if sv.Sold != sold || sv.Remaining+sv.Sold != stock {
		t.Errorf("I4 conservation: sale says sold %d remaining %d of %d; buyers hold %d units", sv.Sold, sv.Remaining, stock, sold)
	}
	t.Logf("sale %s: %d of %d units acknowledged in %d orders, state %s", saleID, sold, stock, len(l.accepted), sv.State)

	// I2, I5: every acknowledged order reads back, through the load
	// balancer, to its buyer, as created and as placed.
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
			o, r, err := c.readOrder(id, a.user)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil || r.status != 200:
				bad++
				if bad <= 20 {
					t.Errorf("I2: order %s of user %d (key %s): status %d err %v %s", id, a.user, a.key, r.status, err, r.body)
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
		got := listAll(t, c, u, 1)
		sort.Strings(want)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("listing of user %d: got %v, want %v", u, got, want)
		}
	}
}

// readOrder reads an order as its buyer, waiting (bounded) while it is
// still pending or the call fails transiently.
func (c *client) readOrder(id string, user int64) (orderView, apiResponse, error) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := c.do(ctx, "GET", "/v1/orders/"+id, c.token(user, false), nil, nil)
		cancel()
		var o orderView
		if err == nil && r.status == 200 {
			json.Unmarshal(r.body, &o)
		}
		retry := err != nil || r.status >= 500 || r.status == 200 && o.Status == "pending"
		if !retry || time.Now().After(deadline) {
			return o, r, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// listAll pages through a user's orders and returns their ids, sorted.
func listAll(t *testing.T, c *client, user int64, limit int) []string {
	t.Helper()
	tok := c.token(user, false)
	var ids []string
	seen := map[string]bool{}
	cursor := ""
	for pages := 0; pages < 100; pages++ {
		var page struct {
			Orders     []orderView `json:"orders"`
			NextCursor string      `json:"next_cursor"`
		}
		c.must("GET", "/v1/orders?limit="+strconv.Itoa(limit)+"&cursor="+url.QueryEscape(cursor), tok, nil, 200).decode(t, &page)
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
