package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spikehq/spike/internal/domain/order"
)

// TestShutdownLeavesNoGoroutine starts the embedded app with every kind of
// background work it has in embedded mode (order workers and their orphan
// sweeper, batched publishing, in-doubt resolvers fed by a stream that
// stalls, notifications by webhook, the pprof server), places orders, shuts
// it down and checks that no goroutine started since is left: after
// shutdown nothing may still use a closed store or client.
func TestShutdownLeavesNoGoroutine(t *testing.T) {
	// The webhook receiver is the test's, started before the snapshot;
	// its Close runs in t.Cleanup, after the check.
	rcv := newReceiver(t, "leak-secret")
	before := goleak.IgnoreCurrent()

	cfg := DefaultConfig()
	cfg.Notify.WebhookURL = rcv.srv.URL + "/hooks/spike"
	cfg.Notify.WebhookSecret = "leak-secret"
	cfg.Pprof = "127.0.0.1:0"
	stall := &stallingStream{}
	cfg.wrapStream = func(s order.Stream) order.Stream { stall.Stream = s; return stall }
	a := startAppConfig(t, cfg)
	if a.pprof == nil {
		t.Fatal("pprof server not started")
	}
	c := newClient(t, a.addr, a.secret)
	rcv.lookup.Store(a)
	c.SetupSale("sku-leak", "leak-sale", 1000, 1)

	ids := placeMany(t, c, "leak-sale", usersFrom(100, 40), "leak")
	waitFor(t, "every order notified", 20*time.Second, func() bool { return rcv.received(ids) == len(ids) })

	// A few placements whose acknowledgement is lost: in doubt, handed to the
	// resolvers, which are still retrying when the app stops.
	stall.stalled.Store(true)
	for u := int64(500); u < 503; u++ {
		r, _, err := c.Place(context.Background(), u, c.Token(u, false), "leak-sale", fmt.Sprint("doubt-", u), 1)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != 503 && r.Status != 202 {
			t.Errorf("in-doubt placement: %d %s", r.Status, r.Body)
		}
	}

	stopApp(t, a)
	// The test's own HTTP client keeps keep-alive connections (goroutines)
	// of its own; the server has closed them, this closes its side at once.
	c.HTTP.CloseIdleConnections()
	// No third-party goroutine needs ignoring: the embedded NATS server's
	// stop with its Shutdown, the SQLite driver starts none. goleak retries
	// for a while, so goroutines on their way out are not reported.
	goleak.VerifyNone(t, before)
	if n := stall.calls.Load(); n < 4 {
		t.Errorf("the stalled stream saw %d enqueues: the in-doubt path was not exercised", n)
	}
}

// stallingStream answers enqueues, once stalled, with an error that
// leaves them in doubt (not ErrNotEnqueued): Place hands them to the
// Service's resolvers, which keep retrying.
type stallingStream struct {
	order.Stream
	stalled atomic.Bool
	calls   atomic.Int64 // enqueues while stalled
}

func (s *stallingStream) Enqueue(ctx context.Context, e order.Placed) error {
	if s.stalled.Load() {
		s.calls.Add(1)
		return errors.New("stalled: acknowledgement lost")
	}
	return s.Stream.Enqueue(ctx, e)
}
