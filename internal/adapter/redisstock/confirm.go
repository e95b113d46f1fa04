package redisstock

import (
	"context"
	"sync"

	"github.com/redis/rueidis"

	"github.com/spikehq/spike/internal/domain/inventory"
)

// Deferred confirms. A placement's confirm only tells later replays of its
// key that the order is durable; the placement itself is acknowledged by
// the stream. So order.Service hands confirms to ConfirmLater and answers
// 202 without waiting, and Run's confirmer sends whatever has queued while
// its previous call was in flight as one script call per sale: under load a
// placement costs one reserve script plus a share of a confirm script,
// instead of two scripts and two round trips.
//
// Until its confirm lands a key answers ErrInProgress, as it did between
// the stream's ack and the confirm before; order.Service then finds the
// event on the stream (or persisted) and answers the order (and confirms).
// A confirm lost with its instance is settled the same way.

// confirmBatch bounds the reservations of one confirm call.
const confirmBatch = 512

// confirmManyScript marks many holds of one sale confirmed, each only if
// its key still maps to its order and it is still only reserved.
// KEYS: keys
// ARGV: field1 orderid1 field2 orderid2 ...
var confirmManyScript = rueidis.NewLuaScript(`
local n = 0
for i = 1, #ARGV, 2 do
  local h = redis.call('HGET', KEYS[1], ARGV[i])
  if h and string.sub(h, 1, #ARGV[i + 1] + 1) == ARGV[i + 1] .. '|' and string.sub(h, -1) == '0' then
    redis.call('HSET', KEYS[1], ARGV[i], string.sub(h, 1, -2) .. '1')
    n = n + 1
  end
end
return n
`)

// ConfirmLater queues res for Run's confirmer and returns at once. Without
// a running Run, or with the queue full, it confirms at once instead (as
// Confirm, errors logged by nobody: a failed confirm only delays replays).
func (c *Counters) ConfirmLater(ctx context.Context, res inventory.Reservation) {
	if c.confirming.Load() {
		select {
		case c.confirms <- res:
			return
		default:
		}
	}
	_ = c.Confirm(ctx, res)
}

// runConfirmer sends queued confirms until ctx is done, then sends what is
// still queued within drain.
func (c *Counters) runConfirmer(ctx, drain context.Context) {
	c.confirming.Store(true)
	batch := make([]inventory.Reservation, 0, confirmBatch)
	for {
		batch = batch[:0]
		select {
		case res := <-c.confirms:
			batch = append(batch, res)
		case <-ctx.Done():
			c.confirming.Store(false)
			c.drainConfirms(drain, batch)
			return
		}
	fill:
		for len(batch) < confirmBatch {
			select {
			case res := <-c.confirms:
				batch = append(batch, res)
			default:
				break fill
			}
		}
		c.confirmMany(ctx, batch)
	}
}

// drainConfirms sends the confirms queued when Run stops. Callers of
// ConfirmLater that saw the confirmer running just before it stopped may
// still add some; the queue is read until it stays empty.
func (c *Counters) drainConfirms(ctx context.Context, batch []inventory.Reservation) {
	for ctx.Err() == nil {
		batch = batch[:0]
	fill:
		for len(batch) < confirmBatch {
			select {
			case res := <-c.confirms:
				batch = append(batch, res)
			default:
				break fill
			}
		}
		if len(batch) == 0 {
			return
		}
		c.confirmMany(ctx, batch)
	}
}

// confirmMany confirms batch with one script call per sale, the calls of
// different sales sent at once. A call that fails without a Redis error
// reply (in doubt, or never sent) is retried by Run's workers, one
// reservation at a time, as Confirm does.
func (c *Counters) confirmMany(ctx context.Context, batch []inventory.Reservation) {
	bySale := make(map[string][]inventory.Reservation, 1)
	for _, res := range batch {
		bySale[res.SaleID] = append(bySale[res.SaleID], res)
	}
	var wg sync.WaitGroup
	for id, group := range bySale {
		send := func() {
			args := make([]string, 0, 2*len(group))
			for _, res := range group {
				args = append(args, field(res.UserID, res.Key), res.OrderID)
			}
			err := c.exec(ctx, confirmManyScript, []string{c.keysFor(id).keys}, args...).Error()
			if err != nil && !isRedisErr(err) {
				for _, res := range group {
					c.enqueue(job{fn: func(ctx context.Context) error { return c.confirm(ctx, res) }})
				}
			}
		}
		if len(bySale) == 1 {
			send()
			break
		}
		wg.Go(send)
	}
	wg.Wait()
}
