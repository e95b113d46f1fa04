package spike

import "time"

// NewIDGeneratorWithClock returns a generator whose ids encode the times
// now returns; for tests of the time order of ids.
func NewIDGeneratorWithClock(now func() time.Time) *IDGenerator {
	g := NewIDGenerator()
	g.now = now
	return g
}
