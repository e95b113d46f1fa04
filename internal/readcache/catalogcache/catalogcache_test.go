package catalogcache_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/readcache/catalogcache"
	"github.com/spikehq/spike/resilience"
)

func TestHitMissAndNegative(t *testing.T) {
	db := mustOpenDB(t)
	clk := newClock()
	s := newStore(t, db, catalogcache.Options{Now: clk.Now, TTL: 30 * time.Second, NegativeTTL: 2 * time.Second})
	if err := s.CreateProduct(bg, widget); err != nil {
		t.Fatal(err)
	}

	if got := mustProduct(t, s, "widget"); got != widget {
		t.Errorf("Product() mismatch (-want +got):\n%s", cmp.Diff(widget, got))
	}
	mustProduct(t, s, "widget")
	for range 2 {
		if _, err := s.Product(bg, "nothing"); !errors.Is(err, catalog.ErrProductNotFound) {
			t.Fatalf("Product(unknown) = %v, want ErrProductNotFound", err)
		}
	}
	st := s.Stats()
	if st.Loads != 2 || st.Hits != 2 || st.Misses != 2 {
		t.Errorf("after 2 reads each of a product and an unknown SKU: loads %d hits %d misses %d, want 2 2 2", st.Loads, st.Hits, st.Misses)
	}

	// The not-found expires after NegativeTTL; the product only after TTL (±10%).
	clk.Advance(2*time.Second + time.Millisecond)
	s.Product(bg, "nothing")
	mustProduct(t, s, "widget")
	if st := s.Stats(); st.Loads != 3 {
		t.Errorf("after NegativeTTL: loads = %d, want 3 (only the unknown SKU reloaded)", st.Loads)
	}
	clk.Advance(33 * time.Second)
	mustProduct(t, s, "widget")
	if st := s.Stats(); st.Loads != 4 {
		t.Errorf("after TTL: loads = %d, want 4", st.Loads)
	}
}

func TestCreateEvictsNegativeEntry(t *testing.T) {
	db := mustOpenDB(t)
	inv := &recorder{}
	s := newStore(t, db, catalogcache.Options{Invalidator: inv})
	if _, err := s.Product(bg, "widget"); !errors.Is(err, catalog.ErrProductNotFound) {
		t.Fatalf("Product() = %v, want ErrProductNotFound", err)
	}
	if err := s.CreateProduct(bg, widget); err != nil {
		t.Fatal(err)
	}
	if got := mustProduct(t, s, "widget"); got != widget {
		t.Errorf("Product() after create mismatch (-want +got):\n%s", cmp.Diff(widget, got))
	}
	if diff := cmp.Diff([]string{"widget"}, inv.published()); diff != "" {
		t.Errorf("published mismatch (-want +got):\n%s", diff)
	}
}

func TestSingleflight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := newFakeDB(widget)
		s := catalogcache.New(db, catalogcache.Options{})
		defer s.Close()
		release := db.hold()
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for range 100 {
			wg.Go(func() {
				p, err := s.Product(bg, "widget")
				if err == nil && p != widget {
					err = errors.New("wrong product")
				}
				errs <- err
			})
		}
		synctest.Wait() // all 100 blocked: one in the database, 99 on its load
		release()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("Product() = %v", err)
			}
		}
		if n := db.reads.Load(); n != 1 {
			t.Errorf("database reads = %d, want 1", n)
		}
		if st := s.Stats(); st.Misses != 100 || st.Loads != 1 {
			t.Errorf("misses %d loads %d, want 100 1", st.Misses, st.Loads)
		}
	})
}

func TestUpdateInvalidates(t *testing.T) {
	db := mustOpenDB(t)
	inv := &recorder{}
	s := newStore(t, db, catalogcache.Options{Invalidator: inv})
	if err := s.CreateProduct(bg, widget); err != nil {
		t.Fatal(err)
	}
	mustProduct(t, s, "widget")
	name := "Widget 2"
	if _, err := s.UpdateProduct(bg, "widget", catalog.ProductUpdate{Name: &name}); err != nil {
		t.Fatal(err)
	}
	if got := mustProduct(t, s, "widget"); got.Name != name {
		t.Errorf("Product().Name after update = %q, want %q", got.Name, name)
	}
	if diff := cmp.Diff([]string{"widget", "widget"}, inv.published()); diff != "" {
		t.Errorf("published mismatch (-want +got):\n%s", diff)
	}
	// A failed write invalidates nothing.
	if _, err := s.UpdateProduct(bg, "nothing", catalog.ProductUpdate{Name: &name}); !errors.Is(err, catalog.ErrProductNotFound) {
		t.Errorf("UpdateProduct(unknown) = %v, want ErrProductNotFound", err)
	}
	if n := len(inv.published()); n != 2 {
		t.Errorf("published %d invalidations, want 2", n)
	}
}

// TestInvalidateDuringLoad checks that a load which read the database
// before an invalidation does not cache what it read.
func TestInvalidateDuringLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := newFakeDB(widget)
		s := catalogcache.New(db, catalogcache.Options{})
		defer s.Close()
		release := db.hold()
		done := make(chan catalog.Product)
		go func() {
			p, _ := s.Product(bg, "widget")
			done <- p
		}()
		synctest.Wait()
		changed := widget
		changed.Name = "Changed"
		s.Invalidate("widget") // arrives while the load is in the database
		release()              // which returns the old value
		<-done
		db.set(changed)
		if got := mustProduct(t, s, "widget"); got != changed {
			t.Errorf("Product() after invalidation mismatch (-want +got):\n%s", cmp.Diff(changed, got))
		}
	})
}

func TestStaleOnError(t *testing.T) {
	db := newFakeDB(widget)
	clk := newClock()
	s := newStore(t, db, catalogcache.Options{Now: clk.Now, TTL: 10 * time.Second, StaleFor: time.Minute})
	mustProduct(t, s, "widget")
	db.fail(errDBDown)
	clk.Advance(20 * time.Second)
	if got := mustProduct(t, s, "widget"); got != widget {
		t.Errorf("stale Product() mismatch (-want +got):\n%s", cmp.Diff(widget, got))
	}
	if st := s.Stats(); st.StaleServed != 1 || st.LoadErrors != 1 {
		t.Errorf("stale served %d, load errors %d, want 1 1", st.StaleServed, st.LoadErrors)
	}
	// Nothing stale for an unknown key: the database's error.
	if _, err := s.Product(bg, "gadget"); !errors.Is(err, errDBDown) {
		t.Errorf("Product(uncached) = %v, want %v", err, errDBDown)
	}
	// Past StaleFor the copy is gone.
	clk.Advance(time.Minute)
	if _, err := s.Product(bg, "widget"); !errors.Is(err, errDBDown) {
		t.Errorf("Product() past StaleFor = %v, want %v", err, errDBDown)
	}
	// Healed: fresh again.
	db.fail(nil)
	mustProduct(t, s, "widget")
}

func TestBreakerOpens(t *testing.T) {
	db := newFakeDB()
	db.fail(errDBDown)
	clk := newClock()
	s := newStore(t, db, catalogcache.Options{
		Now:     clk.Now,
		Breaker: resilience.BreakerConfig{WindowSize: 10, MinimumCalls: 5, OpenTimeout: 10 * time.Second},
	})
	skus := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	for _, sku := range skus[:5] {
		if _, err := s.Product(bg, sku); !errors.Is(err, errDBDown) {
			t.Fatalf("Product(%s) = %v, want %v", sku, err, errDBDown)
		}
	}
	if st := s.Stats(); st.Breaker != resilience.Open {
		t.Fatalf("breaker %v after 5 failures, want open", st.Breaker)
	}
	for _, sku := range skus[5:] {
		_, err := s.Product(bg, sku)
		if !errors.Is(err, spike.ErrUnavailable) {
			t.Errorf("Product(%s) with the breaker open = %v, want ErrUnavailable", sku, err)
		}
	}
	if n := db.reads.Load(); n != 5 {
		t.Errorf("database reads = %d, want 5 (none while open)", n)
	}
	// Not-found answers are not failures.
	db.fail(nil)
	clk.Advance(11 * time.Second)
	for _, sku := range skus {
		if _, err := s.Product(bg, sku); !errors.Is(err, catalog.ErrProductNotFound) {
			t.Errorf("Product(%s) after healing = %v, want ErrProductNotFound", sku, err)
		}
	}
	if st := s.Stats(); st.Breaker != resilience.Closed {
		t.Errorf("breaker %v after healing, want closed", st.Breaker)
	}
}

func TestConcurrencyCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := newFakeDB(widget, gadget)
		s := catalogcache.New(db, catalogcache.Options{MaxLoads: 1, LoadWait: 50 * time.Millisecond})
		defer s.Close()
		release := db.hold()
		go s.Product(bg, "widget")
		synctest.Wait() // widget holds the only slot
		if _, err := s.Product(bg, "gadget"); !errors.Is(err, spike.ErrUnavailable) {
			t.Errorf("Product() with the cap reached = %v, want ErrUnavailable", err)
		}
		release()
		synctest.Wait()
		mustProduct(t, s, "gadget")
	})
}

func TestCacheOnly(t *testing.T) {
	db := newFakeDB(widget, gadget)
	clk := newClock()
	var on bool
	var mu sync.Mutex
	s := newStore(t, db, catalogcache.Options{Now: clk.Now, TTL: 10 * time.Second, CacheOnly: func() bool {
		mu.Lock()
		defer mu.Unlock()
		return on
	}})
	mustProduct(t, s, "widget")
	mu.Lock()
	on = true
	mu.Unlock()
	reads := db.reads.Load()

	mustProduct(t, s, "widget") // hit
	_, err := s.Product(bg, "gadget")
	if !errors.Is(err, spike.ErrUnavailable) || !errors.Is(err, catalogcache.ErrCacheOnly) {
		t.Errorf("Product(miss) cache-only = %v, want ErrCacheOnly (unavailable)", err)
	}
	clk.Advance(20 * time.Second)
	if got := mustProduct(t, s, "widget"); got != widget { // expired: served stale
		t.Errorf("expired Product() cache-only mismatch (-want +got):\n%s", cmp.Diff(widget, got))
	}
	s.RefreshHot(bg) // must not read either
	if n := db.reads.Load(); n != reads {
		t.Errorf("database reads while cache-only: %d, want 0", n-reads)
	}
	if st := s.Stats(); st.Unavailable != 1 || st.StaleServed != 1 {
		t.Errorf("unavailable %d stale %d, want 1 1", st.Unavailable, st.StaleServed)
	}
}

func TestL2(t *testing.T) {
	db := newFakeDB(widget)
	l2 := &mapL2{m: map[string]catalog.Product{"gadget": gadget}}
	inv := &recorder{}
	s := newStore(t, db, catalogcache.Options{L2: l2, Invalidator: inv, RepeatEvict: -1})

	if got := mustProduct(t, s, "gadget"); got != gadget { // only in L2
		t.Errorf("Product() from L2 mismatch (-want +got):\n%s", cmp.Diff(gadget, got))
	}
	mustProduct(t, s, "widget") // database, then written to L2
	if _, ok, _ := l2.Get(bg, "widget"); !ok {
		t.Error("widget not written to L2 after a database load")
	}
	st := s.Stats()
	if st.L2Hits != 1 || st.Loads != 1 {
		t.Errorf("L2 hits %d loads %d, want 1 1", st.L2Hits, st.Loads)
	}
	price := int64(1)
	if _, err := s.UpdateProduct(bg, "widget", catalog.ProductUpdate{PriceCents: &price}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := l2.Get(bg, "widget"); ok {
		t.Error("widget still in L2 after an update")
	}
	if got := mustProduct(t, s, "widget"); got.PriceCents != price {
		t.Errorf("PriceCents after update = %d, want %d", got.PriceCents, price)
	}
}

func TestL2Failing(t *testing.T) {
	db := newFakeDB()
	l2 := &mapL2{m: map[string]catalog.Product{}, err: errors.New("redis is down")}
	s := newStore(t, db, catalogcache.Options{
		L2: l2, RepeatEvict: -1,
		L2Breaker: resilience.BreakerConfig{WindowSize: 10, MinimumCalls: 5, OpenTimeout: time.Minute},
	})
	for i := range 10 {
		p := catalog.Product{SKU: fmt.Sprintf("p%d", i), Name: "P"}
		db.set(p)
		if got := mustProduct(t, s, p.SKU); got != p { // from the database
			t.Errorf("Product() mismatch (-want +got):\n%s", cmp.Diff(p, got))
		}
	}
	st := s.Stats()
	// 3 failed gets and 2 good sets make 5 calls, 60% failed: open.
	if l2.gets != 3 || st.L2Breaker != resilience.Open || st.Loads != 10 {
		t.Errorf("L2 gets %d, L2 breaker %v, loads %d; want 3 (then open), open, 10", l2.gets, st.L2Breaker, st.Loads)
	}
}

func TestEvictRepeatsWithL2(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := newFakeDB(widget)
		l2 := &mapL2{m: map[string]catalog.Product{}}
		inv := &recorder{}
		s := catalogcache.New(db, catalogcache.Options{L2: l2, Invalidator: inv})
		defer s.Close()
		ctx, cancel := context.WithCancel(bg)
		ran := make(chan error)
		go func() { ran <- s.Run(ctx) }() // Run repeats the evictions
		defer func() { cancel(); <-ran }()
		if err := s.Evict(bg, "widget"); err != nil {
			t.Fatal(err)
		}
		// Another instance's load, which read the database before the
		// write, stores the old value in L2 after the first deletion.
		l2.Set(bg, widget, time.Minute)
		time.Sleep(time.Second)
		synctest.Wait()
		if _, ok, _ := l2.Get(bg, "widget"); ok {
			t.Error("L2 still holds the value stored after the first deletion")
		}
		if diff := cmp.Diff([]string{"widget", "widget"}, inv.published()); diff != "" {
			t.Errorf("published mismatch (-want +got):\n%s", diff)
		}
	})
}

func TestHotKeys(t *testing.T) {
	db := newFakeDB(widget, gadget, catalog.Product{SKU: "cold", Name: "Cold"})
	clk := newClock()
	s := newStore(t, db, catalogcache.Options{
		Now: clk.Now, HotKeys: 2, HotMinReads: 20, HotWindow: 10 * time.Second, HotTTL: 3 * time.Second,
	})
	read := func(sku string, n int) {
		for range n {
			mustProduct(t, s, sku)
		}
	}
	read("gadget", 30)
	read("widget", 60)
	read("cold", 5)
	if got := s.HotKeys(); len(got) != 0 {
		t.Errorf("HotKeys() before the first half window ends = %v, want none", got)
	}
	clk.Advance(5 * time.Second)
	if diff := cmp.Diff([]string{"widget", "gadget"}, s.HotKeys()); diff != "" {
		t.Errorf("HotKeys() mismatch (-want +got):\n%s", diff)
	}

	// Refreshing reloads the hot keys, bypassing their fresh entries.
	reads := db.reads.Load()
	s.RefreshHot(bg)
	if n := db.reads.Load() - reads; n != 2 {
		t.Errorf("RefreshHot read %d products, want 2", n)
	}
	changed := widget
	changed.Stock = 7
	db.set(changed)
	s.RefreshHot(bg)
	if got := mustProduct(t, s, "widget"); got != changed {
		t.Errorf("hot Product() after refresh mismatch (-want +got):\n%s", cmp.Diff(changed, got))
	}

	// Still within the sliding window (previous half counts), then cold.
	clk.Advance(5 * time.Second)
	if diff := cmp.Diff([]string{"widget", "gadget"}, s.HotKeys()); diff != "" {
		t.Errorf("HotKeys() one half later mismatch (-want +got):\n%s", diff)
	}
	clk.Advance(5 * time.Second)
	if got := s.HotKeys(); len(got) != 0 {
		t.Errorf("HotKeys() after a quiet window = %v, want none", got)
	}
}

func TestHotKeysDisabled(t *testing.T) {
	s := newStore(t, newFakeDB(widget), catalogcache.Options{HotKeys: -1})
	for range 1000 {
		mustProduct(t, s, "widget")
	}
	if got := s.HotKeys(); got != nil {
		t.Errorf("HotKeys() = %v, want nil", got)
	}
	ctx, cancel := context.WithCancel(bg)
	cancel()
	if err := s.Run(ctx); err != nil {
		t.Errorf("Run() = %v", err)
	}
}

// TestConcurrentReadsAndRotation exercises hot-key rotation, admission,
// writes and invalidations concurrently (run with -race).
func TestConcurrentReadsAndRotation(t *testing.T) {
	db := newFakeDB(widget, gadget)
	clk := newClock()
	s := newStore(t, db, catalogcache.Options{Now: clk.Now, HotMinReads: 4, HotWindow: 2 * time.Millisecond})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				sku := "widget"
				if i%3 == 0 {
					sku = fmt.Sprintf("p%d", i%50)
				}
				s.Product(bg, sku)
				switch {
				case g == 0 && i%100 == 0:
					clk.Advance(time.Millisecond)
				case g == 1 && i%100 == 0:
					s.HotKeys()
					s.RefreshHot(bg)
				case g == 2 && i%250 == 0:
					s.Invalidate("widget")
				}
			}
		})
	}
	wg.Wait()
	clk.Advance(time.Millisecond)
	if got := mustProduct(t, s, "widget"); got != widget {
		t.Errorf("Product() mismatch (-want +got):\n%s", cmp.Diff(widget, got))
	}
}
