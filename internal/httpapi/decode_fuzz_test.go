package httpapi_test

import (
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/httpapi"
)

var (
	tokensMu sync.Mutex
	tokens   = map[int64]string{}
)

func buyerToken(tb testing.TB, user int64) string {
	tokensMu.Lock()
	defer tokensMu.Unlock()
	if tok, ok := tokens[user]; ok {
		return tok
	}
	tok, err := httpapi.Sign(testSecret, user, false, 24*60*60*1e9)
	if err != nil {
		tb.Fatal(err)
	}
	tokens[user] = tok
	return tok
}

// FuzzPlaceOrder drives the real placement handler with arbitrary bodies,
// Idempotency-Keys and sale ids. The answer is never a 5xx, always one of
// 202/400/404/409/413, errors have the API shape with a code of their
// status, and a 202 echoes the quantity the body asked for.
func FuzzPlaceOrder(f *testing.F) {
	f.Add("fz", "key-1", `{"quantity":1}`, uint16(1), false, uint32(0))
	f.Add("fz", "key-2", ``, uint16(2), false, uint32(0))
	f.Add("fz", "key-3", `{}`, uint16(3), true, uint32(0))
	f.Add("fz", "key-4", `{"quantity":5}`, uint16(4), false, uint32(0))
	f.Add("fz", "key-5", `{"quantity":6}`, uint16(5), false, uint32(0))
	f.Add("fz", "key-6", `{"quantity":0}`, uint16(6), false, uint32(0))
	f.Add("fz", "key-7", `{"quantity":-1}`, uint16(7), false, uint32(0))
	f.Add("fz", "key-8", `{"quantity":"1"}`, uint16(8), false, uint32(0))
	f.Add("fz", "key-9", `{"quantity":1.5}`, uint16(9), false, uint32(0))
	f.Add("fz", "key-10", `{"quantity":1e2}`, uint16(10), false, uint32(0))
	f.Add("fz", "key-11", `{"quantity":99999999999999999999999}`, uint16(11), false, uint32(0))
	f.Add("fz", "key-12", `{"quantity":1} trailing`, uint16(12), false, uint32(0))
	f.Add("fz", "key-13", `{"quantity":1}{"quantity":1}`, uint16(13), false, uint32(0))
	f.Add("fz", "key-14", `[{"quantity":1}]`, uint16(14), false, uint32(0))
	f.Add("fz", "key-15", `{"quantity":`, uint16(15), false, uint32(0))
	f.Add("fz", "key-16", `null`, uint16(16), false, uint32(0))
	f.Add("fz", "key-17", `"quantity"`, uint16(17), false, uint32(0))
	f.Add("fz", "key-18", `{"quantity":1}`, uint16(18), false, uint32(1<<20+1))
	f.Add("fz", "key-19", `{"quantity":1}`, uint16(19), true, uint32(1<<20+1))
	f.Add("fz", "", `{"quantity":1}`, uint16(20), false, uint32(0))
	f.Add("fz", strings.Repeat("k", 129), `{"quantity":1}`, uint16(21), false, uint32(0))
	f.Add("fz", "bad\x01key", `{"quantity":1}`, uint16(22), false, uint32(0))
	f.Add("fz", "clé", `{"quantity":1}`, uint16(23), false, uint32(0))
	f.Add("nope", "key-24", `{"quantity":1}`, uint16(24), false, uint32(0))
	f.Add("a/b", "key-25", `{"quantity":1}`, uint16(25), false, uint32(0))
	f.Add("fz", "key-1", `{"quantity":2}`, uint16(1), false, uint32(0)) // same key, other quantity
	f.Add("fz", "key-26", "\xef\xbb\xbf{\"quantity\":1}", uint16(26), false, uint32(0))
	f.Add("fz", "key-27", `{"quantity":1,"quantity":"x"}`, uint16(27), false, uint32(0))
	f.Add("fz", "key-28", `{"QUANTITY":2}`, uint16(28), false, uint32(0))

	st := newStack(f)
	f.Fuzz(func(t *testing.T, saleID, key, body string, user uint16, chunked bool, pad uint32) {
		if saleID == "" || saleID == "." || saleID == ".." {
			t.Skip("ServeMux redirects paths with empty or dot segments (307) before any handler runs")
		}
		if pad > 1<<20 {
			body += strings.Repeat(" ", int(pad%(1<<21)))
		}
		uid := int64(user) + 1
		req := httptest.NewRequest("POST", "/v1/sales/"+url.PathEscape(saleID)+"/orders", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+buyerToken(t, uid))
		req.Header.Set("Idempotency-Key", key)
		req.Header.Set("Content-Type", "application/json")
		if chunked {
			req.ContentLength = -1
		}
		rec := httptest.NewRecorder()
		st.srv.ServeHTTP(rec, req)
		status := rec.Code
		if status == 413 && len(body) <= httpapi.MaxBodyBytes {
			t.Fatalf("body of %d bytes answered 413", len(body))
		}
		switch status {
		case 202, 400, 404, 409, 413:
		default:
			t.Fatalf("sale %q key %q body %q: status %d: %s", saleID, key, trim(body), status, rec.Body.Bytes())
		}
		if status != 202 {
			code := checkErrorBody(t, status, rec.Header(), rec.Body.Bytes())
			// Keys are checked before the body is read (but after an over-long Content-Length).
			if saleID == "fz" && !spike.ValidIdempotencyKey(key) && code != "invalid" && (chunked || len(body) <= httpapi.MaxBodyBytes) {
				t.Fatalf("invalid key %q answered %d %s", key, status, code)
			}
			// A well-formed in-range request on the open sale is never "invalid".
			var q struct{ Quantity *int64 }
			if saleID == "fz" && spike.ValidIdempotencyKey(key) && len(body) <= httpapi.MaxBodyBytes &&
				strictUnmarshal(body, &q) == nil && q.Quantity != nil && *q.Quantity >= 1 && *q.Quantity <= 5 && status == 400 {
				t.Fatalf("well-formed request (key %q body %q) answered 400: %s", key, body, rec.Body.Bytes())
			}
			return
		}
		// 202: the real sale, a valid key, a body of at most one JSON value asking for 1–5 units.
		if saleID != "fz" || !spike.ValidIdempotencyKey(key) {
			t.Fatalf("sale %q key %q accepted", saleID, key)
		}
		var resp struct {
			OrderID  string `json:"order_id"`
			SaleID   string `json:"sale_id"`
			Quantity int64  `json:"quantity"`
			Status   string `json:"status"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatalf("202 body %q: %v", rec.Body.Bytes(), err)
		}
		if len(resp.OrderID) != 26 || resp.SaleID != "fz" || resp.Status != "pending" || resp.Quantity < 1 || resp.Quantity > 5 {
			t.Fatalf("202 body %+v", resp)
		}
		var q struct{ Quantity *int64 }
		if strings.TrimSpace(body) != "" {
			if err := strictUnmarshal(body, &q); err != nil {
				t.Fatalf("body %q is not one JSON value but was accepted: %v", trim(body), err)
			}
		}
		want := int64(1)
		if q.Quantity != nil {
			want = *q.Quantity
		}
		if resp.Quantity != want {
			t.Fatalf("body %q: accepted quantity %d, want %d", trim(body), resp.Quantity, want)
		}
	})
}

// strictUnmarshal is json.Unmarshal, which also rejects trailing data.
func strictUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func trim(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// TestPlaceOrderStatuses pins the answer to the main bad-input cases on the
// real handler.
func TestPlaceOrderStatuses(t *testing.T) {
	st := newStack(t)
	big := `{"quantity":1}` + strings.Repeat(" ", httpapi.MaxBodyBytes)
	tests := []struct {
		name     string
		sale     string
		key      string
		body     string
		chunked  bool
		want     int
		wantCode string
	}{
		{"ok", "fz", "t-1", `{"quantity":2}`, false, 202, ""},
		{"replay", "fz", "t-1", `{"quantity":2}`, false, 202, ""},
		{"same key other quantity", "fz", "t-1", `{"quantity":1}`, false, 409, "conflict"},
		{"empty body is quantity 1", "fz", "t-2", ``, false, 202, ""},
		{"limit", "fz", "t-3", `{"quantity":3}`, false, 409, "limit_exceeded"},
		{"quantity above per_user_limit", "fz", "t-4", `{"quantity":6}`, false, 400, "invalid"},
		{"quantity 0", "fz", "t-5", `{"quantity":0}`, false, 400, "invalid"},
		{"string quantity", "fz", "t-6", `{"quantity":"1"}`, false, 400, "invalid"},
		{"float quantity", "fz", "t-7", `{"quantity":1.5}`, false, 400, "invalid"},
		{"huge quantity", "fz", "t-8", `{"quantity":1e100}`, false, 400, "invalid"},
		{"trailing garbage", "fz", "t-9", `{"quantity":1}x`, false, 400, "invalid"},
		{"two objects", "fz", "t-10", `{"quantity":1}{}`, false, 400, "invalid"},
		{"array", "fz", "t-11", `[1]`, false, 400, "invalid"},
		{"truncated", "fz", "t-12", `{"quantity":1`, false, 400, "invalid"},
		{"too large", "fz", "t-13", big, false, 413, "too_large"},
		{"too large, chunked", "fz", "t-14", big, true, 413, "too_large"},
		{"no key", "fz", "", `{}`, false, 400, "invalid"},
		{"unknown sale", "nope", "t-15", `{}`, false, 404, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", "/v1/sales/"+tt.sale+"/orders", strings.NewReader(tt.body))
			req.Header.Set("Authorization", "Bearer "+buyerToken(t, 7))
			if tt.key != "" {
				req.Header.Set("Idempotency-Key", tt.key)
			}
			if tt.chunked {
				req.ContentLength = -1
			}
			rec := httptest.NewRecorder()
			st.srv.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.want, rec.Body.Bytes())
			}
			if tt.want != 202 {
				if code := checkErrorBody(t, rec.Code, rec.Header(), rec.Body.Bytes()); code != tt.wantCode {
					t.Errorf("code %q, want %q", code, tt.wantCode)
				}
			}
		})
	}
}
