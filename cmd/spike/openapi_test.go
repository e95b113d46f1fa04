package main

import (
	"bytes"
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/spikehq/spike/api"
	"github.com/spikehq/spike/internal/testkit/apitest"
)

// TestOpenAPIRoutes holds the router and api/openapi.yaml together both
// ways: every route the server registers is an operation of the spec, and
// every operation of the spec is served (asked without a token or a body,
// it is answered by its route, not the catch-all, and the answer conforms:
// the client checks every answer against the spec).
func TestOpenAPIRoutes(t *testing.T) {
	a := startApp(t, t.TempDir())
	defer stopApp(t, a)
	spec, err := apitest.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	var inSpec []string
	for path, item := range spec.Doc.Paths.Map() {
		for method := range item.Operations() {
			inSpec = append(inSpec, method+" "+path)
		}
	}
	served := a.api.Routes()
	for _, p := range served {
		if !strings.Contains(p, " ") {
			t.Errorf("route %q has no method: register routes as \"METHOD /path\"", p)
		} else if !slices.Contains(inSpec, p) {
			t.Errorf("route %q is served but not in api/openapi.yaml", p)
		}
	}
	c := newClient(t, a.addr, a.secret)
	for _, op := range inSpec {
		if !slices.Contains(served, op) {
			t.Errorf("api/openapi.yaml has %q, which the server does not route", op)
			continue
		}
		method, path, _ := strings.Cut(op, " ")
		r, err := c.Do(context.Background(), method, wildcard.ReplaceAllString(path, "x-1"), "", nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		if r.Status == 405 || strings.Contains(string(r.Body), "no such endpoint") {
			t.Errorf("%s: answered by the catch-all: %d %s", op, r.Status, r.Body)
		}
	}
	if len(served) < 25 {
		t.Errorf("only %d routes: %v", len(served), served)
	}
}

var wildcard = regexp.MustCompile(`\{[^}]+\}`)

// TestOpenAPIServed: GET /openapi.json is api/openapi.yaml as JSON, a valid
// OpenAPI 3.1 document.
func TestOpenAPIServed(t *testing.T) {
	a := startApp(t, t.TempDir())
	defer stopApp(t, a)
	c := newClient(t, a.addr, a.secret)
	r := c.Must("GET", "/openapi.json", "", nil, 200)
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if !bytes.Equal(r.Body, api.JSON()) {
		t.Errorf("GET /openapi.json is not api.JSON()")
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(loader.Context); err != nil || !doc.IsOpenAPI31OrLater() {
		t.Fatalf("openapi %s: %v", doc.OpenAPI, err)
	}
}

// TestMethodNotAllowed: a known path with a method it does not serve is a
// 405 naming the methods it does serve; an unknown path is a 404 (docs/api.md).
func TestMethodNotAllowed(t *testing.T) {
	a := startApp(t, t.TempDir())
	defer stopApp(t, a)
	c := newClient(t, a.addr, a.secret)
	admin := c.Token(1, true)
	for _, tt := range []struct{ method, path, allow string }{
		{"DELETE", "/v1/products/p1", "GET, HEAD, PATCH"},
		{"GET", "/v1/products", "POST"},
		{"PUT", "/v1/sales/s1/orders", "POST"},
		{"POST", "/v1/orders/o1", "GET, HEAD"},
		{"GET", "/v1/admin/switches/orders.accept", "PUT"},
		{"DELETE", "/sandbox/checkout/sbx_x", "GET, HEAD, POST"},
		{"POST", "/healthz", "GET, HEAD"},
	} {
		r, err := c.Do(context.Background(), tt.method, tt.path, admin, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != 405 || r.Header.Get("Allow") != tt.allow || r.Code() != "method_not_allowed" {
			t.Errorf("%s %s: %d Allow %q %s, want 405 Allow %q", tt.method, tt.path, r.Status, r.Header.Get("Allow"), r.Body, tt.allow)
		}
	}
	for _, path := range []string{"/v2/products", "/v1/products/p1/nope", "/nope"} {
		if r := c.Must("GET", path, admin, nil, 404); r.Code() != "not_found" {
			t.Errorf("GET %s: %s", path, r.Body)
		}
	}
}
