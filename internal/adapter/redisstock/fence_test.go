package redisstock_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/adapter/redisstock"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/sale"
)

// placeSome places n confirmed orders of one unit each and returns them as
// the holdings a rebuild would read from the record.
func placeSome(t *testing.T, c *redisstock.Counters, cp sale.Sale, n int) []inventory.Holding {
	t.Helper()
	ctx := context.Background()
	var hs []inventory.Holding
	for i := range n {
		res, _, err := c.Reserve(ctx, req(cp, int64(i+1), "k", 1))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Confirm(ctx, res); err != nil {
			t.Fatal(err)
		}
		hs = append(hs, inventory.Holding{OrderID: res.OrderID, UserID: res.UserID, Key: res.Key, Quantity: res.Quantity, PlacedAt: res.PlacedAt})
	}
	return hs
}

// reserveRetry reserves, retrying a 503 (a connection the restart broke)
// as a client would.
func reserveRetry(ctx context.Context, c *redisstock.Counters, r inventory.Request) (inventory.Reservation, bool, error) {
	for try := 0; ; try++ {
		res, replay, err := c.Reserve(ctx, r)
		if !errors.Is(err, redisstock.ErrUnavailable) || try == 20 {
			return res, replay, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkRecovery fences the sale through lose, rebuilds it from hs on one of
// two racing instances, and checks that both resume with the right counters.
func checkRecovery(t *testing.T, addrs []string, lose func()) {
	ctx := context.Background()
	var fencedA atomic.Int32
	a := newCounters(t, newClient(t, addrs...), redisstock.Config{OnFenced: func(string) { fencedA.Add(1) }})
	b := newCounters(t, newClient(t, addrs...), redisstock.Config{Lookup: func(context.Context, string) (sale.Sale, error) {
		return sale.Sale{}, errors.New("b knows the sale already")
	}})
	cp := campaign(t, 10, 1)
	if err := a.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	hs := placeSome(t, a, cp, 3)
	if _, _, err := b.Reserve(ctx, req(cp, 1, "k", 1)); err != nil { // b learns the sale: a replay
		t.Fatal(err)
	}
	oldEpoch := redisstock.Epoch(a, cp.ID)

	lose()

	// Every instance fences (the client may first report Redis unavailable
	// while it reconnects).
	for _, c := range []*redisstock.Counters{a, b} {
		eventually(t, "ErrFenced", func() bool {
			_, _, err := c.Reserve(ctx, req(cp, 50, "new", 1))
			return errors.Is(err, inventory.ErrFenced)
		})
	}
	if fencedA.Load() != 1 || !redisstock.Fenced(a, cp.ID) || !redisstock.Fenced(b, cp.ID) {
		t.Errorf("OnFenced calls = %d, Fenced() = %v, %v; want 1, true, true", fencedA.Load(), redisstock.Fenced(a, cp.ID), redisstock.Fenced(b, cp.ID))
	}

	// Both instances try to rebuild; one does, the other adopts its epoch.
	var (
		wg      sync.WaitGroup
		rebuilt atomic.Int32
		loads   atomic.Int32
	)
	start := time.Now()
	for _, c := range []*redisstock.Counters{a, b} {
		wg.Go(func() {
			var ok bool
			var err error
			for range 10 { // as OnFenced would fire again: a connection may still be reconnecting
				ok, err = c.Rebuild(ctx, cp, func(context.Context) ([]inventory.Holding, error) {
					loads.Add(1)
					return hs, nil
				})
				if !errors.Is(err, redisstock.ErrUnavailable) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err != nil {
				t.Errorf("Rebuild() = %v", err)
			}
			if ok {
				rebuilt.Add(1)
			}
		})
	}
	wg.Wait()
	t.Logf("rebuilt in %v", time.Since(start))
	if rebuilt.Load() != 1 || loads.Load() != 1 {
		t.Errorf("%d rebuilds and %d loads, want 1 and 1", rebuilt.Load(), loads.Load())
	}
	for _, c := range []*redisstock.Counters{a, b} {
		eventually(t, "the new epoch", func() bool { return redisstock.Epoch(c, cp.ID) > oldEpoch && !redisstock.Fenced(c, cp.ID) })
	}
	if n, ok, err := b.Remaining(ctx, cp.ID); n != 7 || !ok || err != nil {
		t.Errorf("Remaining() after rebuild = %d, %v, %v; want 7, true, nil", n, ok, err)
	}
	// Replays of orders placed before the loss still get their order.
	res, replay, err := reserveRetry(ctx, b, req(cp, 2, "k", 1))
	if err != nil || !replay || res.OrderID != hs[1].OrderID {
		t.Errorf("replay after rebuild = %+v, %v, %v; want order %s", res, replay, err, hs[1].OrderID)
	}
	// The per-user limit survives too, and new buyers resume.
	if _, _, err := reserveRetry(ctx, a, req(cp, 3, "again", 1)); !errors.Is(err, inventory.ErrLimit) {
		t.Errorf("Reserve() over the limit after rebuild = %v, want ErrLimit", err)
	}
	for i := range 7 {
		// A connection broken by the restart fails once (503); retry as a client would.
		var err error
		for try := 0; try < 20; try++ {
			if _, _, err = a.Reserve(ctx, req(cp, int64(100+i), "new", 1)); !errors.Is(err, redisstock.ErrUnavailable) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("Reserve() after rebuild = %v", err)
		}
	}
	if _, _, err := reserveRetry(ctx, b, req(cp, 200, "new", 1)); !errors.Is(err, inventory.ErrSoldOut) {
		t.Errorf("Reserve() past the allocation = %v, want ErrSoldOut", err)
	}
}

func TestFenceAfterFlushAll(t *testing.T) {
	srv := startRedis(t)
	admin := newClient(t, srv.Addr())
	checkRecovery(t, []string{srv.Addr()}, func() {
		if err := admin.Do(context.Background(), admin.B().Flushall().Build()).Error(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestFenceAfterRestart(t *testing.T) {
	srv := startRedis(t)
	checkRecovery(t, []string{srv.Addr()}, func() {
		srv.Kill()
		srv.Start()
	})
}

func TestFenceStaleEpoch(t *testing.T) {
	// A failover to a replica that missed the last rebuild: the counters are
	// complete but older than the epoch the instances know.
	srv := startRedis(t)
	client := newClient(t, srv.Addr())
	ctx := context.Background()
	c := newCounters(t, client, redisstock.Config{})
	cp := campaign(t, 10, 1)
	if err := c.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	hs := placeSome(t, c, cp, 2)
	base := "spiketest:{sale:" + cp.ID + "}:"
	keys := []string{base + "meta", base + "stock", base + "users", base + "keys"}
	dumps := make([]string, len(keys))
	for i, k := range keys {
		d, err := client.Do(ctx, client.B().Dump().Key(k).Build()).ToString()
		if err != nil {
			t.Fatal(err)
		}
		dumps[i] = d
	}
	if err := c.Restore(ctx, cp, hs); err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		if err := client.Do(ctx, client.B().Restore().Key(k).Ttl(0).SerializedValue(dumps[i]).Replace().Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := c.Reserve(ctx, req(cp, 9, "k", 1)); !errors.Is(err, inventory.ErrFenced) {
		t.Fatalf("Reserve() on stale counters = %v, want ErrFenced", err)
	}
	ok, err := c.Rebuild(ctx, cp, func(context.Context) ([]inventory.Holding, error) { return hs, nil })
	if err != nil || !ok {
		t.Fatalf("Rebuild() = %v, %v", ok, err)
	}
	if n, _, _ := c.Remaining(ctx, cp.ID); n != 8 {
		t.Errorf("Remaining() = %d, want 8", n)
	}
}

func TestRebuildWaitsForSettle(t *testing.T) {
	// A placement that reserved before the fence and enqueues during the
	// settle time is in the record the rebuild reads.
	srv := startRedis(t)
	client := newClient(t, srv.Addr())
	ctx := context.Background()
	c := newCounters(t, client, redisstock.Config{Settle: 200 * time.Millisecond})
	cp := campaign(t, 5, 1)
	if err := c.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var record []inventory.Holding
	res, _, err := c.Reserve(ctx, req(cp, 1, "k", 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Do(ctx, client.B().Flushall().Build()).Error(); err != nil {
		t.Fatal(err)
	}
	go func() { // the enqueue lands 50ms into the rebuild
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		record = append(record, inventory.Holding{OrderID: res.OrderID, UserID: 1, Key: "k", Quantity: 1, PlacedAt: res.PlacedAt})
		mu.Unlock()
	}()
	start := time.Now()
	if _, err := c.Rebuild(ctx, cp, func(context.Context) ([]inventory.Holding, error) {
		mu.Lock()
		defer mu.Unlock()
		return append([]inventory.Holding(nil), record...), nil
	}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("Rebuild() took %v, less than Settle", d)
	}
	if n, _, _ := c.Remaining(ctx, cp.ID); n != 4 {
		t.Errorf("Remaining() = %d, want 4", n)
	}
}

// TestRestoreRespectsLock holds a sale's rebuild lock, as a crashed
// rebuilder would until the lock expires.
func TestRestoreRespectsLock(t *testing.T) {
	client := mustShared(t)
	ctx := context.Background()
	c := newCounters(t, client, redisstock.Config{})
	cp := campaign(t, 5, 1)
	deleteSale(t, client, "spiketest", cp.ID)
	lock := "spiketest:{sale:" + cp.ID + "}:lock"
	if err := client.Do(ctx, client.B().Set().Key(lock).Value("other").Px(5*time.Second).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if err := c.Restore(ctx, cp, nil); !errors.Is(err, redisstock.ErrRebuilding) {
		t.Errorf("Restore() under another's lock = %v, want ErrRebuilding", err)
	}
	if ok, err := c.Rebuild(ctx, cp, func(context.Context) ([]inventory.Holding, error) { return nil, nil }); ok || err != nil {
		t.Errorf("Rebuild() under another's lock = %v, %v; want false, nil", ok, err)
	}
	_ = client.Do(ctx, client.B().Del().Key(lock).Build())
	if err := c.Restore(ctx, cp, nil); err != nil {
		t.Fatal(err)
	}
}

func TestFenceWhenSoldOut(t *testing.T) {
	// The sold-out path (HMGET of the key) must notice lost counters too:
	// a replay then gets 503, never a wrong sold_out.
	srv := startRedis(t)
	client := newClient(t, srv.Addr())
	ctx := context.Background()
	c := newCounters(t, client, redisstock.Config{})
	cp := campaign(t, 2, 1)
	if err := c.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	hs := placeSome(t, c, cp, 2)
	if !redisstock.SoldOut(c, cp.ID) {
		t.Fatal("no sold-out flag")
	}
	if err := client.Do(ctx, client.B().Flushall().Build()).Error(); err != nil {
		t.Fatal(err)
	}
	for _, r := range []inventory.Request{req(cp, 1, "k", 1), req(cp, 9, "new", 1)} {
		if _, _, err := c.Reserve(ctx, r); !errors.Is(err, inventory.ErrFenced) {
			t.Errorf("Reserve(%s) on a flushed sold-out sale = %v, want ErrFenced", r.Key, err)
		}
	}
	if ok, err := c.Rebuild(ctx, cp, func(context.Context) ([]inventory.Holding, error) { return hs, nil }); !ok || err != nil {
		t.Fatalf("Rebuild() = %v, %v", ok, err)
	}
	if !redisstock.SoldOut(c, cp.ID) {
		t.Error("no sold-out flag after rebuilding a sold-out sale")
	}
	if _, replay, err := c.Reserve(ctx, req(cp, 1, "k", 1)); !replay || err != nil {
		t.Errorf("replay after rebuild = %v, %v", replay, err)
	}
	if _, _, err := c.Reserve(ctx, req(cp, 9, "new", 1)); !errors.Is(err, inventory.ErrSoldOut) {
		t.Errorf("Reserve() after rebuild = %v, want ErrSoldOut", err)
	}
}
