package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/testkit/apitest"

	"github.com/golang-jwt/jwt/v5"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/httpapi"
)

// apiCodes are the error codes API.md gives each status.
var apiCodes = map[int][]string{
	400: {"invalid"},
	401: {"unauthenticated"},
	403: {"forbidden"},
	404: {"not_found"},
	405: {"method_not_allowed"}, // what Spike adds (docs/api.md)
	409: {"conflict", "insufficient_stock", "sold_out", "limit_exceeded", "sale_not_active"},
	413: {"too_large"},
	429: {"rate_limited"},
	500: {"internal"},
	503: {"overloaded", "unavailable"},
}

// checkAPIError checks that r is an error in exactly the API's shape, with
// a code that belongs to its status and Retry-After on 429 and 503, and
// returns the code.
func checkAPIError(t *testing.T, r apitest.Response) string {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("status %d: Content-Type %q, want application/json", r.Status, ct)
	}
	var shape map[string]map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &shape); err != nil || len(shape) != 1 || shape["error"] == nil {
		t.Fatalf("status %d: body %q is not {\"error\":{\"code\",\"message\"}}: %v", r.Status, r.Body, err)
	}
	var code, msg string
	if err := json.Unmarshal(shape["error"]["code"], &code); err != nil || code == "" {
		t.Errorf("status %d: error code missing in %q", r.Status, r.Body)
	}
	if err := json.Unmarshal(shape["error"]["message"], &msg); err != nil || msg == "" {
		t.Errorf("status %d: error message missing in %q", r.Status, r.Body)
	}
	if len(shape["error"]) != 2 {
		t.Errorf("status %d: error object %q has more than code and message", r.Status, r.Body)
	}
	known := false
	for _, c := range apiCodes[r.Status] {
		known = known || c == code
	}
	if !known {
		t.Errorf("status %d with code %q; API.md uses %v for it", r.Status, code, apiCodes[r.Status])
	}
	if (r.Status == 429 || r.Status == 503) && r.Header.Get("Retry-After") == "" {
		t.Errorf("status %d without Retry-After", r.Status)
	}
	return code
}

// Tokens that must not authenticate.
func badTokens(t *testing.T, secret []byte) map[string]string {
	t.Helper()
	exp := time.Now().Add(time.Hour).Unix()
	sign := func(m jwt.SigningMethod, key any, c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(m, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	enc := base64.RawURLEncoding.EncodeToString
	expired, err := httpapi.Sign(secret, 5, true, -time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wrong, _ := httpapi.Sign([]byte("some-other-secret-some-other-sec"), 5, true, time.Hour)
	good, _ := httpapi.Sign(secret, 5, true, time.Hour)
	parts := strings.Split(good, ".")
	return map[string]string{
		"garbage":          "not-a-jwt",
		"expired":          expired,
		"wrongly signed":   wrong,
		"alg none":         enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(fmt.Appendf(nil, `{"sub":"5","exp":%d,"role":"admin"}`, exp)) + ".",
		"HS512":            sign(jwt.SigningMethodHS512, secret, jwt.MapClaims{"sub": "5", "exp": exp, "role": "admin"}),
		"missing exp":      sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "5", "role": "admin"}),
		"non-numeric sub":  sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": exp, "role": "admin"}),
		"negative sub":     sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "-5", "exp": exp, "role": "admin"}),
		"zero sub":         sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "0", "exp": exp, "role": "admin"}),
		"numeric JSON sub": sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": 5, "exp": exp, "role": "admin"}),
		"tampered claims":  parts[0] + "." + enc(fmt.Appendf(nil, `{"sub":"6","exp":%d,"role":"admin"}`, exp)) + "." + parts[2],
		"no signature":     parts[0] + "." + parts[1] + ".",
	}
}

type badCase struct {
	name   string
	method string
	path   string
	token  string
	body   any // nil, string or []byte
	hdr    map[string]string
	want   int
	code   string
}

func runBadCases(t *testing.T, c *client, cases []badCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			r, err := c.Do(context.Background(), tt.method, tt.path, tt.token, tt.body, tt.hdr)
			if err != nil {
				t.Fatalf("%s %s: %v", tt.method, tt.path, err)
			}
			if r.Status >= 500 {
				t.Fatalf("%s %s: 5xx for bad input: %d %s", tt.method, tt.path, r.Status, r.Body)
			}
			if r.Status != tt.want {
				t.Fatalf("%s %s: status %d, want %d: %s", tt.method, tt.path, r.Status, tt.want, r.Body)
			}
			if code := checkAPIError(t, r); code != tt.code {
				t.Errorf("%s %s: code %q, want %q (%s)", tt.method, tt.path, code, tt.code, r.Body)
			}
		})
	}
}

// TestBadInput is the bad-input battery against a real server:
// every request below gets its 4xx and API error code, never a 5xx.
func TestBadInput(t *testing.T) {
	a := startApp(t, t.TempDir())
	defer stopApp(t, a)
	c := newClient(t, a.addr, a.secret)
	admin := c.Token(1, true)
	buyer := c.Token(1001, false)
	other := c.Token(1002, false)

	c.Must("POST", "/v1/products", admin, map[string]any{"sku": "bi-sku", "name": "Battery", "price_cents": 1000, "stock": 1000}, 201)
	c.Must("POST", "/v1/products", admin, map[string]any{"sku": "bi-small", "name": "Small", "price_cents": 1000, "stock": 5}, 201)
	c.Must("POST", "/v1/sales", admin, map[string]any{"id": "bi-sale", "sku": "bi-sku", "stock": 100, "price_cents": 500, "per_user_limit": 2}, 201)
	c.Must("POST", "/v1/sales", admin, map[string]any{"id": "bi-dup", "sku": "bi-sku", "stock": 1, "price_cents": 500}, 201)
	c.Must("POST", "/v1/sales", admin, map[string]any{"id": "bi-later", "sku": "bi-sku", "stock": 1, "price_cents": 500,
		"starts_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}, 201)
	r, p, err := c.Place(context.Background(), 1001, buyer, "bi-sale", "bi-own", 1)
	if err != nil || r.Status != 202 {
		t.Fatalf("placing the buyer's order: %v %d %s", err, r.Status, r.Body)
	}
	// A key that got a 202 with quantity 1: reusing it with 2 is a conflict.
	const place = "/v1/sales/bi-sale/orders"
	key := func(k string) map[string]string { return map[string]string{"Idempotency-Key": k} }

	cases := []badCase{
		// Placement: body and quantity.
		{"malformed JSON", "POST", place, buyer, `{"quantity":`, key("b1"), 400, "invalid"},
		{"not JSON", "POST", place, buyer, `quantity=1`, key("b2"), 400, "invalid"},
		{"string quantity", "POST", place, buyer, `{"quantity":"1"}`, key("b3"), 400, "invalid"},
		{"float quantity", "POST", place, buyer, `{"quantity":1.5}`, key("b4"), 400, "invalid"},
		{"exponent quantity", "POST", place, buyer, `{"quantity":1e0}`, key("b4e"), 400, "invalid"},
		{"bool quantity", "POST", place, buyer, `{"quantity":true}`, key("b4b"), 400, "invalid"},
		{"quantity 0", "POST", place, buyer, `{"quantity":0}`, key("b5"), 400, "invalid"},
		{"quantity -1", "POST", place, buyer, `{"quantity":-1}`, key("b6"), 400, "invalid"},
		{"quantity > per_user_limit", "POST", place, buyer, `{"quantity":3}`, key("b7"), 400, "invalid"},
		{"quantity max int64", "POST", place, buyer, `{"quantity":9223372036854775807}`, key("b8"), 400, "invalid"},
		{"quantity beyond int64", "POST", place, buyer, `{"quantity":9223372036854775808}`, key("b9"), 400, "invalid"},
		{"quantity huge", "POST", place, buyer, `{"quantity":1e400}`, key("b10"), 400, "invalid"},
		{"quantity min int64", "POST", place, buyer, `{"quantity":-9223372036854775808}`, key("b11"), 400, "invalid"},
		{"trailing garbage", "POST", place, buyer, `{"quantity":1} garbage`, key("b12"), 400, "invalid"},
		{"two objects", "POST", place, buyer, `{"quantity":1}{"quantity":1}`, key("b13"), 400, "invalid"},
		{"JSON array", "POST", place, buyer, `[{"quantity":1}]`, key("b14"), 400, "invalid"},
		{"JSON string", "POST", place, buyer, `"quantity"`, key("b15"), 400, "invalid"},
		{"JSON number", "POST", place, buyer, `1`, key("b16"), 400, "invalid"},
		{"invalid UTF-8 in JSON", "POST", place, buyer, "{\"quantity\":1,\"x\":\"\xff\"", key("b17"), 400, "invalid"},
		// Placement: Idempotency-Key.
		{"missing Idempotency-Key", "POST", place, buyer, `{"quantity":1}`, nil, 400, "invalid"},
		{"Idempotency-Key of 129 chars", "POST", place, buyer, `{"quantity":1}`, key(strings.Repeat("k", 129)), 400, "invalid"},
		{"Idempotency-Key with a tab", "POST", place, buyer, `{"quantity":1}`, key("a\tb"), 400, "invalid"},
		{"Idempotency-Key with non-ASCII", "POST", place, buyer, `{"quantity":1}`, key("cl\u00e9"), 400, "invalid"},
		{"Idempotency-Key with high bytes", "POST", place, buyer, `{"quantity":1}`, key("k\x80\xff"), 400, "invalid"},
		// Placement: domain rejections.
		{"same key, other quantity", "POST", place, buyer, `{"quantity":2}`, key("bi-own"), 409, "conflict"},
		{"limit exceeded", "POST", place, buyer, `{"quantity":2}`, key("b18"), 409, "limit_exceeded"},
		{"sale not started", "POST", "/v1/sales/bi-later/orders", buyer, `{"quantity":1}`, key("b19"), 409, "sale_not_active"},
		{"unknown sale", "POST", "/v1/sales/no-such-sale/orders", buyer, `{"quantity":1}`, key("b20"), 404, "not_found"},
		{"invalid sale id", "POST", "/v1/sales/bad%21id/orders", buyer, `{"quantity":1}`, key("b21"), 404, "not_found"},
		{"sale id of 65 chars", "POST", "/v1/sales/" + strings.Repeat("s", 65) + "/orders", buyer, `{"quantity":1}`, key("b22"), 404, "not_found"},
		{"no token", "POST", place, "", `{"quantity":1}`, key("b23"), 401, "unauthenticated"},

		// Admin endpoints: empty and malformed bodies.
		{"create product, empty body", "POST", "/v1/products", admin, nil, nil, 400, "invalid"},
		{"create product, null", "POST", "/v1/products", admin, `null`, nil, 400, "invalid"},
		{"create product, array", "POST", "/v1/products", admin, `[]`, nil, 400, "invalid"},
		{"create product, trailing garbage", "POST", "/v1/products", admin, `{"sku":"p1","name":"n","price_cents":1,"stock":1}]`, nil, 400, "invalid"},
		{"create sale, empty body", "POST", "/v1/sales", admin, nil, nil, 400, "invalid"},
		{"create sale, malformed", "POST", "/v1/sales", admin, `{"id":`, nil, 400, "invalid"},
		{"update product, empty body", "PATCH", "/v1/products/bi-sku", admin, nil, nil, 400, "invalid"},
		{"update product, malformed", "PATCH", "/v1/products/bi-sku", admin, `{"name":}`, nil, 400, "invalid"},

		// Product validation.
		{"product name too long", "POST", "/v1/products", admin, prod("p-long", strings.Repeat("n", 201), 1, 1), nil, 400, "invalid"},
		{"product name empty", "POST", "/v1/products", admin, prod("p-empty", "", 1, 1), nil, 400, "invalid"},
		{"product negative price", "POST", "/v1/products", admin, prod("p-neg", "n", -1, 1), nil, 400, "invalid"},
		{"product negative stock", "POST", "/v1/products", admin, prod("p-negs", "n", 1, -1), nil, 400, "invalid"},
		{"product missing price", "POST", "/v1/products", admin, `{"sku":"p-nop","name":"n","stock":1}`, nil, 400, "invalid"},
		{"product string price", "POST", "/v1/products", admin, `{"sku":"p-sp","name":"n","price_cents":"1","stock":1}`, nil, 400, "invalid"},
		{"product float price", "POST", "/v1/products", admin, `{"sku":"p-fp","name":"n","price_cents":1.99,"stock":1}`, nil, 400, "invalid"},
		{"product price beyond int64", "POST", "/v1/products", admin, `{"sku":"p-bp","name":"n","price_cents":9223372036854775808,"stock":1}`, nil, 400, "invalid"},
		{"product stock beyond int64", "POST", "/v1/products", admin, `{"sku":"p-bs","name":"n","price_cents":1,"stock":1e19}`, nil, 400, "invalid"},
		{"product sku bad chars", "POST", "/v1/products", admin, prod("p/1", "n", 1, 1), nil, 400, "invalid"},
		{"product sku with space", "POST", "/v1/products", admin, prod("p 1", "n", 1, 1), nil, 400, "invalid"},
		{"product sku of 65 chars", "POST", "/v1/products", admin, prod(strings.Repeat("p", 65), "n", 1, 1), nil, 400, "invalid"},
		{"product sku empty", "POST", "/v1/products", admin, prod("", "n", 1, 1), nil, 400, "invalid"},
		{"product sku not a string", "POST", "/v1/products", admin, `{"sku":1,"name":"n","price_cents":1,"stock":1}`, nil, 400, "invalid"},
		{"product exists", "POST", "/v1/products", admin, prod("bi-sku", "n", 1, 1), nil, 409, "conflict"},
		{"update unknown product", "PATCH", "/v1/products/no-such-sku", admin, `{"name":"x"}`, nil, 404, "not_found"},
		{"update name too long", "PATCH", "/v1/products/bi-sku", admin, fmt.Sprintf(`{"name":%q}`, strings.Repeat("n", 201)), nil, 400, "invalid"},
		{"update negative price", "PATCH", "/v1/products/bi-sku", admin, `{"price_cents":-1}`, nil, 400, "invalid"},
		{"get unknown product", "GET", "/v1/products/no-such-sku", "", nil, nil, 404, "not_found"},
		{"get invalid sku", "GET", "/v1/products/bad%21sku", "", nil, nil, 404, "not_found"},

		// Sale validation.
		{"sale stock 0", "POST", "/v1/sales", admin, `{"id":"s-0","sku":"bi-sku","stock":0,"price_cents":1}`, nil, 400, "invalid"},
		{"sale stock missing", "POST", "/v1/sales", admin, `{"id":"s-m","sku":"bi-sku","price_cents":1}`, nil, 400, "invalid"},
		{"sale stock negative", "POST", "/v1/sales", admin, `{"id":"s-n","sku":"bi-sku","stock":-1,"price_cents":1}`, nil, 400, "invalid"},
		{"sale per_user_limit 0", "POST", "/v1/sales", admin, `{"id":"s-l0","sku":"bi-sku","stock":1,"price_cents":1,"per_user_limit":0}`, nil, 400, "invalid"},
		{"sale per_user_limit -1", "POST", "/v1/sales", admin, `{"id":"s-l1","sku":"bi-sku","stock":1,"price_cents":1,"per_user_limit":-1}`, nil, 400, "invalid"},
		{"sale per_user_limit float", "POST", "/v1/sales", admin, `{"id":"s-lf","sku":"bi-sku","stock":1,"price_cents":1,"per_user_limit":1.5}`, nil, 400, "invalid"},
		{"sale missing price", "POST", "/v1/sales", admin, `{"id":"s-p","sku":"bi-sku","stock":1}`, nil, 400, "invalid"},
		{"sale negative price", "POST", "/v1/sales", admin, `{"id":"s-np","sku":"bi-sku","stock":1,"price_cents":-1}`, nil, 400, "invalid"},
		{"sale ends before starts", "POST", "/v1/sales", admin, `{"id":"s-e","sku":"bi-sku","stock":1,"price_cents":1,"starts_at":"2030-01-02T00:00:00Z","ends_at":"2030-01-01T00:00:00Z"}`, nil, 400, "invalid"},
		{"sale ends at starts", "POST", "/v1/sales", admin, `{"id":"s-e2","sku":"bi-sku","stock":1,"price_cents":1,"starts_at":"2030-01-01T00:00:00Z","ends_at":"2030-01-01T00:00:00Z"}`, nil, 400, "invalid"},
		{"sale ends in the past (starts now)", "POST", "/v1/sales", admin, `{"id":"s-e3","sku":"bi-sku","stock":1,"price_cents":1,"ends_at":"2020-01-01T00:00:00Z"}`, nil, 400, "invalid"},
		{"sale time not RFC 3339", "POST", "/v1/sales", admin, `{"id":"s-t","sku":"bi-sku","stock":1,"price_cents":1,"starts_at":"2030-01-01"}`, nil, 400, "invalid"},
		{"sale time a number", "POST", "/v1/sales", admin, `{"id":"s-t2","sku":"bi-sku","stock":1,"price_cents":1,"starts_at":1700000000}`, nil, 400, "invalid"},
		{"sale bad id", "POST", "/v1/sales", admin, `{"id":"s 1","sku":"bi-sku","stock":1,"price_cents":1}`, nil, 400, "invalid"},
		{"sale id of 65 chars", "POST", "/v1/sales", admin, fmt.Sprintf(`{"id":%q,"sku":"bi-sku","stock":1,"price_cents":1}`, strings.Repeat("s", 65)), nil, 400, "invalid"},
		{"sale unknown sku", "POST", "/v1/sales", admin, `{"id":"s-u","sku":"no-such-sku","stock":1,"price_cents":1}`, nil, 404, "not_found"},
		{"sale insufficient stock", "POST", "/v1/sales", admin, `{"id":"s-i","sku":"bi-small","stock":6,"price_cents":1}`, nil, 409, "insufficient_stock"},
		{"sale duplicate id", "POST", "/v1/sales", admin, `{"id":"bi-dup","sku":"bi-sku","stock":1,"price_cents":1}`, nil, 409, "conflict"},
		{"get unknown sale", "GET", "/v1/sales/no-such-sale", "", nil, nil, 404, "not_found"},

		// Listing.
		{"limit 0", "GET", "/v1/orders?limit=0", buyer, nil, nil, 400, "invalid"},
		{"limit 101", "GET", "/v1/orders?limit=101", buyer, nil, nil, 400, "invalid"},
		{"limit abc", "GET", "/v1/orders?limit=abc", buyer, nil, nil, 400, "invalid"},
		{"limit -1", "GET", "/v1/orders?limit=-1", buyer, nil, nil, 400, "invalid"},
		{"limit 1.5", "GET", "/v1/orders?limit=1.5", buyer, nil, nil, 400, "invalid"},
		{"limit huge", "GET", "/v1/orders?limit=99999999999999999999", buyer, nil, nil, 400, "invalid"},
		{"garbage cursor", "GET", "/v1/orders?cursor=garbage!", buyer, nil, nil, 400, "invalid"},
		{"cursor of valid base64, wrong content", "GET", "/v1/orders?cursor=" + base64.RawURLEncoding.EncodeToString([]byte("hello")), buyer, nil, nil, 400, "invalid"},
		{"cursor negative time", "GET", "/v1/orders?cursor=" + base64.RawURLEncoding.EncodeToString([]byte("-5:x")), buyer, nil, nil, 400, "invalid"},
		{"cursor too long", "GET", "/v1/orders?cursor=" + strings.Repeat("A", 300), buyer, nil, nil, 400, "invalid"},

		// Orders.
		{"another buyer's order", "GET", "/v1/orders/" + p.OrderID, other, nil, nil, 404, "not_found"},
		{"unknown order", "GET", "/v1/orders/0000000000000000000000000Z", buyer, nil, nil, 404, "not_found"},
		{"order id of 65 chars", "GET", "/v1/orders/" + strings.Repeat("o", 65), buyer, nil, nil, 404, "not_found"},
		{"order without a token", "GET", "/v1/orders/" + p.OrderID, "", nil, nil, 401, "unauthenticated"},

		// Routing.
		{"unknown endpoint", "GET", "/v1/nope", "", nil, nil, 404, "not_found"},
		{"unknown method", "DELETE", "/v1/products/bi-sku", admin, nil, nil, 405, "method_not_allowed"},
	}

	// Bad tokens on a buyer endpoint, the hot path and an admin endpoint.
	for name, tok := range badTokens(t, a.secret) {
		cases = append(cases,
			badCase{"token " + name + " on listing", "GET", "/v1/orders", tok, nil, nil, 401, "unauthenticated"},
			badCase{"token " + name + " on placement", "POST", place, tok, `{"quantity":1}`, key("t-" + name), 401, "unauthenticated"},
			badCase{"token " + name + " on admin", "POST", "/v1/products", tok, prod("tok-"+strings.ReplaceAll(name, " ", "-"), "n", 1, 1), nil, 401, "unauthenticated"},
		)
	}
	for _, h := range []string{"Basic dXNlcjpwYXNz", "Bearer", "bearer " + buyer, "Bearer  " + buyer} {
		cases = append(cases, badCase{"Authorization " + strings.SplitN(h, " ", 2)[0] + fmt.Sprint(len(h)), "GET", "/v1/orders", "", nil, map[string]string{"Authorization": h}, 401, "unauthenticated"})
	}
	// A buyer on admin endpoints.
	cases = append(cases,
		badCase{"buyer creates a product", "POST", "/v1/products", buyer, prod("by-buyer", "n", 1, 1), nil, 403, "forbidden"},
		badCase{"buyer updates a product", "PATCH", "/v1/products/bi-sku", buyer, `{"price_cents":1}`, nil, 403, "forbidden"},
		badCase{"buyer creates a sale", "POST", "/v1/sales", buyer, `{"id":"by-buyer","sku":"bi-sku","stock":1,"price_cents":1}`, nil, 403, "forbidden"},
		badCase{"buyer reads the audit", "GET", "/v1/admin/audit", buyer, nil, nil, 403, "forbidden"},
	)
	runBadCases(t, c, cases)

	t.Run("nothing changed", func(t *testing.T) {
		var prodView struct {
			Name       string `json:"name"`
			PriceCents int64  `json:"price_cents"`
			Stock      int64  `json:"stock"`
		}
		c.Must("GET", "/v1/products/bi-sku", "", nil, 200).Decode(t, &prodView)
		if prodView.Name != "Battery" || prodView.PriceCents != 1000 || prodView.Stock != 1000-100-1-1 {
			t.Errorf("product after the battery: %+v", prodView)
		}
		for _, sku := range []string{"by-buyer", "p-long", "p-neg", "tok-alg-none", "tok-HS512"} {
			c.Must("GET", "/v1/products/"+sku, "", nil, 404)
		}
		c.Must("GET", "/v1/sales/by-buyer", "", nil, 404)
		var sv apitest.SaleView
		c.Must("GET", "/v1/sales/bi-sale", "", nil, 200).Decode(t, &sv)
		// Only the one order of setup was placed (remaining lags by at most 1 s).
		deadline := time.Now().Add(5 * time.Second)
		for sv.Remaining != 99 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			c.Must("GET", "/v1/sales/bi-sale", "", nil, 200).Decode(t, &sv)
		}
		if sv.Remaining != 99 || sv.Sold != 1 {
			t.Errorf("sale after the battery: %+v, want remaining 99, sold 1", sv)
		}
		// The buyer's order is still the buyer's.
		c.Must("GET", "/v1/orders/"+p.OrderID, buyer, nil, 200)
		c.WaitAudit(30 * time.Second)
	})
}

func prod(sku, name string, price, stock int64) string {
	b, _ := json.Marshal(map[string]any{"sku": sku, "name": name, "price_cents": price, "stock": stock})
	return string(b)
}

// TestBadInputTooLarge sends bodies over 1 MiB, with a Content-Length and
// chunked without one, to the hot path and to an admin endpoint.
func TestBadInputTooLarge(t *testing.T) {
	a := startApp(t, t.TempDir())
	defer stopApp(t, a)
	c := newClient(t, a.addr, a.secret)
	admin := c.Token(1, true)
	buyer := c.Token(1001, false)
	c.SetupSale("tl-sku", "tl-sale", 10, 2)

	big := []byte(`{"quantity":1,"pad":"` + strings.Repeat("x", httpapi.MaxBodyBytes) + `"}`)
	for _, tt := range []struct {
		name, path, token string
		chunked           bool
	}{
		{"placement with Content-Length", "/v1/sales/tl-sale/orders", buyer, false},
		{"placement chunked", "/v1/sales/tl-sale/orders", buyer, true},
		{"create product with Content-Length", "/v1/products", admin, false},
		{"create product chunked", "/v1/products", admin, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader = bytes.NewReader(big)
			if tt.chunked {
				body = io.MultiReader(bytes.NewReader(big)) // unknown length: chunked
			}
			req, _ := http.NewRequest("POST", c.Base+tt.path, body)
			req.Header.Set("Authorization", "Bearer "+tt.token)
			req.Header.Set("Idempotency-Key", "big-"+tt.name)
			resp, err := c.HTTP.Do(req)
			if err != nil {
				t.Fatalf("POST %s: %v", tt.path, err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if tt.chunked != (req.ContentLength <= 0) {
				t.Fatalf("request ContentLength %d, chunked %v", req.ContentLength, tt.chunked)
			}
			r := apitest.Response{Status: resp.StatusCode, Body: b, Header: resp.Header}
			if r.Status != 413 {
				t.Fatalf("status %d, want 413: %s", r.Status, b)
			}
			if code := checkAPIError(t, r); code != "too_large" {
				t.Errorf("code %q, want too_large", code)
			}
		})
	}
	// Exactly 1 MiB is accepted (whitespace after the object).
	exact := []byte(`{"quantity":1}`)
	exact = append(exact, bytes.Repeat([]byte(" "), httpapi.MaxBodyBytes-len(exact))...)
	r, err := c.Do(context.Background(), "POST", "/v1/sales/tl-sale/orders", buyer, exact, map[string]string{"Idempotency-Key": "exact"})
	if err != nil || r.Status != 202 {
		t.Fatalf("1 MiB body: %v %d %s", err, r.Status, r.Body)
	}
	// Nothing was placed by the rejected requests.
	var sv apitest.SaleView
	c.Must("GET", "/v1/sales/tl-sale", "", nil, 200).Decode(t, &sv)
	if sv.Remaining != 9 {
		t.Errorf("remaining %d after one placement, want 9", sv.Remaining)
	}
}

// TestHugePriceAmount: amount_cents = price_cents × quantity must not
// overflow into a negative amount for prices the API accepts.
func TestHugePriceAmount(t *testing.T) {
	a := startApp(t, t.TempDir())
	defer stopApp(t, a)
	c := newClient(t, a.addr, a.secret)
	admin := c.Token(1, true)
	// Prices past spike.MaxPriceCents are refused up front.
	r := c.Must("POST", "/v1/products", admin, map[string]any{"sku": "hp0", "name": "Huge", "price_cents": int64(9223372036854775807), "stock": 10}, 400)
	checkAPIError(t, r)
	c.Must("PATCH", "/v1/products/hp0", admin, map[string]any{"price_cents": int64(spike.MaxPriceCents + 1)}, 400)
	// The largest price and the largest quantity still make an exact amount.
	const price = spike.MaxPriceCents
	c.Must("POST", "/v1/products", admin, map[string]any{"sku": "hp", "name": "Huge", "price_cents": int64(price), "stock": 10}, 201)
	c.Must("POST", "/v1/sales", admin, map[string]any{"id": "hp", "sku": "hp", "stock": 10, "price_cents": int64(price) + 1, "per_user_limit": 2}, 400)
	c.Must("POST", "/v1/sales", admin, map[string]any{"id": "hp", "sku": "hp", "stock": 10, "price_cents": int64(price), "per_user_limit": 2}, 201)
	tok := c.Token(5, false)
	rp, p, err := c.Place(context.Background(), 5, tok, "hp", "k", 2)
	if err != nil {
		t.Fatal(err)
	}
	if rp.Status != 202 {
		checkAPIError(t, rp) // rejecting the placement cleanly is a fix too
		return
	}
	var o apitest.OrderView
	c.Must("GET", "/v1/orders/"+p.OrderID, tok, nil, 200).Decode(t, &o)
	if o.AmountCents != 2*spike.MaxPriceCents || o.PriceCents != spike.MaxPriceCents {
		t.Errorf("order %+v: amount_cents %d is not price_cents × quantity", o, o.AmountCents)
	}
}

// TestSlowClientHeaders: a client that trickles its headers is cut off by
// the server (ReadHeaderTimeout) rather than holding a connection forever.
func TestSlowClientHeaders(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the server's read header timeout (5s)")
	}
	t.Parallel()
	a := startApp(t, t.TempDir())
	defer stopApp(t, a)
	conn, err := net.Dial("tcp", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: spike\r\n"); err != nil {
			return
		}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
			if _, err := fmt.Fprintf(conn, "X-Slow-%d: a\r\n", i); err != nil {
				return // the server closed the connection
			}
		}
	}()
	expectClosed(t, conn, 20*time.Second)
}

// TestSlowClientBody: a client that sends its headers and then trickles
// the body is answered or cut off (ReadTimeout), not waited for forever.
func TestSlowClientBody(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the server's read timeout")
	}
	t.Parallel()
	a := startApp(t, t.TempDir())
	defer stopApp(t, a)
	c := newClient(t, a.addr, a.secret)
	c.SetupSale("slow-sku", "slow-sale", 10, 2)
	conn, err := net.Dial("tcp", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		fmt.Fprintf(conn, "POST /v1/sales/slow-sale/orders HTTP/1.1\r\nHost: spike\r\nAuthorization: Bearer %s\r\n"+
			"Idempotency-Key: slow\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", c.Token(7, false))
		for {
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
			if _, err := io.WriteString(conn, " "); err != nil {
				return
			}
		}
	}()
	// The server may answer (4xx, never 5xx) before closing.
	conn.SetReadDeadline(time.Now().Add(45 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("slow body answered %d: %s", resp.StatusCode, b)
		}
	} else if isTimeout(err) {
		t.Fatalf("the server held a slow-body connection for 45s")
	}
	expectClosed(t, conn, 45*time.Second)
}

// expectClosed reads until the server closes conn, failing if that takes
// longer than limit.
func expectClosed(t *testing.T, conn net.Conn, limit time.Duration) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(limit))
	_, err := io.Copy(io.Discard, conn)
	if isTimeout(err) {
		t.Fatalf("the server kept a slow client's connection open for %v", limit)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
