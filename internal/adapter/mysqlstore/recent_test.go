package mysqlstore

import (
	"testing"
	"time"
)

func TestRecentWriters(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := newRecentWriters(5 * time.Second)
	r.now = func() time.Time { return now }
	r.mark([]int64{1, 2})
	if !r.recent(1) || !r.recent(2) || r.recent(3) {
		t.Errorf("recent(1, 2, 3) = %v %v %v, want true true false", r.recent(1), r.recent(2), r.recent(3))
	}
	now = now.Add(5 * time.Second)
	if r.recent(1) {
		t.Errorf("recent(1) at the end of the window = true, want false")
	}
	// Memory stays bounded by the users of the last window.
	for round := range 10 {
		users := make([]int64, 3000)
		for i := range users {
			users[i] = int64(round*100_000 + i)
		}
		r.mark(users)
		now = now.Add(6 * time.Second)
	}
	if n := len(r.until); n > 2*3000+minSweep {
		t.Errorf("%d users remembered after 10 windows of 3000, want at most %d", n, 2*3000+minSweep)
	}
	off := newRecentWriters(-1)
	off.mark([]int64{1})
	if off.recent(1) {
		t.Errorf("with a negative window, recent() = true, want false")
	}
}
