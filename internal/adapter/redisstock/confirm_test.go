package redisstock_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/adapter/redisstock"
	"github.com/spikehq/spike/internal/domain/inventory"
)

// TestConfirmManyOneCallPerSale: a batch of confirms over two sales costs
// one script call per sale, confirms each of its own holds (replays then
// answer with the order), and leaves alone a hold whose key maps to another
// order, a released one and a returned one.
func TestConfirmManyOneCallPerSale(t *testing.T) {
	client := mustShared(t)
	ctx := context.Background()
	c := newCounters(t, client, redisstock.Config{})
	sales := []string{}
	var batch []inventory.Reservation
	for range 2 {
		cp := campaign(t, 100, 1)
		deleteSale(t, client, "spiketest", cp.ID)
		if err := c.Open(ctx, cp); err != nil {
			t.Fatal(err)
		}
		sales = append(sales, cp.ID)
		for u := range 20 {
			res, _, err := c.Reserve(ctx, req(cp, int64(u+1), "k", 1))
			if err != nil {
				t.Fatal(err)
			}
			batch = append(batch, res)
		}
	}
	// Three that must not be confirmed: a foreign order id under a real
	// key, a released hold and a returned one.
	foreign := batch[0]
	foreign.OrderID = "someone-else"
	released, returned := batch[1], batch[2]
	if err := c.Release(ctx, released); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.Return(ctx, inventory.Return{SaleID: returned.SaleID, OrderID: returned.OrderID, UserID: returned.UserID,
		Key: returned.Key, Quantity: returned.Quantity}); err != nil || !ok {
		t.Fatalf("Return() = %v, %v", ok, err)
	}
	rest := batch[3:]
	before := c.RoundTrips()
	redisstock.ConfirmMany(c, ctx, append([]inventory.Reservation{foreign, released, returned}, rest...))
	if got := c.RoundTrips() - before; got != uint64(len(sales)) {
		t.Errorf("ConfirmMany of %d reservations over %d sales: %d round trips, want %d", len(batch), len(sales), got, len(sales))
	}
	for _, res := range rest {
		got, replay, err := c.Reserve(ctx, inventory.Request{SaleID: res.SaleID, UserID: res.UserID, Key: res.Key, Quantity: 1})
		if err != nil || !replay || got.OrderID != res.OrderID {
			t.Fatalf("replay after ConfirmMany = %s, %v, %v; want %s, true, nil", got.OrderID, replay, err, res.OrderID)
		}
	}
	// batch[0]'s own order is still only reserved: its replay is in progress.
	if _, _, err := c.Reserve(ctx, inventory.Request{SaleID: batch[0].SaleID, UserID: batch[0].UserID, Key: batch[0].Key, Quantity: 1}); !errors.Is(err, inventory.ErrInProgress) {
		t.Errorf("replay of a key confirmed for a foreign order id = %v, want ErrInProgress", err)
	}
	// The released key places afresh; the returned one still replays its order.
	if _, replay, err := c.Reserve(ctx, inventory.Request{SaleID: released.SaleID, UserID: released.UserID, Key: released.Key, Quantity: 1}); err != nil || replay {
		t.Errorf("reserve after a release and a confirm = replay %v, %v; want a new reservation", replay, err)
	}
	if got, replay, err := c.Reserve(ctx, inventory.Request{SaleID: returned.SaleID, UserID: returned.UserID, Key: returned.Key, Quantity: 1}); err != nil || !replay || got.OrderID != returned.OrderID {
		t.Errorf("replay of a returned order after a confirm = %s, %v, %v; want it replayed", got.OrderID, replay, err)
	}
}

// TestConfirmLater: many placements confirmed by Run's confirmer, from
// many goroutines at once, all end up confirmed: replays answer their order.
func TestConfirmLater(t *testing.T) {
	client := mustShared(t)
	ctx := context.Background()
	c := newCounters(t, client, redisstock.Config{})
	cp := campaign(t, 1000, 1)
	deleteSale(t, client, "spiketest", cp.ID)
	if err := c.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	const n = 400
	reservations := make([]inventory.Reservation, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res, _, err := c.Reserve(ctx, req(cp, int64(i+1), fmt.Sprint("k", i), 1))
			if err != nil {
				t.Error(err)
				return
			}
			reservations[i] = res
			c.ConfirmLater(ctx, res)
		})
	}
	wg.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for i, res := range reservations {
		for {
			got, replay, err := c.Reserve(ctx, req(cp, int64(i+1), fmt.Sprint("k", i), 1))
			if err == nil && replay && got.OrderID == res.OrderID {
				break
			}
			if !errors.Is(err, inventory.ErrInProgress) || time.Now().After(deadline) {
				t.Fatalf("replay %d = %s, %v, %v; want %s replayed", i, got.OrderID, replay, err, res.OrderID)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
