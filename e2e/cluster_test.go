// Package e2e_test runs Spike the way it runs in production: three
// `spike serve` processes behind HAProxy, on their own Redis, MariaDB and
// NATS JetStream, and breaks one dependency at a time mid-sale while
// hundreds of buyers place orders through the load balancer. After each
// fault it checks the invariants I1–I5 of DESIGN.md from the outside.
//
//	SPIKE_TEST_CLUSTER=1 go test -race -count=1 -v ./e2e/
//
// It needs haproxy, redis-server, mariadb-server and nats-server (Debian
// packages of those names). It never touches the machine's shared
// services: every server it uses is its own, on a free loopback port,
// with its data in the test's temporary folder.
package e2e_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/testkit/apitest"

	"golang.org/x/sync/errgroup"
)

const (
	buyers  = 200
	perUser = 2
	pace    = 250 * time.Millisecond // each buyer's pause between orders
	warmup  = 2 * time.Second        // placements flowing before the fault
)

// scenario is one sale with one fault injected while buyers place orders.
type scenario struct {
	name  string
	stock int64
	// fault breaks something while ld runs and returns once it is repaired.
	fault func(t *testing.T, cl *cluster, ld *load)
	// after the fault: run on until the sale sells out (bounded), or stop
	// soon after the repair.
	untilSoldOut bool
	skip         string // non-empty: a known server bug, see the message
}

func TestCluster(t *testing.T) {
	bins := requireCluster(t)
	began := time.Now()
	cl := startCluster(t, bins, 3)
	t.Logf("cluster up in %v: haproxy %s → %s, %s, %s; redis %s, mariadb :%d, nats :%d", time.Since(began).Round(time.Millisecond),
		cl.lbAddr, cl.spikes[0].addr, cl.spikes[1].addr, cl.spikes[2].addr, cl.redisAddr, cl.mysqlPort, cl.natsPort)
	t.Cleanup(func() {
		if t.Failed() {
			cl.dumpLogs(t, 80)
		}
	})

	scenarios := []scenario{
		{name: "InstanceKilled", stock: 4000, fault: killInstance, untilSoldOut: true},
		{name: "RedisFlushed", stock: 2500, fault: flushRedis, untilSoldOut: true},
		{name: "RedisRestarted", stock: 2500, fault: restartRedis, untilSoldOut: true},
		{name: "MySQLStopped", stock: 60_000, fault: stopMySQL},
		{name: "NATSRestarted", stock: 2500, fault: restartNATS, untilSoldOut: true},
	}
	var done []finishedSale
	t.Run("Throughput", func(t *testing.T) {
		if f, ok := throughput(t, cl); ok {
			done = append(done, f)
		}
	})
	t.Run("Switches", func(t *testing.T) { switchesEverywhere(t, cl) })
	for i, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			if sc.skip != "" && os.Getenv("SPIKE_TEST_KNOWN_BUGS") == "" {
				t.Skip(sc.skip)
			}
			if f, ok := runScenario(t, cl, i, sc, done); ok {
				done = append(done, f)
			}
		})
	}
	// After the 202 (e2e/lifecycle_test.go): payments, cancels, deadlines
	// and stock returns, on their own sales.
	t.Run("Lifecycle", func(t *testing.T) { lifecycleThroughLB(t, cl) })
	t.Run("DeadlinesWhileKilled", func(t *testing.T) { deadlinesWhileKilled(t, cl) })
	t.Run("KilledMidPlacement", func(t *testing.T) { killedMidPlacement(t, cl) })
	t.Run("RedisFlushedWhileReturning", func(t *testing.T) { redisFlushedWhileReturning(t, cl) })
}

// finishedSale is the sale of an earlier scenario, checked again after
// each later fault (Redis losses hit every sale, not just the busy one).
type finishedSale struct {
	id    string
	stock int64
	l     *apitest.Ledger
}

func runScenario(t *testing.T, cl *cluster, i int, sc scenario, earlier []finishedSale) (finishedSale, bool) {
	c := newClient(t, cl.lbAddr, cl.secret)
	saleID := "e2e-" + sc.name
	c.SetupSale("sku-"+sc.name, saleID, sc.stock, perUser)
	l := apitest.NewLedger()
	ld := startLoad(t, c, saleID, l, buyers, pace, int64(i+1)*100_000_000, perUser)
	ld.diagnose = func(req request) string { return cl.diagnoseKey(c, saleID, req) }
	defer func() {
		// A fatal error mid-scenario must not leave buyers running.
		select {
		case <-ld.stop:
		default:
			close(ld.stop)
		}
	}()
	time.Sleep(warmup)
	before := l.Units()
	t.Logf("before the fault: %d units placed in %v", before, warmup)
	sc.fault(t, cl, ld)
	if sc.untilSoldOut {
		if !ld.waitSoldOut(100, 90*time.Second) {
			t.Logf("the sale did not sell out within 90 s of the repair; checking it as it stands")
		}
	} else {
		time.Sleep(2 * time.Second)
	}
	ld.halt()
	ld.report()
	ld.retryUnanswered()
	recheckEarlier(t, c, earlier)
	replayKeys(t, c, saleID, l, 300)
	apitest.VerifyInvariants(t, c, saleID, sc.stock, perUser, l, false)
	return finishedSale{id: saleID, stock: sc.stock, l: l}, true
}

// recheckEarlier replays keys of the sales of earlier scenarios (each must
// get its same 202, even across a Redis loss: that also makes an idle sale
// whose counters were lost fence and rebuild) and checks their sale views
// still match what their buyers were told.
func recheckEarlier(t *testing.T, c *client, earlier []finishedSale) {
	t.Helper()
	if len(earlier) == 0 {
		return
	}
	// The audit before anything touched the idle sales: counters lost with
	// Redis are rebuilt only when a request reaches their sale.
	if rep, ok := c.WaitAudit(0); !ok {
		for _, ch := range rep.Checks {
			if !ch.OK {
				t.Logf("audit before the earlier sales are touched: %s: %s", ch.Name, ch.Detail)
			}
		}
	}
	var g errgroup.Group
	for _, f := range earlier {
		g.Go(func() error { replayKeys(t, c, f.id, f.l, 50); return nil })
	}
	g.Wait()
	for _, f := range earlier {
		units := f.l.Units()
		var sv apitest.SaleView
		deadline := time.Now().Add(30 * time.Second)
		for {
			c.Must("GET", "/v1/sales/"+f.id, "", nil, 200).Decode(t, &sv)
			if sv.Sold == units && sv.Remaining+sv.Sold == f.stock || time.Now().After(deadline) {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if sv.Sold != units || sv.Remaining+sv.Sold != f.stock {
			t.Errorf("I4 earlier sale %s: sold %d remaining %d of %d; buyers hold %d units", f.id, sv.Sold, sv.Remaining, f.stock, units)
		}
	}
}

// throughput measures placements through HAProxy, unpaced, over one
// instance and then over all three, and the Redis commands each took. It
// logs figures only: two shared cores make them indicative, not targets.
func throughput(t *testing.T, cl *cluster) (finishedSale, bool) {
	const (
		stock   = 1_000_000
		saleID  = "e2e-throughput"
		workers = 64
		runFor  = 5 * time.Second
	)
	c := newClient(t, cl.lbAddr, cl.secret)
	c.SetupSale("sku-throughput", saleID, stock, perUser)
	l := apitest.NewLedger()
	for i, lb := range []struct {
		name string
		addr string
	}{{"1 instance", cl.lb1Addr}, {"3 instances", cl.lbAddr}} {
		cmds0, err := redisCommands(cl.redisAddr)
		if err != nil {
			t.Fatal(err)
		}
		ld := startLoad(t, newClient(t, lb.addr, cl.secret), saleID, l, workers, 0, int64(90+i)*100_000_000, perUser)
		time.Sleep(runFor)
		ld.halt()
		cmds1, err := redisCommands(cl.redisAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("through haproxy, %s:", lb.name)
		ld.report()
		if n := ld.acks.Load(); n > 0 {
			t.Logf("redis: %d commands for %d placements (%.2f per placement, other requests included)", cmds1-cmds0, n, float64(cmds1-cmds0)/float64(n))
		}
		ld.retryUnanswered()
	}
	replayKeys(t, c, saleID, l, 300)
	apitest.VerifyInvariants(t, c, saleID, stock, perUser, l, false)
	return finishedSale{id: saleID, stock: stock, l: l}, true
}

// killInstance kills one spike instance with SIGKILL, lets the sale go on
// on the other two, and restarts it; then the same with another instance.
func killInstance(t *testing.T, cl *cluster, ld *load) {
	for _, i := range []int{1, 2} {
		sp := cl.spikes[i]
		at := time.Now()
		sp.kill()
		time.Sleep(3 * time.Second)
		during := ld.acksBetween(at, time.Now())
		cl.startSpike(t, i)
		t.Logf("instance %s killed for %v (restart included): %d placements acknowledged meanwhile by the others",
			sp.addr, time.Since(at).Round(time.Millisecond), during)
		if during == 0 {
			t.Errorf("no placement succeeded while one of three instances was down")
		}
		time.Sleep(time.Second)
	}
}

// flushRedis empties the test's Redis: every sale's counters are gone.
func flushRedis(t *testing.T, cl *cluster, ld *load) {
	at := time.Now()
	if reply, err := redisCmd(cl.redisAddr, "FLUSHALL"); err != nil || reply != "+OK" {
		t.Fatalf("FLUSHALL: %q %v", reply, err)
	}
	measureFence(t, ld, at, "FLUSHALL")
}

// restartRedis kills redis-server and starts it again, empty.
func restartRedis(t *testing.T, cl *cluster, ld *load) {
	at := time.Now()
	cl.redis.kill()
	time.Sleep(time.Second)
	cl.redis.start(t)
	cl.waitRedis(t)
	t.Logf("redis down for %v", time.Since(at).Round(time.Millisecond))
	measureFence(t, ld, at, "redis restart")
}

// measureFence waits for the sale to fence (503 unavailable) after the
// fault at at, and to place again after, and logs how long it was fenced.
func measureFence(t *testing.T, ld *load, at time.Time, what string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		first503, firstAck := ld.fenced(at)
		if !firstAck.IsZero() {
			t.Logf("%s: sale fenced for %v (first 503 at +%v, first 202 after it sent at +%v)", what,
				firstAck.Sub(first503).Round(time.Millisecond), first503.Sub(at).Round(time.Millisecond), firstAck.Sub(at).Round(time.Millisecond))
			return
		}
		if first503.IsZero() && time.Since(at) > 20*time.Second {
			t.Errorf("%s: no 503 unavailable within 20 s: the sale did not fence", what)
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: the sale did not resume within 90 s (first 503 at +%v)", what, first503.Sub(at).Round(time.Millisecond))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopMySQL freezes mariadbd (SIGSTOP) for 30 s: connections hang rather
// than fail, the harder case. Placements must go on (the stream buffers).
func stopMySQL(t *testing.T, cl *cluster, ld *load) {
	at := time.Now()
	cl.mysql.signal(syscall.SIGSTOP)
	time.Sleep(30 * time.Second)
	cont := time.Now()
	cl.mysql.signal(syscall.SIGCONT)
	during := ld.acksBetween(at, cont)
	t.Logf("mariadb stopped for %v: %d placements acknowledged meanwhile (%.0f/s)",
		cont.Sub(at).Round(time.Millisecond), during, float64(during)/cont.Sub(at).Seconds())
	if during == 0 {
		t.Errorf("no placement succeeded while MySQL was stopped: the stream should buffer them")
	}
}

// restartNATS kills nats-server and starts it again on the same store
// folder after 5 s.
func restartNATS(t *testing.T, cl *cluster, ld *load) {
	at := time.Now()
	cl.nats.kill()
	time.Sleep(5 * time.Second)
	up := time.Now()
	// Requests sent a moment after the kill, until the restart, must fail.
	during := ld.acksBetween(at.Add(time.Second), up)
	cl.nats.start(t)
	cl.waitNATS(t)
	first503, _ := ld.fenced(at)
	if first503.IsZero() {
		t.Errorf("no 503 unavailable while NATS was down")
	}
	ack, ok := ld.waitAck(up, 90*time.Second)
	if !ok {
		t.Errorf("no placement succeeded within 90 s of NATS coming back")
		return
	}
	t.Logf("nats down for %v; %d placements acknowledged to requests sent while it was down; first 202 to a request sent %v after it came back",
		up.Sub(at).Round(time.Millisecond), during, ack.Sub(up).Round(time.Millisecond))
	if during > 0 {
		t.Errorf("%d placements acknowledged to requests sent while NATS was down", during)
	}
}

// replayKeys sends n acknowledged requests again with their keys: each
// must get the same 202 with the same order id (the ledger flags another
// id), even after the sale sold out or its counters were rebuilt.
func replayKeys(t *testing.T, c *client, saleID string, l *apitest.Ledger, n int) {
	t.Helper()
	orders := l.Acks()
	rand.Shuffle(len(orders), func(i, j int) { orders[i], orders[j] = orders[j], orders[i] })
	orders = orders[:min(n, len(orders))]
	var g errgroup.Group
	g.SetLimit(16)
	for _, a := range orders {
		g.Go(func() error {
			deadline := time.Now().Add(30 * time.Second)
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				r, p, err := c.Place(ctx, a.User, c.Token(a.User, false), saleID, a.Key, a.Qty)
				cancel()
				if err == nil && r.Status == 202 {
					l.Record(a.User, a.Key, a.Qty, p)
					return nil
				}
				if err == nil && r.Status != 429 && r.Status < 500 || time.Now().After(deadline) {
					t.Errorf("I3 replay: user %d key %s (acknowledged before): %d %s %v", a.User, a.Key, r.Status, r.Body, err)
					return nil
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
	g.Wait()
	t.Logf("replayed %d acknowledged keys", len(orders))
}

// switchesEverywhere sets switches through one instance and checks that
// every instance applies them: orders.accept off, then the order stream's
// breaker forced open, then both back. How long each took to reach the
// last instance is logged (the target is 1 s; the test only fails past
// 15 s, a switch that never arrives).
func switchesEverywhere(t *testing.T, cl *cluster) {
	lb := newClient(t, cl.lbAddr, cl.secret)
	const saleID = "e2e-switches"
	lb.SetupSale("sku-switches", saleID, 100_000, 1000)
	admin := lb.Token(1, true)
	direct := make([]*client, len(cl.spikes))
	for i, sp := range cl.spikes {
		direct[i] = newClient(t, sp.addr, cl.secret)
	}
	l := apitest.NewLedger()
	n := 0
	// placeEverywhere places once on each instance directly and returns
	// how many answered want.
	placeEverywhere := func(want int) int {
		got := 0
		for i, c := range direct {
			n++
			user := int64(900_000 + i)
			key := fmt.Sprintf("sw-%d", n)
			r, p, err := c.Place(context.Background(), user, c.Token(user, false), saleID, key, 1)
			if err != nil {
				t.Fatalf("instance %d: %v", i, err)
			}
			if r.Status == 202 {
				l.Record(user, key, 1, p)
			}
			if r.Status == want {
				got++
			}
		}
		return got
	}
	// set puts a switch through the first instance and waits until every
	// instance answers placements with want.
	set := func(name, value string, want int) {
		t.Helper()
		direct[0].Must("PUT", "/v1/admin/switches/"+name, admin, fmt.Sprintf(`{"value":%q}`, value), 200)
		began := time.Now()
		for placeEverywhere(want) != len(direct) {
			if time.Since(began) > 15*time.Second {
				t.Fatalf("%s=%s: not every instance answers %d after 15 s", name, value, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("%s=%s: every instance answers %d within %v", name, value, want, time.Since(began).Round(time.Millisecond))
	}
	set("orders.accept", "false", 503)
	set("orders.accept", "true", 202)
	set("breaker.order_stream", "open", 503)
	set("breaker.order_stream", "auto", 202)
	apitest.VerifyInvariants(t, lb, saleID, 100_000, 1000, l, false)
}

// killedMidPlacement: requests that an instance reserved and then died
// with, before their events reached the stream, are settled by a retry of
// their keys on the other instances once the dead instance's lease has
// expired (limits.instance_lease, 5 s), not after limits.abandon_after
// (90 s). The instance is restarted with a stream that never answers in
// time (SPIKE_FAULT_STREAM_DELAY), so every placement it takes is held
// between reserve and publish when it is killed.
func killedMidPlacement(t *testing.T, cl *cluster) {
	const (
		i      = 2
		buyers = 12
		stock  = 100
		saleID = "e2e-killed-mid-placement"
	)
	sp := cl.spikes[i]
	c := newClient(t, cl.lbAddr, cl.secret)
	c.SetupSale("sku-killed-mid", saleID, stock, perUser)
	plain := sp.env
	sp.kill()
	sp.env = append(slices.Clip(plain), "SPIKE_FAULT_STREAM_DELAY=1h", "SPIKE_FAULT_STREAM_SLOTS=64")
	cl.startSpike(t, i)
	defer func() {
		sp.kill()
		sp.env = plain
		cl.startSpike(t, i)
	}()

	direct := apitest.NewClient(t, sp.addr, cl.secret)
	type key struct {
		user int64
		key  string
	}
	var keys []key
	var g errgroup.Group
	for b := range buyers {
		k := key{user: int64(700_000 + b), key: fmt.Sprintf("mid-%d", b)}
		keys = append(keys, k)
		g.Go(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r, _, err := direct.Place(ctx, k.user, direct.Token(k.user, false), saleID, k.key, 1)
			if err == nil {
				t.Logf("buyer %d answered %d before the kill: %s", k.user, r.Status, r.Body)
			}
			return nil
		})
	}
	// Long enough for every request to be reserved, far below the 5 s
	// enqueue timeout after which they would be answered 503.
	time.Sleep(1500 * time.Millisecond)
	sp.kill()
	killed := time.Now()
	g.Wait()

	l := apitest.NewLedger()
	var (
		mu         sync.Mutex
		slowest    time.Duration
		inProgress int
	)
	var rg errgroup.Group
	for _, k := range keys {
		rg.Go(func() error {
			sawInProgress := false
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				r, p, err := c.Place(ctx, k.user, c.Token(k.user, false), saleID, k.key, 1)
				cancel()
				took := time.Since(killed)
				switch {
				case err == nil && r.Status == 202:
					l.Record(k.user, k.key, 1, p)
					mu.Lock()
					slowest = max(slowest, took)
					if sawInProgress {
						inProgress++
					}
					mu.Unlock()
					return nil
				case err == nil && r.Status == 503 && strings.Contains(string(r.Body), "in progress"):
					sawInProgress = true
				case err == nil && r.Status != 503 && r.Status != 429:
					t.Errorf("retry of buyer %d's key: unexpected %d: %s", k.user, r.Status, r.Body)
					return nil
				}
				if took > 60*time.Second {
					t.Errorf("buyer %d's key still unsettled %v after its instance died (%v %d %s)", k.user, took.Round(time.Millisecond), err, r.Status, r.Body)
					return nil
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	rg.Wait()
	t.Logf("%d of %d keys held by the killed instance were answered \"in progress\" and then settled; the slowest %v after the kill (lease TTL 5 s, abandon_after 90 s)",
		inProgress, len(keys), slowest.Round(time.Millisecond))
	if inProgress == 0 {
		t.Errorf("no retry found its key in progress: the instance did not hold the reservations it was killed with")
	}
	// Generous next to the ~5 s it takes (a lease TTL), and far below the
	// 90 s of abandon_after, the only other way to settle these keys.
	if slowest > 20*time.Second {
		t.Errorf("the slowest key settled %v after its instance died; the lease should settle it in about 5 s", slowest.Round(time.Millisecond))
	}
	apitest.VerifyInvariants(t, c, saleID, stock, perUser, l, false)
}
