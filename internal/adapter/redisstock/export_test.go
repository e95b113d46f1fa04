package redisstock

import (
	"context"
	"time"

	"github.com/spikehq/spike/internal/domain/inventory"
)

// SoldOut reports whether c's local sold-out flag of the sale is set.
func SoldOut(c *Counters, saleID string) bool {
	v, ok := c.sales.Load(saleID)
	return ok && v.(*saleState).soldOut()
}

// Enqueue queues background work for Run, as an undo or a confirm retry.
func Enqueue(c *Counters, after []time.Duration, fn func(ctx context.Context) error) {
	c.enqueue(job{after: after, fn: fn})
}

// Fenced reports whether c last found the sale's counters fenced (missing,
// incomplete or from another epoch) and has not yet seen them rebuilt.
func Fenced(c *Counters, saleID string) bool {
	v, ok := c.sales.Load(saleID)
	return ok && v.(*saleState).fenced.Load()
}

// Epoch returns the epoch of a sale's counters c trusts; 0 if none.
func Epoch(c *Counters, saleID string) int64 {
	v, ok := c.sales.Load(saleID)
	if !ok {
		return 0
	}
	return v.(*saleState).epoch.Load()
}

// ConfirmMany confirms batch as Run's confirmer does: one script call per sale.
func ConfirmMany(c *Counters, ctx context.Context, batch []inventory.Reservation) {
	c.confirmMany(ctx, batch)
}
