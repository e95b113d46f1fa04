package catalogcache_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/adapter/sqlitestore"
	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/readcache/catalogcache"
)

var bg = context.Background()

// fakeClock is a settable time source for Options.Now.
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

// fakeDB is a catalog.Store that counts reads, can fail them (err) and can
// hold them until gate is closed.
type fakeDB struct {
	mu       sync.Mutex
	products map[string]catalog.Product
	err      error
	gate     chan struct{}
	reads    atomic.Int64
}

func newFakeDB(ps ...catalog.Product) *fakeDB {
	db := &fakeDB{products: map[string]catalog.Product{}}
	for _, p := range ps {
		db.products[p.SKU] = p
	}
	return db
}

func (db *fakeDB) CreateProduct(_ context.Context, p catalog.Product) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if _, ok := db.products[p.SKU]; ok {
		return catalog.ErrProductExists
	}
	db.products[p.SKU] = p
	return nil
}

func (db *fakeDB) Product(ctx context.Context, sku string) (catalog.Product, error) {
	db.reads.Add(1)
	db.mu.Lock()
	gate, err := db.gate, db.err
	db.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return catalog.Product{}, ctx.Err()
		}
	}
	if err != nil {
		return catalog.Product{}, err
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	p, ok := db.products[sku]
	if !ok {
		return catalog.Product{}, catalog.ErrProductNotFound
	}
	return p, nil
}

func (db *fakeDB) UpdateProduct(_ context.Context, sku string, u catalog.ProductUpdate) (catalog.Product, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	p, ok := db.products[sku]
	if !ok {
		return catalog.Product{}, catalog.ErrProductNotFound
	}
	if u.Name != nil {
		p.Name = *u.Name
	}
	if u.PriceCents != nil {
		p.PriceCents = *u.PriceCents
	}
	db.products[sku] = p
	return p, nil
}

func (db *fakeDB) set(p catalog.Product) {
	db.mu.Lock()
	defer db.mu.Unlock()
	db.products[p.SKU] = p
}

func (db *fakeDB) fail(err error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	db.err = err
}

func (db *fakeDB) hold() (release func()) {
	db.mu.Lock()
	defer db.mu.Unlock()
	g := make(chan struct{})
	db.gate = g
	return func() {
		db.mu.Lock()
		db.gate = nil
		db.mu.Unlock()
		close(g)
	}
}

var errDBDown = errors.New("database is down")

// recorder is an Invalidator that records what it publishes.
type recorder struct {
	mu   sync.Mutex
	skus []string
}

func (r *recorder) Publish(_ context.Context, sku string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.skus = append(r.skus, sku)
	return nil
}

func (r *recorder) published() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.skus...)
}

// mapL2 is an in-memory L2.
type mapL2 struct {
	mu      sync.Mutex
	m       map[string]catalog.Product
	sets    int
	deletes int
	gets    int
	err     error // returned by Get
}

func (l *mapL2) Get(_ context.Context, sku string) (catalog.Product, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gets++
	if l.err != nil {
		return catalog.Product{}, false, l.err
	}
	p, ok := l.m[sku]
	return p, ok, nil
}

func (l *mapL2) Set(_ context.Context, p catalog.Product, _ time.Duration) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m[p.SKU] = p
	l.sets++
	return nil
}

func (l *mapL2) Delete(_ context.Context, sku string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, sku)
	l.deletes++
	return nil
}

var _ catalogcache.L2 = (*mapL2)(nil)

func mustOpenDB(t testing.TB) *sqlitestore.Store {
	t.Helper()
	db, err := sqlitestore.Open(bg, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newStore(t testing.TB, next catalog.Store, opts catalogcache.Options) *catalogcache.Store {
	t.Helper()
	s := catalogcache.New(next, opts)
	t.Cleanup(s.Close)
	return s
}

func mustProduct(t testing.TB, s catalog.Store, sku string) catalog.Product {
	t.Helper()
	p, err := s.Product(bg, sku)
	if err != nil {
		t.Fatalf("Product(%q) = %v", sku, err)
	}
	return p
}

var (
	widget = catalog.Product{SKU: "widget", Name: "Widget", PriceCents: 1000, Stock: 50}
	gadget = catalog.Product{SKU: "gadget", Name: "Gadget", PriceCents: 2500, Stock: 5}
)
