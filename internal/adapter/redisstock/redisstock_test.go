package redisstock_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/redisstock"
	"github.com/spikehq/spike/internal/domain/inventory"
)

func TestReserveRules(t *testing.T) {
	client := mustShared(t)
	c := newCounters(t, client, redisstock.Options{})
	ctx := context.Background()
	cp := campaign(t, 5, 2)
	deleteSale(t, client, "spiketest", cp.ID)
	if err := c.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}

	orders := map[string]inventory.Reservation{} // by step name
	steps := []struct {
		name       string
		user       int64
		key        string
		qty        int64
		confirm    bool
		wantErr    error
		wantReplay string // step whose order a replay returns
	}{
		{name: "first", user: 1, key: "a", qty: 1},
		{name: "unconfirmed replay", user: 1, key: "a", qty: 1, wantErr: inventory.ErrInProgress},
		{name: "confirm first", user: 1, key: "a", qty: 1, confirm: true, wantReplay: "first"},
		{name: "replay after confirm", user: 1, key: "a", qty: 1, wantReplay: "first"},
		{name: "replay different quantity", user: 1, key: "a", qty: 2, wantErr: inventory.ErrKeyReused},
		{name: "same key other user is new", user: 2, key: "a", qty: 2, confirm: true},
		{name: "over limit", user: 1, key: "b", qty: 2, wantErr: inventory.ErrLimit},
		{name: "quantity above limit", user: 3, key: "c", qty: 3, wantErr: spike.ErrInvalid},
		{name: "quantity zero", user: 3, key: "c", qty: 0, wantErr: spike.ErrInvalid},
		{name: "up to limit", user: 1, key: "b", qty: 1, confirm: true},
		{name: "not enough stock", user: 3, key: "d", qty: 2, wantErr: inventory.ErrSoldOut},
		{name: "last unit", user: 3, key: "d", qty: 1, confirm: true},
		{name: "sold out", user: 4, key: "e", qty: 1, wantErr: inventory.ErrSoldOut},
		{name: "replay after sold out", user: 2, key: "a", qty: 2, wantReplay: "same key other user is new"},
		{name: "conflict after sold out", user: 2, key: "a", qty: 1, wantErr: inventory.ErrKeyReused},
	}
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) {
			r := req(cp, tt.user, tt.key, tt.qty)
			res, replay, err := c.Reserve(ctx, r)
			if tt.confirm && tt.wantReplay != "" {
				// Confirm the earlier order first, then replay it.
				if err := c.Confirm(ctx, orders[tt.wantReplay]); err != nil {
					t.Fatal(err)
				}
				res, replay, err = c.Reserve(ctx, r)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Reserve() error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if tt.wantReplay != "" {
				want := orders[tt.wantReplay]
				if !replay {
					t.Errorf("Reserve() replay = false, want true")
				}
				if diff := cmp.Diff(want, res); diff != "" {
					t.Errorf("Reserve() replay mismatch (-want +got):\n%s", diff)
				}
				return
			}
			if replay {
				t.Errorf("Reserve() replay = true, want false")
			}
			want := inventory.Reservation{OrderID: res.OrderID, SaleID: cp.ID, SKU: cp.SKU, UserID: tt.user, Key: tt.key,
				Quantity: tt.qty, PriceCents: cp.PriceCents, PlacedAt: res.PlacedAt}
			if diff := cmp.Diff(want, res); diff != "" {
				t.Errorf("Reserve() mismatch (-want +got):\n%s", diff)
			}
			if res.OrderID == "" || time.Since(res.PlacedAt) > time.Minute || res.PlacedAt.Location() != time.UTC {
				t.Errorf("Reserve() = %+v: bad order id or placed time", res)
			}
			orders[tt.name] = res
			if tt.confirm {
				if err := c.Confirm(ctx, res); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	st, ok, err := c.Stats(ctx, cp.ID)
	if err != nil || !ok {
		t.Fatalf("Stats() = %v, %v", ok, err)
	}
	want := inventory.Stats{Allocated: 5, Remaining: 0, Held: 5, Buyers: 3, MaxPerBuyer: 2}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("Stats() mismatch (-want +got):\n%s", diff)
	}
}

func TestReserveWindow(t *testing.T) {
	client := mustShared(t)
	c := newCounters(t, client, redisstock.Options{})
	ctx := context.Background()
	now := time.Now()
	tests := []struct {
		name         string
		starts, ends time.Time
		wantErr      error
	}{
		{name: "before start", starts: now.Add(time.Hour), wantErr: inventory.ErrNotActive},
		{name: "after end", starts: now.Add(-2 * time.Hour), ends: now.Add(-time.Hour), wantErr: inventory.ErrNotActive},
		{name: "open ended", starts: now.Add(-time.Hour)},
		{name: "inside", starts: now.Add(-time.Hour), ends: now.Add(time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cp := campaign(t, 3, 1)
			cp.StartsAt, cp.EndsAt = tt.starts, tt.ends
			deleteSale(t, client, "spiketest", cp.ID)
			if err := c.Open(ctx, cp); err != nil {
				t.Fatal(err)
			}
			_, _, err := c.Reserve(ctx, req(cp, 1, "k", 1))
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Reserve() error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestUnknownSale(t *testing.T) {
	client := mustShared(t)
	ctx := context.Background()
	c := newCounters(t, client, redisstock.Options{})
	if _, _, err := c.Reserve(ctx, req(inventory.Campaign{ID: randomID(t)}, 1, "k", 1)); !errors.Is(err, inventory.ErrSaleNotFound) {
		t.Errorf("Reserve() error = %v, want ErrSaleNotFound", err)
	}
	// A sale opened by another instance is learnt from Redis.
	cp := campaign(t, 2, 1)
	deleteSale(t, client, "spiketest", cp.ID)
	if err := newCounters(t, client, redisstock.Options{}).Open(ctx, cp); err != nil {
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
	a := newCounters(t, client, redisstock.Options{})
	b := newCounters(t, newClient(t, mustRedisAddr(t)), redisstock.Options{})
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

func TestRelease(t *testing.T) {
	client := mustShared(t)
	ctx := context.Background()
	c := newCounters(t, client, redisstock.Options{})
	cp := campaign(t, 2, 2)
	deleteSale(t, client, "spiketest", cp.ID)
	if err := c.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	r1, _, err := c.Reserve(ctx, req(cp, 1, "a", 2))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Reserve(ctx, req(cp, 2, "b", 1)); !errors.Is(err, inventory.ErrSoldOut) {
		t.Fatalf("Reserve() error = %v, want ErrSoldOut", err)
	}
	// A release naming another order changes nothing.
	other := r1
	other.OrderID = "someone-else"
	if err := c.Release(ctx, other); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := c.Remaining(ctx, cp.ID); n != 0 {
		t.Fatalf("Remaining() = %d after a foreign release, want 0", n)
	}
	for range 2 { // releasing twice changes nothing
		if err := c.Release(ctx, r1); err != nil {
			t.Fatal(err)
		}
	}
	st, _, _ := c.Stats(ctx, cp.ID)
	if diff := cmp.Diff(inventory.Stats{Allocated: 2, Remaining: 2}, st); diff != "" {
		t.Errorf("Stats() after release mismatch (-want +got):\n%s", diff)
	}
	eventually(t, "the sold-out flag to clear", func() bool { return !redisstock.SoldOut(c, cp.ID) })
	// The key is forgotten: the same request places a new order.
	r2, replay, err := c.Reserve(ctx, req(cp, 1, "a", 2))
	if err != nil || replay || r2.OrderID == r1.OrderID {
		t.Errorf("Reserve() after release = %+v, %v, %v; want a new order", r2, replay, err)
	}
}

func TestSoldOutPropagates(t *testing.T) {
	client := mustShared(t)
	ctx := context.Background()
	a := newCounters(t, client, redisstock.Options{})
	b := newCounters(t, newClient(t, mustRedisAddr(t)), redisstock.Options{})
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
	a := newCounters(t, client, redisstock.Options{})
	b := redisstock.New(newClient(t, mustRedisAddr(t)), spike.NewIDGenerator(), redisstock.Options{Prefix: "spiketest"})
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
	c := newCounters(t, client, redisstock.Options{})
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
			c := newCounters(t, client, redisstock.Options{OnFenced: func(string) { fenced.Add(1) }})
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
			if !c.Fenced(cp.ID) || fenced.Load() != 1 {
				t.Errorf("Fenced() = %v, OnFenced calls = %d; want true, 1", c.Fenced(cp.ID), fenced.Load())
			}
			if _, ok, _ := c.Remaining(ctx, cp.ID); ok {
				t.Error("Remaining() ok on fenced counters")
			}
		})
	}
}
