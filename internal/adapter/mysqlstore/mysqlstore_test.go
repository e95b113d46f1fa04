package mysqlstore_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/spikehq/spike/internal/adapter/mysqlstore"
	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/internal/testkit/mysqltest"
	"github.com/spikehq/spike/internal/testkit/storetest"
)

// mustMySQL returns an admin connection to the test server named by
// SPIKE_TEST_MYSQL_DSN, and the parsed DSN to derive databases' DSNs from.
func mustMySQL(t testing.TB) (*sql.DB, *mysql.Config) { return mysqltest.Server(t) }

// mustDatabases creates n empty databases, dropped in t.Cleanup, and
// returns their DSNs.
func mustDatabases(t testing.TB, n int) []string {
	t.Helper()
	var dsns []string
	for _, c := range mysqltest.Databases(t, n) {
		dsns = append(dsns, c.FormatDSN())
	}
	return dsns
}

// layout returns a Config over fresh databases: the primary and n order
// shards (n = 0: orders on the primary).
func layout(t testing.TB, n int) mysqlstore.Config {
	t.Helper()
	dsns := mustDatabases(t, 1+n)
	cfg := mysqlstore.Config{Primary: dsns[0]}
	for _, d := range dsns[1:] {
		cfg.OrderShards = append(cfg.OrderShards, mysqlstore.ShardConfig{Primary: d})
	}
	return cfg
}

func mustOpen(t testing.TB, cfg mysqlstore.Config) *mysqlstore.Store {
	t.Helper()
	s, err := mysqlstore.Open(cfg)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate() = %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	mustMySQL(t)
	for _, shards := range []int{0, 1, 3} {
		name := fmt.Sprintf("shards=%d", shards)
		if shards == 0 {
			name = "orders_on_primary"
		}
		t.Run(name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) storetest.Stores {
				s := mustOpen(t, layout(t, shards))
				return storetest.Stores{Catalog: s, Sales: s, Orders: s, Lifecycle: s, Payments: s, Stock: s, Ender: s}
			})
		})
	}
}

func TestBucketOf(t *testing.T) {
	// Golden values, computed independently: the function is part of the
	// data format and must never change.
	for user, want := range map[int64]int{1: 193, 2: 718, 42: 661, 1_000_000: 487, 1<<63 - 1: 679} {
		if got := mysqlstore.BucketOf(user); got != want {
			t.Errorf("BucketOf(%d) = %d, want %d", user, got, want)
		}
	}
	var counts [mysqlstore.NumBuckets]int
	const users = 200 * mysqlstore.NumBuckets
	for u := int64(1); u <= users; u++ {
		counts[mysqlstore.BucketOf(u)]++
	}
	for b, c := range counts {
		if c < 100 || c > 300 { // expect 200 ± ~14 (one sigma)
			t.Errorf("bucket %d got %d of %d sequential users, want about 200", b, c, users)
		}
	}
}

func TestEvenBuckets(t *testing.T) {
	got := mysqlstore.EvenBuckets(3)
	want := [][]mysqlstore.BucketRange{{{First: 0, Last: 340}}, {{First: 341, Last: 681}}, {{First: 682, Last: 1023}}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("EvenBuckets(3) = %v, want %v", got, want)
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	const a, b = "root@tcp(127.0.0.1:3306)/a", "root@tcp(127.0.0.1:3306)/b"
	shard := func(dsn string, r ...mysqlstore.BucketRange) mysqlstore.ShardConfig {
		return mysqlstore.ShardConfig{Primary: dsn, Buckets: r}
	}
	tests := []struct {
		name string
		cfg  mysqlstore.Config
		want string
	}{
		{"no database", mysqlstore.Config{Primary: "root@tcp(127.0.0.1:3306)/"}, "names no database"},
		{"bad dsn", mysqlstore.Config{Primary: "not a dsn"}, "primary"},
		{"bad replica", mysqlstore.Config{Primary: a, Replicas: []string{"nope"}}, "replica 0"},
		{"same shard twice", mysqlstore.Config{Primary: a, OrderShards: []mysqlstore.ShardConfig{shard(b), shard(b)}}, "same database"},
		{"gap", mysqlstore.Config{Primary: a, OrderShards: []mysqlstore.ShardConfig{shard(a, mysqlstore.BucketRange{First: 0, Last: 1022})}}, "bucket 1023 is assigned to no"},
		{"overlap", mysqlstore.Config{Primary: a, OrderShards: []mysqlstore.ShardConfig{
			shard(a, mysqlstore.BucketRange{First: 0, Last: 600}), shard(b, mysqlstore.BucketRange{First: 600, Last: 1023})}}, "bucket 600 is assigned to order shards 0 and 1"},
		{"out of range", mysqlstore.Config{Primary: a, OrderShards: []mysqlstore.ShardConfig{shard(a, mysqlstore.BucketRange{First: 0, Last: 1024})}}, "not within"},
		{"reversed", mysqlstore.Config{Primary: a, OrderShards: []mysqlstore.ShardConfig{shard(a, mysqlstore.BucketRange{First: 9, Last: 1})}}, "not within"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := mysqlstore.Open(tt.cfg)
			if err == nil {
				s.Close()
				t.Fatalf("Open() = nil, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	// Explicit ranges in any order are fine.
	s, err := mysqlstore.Open(mysqlstore.Config{Primary: a, OrderShards: []mysqlstore.ShardConfig{
		shard(a, mysqlstore.BucketRange{First: 512, Last: 1023}), shard(b, mysqlstore.BucketRange{First: 0, Last: 511})}})
	if err != nil {
		t.Fatalf("Open(explicit ranges) = %v", err)
	}
	s.Close()
}

// TestShardPlacement checks that each order lands on the shard its bucket
// maps to, with its bucket recorded, by reading the shard databases directly.
func TestShardPlacement(t *testing.T) {
	dsns := mustDatabases(t, 3)
	cfg := mysqlstore.Config{Primary: dsns[0], OrderShards: []mysqlstore.ShardConfig{
		{Primary: dsns[1], Buckets: []mysqlstore.BucketRange{{First: 0, Last: 99}, {First: 700, Last: 1023}}},
		{Primary: dsns[2], Buckets: []mysqlstore.BucketRange{{First: 100, Last: 699}}},
	}}
	s := mustOpen(t, cfg)
	ctx := context.Background()
	var orders []order.Order
	for u := int64(1); u <= 300; u++ {
		orders = append(orders, order.Order{ID: fmt.Sprintf("o%03d", u), SaleID: "s", SKU: "p", UserID: u, Quantity: 1,
			Status: order.Created, IdempotencyKey: "k", CreatedAt: time.Now()})
	}
	if err := s.InsertOrders(ctx, orders); err != nil {
		t.Fatalf("InsertOrders() = %v", err)
	}
	placed := 0
	for i, dsn := range dsns[1:] {
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		rows, err := db.Query(`SELECT user_id, bucket FROM orders`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var user int64
			var bucket int
			if err := rows.Scan(&user, &bucket); err != nil {
				t.Fatal(err)
			}
			placed++
			if bucket != mysqlstore.BucketOf(user) {
				t.Errorf("user %d: stored bucket %d, want %d", user, bucket, mysqlstore.BucketOf(user))
			}
			wantShard := 1
			if bucket < 100 || bucket >= 700 {
				wantShard = 0
			}
			if i != wantShard {
				t.Errorf("user %d (bucket %d) is on shard %d, want %d", user, bucket, i, wantShard)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	if placed != len(orders) {
		t.Errorf("%d orders on the shards, want %d", placed, len(orders))
	}
}

func TestMigrate(t *testing.T) {
	cfg := layout(t, 2)
	s := mustOpen(t, cfg) // migrated once
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 4 { // again, concurrently, as instances starting together do
		wg.Go(func() {
			if err := s.Migrate(ctx); err != nil {
				t.Errorf("Migrate() again = %v", err)
			}
		})
	}
	wg.Wait()
	applied := func(dsn string) string {
		t.Helper()
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var names []string
		rows, err := db.Query(`SELECT name FROM schema_migrations ORDER BY name`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			names = append(names, n)
		}
		return strings.Join(names, " ")
	}
	for _, tt := range []struct{ dsn, want string }{
		{cfg.Primary, "primary/001_init.sql primary/002_stock_moves.sql"},
		{cfg.OrderShards[0].Primary, "orders/001_init.sql orders/002_lifecycle.sql"},
		{cfg.OrderShards[1].Primary, "orders/001_init.sql orders/002_lifecycle.sql"},
	} {
		if got := applied(tt.dsn); got != tt.want {
			t.Errorf("schema_migrations of %s = %q, want %q", tt.dsn, got, tt.want)
		}
	}
	// Orders on the primary: both sets there.
	one := layout(t, 0)
	mustOpen(t, one)
	if got, want := applied(one.Primary), "orders/001_init.sql orders/002_lifecycle.sql primary/001_init.sql primary/002_stock_moves.sql"; got != want {
		t.Errorf("schema_migrations with orders on the primary = %q, want %q", got, want)
	}
}

// TestMigrateResumes: a migration that stopped after its DDL but before it
// was recorded runs again without error (MySQL has no ADD COLUMN IF NOT
// EXISTS; duplicate columns and indexes count as applied).
func TestMigrateResumes(t *testing.T) {
	cfg := layout(t, 1)
	s := mustOpen(t, cfg)
	db, err := sql.Open("mysql", cfg.OrderShards[0].Primary)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`DELETE FROM schema_migrations WHERE name = 'orders/002_lifecycle.sql'`); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate() after a migration stopped halfway = %v", err)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM schema_migrations WHERE name = 'orders/002_lifecycle.sql'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("002 recorded %d times (%v), want once", n, err)
	}
}

func TestPing(t *testing.T) {
	cfg := layout(t, 1)
	s := mustOpen(t, cfg)
	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("Ping() = %v", err)
	}
	bad := cfg
	_, base := mustMySQL(t)
	c := base.Clone()
	c.DBName = "spike_test_no_such_database"
	bad.OrderShards = []mysqlstore.ShardConfig{{Primary: cfg.OrderShards[0].Primary, Replicas: []string{c.FormatDSN()}}}
	s2, err := mysqlstore.Open(bad)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.Ping(context.Background()); err == nil || !strings.Contains(err.Error(), "order shard 0 replica 0") {
		t.Errorf("Ping() with a replica whose database does not exist = %v, want an error naming it", err)
	}
}

// TestReplicaRouting uses a second database on the same server as a
// "replica" that never replicates, with marker rows written to it
// directly, to see which database served each read.
func TestReplicaRouting(t *testing.T) {
	dsns := mustDatabases(t, 4) // primary, its replica, shard, its replica
	ctx := context.Background()
	// The replicas get the schema as if replicated.
	mustOpen(t, mysqlstore.Config{Primary: dsns[1], OrderShards: []mysqlstore.ShardConfig{{Primary: dsns[3]}}})
	s := mustOpen(t, mysqlstore.Config{
		Primary: dsns[0], Replicas: []string{dsns[1]},
		OrderShards:    []mysqlstore.ShardConfig{{Primary: dsns[2], Replicas: []string{dsns[3]}}},
		ReadYourWrites: 5 * time.Second,
	})
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	mysqlstore.SetNow(s, func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	exec := func(dsn, q string, args ...any) {
		t.Helper()
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	// Products: the replica serves what it has; what it lacks comes from
	// the primary.
	if err := s.CreateProduct(ctx, catalog.Product{SKU: "p", Name: "on primary", Stock: 5}); err != nil {
		t.Fatal(err)
	}
	if p, err := s.Product(ctx, "p"); err != nil || p.Name != "on primary" {
		t.Errorf("Product(p) missing on the replica = %+v, %v; want the primary's", p, err)
	}
	exec(dsns[1], `INSERT INTO products (sku, name, price_cents, stock) VALUES ('p', 'on replica', 0, 5)`)
	if p, err := s.Product(ctx, "p"); err != nil || p.Name != "on replica" {
		t.Errorf("Product(p) = %+v, %v; want the replica's", p, err)
	}
	if _, err := s.Product(ctx, "none"); !errors.Is(err, catalog.ErrProductNotFound) {
		t.Errorf("Product(none) = %v, want ErrProductNotFound", err)
	}
	// Writes go to the primary: CreateSale sees the primary's stock.
	if err := s.CreateSale(ctx, sale.Sale{ID: "s", SKU: "p", Stock: 5, PerUserLimit: 1, StartsAt: now}); err != nil {
		t.Fatalf("CreateSale() = %v", err)
	}
	if sl, err := s.Sale(ctx, "s"); err != nil || sl.Stock != 5 {
		t.Errorf("Sale(s) only on the primary = %+v, %v", sl, err)
	}
	if sales, err := s.Sales(ctx); err != nil || len(sales) != 1 {
		t.Errorf("Sales() = %v, %v; want the primary's one sale", sales, err)
	}

	// Orders: a user's listing comes from the primary while their write is
	// recent, then from the replica.
	const user = 7
	o := order.Order{ID: "real", SaleID: "s", SKU: "p", UserID: user, Quantity: 1, Status: order.Created, IdempotencyKey: "k", CreatedAt: now}
	if err := s.InsertOrders(ctx, []order.Order{o}); err != nil {
		t.Fatal(err)
	}
	exec(dsns[3], `INSERT INTO orders (order_id, bucket, sale_id, sku, user_id, quantity, price_cents, status, idempotency_key, created_at)
		VALUES ('marker', ?, 's', 'p', ?, 1, 0, 'created', 'm', ?)`, mysqlstore.BucketOf(user), user, now.UnixMicro())
	ids := func() string {
		t.Helper()
		os, err := s.ListOrders(ctx, user, order.Cursor{}, 10)
		if err != nil {
			t.Fatalf("ListOrders() = %v", err)
		}
		var out []string
		for _, o := range os {
			out = append(out, o.ID)
		}
		return strings.Join(out, ",")
	}
	if got := ids(); got != "real" {
		t.Errorf("ListOrders() right after the write = %q, want %q from the primary", got, "real")
	}
	advance(4 * time.Second)
	if got := ids(); got != "real" {
		t.Errorf("ListOrders() 4s after the write = %q, want %q from the primary", got, "real")
	}
	advance(2 * time.Second)
	if got := ids(); got != "marker" {
		t.Errorf("ListOrders() 6s after the write = %q, want %q from the replica", got, "marker")
	}
	if got, err := s.ListOrders(ctx, user+1, order.Cursor{}, 10); err != nil || len(got) != 0 {
		t.Errorf("ListOrders(other user) = %v, %v", got, err)
	}
	// Order by id: the replica's if it has it, else the primary's.
	if got, err := s.Order(ctx, "marker"); err != nil || got.IdempotencyKey != "m" {
		t.Errorf("Order(marker) = %+v, %v; want the replica's", got, err)
	}
	if got, err := s.Order(ctx, "real"); err != nil || got.IdempotencyKey != "k" {
		t.Errorf("Order(real) = %+v, %v; want the primary's", got, err)
	}
	// ScanSaleOrders reads primaries only.
	var got []string
	err := s.ScanSaleOrders(ctx, "s", func(o *order.Order) error {
		got = append(got, o.ID)
		return nil
	})
	if err != nil || len(got) != 1 || got[0] != "real" {
		t.Errorf("ScanSaleOrders(s) = %v, %v; want only the primary's order", got, err)
	}
}

// BenchmarkInsertOrders inserts batches of 100 orders of distinct users,
// as an order worker does, over 1 and 3 shards.
func BenchmarkInsertOrders(b *testing.B) {
	for _, shards := range []int{1, 3} {
		b.Run(fmt.Sprintf("shards=%d", shards), func(b *testing.B) {
			s := mustOpen(b, layout(b, shards))
			ctx := context.Background()
			var n int64
			b.ReportAllocs()
			for b.Loop() {
				batch := make([]order.Order, 100)
				for i := range batch {
					n++
					batch[i] = order.Order{ID: fmt.Sprintf("o%012d", n), SaleID: "s", SKU: "p", UserID: n, Quantity: 1,
						Status: order.Created, IdempotencyKey: "k", CreatedAt: time.Now()}
				}
				if err := s.InsertOrders(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "orders/s")
		})
	}
}
