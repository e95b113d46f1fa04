package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	tokenTTL       = 24 * time.Hour
	firstBuyerID   = 1000 // buyer b has user id buyerID(b); user 1 is the admin
	placementBody  = `{"quantity":1}`
	setupParallel  = 8
	tableSize      = 1 << 16 // pre-generated Zipf draws / read-or-write choices
	maxShownErrors = 5
)

func newWorkload(cfg *Config, admin string) (workload, error) {
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	switch cfg.Scenario {
	case ScenarioFlashSale:
		return newFlashSale(cfg, admin, runID)
	case ScenarioOrders:
		o, err := newOrders(cfg, admin, runID)
		return o, err
	case ScenarioReads:
		return newReads(cfg, admin, runID), nil
	case ScenarioSalePage:
		return newSalePage(cfg, admin, runID), nil
	case ScenarioMixed:
		o, err := newOrders(cfg, admin, runID)
		if err != nil {
			return nil, err
		}
		return &mixed{reads: newReads(cfg, admin, runID), orders: o, readTable: boolTable(cfg.Seed, cfg.ReadFraction)}, nil
	}
	return nil, fmt.Errorf("unknown scenario %q", cfg.Scenario)
}

// buyerID is buyer b's user id: firstBuyerID plus a scramble of b (a
// multiplication by an odd constant, modulo 2^32, so distinct for every
// b). Buyers are numbered in the order they first arrive, and a real sale's
// buyers arrive in no order of their ids: in id order every buyer-keyed
// index of the orders table would take its new entries on the same few
// pages, and persisting would look several times cheaper than it is.
func buyerID(b int) int64 { return firstBuyerID + int64(uint32(b)*0x9E3779B1) }

// buyerAuth pre-signs one token per buyer so the timed phase signs nothing,
// on every core: a default run has 100 000 buyers.
func buyerAuth(secret []byte, n int) ([]string, error) {
	auth := make([]string, n)
	workers := min(runtime.GOMAXPROCS(0), n)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := w; b < n; b += workers {
				tok, err := Token(secret, buyerID(b), false, tokenTTL)
				if err != nil {
					errs[w] = err
					return
				}
				auth[b] = "Bearer " + tok
			}
		}()
	}
	wg.Wait()
	return auth, errors.Join(errs...)
}

type productReq struct {
	SKU        string `json:"sku"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
	Stock      int64  `json:"stock"`
}

type saleReq struct {
	ID           string `json:"id"`
	SKU          string `json:"sku"`
	Stock        int64  `json:"stock"`
	PriceCents   int64  `json:"price_cents"`
	PerUserLimit int64  `json:"per_user_limit"`
}

// createSale creates a product with stock units and a sale of all of them.
func createSale(ctx context.Context, c *Client, admin, id string, stock, limit int) error {
	if _, err := c.JSON(ctx, http.MethodPost, "/v1/products", admin,
		productReq{SKU: id, Name: "spike bench " + id, PriceCents: 1999, Stock: int64(stock)}, nil); err != nil {
		return err
	}
	_, err := c.JSON(ctx, http.MethodPost, "/v1/sales", admin,
		saleReq{ID: id, SKU: id, Stock: int64(stock), PriceCents: 999, PerUserLimit: int64(limit)}, nil)
	return err
}

// ---- flash-sale ----

type fsOp struct {
	buyer   int
	key     string
	retryOf int // index of the op whose key this one resends, or -1
}

type fsResult struct {
	outcome    string
	orderID    string
	sent, done time.Time
}

type flashSale struct {
	cfg     *Config
	admin   string
	saleID  string
	auth    []string
	path    string
	body    []byte
	ops     []fsOp
	results []fsResult
}

func newFlashSale(cfg *Config, admin, runID string) (*flashSale, error) {
	auth, err := buyerAuth(cfg.Secret, cfg.Buyers)
	if err != nil {
		return nil, err
	}
	id := "bench-fs-" + runID
	f := &flashSale{cfg: cfg, admin: admin, saleID: id, auth: auth,
		path: "/v1/sales/" + id + "/orders", body: []byte(placementBody)}
	n := cfg.Buyers
	f.ops = make([]fsOp, 0, n+n/2)
	for b := range n {
		f.ops = append(f.ops, fsOp{buyer: b, key: fmt.Sprintf("%s-%d-0", runID, b), retryOf: -1})
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 1))
	repeats := int(math.Round(cfg.RepeatFraction * float64(n)))
	retries := int(math.Round(cfg.RetryFraction * float64(n)))
	var extra []fsOp
	for _, b := range rng.Perm(n)[:repeats] {
		extra = append(extra, fsOp{buyer: b, key: fmt.Sprintf("%s-%d-1", runID, b), retryOf: -1})
	}
	for _, b := range rng.Perm(n)[:retries] {
		extra = append(extra, fsOp{buyer: b, key: f.ops[b].key, retryOf: b})
	}
	rng.Shuffle(len(extra), func(i, j int) { extra[i], extra[j] = extra[j], extra[i] })
	f.ops = append(f.ops, extra...) // extras follow the first wave, so retries mostly follow their originals
	f.results = make([]fsResult, len(f.ops))
	return f, nil
}

func (f *flashSale) setup(ctx context.Context, c *Client) (map[string]any, error) {
	if err := createSale(ctx, c, f.admin, f.saleID, f.cfg.Stock, f.cfg.PerUserLimit); err != nil {
		return nil, err
	}
	return map[string]any{"sale_id": f.saleID, "sku": f.saleID, "operations": len(f.ops)}, nil
}

func (f *flashSale) total() int { return len(f.ops) }

type placed struct {
	OrderID string `json:"order_id"`
}

func (f *flashSale) op(c *Client, main bool) Op {
	return func(ctx context.Context, i int) string {
		o := f.ops[i]
		sent := time.Now()
		r, _ := c.Do(ctx, http.MethodPost, f.path, f.auth[o.buyer], o.key, f.body)
		if main {
			res := fsResult{outcome: r.Outcome, sent: sent, done: time.Now()}
			if r.Outcome == OutcomeAccepted {
				var p placed
				_ = json.Unmarshal(r.Body, &p)
				res.orderID = p.OrderID
			}
			f.results[i] = res // each index is written by exactly one goroutine
		}
		return r.Outcome
	}
}

// retryable reports whether outcome is an answer that a replayed key may
// legitimately get instead of its earlier 202 (shed, fenced, or no answer).
func retryable(outcome string) bool {
	switch outcome {
	case "rate_limited", "overloaded", "unavailable":
		return true
	}
	return IsTransport(outcome)
}

func (f *flashSale) verify(ctx context.Context, c *Client, rep *Report) {
	// Client-side checks on the answers.
	type owner struct {
		buyer int
		key   string
	}
	byID := make(map[string]owner)
	perBuyer := make(map[int]map[string]bool)
	var dupIDs, missingIDs, violations int
	var violationDetail []string
	for i, r := range f.results {
		if r.outcome != OutcomeAccepted {
			continue
		}
		o := f.ops[i]
		if r.orderID == "" {
			missingIDs++
			continue
		}
		if prev, ok := byID[r.orderID]; ok && prev != (owner{o.buyer, o.key}) {
			dupIDs++
		}
		byID[r.orderID] = owner{o.buyer, o.key}
		if perBuyer[o.buyer] == nil {
			perBuyer[o.buyer] = make(map[string]bool)
		}
		perBuyer[o.buyer][r.orderID] = true
	}
	for i, o := range f.ops {
		if o.retryOf < 0 {
			continue
		}
		orig, re := f.results[o.retryOf], f.results[i]
		bad := false
		switch {
		case orig.outcome == OutcomeAccepted && re.outcome == OutcomeAccepted:
			bad = orig.orderID != re.orderID
		case orig.outcome == OutcomeAccepted && re.sent.After(orig.done):
			bad = !retryable(re.outcome) // a replay of a 202 must get the 202 again
		}
		if bad {
			violations++
			if len(violationDetail) < maxShownErrors {
				violationDetail = append(violationDetail, fmt.Sprintf("buyer %d key %s: first %s %s, retry %s %s",
					buyerID(o.buyer), o.key, orig.outcome, orig.orderID, re.outcome, re.orderID))
			}
		}
	}
	overLimit := 0
	for _, ids := range perBuyer {
		if len(ids) > f.cfg.PerUserLimit {
			overLimit++
		}
	}
	rep.Checks = append(rep.Checks,
		Check{Name: "no_oversell_client", OK: len(byID) <= f.cfg.Stock,
			Detail: fmt.Sprintf("%d distinct accepted order ids, stock %d", len(byID), f.cfg.Stock)},
		Check{Name: "per_user_limit_client", OK: overLimit == 0,
			Detail: fmt.Sprintf("%d buyers hold more than %d accepted orders", overLimit, f.cfg.PerUserLimit)},
		Check{Name: "unique_order_ids", OK: dupIDs == 0 && missingIDs == 0,
			Detail: fmt.Sprintf("%d order ids returned for different keys, %d 202s without order_id", dupIDs, missingIDs)},
		Check{Name: OutcomeIdempotencyFail, OK: violations == 0,
			Detail: strings.TrimSpace(fmt.Sprintf("%d retries answered differently from their first 202 %s", violations, strings.Join(violationDetail, "; ")))},
	)

	// Server-side audit, once the stream has drained.
	rep.Audit, rep.AuditError = waitAudit(ctx, c, f.admin, f.cfg.DrainTimeout)

	// Every accepted order must be readable by its buyer.
	if f.cfg.VerifyOrders >= 0 {
		ids := make([]string, 0, len(byID))
		for id := range byID {
			ids = append(ids, id)
		}
		rep.Checks = append(rep.Checks, f.readBack(ctx, c, ids, func(id string) int { return byID[id].buyer }))
	}
}

// readBack reads accepted orders back as their buyers (all of them, or a
// sample of VerifyOrders) and checks each one's fields.
func (f *flashSale) readBack(ctx context.Context, c *Client, ids []string, buyerOf func(string) int) Check {
	accepted := len(ids)
	sort.Strings(ids)
	if n := f.cfg.VerifyOrders; n > 0 && n < len(ids) {
		rng := rand.New(rand.NewPCG(f.cfg.Seed, 2))
		rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		ids = ids[:n]
	}
	var mu sync.Mutex
	var bad int
	var detail []string
	status := make(map[string]int)
	sem := make(chan struct{}, setupParallel)
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			b := buyerOf(id)
			var got struct {
				OrderID  string          `json:"order_id"`
				SaleID   string          `json:"sale_id"`
				UserID   json.RawMessage `json:"user_id"`
				Quantity int             `json:"quantity"`
				Status   string          `json:"status"`
			}
			_, err := c.JSON(ctx, http.MethodGet, "/v1/orders/"+url.PathEscape(id), f.auth[b], nil, &got)
			uid := strings.Trim(string(got.UserID), `"`)
			if err == nil && (got.OrderID != id || got.SaleID != f.saleID || got.Quantity != 1 || uid != strconv.FormatInt(buyerID(b), 10)) {
				err = fmt.Errorf("order %s: got order_id %q sale_id %q user_id %s quantity %d", id, got.OrderID, got.SaleID, got.UserID, got.Quantity)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				bad++
				if len(detail) < maxShownErrors {
					detail = append(detail, err.Error())
				}
				return
			}
			status[got.Status]++
		}()
	}
	wg.Wait()
	keys := make([]string, 0, len(status))
	for k := range status {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var st []string
	for _, k := range keys {
		st = append(st, fmt.Sprintf("%s=%d", k, status[k]))
	}
	d := fmt.Sprintf("%d of %d accepted orders read back, %d failed; statuses: %s", len(ids), accepted, bad, strings.Join(st, " "))
	if len(detail) > 0 {
		d += "; " + strings.Join(detail, "; ")
	}
	return Check{Name: "orders_readable", OK: bad == 0, Detail: d}
}

// waitAudit polls GET /v1/admin/audit until it reports ok or timeout passes
// (pending orders make "no stuck work" fail until the stream drains), and
// returns the last answer.
func waitAudit(ctx context.Context, c *Client, admin string, timeout time.Duration) (*Audit, string) {
	deadline := time.Now().Add(timeout)
	for {
		var a Audit
		_, err := c.JSON(ctx, http.MethodGet, "/v1/admin/audit", admin, nil, &a)
		if err == nil && (a.OK || time.Now().After(deadline)) {
			return &a, ""
		}
		if err != nil && time.Now().After(deadline) {
			return nil, err.Error()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err().Error()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ---- orders ----

type orders struct {
	cfg    *Config
	admin  string
	saleID string
	runID  string
	auth   []string
	path   string
	body   []byte
}

func newOrders(cfg *Config, admin, runID string) (*orders, error) {
	auth, err := buyerAuth(cfg.Secret, cfg.Buyers)
	if err != nil {
		return nil, err
	}
	id := "bench-orders-" + runID
	return &orders{cfg: cfg, admin: admin, saleID: id, runID: runID, auth: auth,
		path: "/v1/sales/" + id + "/orders", body: []byte(placementBody)}, nil
}

func (o *orders) setup(ctx context.Context, c *Client) (map[string]any, error) {
	if err := createSale(ctx, c, o.admin, o.saleID, o.cfg.Stock, o.cfg.PerUserLimit); err != nil {
		return nil, err
	}
	return map[string]any{"sale_id": o.saleID}, nil
}

func (o *orders) total() int { return 0 }

func (o *orders) op(c *Client, _ bool) Op {
	return func(ctx context.Context, i int) string {
		r, _ := c.Do(ctx, http.MethodPost, o.path, o.auth[i%len(o.auth)], o.runID+"-"+strconv.Itoa(i), o.body)
		return r.Outcome
	}
}

func (o *orders) verify(context.Context, *Client, *Report) {}

// ---- reads ----

type reads struct {
	cfg   *Config
	admin string
	skus  []string
	paths []string
	draws []int32 // pre-generated Zipf draws: index into skus
}

func newReads(cfg *Config, admin, runID string) *reads {
	r := &reads{cfg: cfg, admin: admin}
	for n := range cfg.SKUs {
		sku := fmt.Sprintf("bench-r-%s-%d", runID, n)
		r.skus = append(r.skus, sku)
		r.paths = append(r.paths, "/v1/products/"+sku)
	}
	r.draws = zipfTable(cfg.Seed, cfg.ZipfS, len(r.skus))
	return r
}

// zipfTable returns tableSize draws from a Zipf distribution over [0, n)
// with exponent s (rank 0 hottest).
func zipfTable(seed uint64, s float64, n int) []int32 {
	z := rand.NewZipf(rand.New(rand.NewPCG(seed, 3)), s, 1, uint64(n-1))
	t := make([]int32, tableSize)
	for i := range t {
		t[i] = int32(z.Uint64())
	}
	return t
}

func boolTable(seed uint64, p float64) []bool {
	rng := rand.New(rand.NewPCG(seed, 4))
	t := make([]bool, tableSize)
	for i := range t {
		t[i] = rng.Float64() < p
	}
	return t
}

func (r *reads) setup(ctx context.Context, c *Client) (map[string]any, error) {
	sem := make(chan struct{}, setupParallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for _, sku := range r.skus {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			_, err := c.JSON(ctx, http.MethodPost, "/v1/products", r.admin,
				productReq{SKU: sku, Name: "spike bench " + sku, PriceCents: 500, Stock: 1000}, nil)
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	return map[string]any{"skus": len(r.skus), "sku_prefix": strings.TrimSuffix(r.skus[0], "0")}, nil
}

func (r *reads) total() int { return 0 }

func (r *reads) op(c *Client, _ bool) Op {
	return func(ctx context.Context, i int) string {
		res, _ := c.Do(ctx, http.MethodGet, r.paths[r.draws[i%len(r.draws)]], "", "", nil)
		return res.Outcome
	}
}

func (r *reads) verify(context.Context, *Client, *Report) {}

// ---- mixed ----

type mixed struct {
	reads     *reads
	orders    *orders
	readTable []bool
}

func (m *mixed) setup(ctx context.Context, c *Client) (map[string]any, error) {
	a, err := m.reads.setup(ctx, c)
	if err != nil {
		return nil, err
	}
	b, err := m.orders.setup(ctx, c)
	if err != nil {
		return nil, err
	}
	for k, v := range b {
		a[k] = v
	}
	return a, nil
}

func (m *mixed) total() int { return 0 }

func (m *mixed) op(c *Client, main bool) Op {
	rd, wr := m.reads.op(c, main), m.orders.op(c, main)
	return func(ctx context.Context, i int) string {
		// Use a different stride than the Zipf table so the two choices are independent.
		if m.readTable[(i*7919)%len(m.readTable)] {
			return rd(ctx, i)
		}
		return wr(ctx, i)
	}
}

func (m *mixed) verify(context.Context, *Client, *Report) {}

// ---- sale-page ----

// salePage is a flash sale's countdown page: every buyer polls one sale,
// GET /v1/sales/{id}, anonymously.
type salePage struct {
	cfg    *Config
	admin  string
	saleID string
	path   string
}

func newSalePage(cfg *Config, admin, runID string) *salePage {
	id := "bench-page-" + runID
	return &salePage{cfg: cfg, admin: admin, saleID: id, path: "/v1/sales/" + id}
}

func (p *salePage) setup(ctx context.Context, c *Client) (map[string]any, error) {
	if err := createSale(ctx, c, p.admin, p.saleID, p.cfg.Stock, p.cfg.PerUserLimit); err != nil {
		return nil, err
	}
	return map[string]any{"sale_id": p.saleID}, nil
}

func (p *salePage) total() int { return 0 }

func (p *salePage) op(c *Client, _ bool) Op {
	return func(ctx context.Context, _ int) string {
		res, _ := c.Do(ctx, http.MethodGet, p.path, "", "", nil)
		return res.Outcome
	}
}

func (p *salePage) verify(context.Context, *Client, *Report) {}
