package auth

import "time"

// SetClock makes h read the time from now (tests).
func SetClock(h *HS256, now func() time.Time) { h.now = now }
