package main

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/testkit/apitest"

	"golang.org/x/sync/errgroup"

	"github.com/spikehq/spike/internal/domain/order"
)

// startApp runs an embedded Spike on a loopback port for the test.
func startApp(t *testing.T, dir string) *app {
	t.Helper()
	return startAppWith(t, dir, nil)
}

// startAppWith is startApp with a fault injected in front of the stream.
func startAppWith(t *testing.T, dir string, wrapStream func(order.Stream) order.Stream) *app {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Data = dir
	cfg.wrapStream = wrapStream
	a, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func stopApp(t *testing.T, a *app) {
	t.Helper()
	hangUp(a.addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// TestFlashSaleConcurrentBuyers runs 500 buyers sending 20,000 placements,
// with replays and conflicting retries, at a sale whose stock is a small
// fraction of the demand, and then checks I1–I5 from outside.
func TestFlashSaleConcurrentBuyers(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	const (
		buyers   = 500
		requests = 20_000
		stock    = 800 // demand: 500 buyers × 2 units and 20,000 requests
		perUser  = 2
		saleID   = "flash-1"
	)
	a := startApp(t, t.TempDir())
	defer stopApp(t, a)
	c := newClient(t, a.addr, a.secret)
	c.SetupSale("sku-flash-1", saleID, stock, perUser)

	l := apitest.NewLedger()
	var sent, accepted, replays, soldOut, limited, conflicts, shed atomic.Int64
	var g errgroup.Group
	for b := range buyers {
		user := int64(1000 + b)
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(uint64(user), 7))
			tok := c.Token(user, false)
			type sentKey struct {
				key string
				qty int64
			}
			var keys []sentKey
			for i := 0; sent.Add(1) <= requests; i++ {
				var k sentKey
				switch r := rng.IntN(10); {
				case r < 3 && len(keys) > 0: // replay an earlier request exactly
					k = keys[rng.IntN(len(keys))]
				case r == 3 && len(keys) > 0: // same key, other quantity: must not place
					k = keys[rng.IntN(len(keys))]
					k.qty = 3 - k.qty
				default:
					k = sentKey{userKey(user, i), int64(1 + rng.IntN(perUser))}
					keys = append(keys, k)
				}
				resp, p, err := c.Place(context.Background(), user, tok, saleID, k.key, k.qty)
				// Shed by a guard (429/503 with Retry-After): not remembered,
				// so the same request is retried, as a client would.
				for tries := 0; err == nil && (resp.Status == 429 || resp.Status == 503) && tries < 100; tries++ {
					shed.Add(1)
					if resp.Header.Get("Retry-After") == "" {
						t.Errorf("%d without Retry-After", resp.Status)
					}
					time.Sleep(time.Duration(20+rng.IntN(30)) * time.Millisecond)
					resp, p, err = c.Place(context.Background(), user, tok, saleID, k.key, k.qty)
				}
				if err != nil {
					t.Errorf("transport error: %v", err)
					return nil
				}
				switch resp.Status {
				case 202:
					if prev, ok := l.OrderOf(user, k.key); ok {
						replays.Add(1)
						if prev != p.OrderID {
							t.Errorf("replay of %s: order %s, first was %s", k.key, p.OrderID, prev)
						}
					} else {
						accepted.Add(1)
					}
					l.Record(user, k.key, k.qty, p)
				case 409:
					switch resp.Code() {
					case "sold_out":
						soldOut.Add(1)
					case "limit_exceeded":
						limited.Add(1)
					case "conflict":
						conflicts.Add(1)
					default:
						t.Errorf("409 with code %q", resp.Code())
					}
				default:
					t.Errorf("unexpected %d: %s", resp.Status, resp.Body)
				}
			}
			return nil
		})
	}
	g.Wait()
	t.Logf("requests %d: accepted %d, replays %d, sold_out %d, limit_exceeded %d, conflict %d; shed and retried %d",
		requests, accepted.Load(), replays.Load(), soldOut.Load(), limited.Load(), conflicts.Load(), shed.Load())
	if replays.Load() == 0 || soldOut.Load() == 0 || limited.Load() == 0 || conflicts.Load() == 0 {
		t.Errorf("the load did not exercise every path")
	}
	apitest.VerifyInvariants(t, c, saleID, stock, perUser, l, true)
}
