package mysqlstore

import (
	"sync"
	"time"
)

// recentWriters remembers, for a short window, which users had orders
// written through this Store, so that their own listings are read from the
// primary (read-your-writes) while a replica may not have the rows yet.
// Memory is bounded by the users written in the last window, amortised:
// expired entries are swept whenever the map has doubled since the last
// sweep. It is safe for concurrent use.
type recentWriters struct {
	window time.Duration
	now    func() time.Time

	mu        sync.Mutex
	until     map[int64]time.Time
	nextSweep int
}

const minSweep = 1024

func newRecentWriters(window time.Duration) *recentWriters {
	return &recentWriters{window: window, now: time.Now, until: make(map[int64]time.Time), nextSweep: minSweep}
}

// mark records that the users had a write now.
func (r *recentWriters) mark(users []int64) {
	if r.window <= 0 || len(users) == 0 {
		return
	}
	until := r.now().Add(r.window)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range users {
		r.until[u] = until
	}
	if len(r.until) >= r.nextSweep {
		now := r.now()
		for u, t := range r.until {
			if !now.Before(t) {
				delete(r.until, u)
			}
		}
		r.nextSweep = max(minSweep, 2*len(r.until))
	}
}

// recent reports whether the user had a write within the window.
func (r *recentWriters) recent(user int64) bool {
	if r.window <= 0 {
		return false
	}
	r.mu.Lock()
	t, ok := r.until[user]
	r.mu.Unlock()
	return ok && r.now().Before(t)
}
