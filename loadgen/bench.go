package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Scenario names accepted by [Config].Scenario.
const (
	ScenarioFlashSale = "flash-sale"
	ScenarioOrders    = "orders"
	ScenarioReads     = "reads"
	ScenarioMixed     = "mixed"
	ScenarioSalePage  = "sale-page"
)

// Defaults of [Config].
const (
	// DefaultBuyers is large enough that a token or a buyer's server-side
	// state is used once or twice in a run, as in a real flash sale, so no
	// per-buyer cache can flatter the figures.
	DefaultBuyers = 100_000
	// DefaultMaxErrorRate is the default of [Config].MaxErrorRate.
	DefaultMaxErrorRate = 0.01
)

// Config configures one benchmark. The zero value of each field means the
// documented default.
type Config struct {
	Scenario     string        // flash-sale (default), orders, reads, mixed, sale-page
	Target       string        // base URL of the server, such as http://127.0.0.1:8080
	Secret       []byte        // HS256 secret the server verifies tokens with (required)
	Rate         float64       // open loop at Rate requests/s; 0: closed loop
	Concurrency  int           // closed-loop workers / open-loop in-flight bound; default 64
	Duration     time.Duration // orders, reads, mixed, sale-page: run length; default 10 s
	Buyers       int           // distinct buyers; default DefaultBuyers
	Stock        int           // sale stock; default 100 (flash-sale, sale-page), 10 000 000 (orders, mixed)
	PerUserLimit int           // sale per-user limit; default 1 (flash-sale), 1 000 000 (orders, mixed)
	// RepeatFraction is the fraction of flash-sale buyers who place a second
	// order with a new idempotency key (to hit the per-user limit).
	RepeatFraction float64
	// RetryFraction is the fraction of flash-sale buyers who resend their
	// first request with the same key (must get the same order id).
	RetryFraction float64
	SKUs          int           // reads, mixed: products created in setup; default 1000
	ZipfS         float64       // reads, mixed: Zipf exponent (> 1); default 1.1
	ReadFraction  float64       // mixed: fraction of reads; default 0.9 (set <0 for 0)
	Baseline      bool          // also drive an in-process trivial handler and report ratios
	Timeout       time.Duration // per request; default 10 s
	// VerifyOrders is how many accepted flash-sale orders to read back with
	// GET /v1/orders/{id}: 0 means all, < 0 none.
	VerifyOrders int
	// DrainTimeout bounds the wait for GET /v1/admin/audit to report ok
	// after a flash sale; default 30 s.
	DrainTimeout time.Duration
	Seed         uint64 // seeds Zipf and shuffles; 0: time-based
	// MaxErrorRate is the share of the timed run's intended requests that
	// may end as transport errors (no answer), as unsent (open loop: no free
	// in-flight slot; or never reached), or as 5xx answers, each counted on
	// its own, before the run fails: a run that could not deliver its load
	// measures nothing. 0 means the default, 1 %; < 0 tolerates none; 1 or
	// more turns the checks off (an overload experiment expects shedding).
	MaxErrorRate float64
	// Interval is the width of each time-series point; default 100 ms for
	// flash-sale (a spike is often over in a second), 1 s otherwise.
	Interval time.Duration
	// Progress, if set, receives a progress line about once a second; when
	// TTY is true the line is rewritten in place with \r.
	Progress io.Writer
	TTY      bool
}

func (c *Config) defaults() error {
	if c.Scenario == "" {
		c.Scenario = ScenarioFlashSale
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Buyers <= 0 {
		c.Buyers = DefaultBuyers
	}
	if c.MaxErrorRate == 0 {
		c.MaxErrorRate = DefaultMaxErrorRate
	} else if c.MaxErrorRate < 0 {
		c.MaxErrorRate = 0
	}
	bulk := c.Scenario == ScenarioOrders || c.Scenario == ScenarioMixed
	if c.Stock <= 0 {
		c.Stock = 100
		if bulk {
			c.Stock = 10_000_000
		}
	}
	if c.PerUserLimit <= 0 {
		c.PerUserLimit = 1
		if bulk {
			c.PerUserLimit = 1_000_000
		}
	}
	if c.SKUs <= 0 {
		c.SKUs = 1000
	}
	if c.ZipfS == 0 {
		c.ZipfS = 1.1
	}
	if c.ReadFraction == 0 {
		c.ReadFraction = 0.9
	} else if c.ReadFraction < 0 {
		c.ReadFraction = 0
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.Interval <= 0 {
		c.Interval = time.Second
		if c.Scenario == ScenarioFlashSale {
			c.Interval = 100 * time.Millisecond
		}
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	switch {
	case len(c.Secret) == 0:
		return errors.New("no JWT secret")
	case c.Target == "":
		return errors.New("no target URL")
	case c.ZipfS <= 1:
		return errors.New("zipf-s must be > 1")
	case c.ReadFraction > 1:
		return errors.New("read-fraction must be ≤ 1")
	case c.RepeatFraction < 0 || c.RepeatFraction > 1 || c.RetryFraction < 0 || c.RetryFraction > 1:
		return errors.New("repeat-fraction and retry-fraction must be in [0, 1]")
	case c.Rate < 0:
		return errors.New("rate must be ≥ 0")
	}
	switch c.Scenario {
	case ScenarioFlashSale, ScenarioOrders, ScenarioReads, ScenarioMixed, ScenarioSalePage:
	default:
		return fmt.Errorf("unknown scenario %q (want flash-sale, orders, reads, mixed or sale-page)", c.Scenario)
	}
	c.Target = strings.TrimRight(c.Target, "/")
	return nil
}

// Check is one pass/fail verification, client-side or from the server's audit.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Audit is the answer of GET /v1/admin/audit.
type Audit struct {
	OK     bool    `json:"ok"`
	Checks []Check `json:"checks"`
}

// Ratios compares a run to the baseline run of the same shape.
type Ratios struct {
	// Throughput is responses/s of the run divided by the baseline's.
	Throughput float64 `json:"throughput"`
	// Latency percentiles of the run divided by the baseline's (> 1: slower).
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
	// Outcomes maps each outcome to its rate divided by the baseline's
	// throughput (e.g. accepted: placements/s as a fraction of what a trivial
	// handler answers).
	Outcomes map[string]float64 `json:"outcomes"`
}

// Report is the result of [Bench].
type Report struct {
	Scenario string         `json:"scenario"`
	Target   string         `json:"target"`
	Started  time.Time      `json:"started"`
	Params   map[string]any `json:"params"`
	Setup    map[string]any `json:"setup,omitempty"` // ids created in setup
	Run      *Stats         `json:"run"`
	Baseline *Stats         `json:"baseline,omitempty"`
	Ratios   *Ratios        `json:"ratios,omitempty"`
	// Checks are client-side verifications (flash-sale).
	Checks     []Check `json:"checks,omitempty"`
	Audit      *Audit  `json:"audit,omitempty"`
	AuditError string  `json:"audit_error,omitempty"`
	// Result is "PASS" when [Report.OK], else "FAIL", as of the end of [Bench].
	Result string `json:"result"`
}

// OK reports whether every client check and the audit (when fetched) passed.
func (r *Report) OK() bool {
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	if r.AuditError != "" {
		return false
	}
	return r.Audit == nil || r.Audit.OK
}

// workload is one scenario: setup through the API, the operation, checks.
type workload interface {
	setup(ctx context.Context, c *Client) (map[string]any, error)
	total() int // fixed number of operations, or 0 for duration-bound runs
	// op returns the operation against c; main is false for the baseline
	// run, whose answers are not kept for verification.
	op(c *Client, main bool) Op
	verify(ctx context.Context, c *Client, rep *Report)
}

// Bench runs one benchmark: scenario setup against cfg.Target, an optional
// baseline run against an in-process trivial handler with the same load
// shape, the timed run, and the scenario's checks.
// It returns an error when setup fails or ctx is cancelled (with the
// partial Report when the timed run had started); failed checks are
// reported in the Report, not as an error.
func Bench(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	admin, err := Token(cfg.Secret, 1, true, 24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("sign admin token: %w", err)
	}
	w, err := newWorkload(&cfg, "Bearer "+admin)
	if err != nil {
		return nil, err
	}
	client := NewClient(cfg.Target, cfg.Concurrency, cfg.Timeout)
	defer client.Close()

	rep := &Report{
		Scenario: cfg.Scenario,
		Target:   cfg.Target,
		Started:  time.Now().UTC(),
		Params:   cfg.params(),
	}
	if rep.Setup, err = w.setup(ctx, client); err != nil {
		return nil, fmt.Errorf("setup %s: %w", cfg.Scenario, err)
	}

	plan := Plan{Rate: cfg.Rate, Concurrency: cfg.Concurrency, Total: w.total(), Interval: cfg.Interval}
	if plan.Total == 0 {
		plan.Duration = cfg.Duration
	}

	if cfg.Baseline {
		url, stop, err := StartBaseline()
		if err != nil {
			return nil, fmt.Errorf("start baseline: %w", err)
		}
		bc := NewClient(url, cfg.Concurrency, cfg.Timeout)
		bp := plan
		bp.Op = w.op(bc, false)
		bp.OnTick = cfg.ticker("baseline")
		rep.Baseline, err = Run(ctx, bp)
		cfg.endProgress()
		bc.Close()
		stop()
		if err != nil {
			return nil, fmt.Errorf("baseline run: %w", err)
		}
		rep.Baseline.Target = url
	}

	plan.Op = w.op(client, true)
	plan.OnTick = cfg.ticker("run")
	before5xx := client.ServerErrors()
	rep.Run, err = Run(ctx, plan)
	cfg.endProgress()
	if rep.Run == nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	rep.Run.Target = cfg.Target
	rep.Run.ServerErrors = client.ServerErrors() - before5xx
	if rep.Baseline != nil {
		rep.Ratios = ratios(rep.Run, rep.Baseline)
	}
	rep.Checks = loadChecks(rep.Run, cfg.MaxErrorRate)
	if err != nil { // interrupted: report what was measured, skip the scenario's checks
		rep.Checks = append(rep.Checks, Check{Name: "completed", Detail: "interrupted: " + err.Error()})
		rep.Result = passFail(rep.OK())
		return rep, fmt.Errorf("run: %w", err)
	}
	w.verify(ctx, client, rep)
	rep.Checks = append(rep.Checks, contractChecks(rep.Run, client)...)
	rep.Result = passFail(rep.OK())
	return rep, ctx.Err()
}

// loadChecks fail a run that did not deliver its load: more than max of
// its intended requests got no answer, were never sent, or were answered
// 5xx. Such a run's throughput and ratios describe a failure, not the
// server (a dead server answers nothing very fast).
func loadChecks(st *Stats, max float64) []Check {
	intended := st.Sent + st.Unsent
	limit := fmt.Sprintf("limit %s", pct(max))
	if max >= 1 {
		limit = "no limit (--max-error-rate ≥ 1)"
	}
	check := func(name string, n int64, what string) Check {
		ok := intended > 0 && (max >= 1 || float64(n) <= max*float64(intended))
		return Check{Name: name, OK: ok, Detail: fmt.Sprintf("%d of %d intended requests (%s) %s; %s",
			n, intended, pct(frac(n, intended)), what, limit)}
	}
	transport := st.Count(OutcomeTimeout) + st.Count(OutcomeTransport)
	return []Check{
		check("transport_errors", transport, fmt.Sprintf("got no answer (timeout %d, transport_error %d)",
			st.Count(OutcomeTimeout), st.Count(OutcomeTransport))),
		check("unsent", st.Unsent, fmt.Sprintf("were never sent (client_overload %d)", st.Dropped)),
		check("server_errors", st.ServerErrors, "were answered 5xx"),
	}
}

func frac(n, of int64) float64 {
	if of == 0 {
		return 0
	}
	return float64(n) / float64(of)
}

func pct(f float64) string { return fmt.Sprintf("%.2f %%", 100*f) }

// contractChecks are API.md rules every scenario checks: no 500s (a 5xx
// other than 503 is a bug) and Retry-After on every 429 and 503.
func contractChecks(st *Stats, c *Client) []Check {
	var bugs int64
	var names []string
	for _, o := range st.Outcomes {
		if o.Name == "internal" || (strings.HasPrefix(o.Name, "http_5") && o.Name != "http_503") {
			bugs += o.Count
			names = append(names, fmt.Sprintf("%s=%d", o.Name, o.Count))
		}
	}
	return []Check{
		{Name: "no_internal_errors", OK: bugs == 0, Detail: strings.TrimSpace(fmt.Sprintf("%d answers were 5xx other than 503 %s", bugs, strings.Join(names, " ")))},
		{Name: "retry_after", OK: c.MissingRetryAfter() == 0, Detail: fmt.Sprintf("%d 429/503 answers without Retry-After", c.MissingRetryAfter())},
	}
}

func (c *Config) params() map[string]any {
	p := map[string]any{
		"rate":           c.Rate,
		"concurrency":    c.Concurrency,
		"buyers":         c.Buyers,
		"timeout":        c.Timeout.String(),
		"baseline":       c.Baseline,
		"seed":           c.Seed,
		"max_error_rate": c.MaxErrorRate,
	}
	switch c.Scenario {
	case ScenarioFlashSale:
		p["stock"], p["per_user_limit"] = c.Stock, c.PerUserLimit
		p["repeat_fraction"], p["retry_fraction"] = c.RepeatFraction, c.RetryFraction
	case ScenarioOrders:
		p["duration"], p["stock"], p["per_user_limit"] = c.Duration.String(), c.Stock, c.PerUserLimit
	case ScenarioReads:
		p["duration"], p["skus"], p["zipf_s"] = c.Duration.String(), c.SKUs, c.ZipfS
	case ScenarioMixed:
		p["duration"], p["skus"], p["zipf_s"], p["read_fraction"] = c.Duration.String(), c.SKUs, c.ZipfS, c.ReadFraction
		p["stock"], p["per_user_limit"] = c.Stock, c.PerUserLimit
	case ScenarioSalePage:
		p["duration"], p["stock"] = c.Duration.String(), c.Stock
	}
	return p
}

func ratios(run, base *Stats) *Ratios {
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	d := func(a, b time.Duration) float64 { return div(float64(a), float64(b)) }
	r := &Ratios{
		Throughput: div(run.Throughput, base.Throughput),
		P50:        d(run.Latency.P50, base.Latency.P50),
		P90:        d(run.Latency.P90, base.Latency.P90),
		P99:        d(run.Latency.P99, base.Latency.P99),
		P999:       d(run.Latency.P999, base.Latency.P999),
		Max:        d(run.Latency.Max, base.Latency.Max),
		Outcomes:   make(map[string]float64),
	}
	for _, o := range run.Outcomes {
		r.Outcomes[o.Name] = div(o.Rate, base.Throughput)
	}
	return r
}

// StartBaseline starts a trivial net/http server on 127.0.0.1:0 that
// answers every request 202 with a small JSON body, the reference for "how
// fast can this machine's HTTP stack answer at all". It returns the base URL
// and a function that stops it.
func StartBaseline() (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	body := []byte(`{"order_id":"baseline","sale_id":"baseline","quantity":1,"status":"pending"}`)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header()["Content-Type"] = []string{"application/json"}
			w.WriteHeader(http.StatusAccepted)
			_, _ = w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

func (c *Config) ticker(label string) func(*Recorder) {
	if c.Progress == nil {
		return nil
	}
	return func(r *Recorder) {
		p := r.Progress(time.Now())
		line := fmt.Sprintf("%-8s %5.0fs sent=%d responses=%d rate=%.0f/s p99=%s dropped=%d errors=%d",
			label, p.Elapsed.Seconds(), p.Sent, p.Responses, p.LastRate, fmtDur(p.P99), p.Dropped, p.Errors)
		if c.TTY {
			fmt.Fprintf(c.Progress, "\r%-100s", line)
		} else {
			fmt.Fprintln(c.Progress, line)
		}
	}
}

func (c *Config) endProgress() {
	if c.Progress != nil && c.TTY {
		fmt.Fprint(c.Progress, "\r"+strings.Repeat(" ", 100)+"\r")
	}
}
