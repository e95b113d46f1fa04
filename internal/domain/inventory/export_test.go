package inventory

import "time"

// SetClock replaces the clock of c.
func SetClock(c *Counters, now func() time.Time) { c.now = now }
