// Package inventory keeps the stock counters of running sales: the hot path
// of a flash sale. One atomic Reserve checks the sale window, the buyer's
// per-user limit, the stock and the idempotency key, and then takes the
// units. Every sale has its own lock, so sales never contend with each
// other, and a sold-out sale answers from an atomic flag.
//
// The counters are not the record: they are rebuilt at start from the
// persisted orders plus the events still on the order stream (Restore).
package inventory

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spikehq/spike"
)

// Campaign is what the counters need to know of a sale.
type Campaign struct {
	ID           string
	SKU          string
	Allocated    int64
	PriceCents   int64
	PerUserLimit int64
	StartsAt     time.Time
	EndsAt       time.Time // zero: no end
}

// Request asks for Quantity units of a sale for a buyer, under an
// idempotency key.
type Request struct {
	SaleID   string
	UserID   int64
	Key      string
	Quantity int64
}

// Reservation is units held for a buyer. Its OrderID names the order that
// the reservation becomes.
type Reservation struct {
	OrderID    string
	SaleID     string
	SKU        string
	UserID     int64
	Key        string
	Quantity   int64
	PriceCents int64
	PlacedAt   time.Time
}

// Holding is a reservation found while rebuilding: a persisted order or an
// event still on the stream.
type Holding struct {
	OrderID  string
	UserID   int64
	Key      string
	Quantity int64
	PlacedAt time.Time
}

// Errors returned by Reserve.
var (
	ErrSaleNotFound = &spike.Error{Kind: spike.ErrNotFound, Message: "sale not found"}
	ErrSoldOut      = &spike.Error{Kind: spike.ErrSoldOut, Message: "no stock left for this quantity"}
	ErrLimit        = &spike.Error{Kind: spike.ErrLimitExceeded, Message: "this would exceed the per-user limit"}
	ErrNotActive    = &spike.Error{Kind: spike.ErrSaleNotActive, Message: "the sale is not active"}
	ErrKeyReused    = &spike.Error{Kind: spike.ErrConflict, Message: "this idempotency key was used with a different quantity"}
	ErrInProgress   = &spike.Error{Kind: spike.ErrUnavailable, Message: "a request with this idempotency key is still in progress"}
	ErrFenced       = &spike.Error{Kind: spike.ErrUnavailable, Message: "the sale's stock counters are being rebuilt"}
)

// holdKey identifies a buyer's request within one sale.
type holdKey struct {
	user int64
	key  string
}

// hold is what a sale remembers of one idempotency key; kept small, since
// a big sale holds one per buyer.
type hold struct {
	orderID   string
	quantity  int64
	placedAt  int64 // Unix microseconds
	confirmed bool  // durably enqueued: a replay may be answered
}

type saleStock struct {
	c       Campaign
	soldOut atomic.Bool // remaining == 0: reject without taking the lock

	mu        sync.RWMutex
	remaining int64
	users     map[int64]int64 // units held per buyer
	keys      map[holdKey]*hold
}

// Counters holds the stock of every open sale in process memory.
// It is safe for concurrent use.
type Counters struct {
	sales sync.Map // sale id → *saleStock
	ids   *spike.IDGenerator
	now   func() time.Time
}

// New returns empty counters that name new orders with ids.
func New(ids *spike.IDGenerator) *Counters {
	return &Counters{ids: ids, now: time.Now}
}

// SetClock replaces the clock; for tests.
func (c *Counters) SetClock(now func() time.Time) { c.now = now }

// Open starts counting a new sale with all of its units remaining. Opening
// a sale that is already open changes nothing.
func (c *Counters) Open(cp Campaign) {
	if c.sale(cp.ID) != nil {
		return
	}
	c.Restore(cp, nil)
}

// Restore (re)builds a sale's counters from its holdings: every live order
// and every not yet persisted event, each counted once by order id.
// It replaces whatever the counters held for the sale.
func (c *Counters) Restore(cp Campaign, holdings []Holding) {
	st := &saleStock{
		c:         cp,
		remaining: cp.Allocated,
		users:     make(map[int64]int64, len(holdings)),
		keys:      make(map[holdKey]*hold, len(holdings)),
	}
	seen := make(map[string]bool, len(holdings))
	for _, h := range holdings {
		if seen[h.OrderID] {
			continue
		}
		seen[h.OrderID] = true
		st.remaining -= h.Quantity
		st.users[h.UserID] += h.Quantity
		st.keys[holdKey{h.UserID, h.Key}] = &hold{orderID: h.OrderID, quantity: h.Quantity, placedAt: h.PlacedAt.UnixMicro(), confirmed: true}
	}
	st.soldOut.Store(st.remaining <= 0)
	c.sales.Store(cp.ID, st)
}

// Remaining returns the units a sale has left; ok is false if the sale is
// not open here.
func (c *Counters) Remaining(saleID string) (remaining int64, ok bool) {
	st := c.sale(saleID)
	if st == nil {
		return 0, false
	}
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.remaining, true
}

// Stats is a snapshot of one sale's counters, for audits.
type Stats struct {
	Allocated   int64
	Remaining   int64
	Held        int64 // units held by buyers
	Buyers      int
	MaxPerBuyer int64
}

// Stats returns a snapshot of a sale's counters.
func (c *Counters) Stats(saleID string) (Stats, bool) {
	st := c.sale(saleID)
	if st == nil {
		return Stats{}, false
	}
	st.mu.RLock()
	defer st.mu.RUnlock()
	s := Stats{Allocated: st.c.Allocated, Remaining: st.remaining, Buyers: len(st.users)}
	for _, n := range st.users {
		s.Held += n
		s.MaxPerBuyer = max(s.MaxPerBuyer, n)
	}
	return s, true
}

func (c *Counters) sale(id string) *saleStock {
	v, ok := c.sales.Load(id)
	if !ok {
		return nil
	}
	return v.(*saleStock)
}

// Reserve takes r.Quantity units of the sale for the buyer in one atomic
// step. A key that already holds a reservation returns it with replay set
// and changes nothing. ErrInProgress (a replay of a key whose reservation is
// not confirmed yet) comes with that reservation. Returns ErrSaleNotFound, ErrKeyReused, ErrInProgress,
// ErrNotActive, ErrLimit, ErrSoldOut, or an ErrInvalid error when the
// quantity is out of range.
func (c *Counters) Reserve(_ context.Context, r Request) (res Reservation, replay bool, err error) {
	st := c.sale(r.SaleID)
	if st == nil {
		return Reservation{}, false, ErrSaleNotFound
	}
	k := holdKey{r.UserID, r.Key}
	if st.soldOut.Load() {
		// Sold out: only a replay can succeed, and that needs a read lock only.
		// The quantity is checked first, as on the locked path (c is immutable).
		if r.Quantity < 1 || r.Quantity > st.c.PerUserLimit {
			return Reservation{}, false, st.invalidQuantity()
		}
		st.mu.RLock()
		h := st.keys[k]
		var hc hold
		if h != nil {
			hc = *h
		}
		st.mu.RUnlock()
		if h == nil {
			return Reservation{}, false, ErrSoldOut
		}
		return st.replay(r, hc)
	}

	st.mu.Lock()
	defer st.mu.Unlock()
	if h := st.keys[k]; h != nil {
		return st.replay(r, *h)
	}
	if r.Quantity < 1 || r.Quantity > st.c.PerUserLimit {
		return Reservation{}, false, st.invalidQuantity()
	}
	now := c.now()
	if now.Before(st.c.StartsAt) || (!st.c.EndsAt.IsZero() && !now.Before(st.c.EndsAt)) {
		return Reservation{}, false, ErrNotActive
	}
	held := st.users[r.UserID]
	if held+r.Quantity > st.c.PerUserLimit {
		return Reservation{}, false, ErrLimit
	}
	if st.remaining < r.Quantity {
		return Reservation{}, false, ErrSoldOut
	}
	st.remaining -= r.Quantity
	if st.remaining == 0 {
		st.soldOut.Store(true)
	}
	st.users[r.UserID] = held + r.Quantity
	placed := now.UTC().Truncate(time.Microsecond)
	h := &hold{orderID: c.ids.New(), quantity: r.Quantity, placedAt: placed.UnixMicro()}
	st.keys[k] = h
	return st.reservation(r, *h), false, nil
}

func (st *saleStock) invalidQuantity() error {
	return spike.Errorf(spike.ErrInvalid, "quantity must be between 1 and the per-user limit (%d)", st.c.PerUserLimit)
}

func (st *saleStock) replay(r Request, h hold) (Reservation, bool, error) {
	switch {
	case h.quantity != r.Quantity:
		return Reservation{}, false, ErrKeyReused
	case !h.confirmed:
		// The reservation goes with the error, so the caller can check
		// whether its event is stored after all.
		return st.reservation(r, h), false, ErrInProgress
	}
	return st.reservation(r, h), true, nil
}

func (st *saleStock) reservation(r Request, h hold) Reservation {
	return Reservation{
		OrderID:    h.orderID,
		SaleID:     st.c.ID,
		SKU:        st.c.SKU,
		UserID:     r.UserID,
		Key:        r.Key,
		Quantity:   h.quantity,
		PriceCents: st.c.PriceCents,
		PlacedAt:   time.UnixMicro(h.placedAt).UTC(),
	}
}

// Confirm marks a reservation as durably recorded, so that replays of its
// key are answered with it.
func (c *Counters) Confirm(_ context.Context, res Reservation) error {
	st := c.sale(res.SaleID)
	if st == nil {
		return nil
	}
	st.mu.Lock()
	if h := st.keys[holdKey{res.UserID, res.Key}]; h != nil && h.orderID == res.OrderID {
		h.confirmed = true
	}
	st.mu.Unlock()
	return nil
}

// Release gives a reservation's units back to the sale and forgets its key,
// as if the request had never been made. It is for reservations that were
// never durably recorded; releasing twice changes nothing.
func (c *Counters) Release(_ context.Context, res Reservation) error {
	st := c.sale(res.SaleID)
	if st == nil {
		return nil
	}
	k := holdKey{res.UserID, res.Key}
	st.mu.Lock()
	defer st.mu.Unlock()
	h := st.keys[k]
	if h == nil || h.orderID != res.OrderID {
		return nil
	}
	delete(st.keys, k)
	st.users[res.UserID] -= h.quantity
	if st.users[res.UserID] <= 0 {
		delete(st.users, res.UserID)
	}
	st.remaining += h.quantity
	if st.remaining > 0 {
		st.soldOut.Store(false)
	}
	return nil
}
