package apitest

import (
	"net/http"
	"strings"
	"testing"
)

// TestCheckResponse: the checker passes what the spec says and catches
// each kind of drift.
func TestCheckResponse(t *testing.T) {
	spec, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	jsonH := http.Header{"Content-Type": {"application/json"}}
	retry := http.Header{"Content-Type": {"application/json"}, "Retry-After": {"1"}}
	tests := []struct {
		name, method, path string
		status             int
		header             http.Header
		body               string
		wantErr            string // "" for conforming
	}{
		{"product", "GET", "/v1/products/p-1", 200, jsonH, `{"sku":"p-1","name":"P","price_cents":1,"stock":0}`, ""},
		{"product missing a field", "GET", "/v1/products/p-1", 200, jsonH, `{"sku":"p-1","name":"P","price_cents":1}`, "stock"},
		{"product with an extra field", "GET", "/v1/products/p-1", 200, jsonH, `{"sku":"p-1","name":"P","price_cents":1,"stock":0,"x":1}`, "x"},
		{"status not declared", "GET", "/v1/products/p-1", 409, jsonH, `{"error":{"code":"conflict","message":"m"}}`, "status is not supported"},
		{"error code of another status", "GET", "/v1/products/p-1", 404, jsonH, `{"error":{"code":"invalid","message":"m"}}`, "does not match"},
		{"placement", "POST", "/v1/sales/s1/orders", 202, jsonH, `{"order_id":"o1","sale_id":"s1","quantity":1,"status":"pending"}`, ""},
		{"429 with Retry-After", "POST", "/v1/sales/s1/orders", 429, retry, `{"error":{"code":"rate_limited","message":"m"}}`, ""},
		{"429 without Retry-After", "POST", "/v1/sales/s1/orders", 429, jsonH, `{"error":{"code":"rate_limited","message":"m"}}`, "Retry-After"},
		{"sold out", "POST", "/v1/sales/s1/orders", 409, jsonH, `{"error":{"code":"sold_out","message":"m"}}`, ""},
		{"wrong content type", "GET", "/healthz", 200, http.Header{"Content-Type": {"text/plain"}}, `ok`, "Content-Type"},
		{"unknown path", "GET", "/nope", 404, jsonH, `{"error":{"code":"not_found","message":"no such endpoint"}}`, ""},
		{"unknown path, plain text", "GET", "/nope", 404, http.Header{}, `404 page not found`, "error shape"},
		{"unknown path, 200", "GET", "/nope", 200, jsonH, `{}`, "want 404 or 405"},
		{"HEAD of a GET route", "HEAD", "/v1/products/p-1", 200, jsonH, ``, ""},
		{"HEAD, status not declared", "HEAD", "/v1/products/p-1", 409, jsonH, ``, "not declared"},
		{"405 without Allow", "DELETE", "/healthz", 405, jsonH, `{"error":{"code":"method_not_allowed","message":"m"}}`, "Allow"},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, "http://127.0.0.1:1"+tt.path, nil)
		err := spec.CheckResponse(req, tt.status, tt.header, []byte(tt.body))
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: %v, want an error with %q", tt.name, err, tt.wantErr)
		}
	}
}

// BenchmarkCheckPlacement is the cost a placement's answer adds to a test.
func BenchmarkCheckPlacement(b *testing.B) {
	spec, err := LoadSpec()
	if err != nil {
		b.Fatal(err)
	}
	req, _ := http.NewRequest("POST", "http://127.0.0.1:1/v1/sales/s1/orders", nil)
	h := http.Header{"Content-Type": {"application/json"}}
	body := []byte(`{"order_id":"01JABCDEF","sale_id":"s1","quantity":1,"status":"pending"}`)
	for b.Loop() {
		if err := spec.CheckResponse(req, 202, h, body); err != nil {
			b.Fatal(err)
		}
	}
}
