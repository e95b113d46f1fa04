package httpapi

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// FuzzPlacementDispatch: whenever ServeHTTP dispatches a request as a
// placement without the mux, the mux routes it to the placement route with
// the same sale id.
func FuzzPlacementDispatch(f *testing.F) {
	for _, p := range []string{"/v1/sales/s1/orders", "/v1/sales/./orders", "/v1/sales/../orders", "/v1/sales//orders",
		"/v1/sales/a.b/orders", "/v1/sales/a%2Fb/orders", "/v1/sales/a/b/orders", "/v1/sales/s1/orders/", "/v1/sales/s1/end",
		"//v1/sales/s1/orders", "/v1/sales/s-1_X/orders"} {
		f.Add("POST", p)
	}
	f.Add("GET", "/v1/sales/s1/orders")
	srv := New(Config{Auth: NewAuthenticator([]byte("0123456789abcdef0123456789abcdef-test")), Registry: prometheus.NewRegistry()})
	f.Fuzz(func(t *testing.T, method, path string) {
		u, err := url.ParseRequestURI(path)
		if err != nil || !validMethod(method) {
			return
		}
		r := httptest.NewRequest("GET", "/", nil)
		r.Method, r.URL, r.RequestURI = method, u, u.RequestURI()
		id, fast := "", false
		if r.Method == http.MethodPost && r.URL.RawPath == "" {
			id, fast = placementID(r.URL.Path)
		}
		if !fast {
			return
		}
		_, pattern := srv.mux.Handler(r)
		if pattern != placementPattern {
			t.Fatalf("%s %q: fast dispatch to the placement (id %q), the mux to %q", method, path, id, pattern)
		}
		// The mux's Handler does not set path values: match by hand.
		mux := http.NewServeMux()
		var got string
		mux.HandleFunc(placementPattern, func(_ http.ResponseWriter, r *http.Request) { got = r.PathValue("id") })
		mux.ServeHTTP(httptest.NewRecorder(), r)
		if got != id {
			t.Fatalf("%s %q: fast dispatch found sale %q, the mux %q", method, path, id, got)
		}
	})
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; c < '!' || c > '~' {
			return false
		}
	}
	return true
}

// TestHeaderValue: headerValue answers as Header.Get for the canonical
// keys it is given.
func TestHeaderValue(t *testing.T) {
	h := http.Header{}
	h.Add("authorization", "Bearer a")
	h.Add("Authorization", "Bearer b")
	h.Set("Idempotency-Key", "")
	for _, key := range []string{"Authorization", "Idempotency-Key", "X-Absent"} {
		if got, want := headerValue(h, key), h.Get(key); got != want {
			t.Errorf("headerValue(%q) = %q, Header.Get %q", key, got, want)
		}
	}
}
