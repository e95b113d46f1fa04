package httpapi_test

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/httpapi"
)

// FuzzAdminBodies drives the admin create/update handlers with arbitrary
// bodies. Never a 5xx; errors have the API shape; a created or updated
// product reads back exactly as answered.
func FuzzAdminBodies(f *testing.F) {
	f.Add(uint8(0), `{"sku":"p1","name":"Widget","price_cents":1999,"stock":10}`)
	f.Add(uint8(0), `{"sku":"p2","name":"a\u0000b","price_cents":0,"stock":0}`)
	f.Add(uint8(0), `{"sku":"p3","name":"\ud800","price_cents":1,"stock":1}`)
	f.Add(uint8(0), `{"sku":"p4","name":"`+strings.Repeat("é", 200)+`","price_cents":1,"stock":1}`)
	f.Add(uint8(0), `{"sku":"p5","name":"n","price_cents":9223372036854775807,"stock":9223372036854775807}`)
	f.Add(uint8(0), `{"sku":"p6","name":"n","price_cents":-1,"stock":1}`)
	f.Add(uint8(0), `{"sku":"p7","name":"n","stock":1}`)
	f.Add(uint8(0), `null`)
	f.Add(uint8(1), `{"id":"s1","sku":"sku-fz","stock":1,"price_cents":1}`)
	f.Add(uint8(1), `{"id":"s2","sku":"sku-fz","stock":1,"price_cents":1,"per_user_limit":3,"starts_at":"2030-01-01T00:00:00Z","ends_at":"2030-01-02T00:00:00+05:00"}`)
	f.Add(uint8(1), `{"id":"s3","sku":"sku-fz","stock":1,"price_cents":1,"starts_at":"0001-01-01T00:00:00.001Z"}`)
	f.Add(uint8(1), `{"id":"s4","sku":"sku-fz","stock":1,"price_cents":1,"starts_at":"9999-12-31T23:59:59.999999999Z"}`)
	f.Add(uint8(1), `{"id":"s5","sku":"sku-fz","stock":1,"price_cents":1,"ends_at":null}`)
	f.Add(uint8(1), `{"id":"s6","sku":"nope","stock":1,"price_cents":1}`)
	f.Add(uint8(1), `{"id":"s7","sku":"sku-fz","stock":1099511627776,"price_cents":1}`)
	f.Add(uint8(1), `{"id":"s8","sku":"sku-fz","stock":1,"price_cents":1,"per_user_limit":0}`)
	f.Add(uint8(2), `{"name":"renamed"}`)
	f.Add(uint8(2), `{"price_cents":5}`)
	f.Add(uint8(2), `{"name":null,"price_cents":null}`)
	f.Add(uint8(2), `{}`)

	st := newStack(f)
	admin, err := httpapi.Sign(testSecret, 1, true, 24*time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, route uint8, body string) {
		method, path := "POST", "/v1/products"
		switch route % 3 {
		case 1:
			path = "/v1/sales"
		case 2:
			method, path = "PATCH", "/v1/products/sku-fz"
		}
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+admin)
		rec := httptest.NewRecorder()
		st.srv.ServeHTTP(rec, req)
		switch rec.Code {
		case 200, 201:
		case 400, 404, 409, 413:
			checkErrorBody(t, rec.Code, rec.Header(), rec.Body.Bytes())
			return
		default:
			t.Fatalf("%s %s %q: status %d: %s", method, path, trim(body), rec.Code, rec.Body.Bytes())
		}
		if route%3 == 1 {
			var s struct {
				ID           string     `json:"id"`
				Stock        int64      `json:"stock"`
				Remaining    int64      `json:"remaining"`
				PerUserLimit int64      `json:"per_user_limit"`
				StartsAt     time.Time  `json:"starts_at"`
				EndsAt       *time.Time `json:"ends_at"`
				State        string     `json:"state"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &s); err != nil {
				t.Fatalf("201 sale %q: %v", rec.Body.Bytes(), err)
			}
			if s.Stock < 1 || s.Remaining != s.Stock || s.PerUserLimit < 1 || (s.EndsAt != nil && !s.EndsAt.After(s.StartsAt)) {
				t.Fatalf("created sale breaks the rules: %s", rec.Body.Bytes())
			}
			get := httptest.NewRecorder()
			st.srv.ServeHTTP(get, httptest.NewRequest("GET", "/v1/sales/"+s.ID, nil))
			if get.Code != 200 {
				t.Fatalf("GET created sale %s: %d %s", s.ID, get.Code, get.Body.Bytes())
			}
			var back struct {
				StartsAt time.Time  `json:"starts_at"`
				EndsAt   *time.Time `json:"ends_at"`
			}
			json.Unmarshal(get.Body.Bytes(), &back)
			if !back.StartsAt.Equal(s.StartsAt) || (back.EndsAt == nil) != (s.EndsAt == nil) || (back.EndsAt != nil && !back.EndsAt.Equal(*s.EndsAt)) {
				t.Fatalf("sale reads back as %s, was created as %s", get.Body.Bytes(), rec.Body.Bytes())
			}
			return
		}
		var p catalog.Product
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
			t.Fatalf("product %q: %v", rec.Body.Bytes(), err)
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("answered an invalid product %+v: %v", p, err)
		}
		get := httptest.NewRecorder()
		st.srv.ServeHTTP(get, httptest.NewRequest("GET", "/v1/products/"+p.SKU, nil))
		var back catalog.Product
		if get.Code != 200 || json.Unmarshal(get.Body.Bytes(), &back) != nil {
			t.Fatalf("GET product %s: %d %s", p.SKU, get.Code, get.Body.Bytes())
		}
		if route%3 == 0 {
			if diff := cmp.Diff(p, back); diff != "" {
				t.Fatalf("product reads back differently (-answered +read):\n%s", diff)
			}
		} else if back.Name != p.Name || back.PriceCents != p.PriceCents {
			t.Fatalf("updated product reads back as %+v, answered %+v", back, p)
		}
	})
}
