package redisstock_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/redis/rueidis"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/redisstock"
	"github.com/spikehq/spike/internal/domain/inventory"
)

// BenchmarkReserve measures a placement's Redis work (reserve + confirm)
// and a sold-out rejection against SPIKE_TEST_REDIS_ADDR, serially and from
// many goroutines, with and without rueidis auto-pipelining.
//
//	SPIKE_TEST_REDIS_ADDR=127.0.0.1:6379 go test -run '^$' -bench Reserve ./redisstock/
func BenchmarkReserve(b *testing.B) {
	addr := mustRedisAddr(b)
	ctx := context.Background()
	for _, bc := range []struct {
		name     string
		parallel bool
		noAuto   bool
		soldOut  bool
	}{
		{name: "serial"},
		{name: "parallel", parallel: true},
		{name: "parallel-no-autopipelining", parallel: true, noAuto: true},
		{name: "soldout-serial", soldOut: true},
		{name: "soldout-parallel", parallel: true, soldOut: true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true, DisableAutoPipelining: bc.noAuto})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(client.Close) // after deleteSale's cleanup, which runs first
			c := redisstock.New(client, spike.NewIDGenerator(), redisstock.Config{Prefix: "spiketest"})
			cp := campaign(b, 1<<40, 1<<40)
			if bc.soldOut {
				cp.Stock = 1
			}
			deleteSale(b, client, "spiketest", cp.ID)
			if err := c.Open(ctx, cp); err != nil {
				b.Fatal(err)
			}
			if bc.soldOut {
				if _, _, err := c.Reserve(ctx, req(cp, 1, "first", 1)); err != nil {
					b.Fatal(err)
				}
			}
			var n atomic.Int64
			op := func() {
				i := n.Add(1)
				res, _, err := c.Reserve(ctx, req(cp, i, strconv.FormatInt(i, 10), 1))
				if bc.soldOut {
					if !errors.Is(err, inventory.ErrSoldOut) {
						b.Errorf("Reserve() = %v, want ErrSoldOut", err)
					}
					return
				}
				if err != nil {
					b.Errorf("Reserve() = %v", err)
					return
				}
				if err := c.Confirm(ctx, res); err != nil {
					b.Errorf("Confirm() = %v", err)
				}
			}
			before := c.RoundTrips()
			b.ReportAllocs()
			b.ResetTimer()
			if bc.parallel {
				b.SetParallelism(32) // 32 × GOMAXPROCS goroutines, as many requests in flight
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						op()
					}
				})
			} else {
				for b.Loop() {
					op()
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(c.RoundTrips()-before)/float64(n.Load()), "roundtrips/op")
		})
	}
}
