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
	"github.com/spikehq/spike/inventory"
	"github.com/spikehq/spike/order"
	"github.com/spikehq/spike/redisstock"
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

// TestOrderServicePlace runs order.Service.Place on the Redis counters:
// reserve → enqueue → confirm, replays, and release when the enqueue fails.
func TestOrderServicePlace(t *testing.T) {
	client := mustShared(t)
	ctx := context.Background()
	c := newCounters(t, client, redisstock.Options{})
	cp := campaign(t, 2, 1)
	deleteSale(t, client, "spiketest", cp.ID)
	if err := c.Open(ctx, cp); err != nil {
		t.Fatal(err)
	}
	st := &stream{}
	svc := order.NewService(c, st, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))

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
	c := newCounters(t, newClient(t, srv.Addr()), redisstock.Options{})
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
