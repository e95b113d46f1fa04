package salecache_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/internal/readcache/salecache"
	"github.com/spikehq/spike/resilience"
)

var blackFriday = sale.Sale{ID: "bf", SKU: "phone", Stock: 100, PriceCents: 999, PerUserLimit: 2,
	StartsAt: time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)}

// TestRecordsOneLoadForConcurrentReads: 1000 buyers opening a cold sale
// page at once cost the database one read.
func TestRecordsOneLoadForConcurrentReads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := newFakeDB(blackFriday)
		gate := make(chan struct{})
		db.set(nil, gate)
		r := salecache.NewRecords(db, salecache.RecordsOptions{})
		var wg sync.WaitGroup
		for range 1000 {
			wg.Go(func() {
				if s, err := r.Sale(bg, "bf"); err != nil || s != blackFriday {
					t.Errorf("Sale() = %+v, %v", s, err)
				}
			})
		}
		synctest.Wait() // every reader waits on the one load
		close(gate)
		wg.Wait()
		if n := db.reads.Load(); n != 1 {
			t.Errorf("1000 concurrent reads made %d database reads, want 1", n)
		}
		if _, err := r.Sale(bg, "bf"); err != nil {
			t.Fatal(err)
		}
		want := salecache.Stats{Hits: 1, Misses: 1000, Loads: 1, Entries: 1}
		if diff := cmp.Diff(want, r.Stats()); diff != "" {
			t.Errorf("Stats() mismatch (-want +got):\n%s", diff)
		}
	})
}

// TestRecordsCachedNotFoundNot: records are served from memory for the
// TTL, then loaded again; a not-found answer is not cached, so a sale
// created on another instance is visible at once; a sale created here is
// cached by its creation.
func TestRecordsCachedNotFoundNot(t *testing.T) {
	clk := newClock()
	db := newFakeDB(blackFriday)
	r := salecache.NewRecords(db, salecache.RecordsOptions{Now: clk.Now, TTL: 10 * time.Minute})
	for range 3 {
		if s, err := r.Sale(bg, "bf"); err != nil || s != blackFriday {
			t.Fatalf("Sale(bf) = %+v, %v", s, err)
		}
	}
	if n := db.reads.Load(); n != 1 {
		t.Errorf("3 reads of a sale made %d database reads, want 1", n)
	}
	clk.Advance(10*time.Minute - time.Millisecond)
	r.Sale(bg, "bf")
	if n := db.reads.Load(); n != 1 {
		t.Errorf("a read within the TTL made %d database reads, want 1", n)
	}
	clk.Advance(time.Millisecond)
	r.Sale(bg, "bf")
	if n := db.reads.Load(); n != 2 {
		t.Errorf("a read at the TTL made %d database reads in all, want 2 (a reload)", n)
	}

	for i := range 2 {
		if _, err := r.Sale(bg, "later"); !errors.Is(err, sale.ErrSaleNotFound) {
			t.Fatalf("Sale(later) #%d: err = %v, want ErrSaleNotFound", i, err)
		}
	}
	if n := db.reads.Load(); n != 4 {
		t.Errorf("two reads of an unknown sale made %d database reads, want 2 (not cached)", n-2)
	}
	later := blackFriday
	later.ID = "later"
	db.CreateSale(bg, later) // on another instance
	if s, err := r.Sale(bg, "later"); err != nil || s != later {
		t.Errorf("a sale created elsewhere: Sale() = %+v, %v", s, err)
	}

	mine := blackFriday
	mine.ID = "mine"
	if err := r.CreateSale(bg, mine); err != nil {
		t.Fatal(err)
	}
	before := db.reads.Load()
	if s, err := r.Sale(bg, "mine"); err != nil || s != mine || db.reads.Load() != before {
		t.Errorf("a sale created here: Sale() = %+v, %v after %d database reads, want cached", s, err, db.reads.Load()-before)
	}
	if err := r.CreateSale(bg, mine); !errors.Is(err, sale.ErrSaleExists) {
		t.Errorf("CreateSale of an existing id: err = %v, want ErrSaleExists", err)
	}
}

// TestRecordsDatabaseFailures: reads of uncached sales while the database
// fails get a 503 kind (a dependency down is no bug); the failures open
// the breaker and such reads then fail fast without reaching it; cached records are still served, expired ones too; once the database
// heals, a trial load closes the breaker.
func TestRecordsDatabaseFailures(t *testing.T) {
	clk := newClock()
	db := newFakeDB(blackFriday)
	r := salecache.NewRecords(db, salecache.RecordsOptions{Now: clk.Now, TTL: time.Second, Breaker: testBreaker()})
	r.Sale(bg, "bf")
	db.set(errDown, nil)
	for i := range 4 { // with the one success: 4 failures of 5 calls
		if _, err := r.Sale(bg, "cold"); !errors.Is(err, errDown) || !errors.Is(err, spike.ErrUnavailable) {
			t.Fatalf("read #%d with the database down: err = %v, want ErrUnavailable wrapping its error", i, err)
		}
	}
	if s := r.Breaker().State(); s != resilience.Open {
		t.Fatalf("breaker %v after 4 failed loads of 5, want open", s)
	}
	reads := db.reads.Load()
	_, err := r.Sale(bg, "cold")
	if !errors.Is(err, spike.ErrUnavailable) || !errors.Is(err, resilience.ErrBreakerOpen) {
		t.Errorf("read with the breaker open: err = %v, want ErrUnavailable (breaker open)", err)
	}
	if s, err := r.Sale(bg, "bf"); err != nil || s != blackFriday {
		t.Errorf("cached sale with the breaker open: %+v, %v", s, err)
	}
	clk.Advance(time.Second) // expired: the reload is refused, the old copy is right
	if s, err := r.Sale(bg, "bf"); err != nil || s != blackFriday {
		t.Errorf("expired sale with the breaker open: %+v, %v", s, err)
	}
	if n := db.reads.Load(); n != reads {
		t.Errorf("%d database reads with the breaker open, want 0", n-reads)
	}

	db.set(nil, nil)
	clk.Advance(2 * time.Second)
	if _, err := r.Sale(bg, "cold"); !errors.Is(err, sale.ErrSaleNotFound) {
		t.Errorf("trial read after the database healed: err = %v, want ErrSaleNotFound (an answer)", err)
	}
	if s := r.Breaker().State(); s != resilience.Closed {
		t.Errorf("breaker %v after a successful trial, want closed", s)
	}
	st := r.Stats()
	if st.LoadErrors != 6 || st.StaleServed != 1 || st.Unavailable != 5 {
		t.Errorf("Stats() = %+v, want 6 load errors (4 failed, 2 refused), 1 stale served, 5 unavailable (4 failed, 1 refused)", st)
	}
}

// TestRecordsBulkheadAndTimeout: a database that does not answer ties up at
// most MaxLoads loads, each cut by LoadTimeout; a load that finds the
// bulkhead full waits LoadWait and is refused with a 503 kind; a reader
// stops waiting at its own deadline while the load goes on for the others.
func TestRecordsBulkheadAndTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := newFakeDB(blackFriday)
		hang := make(chan struct{})
		db.set(nil, hang)
		r := salecache.NewRecords(db, salecache.RecordsOptions{MaxLoads: 1, LoadWait: 100 * time.Millisecond, LoadTimeout: 2 * time.Second})

		var slow error
		var wg sync.WaitGroup
		start := time.Now()
		wg.Go(func() { _, slow = r.Sale(bg, "bf") }) // holds the only slot
		synctest.Wait()

		began := time.Now()
		_, err := r.Sale(bg, "other")
		if !errors.Is(err, spike.ErrUnavailable) || !errors.Is(err, resilience.ErrBulkheadFull) || time.Since(began) != 100*time.Millisecond {
			t.Errorf("read with the bulkhead full: err = %v after %v, want ErrUnavailable (bulkhead full) after LoadWait", err, time.Since(began))
		}

		ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
		defer cancel()
		began = time.Now()
		_, err = r.Sale(ctx, "bf") // joins the hanging load
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, spike.ErrUnavailable) || time.Since(began) != 300*time.Millisecond {
			t.Errorf("read with a 300 ms deadline: err = %v after %v, want DeadlineExceeded (503 kind) at the deadline", err, time.Since(began))
		}

		wg.Wait() // the load is cut by LoadTimeout
		if !errors.Is(slow, resilience.ErrTimeout) || !errors.Is(slow, spike.ErrUnavailable) {
			t.Errorf("read of a database that does not answer: err = %v, want ErrUnavailable (timeout)", slow)
		}
		if elapsed := time.Since(start); elapsed != 2*time.Second {
			t.Errorf("the load ran %v, want LoadTimeout (2s)", elapsed)
		}
		db.set(nil, nil)
		if s, err := r.Sale(bg, "bf"); err != nil || s != blackFriday {
			t.Errorf("read after the database answers again: %+v, %v", s, err)
		}
	})
}

// TestRecordsCacheOnly: while reads are switched to caches only, a cached
// record is served even past its TTL and a miss is refused with a 503 kind,
// without a database read; switched back, reads load again.
func TestRecordsCacheOnly(t *testing.T) {
	clk := newClock()
	db := newFakeDB(blackFriday)
	var cacheOnly atomic.Bool
	r := salecache.NewRecords(db, salecache.RecordsOptions{Now: clk.Now, TTL: time.Second, CacheOnly: cacheOnly.Load})
	r.Sale(bg, "bf")
	cacheOnly.Store(true)
	clk.Advance(2 * time.Second)
	reads := db.reads.Load()
	if s, err := r.Sale(bg, "bf"); err != nil || s != blackFriday {
		t.Errorf("expired record, cache only: %+v, %v; want it served", s, err)
	}
	if _, err := r.Sale(bg, "cold"); !errors.Is(err, salecache.ErrCacheOnly) || !errors.Is(err, spike.ErrUnavailable) {
		t.Errorf("miss, cache only: err = %v, want ErrCacheOnly", err)
	}
	if n := db.reads.Load() - reads; n != 0 {
		t.Errorf("%d database reads while cache only, want 0", n)
	}
	cacheOnly.Store(false)
	if _, err := r.Sale(bg, "cold"); !errors.Is(err, sale.ErrSaleNotFound) || db.reads.Load() == reads {
		t.Errorf("miss after cache only: err = %v, %d reads; want a database read", err, db.reads.Load()-reads)
	}
}
