package httpapi_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/internal/httpapi"
	"github.com/spikehq/spike/internal/switches"
	"github.com/spikehq/spike/resilience"
)

// BenchmarkPlaceFreshBuyer drives the whole handler chain of a placement
// as cmd/spike builds it (admission, the switches' rate limits, metrics,
// tracing off, HS256 tokens) with every request from a buyer never seen
// before and a fresh Idempotency-Key, the shape of a flash sale:
//
//   - accepted: 202, in-process counters and a stream that accepts at once;
//   - sold_out: 409 from a sale whose stock is gone.
//
// Tokens are signed outside the timer, in batches. What it does not
// include is net/http itself (parsing, the connection's writer) and
// cmd/spike's request counting.
//
//	go test -run '^$' -bench PlaceFreshBuyer -benchmem ./internal/httpapi
func BenchmarkPlaceFreshBuyer(b *testing.B) {
	for _, tc := range []struct {
		name   string
		sale   string
		status int
	}{{"accepted", "open", http.StatusAccepted}, {"sold_out", "gone", http.StatusConflict}} {
		b.Run(tc.name, func(b *testing.B) {
			srv := newHotStack(b)
			const batch = 4096
			tokens := make([]string, 0, batch)
			user := int64(1_000_000)
			const body = `{"quantity":1}`
			w := &discardWriter{h: http.Header{}}
			path := "/v1/sales/" + tc.sale + "/orders"
			tmpl, err := http.NewRequest("POST", path, nil)
			if err != nil {
				b.Fatal(err)
			}
			tmpl.RemoteAddr = "192.0.2.1:1234"
			rd := &bodyReader{}
			b.ReportAllocs()
			b.ResetTimer()
			var cpu cpuMeter
			cpu.start()
			for i := 0; i < b.N; i++ {
				if len(tokens) == 0 {
					b.StopTimer()
					cpu.pause()
					tokens = signBatch(b, user, batch)
					user += batch
					cpu.resume()
					b.StartTimer()
				}
				tok := tokens[len(tokens)-1]
				tokens = tokens[:len(tokens)-1]
				// What net/http hands a handler: a request of its own with
				// its own header map and body.
				r := new(http.Request)
				*r = *tmpl
				r.Header = http.Header{
					"Authorization":   {"Bearer " + tok},
					"Idempotency-Key": {"k-" + strconv.Itoa(i)},
					"Content-Type":    {"application/json"},
				}
				rd.reset(body)
				r.Body = rd
				r.ContentLength = int64(len(body))
				clear(w.h)
				w.status = 0
				srv.ServeHTTP(w, r)
				if w.status != tc.status {
					b.Fatalf("status %d, want %d", w.status, tc.status)
				}
			}
			cpu.report(b)
		})
	}
}

// signBatch signs n buyers' tokens from user id from on: the bytes
// httpapi.Sign produces (checked once), by hand, so that signing costs
// the benchmark little time outside its timer.
func signBatch(b *testing.B, from int64, n int) []string {
	exp := time.Now().Add(time.Hour).Unix()
	iat := time.Now().Unix()
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	mac := hmac.New(sha256.New, testSecret)
	out := make([]string, n)
	var buf []byte
	for i := range out {
		buf = append(buf[:0], `{"sub":"`...)
		buf = strconv.AppendInt(buf, from+int64(i), 10)
		buf = append(buf, `","exp":`...)
		buf = strconv.AppendInt(buf, exp, 10)
		buf = append(buf, `,"iat":`...)
		buf = strconv.AppendInt(buf, iat, 10)
		buf = append(buf, '}')
		signing := header + "." + base64.RawURLEncoding.EncodeToString(buf)
		mac.Reset()
		mac.Write([]byte(signing))
		out[i] = signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	}
	if ref, err := httpapi.Sign(testSecret, from, false, time.Hour); err != nil {
		b.Fatal(err)
	} else if _, err := httpapi.NewAuthenticator(testSecret).Verify(out[0]); err != nil || len(ref) != len(out[0]) {
		b.Fatalf("hand-signed token %q does not look like Sign's %q: %v", out[0], ref, err)
	}
	return out
}

// newHotStack is the server as cmd/spike builds it, over in-process
// counters and a stream that accepts every event: sale "open" with stock
// to spare, sale "gone" sold out.
func newHotStack(tb testing.TB) *httpapi.Server {
	tb.Helper()
	svc := newServices(tb, "sku-hot",
		sale.Sale{ID: "open", SKU: "sku-hot", Stock: 1 << 39, PriceCents: 50, PerUserLimit: 1},
		sale.Sale{ID: "gone", SKU: "sku-hot", Stock: 1, PriceCents: 50, PerUserLimit: 1})
	if _, err := svc.orders.Place(context.Background(), order.PlaceRequest{UserID: 1, SaleID: "gone", Key: "first", Quantity: 1}); err != nil {
		tb.Fatal(err)
	}
	board := switches.New(switches.Defs)
	return httpapi.New(httpapi.Config{
		Catalog: svc.catalog, Sales: svc.sales, Orders: svc.orders,
		Auth:     httpapi.NewAuthenticator(testSecret),
		Registry: prometheus.NewRegistry(),
		Logger:   svc.log,
		Guards: &httpapi.Guards{
			// cmd/spike's defaults (config.go, limits.admission_*).
			Admission: resilience.NewAdaptive(resilience.AdaptiveConfig{InitialLimit: 1000, MinLimit: 256, MaxLimit: 20000}),
			Switches:  board,
		},
	})
}

// discardWriter is a ResponseWriter that keeps the status and drops the body.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header { return w.h }

func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(p), nil
}

// bodyReader is a reusable request body.
type bodyReader struct{ strings.Reader }

func (r *bodyReader) reset(s string) { r.Reader.Reset(s) }
func (r *bodyReader) Close() error   { return nil }

// BenchmarkSoldOutParallel is BenchmarkPlaceFreshBuyer/sold_out on every
// core at once, where what requests share (admission, metrics, the
// per-buyer limiter's shards) is contended. 1<<18 buyers, taken in turn.
func BenchmarkSoldOutParallel(b *testing.B) {
	srv := newHotStack(b)
	const n = 1 << 18
	tokens := signBatch(b, 2_000_000, n)
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	var cpu cpuMeter
	cpu.start()
	defer cpu.report(b)
	b.RunParallel(func(pb *testing.PB) {
		w := &discardWriter{h: http.Header{}}
		tmpl, err := http.NewRequest("POST", "/v1/sales/gone/orders", nil)
		if err != nil {
			b.Error(err)
			return
		}
		tmpl.RemoteAddr = "192.0.2.1:1234"
		rd := &bodyReader{}
		for pb.Next() {
			i := next.Add(1)
			r := new(http.Request)
			*r = *tmpl
			r.Header = http.Header{
				"Authorization":   {"Bearer " + tokens[i%n]},
				"Idempotency-Key": {"k-" + strconv.FormatInt(i, 10)},
				"Content-Type":    {"application/json"},
			}
			rd.reset(`{"quantity":1}`)
			r.Body = rd
			r.ContentLength = int64(rd.Len())
			clear(w.h)
			w.status = 0
			srv.ServeHTTP(w, r)
			if w.status != http.StatusConflict {
				b.Errorf("status %d, want 409", w.status)
				return
			}
		}
	})
}

// cpuMeter measures the CPU time the process spends (user and system, all
// threads, the collector's included) while it runs, reported as
// cpu-ns/op: on a shared machine, where other work stretches the wall
// time of each operation, a steadier figure than ns/op.
type cpuMeter struct {
	total, since time.Duration
}

func (c *cpuMeter) start()  { c.total, c.since = 0, processCPU() }
func (c *cpuMeter) pause()  { c.total += processCPU() - c.since }
func (c *cpuMeter) resume() { c.since = processCPU() }

func (c *cpuMeter) report(b *testing.B) {
	c.pause()
	b.ReportMetric(float64(c.total.Nanoseconds())/float64(b.N), "cpu-ns/op")
}
