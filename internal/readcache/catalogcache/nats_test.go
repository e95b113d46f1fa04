package catalogcache_test

import (
	"context"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/adapter/natsbus"
	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/readcache/catalogcache"
)

// instance is one Spike instance's product cache wired to NATS as
// cmd/spike would wire it.
type instance struct {
	cache *catalogcache.Store
	inv   *natsbus.Invalidations
	seen  chan string // SKUs whose invalidation arrived
}

func startInstance(t *testing.T, ctx context.Context, e *natsbus.Embedded, db catalog.Store) *instance {
	t.Helper()
	nc, err := e.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	in := &instance{inv: natsbus.NewInvalidations(nc, ""), seen: make(chan string, 100)}
	in.cache = newStore(t, db, catalogcache.Options{Invalidator: in.inv})
	go in.inv.Subscribe(ctx, func(sku string) {
		in.cache.Invalidate(sku)
		in.seen <- sku
	})
	// Subscribe has no readiness signal: publish until one arrives.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		if err := in.inv.Publish(ctx, "ready"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-in.seen:
			for len(in.seen) > 0 {
				<-in.seen
			}
			return in
		case <-tick.C:
		case <-deadline:
			t.Fatal("subscription not ready after 10s")
		}
	}
}

// waitFor waits up to the API's 1 s for the invalidation of sku, skipping
// late readiness probes.
func (in *instance) waitFor(t *testing.T, sku string) {
	t.Helper()
	timeout := time.After(time.Second)
	for {
		select {
		case got := <-in.seen:
			if got == sku {
				return
			}
			if got != "ready" {
				t.Fatalf("received invalidation of %q, want %q", got, sku)
			}
		case <-timeout:
			t.Fatalf("invalidation of %q not received within 1s", sku)
		}
	}
}

func TestInvalidationAcrossInstances(t *testing.T) {
	e, err := natsbus.StartEmbedded(t.TempDir(), "", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	db := mustOpenDB(t)
	a := startInstance(t, ctx, e, db)
	b := startInstance(t, ctx, e, db)

	if err := a.cache.CreateProduct(ctx, widget); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, "widget") // the create's invalidation
	mustProduct(t, b.cache, "widget")
	loads := b.cache.Stats().Loads

	name := "Renamed"
	if _, err := a.cache.UpdateProduct(ctx, "widget", catalog.ProductUpdate{Name: &name}); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, "widget")
	if got := mustProduct(t, b.cache, "widget"); got.Name != name {
		t.Errorf("b: Product().Name = %q after a's update, want %q", got.Name, name)
	}
	if n := b.cache.Stats().Loads - loads; n != 1 {
		t.Errorf("b reloaded %d times, want 1", n)
	}
}
