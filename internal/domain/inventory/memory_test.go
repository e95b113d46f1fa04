package inventory_test

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/sale"
)

// BenchmarkMillionBuyers reports the memory a sale's counters hold per
// buyer after 1,000,000 distinct buyers each reserved one unit (36-byte
// idempotency keys, like UUIDs). Run: go test -run '^$' -bench MillionBuyers -benchtime 1x ./inventory
func BenchmarkMillionBuyers(b *testing.B) {
	const buyers = 1_000_000
	for b.Loop() {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		c := inventory.New(spike.NewIDGenerator())
		c.Open(context.Background(), sale.Sale{ID: "big", SKU: "p", Stock: buyers, PerUserLimit: 1, StartsAt: time.Now().Add(-time.Hour)})
		ctx := context.Background()
		for u := range buyers {
			key := "0b6f4a8e-3c1d-4e2f-9a7b-" + strconv.FormatInt(100000000000+int64(u), 10)
			res, _, err := c.Reserve(ctx, inventory.Request{SaleID: "big", UserID: int64(u + 1), Key: key, Quantity: 1})
			if err != nil {
				b.Fatal(err)
			}
			c.Confirm(ctx, res)
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/buyers, "heap-bytes/buyer")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "heap-MiB")
		runtime.KeepAlive(c)
	}
}
