package redisstock

// SoldOut reports whether c's local sold-out flag of the sale is set.
func SoldOut(c *Counters, saleID string) bool {
	v, ok := c.sales.Load(saleID)
	return ok && v.(*sale).soldOut()
}
