package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/testkit/apitest"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/redisstock"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/resilience"
)

func TestSwitchesAdminAPI(t *testing.T) {
	a := startApp(t, t.TempDir())
	defer func() { stopApp(t, a) }() // a is replaced by a restart below
	c := newClient(t, a.addr, a.secret)
	c.SetupSale("sku-sw", "sw-sale", 100, 5)
	admin, buyer := c.Token(1, true), c.Token(7, false)

	var list struct {
		Switches []struct{ Name, Value, Default string } `json:"switches"`
	}
	c.Must("GET", "/v1/admin/switches", admin, nil, 200).Decode(t, &list)
	names := map[string]string{}
	for _, s := range list.Switches {
		names[s.Name] = s.Value
	}
	for _, n := range []string{"orders.accept", "notifications", "reads.cache_only", "ratelimit.user_rps"} {
		if _, ok := names[n]; !ok {
			t.Errorf("switch %s missing from %v", n, names)
		}
	}
	c.Must("GET", "/v1/admin/switches", buyer, nil, 403)
	c.Must("PUT", "/v1/admin/switches/orders.accept", buyer, `{"value":false}`, 403)
	c.Must("PUT", "/v1/admin/switches/no.such", admin, `{"value":false}`, 404)
	c.Must("PUT", "/v1/admin/switches/orders.accept", admin, `{"value":"maybe"}`, 400)
	c.Must("PUT", "/v1/admin/switches/ratelimit.user_rps", admin, `{"value":-3}`, 400)

	// Off: placements are refused with 503 and Retry-After, nothing is reserved.
	c.Must("PUT", "/v1/admin/switches/orders.accept", admin, `{"value":false}`, 200)
	r, _, err := c.Place(context.Background(), 7, buyer, "sw-sale", "k1", 1)
	if err != nil || r.Status != 503 || r.Code() != "unavailable" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("placement with orders.accept off: %v %d %s", err, r.Status, r.Body)
	}
	var sv apitest.SaleView
	c.Must("GET", "/v1/sales/sw-sale", "", nil, 200).Decode(t, &sv)
	if sv.Remaining != 100 {
		t.Errorf("a refused placement took stock: %+v", sv)
	}
	// On again: the same key now places.
	c.Must("PUT", "/v1/admin/switches/orders.accept", admin, `{"value":"true"}`, 200)
	if r, _, _ := c.Place(context.Background(), 7, buyer, "sw-sale", "k1", 1); r.Status != 202 {
		t.Fatalf("placement after orders.accept on: %d %s", r.Status, r.Body)
	}

	// Per-buyer rate limit, adjustable at runtime.
	c.Must("PUT", "/v1/admin/switches/ratelimit.user_rps", admin, `{"value":0.001}`, 200)
	c.Must("PUT", "/v1/admin/switches/ratelimit.user_burst", admin, `{"value":1}`, 200)
	var statuses []int
	for i := range 3 {
		r, _, _ := c.Place(context.Background(), 7, buyer, "sw-sale", fmt.Sprintf("rl-%d", i), 1)
		statuses = append(statuses, r.Status)
		if r.Status == 429 && (r.Code() != "rate_limited" || r.Header.Get("Retry-After") == "") {
			t.Errorf("429 without rate_limited code or Retry-After: %s", r.Body)
		}
	}
	if statuses[0] != 202 || statuses[1] != 429 || statuses[2] != 429 {
		t.Errorf("with 1 placement allowed, statuses %v, want [202 429 429]", statuses)
	}
	// Another buyer is not affected.
	if r, _, _ := c.Place(context.Background(), 8, c.Token(8, false), "sw-sale", "other", 1); r.Status != 202 {
		t.Errorf("another buyer: %d %s", r.Status, r.Body)
	}
	// The switch survives a restart: it lives in the config centre.
	stopApp(t, a)
	a = startApp(t, a.data)
	c = newClient(t, a.addr, a.secret)
	c.Must("GET", "/v1/admin/switches", admin, nil, 200).Decode(t, &list)
	for _, s := range list.Switches {
		if s.Name == "ratelimit.user_rps" && s.Value != "0.001" {
			t.Errorf("after restart ratelimit.user_rps = %s, want 0.001", s.Value)
		}
	}
}

// slowStream injects latency in front of the order stream.
type slowStream struct {
	inner order.Stream
	delay atomic.Int64 // nanoseconds
}

func (s *slowStream) Enqueue(ctx context.Context, e order.Placed) error {
	if d := time.Duration(s.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.inner.Enqueue(ctx, e)
}

// TestSlowStreamOpensBreaker slows the stream down until the breaker
// opens, checks that placements then fail fast without taking stock, and
// that the breaker closes again once the stream heals.
func TestSlowStreamOpensBreaker(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	slow := &slowStream{}
	a := startAppWith(t, t.TempDir(), func(s order.Stream) order.Stream { slow.inner = s; return slow })
	defer stopApp(t, a)
	c := newClient(t, a.addr, a.secret)
	const stock = 100_000
	c.SetupSale("sku-slow", "slow-sale", stock, 1000)
	admin := c.Token(1, true)
	c.Must("PUT", "/v1/admin/switches/ratelimit.user_rps", admin, `{"value":0}`, 200)
	l := apitest.NewLedger()

	place := func(user int64, key string) apitest.Response {
		r, p, err := c.Place(context.Background(), user, c.Token(user, false), "slow-sale", key, 1)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status == 202 {
			l.Record(user, key, 1, p)
		}
		return r
	}

	// Slow: every enqueue takes 1.2 s (the breaker's slow-call threshold is 1 s).
	slow.delay.Store(int64(1200 * time.Millisecond))
	var wg sync.WaitGroup
	var slowAccepted, failedFast atomic.Int64
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch r := place(int64(100+i), "slow"); r.Status {
			case 202:
				slowAccepted.Add(1)
			case 503:
				failedFast.Add(1)
			default:
				t.Errorf("slow phase: %d %s", r.Status, r.Body)
			}
		}()
	}
	wg.Wait()
	t.Logf("slow phase: %d accepted slowly, %d refused", slowAccepted.Load(), failedFast.Load())

	// Now open: placements fail fast with 503 and take no stock.
	metrics := string(c.Must("GET", "/metrics", "", nil, 200).Body)
	if !strings.Contains(metrics, `spike_breaker_state{dependency="order_stream"} 1`) {
		t.Fatalf("breaker not open after slow calls:\n%s", grep(metrics, "spike_breaker_state"))
	}
	var before apitest.SaleView
	c.Must("GET", "/v1/sales/slow-sale", "", nil, 200).Decode(t, &before)
	began := time.Now()
	for i := range 20 {
		r := place(int64(500+i), "open")
		if r.Status != 503 || r.Code() != "unavailable" || r.Header.Get("Retry-After") == "" {
			t.Errorf("with the breaker open: %d %s", r.Status, r.Body)
		}
	}
	t.Logf("20 placements refused by the open breaker in %v (the stream takes 1.2 s per call)", time.Since(began))
	var after apitest.SaleView
	c.Must("GET", "/v1/sales/slow-sale", "", nil, 200).Decode(t, &after)
	if after.Remaining != before.Remaining {
		t.Errorf("refused placements took stock: remaining %d, then %d", before.Remaining, after.Remaining)
	}

	// Heal: after the open timeout, trial calls succeed and the breaker closes.
	slow.delay.Store(0)
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		if r := place(900, fmt.Sprintf("heal-%d", i)); r.Status == 202 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("breaker did not close after the stream healed")
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i := range 10 {
		if r := place(901, fmt.Sprintf("after-%d", i)); r.Status != 202 {
			t.Errorf("after healing: %d %s", r.Status, r.Body)
		}
	}
	apitest.VerifyInvariants(t, c, "slow-sale", stock, 1000, l, false)
}

func grep(text, substr string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// slowOrderStore answers Order after a delay.
type slowOrderStore struct {
	stores
	delay time.Duration
	calls atomic.Int64
}

func (s *slowOrderStore) Order(ctx context.Context, id string) (order.Order, error) {
	s.calls.Add(1)
	select {
	case <-time.After(s.delay):
		return order.Order{ID: id}, nil
	case <-ctx.Done():
		return order.Order{}, ctx.Err()
	}
}

// TestSlowOrderReadsAreShed: reads slower than the breaker's slow-call
// threshold open it, and then fail fast without reaching the database.
func TestSlowOrderReadsAreShed(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test: waits out 1.2 s slow reads")
	}
	slow := &slowOrderStore{delay: 1200 * time.Millisecond}
	g := newGuardedOrderReads(slow, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	var wg sync.WaitGroup
	for range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.Order(context.Background(), "x")
		}()
	}
	wg.Wait()
	before := slow.calls.Load()
	began := time.Now()
	_, err := g.Order(context.Background(), "x")
	if !errors.Is(err, errOrderReadsShed) {
		t.Fatalf("after 30 slow reads: %v, want the shed error", err)
	}
	if slow.calls.Load() != before {
		t.Error("a shed read reached the database")
	}
	t.Logf("a shed read answered in %v", time.Since(began))
	// A read whose caller has less time than the store needs is cut at the budget.
	slow.delay = 0
	fast := newGuardedOrderReads(&slowOrderStore{delay: time.Minute}, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := fast.Order(ctx, "x"); err == nil {
		t.Error("a read past its deadline succeeded")
	}
}

// fakeReserver answers like redisstock: after delay, with err.
type fakeReserver struct {
	delay              atomic.Int64 // nanoseconds
	err                atomic.Pointer[error]
	reserves, releases atomic.Int64
	confirms           atomic.Int64
}

func (f *fakeReserver) wait(ctx context.Context) error {
	select {
	case <-time.After(time.Duration(f.delay.Load())):
	case <-ctx.Done():
		return fmt.Errorf("redis stock: %w", errors.Join(redisstock.ErrUnavailable, ctx.Err()))
	}
	if e := f.err.Load(); e != nil {
		return *e
	}
	return nil
}

func (f *fakeReserver) Reserve(ctx context.Context, r inventory.Request) (inventory.Reservation, bool, error) {
	f.reserves.Add(1)
	return inventory.Reservation{OrderID: "o"}, false, f.wait(ctx)
}

func (f *fakeReserver) Confirm(ctx context.Context, res inventory.Reservation) error {
	f.confirms.Add(1)
	return f.wait(ctx)
}

func (f *fakeReserver) Release(ctx context.Context, res inventory.Reservation) error {
	f.releases.Add(1)
	return f.wait(ctx)
}

// TestStockGuard: domain answers never open the redis_stock breaker; slow
// calls do, and then reserves are refused without reaching Redis while
// confirms and releases still go through; a failed release is retried.
func TestStockGuard(t *testing.T) {
	f := &fakeReserver{}
	g := newGuardedStock(f, stockCallTimeout, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	soldOut := error(inventory.ErrSoldOut)
	f.err.Store(&soldOut)
	for range 100 {
		g.Reserve(context.Background(), inventory.Request{})
	}
	if s := g.breaker.State(); s != resilience.Closed {
		t.Fatalf("after 100 sold-out answers the breaker is %v", s)
	}

	// Slow (300 ms ≥ the 250 ms slow-call mark): the breaker opens.
	f.err.Store(nil)
	f.delay.Store(int64(300 * time.Millisecond))
	var wg sync.WaitGroup
	for range 30 {
		wg.Add(1)
		go func() { defer wg.Done(); g.Reserve(context.Background(), inventory.Request{}) }()
	}
	wg.Wait()
	if s := g.breaker.State(); s != resilience.Open {
		t.Fatalf("after 30 slow reserves the breaker is %v", s)
	}
	before := f.reserves.Load()
	if _, _, err := g.Reserve(context.Background(), inventory.Request{}); !errors.Is(err, errStockBreakerOpen) || !errors.Is(err, spike.ErrUnavailable) {
		t.Fatalf("reserve with the breaker open: %v", err)
	}
	if f.reserves.Load() != before {
		t.Error("a refused reserve reached Redis")
	}
	// Confirm and release finish reservations already taken: not refused.
	f.delay.Store(0)
	if err := g.Confirm(context.Background(), inventory.Reservation{}); err != nil || f.confirms.Load() != 1 {
		t.Errorf("confirm with the breaker open: %v (%d calls)", err, f.confirms.Load())
	}
	if err := g.Release(context.Background(), inventory.Reservation{}); err != nil || f.releases.Load() != 1 {
		t.Errorf("release with the breaker open: %v (%d calls)", err, f.releases.Load())
	}

	// A release cut by the timeout is reported, then retried until it works.
	f.delay.Store(int64(time.Minute))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := g.Release(ctx, inventory.Reservation{}); err == nil {
		t.Fatal("a release past its deadline succeeded")
	}
	f.delay.Store(0)
	deadline := time.Now().Add(10 * time.Second)
	for f.releases.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("the failed release was not retried")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// slotStream is a slowed dependency in front of the stream: at most slots
// publishes at a time, each taking delay.
type slotStream struct {
	inner order.Stream
	slots chan struct{}
	delay time.Duration
}

func (s *slotStream) Enqueue(ctx context.Context, e order.Placed) error {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("gave up waiting: %w", order.ErrNotEnqueued)
	}
	time.Sleep(s.delay)
	<-s.slots
	return s.inner.Enqueue(ctx, e)
}

// TestSlowStreamLimitSheds: a stream that serves 2 publishes at a time, 10
// ms each (200/s), under 128 buyers placing as fast as they are answered.
// The stream's adaptive limit shrinks from its initial 256 towards what the
// stream serves, the excess placements are refused with 503 unavailable and
// Retry-After without taking stock, and I1–I5 hold. (A fixed bulkhead of
// 8192 would have let all 128 queue at the stream.)
func TestSlowStreamLimitSheds(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	cpuGateOff.Store(true) // the race-instrumented clients saturate the CPU
	defer cpuGateOff.Store(false)
	slow := &slotStream{slots: make(chan struct{}, 2), delay: 10 * time.Millisecond}
	a := startAppWith(t, t.TempDir(), func(s order.Stream) order.Stream { slow.inner = s; return slow })
	defer stopApp(t, a)
	c := newClient(t, a.addr, a.secret)
	const stock, perUser, buyers, requests = 1_000_000, 1_000_000, 128, 4000
	c.SetupSale("sku-slot", "slot-sale", stock, perUser)
	c.Must("PUT", "/v1/admin/switches/ratelimit.user_rps", c.Token(1, true), `{"value":0}`, 200)
	l := apitest.NewLedger()

	// Light traffic first, as before any real overload: one buyer at a
	// time, so the limit learns the stream's unqueued latency. (It never
	// probes for it while it is not refusing calls: a probe sheds.)
	warm := c.Token(999, false)
	for i := range 40 {
		key := fmt.Sprintf("warm-%d", i)
		r, p, err := c.Place(context.Background(), 999, warm, "slot-sale", key, 1)
		if err != nil || r.Status != 202 {
			t.Fatalf("warm-up placement: %v %d %s", err, r.Status, r.Body)
		}
		l.Record(999, key, 1, p)
	}

	// The limit is sampled while the load runs: once the buyers stop, the
	// latency falls and it grows back, so its final value says little. The
	// algorithm itself is held to figures on a fake clock in resilience
	// (TestAdaptiveProbedSlowDependency); this test checks the wiring.
	var lowest atomic.Int64
	lowest.Store(1 << 30)
	sampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-sampling:
				return
			case <-time.After(50 * time.Millisecond):
			}
			r, err := http.Get("http://" + a.addr + "/metrics")
			if err != nil {
				continue
			}
			body, _ := io.ReadAll(r.Body)
			r.Body.Close()
			for _, line := range strings.Split(string(body), "\n") {
				if v, ok := strings.CutPrefix(line, `spike_dependency_limit{dependency="order_stream"} `); ok {
					if f, err := strconv.ParseFloat(v, 64); err == nil && int64(f) < lowest.Load() {
						lowest.Store(int64(f))
					}
				}
			}
		}
	}()

	var sent, accepted, refused atomic.Int64
	var wg sync.WaitGroup
	for b := range buyers {
		user := int64(1000 + b)
		tok := c.Token(user, false)
		wg.Go(func() {
			for i := 0; sent.Add(1) <= requests; i++ {
				key := fmt.Sprintf("k%d", i)
				r, p, err := c.Place(context.Background(), user, tok, "slot-sale", key, 1)
				if err != nil {
					t.Error(err)
					return
				}
				switch {
				case r.Status == 202:
					accepted.Add(1)
					l.Record(user, key, 1, p)
				case r.Status == 503 && r.Header.Get("Retry-After") != "" && (r.Code() == "unavailable" || r.Code() == "overloaded"):
					refused.Add(1)
				default:
					t.Errorf("placement: %d %s", r.Status, r.Body)
					return
				}
			}
		})
	}
	wg.Wait()
	close(sampling)
	<-sampled
	metrics := string(c.Must("GET", "/metrics", "", nil, 200).Body)
	t.Logf("%d accepted, %d refused, lowest stream limit seen %d\n%s", accepted.Load(), refused.Load(), lowest.Load(), grep(metrics, "spike_dependency_"))
	limit, shed := float64(lowest.Load()), metricValue(t, metrics, `spike_dependency_shed_total{dependency="order_stream"}`)
	if shed == 0 || refused.Load() == 0 {
		t.Errorf("no placement was shed by the stream limit (shed %v, refused %d)", shed, refused.Load())
	}
	if limit >= buyers {
		t.Errorf("lowest stream limit seen %v, want below the %d buyers in flight", limit, buyers)
	}
	if accepted.Load() == 0 {
		t.Error("nothing was accepted")
	}
	if strings.Contains(metrics, `spike_breaker_state{dependency="order_stream"} 1`) {
		t.Error("the breaker opened: the stream was slow, not failing")
	}
	// Refused placements took no stock: remaining + sold = stock and every
	// acknowledged order is persisted.
	apitest.VerifyInvariants(t, c, "slot-sale", stock, perUser, l, false)
}

// metricValue returns the value of the metric line starting with name.
func metricValue(t *testing.T, metrics, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s missing", name)
	return 0
}

// TestBreakerSwitches: an operator forces the order stream's breaker open
// (placements are refused at once with 503 and Retry-After, nothing is
// reserved), then closed, then back to auto, through the admin API; a value
// that is not auto, open or closed is a 400. I1–I5 hold.
func TestBreakerSwitches(t *testing.T) {
	a := startApp(t, t.TempDir())
	defer stopApp(t, a)
	c := newClient(t, a.addr, a.secret)
	const saleID, stock, perUser = "brk-sale", 100, 10
	c.SetupSale("sku-brk", saleID, stock, perUser)
	admin, buyer := c.Token(1, true), c.Token(7, false)
	const sw = "/v1/admin/switches/breaker.order_stream"
	state := `spike_breaker_state{dependency="order_stream"}`
	l := apitest.NewLedger()
	place := func(key string) apitest.Response {
		r, p, err := c.Place(context.Background(), 7, buyer, saleID, key, 1)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status == 202 {
			l.Record(7, key, 1, p)
		}
		return r
	}

	c.Must("PUT", sw, admin, `{"value":"shut"}`, 400)
	// A dependency this mode does not use: the switch exists, and does nothing.
	c.Must("PUT", "/v1/admin/switches/breaker.redis_stock", admin, `{"value":"open"}`, 200)
	c.Must("PUT", sw, buyer, `{"value":"open"}`, 403)
	if r := place("before"); r.Status != 202 {
		t.Fatalf("placement before the override: %d %s", r.Status, r.Body)
	}

	c.Must("PUT", sw, admin, `{"value":"open"}`, 200)
	if s := metric(c, state); s != float64(resilience.ForcedOpen) {
		t.Errorf("%s = %v after forcing it open, want %d", state, s, resilience.ForcedOpen)
	}
	var before apitest.SaleView
	c.Must("GET", "/v1/sales/"+saleID, "", nil, 200).Decode(t, &before)
	for i := range 5 {
		r := place(fmt.Sprintf("open-%d", i))
		if r.Status != 503 || r.Code() != "unavailable" || r.Header.Get("Retry-After") == "" {
			t.Fatalf("placement with the stream's breaker forced open: %d %s", r.Status, r.Body)
		}
	}
	var after apitest.SaleView
	c.Must("GET", "/v1/sales/"+saleID, "", nil, 200).Decode(t, &after)
	if after.Remaining != before.Remaining {
		t.Errorf("refused placements took stock: remaining %d, then %d", before.Remaining, after.Remaining)
	}

	c.Must("PUT", sw, admin, `{"value":"closed"}`, 200)
	if s := metric(c, state); s != float64(resilience.ForcedClosed) {
		t.Errorf("%s = %v after forcing it closed, want %d", state, s, resilience.ForcedClosed)
	}
	if r := place("closed"); r.Status != 202 {
		t.Fatalf("placement with the breaker forced closed: %d %s", r.Status, r.Body)
	}

	c.Must("PUT", sw, admin, `{"value":"auto"}`, 200)
	if s := metric(c, state); s != float64(resilience.Closed) {
		t.Errorf("%s = %v back on auto, want %d (closed)", state, s, resilience.Closed)
	}
	// The keys refused while open place now.
	for i := range 5 {
		if r := place(fmt.Sprintf("open-%d", i)); r.Status != 202 {
			t.Fatalf("placement back on auto: %d %s", r.Status, r.Body)
		}
	}
	apitest.VerifyInvariants(t, c, saleID, stock, perUser, l, false)
}

// TestStreamLimitConfig: the limits.stream_* settings reach the stream's
// guard: its limit starts at min(256, stream_max) and its bulkhead holds
// stream_max.
func TestStreamLimitConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Limits.StreamMin, cfg.Limits.StreamMax = 2, 64
	a := startAppConfig(t, cfg)
	defer stopApp(t, a)
	c := newClient(t, a.addr, a.secret)
	if got := metric(c, `spike_dependency_limit{dependency="order_stream"}`); got != 64 {
		t.Errorf("stream limit %v with limits.stream_max 64, want 64", got)
	}
	if got := metric(c, `spike_bulkhead_size{dependency="order_stream"}`); got != 64 {
		t.Errorf("stream bulkhead %v with limits.stream_max 64, want 64", got)
	}
}
