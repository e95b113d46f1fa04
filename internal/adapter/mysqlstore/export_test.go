package mysqlstore

import "time"

// SetNow replaces the clock of the read-your-writes window.
func SetNow(s *Store, now func() time.Time) { s.ryw.now = now }
