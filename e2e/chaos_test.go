package e2e_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/testkit/apitest"
	"github.com/spikehq/spike/internal/testkit/history"

	"golang.org/x/sync/errgroup"
)

// TestChaos is Jepsen's idea on loopback: buyers place, replay, pay and
// cancel through HAProxy while a schedule generated from a seed kills and
// restarts instances, restarts Redis empty, pauses and restarts MariaDB,
// restarts NATS and slows one instance's links, one instance's clock
// skewed all along. Every request and answer is recorded; once the faults
// heal and the stream drains, internal/testkit/history's checker proves
// from that history and a final read through the API that the promises
// held. A failing seed replays the same schedule:
//
//	SPIKE_TEST_CLUSTER=1 SPIKE_CHAOS_SEED=<n> go test -count=1 -v ./e2e -run TestChaos
//	SPIKE_TEST_CLUSTER=1 SPIKE_CHAOS_DURATION=10m go test -count=1 -v -timeout 30m ./e2e -run TestChaos
func TestChaos(t *testing.T) {
	bins := requireCluster(t)
	seed, dur := chaosParams(t)
	const instances = 3
	plan := planChaos(seed, dur, instances)
	replay := fmt.Sprintf("SPIKE_TEST_CLUSTER=1 SPIKE_CHAOS_SEED=%d SPIKE_CHAOS_DURATION=%s go test -count=1 -v ./e2e -run TestChaos", seed, dur)
	t.Logf("chaos seed %d, %s of faults; replay: %s", seed, dur, replay)
	t.Logf("schedule:\n%s", plan)

	began := time.Now()
	cl := startClusterWith(t, bins, clusterOptions{instances: instances, links: true, env: func(i int) []string {
		if i == plan.skewed {
			return []string{"SPIKE_TEST_CLOCK_SKEW=" + plan.skew.String()}
		}
		return nil
	}})
	t.Logf("cluster up in %v", time.Since(began).Round(time.Millisecond))
	h := history.New()
	run := &chaosRun{t: t, cl: cl, c: newClient(t, cl.lbAddr, cl.secret), h: h, sale: "chaos", stop: make(chan struct{}), unresolved: map[placeKey]bool{}}
	t.Cleanup(func() {
		if t.Failed() {
			cl.dumpLogs(t, 60)
			for _, sp := range cl.spikes { // the errors behind any 500
				for _, l := range sp.grep("request failed", 5) {
					t.Logf("spike %s: %s", sp.name, l)
				}
			}
			path := filepath.Join(os.TempDir(), fmt.Sprintf("spike-chaos-%d.jsonl", seed))
			if f, err := os.Create(path); err == nil {
				h.WriteJSONL(f)
				f.Close()
				t.Logf("history of %d ops: %s", h.Len(), path)
			}
			t.Logf("replay this schedule: %s", replay)
		}
	})
	run.setup()

	var buyers sync.WaitGroup
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(run.stop) }) }
	t.Cleanup(func() { halt(); buyers.Wait() }) // a fatal error mid-schedule stops the buyers too
	for g := range chaosBuyers {
		buyers.Go(func() { run.buyer(g, rand.New(rand.NewPCG(uint64(seed), uint64(g)))) })
	}
	ran := run.inject(plan)
	halt()
	buyers.Wait()
	run.heal()
	t.Logf("faults run:\n%s", strings.Join(ran, "\n"))

	run.resolve()
	rep, ok := run.c.WaitAudit(3 * time.Minute)
	if !ok {
		t.Logf("the audit did not pass within 3 minutes of the faults healing; checking the state as it stands")
	}
	final := run.readFinal(rep, ok)
	ops := h.Ops()
	counts := h.Counts()
	for _, k := range []history.Kind{history.Place, history.Replay, history.Pay, history.Checkout, history.Cancel, history.Get} {
		t.Logf("%-8s %v (status 0: indeterminate)", k, counts[k])
	}
	statuses := map[string]int{}
	for _, o := range final.Orders {
		statuses[o.Status]++
	}
	t.Logf("%d ops, %d orders %v, sale %+v", len(ops), len(final.Orders), statuses, final.Sales)
	violations := history.Check(ops, final, history.Options{ClockSlack: plan.slack()})
	for i, v := range violations {
		if i == 50 {
			t.Errorf("... %d violations in all", len(violations))
			break
		}
		t.Errorf("%s", v)
	}
	if len(violations) > 0 {
		t.Errorf("chaos seed %d failed; replay: %s", seed, replay)
	}
}

const (
	chaosBuyers   = 12
	chaosUsers    = 200 // per buyer goroutine
	chaosStock    = 800
	chaosPerUser  = 2
	chaosWindow   = 6 // payment window, seconds: deadlines fire during the run
	chaosDefault  = 20 * time.Second
	chaosOpTimout = 10 * time.Second
)

// chaosParams reads SPIKE_CHAOS_SEED (default: random) and
// SPIKE_CHAOS_DURATION (default 20s).
func chaosParams(t *testing.T) (int64, time.Duration) {
	seed := rand.Int64N(1 << 40)
	if s := os.Getenv("SPIKE_CHAOS_SEED"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("SPIKE_CHAOS_SEED=%q: not an integer", s)
		}
		seed = n
	}
	dur := chaosDefault
	if s := os.Getenv("SPIKE_CHAOS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("SPIKE_CHAOS_DURATION=%q: not a duration like 10m", s)
		}
		dur = d
	}
	return seed, dur
}

// faultKind is one kind of fault of the schedule.
type faultKind string

const (
	killInstanceFault faultKind = "kill -9 instance"
	restartRedisFault faultKind = "restart redis empty"
	pauseMySQLFault   faultKind = "pause mariadb (SIGSTOP)"
	restartMySQLFault faultKind = "restart mariadb (kill -9)"
	restartNATSFault  faultKind = "restart nats"
	slowLinkFault     faultKind = "slow link"
)

// fault is one entry of the schedule: at At after the buyers start
// (later if the fault before it is still healing), Kind for For.
type fault struct {
	At       time.Duration
	Kind     faultKind
	Instance int
	Link     link
	Latency  time.Duration
	For      time.Duration
}

func (f fault) String() string {
	s := fmt.Sprintf("+%-6v %s", f.At, f.Kind)
	switch f.Kind {
	case killInstanceFault:
		s += fmt.Sprintf(" %d, down %v", f.Instance, f.For)
	case slowLinkFault:
		s += fmt.Sprintf(" instance %d → %s, +%v each way for %v", f.Instance, f.Link, f.Latency, f.For)
	case pauseMySQLFault, restartNATSFault:
		s += fmt.Sprintf(" for %v", f.For)
	}
	return s
}

// chaosPlan is everything the seed decides: the faults and the skew.
type chaosPlan struct {
	faults []fault
	skewed int           // the instance whose clock is skewed
	skew   time.Duration // by how much
}

func (p chaosPlan) slack() time.Duration { return max(p.skew, -p.skew) + time.Second }

func (p chaosPlan) String() string {
	lines := []string{fmt.Sprintf("  instance %d's clock skewed by %v throughout", p.skewed, p.skew)}
	for _, f := range p.faults {
		lines = append(lines, "  "+f.String())
	}
	return strings.Join(lines, "\n")
}

// planChaos generates the schedule of a run from its seed alone.
func planChaos(seed int64, d time.Duration, instances int) chaosPlan {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	between := func(lo, hi time.Duration) time.Duration {
		d := lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
		if hi <= time.Second {
			return d.Round(10 * time.Millisecond)
		}
		return d.Round(100 * time.Millisecond)
	}
	p := chaosPlan{skewed: rng.IntN(instances), skew: between(500*time.Millisecond, 3*time.Second)}
	if rng.IntN(2) == 0 {
		p.skew = -p.skew
	}
	kinds := []faultKind{killInstanceFault, killInstanceFault, restartRedisFault, pauseMySQLFault, restartMySQLFault, restartNATSFault, slowLinkFault, slowLinkFault}
	links := []link{linkRedis, linkMySQL, linkNATS}
	for at := between(time.Second, 3*time.Second); at < d; {
		f := fault{At: at, Kind: kinds[rng.IntN(len(kinds))], Instance: rng.IntN(instances)}
		switch f.Kind {
		case killInstanceFault:
			f.For = between(500*time.Millisecond, 4*time.Second)
		case pauseMySQLFault:
			f.For = between(time.Second, 6*time.Second)
		case restartNATSFault:
			f.For = between(500*time.Millisecond, 3*time.Second)
		case slowLinkFault:
			f.Link = links[rng.IntN(len(links))]
			f.Latency = between(20*time.Millisecond, 400*time.Millisecond)
			f.For = between(2*time.Second, 6*time.Second)
		}
		p.faults = append(p.faults, f)
		at += f.For + between(2*time.Second, 5*time.Second)
	}
	return p
}

// placeKey is one idempotency key of one buyer.
type placeKey struct {
	user int64
	key  string
	qty  int64
}

// chaosRun is the run's buyers, their history and the cluster they buy on.
type chaosRun struct {
	t    *testing.T
	cl   *cluster
	c    *client
	h    *history.History
	sale string
	stop chan struct{}

	mu         sync.Mutex
	unresolved map[placeKey]bool // keys whose last attempt had no definite answer
}

func (r *chaosRun) setup() {
	admin := r.c.Token(1, true)
	r.c.Must("POST", "/v1/products", admin, map[string]any{"sku": "sku-chaos", "name": "Chaos", "price_cents": 1999, "stock": chaosStock}, 201)
	r.c.Must("POST", "/v1/sales", admin, map[string]any{"id": r.sale, "sku": "sku-chaos", "stock": chaosStock, "price_cents": 999,
		"per_user_limit": chaosPerUser, "payment_window": chaosWindow}, 201)
}

func (r *chaosRun) stopped() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// do sends one request and records it; an answer without Spike's word
// (transport error, a 502/504 of HAProxy) is recorded as indeterminate.
func (r *chaosRun) do(g int, op history.Op, method, path, tok string, body any, hdr map[string]string) (apitest.Response, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), chaosOpTimout)
	defer cancel()
	op.Client, op.Start = g, time.Now()
	resp, err := r.c.Do(ctx, method, path, tok, body, hdr)
	op.End = time.Now()
	if err != nil {
		op.Err = err.Error()
	} else {
		op.Status, op.Body, op.RetryAfter = resp.Status, string(resp.Body), resp.Header.Get("Retry-After")
	}
	r.h.Add(op)
	return resp, !op.Indeterminate()
}

// backoff waits as Retry-After says (capped at 1 s: the run is short), or
// a moment after no answer.
func backoff(resp apitest.Response, answered bool) {
	wait := 200 * time.Millisecond
	if answered {
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			wait = min(time.Duration(s)*time.Second, time.Second)
		}
	}
	time.Sleep(wait)
}

// held is an order a buyer was answered 202 for.
type held struct {
	user  int64
	key   string
	qty   int64
	order string
}

// buyer g acts for its own users until the run stops: places (retrying
// the same key until a definite answer), replays, pays, cancels, reads.
func (r *chaosRun) buyer(g int, rng *rand.Rand) {
	var mine []held
	n := 0
	for !r.stopped() {
		user := int64(1_000_000 + g*1000 + rng.IntN(chaosUsers))
		pick := func() (held, bool) {
			if len(mine) == 0 {
				return held{}, false
			}
			return mine[rng.IntN(len(mine))], true
		}
		switch x := rng.IntN(100); {
		case x < 45:
			n++
			k := placeKey{user: user, key: fmt.Sprintf("b%d-%d", g, n), qty: 1 + rng.Int64N(chaosPerUser)}
			if id, ok := r.place(g, k, history.Place, r.stop); ok {
				mine = append(mine, held{user: k.user, key: k.key, qty: k.qty, order: id})
			}
		case x < 55:
			if o, ok := pick(); ok {
				r.place(g, placeKey{o.user, o.key, o.qty}, history.Replay, r.stop)
			}
		case x < 67: // few enough payments that deadlines expire orders too
			if o, ok := pick(); ok {
				r.pay(g, o)
			}
		case x < 77:
			if o, ok := pick(); ok {
				tok := r.c.Token(o.user, false)
				r.retrying(func() (apitest.Response, bool) {
					return r.do(g, history.Op{Kind: history.Cancel, User: o.user, OrderID: o.order}, "POST", "/v1/orders/"+o.order+"/cancel", tok, nil, nil)
				})
			}
		default:
			if o, ok := pick(); ok {
				tok := r.c.Token(o.user, false)
				r.retrying(func() (apitest.Response, bool) {
					return r.do(g, history.Op{Kind: history.Get, User: o.user, OrderID: o.order}, "GET", "/v1/orders/"+o.order, tok, nil, nil)
				})
			}
		}
		time.Sleep(time.Duration(10+rng.IntN(40)) * time.Millisecond)
	}
}

// retrying sends until a definite answer other than 429/503, for at most
// 5 attempts or until the run stops.
func (r *chaosRun) retrying(send func() (apitest.Response, bool)) (apitest.Response, bool) {
	for attempt := 0; ; attempt++ {
		resp, answered := send()
		if answered && resp.Status != 429 && resp.Status != 503 || attempt == 4 || r.stopped() {
			return resp, answered
		}
		backoff(resp, answered)
	}
}

// place sends k until a definite answer (or the run stops: the key is
// then resolved after the faults heal) and returns the order of a 202.
func (r *chaosRun) place(g int, k placeKey, kind history.Kind, stop <-chan struct{}) (string, bool) {
	tok := r.c.Token(k.user, false)
	for {
		resp, answered := r.do(g, history.Op{Kind: kind, User: k.user, Sale: r.sale, Key: k.key, Qty: k.qty},
			"POST", "/v1/sales/"+r.sale+"/orders", tok, fmt.Sprintf(`{"quantity":%d}`, k.qty), map[string]string{"Idempotency-Key": k.key})
		definite := answered && resp.Status != 429 && resp.Status != 503
		r.mu.Lock()
		if definite {
			delete(r.unresolved, k)
		} else {
			r.unresolved[k] = true
		}
		r.mu.Unlock()
		if definite {
			var p apitest.Placed
			if resp.Status == 202 && json.Unmarshal(resp.Body, &p) == nil && p.OrderID != "" {
				return p.OrderID, true
			}
			return "", false
		}
		select {
		case <-stop:
			return "", false
		default:
		}
		backoff(resp, answered)
	}
}

// pay starts a payment of o and presses "succeeded" on its checkout page.
func (r *chaosRun) pay(g int, o held) {
	tok := r.c.Token(o.user, false)
	resp, answered := r.retrying(func() (apitest.Response, bool) {
		return r.do(g, history.Op{Kind: history.Pay, User: o.user, Key: "pay-" + o.order, OrderID: o.order},
			"POST", "/v1/orders/"+o.order+"/payments", tok, `{}`, map[string]string{"Idempotency-Key": "pay-" + o.order})
	})
	if !answered || resp.Status != 201 {
		return
	}
	var p apitest.Payment
	if json.Unmarshal(resp.Body, &p) != nil {
		return
	}
	path, ok := strings.CutPrefix(p.CheckoutURL, r.c.Base)
	if !ok {
		r.t.Errorf("checkout_url %q is not on %s", p.CheckoutURL, r.c.Base)
		return
	}
	r.retrying(func() (apitest.Response, bool) {
		return r.do(g, history.Op{Kind: history.Checkout, User: o.user, OrderID: o.order}, "POST", path, "", map[string]string{"outcome": "succeeded"}, nil)
	})
}

// inject runs the schedule on the test's goroutine and returns what ran,
// with when each fault began and healed.
func (r *chaosRun) inject(p chaosPlan) []string {
	t, cl := r.t, r.cl
	start := time.Now()
	var ran []string
	for _, f := range p.faults {
		time.Sleep(time.Until(start.Add(f.At)))
		began := time.Since(start)
		switch f.Kind {
		case killInstanceFault:
			cl.spikes[f.Instance].kill()
			time.Sleep(f.For)
			cl.startSpike(t, f.Instance)
		case restartRedisFault:
			cl.redis.kill()
			cl.redis.start(t)
			cl.waitRedis(t)
		case pauseMySQLFault:
			cl.mysql.signal(syscall.SIGSTOP)
			time.Sleep(f.For)
			cl.mysql.signal(syscall.SIGCONT)
		case restartMySQLFault:
			cl.mysql.kill()
			cl.mysql.start(t)
			cl.waitMySQL(t)
		case restartNATSFault:
			cl.nats.kill()
			time.Sleep(f.For)
			cl.nats.start(t)
			cl.waitNATS(t)
		case slowLinkFault:
			px := cl.links[f.Instance][f.Link]
			px.SetLatency(f.Latency, f.Latency)
			time.Sleep(f.For)
			px.SetLatency(0, 0)
		}
		ran = append(ran, fmt.Sprintf("  %s (ran +%v → +%v)", f, began.Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond)))
	}
	return ran
}

// heal makes sure every fault is lifted (a fatal error mid-fault left one).
func (r *chaosRun) heal() {
	r.cl.mysql.signal(syscall.SIGCONT)
	for _, links := range r.cl.links {
		for _, px := range links {
			px.SetLatency(0, 0)
		}
	}
}

// resolve sends every key whose last attempt had no definite answer
// again, until it has one (bounded), so that the history says of each key
// whether it placed an order.
func (r *chaosRun) resolve() {
	r.mu.Lock()
	keys := make([]placeKey, 0, len(r.unresolved))
	for k := range r.unresolved {
		keys = append(keys, k)
	}
	r.mu.Unlock()
	stop := make(chan struct{})
	deadline := time.AfterFunc(2*time.Minute, func() { close(stop) })
	defer deadline.Stop()
	var g errgroup.Group
	g.SetLimit(16)
	for _, k := range keys {
		g.Go(func() error { r.place(-1, k, history.Place, stop); return nil })
	}
	g.Wait()
	r.t.Logf("resolved %d keys left without a definite answer", len(keys))
}

// readFinal reads the state the checker compares the history with: every
// order of every buyer of the history (listing and transitions) and the
// sale, polled until the sale's counters agree with the orders (they lag
// by up to 1 s) or 30 s pass.
func (r *chaosRun) readFinal(rep apitest.AuditReport, auditOK bool) history.Final {
	users := map[int64]bool{}
	for _, op := range r.h.Ops() {
		users[op.User] = true
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		f := history.Final{ReadAt: time.Now(), AuditOK: auditOK}
		for _, ch := range rep.Checks {
			if !ch.OK {
				f.AuditFailures = append(f.AuditFailures, ch.Name+": "+ch.Detail)
			}
		}
		f.Orders = r.readOrders(users)
		var sv struct {
			apitest.SaleView
			PerUserLimit int64 `json:"per_user_limit"`
		}
		if err := r.get(r.c.Token(1, true), "/v1/sales/"+r.sale, &sv); err != nil {
			r.t.Fatal(err)
		}
		f.Sales = []history.Sale{{ID: sv.ID, Stock: sv.Stock, Remaining: sv.Remaining, Sold: sv.Sold, PerUserLimit: sv.PerUserLimit}}
		var liveUnits int64
		for _, o := range f.Orders {
			if o.Status != "cancelled" {
				liveUnits += o.Qty
			}
		}
		if sv.Sold == liveUnits && sv.Remaining+liveUnits == sv.Stock || time.Now().After(deadline) {
			return f
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// readOrders lists every order of users and reads each one's transitions.
func (r *chaosRun) readOrders(users map[int64]bool) []history.Order {
	var mu sync.Mutex
	var out []history.Order
	var g errgroup.Group
	g.SetLimit(16)
	for u := range users {
		g.Go(func() error {
			tok := r.c.Token(u, false)
			cursor := ""
			for {
				var page struct {
					Orders     []apitest.LifeOrder `json:"orders"`
					NextCursor string              `json:"next_cursor"`
				}
				if err := r.get(tok, "/v1/orders?limit=100&cursor="+url.QueryEscape(cursor), &page); err != nil {
					return err
				}
				for _, lo := range page.Orders {
					var hv struct {
						History []struct {
							From       string    `json:"from"`
							To         string    `json:"to"`
							Transition string    `json:"transition"`
							Cause      string    `json:"cause"`
							At         time.Time `json:"at"`
						} `json:"history"`
					}
					if err := r.get(tok, "/v1/orders/"+lo.OrderID+"/history", &hv); err != nil {
						return err
					}
					o := history.Order{ID: lo.OrderID, Sale: lo.SaleID, User: lo.UserID, Qty: lo.Quantity, Status: lo.Status,
						CancelReason: lo.CancelReason, PaymentDeadline: lo.PaymentDeadline, CancelledAt: lo.CancelledAt}
					for _, e := range hv.History {
						o.Transitions = append(o.Transitions, history.Transition{From: e.From, To: e.To, Transition: e.Transition, Cause: e.Cause, At: e.At})
					}
					mu.Lock()
					out = append(out, o)
					mu.Unlock()
				}
				if page.NextCursor == "" {
					return nil
				}
				cursor = page.NextCursor
			}
		})
	}
	if err := g.Wait(); err != nil {
		r.t.Fatal(err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// get reads path into v, retrying 429 (as Retry-After says), 5xx and
// transport errors for up to 60 s; usable from any goroutine.
func (r *chaosRun) get(tok, path string, v any) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), chaosOpTimout)
		resp, err := r.c.Do(ctx, "GET", path, tok, nil, nil)
		cancel()
		if err == nil && resp.Status == 200 {
			return json.Unmarshal(resp.Body, v)
		}
		if time.Now().After(deadline) || err == nil && resp.Status/100 == 4 && resp.Status != 429 {
			return fmt.Errorf("GET %s: %v %d %s", path, err, resp.Status, resp.Body)
		}
		backoff(resp, err == nil)
	}
}

// waitMySQL waits until mariadbd answers a ping (after a restart: crash
// recovery included).
func (c *cluster) waitMySQL(t *testing.T) {
	t.Helper()
	db, err := sql.Open("mysql", fmt.Sprintf("root@tcp(127.0.0.1:%d)/?timeout=1s", c.mysqlPort))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	waitFor(t, c.mysql, "mariadb ping", 90*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return db.PingContext(ctx)
	})
}

// A seed replays the same schedule: the plan depends on the seed alone.
func TestChaosPlanIsDeterministic(t *testing.T) {
	for _, seed := range []int64{1, 2, 1 << 39} {
		a, b := planChaos(seed, 10*time.Minute, 3), planChaos(seed, 10*time.Minute, 3)
		if a.String() != b.String() || len(a.faults) < 20 {
			t.Fatalf("seed %d: two plans differ or are short:\n%s\n%s", seed, a, b)
		}
		kinds := map[faultKind]bool{}
		for _, f := range a.faults {
			kinds[f.Kind] = true
			if f.Kind == slowLinkFault && f.Latency <= 0 {
				t.Fatalf("seed %d: a slow link without latency: %s", seed, f)
			}
		}
		if len(kinds) != 6 {
			t.Fatalf("seed %d: 10 minutes of faults use %d kinds of 6: %v", seed, len(kinds), kinds)
		}
	}
	if planChaos(1, time.Minute, 3).String() == planChaos(2, time.Minute, 3).String() {
		t.Fatal("seeds 1 and 2 plan the same schedule")
	}
}
