package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spikehq/spike/internal/httpapi"
	"github.com/spikehq/spike/internal/switches"
)

// limitedServer is newStack's server with the switches' route limits,
// trusted proxies and probes.
func limitedServer(t *testing.T, board *switches.Board, trusted []string, probes []httpapi.Probe, metrics httpapi.MetricsMode) *httpapi.Server {
	t.Helper()
	st := newStack(t)
	prefixes, err := httpapi.ParseTrustedProxies(trusted)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.srv.Config
	cfg.Registry = prometheus.NewRegistry()
	cfg.Guards = &httpapi.Guards{Switches: board}
	cfg.TrustedProxies = prefixes
	cfg.Probes = probes
	cfg.Metrics = metrics
	return httpapi.New(cfg)
}

// slow sets a limit to one token per 1000 s after burst: the burst is all
// a test's loop gets, however slow the machine.
func slow(t *testing.T, b *switches.Board, rate, burst string, n int) {
	t.Helper()
	if err := b.Apply(rate, "0.001"); err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(burst, strconv.Itoa(n)); err != nil {
		t.Fatal(err)
	}
}

type call struct {
	method, path, token, peer string
	header                    map[string]string
}

func (c call) do(srv http.Handler) *httptest.ResponseRecorder {
	var body io.Reader
	if c.method == "POST" {
		body = strings.NewReader(`{"sku":"sku-lim-` + strconv.FormatInt(time.Now().UnixNano(), 36) + `","name":"L","price_cents":1,"stock":1}`)
	}
	req := httptest.NewRequest(c.method, c.path, body)
	req.RemoteAddr = c.peer
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	return rec
}

// untilLimited sends c until it is answered 429 (at most max times) and
// returns how many were let through; a 429 must be rate_limited with a
// Retry-After of whole seconds.
func untilLimited(t *testing.T, srv http.Handler, c call, max int) int {
	t.Helper()
	for i := range max {
		rec := c.do(srv)
		if rec.Code != http.StatusTooManyRequests {
			continue
		}
		if code := checkErrorBody(t, rec.Code, rec.Header(), rec.Body.Bytes()); code != "rate_limited" {
			t.Errorf("%s %s: 429 %s", c.method, c.path, code)
		}
		if s, err := strconv.Atoi(rec.Header().Get("Retry-After")); err != nil || s < 1 {
			t.Errorf("%s %s: Retry-After %q, want whole seconds >= 1", c.method, c.path, rec.Header().Get("Retry-After"))
		}
		return i
	}
	t.Fatalf("%s %s: %d requests without a 429", c.method, c.path, max)
	return 0
}

func wantStatus(t *testing.T, srv http.Handler, c call, want int) {
	t.Helper()
	if rec := c.do(srv); rec.Code != want {
		t.Errorf("%s %s (peer %s, %v): %d %s, want %d", c.method, c.path, c.peer, c.header, rec.Code, rec.Body, want)
	}
}

// TestBuyerReadLimit: a buyer reading orders in a loop gets 429 with
// Retry-After after the burst; another buyer is unaffected; changing the
// switch takes effect at once.
func TestBuyerReadLimit(t *testing.T) {
	board := switches.New(switches.Defs)
	srv := limitedServer(t, board, nil, nil, httpapi.MetricsPublic)
	slow(t, board, switches.BuyerRate, switches.BuyerBurst, 5)
	reader := call{method: "GET", path: "/v1/orders?limit=100", token: buyerToken(t, 7), peer: "192.0.2.1:1000"}
	if n := untilLimited(t, srv, reader, 100); n != 5 {
		t.Errorf("%d reads let through, want the burst of 5", n)
	}
	wantStatus(t, srv, call{method: "GET", path: "/v1/orders/nope", token: buyerToken(t, 7), peer: "192.0.2.1:1000"}, 429)
	wantStatus(t, srv, call{method: "GET", path: "/v1/orders?limit=100", token: buyerToken(t, 8), peer: "192.0.2.1:1000"}, 200)

	if err := board.Apply(switches.BuyerRate, "0"); err != nil { // unlimited
		t.Fatal(err)
	}
	for range 20 {
		wantStatus(t, srv, reader, 200)
	}
	// Placements keep their own limit (ratelimit.user_rps), not this one.
	slow(t, board, switches.BuyerRate, switches.BuyerBurst, 1)
	wantStatus(t, srv, reader, 200)
	wantStatus(t, srv, reader, 429)
	place := call{method: "POST", path: "/v1/sales/fz/orders", token: buyerToken(t, 7), peer: "192.0.2.1:1000", header: map[string]string{"Idempotency-Key": "lim-1"}}
	req := httptest.NewRequest("POST", place.path, strings.NewReader(`{"quantity":1}`))
	req.Header.Set("Authorization", "Bearer "+place.token)
	req.Header.Set("Idempotency-Key", "lim-1")
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted {
		t.Errorf("placement after the buyer's reads were limited: %d %s, want 202", rec.Code, rec.Body)
	}
}

// TestAnonymousIPLimit: an anonymous flood from one address gets 429;
// another address is unaffected; refused tokens count on the address;
// /healthz is never limited.
func TestAnonymousIPLimit(t *testing.T) {
	board := switches.New(switches.Defs)
	srv := limitedServer(t, board, nil, nil, httpapi.MetricsPublic)
	slow(t, board, switches.IPRate, switches.IPBurst, 3)
	flood := call{method: "GET", path: "/v1/products/sku-fz", peer: "192.0.2.1:1000"}
	if n := untilLimited(t, srv, flood, 100); n != 3 {
		t.Errorf("%d reads let through, want the burst of 3", n)
	}
	wantStatus(t, srv, call{method: "GET", path: "/v1/sales/fz", peer: "192.0.2.1:2000"}, 429) // the same address, another port
	wantStatus(t, srv, call{method: "GET", path: "/v1/products/sku-fz", peer: "192.0.2.2:1000"}, 200)
	wantStatus(t, srv, call{method: "GET", path: "/healthz", peer: "192.0.2.1:1000"}, 200)
	// A bad token from the limited address: 429, not a free guess.
	wantStatus(t, srv, call{method: "GET", path: "/v1/orders", token: "garbage", peer: "192.0.2.1:1000"}, 429)
	wantStatus(t, srv, call{method: "GET", path: "/v1/orders", token: "garbage", peer: "192.0.2.3:1000"}, 401)
	// IPv6: one /64 is one client.
	v6 := call{method: "GET", path: "/v1/products/sku-fz", peer: "[2001:db8:1:2::1]:1000"}
	untilLimited(t, srv, v6, 100)
	wantStatus(t, srv, call{method: "GET", path: "/v1/products/sku-fz", peer: "[2001:db8:1:2:ffff::9]:1000"}, 429)
	wantStatus(t, srv, call{method: "GET", path: "/v1/products/sku-fz", peer: "[2001:db8:1:3::1]:1000"}, 200)

	if err := board.Apply(switches.IPRate, "0"); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, srv, flood, 200)
	if n := rejections(t, srv, "ip_rate"); n < 5 {
		t.Errorf("spike_guard_rejections_total{guard=\"ip_rate\"} = %v, want the 5 refusals at least", n)
	}
}

// rejections reads spike_guard_rejections_total{guard} off srv's metrics.
func rejections(t *testing.T, srv *httpapi.Server, guard string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	srv.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	prefix := `spike_guard_rejections_total{guard="` + guard + `"} `
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// TestForwardedFor: X-Forwarded-For names the client only when the peer
// is a trusted proxy, and then only its last untrusted hop.
func TestForwardedFor(t *testing.T) {
	board := switches.New(switches.Defs)
	srv := limitedServer(t, board, []string{"10.0.0.0/8", "::1"}, nil, httpapi.MetricsPublic)
	slow(t, board, switches.IPRate, switches.IPBurst, 2)
	get := func(peer, xff string) call {
		return call{method: "GET", path: "/v1/sales/fz", peer: peer, header: map[string]string{"X-Forwarded-For": xff}}
	}
	// Untrusted peer: a new forged address per request changes nothing.
	for i := range 2 {
		wantStatus(t, srv, get("192.0.2.9:1", "198.51.100."+strconv.Itoa(i)), 200)
	}
	wantStatus(t, srv, get("192.0.2.9:1", "198.51.100.77"), 429)

	// Trusted proxy: each client has its own budget, not the proxy's.
	untilLimited(t, srv, get("10.1.2.3:5000", "198.51.100.1"), 10)
	wantStatus(t, srv, get("10.1.2.3:5000", "198.51.100.2"), 200)
	wantStatus(t, srv, get("10.9.9.9:5000", "198.51.100.1"), 429) // another proxy, the same client
	// What the client wrote before the proxy's hop is not believed.
	wantStatus(t, srv, get("10.1.2.3:5000", "203.0.113.50, 198.51.100.1"), 429)
	// Proxies chained: skip every trusted hop.
	wantStatus(t, srv, get("[::1]:5000", "198.51.100.3, 10.0.0.7"), 200)
	wantStatus(t, srv, get("[::1]:5000", "198.51.100.3, 10.0.0.7"), 200)
	wantStatus(t, srv, get("10.1.2.3:5000", "198.51.100.3"), 429)
	// A malformed hop: the address before it is not trusted either.
	wantStatus(t, srv, get("10.1.2.3:5000", "198.51.100.4, junk"), 200)
	wantStatus(t, srv, get("10.1.2.3:5000", "198.51.100.4, junk"), 200)
	wantStatus(t, srv, get("10.1.2.3:5000", "198.51.100.5, junk"), 429) // keyed by the proxy
}

// TestAdminLimit: admin requests are limited per admin.
func TestAdminLimit(t *testing.T) {
	board := switches.New(switches.Defs)
	srv := limitedServer(t, board, nil, nil, httpapi.MetricsPublic)
	slow(t, board, switches.AdminRate, switches.AdminBurst, 4)
	admin1, err := httpapi.Sign(testSecret, 1, true, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	admin2, err := httpapi.Sign(testSecret, 2, true, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	write := call{method: "POST", path: "/v1/products", token: admin1, peer: "192.0.2.1:1"}
	if n := untilLimited(t, srv, write, 100); n != 4 {
		t.Errorf("%d admin writes let through, want the burst of 4", n)
	}
	wantStatus(t, srv, call{method: "GET", path: "/v1/admin/switches", token: admin1, peer: "192.0.2.1:1"}, 429)
	wantStatus(t, srv, call{method: "POST", path: "/v1/products", token: admin2, peer: "192.0.2.1:1"}, 201)
	// A buyer's limit is its own: admins do not spend it.
	wantStatus(t, srv, call{method: "GET", path: "/v1/orders", token: buyerToken(t, 1), peer: "192.0.2.1:1"}, 200)
}

type readyAnswer struct {
	Status  string   `json:"status"`
	Failed  []string `json:"failed"`
	Checked []string `json:"checked"`
}

// TestReadyzNamesTheFailedDependency: /readyz checks every probe and
// names those that failed, without their errors' text.
func TestReadyzNamesTheFailedDependency(t *testing.T) {
	var redisErr error
	probes := []httpapi.Probe{
		{Name: "mysql", Check: func(context.Context) error { return nil }},
		{Name: "redis", Check: func(context.Context) error { return redisErr }},
		{Name: "nats", Check: func(ctx context.Context) error { return nil }},
	}
	srv := limitedServer(t, switches.New(switches.Defs), nil, probes, httpapi.MetricsPublic)
	get := func() (int, readyAnswer, string) {
		rec := call{method: "GET", path: "/readyz", peer: "192.0.2.1:1"}.do(srv)
		var a readyAnswer
		if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
			t.Fatalf("readyz body %q: %v", rec.Body, err)
		}
		return rec.Code, a, rec.Body.String()
	}
	if code, a, body := get(); code != 200 || a.Status != "ready" || len(a.Failed) != 0 || len(a.Checked) != 3 {
		t.Errorf("all up: %d %s", code, body)
	}
	redisErr = errors.New("dial tcp 10.0.0.5:6379: connect: connection refused (user secret-user)")
	code, a, body := get()
	if code != 503 || a.Status != "unavailable" || strings.Join(a.Failed, ",") != "redis" {
		t.Errorf("redis down: %d %s, want 503 naming redis", code, body)
	}
	if strings.Contains(body, "10.0.0.5") || strings.Contains(body, "secret-user") || strings.Contains(body, "refused") {
		t.Errorf("readyz shows the raw error: %s", body)
	}
}

// TestReadyzHungProbe: a dependency that does not answer is not ready,
// and /readyz answers anyway.
func TestReadyzHungProbe(t *testing.T) {
	probes := []httpapi.Probe{
		{Name: "sqlite", Check: func(context.Context) error { return nil }},
		{Name: "nats", Check: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }},
	}
	srv := limitedServer(t, switches.New(switches.Defs), nil, probes, httpapi.MetricsPublic)
	rec := call{method: "GET", path: "/readyz", peer: "192.0.2.1:1"}.do(srv)
	var a readyAnswer
	json.Unmarshal(rec.Body.Bytes(), &a)
	if rec.Code != 503 || strings.Join(a.Failed, ",") != "nats" || rec.Header().Get("Retry-After") == "" {
		t.Errorf("hung nats: %d %s, want 503 naming nats with Retry-After", rec.Code, rec.Body)
	}
}

// TestMetricsModes: /metrics is public, admin-only, or not on this
// handler at all.
func TestMetricsModes(t *testing.T) {
	admin, err := httpapi.Sign(testSecret, 1, true, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	anon := call{method: "GET", path: "/metrics", peer: "192.0.2.1:1"}
	asAdmin := call{method: "GET", path: "/metrics", peer: "192.0.2.1:1", token: admin}
	asBuyer := call{method: "GET", path: "/metrics", peer: "192.0.2.1:1", token: buyerToken(t, 5)}

	public := limitedServer(t, switches.New(switches.Defs), nil, nil, httpapi.MetricsPublic)
	wantStatus(t, public, anon, 200)

	adminOnly := limitedServer(t, switches.New(switches.Defs), nil, nil, httpapi.MetricsAdmin)
	wantStatus(t, adminOnly, anon, 401)
	wantStatus(t, adminOnly, asBuyer, 403)
	wantStatus(t, adminOnly, asAdmin, 200)

	off := limitedServer(t, switches.New(switches.Defs), nil, nil, httpapi.MetricsOff)
	wantStatus(t, off, asAdmin, 404)
	rec := httptest.NewRecorder()
	off.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "spike_http_requests_total") {
		t.Errorf("MetricsHandler: %d, want the registry's metrics", rec.Code)
	}
}

func TestParseTrustedProxies(t *testing.T) {
	if _, err := httpapi.ParseTrustedProxies([]string{"10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8"}); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"10.0.0.0/33", "haproxy", ""} {
		if _, err := httpapi.ParseTrustedProxies([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
