package natsbus_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/spikehq/spike/internal/adapter/natsbus"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/switches"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// TestMain fails the package if a goroutine outlives the tests: a bus's
// goroutines belong to RunWorker and Close, which the tests wait for.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func mustEmbedded(t *testing.T) *nats.Conn {
	t.Helper()
	e, err := natsbus.StartEmbedded(t.TempDir(), "", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := e.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// mustExternal connects to the NATS server named by SPIKE_TEST_NATS_URL.
func mustExternal(t *testing.T) *nats.Conn {
	t.Helper()
	url := os.Getenv("SPIKE_TEST_NATS_URL")
	if url == "" {
		if os.Getenv("SPIKE_TEST_REQUIRE") != "" {
			t.Fatal("SPIKE_TEST_NATS_URL unset")
		}
		t.Skip("set SPIKE_TEST_NATS_URL to run tests against an external NATS server")
	}
	nc, err := nats.Connect(url, nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func event(i int) order.Placed {
	return order.Placed{V: 1, OrderID: fmt.Sprintf("order-%06d", i), SaleID: "s1", SKU: "p1", UserID: int64(1 + i%50),
		Quantity: 1, PriceCents: 100, Key: fmt.Sprintf("k%d", i), PlacedAt: time.UnixMicro(int64(1_700_000_000_000_000 + i)).UTC()}
}

// testStream runs the enqueue → read back → consume cycle on a bus.
func testStream(t *testing.T, bus *natsbus.Bus) {
	ctx := context.Background()
	const n = 300
	for i := range n {
		if err := bus.Enqueue(ctx, event(i)); err != nil {
			t.Fatal(err)
		}
	}
	// The same order id again is deduplicated by Nats-Msg-Id.
	if err := bus.Enqueue(ctx, event(7)); err != nil {
		t.Fatal(err)
	}
	queued, err := bus.Unpersisted(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(queued) != n || queued[0] != event(0) || queued[n-1] != event(n-1) {
		t.Fatalf("Unpersisted: %d events (first %+v), want %d in order", len(queued), queued[0], n)
	}

	fail := 2 // the first batches fail: they must be delivered again
	got := persistAll(t, bus, func() error {
		if fail > 0 {
			fail--
			return fmt.Errorf("injected failure")
		}
		return nil
	})
	if len(got) != n {
		t.Errorf("persisted %d distinct events, want %d", len(got), n)
	}
}

func TestStreamEmbedded(t *testing.T) {
	t.Parallel()
	nc := mustEmbedded(t)
	bus, err := natsbus.New(context.Background(), nc, natsbus.Config{AckWait: time.Second}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	testStream(t, bus)
}

func TestStreamExternal(t *testing.T) {
	t.Parallel()
	nc := mustExternal(t)
	// A stream of its own on the shared server: names are per test run.
	suffix := fmt.Sprint(rand.Uint32())
	bus, err := natsbus.New(context.Background(), nc, natsbus.Config{AckWait: time.Second, Stream: "TEST_ORDERS_" + suffix, Subject: "test.orders." + suffix}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.DeleteStream(context.Background()) })
	testStream(t, bus)
}

func TestEnqueueWithoutStreamIsNotEnqueued(t *testing.T) {
	t.Parallel()
	nc := mustEmbedded(t)
	bus, err := natsbus.New(context.Background(), nc, natsbus.Config{}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if err := js.DeleteStream(context.Background(), natsbus.StreamName); err != nil {
		t.Fatal(err)
	}
	err = bus.Enqueue(context.Background(), event(1))
	if !errors.Is(err, order.ErrNotEnqueued) {
		t.Fatalf("Enqueue with no stream: %v, want an error wrapping order.ErrNotEnqueued", err)
	}
}

// TestSwitchesPropagate: a switch set through one instance reaches the
// board of another watching the same bucket.
func TestSwitchesPropagate(t *testing.T) {
	nc := mustEmbedded(t)
	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	defer running.Wait() // the watchers are the test's
	defer cancel()
	var boards []*switches.Board
	var sws []*natsbus.Switches
	for range 2 {
		bus, err := natsbus.New(ctx, nc, natsbus.Config{}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		b := switches.New(switches.Defs)
		sw, err := natsbus.NewSwitches(ctx, bus, b, quiet)
		if err != nil {
			t.Fatal(err)
		}
		running.Go(func() { sw.Run(ctx) })
		boards, sws = append(boards, b), append(sws, sw)
	}
	changed := make(chan time.Time, 1)
	boards[1].OnChange(func(name, value string) {
		if name == switches.OrdersAccept && value == "false" {
			changed <- time.Now()
		}
	})
	began := time.Now()
	if err := sws[0].Set(ctx, switches.OrdersAccept, "0"); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-changed:
		t.Logf("applied on the other instance after %v", at.Sub(began))
	case <-time.After(10 * time.Second):
		t.Fatal("the other instance never saw the change")
	}
	if boards[1].On(switches.OrdersAccept) {
		t.Error("orders.accept still on")
	}
	if err := sws[0].Set(ctx, "no.such", "1"); err == nil {
		t.Error("unknown switch accepted")
	}
}

// persistAll runs a worker on bus until the stream is drained and returns
// how often each order id was persisted. inject, if set, is called (under
// a lock) before each batch; its error fails the batch.
func persistAll(t *testing.T, bus *natsbus.Bus, inject func() error) map[string]int {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	got := map[string]int{}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() {
		done <- bus.RunWorker(wctx, func(_ context.Context, evs []order.Placed) error {
			mu.Lock()
			defer mu.Unlock()
			if inject != nil {
				if err := inject(); err != nil {
					return err
				}
			}
			for _, e := range evs {
				got[e.OrderID]++
			}
			return nil
		})
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		left, err := bus.Backlog(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backlog %d never drained", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	return got
}
