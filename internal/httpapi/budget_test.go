package httpapi_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/httpapi"
)

// hungCatalog is a catalogue database that never answers: each call waits
// for its context.
type hungCatalog struct{}

func (hungCatalog) CreateProduct(ctx context.Context, _ catalog.Product) error {
	<-ctx.Done()
	return ctx.Err()
}

func (hungCatalog) Product(ctx context.Context, _ string) (catalog.Product, error) {
	<-ctx.Done()
	return catalog.Product{}, ctx.Err()
}

func (hungCatalog) UpdateProduct(ctx context.Context, _ string, _ catalog.ProductUpdate) (catalog.Product, error) {
	<-ctx.Done()
	return catalog.Product{}, ctx.Err()
}

// TestAdminBudget: an admin write whose database never answers is cut by
// the admin budget and answered 503 with Retry-After, not held until the
// client gives up, and not reported as a 500.
func TestAdminBudget(t *testing.T) {
	srv := httpapi.New(httpapi.Config{
		Catalog:     catalog.NewService(hungCatalog{}),
		Auth:        httpapi.NewAuthenticator(testSecret),
		Registry:    prometheus.NewRegistry(),
		AdminBudget: 50 * time.Millisecond,
	})
	admin, err := httpapi.Sign(testSecret, 1, true, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("POST", "/v1/products", strings.NewReader(`{"sku":"sku-hung","name":"Hung","price_cents":100,"stock":10}`))
	req.Header.Set("Authorization", "Bearer "+admin)
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		srv.ServeHTTP(rec, req)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute): // a hang, not a timing assertion
		t.Fatal("the admin request was not cut by its budget")
	}
	if rec.Code != 503 || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), `"unavailable"`) {
		t.Fatalf("got %d %q (Retry-After %q), want 503 unavailable with Retry-After", rec.Code, rec.Body.String(), rec.Header().Get("Retry-After"))
	}
}
