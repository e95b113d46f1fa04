package mysqlstore_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike/internal/adapter/mysqlstore"
	"github.com/spikehq/spike/internal/domain/catalog"
)

// TestMigrateStockMoves: a primary from before the stock moves gets a
// baseline move per product and a move per sale, so that every product's
// stock is the sum of its moves; its sales read back with no payment
// window and not settled. The migration run again (stopped before it was
// recorded) adds nothing.
func TestMigrateStockMoves(t *testing.T) {
	ctx := context.Background()
	cfg := layout(t, 0)
	s := mustOpen(t, cfg)
	db, err := sql.Open("mysql", cfg.Primary)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exec := func(qs ...string) {
		t.Helper()
		for _, q := range qs {
			if _, err := db.Exec(q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
	// Back to the schema before 002, with data written by that version.
	exec(`DROP TABLE stock_moves`,
		`ALTER TABLE sales DROP COLUMN payment_window, DROP COLUMN settled_at`,
		`DELETE FROM schema_migrations WHERE name = 'primary/002_stock_moves.sql'`,
		`INSERT INTO products (sku, name, price_cents, stock) VALUES ('a', 'A', 100, 3), ('b', 'B', 100, 0), ('c', 'C', 100, 7)`,
		`INSERT INTO sales (id, sku, stock, price_cents, per_user_limit, starts_at, ends_at) VALUES
			('sa1', 'a', 5, 50, 1, 1764417600000, NULL), ('sa2', 'a', 2, 50, 1, 1764417500000, 1764421200000),
			('sb1', 'b', 4, 50, 1, 1764417600000, NULL)`)
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate() of a primary from before the stock moves = %v", err)
	}
	want := map[string][]string{
		"a": {"baseline=10", "sale:sa2=-2", "sale:sa1=-5"},
		"b": {"baseline=4", "sale:sb1=-4"},
		"c": {"baseline=7"},
	}
	checkMigratedMoves(t, s, want)
	sales, err := s.Sales(ctx)
	if err != nil || len(sales) != 3 {
		t.Fatalf("Sales() = %v, %v", sales, err)
	}
	for _, sl := range sales {
		if sl.PaymentWindow != 0 || !sl.SettledAt.IsZero() {
			t.Errorf("migrated sale %s: payment window %v, settled at %v; want 0 and not settled", sl.ID, sl.PaymentWindow, sl.SettledAt)
		}
	}

	// The ledger goes on from there.
	if _, applied, err := s.SettleSale(ctx, "sa1", 5, time.Now()); err != nil || !applied {
		t.Fatalf("SettleSale(sa1) = %v, %v", applied, err)
	}
	if _, applied, err := s.AdjustStock(ctx, catalog.StockMove{SKU: "c", Key: catalog.MoveAdmin + "w", Delta: -7}); err != nil || !applied {
		t.Fatalf("AdjustStock(c, -7) = %v, %v", applied, err)
	}
	want["a"] = append(want["a"], "sale-end:sa1=5")
	want["c"] = append(want["c"], "admin:w=-7")
	checkMigratedMoves(t, s, want)

	// Run again, as after a stop before it was recorded: nothing added.
	exec(`DELETE FROM schema_migrations WHERE name = 'primary/002_stock_moves.sql'`)
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate() again = %v", err)
	}
	checkMigratedMoves(t, s, want)
}

func checkMigratedMoves(t *testing.T, s *mysqlstore.Store, want map[string][]string) {
	t.Helper()
	ctx := context.Background()
	products, err := s.Products(ctx)
	if err != nil || len(products) != len(want) {
		t.Fatalf("Products() = %v, %v; want %d", products, err, len(want))
	}
	for _, p := range products {
		moves, err := s.StockMoves(ctx, p.SKU)
		if err != nil {
			t.Fatalf("StockMoves(%s) = %v", p.SKU, err)
		}
		var got []string
		var sum int64
		for _, m := range moves {
			got = append(got, fmt.Sprintf("%s=%d", m.Key, m.Delta))
			sum += m.Delta
		}
		if diff := cmp.Diff(want[p.SKU], got); diff != "" {
			t.Errorf("StockMoves(%s) (-want +got):\n%s", p.SKU, diff)
		}
		if sum != p.Stock {
			t.Errorf("product %s: stock %d, moves sum to %d", p.SKU, p.Stock, sum)
		}
	}
}
