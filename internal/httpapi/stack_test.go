package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/sqlitestore"
	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/internal/httpapi"
	"github.com/spikehq/spike/internal/ledger"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-test")

// acceptStream is an order.Stream that accepts every event: the stream is
// not what these tests exercise.
type acceptStream struct{}

func (acceptStream) Enqueue(context.Context, order.Placed) error { return nil }

// stack is a real httpapi.Server over SQLite and in-process counters.
type stack struct {
	srv *httpapi.Server
}

// newStack builds the server the way cmd/spike wires it (without the
// stream) and creates sale "fz" (per-user limit 5) on product "sku-fz".
func newStack(tb testing.TB) *stack {
	tb.Helper()
	svc := newServices(tb, "sku-fz", sale.Sale{ID: "fz", SKU: "sku-fz", Stock: 1 << 39, PriceCents: 50, PerUserLimit: 5})
	srv := httpapi.New(httpapi.Config{
		Catalog: svc.catalog, Sales: svc.sales, Orders: svc.orders,
		Auditor:  &ledger.Auditor{Sales: svc.store, Orders: svc.store, Counters: svc.counters, Pending: svc.orders},
		Auth:     httpapi.NewAuthenticator(testSecret),
		Registry: prometheus.NewRegistry(),
		Logger:   svc.log,
	})
	return &stack{srv: srv}
}

// services are the domain services behind a test server: SQLite,
// in-process counters and a stream that accepts every event.
type services struct {
	store    *sqlitestore.Store
	counters *inventory.Counters
	catalog  *catalog.Service
	sales    *sale.Service
	orders   *order.Service
	log      *slog.Logger
}

// newServices opens the services with product sku (stock to spare) and
// sales, which start a minute ago.
func newServices(tb testing.TB, sku string, sales ...sale.Sale) services {
	tb.Helper()
	ctx := context.Background()
	store, err := sqlitestore.Open(ctx, filepath.Join(tb.TempDir(), "spike.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	counters := inventory.New(spike.NewIDGenerator())
	svc := services{store: store, counters: counters, catalog: catalog.NewService(store), sales: sale.NewService(store, counters),
		orders: order.NewService(counters, acceptStream{}, store, log), log: log}
	if _, err := svc.catalog.Create(ctx, catalog.Product{SKU: sku, Name: "Test", PriceCents: 100, Stock: 1 << 40}); err != nil {
		tb.Fatal(err)
	}
	for _, s := range sales {
		s.StartsAt = time.Now().Add(-time.Minute)
		if _, err := svc.sales.Create(ctx, s); err != nil {
			tb.Fatal(err)
		}
	}
	return svc
}

// errorCodes are the API codes by status.
var errorCodes = map[int][]string{
	400: {"invalid"},
	401: {"unauthenticated"},
	403: {"forbidden"},
	404: {"not_found"},
	409: {"conflict", "insufficient_stock", "sold_out", "limit_exceeded", "sale_not_active"},
	413: {"too_large"},
	429: {"rate_limited"},
	503: {"overloaded", "unavailable"},
	500: {"internal"},
}

// checkErrorBody checks that an error response has exactly the API's
// error shape with a code that belongs to its status, and returns the code.
func checkErrorBody(tb testing.TB, status int, h http.Header, body []byte) string {
	tb.Helper()
	if ct := h.Get("Content-Type"); ct != "application/json" {
		tb.Errorf("status %d: Content-Type %q, want application/json", status, ct)
	}
	var shape map[string]map[string]json.RawMessage
	if err := json.Unmarshal(body, &shape); err != nil || len(shape) != 1 || shape["error"] == nil {
		tb.Fatalf("status %d: body %q is not {\"error\":{...}}: %v", status, body, err)
	}
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if len(shape["error"]) != 2 {
		tb.Errorf("status %d: error object %q has fields other than code and message", status, body)
	}
	if err := json.Unmarshal(body, &struct {
		Error any `json:"error"`
	}{&e}); err != nil || e.Message == "" {
		tb.Fatalf("status %d: error body %q lacks a code or message: %v", status, body, err)
	}
	known := false
	for _, c := range errorCodes[status] {
		known = known || c == e.Code
	}
	if !known {
		tb.Errorf("status %d: code %q is not one API.md gives this status (%v)", status, e.Code, errorCodes[status])
	}
	if (status == 429 || status == 503) && h.Get("Retry-After") == "" {
		tb.Errorf("status %d without Retry-After", status)
	}
	return e.Code
}
