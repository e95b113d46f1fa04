package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/spikehq/spike/httpapi"
)

// client speaks the API the way an outside client would.
type client struct {
	t      testing.TB
	base   string
	secret []byte
	http   *http.Client
}

func newClient(t testing.TB, addr string, secret []byte) *client {
	tr := &http.Transport{MaxIdleConns: 2000, MaxIdleConnsPerHost: 2000, IdleConnTimeout: 30 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{t: t, base: "http://" + addr, secret: secret, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (c *client) token(user int64, admin bool) string {
	tok, err := httpapi.Sign(c.secret, user, admin, time.Hour)
	if err != nil {
		c.t.Fatal(err)
	}
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
	case []byte:
		rd = bytes.NewReader(b)
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

// must sends a request and fails the test unless the status is want.
func (c *client) must(method, path, token string, body any, want int) apiResponse {
	c.t.Helper()
	r, err := c.do(context.Background(), method, path, token, body, nil)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	if r.status != want {
		c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, want, r.body)
	}
	return r
}

type placed struct {
	OrderID  string `json:"order_id"`
	SaleID   string `json:"sale_id"`
	Quantity int64  `json:"quantity"`
	Status   string `json:"status"`
}

func (c *client) place(ctx context.Context, user int64, tok, saleID, key string, qty int64) (apiResponse, placed, error) {
	r, err := c.do(ctx, "POST", "/v1/sales/"+saleID+"/orders", tok, fmt.Sprintf(`{"quantity":%d}`, qty), map[string]string{"Idempotency-Key": key})
	var p placed
	if err == nil && r.status == http.StatusAccepted {
		json.Unmarshal(r.body, &p)
	}
	return r, p, err
}

type orderView struct {
	OrderID     string    `json:"order_id"`
	SaleID      string    `json:"sale_id"`
	SKU         string    `json:"sku"`
	UserID      int64     `json:"user_id"`
	Quantity    int64     `json:"quantity"`
	PriceCents  int64     `json:"price_cents"`
	AmountCents int64     `json:"amount_cents"`
	Status      string    `json:"status"`
	CreatedAt   time.Time `json:"created_at"`
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

// waitAudit polls the audit until every invariant holds (the stream has
// drained) or the deadline passes, and returns the last report.
func (c *client) waitAudit(timeout time.Duration) auditReport {
	c.t.Helper()
	admin := c.token(1, true)
	deadline := time.Now().Add(timeout)
	var rep auditReport
	for {
		r, err := c.do(context.Background(), "GET", "/v1/admin/audit", admin, nil, nil)
		if err == nil && r.status == 200 {
			rep = auditReport{}
			r.decode(c.t, &rep)
			if rep.OK {
				return rep
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("audit did not pass within %v: %+v (err %v)", timeout, rep, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// setupSale creates a product and a sale on it.
func (c *client) setupSale(sku, saleID string, stock, perUser int64) {
	c.t.Helper()
	admin := c.token(1, true)
	c.must("POST", "/v1/products", admin, map[string]any{"sku": sku, "name": "Item " + sku, "price_cents": 1999, "stock": stock * 2}, 201)
	c.must("POST", "/v1/sales", admin, map[string]any{"id": saleID, "sku": sku, "stock": stock, "price_cents": 999, "per_user_limit": perUser}, 201)
}

func userKey(user int64, n int) string {
	return "u" + strconv.FormatInt(user, 10) + "-k" + strconv.Itoa(n)
}
