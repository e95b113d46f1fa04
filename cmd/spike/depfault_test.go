package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/testkit/apitest"

	"github.com/go-sql-driver/mysql"

	"github.com/spikehq/spike/internal/testkit/faultproxy"
	"github.com/spikehq/spike/internal/testkit/mysqltest"
	"github.com/spikehq/spike/internal/testkit/redistest"
)

// startClustered starts Spike on MySQL (and Redis when redisAddr is set),
// with the stream embedded in a temporary folder.
func startClustered(t *testing.T, redisAddr string, primary, orders *mysql.Config) *app {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Data = t.TempDir()
	cfg.MySQL.Primary = primary.FormatDSN()
	cfg.MySQL.Migrate = true
	if orders != nil {
		cfg.MySQL.OrderShards = []ShardEntry{{Primary: orders.FormatDSN()}}
	}
	if redisAddr != "" {
		cfg.Redis.Addrs = []string{redisAddr}
	}
	a, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// startBehindSlowRedis starts the clustered wiring (one MySQL database) in
// front of a private Redis reached through a fault-injecting proxy, which
// is closed when the test ends.
func startBehindSlowRedis(t *testing.T) (*app, *faultproxy.Proxy) {
	t.Helper()
	redis := redistest.Start(t)
	dbs := mysqltest.Databases(t, 1)
	proxy, err := faultproxy.Start(redis.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	return startClustered(t, proxy.Addr(), dbs[0], nil), proxy
}

// metric returns the value of one series of the /metrics page, e.g.
// spike_breaker_state{dependency="redis_stock"}; 0 if absent.
func metric(c *client, series string) float64 {
	body := string(c.Must("GET", "/metrics", "", nil, 200).Body)
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return 0
}

// waitFor polls cond every 50 ms until it holds and returns how long that
// took, or fails the test after timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	began := time.Now()
	for !cond() {
		if time.Since(began) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(began)
}

// TestSlowRedisOpensStockBreaker runs the clustered wiring (MySQL, Redis
// behind a fault-injecting proxy) and makes Redis slow, then unresponsive:
// the redis_stock breaker opens, placements fail fast with 503 and
// Retry-After without taking stock, the breaker closes once Redis heals,
// and I1–I5 hold at the end (reserves cut by the timeout were undone).
func TestSlowRedisOpensStockBreaker(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	a, proxy := startBehindSlowRedis(t)
	defer stopApp(t, a)
	c := newClient(t, a.addr, a.secret)
	const (
		stock   = 100_000
		perUser = 1000
		saleID  = "redis-slow"
		state   = `spike_breaker_state{dependency="redis_stock"}`
		refused = `spike_breaker_rejected_total{dependency="redis_stock"}`
	)
	c.SetupSale("sku-redis-slow", saleID, stock, perUser)
	c.Must("PUT", "/v1/admin/switches/ratelimit.user_rps", c.Token(1, true), `{"value":0}`, 200)
	l := apitest.NewLedger()
	place := func(user int64, key string) apitest.Response {
		r, p, err := c.Place(context.Background(), user, c.Token(user, false), saleID, key, 1)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status == 202 {
			l.Record(user, key, 1, p)
		}
		return r
	}
	// wave sends n placements at once and counts the answers; timedOut are
	// the 503s of reserves cut by the timeout (the others were refused
	// before reaching Redis).
	var timedOut int
	wave := func(phase string, firstUser int64, n int) (accepted, unavailable int) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := place(firstUser+int64(i), phase)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case r.Status == 202:
					accepted++
				case r.Status == 503 && r.Code() == "unavailable" && r.Header.Get("Retry-After") != "":
					unavailable++
					if !strings.Contains(string(r.Body), "failing fast") {
						timedOut++
					}
				default:
					t.Errorf("%s: %d %s", phase, r.Status, r.Body)
				}
			}()
		}
		wg.Wait()
		return accepted, unavailable
	}
	// healUntilClosed places (one buyer, fresh keys) until the breaker is
	// closed and returns how long that took.
	healUntilClosed := func(user int64, phase string) time.Duration {
		healed := time.Now()
		for i := 0; metric(c, state) != 0; i++ {
			if time.Since(healed) > 30*time.Second {
				t.Fatalf("%s: the breaker did not close after Redis healed", phase)
			}
			if r := place(user, fmt.Sprintf("%s-%d", phase, i)); r.Status != 202 {
				time.Sleep(100 * time.Millisecond)
			}
		}
		return time.Since(healed)
	}
	for i := range 10 {
		if r := place(int64(10+i), "warm"); r.Status != 202 {
			t.Fatalf("healthy placement: %d %s", r.Status, r.Body)
		}
	}
	if s := metric(c, state); s != 0 {
		t.Fatalf("%s = %v before any fault", state, s)
	}

	// 1. Slow: every Redis reply is 400 ms late (a slow call is ≥ 250 ms).
	proxy.SetLatency(0, 400*time.Millisecond)
	began := time.Now()
	var acc, unav int
	for w := 0; metric(c, state) != 1; w++ {
		if time.Since(began) > time.Minute {
			t.Fatalf("the redis_stock breaker did not open with a slow Redis")
		}
		a, u := wave(fmt.Sprintf("slow-%d", w), int64(1000+100*w), 30)
		acc, unav = acc+a, unav+u
	}
	t.Logf("slow Redis (+400 ms per reply): breaker open after %v; meanwhile %d placed slowly, %d refused",
		time.Since(began).Round(time.Millisecond), acc, unav)

	// Open: placements fail fast, reach no Redis and take no stock. The
	// breaker goes half-open after 2 s and lets 5 trials through (slow, so
	// it opens again); a trial that succeeds is a real placement.
	// The counters themselves, not the sale page, whose remaining units
	// may lag by up to 1 s.
	remaining := func() int64 {
		n, ok, err := a.redis.counters.Remaining(context.Background(), saleID)
		if err != nil || !ok {
			t.Fatalf("remaining units of %s: %d, %v, %v", saleID, n, ok, err)
		}
		return n
	}
	before := remaining()
	refusedBefore := metric(c, refused)
	var slowest time.Duration
	refusedFast, trials := 0, 0
	phase := time.Now()
	for i := range 20 {
		t0 := time.Now()
		r := place(int64(5000+i), "open")
		switch {
		case r.Status == 503 && r.Code() == "unavailable" && r.Header.Get("Retry-After") != "":
			refusedFast++
			slowest = max(slowest, time.Since(t0))
		case r.Status == 202:
			trials++
		default:
			t.Errorf("with the breaker open: %d %s", r.Status, r.Body)
		}
	}
	elapsed := time.Since(phase)
	after := remaining()
	if refusedFast < 15 {
		t.Errorf("only %d of 20 placements refused with the breaker open (%d trials placed)", refusedFast, trials)
	}
	if got := metric(c, refused) - refusedBefore; got < float64(refusedFast) {
		t.Errorf("the breaker counted %v refusals, want at least %d", got, refusedFast)
	}
	if before-after != int64(trials) {
		t.Errorf("refused placements took stock: remaining %d, then %d, with %d trials placed", before, after, trials)
	}
	t.Logf("breaker open: %d placements refused with 503 + Retry-After (slowest %v; all 20 in %v, Redis answers in ≥ 400 ms), %d half-open trials placed",
		refusedFast, slowest.Round(time.Microsecond), elapsed.Round(time.Millisecond), trials)

	// Heal: trial calls succeed and the breaker closes. It needs traffic
	// to close (its half-open trials are placements).
	proxy.SetLatency(0, 0)
	t.Logf("Redis healed: breaker closed after %v of placements", healUntilClosed(900, "heal"))
	for i := range 10 {
		if r := place(901, fmt.Sprintf("after-%d", i)); r.Status != 202 {
			t.Errorf("after healing: %d %s", r.Status, r.Body)
		}
	}

	// 2. Unresponsive: Redis stops answering. Reserves are cut by the 1 s
	// timeout (in doubt: redisstock undoes them once it can), the failures
	// open the breaker, and later placements are refused at once.
	proxy.Blackhole(true)
	began = time.Now()
	timedOut = 0
	acc, unav = wave("blackhole", 7000, 40)
	if acc != 0 {
		t.Errorf("%d placements accepted while Redis did not answer", acc)
	}
	waitFor(t, "breaker open with Redis unresponsive", 30*time.Second, func() bool { return metric(c, state) == 1 })
	t.Logf("Redis unresponsive: %d of 40 concurrent placements answered 503 in %v (%d cut by the 1 s timeout, in doubt and undone; %d refused); breaker open",
		unav, time.Since(began).Round(time.Millisecond), timedOut, unav-timedOut)
	if timedOut == 0 {
		t.Error("no reserve was cut by the timeout: the in-doubt path was not exercised")
	}
	proxy.Blackhole(false)
	t.Logf("blackhole lifted: breaker closed after %v of placements", healUntilClosed(902, "heal2"))

	// I1–I5, with conservation: the timed-out reserves gave their units back.
	apitest.VerifyInvariants(t, c, saleID, stock, perUser, l, false)
}

// TestSlowOrderDatabasePausesWrites puts the order database (one shard)
// behind a fault-injecting proxy and slows it down: the order_writes
// breaker opens, the workers' batches fail at once instead of waiting on
// the database, placements go on (the stream buffers them), and once the
// database heals the breaker closes and every order is persisted.
func TestSlowOrderDatabasePausesWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	dbs := mysqltest.Databases(t, 2)
	proxy, err := faultproxy.Start(dbs[1].Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	viaProxy := dbs[1].Clone()
	viaProxy.Addr = proxy.Addr()
	a := startClustered(t, "", dbs[0], viaProxy) // stock counters in process
	defer stopApp(t, a)
	c := newClient(t, a.addr, a.secret)
	const (
		stock   = 10_000
		perUser = 1000
		saleID  = "db-slow"
		state   = `spike_breaker_state{dependency="order_writes"}`
		refused = `spike_breaker_rejected_total{dependency="order_writes"}`
	)
	c.SetupSale("sku-db-slow", saleID, stock, perUser)
	c.Must("PUT", "/v1/admin/switches/ratelimit.user_rps", c.Token(1, true), `{"value":0}`, 200)
	l := apitest.NewLedger()
	placeSome := func(phase string, n int) {
		for i := range n {
			user := int64(100 + i%20)
			key := fmt.Sprintf("%s-%d", phase, i)
			r, p, err := c.Place(context.Background(), user, c.Token(user, false), saleID, key, 1)
			if err != nil || r.Status != 202 {
				t.Fatalf("%s: placement: %v %d %s", phase, err, r.Status, r.Body)
			}
			l.Record(user, key, 1, p)
		}
	}
	pending := func() float64 { return metric(c, "spike_orders_pending") }
	placeSome("warm", 10)
	waitFor(t, "warm-up orders persisted", 30*time.Second, func() bool { return pending() == 0 })

	// Slow: every reply of the order database is 1.5 s late; one batch
	// takes several round trips, past the 2 s slow-call mark or the 5 s
	// write timeout.
	proxy.SetLatency(0, 1500*time.Millisecond)
	began := time.Now()
	for w := 0; metric(c, state) != 1; w++ {
		if time.Since(began) > 2*time.Minute {
			t.Fatal("the order_writes breaker did not open with a slow database")
		}
		placeSome(fmt.Sprintf("slow-%d", w), 5) // placements do not wait on the database
		time.Sleep(time.Second)
	}
	opened := time.Since(began)
	refusedAtOpen := metric(c, refused)
	// The guard's metrics saw why it opened: slow or failed batches.
	failedOrSlow := max(0, metric(c, `spike_dependency_calls_total{dependency="order_writes",outcome="failure"}`)) +
		max(0, metric(c, `spike_dependency_slow_calls_total{dependency="order_writes"}`))
	if failedOrSlow == 0 {
		t.Error("order_writes breaker open, but no failed or slow call in spike_dependency_*_total")
	}
	succeededAtOpen := metric(c, `spike_dependency_calls_total{dependency="order_writes",outcome="success"}`)
	placeSome("open", 20)
	waitFor(t, "worker batches refused by the open breaker", time.Minute, func() bool { return metric(c, refused) > refusedAtOpen })
	t.Logf("slow order database (+1.5 s per reply): order_writes breaker open after %v; %v orders pending on the stream; batches refused at once: %v",
		opened.Round(time.Millisecond), pending(), metric(c, refused)-refusedAtOpen)
	if pending() == 0 {
		t.Error("no order pending while the order database is slow")
	}

	// Heal: a trial batch succeeds, the breaker closes, the stream drains.
	proxy.SetLatency(0, 0)
	healed := time.Now()
	waitFor(t, "order_writes breaker closed after the database healed", time.Minute, func() bool { return metric(c, state) == 0 })
	waitFor(t, "pending orders persisted", time.Minute, func() bool { return pending() == 0 })
	t.Logf("database healed: every order persisted %v later", time.Since(healed).Round(time.Millisecond))
	if got := metric(c, `spike_dependency_calls_total{dependency="order_writes",outcome="success"}`); got <= succeededAtOpen {
		t.Errorf("order_writes successes %v after healing, %v at open: the batches that drained the stream were not counted", got, succeededAtOpen)
	}
	apitest.VerifyInvariants(t, c, saleID, stock, perUser, l, false)
}
