// Package apitest speaks Spike's HTTP API (docs/api.md) the way an
// outside client does, for the tests that run buyers against a real
// server: cmd/spike's (one process) and e2e's (a cluster behind HAProxy).
// It also keeps what buyers were told (Ledger) and checks invariants I1–I5
// against it from the outside (VerifyInvariants).
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/httpapi"
)

// Client is an API client bound to a test.
type Client struct {
	// Base is the server's URL, e.g. http://127.0.0.1:8080.
	Base string
	// HTTP sends the requests; tests may use it for raw requests.
	HTTP *http.Client
	// RetryTransient makes Must retry transport errors and 502/503/504
	// (other than the status wanted) for up to 30 s: for a cluster whose
	// instances come and go.
	RetryTransient bool

	t      testing.TB
	secret []byte
	mu     sync.Mutex
	tokens map[int64]string // user → token; admins under -user
	spec   *specTransport   // checks every answer against api/openapi.yaml
}

// NewClient returns a client of the server at addr (host:port) whose
// tokens are signed with secret. Every answer it receives, through Do or
// raw requests on HTTP, is checked against api/openapi.yaml; the test fails
// at its end if any departs from it.
func NewClient(t testing.TB, addr string, secret []byte) *Client {
	// Idle connections are closed before HAProxy's 30 s keep-alive timeout
	// (e2e), so that no request goes out on a connection being closed.
	tr := &http.Transport{MaxIdleConns: 2000, MaxIdleConnsPerHost: 2000, IdleConnTimeout: 20 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	spec := checkedTransport(t, tr)
	return &Client{Base: "http://" + addr, HTTP: &http.Client{Transport: spec, Timeout: 30 * time.Second},
		t: t, secret: secret, tokens: map[int64]string{}, spec: spec}
}

// BehindProxy says that the server is reached through a load balancer
// (e2e's HAProxy): the balancer's own answers when no instance answers
// (502, 503 and 504 that are not JSON) are not Spike's, and are not
// checked against api/openapi.yaml.
func (c *Client) BehindProxy() { c.spec.proxied.Store(true) }

// Token returns a token for user (an admin's if admin), valid for an hour.
func (c *Client) Token(user int64, admin bool) string {
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

// Response is an answer of the API.
type Response struct {
	Status int
	Body   []byte
	Header http.Header
}

// Code returns the API error code of an error answer ("" for none).
func (r Response) Code() string {
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	json.Unmarshal(r.Body, &e)
	return e.Error.Code
}

// Decode unmarshals the body into v or fails the test.
func (r Response) Decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Do sends a request: body is sent as is if a string or []byte, as JSON
// otherwise. A transport error is returned, not fatal.
func (c *Client) Do(ctx context.Context, method, path, token string, body any, hdr map[string]string) (Response, error) {
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
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return Response{}, err
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
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return Response{}, err
	}
	return Response{Status: resp.StatusCode, Body: b, Header: resp.Header}, nil
}

// Must sends a request and fails the test unless the status is want
// (after retries: of 429 always, of transient failures with
// RetryTransient).
func (c *Client) Must(method, path, token string, body any, want int) Response {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := c.Do(context.Background(), method, path, token, body, nil)
		transient := err != nil || r.Status != want && (r.Status == 502 || r.Status == 503 || r.Status == 504)
		// A 429 (a rate limit: nothing was done) is retried as a client
		// would, unless it is what the test wants.
		limited := err == nil && r.Status == 429 && want != 429
		if !limited && (!c.RetryTransient || !transient) || time.Now().After(deadline) {
			if err != nil {
				c.t.Fatalf("%s %s: %v", method, path, err)
			}
			if r.Status != want {
				c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.Status, want, r.Body)
			}
			return r
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Placed is the answer to an accepted placement.
type Placed struct {
	OrderID  string `json:"order_id"`
	SaleID   string `json:"sale_id"`
	Quantity int64  `json:"quantity"`
	Status   string `json:"status"`
}

// Place places an order of qty units of saleID with token tok (user's)
// and Idempotency-Key key; p is set on a 202.
func (c *Client) Place(ctx context.Context, user int64, tok, saleID, key string, qty int64) (r Response, p Placed, err error) {
	r, err = c.Do(ctx, "POST", "/v1/sales/"+saleID+"/orders", tok, fmt.Sprintf(`{"quantity":%d}`, qty), map[string]string{"Idempotency-Key": key})
	if err == nil && r.Status == http.StatusAccepted {
		json.Unmarshal(r.Body, &p)
	}
	return r, p, err
}

// OrderView is an order as GET /v1/orders/{id} shows it.
type OrderView struct {
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

// SaleView is a sale as GET /v1/sales/{id} shows it.
type SaleView struct {
	ID        string `json:"id"`
	Stock     int64  `json:"stock"`
	Remaining int64  `json:"remaining"`
	Sold      int64  `json:"sold"`
	State     string `json:"state"`
}

// AuditReport is the answer of GET /v1/admin/audit.
type AuditReport struct {
	OK     bool `json:"ok"`
	Checks []struct {
		Name   string `json:"name"`
		OK     bool   `json:"ok"`
		Detail string `json:"detail"`
	} `json:"checks"`
}

// WaitAudit polls the audit until every invariant holds (the stream has
// drained) or timeout passes; it returns the last report and whether it
// passed.
func (c *Client) WaitAudit(timeout time.Duration) (AuditReport, bool) {
	admin := c.Token(1, true)
	deadline := time.Now().Add(timeout)
	var rep AuditReport
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := c.Do(ctx, "GET", "/v1/admin/audit", admin, nil, nil)
		cancel()
		if err == nil && r.Status == 200 {
			rep = AuditReport{}
			r.Decode(c.t, &rep)
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

// SetupSale creates a product (with twice the stock) and a sale of stock
// units on it, at most perUser per buyer.
func (c *Client) SetupSale(sku, saleID string, stock, perUser int64) {
	c.t.Helper()
	admin := c.Token(1, true)
	c.Must("POST", "/v1/products", admin, map[string]any{"sku": sku, "name": "Item " + sku, "price_cents": 1999, "stock": stock * 2}, 201)
	c.Must("POST", "/v1/sales", admin, map[string]any{"id": saleID, "sku": sku, "stock": stock, "price_cents": 999, "per_user_limit": perUser}, 201)
}
