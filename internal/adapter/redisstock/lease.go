package redisstock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/order"
)

var _ order.Leases = (*Lease)(nil)

// Lease is an instance's lease in Redis: a key named after the node its
// order ids carry (spike.IDGenerator.Node), set with a TTL and renewed
// while the instance lives. When the instance dies the key expires, and
// every other instance can tell that the reservations it left unconfirmed
// will never have their events stored (order.Leases).
//
// The instance itself publishes only while it holds the lease with at
// least half its TTL to spare, measured on its own monotonic clock from
// the moment it sent the last successful renewal, which is before Redis
// ran it: by the time Redis lets the key expire, the instance stopped
// publishing under it half a TTL earlier.
//
// A renewal only extends a key that still exists (SET XX). If it is gone
// (Redis lost it, or it expired while the instance could not reach Redis)
// another instance may already have freed the units of this instance's
// unconfirmed reservations, so the instance never publishes under that
// node again: it takes a fresh node (the id generator's) and a new lease.
type Lease struct {
	client rueidis.Client
	ids    *spike.IDGenerator
	prefix string
	ttl    time.Duration
	log    *slog.Logger
	held   atomic.Pointer[held]
	lost   atomic.Uint64

	// OnNewNode, if set, is called with the fresh node after a lost lease,
	// before the new lease is taken (and so before any event of the new
	// node is published): the bus answers lookups for it. If it fails, the
	// new lease is not taken; the next renewal tries another node. Set it
	// before Run.
	OnNewNode func(node string) error
}

// held is a lease this instance holds: its node and when it stops
// publishing under it (monotonic).
type held struct {
	node  string
	until time.Time
}

// DefaultLeaseTTL is the lease's TTL when none is given: a dead instance's
// reservations are settled by a replay about this long after its death.
const DefaultLeaseTTL = 5 * time.Second

// NewLease returns the lease of the instance whose order ids ids makes,
// with keys under prefix (empty: "spike") and the given TTL (zero:
// DefaultLeaseTTL). Acquire it before serving; Run renews it.
func NewLease(client rueidis.Client, ids *spike.IDGenerator, prefix string, ttl time.Duration, log *slog.Logger) *Lease {
	if prefix == "" {
		prefix = "spike"
	}
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	return &Lease{client: client, ids: ids, prefix: prefix, ttl: ttl, log: log}
}

func (l *Lease) key(node string) string { return l.prefix + ":lease:" + node }

// Acquire takes a lease under the id generator's current node (or, should
// that key exist, under a fresh node).
func (l *Lease) Acquire(ctx context.Context) error {
	node := l.ids.Node()
	for range 3 {
		start := time.Now()
		err := l.client.Do(ctx, l.client.B().Set().Key(l.key(node)).Value("1").Nx().Px(l.ttl).Build()).Error()
		switch {
		case err == nil:
			l.held.Store(&held{node: node, until: start.Add(l.ttl)})
			return nil
		case rueidis.IsRedisNil(err):
			node = l.ids.NewNode() // taken: another instance drew the same 48 bits
		default:
			return fmt.Errorf("acquire the instance lease: %w", err)
		}
	}
	return errors.New("acquire the instance lease: three nodes taken")
}

// Run renews the lease every fifth of its TTL until ctx is done. The key
// is left to expire then: the instance's work has stopped by the time Run
// is stopped, and a replay waits at most a TTL.
func (l *Lease) Run(ctx context.Context) error {
	t := time.NewTicker(l.ttl / 5)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			l.renew(ctx)
		}
	}
}

func (l *Lease) renew(ctx context.Context) {
	h := l.held.Load()
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, l.ttl/5)
	defer cancel()
	err := l.client.Do(ctx, l.client.B().Set().Key(l.key(h.node)).Value("1").Xx().Px(l.ttl).Build()).Error()
	switch {
	case err == nil:
		l.held.Store(&held{node: h.node, until: start.Add(l.ttl)})
	case rueidis.IsRedisNil(err):
		// The key is gone: nobody may count on this instance publishing
		// anything it reserved under that node any more. Go on as a new
		// node; what it left unconfirmed is settled by replays.
		l.lost.Add(1)
		node := l.ids.NewNode()
		l.log.Warn("instance lease lost; continuing under a new node", "lost", h.node, "node", node)
		l.held.Store(&held{node: node}) // not held until the new key is set
		if l.OnNewNode != nil {
			if err := l.OnNewNode(node); err != nil {
				l.log.Warn("prepare a new node", "node", node, "err", err)
				return
			}
		}
		start = time.Now()
		if err := l.client.Do(ctx, l.client.B().Set().Key(l.key(node)).Value("1").Nx().Px(l.ttl).Build()).Error(); err == nil {
			l.held.Store(&held{node: node, until: start.Add(l.ttl)})
		} else {
			l.log.Warn("take a new instance lease", "node", node, "err", err)
		}
	default:
		// Redis does not answer: the lease runs down; placements stop
		// publishing at half of it (Owns) and resume if a renewal lands.
		l.log.Warn("renew the instance lease", "node", h.node, "err", err)
	}
}

// Node returns the node of the lease this instance holds (or is taking).
func (l *Lease) Node() string {
	if h := l.held.Load(); h != nil {
		return h.node
	}
	return ""
}

// Lost returns how many times the lease was found gone at renewal.
func (l *Lease) Lost() uint64 { return l.lost.Load() }

// Owns reports whether this instance may publish the order's event: the
// id carries the node of the lease it holds, with at least half the TTL
// left.
func (l *Lease) Owns(orderID string) bool {
	h := l.held.Load()
	if h == nil || time.Until(h.until) < l.ttl/2 {
		return false
	}
	node, ok := spike.IDNode(orderID)
	return ok && node == h.node
}

// Alive reports whether the lease of the instance that made the order id
// still exists. An id that names no node (not one of ours) is reported
// alive: nothing is known of it, so nothing may be released on its
// account.
func (l *Lease) Alive(ctx context.Context, orderID string) (bool, error) {
	node, ok := spike.IDNode(orderID)
	if !ok {
		return true, nil
	}
	n, err := l.client.Do(ctx, l.client.B().Exists().Key(l.key(node)).Build()).AsInt64()
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return n == 1, nil
}
