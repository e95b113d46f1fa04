package main

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/switches"
	"github.com/spikehq/spike/internal/testkit/apitest"
)

// TestSlowRedisSalePage runs the clustered wiring with Redis behind a
// fault-injecting proxy and polls a sale page while Redis replies later
// than the 1 s load timeout: every read answers, with the cached units
// (≤ 1 s old) or 503 + Retry-After, none waits past the load timeout by
// much; the sale_counters breaker opens and reads then fail fast without
// reaching Redis; once Redis heals the page shows the units again.
func TestSlowRedisSalePage(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	a, proxy := startBehindSlowRedis(t)
	defer stopApp(t, a)
	// Eight readers on one address in tight loops: far past the per-IP
	// limit, which is not what this test is about.
	if err := a.board.Apply(switches.IPRate, "0"); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, a.addr, a.secret)
	const (
		stock  = 500
		saleID = "page-slow"
		state  = `spike_breaker_state{dependency="sale_counters"}`
		loads  = `spike_sale_cache_loads_total{cache="remaining"}`
		page   = "/v1/sales/" + saleID
		// hang is far past the 1 s load timeout: a read that takes longer
		// waited on Redis unguarded. (Answers normally take milliseconds,
		// or the load timeout; the slack is for a loaded CI machine.)
		hang = 5 * time.Second
	)
	c.SetupSale("sku-page-slow", saleID, stock, 1)

	// get reads the page and fails the test on anything but 200 (with the
	// sale's units) or 503 unavailable + Retry-After, or on a hang.
	get := func(phase string) int {
		ctx, cancel := context.WithTimeout(context.Background(), hang)
		defer cancel()
		r, err := c.Do(ctx, "GET", page, "", nil, nil)
		switch {
		case err != nil:
			t.Errorf("%s: GET %s: %v", phase, page, err)
			return 0
		case r.Status == 200:
			var sv apitest.SaleView
			r.Decode(t, &sv)
			if sv.Remaining != stock || sv.Sold != 0 {
				t.Errorf("%s: %+v, want %d remaining", phase, sv, stock)
			}
		case r.Status != 503 || r.Code() != "unavailable" || r.Header.Get("Retry-After") == "":
			t.Errorf("%s: %d %s, want 200 or 503 unavailable + Retry-After", phase, r.Status, r.Body)
		}
		return r.Status
	}
	// poll reads with 8 readers until done reports true, and counts the
	// answers by status.
	poll := func(phase string, limit time.Duration, done func() bool) map[int]int {
		var mu sync.Mutex
		statuses := map[int]int{}
		began := time.Now()
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for !done() && time.Since(began) < limit && !t.Failed() {
					s := get(phase)
					mu.Lock()
					statuses[s]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if !done() {
			t.Fatalf("%s: not done within %v (answers %v)", phase, limit, statuses)
		}
		return statuses
	}

	healthy := poll("healthy", time.Minute, func() bool { return metric(c, loads) >= 3 })
	if healthy[200] == 0 || len(healthy) != 1 {
		t.Fatalf("healthy Redis: answers %v, want only 200", healthy)
	}
	t.Logf("healthy: %d reads answered 200 with %v loads from Redis", healthy[200], metric(c, loads))

	// Slow: every Redis reply is 1.5 s late, past the 1 s load timeout.
	proxy.SetLatency(0, 1500*time.Millisecond)
	began := time.Now()
	slow := poll("slow", time.Minute, func() bool { return metric(c, state) == 1 })
	t.Logf("slow Redis (+1.5 s per reply): sale_counters breaker open after %v; meanwhile answers %v", time.Since(began).Round(time.Millisecond), slow)

	// Open: reads fail fast without reaching Redis. The breaker goes
	// half-open after 2 s and lets one trial load through.
	loadsBefore := metric(c, loads)
	var slowest time.Duration
	refused := 0
	for range 20 {
		t0 := time.Now()
		if get("open") == 503 {
			refused++
		}
		slowest = max(slowest, time.Since(t0))
	}
	if extra := metric(c, loads) - loadsBefore; extra > 1 || refused < 19 {
		t.Errorf("breaker open: %d of 20 reads refused, %v loads reached Redis; want ≥ 19 refused and ≤ 1 trial load", refused, extra)
	}
	t.Logf("breaker open: %d of 20 reads answered 503 + Retry-After, slowest %v", refused, slowest.Round(time.Microsecond))

	// Heal: a trial load succeeds, the breaker closes, the page shows the
	// units again.
	proxy.SetLatency(0, 0)
	began = time.Now()
	healed := poll("heal", time.Minute, func() bool { return metric(c, state) == 0 })
	ok := 0
	for i := range 10 {
		if get(fmt.Sprintf("after-%d", i)) == 200 {
			ok++
		}
	}
	if ok != 10 {
		t.Errorf("after Redis healed: %d of 10 reads answered 200", ok)
	}
	t.Logf("Redis healed: breaker closed after %v (answers meanwhile %v)", time.Since(began).Round(time.Millisecond), healed)
}
