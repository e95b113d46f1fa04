package sqlitestore_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/adapter/sqlitestore"
	"github.com/spikehq/spike/internal/domain/order"
)

// expireNow is the sweep's clock in the ExpireDue benchmark and test.
var expireNow = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

// fillOpenDeadlines adds n created orders whose payment deadlines are all
// in the future of expireNow (and n/10 without a deadline), in one SQL
// statement: far faster than InsertOrders for a million rows.
func fillOpenDeadlines(tb testing.TB, path string, n int) {
	tb.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(OFF)")
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	at := expireNow.UnixMicro()
	_, err = db.Exec(`WITH RECURSIVE x(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM x WHERE i < ?)
		INSERT INTO orders (order_id, sale_id, sku, user_id, quantity, price_cents, status, idempotency_key,
			created_at, updated_at, payment_deadline)
		SELECT printf('open-%09d', i), 'bf', 'phone', i, 1, 100, 'created', 'k', ?2 - 60000000 + i, ?2 - 60000000 + i,
			CASE WHEN i % 11 = 0 THEN NULL ELSE ?2 + 1000 + i * 1000 END FROM x`, n, at)
	if err != nil {
		tb.Fatal(err)
	}
}

// openTemplates holds the database files with open deadlines, made once per
// process by size.
var openTemplates sync.Map // int → func() string

func openTemplate(b *testing.B, n int) string {
	f, _ := openTemplates.LoadOrStore(n, sync.OnceValue(func() string {
		dir, err := filepathTemp()
		if err != nil {
			b.Fatal(err)
		}
		path := filepath.Join(dir, fmt.Sprintf("open-%d.db", n))
		s, err := sqlitestore.Open(context.Background(), path)
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
		start := time.Now()
		fillOpenDeadlines(b, path, n)
		b.Logf("%d open deadlines made in %v", n, time.Since(start))
		return path
	}))
	return f.(func() string)()
}

// BenchmarkExpireDue measures one sweep that expires 10 due orders among
// `open` created orders whose deadlines are all still ahead (and a tenth
// as many without one): the sweep reads a range of the (status,
// payment_deadline) index, so its cost must not grow with open. One op is
// one ExpireDue call; inserting the 10 due orders is not timed.
//
//	go test -run '^$' -bench ExpireDue -count 5 ./internal/adapter/sqlitestore
func BenchmarkExpireDue(b *testing.B) {
	for _, open := range []int{0, 1_000_000} {
		b.Run(fmt.Sprintf("open=%d", open), func(b *testing.B) {
			ctx := context.Background()
			path := filepath.Join(b.TempDir(), "spike.db")
			if open > 0 {
				path = openTemplate(b, open) // shared: each run adds and expires its own due orders
			}
			s, err := sqlitestore.Open(ctx, path)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			const due = 10
			batch := make([]order.Order, due)
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				for k := range batch {
					id := fmt.Sprintf("due-%d-%d-%d", time.Now().UnixNano(), i, k)
					batch[k] = order.Order{ID: id, SaleID: "bf", SKU: "phone", UserID: int64(2_000_000 + k), Quantity: 1, PriceCents: 100,
						Status: order.Created, IdempotencyKey: id, CreatedAt: expireNow.Add(-time.Hour),
						PaymentDeadline: expireNow.Add(-time.Duration(k) * time.Second)}
				}
				if err := s.InsertOrders(ctx, batch); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				got, err := s.ExpireDue(ctx, expireNow, 100)
				if err != nil || len(got) != due {
					b.Fatalf("ExpireDue() = %d orders, %v; want %d", len(got), err, due)
				}
			}
		})
	}
}

// TestExpireDuePlan: the sweep searches a range of the deadline index
// (the subquery names it with INDEXED BY, so SQLite fails rather than
// scan) and updates the orders it found by primary key, without a sort.
func TestExpireDuePlan(t *testing.T) {
	db := migratedDB(t)
	got := queryPlan(t, db, sqlitestore.ExpireDueSQL, 1, 1, 10)
	if !strings.Contains(got, "SEARCH orders USING PRIMARY KEY (order_id=?)") ||
		!strings.Contains(got, "SEARCH orders USING COVERING INDEX orders_by_deadline (status=? AND payment_deadline<?)") ||
		strings.Contains(got, "TEMP B-TREE") || strings.Contains(got, "SCAN") || strings.Count(got, "orders_by_deadline") != 1 {
		t.Errorf("plan = %q, want a range search of orders_by_deadline, then lookups by primary key, and no sort", got)
	}
}

// TestListOrdersPlan: a buyer's orders are found through the unique
// (user_id, sale_id, idempotency_key) index, never by scanning the table
// (the only other buyer-keyed index was dropped: every persisted order
// paid a random page write for it).
func TestListOrdersPlan(t *testing.T) {
	db := migratedDB(t)
	for _, tc := range []struct {
		sql  string
		args []any
	}{
		{sqlitestore.ListOrdersSQL, []any{7, 20}},
		{sqlitestore.ListOrdersAfterSQL, []any{7, 1, 1, "x", 20}},
	} {
		got := queryPlan(t, db, tc.sql, tc.args...)
		if !strings.Contains(got, "SEARCH orders USING INDEX sqlite_autoindex_orders_2 (user_id=?)") || strings.Contains(got, "SCAN") {
			t.Errorf("plan = %q, want a search of the buyer's index entries", got)
		}
	}
}

// migratedDB opens a database file that sqlitestore.Open has migrated.
func migratedDB(t *testing.T) *sql.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "spike.db")
	s, err := sqlitestore.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// queryPlan returns the details of EXPLAIN QUERY PLAN of query, joined.
func queryPlan(t *testing.T, db *sql.DB, query string, args ...any) string {
	t.Helper()
	rows, err := db.Query(`EXPLAIN QUERY PLAN `+query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "; ")
}

// benchDir holds databases shared by benchmark runs; TestMain removes it.
var benchDir string

func filepathTemp() (string, error) {
	if benchDir == "" {
		d, err := os.MkdirTemp("", "spike-expire-bench-")
		if err != nil {
			return "", err
		}
		benchDir = d
	}
	return benchDir, nil
}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}
