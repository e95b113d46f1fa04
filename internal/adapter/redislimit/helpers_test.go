package redislimit_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync/atomic"
	"testing"

	"github.com/redis/rueidis"

	"github.com/spikehq/spike/internal/testkit/redistest"
)

// newClient connects to addrs and closes the client at cleanup.
func newClient(t testing.TB, addrs ...string) rueidis.Client {
	t.Helper()
	return redistest.NewClient(t, addrs...)
}

// mustShared returns a client of the shared Redis at SPIKE_TEST_REDIS_ADDR.
// Tests on it use random limiter names and never flush it.
func mustShared(t testing.TB) rueidis.Client {
	t.Helper()
	return newClient(t, mustRedisAddr(t))
}

// randomName returns a limiter name unique to this test run.
func randomName(t testing.TB) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "t-" + hex.EncodeToString(b[:])
}

// countingClient counts the requests sent to Redis: the round trips.
type countingClient struct {
	rueidis.Client
	n atomic.Int64
}

func (c *countingClient) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	c.n.Add(1)
	return c.Client.Do(ctx, cmd)
}

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
