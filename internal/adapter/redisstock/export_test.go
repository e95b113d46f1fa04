package redisstock

import (
	"context"
	"time"
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
