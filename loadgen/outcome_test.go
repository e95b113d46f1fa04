package loadgen_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spikehq/spike/loadgen"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		status int
		body   string
		want   string
	}{
		{202, `{"order_id":"x"}`, "accepted"},
		{200, `{}`, "ok"},
		{201, ``, "ok"},
		{409, `{"error":{"code":"sold_out","message":"sold out"}}`, "sold_out"},
		{409, `{"error":{"code":"limit_exceeded","message":"m"}}`, "limit_exceeded"},
		{429, `{"error":{"code":"rate_limited","message":"m"}}`, "rate_limited"},
		{503, `{"error":{"code":"overloaded"}}`, "overloaded"},
		{503, `{"error":{"code":"unavailable"}}`, "unavailable"},
		{400, `{"error":{"code":"invalid"}}`, "invalid"},
		{500, `internal server error`, "http_500"},
		{502, ``, "http_502"},
		{404, `{"error":{}}`, "http_404"},
	}
	for _, tt := range tests {
		if got := loadgen.Classify(tt.status, []byte(tt.body)); got != tt.want {
			t.Errorf("Classify(%d, %s) = %q, want %q", tt.status, tt.body, got, tt.want)
		}
	}
}

// answer is what the outcome server answers for one path.
type answer struct {
	status int
	code   string // "" for a success or a raw body
	raw    string
}

func TestOutcomeAccounting(t *testing.T) {
	answers := []answer{
		{202, "", `{"order_id":"o1","sale_id":"s","quantity":1,"status":"pending"}`},
		{200, "", `{"sku":"a"}`},
		{409, "sold_out", ""},
		{409, "limit_exceeded", ""},
		{409, "sale_not_active", ""},
		{409, "conflict", ""},
		{404, "not_found", ""},
		{400, "invalid", ""},
		{401, "unauthenticated", ""},
		{429, "rate_limited", ""},
		{503, "overloaded", ""},
		{503, "unavailable", ""},
		{500, "", "boom"},
		{0, "", ""}, // hijack and close: transport error
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		a := answers[i]
		switch {
		case a.status == 0:
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		case a.code != "":
			if a.status == 429 || a.status == 503 {
				w.Header().Set("Retry-After", "1")
			}
			w.WriteHeader(a.status)
			fmt.Fprintf(w, `{"error":{"code":%q,"message":"x"}}`, a.code)
		default:
			w.WriteHeader(a.status)
			fmt.Fprint(w, a.raw)
		}
	}))
	defer srv.Close()
	c := loadgen.NewClient(srv.URL, 4, 5*time.Second)
	defer c.Close()
	const rounds = 5
	st, err := loadgen.Run(context.Background(), loadgen.Plan{
		Total: rounds * len(answers), Concurrency: 4,
		Op: func(ctx context.Context, i int) string {
			r, _ := c.Do(ctx, http.MethodPost, "/"+strconv.Itoa(i%len(answers)), "Bearer t", "k", []byte(`{"quantity":1}`))
			return r.Outcome
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{
		"accepted": rounds, "ok": rounds, "sold_out": rounds, "limit_exceeded": rounds, "sale_not_active": rounds,
		"conflict": rounds, "not_found": rounds, "invalid": rounds, "unauthenticated": rounds,
		"rate_limited": rounds, "overloaded": rounds, "unavailable": rounds, "http_500": rounds, "transport_error": rounds,
	}
	got := map[string]int64{}
	for _, o := range st.Outcomes {
		got[o.Name] = o.Count
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("outcome %s = %d, want %d", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("outcomes %v, want exactly %v", got, want)
	}
	if st.Responses != int64(rounds*(len(answers)-1)) {
		t.Errorf("responses %d, want %d (transport errors are not responses)", st.Responses, rounds*(len(answers)-1))
	}
	if got := c.MissingRetryAfter(); got != 0 {
		t.Errorf("MissingRetryAfter() = %d, want 0", got)
	}
	// The per-second series carries the same counts.
	var sum int64
	for _, s := range st.Series {
		sum += s.Outcomes["sold_out"]
	}
	if sum != rounds {
		t.Errorf("series sold_out total %d, want %d", sum, rounds)
	}
}

func TestClientCountsMissingRetryAfter(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"error":{"code":"overloaded","message":"x"}}`)
	}))
	defer srv.Close()
	c := loadgen.NewClient(srv.URL, 1, time.Second)
	defer c.Close()
	for range 3 {
		if r, err := c.Do(context.Background(), http.MethodGet, "/", "", "", nil); err != nil || r.Outcome != "overloaded" {
			t.Fatalf("Do() = %+v, %v", r, err)
		}
	}
	if got := c.MissingRetryAfter(); got != 3 {
		t.Errorf("MissingRetryAfter() = %d, want 3", got)
	}
}

func TestClientTimeout(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer srv.Close()
	defer close(block)
	c := loadgen.NewClient(srv.URL, 1, 50*time.Millisecond)
	defer c.Close()
	r, err := c.Do(context.Background(), http.MethodGet, "/", "", "", nil)
	if err == nil || r.Outcome != loadgen.OutcomeTimeout {
		t.Errorf("Do() = %+v, %v; want timeout", r, err)
	}
}
