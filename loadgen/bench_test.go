package loadgen_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spikehq/spike/loadgen"
	"github.com/spikehq/spike/loadgen/loadgentest"
)

var testSecret = []byte("test-secret-please-ignore")

func checkByName(t *testing.T, rep *loadgen.Report, name string) loadgen.Check {
	t.Helper()
	for _, c := range rep.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", name, rep.Checks)
	return loadgen.Check{}
}

func TestFlashSaleEndToEnd(t *testing.T) {
	tests := []struct {
		name     string
		rate     float64
		baseline bool
	}{
		{"closed loop", 0, false},
		// Slow enough that the fake server keeps up on a loaded 2-core CI
		// machine (the whole stock must sell); the point is the open loop.
		{"open loop with baseline", 500, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := loadgentest.NewServer(testSecret)
			defer fake.Close()
			rep, err := loadgen.Bench(context.Background(), loadgen.Config{
				Scenario: loadgen.ScenarioFlashSale, Target: fake.URL, Secret: testSecret,
				Rate: tt.rate, Concurrency: 64, Buyers: 200, Stock: 50, PerUserLimit: 1,
				RepeatFraction: 0.2, RetryFraction: 0.25, Baseline: tt.baseline, Seed: 7,
				// The flash sale's checks are under test, not whether a loaded
				// machine keeps 500/s within 64 in flight (TestLoadChecks*).
				MaxErrorRate: 1,
			})
			if err != nil {
				t.Fatal(err)
			}
			st := rep.Run
			if want := int64(200 + 40 + 50); st.Sent+st.Dropped != want {
				t.Errorf("sent %d + dropped %d, want %d operations", st.Sent, st.Dropped, want)
			}
			if fake.Accepted() != 50 {
				t.Errorf("fake accepted %d orders, want the whole stock of 50", fake.Accepted())
			}
			// accepted = 50 first placements + the retries of accepted keys.
			if n := st.Count("accepted"); n < 50 {
				t.Errorf("accepted %d, want ≥ 50", n)
			}
			if st.Count("sold_out") == 0 {
				t.Errorf("no sold_out outcomes: %+v", st.Outcomes)
			}
			if !rep.OK() {
				t.Errorf("report not OK: checks %+v audit %+v err %q", rep.Checks, rep.Audit, rep.AuditError)
			}
			if rep.Audit == nil || len(rep.Audit.Checks) == 0 {
				t.Errorf("audit missing: %+v", rep.Audit)
			}
			if c := checkByName(t, rep, "orders_readable"); !strings.HasPrefix(c.Detail, "50 of 50 accepted orders read back, 0 failed") {
				t.Errorf("orders_readable: %s", c.Detail)
			}
			if tt.baseline {
				if rep.Baseline == nil || rep.Ratios == nil {
					t.Fatal("no baseline or ratios")
				}
				if rep.Baseline.Count("accepted") != rep.Baseline.Sent {
					t.Errorf("baseline outcomes %+v, want all accepted", rep.Baseline.Outcomes)
				}
				if rep.Ratios.Throughput <= 0 || rep.Ratios.Outcomes["accepted"] <= 0 {
					t.Errorf("ratios %+v", rep.Ratios)
				}
			}
			var text bytes.Buffer
			if err := rep.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			for _, s := range []string{"sold_out", "p99.9", "audit: PASS", "result: PASS"} {
				if !strings.Contains(text.String(), s) {
					t.Errorf("text report lacks %q:\n%s", s, text.String())
				}
			}
			if tt.baseline && !strings.Contains(text.String(), "× baseline") {
				t.Errorf("text report lacks ratios:\n%s", text.String())
			}
			if _, err := json.Marshal(rep); err != nil {
				t.Errorf("json: %v", err)
			}
		})
	}
}

func TestFlashSaleDetectsIdempotencyViolation(t *testing.T) {
	fake := loadgentest.NewServer(testSecret)
	fake.BreakIdempotency = true
	defer fake.Close()
	rep, err := loadgen.Bench(context.Background(), loadgen.Config{
		Target: fake.URL, Secret: testSecret, Concurrency: 4, Buyers: 40, Stock: 1000,
		RetryFraction: 0.5, VerifyOrders: 10, Seed: 3, DrainTimeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	c := checkByName(t, rep, loadgen.OutcomeIdempotencyFail)
	if c.OK || !strings.HasPrefix(c.Detail, "20 retries") {
		t.Errorf("idempotency check %+v, want 20 violations", c)
	}
	if rep.OK() {
		t.Error("report OK despite violations")
	}
	if c := checkByName(t, rep, "orders_readable"); !strings.HasPrefix(c.Detail, "10 of 60 accepted") {
		t.Errorf("orders_readable sample: %s", c.Detail)
	}
}

func TestBenchErrors(t *testing.T) {
	fake := loadgentest.NewServer(testSecret)
	defer fake.Close()
	tests := []struct {
		name string
		cfg  loadgen.Config
		want string
	}{
		{"no secret", loadgen.Config{Target: fake.URL}, "no JWT secret"},
		{"bad scenario", loadgen.Config{Target: fake.URL, Secret: testSecret, Scenario: "nope"}, "unknown scenario"},
		{"bad zipf", loadgen.Config{Target: fake.URL, Secret: testSecret, Scenario: "reads", ZipfS: 0.5}, "zipf-s"},
		{"wrong secret", loadgen.Config{Target: fake.URL, Secret: []byte("other"), Buyers: 2}, "unauthenticated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadgen.Bench(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Bench() error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestReadsAndMixed(t *testing.T) {
	if testing.Short() {
		t.Skip("load test: 1.5 s of timed load")
	}
	fake := loadgentest.NewServer(testSecret)
	defer fake.Close()
	var progress bytes.Buffer
	rep, err := loadgen.Bench(context.Background(), loadgen.Config{
		Scenario: loadgen.ScenarioReads, Target: fake.URL, Secret: testSecret,
		Rate: 300, Duration: 1100 * time.Millisecond, Concurrency: 16, SKUs: 30, Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	// On a busy machine a few ops may find every slot taken (client_overload).
	if rep.Run.Sent+rep.Run.Dropped != 330 || rep.Run.Count("ok") != rep.Run.Sent {
		t.Errorf("reads: sent %d dropped %d outcomes %+v, want 330 intended, all sent ok", rep.Run.Sent, rep.Run.Dropped, rep.Run.Outcomes)
	}
	if !strings.Contains(progress.String(), "run ") || strings.Contains(progress.String(), "\r") {
		t.Errorf("progress (not a terminal) = %q, want plain lines", progress.String())
	}

	rep, err = loadgen.Bench(context.Background(), loadgen.Config{
		Scenario: loadgen.ScenarioMixed, Target: fake.URL, Secret: testSecret,
		Rate: 500, Duration: 400 * time.Millisecond, Concurrency: 16, SKUs: 20, Buyers: 10, ReadFraction: 0.5,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Run.Count("ok") == 0 || rep.Run.Count("accepted") == 0 || rep.Run.Count("ok")+rep.Run.Count("accepted") != rep.Run.Sent {
		t.Errorf("mixed outcomes %+v", rep.Run.Outcomes)
	}
}

func TestOrdersScenario(t *testing.T) {
	fake := loadgentest.NewServer(testSecret)
	defer fake.Close()
	rep, err := loadgen.Bench(context.Background(), loadgen.Config{
		Scenario: loadgen.ScenarioOrders, Target: fake.URL, Secret: testSecret,
		Rate: 500, Duration: 300 * time.Millisecond, Concurrency: 16, Buyers: 5,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Run.Count("accepted") == 0 || rep.Run.Count("accepted") != rep.Run.Sent {
		t.Errorf("orders outcomes %+v", rep.Run.Outcomes)
	}
	if int64(fake.Accepted()) != rep.Run.Count("accepted") {
		t.Errorf("fake has %d orders, client counted %d", fake.Accepted(), rep.Run.Count("accepted"))
	}
}

var externalRef = regexp.MustCompile(`(?i)(src|href|xlink:href)\s*=\s*["']?\s*(https?:)?//`)

func TestHTMLReportSelfContained(t *testing.T) {
	fake := loadgentest.NewServer(testSecret)
	defer fake.Close()
	rep, err := loadgen.Bench(context.Background(), loadgen.Config{
		// 64 in flight: even if a loaded machine drops most of the schedule,
		// the 64 sent are more than the stock, so some are sold_out.
		Target: fake.URL, Secret: testSecret, Rate: 1000, Concurrency: 64, Buyers: 100, Stock: 20,
		RepeatFraction: 0.1, RetryFraction: 0.1, Baseline: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := rep.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	if m := externalRef.FindString(html); m != "" {
		t.Errorf("external reference %q in report", m)
	}
	for _, bad := range []string{"<script", "<link", "@import", "url("} {
		if strings.Contains(html, bad) {
			t.Errorf("report contains %q", bad)
		}
	}
	if n := strings.Count(html, "<svg"); n != 6 {
		t.Errorf("%d charts, want 6 (3 for the run, 3 for the baseline)", n)
	}
	for _, s := range []string{"<polyline", "sold_out", "accepted", "ratio to baseline", "audit: "} {
		if !strings.Contains(html, s) {
			t.Errorf("report lacks %q", s)
		}
	}
	// Well-formed: the report is written as XHTML-compatible markup, so a
	// strict XML decoder must read it to the end with balanced tags.
	d := xml.NewDecoder(strings.NewReader(html))
	d.Strict = true
	d.Entity = xml.HTMLEntity
	depth := 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("report is not well-formed: %v", err)
		}
		switch tok.(type) {
		case xml.StartElement:
			depth++
		case xml.EndElement:
			depth--
		}
	}
	if depth != 0 {
		t.Errorf("unbalanced tags: depth %d at end", depth)
	}
}

func TestZipfSkew(t *testing.T) {
	if testing.Short() {
		t.Skip("load test: 0.5 s of timed load")
	}
	// The hottest SKU must get far more reads than a uniform share.
	fake := loadgentest.NewServer(testSecret)
	defer fake.Close()
	rep, err := loadgen.Bench(context.Background(), loadgen.Config{
		Scenario: loadgen.ScenarioReads, Target: fake.URL, Secret: testSecret,
		Rate: 400, Duration: 500 * time.Millisecond, Concurrency: 16, SKUs: 100, ZipfS: 1.5, Seed: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	reads := fake.ProductReads()
	hot, hottest := "", 0
	for sku, n := range reads {
		if n > hottest {
			hot, hottest = sku, n
		}
	}
	// Zipf(s=1.5) over 100 SKUs gives rank 0 about 40% of reads; uniform would be 1%.
	if total := rep.Run.Count("ok"); total < 50 || !strings.HasSuffix(hot, "-0") || float64(hottest) < 0.25*float64(total) {
		t.Errorf("hottest SKU %s with %d of %d reads, want the rank-0 SKU with ≥ 25%%", hot, hottest, total)
	}
}

func TestContractChecksFlagServerBugs(t *testing.T) {
	fake := loadgentest.NewServer(testSecret)
	defer fake.Close()
	// Product reads answer 500 (a bug) or 503 without Retry-After (a contract breach).
	var n atomic.Int64
	wrap := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			if n.Add(1)%2 == 0 {
				w.WriteHeader(http.StatusInternalServerError)
				io.WriteString(w, `{"error":{"code":"internal","message":"x"}}`)
				return
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":{"code":"unavailable","message":"x"}}`)
			return
		}
		fake.Config.Handler.ServeHTTP(w, r)
	}))
	defer wrap.Close()
	rep, err := loadgen.Bench(context.Background(), loadgen.Config{
		Scenario: loadgen.ScenarioReads, Target: wrap.URL, Secret: testSecret,
		Rate: 200, Duration: 200 * time.Millisecond, Concurrency: 8, SKUs: 5,
	})
	if err != nil {
		t.Fatal(err)
	}
	if c := checkByName(t, rep, "no_internal_errors"); c.OK || !strings.Contains(c.Detail, "internal=") {
		t.Errorf("no_internal_errors = %+v, want a failure naming internal", c)
	}
	if c := checkByName(t, rep, "retry_after"); c.OK {
		t.Errorf("retry_after = %+v, want a failure", c)
	}
	if rep.OK() {
		t.Error("report OK despite server bugs")
	}
}

func TestHTMLReportEmptyRun(t *testing.T) {
	// A run where nothing answered: no latencies, charts with no data points.
	rep := &loadgen.Report{
		Scenario: "orders", Target: "http://127.0.0.1:1", Started: time.Unix(0, 0).UTC(),
		Run: &loadgen.Stats{Mode: "closed", Concurrency: 1, Interval: time.Second,
			Outcomes: []loadgen.Outcome{{Name: "transport_error", Count: 3}},
			Series:   []loadgen.Point{{T: 0, Outcomes: map[string]int64{"transport_error": 3}}}},
	}
	var b bytes.Buffer
	if err := rep.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "transport_error") {
		t.Error("report lacks the outcome")
	}
	d := xml.NewDecoder(&b)
	d.Strict, d.Entity = true, xml.HTMLEntity
	for {
		if _, err := d.Token(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("not well-formed: %v", err)
		}
	}
}

// TestSalePageScenario: setup creates one product and one sale, then every
// operation reads that sale's page.
func TestSalePageScenario(t *testing.T) {
	fake := loadgentest.NewServer(testSecret)
	defer fake.Close()
	rep, err := loadgen.Bench(context.Background(), loadgen.Config{
		Scenario: loadgen.ScenarioSalePage, Target: fake.URL, Secret: testSecret,
		Rate: 500, Duration: 300 * time.Millisecond, Concurrency: 16,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Run.Count("ok") == 0 || rep.Run.Count("ok") != rep.Run.Sent {
		t.Errorf("sale-page outcomes %+v, want all ok", rep.Run.Outcomes)
	}
	saleID, _ := rep.Setup["sale_id"].(string)
	if reads := fake.ProductReads(); saleID == "" || int64(reads[saleID]) != rep.Run.Sent || len(reads) != 1 {
		t.Errorf("reads by id %v (setup %v), want %d reads of the one sale", reads, rep.Setup, rep.Run.Sent)
	}
}

// TestLoadChecksThreshold: 5xx answers fail the run only above
// MaxErrorRate of its intended requests (1 % by default).
func TestLoadChecksThreshold(t *testing.T) {
	tests := []struct {
		name      string
		bad       int64 // placements answered 503, of 200
		maxErrors float64
		wantOK    bool
	}{
		{"2 of 200 at the default 1 %", 2, 0, true},
		{"3 of 200 at the default 1 %", 3, 0, false},
		{"1 of 200 with none tolerated", 1, -1, false},
		{"0 of 200 with none tolerated", 0, -1, true},
		{"200 of 200 with the checks off", 200, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := loadgentest.NewServer(testSecret)
			defer fake.Close()
			var n atomic.Int64
			wrap := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/orders") && n.Add(1) <= tt.bad {
					w.Header().Set("Retry-After", "1")
					w.WriteHeader(http.StatusServiceUnavailable)
					io.WriteString(w, `{"error":{"code":"unavailable","message":"x"}}`)
					return
				}
				fake.Config.Handler.ServeHTTP(w, r)
			}))
			defer wrap.Close()
			rep, err := loadgen.Bench(context.Background(), loadgen.Config{
				Target: wrap.URL, Secret: testSecret, Concurrency: 4, Buyers: 200, Stock: 1000,
				RepeatFraction: 0, RetryFraction: 0, MaxErrorRate: tt.maxErrors, DrainTimeout: time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Run.ServerErrors != tt.bad {
				t.Errorf("ServerErrors = %d, want %d", rep.Run.ServerErrors, tt.bad)
			}
			c := checkByName(t, rep, "server_errors")
			if c.OK != tt.wantOK || rep.OK() != tt.wantOK {
				t.Errorf("server_errors %+v, report OK %v; want OK %v", c, rep.OK(), tt.wantOK)
			}
			if want := map[bool]string{true: "PASS", false: "FAIL"}[tt.wantOK]; rep.Result != want {
				t.Errorf("Result %q, want %q", rep.Result, want)
			}
		})
	}
}

// TestLoadChecksFailUnsent: an open-loop run whose in-flight bound is
// always taken (the server holds every request until the client gives up)
// sends almost nothing of its schedule, and fails; with the checks turned
// off (an overload experiment) the same run passes.
func TestLoadChecksFailUnsent(t *testing.T) {
	for _, maxErrors := range []float64{0, 1} {
		fake := loadgentest.NewServer(testSecret)
		wrap := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet {
				<-r.Context().Done() // until the client times out
				return
			}
			fake.Config.Handler.ServeHTTP(w, r)
		}))
		rep, err := loadgen.Bench(context.Background(), loadgen.Config{
			Scenario: loadgen.ScenarioReads, Target: wrap.URL, Secret: testSecret, SKUs: 3,
			Rate: 1000, Duration: 100 * time.Millisecond, Concurrency: 1, Timeout: 300 * time.Millisecond,
			MaxErrorRate: maxErrors,
		})
		wrap.Close()
		fake.Close()
		if err != nil {
			t.Fatal(err)
		}
		if st := rep.Run; st.Unsent < 90 || st.Unsent != st.Dropped || st.Sent+st.Unsent != 100 {
			t.Errorf("sent %d unsent %d dropped %d, want ≥ 90 of 100 unsent, all dropped", st.Sent, st.Unsent, st.Dropped)
		}
		c := checkByName(t, rep, "unsent")
		if wantOK := maxErrors >= 1; c.OK != wantOK || rep.OK() != wantOK {
			t.Errorf("max error rate %v: unsent %+v, report OK %v; want %v", maxErrors, c, rep.OK(), wantOK)
		}
	}
}

// TestInterruptedRunFails: a run cut short (Ctrl-C) reports what it
// measured, with a failed "completed" check and the operations it never
// sent, and Result FAIL.
func TestInterruptedRunFails(t *testing.T) {
	fake := loadgentest.NewServer(testSecret)
	defer fake.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var n atomic.Int64
	wrap := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/orders") && n.Add(1) == 20 {
			cancel()
		}
		fake.Config.Handler.ServeHTTP(w, r)
	}))
	defer wrap.Close()
	rep, err := loadgen.Bench(ctx, loadgen.Config{
		Target: wrap.URL, Secret: testSecret, Concurrency: 2, Buyers: 500, Stock: 1000,
	})
	if !errors.Is(err, context.Canceled) || rep == nil {
		t.Fatalf("Bench() = %v, %v; want the partial report and context.Canceled", rep, err)
	}
	if c := checkByName(t, rep, "completed"); c.OK {
		t.Errorf("completed = %+v, want a failure", c)
	}
	if c := checkByName(t, rep, "unsent"); c.OK || rep.Run.Unsent == 0 {
		t.Errorf("unsent = %+v (Unsent %d), want a failure", c, rep.Run.Unsent)
	}
	if rep.Result != "FAIL" {
		t.Errorf("Result %q, want FAIL", rep.Result)
	}
}
