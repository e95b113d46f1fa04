package mysqlstore_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/adapter/mysqlstore"
	"github.com/spikehq/spike/internal/domain/order"
)

var expireNow = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

// fillOpenDeadlines adds n (a multiple of 100,000) created orders whose
// payment deadlines are all ahead of expireNow, every eleventh without
// one, with INSERT ... SELECT over a generated sequence (portable to MySQL
// 8 and MariaDB), 100,000 rows a statement.
func fillOpenDeadlines(tb testing.TB, dsn string, n int) {
	tb.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	at := expireNow.UnixMicro()
	for chunk := 0; chunk < n/100_000; chunk++ {
		_, err := db.Exec(`INSERT INTO orders (order_id, bucket, sale_id, sku, user_id, quantity, price_cents, status,
			idempotency_key, created_at, updated_at, payment_deadline)
			WITH d (n) AS (SELECT 0 UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
				UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9),
			seq (i) AS (SELECT ? * 100000 + a.n + 10*b.n + 100*c.n + 1000*e.n + 10000*f.n + 1 FROM d a, d b, d c, d e, d f)
			SELECT CONCAT('open-', LPAD(i, 9, '0')), i % 1024, 'bf', 'phone', i, 1, 100, 'created', 'k',
				? - 60000000 + i, ? - 60000000 + i, IF(i % 11 = 0, NULL, ? + 1000 + i * 1000) FROM seq`,
			chunk, at, at, at)
		if err != nil {
			tb.Fatal(err)
		}
	}
}

var openLayouts sync.Map // *testing.B (the top-level run) → func() mysqlstore.Config

// BenchmarkExpireDue measures one sweep that expires 10 due orders among
// `open` created orders whose deadlines are all still ahead (one shard,
// orders on the primary). One op is one ExpireDue call; inserting the
// due orders is not timed.
//
// Every top-level run (-count) makes its million rows again.
//
//	SPIKE_TEST_MYSQL_DSN=... go test -run '^$' -bench ExpireDue ./internal/adapter/mysqlstore
func BenchmarkExpireDue(b *testing.B) {
	mustMySQL(b)
	parent := b // the sub-benchmarks' cleanups run after each of their rounds
	for _, open := range []int{0, 1_000_000} {
		b.Run(fmt.Sprintf("open=%d", open), func(b *testing.B) {
			ctx := context.Background()
			var cfg mysqlstore.Config
			if open == 0 {
				cfg = layout(b, 0)
			} else {
				// Made once, for every round; dropped after the last.
				f, _ := openLayouts.LoadOrStore(parent, sync.OnceValue(func() mysqlstore.Config {
					c := layout(parent, 0)
					mustOpen(parent, c)
					start := time.Now()
					fillOpenDeadlines(parent, c.Primary, open)
					b.Logf("%d open deadlines made in %v", open, time.Since(start))
					return c
				}))
				cfg = f.(func() mysqlstore.Config)()
			}
			s := mustOpen(b, cfg)
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
