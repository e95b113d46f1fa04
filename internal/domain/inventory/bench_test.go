package inventory_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/sale"
)

// uuidKey returns a 36-byte idempotency key, shaped like a UUID, for i.
func uuidKey(i int) string {
	return "0b6f4a8e-3c1d-4e2f-9a7b-" + strconv.FormatInt(100000000000+int64(i), 10)
}

// start resets b's timer; the func it returns stops it and reports,
// besides allocations, the process's CPU time per operation (cpu-ns/op):
// on a loaded machine the wall clock (ns/op) mostly measures the other
// processes.
func start(b *testing.B) (stop func()) {
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	return func() {
		b.StopTimer()
		b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
	}
}

// BenchmarkReserve measures the in-process Reserve in the shape of a flash
// sale: each call is a buyer never seen before, with a fresh 36-byte key
// (the keys are made before the timer starts). The other cases are a
// buyer's second key, the replay of a confirmed key, a whole placement
// (Reserve + Confirm) and a rejection once sold out.
//
//	go test -run '^$' -bench Reserve -benchmem -count 5 ./internal/domain/inventory
func BenchmarkReserve(b *testing.B) {
	ctx := context.Background()
	newSale := func(b *testing.B, stock int64) *inventory.Counters {
		c := inventory.New(spike.NewIDGenerator())
		if err := c.Open(ctx, sale.Sale{ID: "s", SKU: "p", Stock: stock, PriceCents: 999, PerUserLimit: 2, StartsAt: time.Now().Add(-time.Hour)}); err != nil {
			b.Fatal(err)
		}
		return c
	}
	keys := func(b *testing.B) []string {
		ks := make([]string, b.N)
		for i := range ks {
			ks[i] = uuidKey(i)
		}
		return ks
	}
	reserve := func(b *testing.B, c *inventory.Counters, user int64, key string) inventory.Reservation {
		res, _, err := c.Reserve(ctx, inventory.Request{SaleID: "s", UserID: user, Key: key, Quantity: 1})
		if err != nil {
			b.Fatal(err)
		}
		return res
	}

	b.Run("fresh-buyer", func(b *testing.B) {
		c := newSale(b, 1<<40)
		ks := keys(b)
		stop := start(b)
		for i := range b.N {
			reserve(b, c, int64(i+1), ks[i])
		}
		stop()
	})
	b.Run("fresh-buyer-parallel", func(b *testing.B) {
		c := newSale(b, 1<<40)
		ks := keys(b)
		var n atomic.Int64
		stop := start(b)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := n.Add(1)
				reserve(b, c, i, ks[i-1])
			}
		})
		stop()
	})
	b.Run("placement", func(b *testing.B) {
		c := newSale(b, 1<<40)
		ks := keys(b)
		stop := start(b)
		for i := range b.N {
			if err := c.Confirm(ctx, reserve(b, c, int64(i+1), ks[i])); err != nil {
				b.Fatal(err)
			}
		}
		stop()
	})
	b.Run("second-key", func(b *testing.B) {
		c := newSale(b, 1<<40)
		ks := make([]string, 2*b.N)
		for i := range ks {
			ks[i] = uuidKey(i)
		}
		for i := range b.N {
			reserve(b, c, int64(i+1), ks[2*i])
		}
		stop := start(b)
		for i := range b.N {
			reserve(b, c, int64(i+1), ks[2*i+1])
		}
		stop()
	})
	b.Run("replay", func(b *testing.B) {
		c := newSale(b, 1<<40)
		const warm = 1 << 16
		ks := make([]string, warm)
		for i := range ks {
			ks[i] = uuidKey(i)
			c.Confirm(ctx, reserve(b, c, int64(i+1), ks[i]))
		}
		stop := start(b)
		for i := range b.N {
			j := i & (warm - 1)
			if _, replay, err := c.Reserve(ctx, inventory.Request{SaleID: "s", UserID: int64(j + 1), Key: ks[j], Quantity: 1}); err != nil || !replay {
				b.Fatal(replay, err)
			}
		}
		stop()
	})
	b.Run("sold-out", func(b *testing.B) {
		c := newSale(b, 1)
		reserve(b, c, 1<<50, "first")
		ks := keys(b)
		stop := start(b)
		for i := range b.N {
			if _, _, err := c.Reserve(ctx, inventory.Request{SaleID: "s", UserID: int64(i + 1), Key: ks[i], Quantity: 1}); err != inventory.ErrSoldOut {
				b.Fatal(err)
			}
		}
		stop()
	})
}
