package sqlitestore

import (
	"context"
	"database/sql"
	"math/rand/v2"
	"slices"
	"sync"
)

// writeGate decides which write gets the single write connection next:
// the deadline sweep's (ExpireDue, and inserts marked
// order.WithDeadlineWork) first, in arrival order, but never two of them
// in a row while another write waits; the others in random order, as
// database/sql serves its waiters. Behind a few dozen waiting writes the
// sweep had waited 4 s for its turn and cancelled orders late (I6); why
// not arrival order for all, nor every insert first: docs/lifecycle.md.
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
	i := 0
	if q == &g.normal {
		i = rand.IntN(len(*q))
	}
	ch := (*q)[i]
	*q = slices.Delete(*q, i, i+1)
	g.lastUrgent = q == &g.urgent
	close(ch)
}

// writing takes the gate for one statement; done releases it.
func (s *Store) writing(ctx context.Context, urgent bool) (done func(), err error) {
	if err := s.gate.acquire(ctx, urgent); err != nil {
		return nil, err
	}
	return s.gate.release, nil
}

// beginWrite takes the gate and begins a write transaction; end rolls it
// back unless it was committed, then releases the gate.
func (s *Store) beginWrite(ctx context.Context, urgent bool) (tx *sql.Tx, end func(), err error) {
	done, err := s.writing(ctx, urgent)
	if err != nil {
		return nil, nil, err
	}
	if tx, err = s.w.BeginTx(ctx, nil); err != nil {
		done()
		return nil, nil, err
	}
	return tx, func() { tx.Rollback(); done() }, nil
}
