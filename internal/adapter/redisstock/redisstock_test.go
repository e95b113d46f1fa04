package redisstock_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/redisstock"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/testkit/stocktest"
)

// TestConformance holds the Redis counters to the rules every
// inventory.Stock keeps, as two instances on two clients of one standalone
// Redis.
func TestConformance(t *testing.T) {
	addr := mustRedisAddr(t)
	// A prefix of its own, whose keys are deleted at the end: the suite
	// does not know the keys of the sales it opens.
	prefix := "spiketest-" + randomID(t)
	client := mustShared(t)
	t.Cleanup(func() {
		ctx := context.Background()
		var cursor uint64
		for {
			e, err := client.Do(ctx, client.B().Scan().Cursor(cursor).Match(prefix+":*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				t.Logf("cleanup: %v", err)
				return
			}
			if len(e.Elements) > 0 {
				_ = client.Do(ctx, client.B().Unlink().Key(e.Elements...).Build()).Error()
			}
			if cursor = e.Cursor; cursor == 0 {
				return
			}
		}
	})
	stocktest.Run(t, func(t *testing.T) (a, b inventory.Stock) {
		cfg := redisstock.Config{Prefix: prefix}
		return newCounters(t, newClient(t, addr), cfg), newCounters(t, newClient(t, addr), cfg)
	})
}

// TestReturnClearsSoldOutEverywhere: a Return on one instance clears the
// local sold-out flag of every instance (by pub/sub, not only by the next
// reserve's reply).
func TestReturnClearsSoldOutEverywhere(t *testing.T) {
	client := mustShared(t)
	ctx := context.Background()
	a := newCounters(t, client, redisstock.Config{})
	b := newCounters(t, newClient(t, mustRedisAddr(t)), redisstock.Config{})
	cp := campaign(t, 2, 2)
	deleteSale(t, client, "spiketest", cp.ID)
	if err := a.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	res, _, err := b.Reserve(ctx, req(cp, 1, "a", 2))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Confirm(ctx, res); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Reserve(ctx, req(cp, 2, "b", 1)); !errors.Is(err, inventory.ErrSoldOut) {
		t.Fatalf("Reserve() = %v, want sold out", err)
	}
	eventually(t, "both sold-out flags", func() bool { return redisstock.SoldOut(a, cp.ID) && redisstock.SoldOut(b, cp.ID) })
	ok, err := a.Return(ctx, inventory.Return{SaleID: cp.ID, OrderID: res.OrderID, UserID: 1, Key: "a", Quantity: 2})
	if !ok || err != nil {
		t.Fatalf("Return() = %v, %v", ok, err)
	}
	eventually(t, "the flags to clear on every instance", func() bool { return !redisstock.SoldOut(a, cp.ID) && !redisstock.SoldOut(b, cp.ID) })
	// The returned set lives as long as the sale's keys.
	base := "spiketest:{sale:" + cp.ID + "}:"
	metaTTL, err1 := client.Do(ctx, client.B().Pttl().Key(base+"meta").Build()).AsInt64()
	setTTL, err2 := client.Do(ctx, client.B().Pttl().Key(base+"returned").Build()).AsInt64()
	if err1 != nil || err2 != nil || setTTL <= 0 || metaTTL-setTTL > 5000 || setTTL-metaTTL > 5000 {
		t.Errorf("returned set PTTL %d (%v), meta PTTL %d (%v): want about the same", setTTL, err2, metaTTL, err1)
	}
	// And it survives a rebuild: Restore keeps what it is told was returned.
	if err := a.Restore(ctx, cp, []inventory.Holding{{OrderID: res.OrderID, UserID: 1, Key: "a", Quantity: 2, PlacedAt: res.PlacedAt, Returned: true}}); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.Return(ctx, inventory.Return{SaleID: cp.ID, OrderID: res.OrderID, UserID: 1, Key: "a", Quantity: 2}); ok || err != nil {
		t.Errorf("Return() after a rebuild = %v, %v; want false", ok, err)
	}
	if n, err := client.Do(ctx, client.B().Pttl().Key(base+"returned").Build()).AsInt64(); err != nil || n <= 0 {
		t.Errorf("returned set PTTL after Restore = %d, %v", n, err)
	}
}

func TestSaleLearntFromRedis(t *testing.T) {
	client := mustShared(t)
	ctx := context.Background()
	c := newCounters(t, client, redisstock.Config{})
	// A sale opened by another instance is learnt from Redis.
	cp := campaign(t, 2, 1)
	deleteSale(t, client, "spiketest", cp.ID)
	if err := newCounters(t, client, redisstock.Config{}).Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	res, _, err := c.Reserve(ctx, req(cp, 1, "k", 1))
	if err != nil {
		t.Fatal(err)
	}
	if res.SKU != cp.SKU || res.PriceCents != cp.PriceCents {
		t.Errorf("Reserve() = %+v, want the campaign's SKU and price", res)
	}
	// Opening it again changes nothing.
	if err := c.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	if n, ok, err := c.Remaining(ctx, cp.ID); n != 1 || !ok || err != nil {
		t.Errorf("Remaining() = %d, %v, %v; want 1, true, nil", n, ok, err)
	}
}

func TestConcurrentReserves(t *testing.T) {
	client := mustShared(t)
	ctx := context.Background()
	const (
		allocated  = 1000
		limit      = 3
		goroutines = 200
		perG       = 25
		users      = 600
	)
	cp := campaign(t, allocated, limit)
	deleteSale(t, client, "spiketest", cp.ID)
	// Two instances on two clients share the sale.
	a := newCounters(t, client, redisstock.Config{})
	b := newCounters(t, newClient(t, mustRedisAddr(t)), redisstock.Config{})
	if err := a.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		byUser = map[int64]int64{}
		units  atomic.Int64
		wg     sync.WaitGroup
	)
	for g := range goroutines {
		wg.Go(func() {
			c := a
			if g%2 == 1 {
				c = b
			}
			for i := range perG {
				user := rand.Int64N(users) + 1
				qty := rand.Int64N(2) + 1
				res, _, err := c.Reserve(ctx, req(cp, user, key(g*perG+i), qty))
				switch {
				case err == nil:
					units.Add(res.Quantity)
					mu.Lock()
					byUser[user] += res.Quantity
					mu.Unlock()
				case errors.Is(err, inventory.ErrSoldOut), errors.Is(err, inventory.ErrLimit):
				default:
					t.Errorf("Reserve() error = %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	st, ok, err := a.Stats(ctx, cp.ID)
	if err != nil || !ok {
		t.Fatalf("Stats() = %v, %v", ok, err)
	}
	if st.Remaining < 0 || st.Held != allocated-st.Remaining || st.Held != units.Load() {
		t.Errorf("Stats() = %+v; reserved %d units: oversold or leaked", st, units.Load())
	}
	if st.MaxPerBuyer > limit {
		t.Errorf("Stats().MaxPerBuyer = %d, above the limit %d", st.MaxPerBuyer, limit)
	}
	for u, n := range byUser {
		if n > limit {
			t.Errorf("user %d got %d units, above the limit %d", u, n, limit)
		}
	}
	if st.Buyers != len(byUser) {
		t.Errorf("Stats().Buyers = %d, want %d", st.Buyers, len(byUser))
	}
	t.Logf("sold %d of %d units to %d buyers", st.Held, allocated, st.Buyers)
}

func TestSoldOutPropagates(t *testing.T) {
	client := mustShared(t)
	ctx := context.Background()
	a := newCounters(t, client, redisstock.Config{})
	b := newCounters(t, newClient(t, mustRedisAddr(t)), redisstock.Config{})
	cp := campaign(t, 2, 1)
	deleteSale(t, client, "spiketest", cp.ID)
	if err := a.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	// b learns the sale (and places the first unit).
	first, _, err := b.Reserve(ctx, req(cp, 1, "a", 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Confirm(ctx, first); err != nil {
		t.Fatal(err)
	}
	last, _, err := a.Reserve(ctx, req(cp, 2, "b", 1))
	if err != nil {
		t.Fatal(err)
	}
	if !redisstock.SoldOut(a, cp.ID) {
		t.Error("the instance that sold the last unit has no sold-out flag")
	}
	eventually(t, "the sold-out flag on the other instance", func() bool { return redisstock.SoldOut(b, cp.ID) })

	// On b a new key is refused by the peek (one HMGET, not the reserve script).
	if _, _, err := b.Reserve(ctx, req(cp, 3, "c", 1)); !errors.Is(err, inventory.ErrSoldOut) {
		t.Fatalf("Reserve() error = %v, want ErrSoldOut", err)
	}
	// A replay of a confirmed key still gets its order after the sell-out.
	res, replay, err := b.Reserve(ctx, req(cp, 1, "a", 1))
	if err != nil || !replay || res.OrderID != first.OrderID {
		t.Fatalf("Reserve() replay after sold out = %+v, %v, %v; want %s", res, replay, err, first.OrderID)
	}
	if st, _, _ := a.Stats(ctx, cp.ID); st.Held != 2 || st.Remaining != 0 {
		t.Errorf("Stats() = %+v; a sold-out reject changed the counters", st)
	}

	// A release on a clears the flag everywhere.
	if err := a.Release(ctx, last); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the flag to clear on the other instance", func() bool { return !redisstock.SoldOut(b, cp.ID) })
	if _, _, err := b.Reserve(ctx, req(cp, 3, "c", 1)); err != nil {
		t.Errorf("Reserve() after restock = %v", err)
	}
}

func TestSoldOutPeekSelfHeals(t *testing.T) {
	// b misses the restock news (it does not Run): its next peek learns it.
	client := mustShared(t)
	ctx := context.Background()
	a := newCounters(t, client, redisstock.Config{})
	b := redisstock.New(newClient(t, mustRedisAddr(t)), spike.NewIDGenerator(), redisstock.Config{Prefix: "spiketest"})
	cp := campaign(t, 1, 1)
	deleteSale(t, client, "spiketest", cp.ID)
	if err := a.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	res, _, err := b.Reserve(ctx, req(cp, 1, "a", 1))
	if err != nil || !redisstock.SoldOut(b, cp.ID) {
		t.Fatalf("Reserve() = %v; sold out flag %v", err, redisstock.SoldOut(b, cp.ID))
	}
	if err := a.Release(ctx, res); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Reserve(ctx, req(cp, 2, "b", 1)); err != nil {
		t.Errorf("Reserve() after a missed restock = %v, want success", err)
	}
}

func TestRoundTripsPerPlacement(t *testing.T) {
	client := mustShared(t)
	ctx := context.Background()
	c := newCounters(t, client, redisstock.Config{})
	cp := campaign(t, 100, 1)
	deleteSale(t, client, "spiketest", cp.ID)
	if err := c.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	const n = 50
	before := c.RoundTrips()
	for i := range n {
		res, _, err := c.Reserve(ctx, req(cp, int64(i+1), "k", 1))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Confirm(ctx, res); err != nil {
			t.Fatal(err)
		}
	}
	// Background work (a lookup, a retried confirm) may add a stray trip.
	if got := float64(c.RoundTrips()-before) / n; got < 2 || got > 2.1 {
		t.Errorf("round trips per placement = %v, want 2 (reserve + confirm)", got)
	}
	before = c.RoundTrips()
	for i := range n { // replays
		if _, _, err := c.Reserve(ctx, req(cp, int64(i+1), "k", 1)); err != nil {
			t.Fatal(err)
		}
	}
	if got := float64(c.RoundTrips()-before) / n; got != 1 {
		t.Errorf("round trips per replay = %v, want 1", got)
	}
}

func TestPartialLossFences(t *testing.T) {
	client := mustShared(t)
	ctx := context.Background()
	for _, part := range []string{"meta", "stock", "users", "keys"} {
		t.Run(part, func(t *testing.T) {
			var fenced atomic.Int32
			c := newCounters(t, client, redisstock.Config{OnFenced: func(string) { fenced.Add(1) }})
			cp := campaign(t, 5, 1)
			deleteSale(t, client, "spiketest", cp.ID)
			if err := c.Open(ctx, cp); err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.Reserve(ctx, req(cp, 1, "a", 1)); err != nil {
				t.Fatal(err)
			}
			k := "spiketest:{sale:" + cp.ID + "}:" + part
			if err := client.Do(ctx, client.B().Del().Key(k).Build()).Error(); err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.Reserve(ctx, req(cp, 2, "b", 1)); !errors.Is(err, inventory.ErrFenced) {
				t.Fatalf("Reserve() with %s lost = %v, want ErrFenced", part, err)
			}
			if !redisstock.Fenced(c, cp.ID) || fenced.Load() != 1 {
				t.Errorf("Fenced() = %v, OnFenced calls = %d; want true, 1", redisstock.Fenced(c, cp.ID), fenced.Load())
			}
			if _, ok, _ := c.Remaining(ctx, cp.ID); ok {
				t.Error("Remaining() ok on fenced counters")
			}
		})
	}
}

// TestReturnOnFencedCounters: a Return on lost counters changes nothing and
// says so (ErrFenced, retry after the rebuild), and reports the sale fenced.
func TestReturnOnFencedCounters(t *testing.T) {
	client := mustShared(t)
	ctx := context.Background()
	var fenced atomic.Int32
	c := newCounters(t, client, redisstock.Config{OnFenced: func(string) { fenced.Add(1) }})
	cp := campaign(t, 5, 1)
	deleteSale(t, client, "spiketest", cp.ID)
	if err := c.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	res, _, err := c.Reserve(ctx, req(cp, 1, "a", 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Do(ctx, client.B().Del().Key("spiketest:{sale:"+cp.ID+"}:stock").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	ok, err := c.Return(ctx, inventory.Return{SaleID: cp.ID, OrderID: res.OrderID, UserID: 1, Key: "a", Quantity: 1})
	if ok || !errors.Is(err, inventory.ErrFenced) || fenced.Load() != 1 {
		t.Errorf("Return() on fenced counters = %v, %v (OnFenced calls %d); want ErrFenced, 1 call", ok, err, fenced.Load())
	}
}
