package redisstock_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/redisstock"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/order"
)

// stream is an order.Stream stub; EnqueueFn injects failures.
type stream struct {
	mu        sync.Mutex
	events    []order.Placed
	EnqueueFn func(order.Placed) error
}

func (s *stream) Enqueue(_ context.Context, e order.Placed) error {
	if s.EnqueueFn != nil {
		if err := s.EnqueueFn(e); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
	return nil
}

// Placed implements order.PendingLookup: a replay that finds its
// reservation not yet confirmed (confirms are deferred) looks for the event.
func (s *stream) Placed(_ context.Context, id string) (order.Placed, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.events {
		if e.OrderID == id {
			return e, true, nil
		}
	}
	return order.Placed{}, false, nil
}

// TestOrderServicePlace runs order.Service.Place on the Redis counters:
// reserve → enqueue → confirm, replays, and release when the enqueue fails.
func TestOrderServicePlace(t *testing.T) {
	client := mustShared(t)
	ctx := context.Background()
	c := newCounters(t, client, redisstock.Config{})
	cp := campaign(t, 2, 1)
	deleteSale(t, client, "spiketest", cp.ID)
	if err := c.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	st := &stream{}
	svc := order.NewService(c, st, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	svc.Lookup = st

	o, err := svc.Place(ctx, order.PlaceRequest{UserID: 1, SaleID: cp.ID, Key: "a", Quantity: 1})
	if err != nil {
		t.Fatal(err)
	}
	again, err := svc.Place(ctx, order.PlaceRequest{UserID: 1, SaleID: cp.ID, Key: "a", Quantity: 1})
	if err != nil || again.ID != o.ID {
		t.Errorf("replayed Place() = %s, %v; want %s", again.ID, err, o.ID)
	}
	if len(st.events) != 1 {
		t.Errorf("%d events enqueued, want 1", len(st.events))
	}

	st.EnqueueFn = func(order.Placed) error { return fmt.Errorf("nats down: %w", order.ErrNotEnqueued) }
	if _, err := svc.Place(ctx, order.PlaceRequest{UserID: 2, SaleID: cp.ID, Key: "b", Quantity: 1}); !errors.Is(err, order.ErrStreamDown) {
		t.Fatalf("Place() with the stream down = %v, want ErrStreamDown", err)
	}
	if n, _, _ := c.Remaining(ctx, cp.ID); n != 1 {
		t.Errorf("Remaining() = %d after a failed enqueue, want 1 (released)", n)
	}
	st.EnqueueFn = nil
	if _, err := svc.Place(ctx, order.PlaceRequest{UserID: 2, SaleID: cp.ID, Key: "b", Quantity: 1}); err != nil {
		t.Errorf("retried Place() = %v", err)
	}
}

func TestRedisDownIsUnavailable(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	c := newCounters(t, newClient(t, srv.Addr()), redisstock.Config{})
	cp := campaign(t, 2, 1)
	if err := c.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, _, err := c.Reserve(ctx, req(cp, 1, "a", 1))
	var se *spike.Error
	if !errors.As(err, &se) || !errors.Is(err, spike.ErrUnavailable) || !errors.Is(err, redisstock.ErrUnavailable) {
		t.Errorf("Reserve() with Redis down = %v, want an ErrUnavailable *spike.Error", err)
	}
	if errors.Is(err, inventory.ErrFenced) {
		t.Errorf("Reserve() with Redis down = %v: a dead Redis is not a fence", err)
	}
}

// TestTimeoutsDoNotLeak blocks a private Redis (DEBUG SLEEP) so that a
// reserve and a confirm time out after being sent: the reserve is undone in
// the background (without the undo its unit would stay held), and the
// confirm still lands. (The background retry of Confirm, for broken
// connections, is not what this exercises: the sent command runs anyway.)
func TestTimeoutsDoNotLeak(t *testing.T) {
	srv := startRedis(t, "--enable-debug-command", "yes")
	ctx := context.Background()
	client := newClient(t, srv.Addr())
	blocker := newClient(t, srv.Addr())
	c := newCounters(t, client, redisstock.Config{})
	cp := campaign(t, 4, 1)
	if err := c.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	// Load the scripts (else the blocked EVALSHA fails with NOSCRIPT, and
	// the timed-out context stops rueidis from sending EVAL).
	warm, _, err := c.Reserve(ctx, req(cp, 9, "warm", 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Confirm(ctx, warm); err != nil {
		t.Fatal(err)
	}
	block := func() {
		go func() { _ = blocker.Do(ctx, blocker.B().Arbitrary("DEBUG", "SLEEP").Args("0.5").Build()).Error() }()
		time.Sleep(50 * time.Millisecond)
	}

	block()
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, _, err = c.Reserve(short, req(cp, 1, "a", 1))
	cancel()
	if !errors.Is(err, spike.ErrUnavailable) {
		t.Fatalf("Reserve() on a blocked Redis = %v, want ErrUnavailable", err)
	}
	eventually(t, "the timed-out reservation undone", func() bool {
		st, ok, _ := c.Stats(ctx, cp.ID)
		return ok && st.Remaining == 3 && st.Held == 1
	})
	res, _, err := c.Reserve(ctx, req(cp, 1, "a", 1))
	if err != nil {
		t.Fatalf("retried Reserve() = %v", err)
	}

	block()
	short, cancel = context.WithTimeout(ctx, 100*time.Millisecond)
	err = c.Confirm(short, res)
	cancel()
	if !errors.Is(err, spike.ErrUnavailable) {
		t.Fatalf("Confirm() on a blocked Redis = %v, want ErrUnavailable", err)
	}
	eventually(t, "the confirmation to land", func() bool {
		got, replay, err := c.Reserve(ctx, req(cp, 1, "a", 1))
		return err == nil && replay && got.OrderID == res.OrderID
	})
}
