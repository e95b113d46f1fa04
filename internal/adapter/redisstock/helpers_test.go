package redisstock_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/redisstock"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/internal/testkit/redistest"
)

// newClient connects to addrs and closes the client at cleanup.
func newClient(t testing.TB, addrs ...string) rueidis.Client {
	t.Helper()
	return redistest.NewClient(t, addrs...)
}

// mustShared returns a client of the shared Redis at SPIKE_TEST_REDIS_ADDR.
// Tests on it use random sale ids and never flush it.
func mustShared(t testing.TB) rueidis.Client {
	t.Helper()
	return newClient(t, mustRedisAddr(t))
}

func randomID(t testing.TB) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "t-" + hex.EncodeToString(b[:])
}

// campaign returns an active sale with a random id.
func campaign(t testing.TB, allocated, limit int64) sale.Sale {
	now := time.Now().UTC()
	return sale.Sale{ID: randomID(t), SKU: "SKU-1", Stock: allocated, PriceCents: 999,
		PerUserLimit: limit, StartsAt: now.Add(-time.Hour), EndsAt: now.Add(time.Hour)}
}

// newCounters returns counters on client with a test key prefix, running
// their news subscription until the test ends.
func newCounters(t testing.TB, client rueidis.Client, opts redisstock.Config) *redisstock.Counters {
	t.Helper()
	if opts.Prefix == "" {
		opts.Prefix = "spiketest"
	}
	if opts.Settle == 0 {
		opts.Settle = -1
	}
	c := redisstock.New(client, spike.NewIDGenerator(), opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

// deleteSale removes a sale's keys from the shared Redis at cleanup.
func deleteSale(t testing.TB, client rueidis.Client, prefix, id string) {
	t.Cleanup(func() {
		base := prefix + ":{sale:" + id + "}:"
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = client.Do(ctx, client.B().Del().Key(base+"meta", base+"stock", base+"users", base+"keys", base+"lock", base+"returned").Build()).Error()
	})
}

func req(cp sale.Sale, user int64, key string, qty int64) inventory.Request {
	return inventory.Request{SaleID: cp.ID, UserID: user, Key: key, Quantity: qty}
}

func key(i int) string { return fmt.Sprintf("k-%d", i) }

// The Redis test servers and helpers shared with other packages' tests.
type server = redistest.Server

func mustRedisAddr(t testing.TB) string { t.Helper(); return redistest.MustAddr(t) }
func startRedis(t testing.TB, extra ...string) *server {
	t.Helper()
	return redistest.Start(t, extra...)
}
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	redistest.Eventually(t, what, cond)
}
