package rediscache_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/rueidis"

	"github.com/spikehq/spike/internal/adapter/rediscache"
	"github.com/spikehq/spike/internal/adapter/sqlitestore"
	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/readcache/catalogcache"
)

var bg = context.Background()

var _ catalogcache.L2 = (*rediscache.Products)(nil)

// mustRedis connects to SPIKE_TEST_REDIS_ADDR and returns the client and a
// key prefix of the test's own. Keys under it are deleted at cleanup (by
// SCAN of the prefix; never FLUSHALL).
func mustRedis(t *testing.T) (rueidis.Client, string) {
	t.Helper()
	addr := os.Getenv("SPIKE_TEST_REDIS_ADDR")
	if addr == "" {
		if os.Getenv("SPIKE_TEST_REQUIRE") != "" {
			t.Fatal("SPIKE_TEST_REDIS_ADDR unset")
		}
		t.Skip("set SPIKE_TEST_REDIS_ADDR (host:port) to run Redis tests")
	}
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		t.Fatalf("connect to redis at %s: %v", addr, err)
	}
	prefix := fmt.Sprintf("spike:test:%016x:product:", rand.Uint64())
	t.Cleanup(func() {
		defer client.Close()
		ctx := context.Background()
		var cursor uint64
		for {
			e, err := client.Do(ctx, client.B().Scan().Cursor(cursor).Match(prefix+"*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				t.Errorf("clean up %s*: %v", prefix, err)
				return
			}
			for _, k := range e.Elements {
				client.Do(ctx, client.B().Del().Key(k).Build())
			}
			if cursor = e.Cursor; cursor == 0 {
				return
			}
		}
	})
	return client, prefix
}

var widget = catalog.Product{SKU: "widget", Name: "Widget ✓", PriceCents: 1999, Stock: 12}

func TestProducts(t *testing.T) {
	client, prefix := mustRedis(t)
	c := rediscache.NewProducts(client, prefix)

	if _, ok, err := c.Get(bg, "widget"); ok || err != nil {
		t.Fatalf("Get(missing) = _, %t, %v; want false, nil", ok, err)
	}
	if err := c.Set(bg, widget, time.Minute); err != nil {
		t.Fatal(err)
	}
	got, ok, err := c.Get(bg, "widget")
	if !ok || err != nil {
		t.Fatalf("Get() = _, %t, %v; want true, nil", ok, err)
	}
	if diff := cmp.Diff(widget, got); diff != "" {
		t.Errorf("Get() mismatch (-want +got):\n%s", diff)
	}
	ttl, err := client.Do(bg, client.B().Pttl().Key(prefix+"widget").Build()).AsInt64()
	if err != nil || ttl <= 0 || ttl > time.Minute.Milliseconds() {
		t.Errorf("PTTL = %d, %v; want within (0, 60000]", ttl, err)
	}
	if err := c.Delete(bg, "widget"); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := c.Get(bg, "widget"); ok || err != nil {
		t.Errorf("Get() after Delete = _, %t, %v; want false, nil", ok, err)
	}
	if err := c.Delete(bg, "widget"); err != nil {
		t.Errorf("Delete(missing) = %v, want nil", err)
	}
}

func TestProductsBadValue(t *testing.T) {
	client, prefix := mustRedis(t)
	c := rediscache.NewProducts(client, prefix)
	if err := client.Do(bg, client.B().Set().Key(prefix+"widget").Value("{not json").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := c.Get(bg, "widget"); ok || err == nil {
		t.Errorf("Get(bad JSON) = _, %t, %v; want false and an error", ok, err)
	}
}

func TestProductsExpire(t *testing.T) {
	client, prefix := mustRedis(t)
	c := rediscache.NewProducts(client, prefix)
	if err := c.Set(bg, widget, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Redis expires the key on its own clock: wait for it, bounded.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok, err := c.Get(bg, "widget"); err != nil {
			t.Fatal(err)
		} else if !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("key with a 1ms TTL still there after 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSharedL2 runs two instances' caches over one database and one Redis:
// what one loads from the database, the other reads from Redis, and a
// write on one deletes it from Redis.
func TestSharedL2(t *testing.T) {
	client, prefix := mustRedis(t)
	db, err := sqlitestore.Open(bg, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.CreateProduct(bg, widget); err != nil {
		t.Fatal(err)
	}
	opts := catalogcache.Options{L2: rediscache.NewProducts(client, prefix), RepeatEvict: -1}
	a, b := catalogcache.New(db, opts), catalogcache.New(db, opts)
	t.Cleanup(a.Close)
	t.Cleanup(b.Close)

	for _, s := range []*catalogcache.Store{a, b} {
		got, err := s.Product(bg, "widget")
		if err != nil || got != widget {
			t.Fatalf("Product() = %+v, %v; want %+v", got, err, widget)
		}
	}
	if sa, sb := a.Stats(), b.Stats(); sa.Loads != 1 || sb.Loads != 0 || sb.L2Hits != 1 {
		t.Errorf("a loads %d, b loads %d L2 hits %d; want 1, 0, 1", sa.Loads, sb.Loads, sb.L2Hits)
	}
	price := int64(5)
	if _, err := a.UpdateProduct(bg, "widget", catalog.ProductUpdate{PriceCents: &price}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := opts.L2.Get(bg, "widget"); ok {
		t.Error("widget still in Redis after an update")
	}
}
