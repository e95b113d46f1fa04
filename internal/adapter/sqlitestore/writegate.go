package sqlitestore

import (
	"context"
	"slices"
	"sync"
)

// writeGate decides which write gets the single write connection next.
// database/sql hands a freed connection to a random waiter, so with a few
// dozen writers waiting (payments, cancels, webhooks, stock returns under
// load) one of them could wait seconds: the deadline sweep waited 4 s to
// find nothing due, and the order workers' inserts looked slow enough to
// open their breaker, both in a loaded test run. The gate serves writers
// in arrival order, urgent ones (the deadline sweep, persisting
// acknowledged orders) first, but never two urgent writes in a row while
// others wait, so that neither class starves the other.
type writeGate struct {
	mu         sync.Mutex
	held       bool
	lastUrgent bool
	urgent     []chan struct{}
	normal     []chan struct{}
}

// acquire waits for the connection's turn; release must follow a nil
// error.
func (g *writeGate) acquire(ctx context.Context, urgent bool) error {
	g.mu.Lock()
	if !g.held {
		g.held, g.lastUrgent = true, urgent
		g.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	q := &g.normal
	if urgent {
		q = &g.urgent
	}
	*q = append(*q, ch)
	g.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		g.mu.Lock()
		if i := slices.Index(*q, ch); i >= 0 {
			*q = slices.Delete(*q, i, i+1)
			g.mu.Unlock()
			return ctx.Err()
		}
		g.mu.Unlock()
		g.release() // handed over as ctx ended: pass it on
		return ctx.Err()
	}
}

// release hands the connection to the next writer, if one waits.
func (g *writeGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	q := &g.urgent
	if len(g.urgent) == 0 || (g.lastUrgent && len(g.normal) > 0) {
		q = &g.normal
	}
	if len(*q) == 0 {
		g.held = false
		return
	}
	ch := (*q)[0]
	(*q)[0] = nil
	*q = (*q)[1:]
	g.lastUrgent = q == &g.urgent
	close(ch)
}

// writing takes the gate for one write; the returned func releases it.
func (s *Store) writing(ctx context.Context, urgent bool) (done func(), err error) {
	if err := s.gate.acquire(ctx, urgent); err != nil {
		return nil, err
	}
	return s.gate.release, nil
}
