package salecache_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/resilience"
)

var (
	bg      = context.Background()
	errDown = errors.New("connection refused")
)

// fakeClock is a settable time source for the Now options.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testBreaker opens after 5 loads of which half failed and stays open 2 s.
func testBreaker() resilience.BreakerConfig {
	return resilience.BreakerConfig{WindowSize: 10, MinimumCalls: 5, OpenTimeout: 2 * time.Second, HalfOpenCalls: 1}
}

// fakeDB is a sale.Store that counts reads, can fail them (err), and can
// hold them until gate is closed or their context ends.
type fakeDB struct {
	mu    sync.Mutex
	sales map[string]sale.Sale
	err   error
	gate  chan struct{}
	reads atomic.Int64
}

func newFakeDB(ss ...sale.Sale) *fakeDB {
	db := &fakeDB{sales: map[string]sale.Sale{}}
	for _, s := range ss {
		db.sales[s.ID] = s
	}
	return db
}

func (db *fakeDB) set(err error, gate chan struct{}) {
	db.mu.Lock()
	defer db.mu.Unlock()
	db.err, db.gate = err, gate
}

func (db *fakeDB) CreateSale(_ context.Context, s sale.Sale) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if _, ok := db.sales[s.ID]; ok {
		return sale.ErrSaleExists
	}
	db.sales[s.ID] = s
	return nil
}

func (db *fakeDB) Sale(ctx context.Context, id string) (sale.Sale, error) {
	db.reads.Add(1)
	db.mu.Lock()
	gate, err := db.gate, db.err
	db.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return sale.Sale{}, ctx.Err()
		}
	}
	if err != nil {
		return sale.Sale{}, err
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	s, ok := db.sales[id]
	if !ok {
		return sale.Sale{}, sale.ErrSaleNotFound
	}
	return s, nil
}

func (db *fakeDB) Sales(context.Context) ([]sale.Sale, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	var out []sale.Sale
	for _, s := range db.sales {
		out = append(out, s)
	}
	return out, nil
}

// fakeCounters is a sale.Counters whose remaining units the test sets; it
// counts reads, can fail them, hold them (gate) or report them unknown.
type fakeCounters struct {
	mu        sync.Mutex
	remaining map[string]int64
	unknown   bool
	err       error
	gate      chan struct{}
	reads     atomic.Int64
}

func newFakeCounters() *fakeCounters { return &fakeCounters{remaining: map[string]int64{}} }

func (f *fakeCounters) setRemaining(id string, n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.remaining[id] = n
}

func (f *fakeCounters) set(err error, gate chan struct{}, unknown bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err, f.gate, f.unknown = err, gate, unknown
}

func (f *fakeCounters) End(context.Context, string, time.Time) error { return nil }

func (f *fakeCounters) Open(_ context.Context, s sale.Sale) error {
	f.setRemaining(s.ID, s.Stock)
	return nil
}

func (f *fakeCounters) Remaining(ctx context.Context, id string) (int64, bool, error) {
	f.reads.Add(1)
	f.mu.Lock()
	gate, err := f.gate, f.err
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return 0, false, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		return 0, false, err
	}
	if f.unknown {
		return 0, false, nil
	}
	n, ok := f.remaining[id]
	return n, ok, nil
}
