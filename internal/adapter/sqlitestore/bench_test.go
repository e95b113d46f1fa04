package sqlitestore_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/sqlitestore"
	"github.com/spikehq/spike/internal/domain/order"
)

// benchPrefill is how many orders the database holds before a benchmark
// starts inserting: enough that the buyer-keyed B-trees span far more
// pages than a batch touches when buyers are distinct.
const benchPrefill = 100_000

// BenchmarkInsertOrders measures persisting orders the way order workers
// do (batches of 1, 64 or 512) into a file database already holding
// benchPrefill orders, with 200 buyers (every batch hits the same few
// pages of the buyer indexes) or 1,000,000 (every order its own page).
// One op is one batch; ns/order is wall time per order, cpu-ns/order the
// CPU time of the whole process per order (it counts work moved to other
// goroutines, such as checkpoints), allocs/order Go allocations per order.
//
//	go test -run '^$' -bench InsertOrders -count 6 ./sqlitestore/ | tee new.txt
func BenchmarkInsertOrders(b *testing.B) {
	for _, users := range []int{200, 1_000_000} {
		// Made on first use, so that -bench filters skip it.
		template := sync.OnceValue(func() string { return benchTemplate(b, users) })
		for _, batch := range []int{1, 64, 512} {
			b.Run(fmt.Sprintf("users=%d/batch=%d", users, batch), func(b *testing.B) {
				benchInsert(b, template(), users, batch)
			})
		}
	}
}

// benchOrders makes n orders of random buyers among users, with
// time-ordered ids as spike.IDGenerator makes them.
func benchOrders(ids *spike.IDGenerator, rng *rand.Rand, users, n int) []order.Order {
	out := make([]order.Order, n)
	now := time.Now()
	for i := range out {
		u := int64(1 + rng.IntN(users))
		out[i] = order.Order{
			ID: ids.New(), SaleID: "black-friday", SKU: "phone-1", UserID: u, Quantity: 1,
			PriceCents: 19900, Status: order.Created,
			IdempotencyKey: fmt.Sprintf("k-%d-%016x", u, rng.Uint64()),
			CreatedAt:      now.Add(time.Duration(i) * time.Microsecond).Truncate(time.Microsecond),
		}
		// As placements make them: a payment window of 15 minutes.
		out[i].PaymentDeadline = out[i].CreatedAt.Add(15 * time.Minute)
	}
	return out
}

// benchTemplate returns the path of a database holding benchPrefill orders
// of users buyers, made once per BenchmarkInsertOrders run.
func benchTemplate(b *testing.B, users int) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "template.db")
	ctx := context.Background()
	s, err := sqlitestore.Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	ids := spike.NewIDGenerator()
	rng := rand.New(rand.NewPCG(uint64(users), 1))
	for done := 0; done < benchPrefill; done += 512 {
		if err := s.InsertOrders(ctx, benchOrders(ids, rng, users, min(512, benchPrefill-done))); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil { // checkpoints and removes the WAL
		b.Fatal(err)
	}
	return path
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchInsert(b *testing.B, template string, users, batch int) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "spike.db")
	if err := copyFile(path, template); err != nil {
		b.Fatal(err)
	}
	s, err := sqlitestore.Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	// Make the orders before timing: the generator's allocations are not
	// the store's.
	rng := rand.New(rand.NewPCG(uint64(users), 2))
	all := benchOrders(spike.NewIDGenerator(), rng, users, b.N*batch)
	b.ReportAllocs()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := range b.N {
		if err := s.InsertOrders(ctx, all[i*batch:(i+1)*batch]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	runtime.ReadMemStats(&ms1)
	n := float64(b.N * batch)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/order")
	b.ReportMetric(float64(cpu.Nanoseconds())/n, "cpu-ns/order")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/n, "allocs/order")
}
