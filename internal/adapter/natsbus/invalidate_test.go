package natsbus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spikehq/spike/internal/adapter/natsbus"
)

// twoConns starts an embedded server and connects to it twice, as two
// instances would.
func twoConns(t *testing.T) (a, b *nats.Conn) {
	t.Helper()
	e, err := natsbus.StartEmbedded(t.TempDir(), "", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	for _, c := range []**nats.Conn{&a, &b} {
		if *c, err = e.Connect("test"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup((*c).Close)
	}
	return a, b
}

// subscribed starts Subscribe on inv in the background and returns the
// channel of received SKUs once pub's messages reach it.
func subscribed(t *testing.T, ctx context.Context, inv, pub *natsbus.Invalidations) (<-chan string, <-chan error) {
	t.Helper()
	got := make(chan string, 100)
	done := make(chan error, 1)
	go func() { done <- inv.Subscribe(ctx, func(sku string) { got <- sku }) }()
	// Subscribe gives no readiness signal: publish until one arrives.
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := pub.Publish(ctx, "ready"); err != nil {
			t.Fatal(err)
		}
		select {
		case sku := <-got:
			for len(got) > 0 {
				<-got
			}
			if sku != "ready" {
				t.Fatalf("received %q, want ready", sku)
			}
			return got, done
		case err := <-done:
			t.Fatalf("Subscribe() = %v before any message", err)
		case <-deadline:
			t.Fatal("subscription not ready after 10s")
		case <-tick.C:
		}
	}
}

// next returns the next SKU received within 1s, skipping late readiness
// probes.
func next(t *testing.T, got <-chan string) string {
	t.Helper()
	timeout := time.After(time.Second)
	for {
		select {
		case sku := <-got:
			if sku != "ready" {
				return sku
			}
		case <-timeout:
			t.Fatal("nothing received within 1s")
		}
	}
}

func TestInvalidations(t *testing.T) {
	a, b := twoConns(t)
	pub := natsbus.NewInvalidations(a, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got, done := subscribed(t, ctx, natsbus.NewInvalidations(b, ""), pub)

	if err := pub.Publish(ctx, "widget"); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(natsbus.InvalidateSubject, []byte("not a sku!")); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, "gadget"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"widget", "gadget"} { // the invalid one is dropped
		if sku := next(t, got); sku != want {
			t.Errorf("received %q, want %q", sku, want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Subscribe() = %v after cancel, want nil", err)
	}
}

func TestInvalidationsSubject(t *testing.T) {
	a, b := twoConns(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := natsbus.NewInvalidations(a, "test.invalidate")
	got, _ := subscribed(t, ctx, natsbus.NewInvalidations(b, "test.invalidate"), pub)
	// The default subject is another channel.
	if err := natsbus.NewInvalidations(a, "").Publish(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, "mine"); err != nil {
		t.Fatal(err)
	}
	if sku := next(t, got); sku != "mine" {
		t.Errorf("received %q, want mine", sku)
	}
}

func TestInvalidationsPublishClosed(t *testing.T) {
	a, _ := twoConns(t)
	a.Close()
	if err := natsbus.NewInvalidations(a, "").Publish(context.Background(), "widget"); err == nil {
		t.Error("Publish() on a closed connection = nil, want an error")
	}
}
