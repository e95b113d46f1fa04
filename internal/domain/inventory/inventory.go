// Package inventory keeps the stock counters of running sales: the hot path
// of a flash sale. One atomic Reserve checks the sale window, the buyer's
// per-user limit, the stock and the idempotency key, and then takes the
// units.
//
// [Stock] is the one interface of the counters; two implementations keep
// the same rules (internal/testkit/stocktest holds them once): [Counters],
// in process (embedded mode, one instance), and redisstock.Counters, in
// Redis (clustered mode, any number of instances).
//
// The counters are not the record: they are rebuilt from the persisted
// orders plus the events still on the order stream (Restore; see package
// ledger).
package inventory

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/sale"
)

// Stock is the stock counters of running sales. Its methods are safe for
// concurrent use.
type Stock interface {
	// Open starts counting a new sale with all of its units (s.Stock)
	// remaining. Opening a sale that is already open changes nothing. It is
	// for new sales, never to recover one: recovery is Restore's job.
	Open(ctx context.Context, s sale.Sale) error
	// End moves the end of an open sale's window to at (unless it ends
	// earlier already): no reservation is taken from then on, on any
	// instance, and its remaining units no longer change (Return fails
	// with ErrSaleEnded).
	End(ctx context.Context, saleID string, at time.Time) error
	// Reserve takes r.Quantity units of the sale for the buyer in one
	// atomic step: window, per-user limit, stock and idempotency key. A key
	// that already holds a reservation returns it with replay set and
	// changes nothing; an unconfirmed one is ErrInProgress, which comes
	// with that reservation. Returns sale.ErrSaleNotFound, ErrKeyReused,
	// ErrInProgress, ErrNotActive, ErrLimit, ErrSoldOut, or an ErrInvalid
	// error when the quantity is out of range (implementations may add
	// ErrFenced and unavailability errors).
	Reserve(ctx context.Context, r Request) (res Reservation, replay bool, err error)
	// Confirm marks a reservation as durably recorded, so that replays of
	// its key are answered with it.
	Confirm(ctx context.Context, res Reservation) error
	// Release gives a reservation's units back and forgets its key, as if
	// the request had never been made. It is for reservations that were
	// never durably recorded; releasing twice, or releasing a reservation
	// that was returned, changes nothing.
	Release(ctx context.Context, res Reservation) error
	// Return gives the units of a recorded order that was cancelled back to
	// its sale, once: returned is false when the order was returned before
	// (by Return or by a Restore that found it not live). The buyer's held
	// units go down, remaining goes up and the units are sellable at once
	// (every instance drops its sold-out flag), but the buyer's idempotency
	// key keeps answering its replay with the order. Mark the order
	// cancelled in the record before calling Return, so that a rebuild in
	// between counts it returned. Returns ErrNotOpen when the sale's counters
	// are not open (give the units back to the product instead), ErrNotHeld
	// when they hold no such order.
	Return(ctx context.Context, r Return) (returned bool, err error)
	// Remaining returns the units a sale has left; ok is false while its
	// counters are not open (unknown, or being rebuilt).
	Remaining(ctx context.Context, saleID string) (remaining int64, ok bool, err error)
	// Stats returns a snapshot of a sale's counters, for audits; ok as for
	// Remaining.
	Stats(ctx context.Context, saleID string) (st Stats, ok bool, err error)
	// Restore replaces a sale's counters with ones rebuilt from its
	// holdings: every order of the record and every not yet persisted
	// event, each counted once by order id. Holdings marked Returned hold
	// no units, but their keys still replay and a later Return of them
	// changes nothing. Use it when nothing else places orders for the sale
	// (at start, in tests); clustered counters recover with Rebuilder.
	Restore(ctx context.Context, s sale.Sale, holdings []Holding) error
}

// Rebuilder is implemented by counters shared between instances, which
// fence a sale whose counters were lost and rebuild it while others may be
// placing orders (see redisstock.Counters.Rebuild).
type Rebuilder interface {
	// Rebuild recovers a fenced sale from the holdings that load reads,
	// unless another instance did or does; rebuilt reports whether this call
	// wrote the counters.
	Rebuild(ctx context.Context, s sale.Sale, load func(ctx context.Context) ([]Holding, error)) (rebuilt bool, err error)
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

// Holding is an order found while rebuilding: a persisted order or an event
// still on the stream.
type Holding struct {
	OrderID  string
	UserID   int64
	Key      string
	Quantity int64
	PlacedAt time.Time
	// Returned: the order no longer holds its units (cancelled or
	// refunded); its key still replays it.
	Returned bool
}

// Return gives back the units of a cancelled order: the order's id, buyer,
// idempotency key and quantity, as placed.
type Return struct {
	SaleID   string
	OrderID  string
	UserID   int64
	Key      string
	Quantity int64
}

// Stats is a snapshot of one sale's counters, for audits.
type Stats struct {
	Allocated   int64
	Remaining   int64
	Held        int64 // units held by buyers
	Buyers      int
	MaxPerBuyer int64
}

// Errors of the stock counters. An unknown sale is sale.ErrSaleNotFound.
var (
	ErrSoldOut    = &spike.Error{Kind: spike.ErrSoldOut, Message: "no stock left for this quantity"}
	ErrLimit      = &spike.Error{Kind: spike.ErrLimitExceeded, Message: "this would exceed the per-user limit"}
	ErrNotActive  = &spike.Error{Kind: spike.ErrSaleNotActive, Message: "the sale is not active"}
	ErrKeyReused  = &spike.Error{Kind: spike.ErrConflict, Message: "this idempotency key was used with a different quantity"}
	ErrInProgress = &spike.Error{Kind: spike.ErrUnavailable, Message: "a request with this idempotency key is still in progress"}
	ErrFenced     = &spike.Error{Kind: spike.ErrUnavailable, Message: "the sale's stock counters are being rebuilt"}
	// ErrNotOpen: Return found no open counters for the sale; its units go
	// back to the product.
	ErrNotOpen = &spike.Error{Kind: spike.ErrNotFound, Message: "the sale's stock counters are not open"}
	// ErrSaleEnded: Return came after the sale's end, when its remaining
	// units no longer change (they are settled to the product); the
	// order's units go back to the product instead.
	ErrSaleEnded = &spike.Error{Kind: spike.ErrSaleNotActive, Message: "the sale has ended: its units go back to the product"}
	// ErrNotHeld: Return named an order whose key does not hold it (never
	// placed through these counters, or another quantity).
	ErrNotHeld = &spike.Error{Kind: spike.ErrConflict, Message: "the sale's stock counters hold no such order"}
)

var _ Stock = (*Counters)(nil)

type saleStock struct {
	s       sale.Sale
	soldOut atomic.Bool // remaining == 0: reject without taking the lock

	mu        sync.RWMutex
	remaining int64
	users     map[int64]int64     // units held per buyer
	holds     *holdTable          // one record per idempotency key; the seeds of its hash never change
	returned  map[string]struct{} // order ids given back; nil until the first
}

// Counters holds the stock of every open sale in process memory: the
// embedded mode's Stock. It is safe for concurrent use.
type Counters struct {
	sales sync.Map // sale id → *saleStock
	ids   *spike.IDGenerator
	now   func() time.Time
}

// New returns empty counters that name new orders with ids.
func New(ids *spike.IDGenerator) *Counters {
	return &Counters{ids: ids, now: time.Now}
}

// Open implements Stock.
func (c *Counters) Open(ctx context.Context, s sale.Sale) error {
	if c.sale(s.ID) != nil {
		return nil
	}
	return c.Restore(ctx, s, nil)
}

// End implements Stock.
func (c *Counters) End(_ context.Context, saleID string, at time.Time) error {
	st := c.sale(saleID)
	if st == nil {
		return ErrNotOpen
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.s.EndsAt.IsZero() || at.Before(st.s.EndsAt) {
		st.s.EndsAt = at
	}
	return nil
}

// Restore implements Stock.
func (c *Counters) Restore(_ context.Context, s sale.Sale, holdings []Holding) error {
	st := &saleStock{
		s:         s,
		remaining: s.Stock,
		users:     make(map[int64]int64, len(holdings)),
		holds:     newHoldTable(len(holdings)),
	}
	seen := make(map[string]bool, len(holdings))
	for _, h := range holdings {
		if seen[h.OrderID] {
			continue
		}
		seen[h.OrderID] = true
		flags := uint32(flagConfirmed)
		if h.Returned {
			flags |= flagReturned
		}
		raw, ok := spike.ParseID(h.OrderID)
		st.holds.put(h.UserID, st.holds.hash(h.Key), raw, ok, h.OrderID, h.Quantity, h.PlacedAt.UnixMicro(), flags)
		if h.Returned {
			if st.returned == nil {
				st.returned = make(map[string]struct{})
			}
			st.returned[h.OrderID] = struct{}{}
			continue
		}
		st.remaining -= h.Quantity
		st.users[h.UserID] += h.Quantity
	}
	st.soldOut.Store(st.remaining <= 0)
	c.sales.Store(s.ID, st)
	return nil
}

// Remaining implements Stock.
func (c *Counters) Remaining(_ context.Context, saleID string) (remaining int64, ok bool, err error) {
	st := c.sale(saleID)
	if st == nil {
		return 0, false, nil
	}
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.remaining, true, nil
}

// Stats implements Stock.
func (c *Counters) Stats(_ context.Context, saleID string) (Stats, bool, error) {
	st := c.sale(saleID)
	if st == nil {
		return Stats{}, false, nil
	}
	st.mu.RLock()
	defer st.mu.RUnlock()
	s := Stats{Allocated: st.s.Stock, Remaining: st.remaining, Buyers: len(st.users)}
	for _, n := range st.users {
		s.Held += n
		s.MaxPerBuyer = max(s.MaxPerBuyer, n)
	}
	return s, true, nil
}

func (c *Counters) sale(id string) *saleStock {
	v, ok := c.sales.Load(id)
	if !ok {
		return nil
	}
	return v.(*saleStock)
}

// Reserve implements Stock. A sold-out sale answers from an atomic flag,
// taking a read lock only for a replay.
func (c *Counters) Reserve(_ context.Context, r Request) (res Reservation, replay bool, err error) {
	st := c.sale(r.SaleID)
	if st == nil {
		return Reservation{}, false, sale.ErrSaleNotFound
	}
	k := st.holds.hash(r.Key)
	if st.soldOut.Load() {
		// Sold out: only a replay can succeed, and that needs a read lock only.
		// The quantity is checked first, as on the locked path (s is immutable).
		if r.Quantity < 1 || r.Quantity > st.s.PerUserLimit {
			return Reservation{}, false, st.invalidQuantity()
		}
		st.mu.RLock()
		e, ok := st.holds.get(r.UserID, k)
		st.mu.RUnlock()
		if !ok {
			return Reservation{}, false, ErrSoldOut
		}
		return st.replay(r, e)
	}

	st.mu.Lock()
	e, found, err := st.take(c, r, k)
	st.mu.Unlock()
	switch {
	case found:
		return st.replay(r, e)
	case err != nil:
		return Reservation{}, false, err
	}
	return st.reservation(r, e), false, nil
}

// take takes the units of a new reservation, or finds the key's; st.mu is
// held.
func (st *saleStock) take(c *Counters, r Request, k keyHash) (e entry, found bool, err error) {
	if e, ok := st.holds.get(r.UserID, k); ok {
		return e, true, nil
	}
	if r.Quantity < 1 || r.Quantity > st.s.PerUserLimit {
		return entry{}, false, st.invalidQuantity()
	}
	now := c.now()
	if !st.s.ActiveAt(now) {
		return entry{}, false, ErrNotActive
	}
	held := st.users[r.UserID]
	if held+r.Quantity > st.s.PerUserLimit {
		return entry{}, false, ErrLimit
	}
	if st.remaining < r.Quantity {
		return entry{}, false, ErrSoldOut
	}
	st.remaining -= r.Quantity
	if st.remaining == 0 {
		st.soldOut.Store(true)
	}
	st.users[r.UserID] = held + r.Quantity
	e = entry{order: c.ids.NewRaw(), quantity: r.Quantity, placedAt: now.UTC().Truncate(time.Microsecond).UnixMicro()}
	st.holds.insert(r.UserID, k, e.order, true, "", e.quantity, e.placedAt, 0)
	return e, false, nil
}

func (st *saleStock) invalidQuantity() error {
	return spike.Errorf(spike.ErrInvalid, "quantity must be between 1 and the per-user limit (%d)", st.s.PerUserLimit)
}

func (st *saleStock) replay(r Request, e entry) (Reservation, bool, error) {
	switch {
	case e.quantity != r.Quantity:
		return Reservation{}, false, ErrKeyReused
	case !e.confirmed:
		// The reservation goes with the error, so the caller can check
		// whether its event is stored after all.
		return st.reservation(r, e), false, ErrInProgress
	}
	return st.reservation(r, e), true, nil
}

func (st *saleStock) reservation(r Request, e entry) Reservation {
	return Reservation{
		OrderID:    e.orderID(),
		SaleID:     st.s.ID,
		SKU:        st.s.SKU,
		UserID:     r.UserID,
		Key:        r.Key,
		Quantity:   e.quantity,
		PriceCents: st.s.PriceCents,
		PlacedAt:   time.UnixMicro(e.placedAt).UTC(),
	}
}

// Confirm implements Stock.
func (c *Counters) Confirm(_ context.Context, res Reservation) error {
	st := c.sale(res.SaleID)
	if st == nil {
		return nil
	}
	k := st.holds.hash(res.Key)
	st.mu.Lock()
	if rec, _, ok := st.holds.find(res.UserID, k); ok && st.holds.sameOrder(rec, res.OrderID) {
		st.holds.setFlags(rec, flagConfirmed)
	}
	st.mu.Unlock()
	return nil
}

// Release implements Stock.
func (c *Counters) Release(_ context.Context, res Reservation) error {
	st := c.sale(res.SaleID)
	if st == nil {
		return nil
	}
	k := st.holds.hash(res.Key)
	st.mu.Lock()
	defer st.mu.Unlock()
	rec, slot, ok := st.holds.find(res.UserID, k)
	if !ok || !st.holds.sameOrder(rec, res.OrderID) || st.holds.flagsOf(rec)&flagReturned != 0 {
		return nil
	}
	n := st.holds.quantity(rec)
	st.holds.remove(rec, slot)
	st.give(res.UserID, n)
	return nil
}

// give moves n units of user back to the sale; st.mu is held.
func (st *saleStock) give(user, n int64) {
	st.users[user] -= n
	if st.users[user] <= 0 {
		delete(st.users, user)
	}
	st.remaining += n
	if st.remaining > 0 {
		st.soldOut.Store(false)
	}
}

// Return implements Stock.
func (c *Counters) Return(_ context.Context, r Return) (bool, error) {
	st := c.sale(r.SaleID)
	if st == nil {
		return false, ErrNotOpen
	}
	k := st.holds.hash(r.Key)
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, done := st.returned[r.OrderID]; done {
		return false, nil
	}
	if !st.s.EndsAt.IsZero() && !c.now().Before(st.s.EndsAt) {
		return false, ErrSaleEnded
	}
	rec, _, ok := st.holds.find(r.UserID, k)
	if !ok || !st.holds.sameOrder(rec, r.OrderID) || st.holds.quantity(rec) != r.Quantity {
		return false, ErrNotHeld
	}
	st.holds.setFlags(rec, flagReturned|flagConfirmed) // recorded: its key replays it
	if st.returned == nil {
		st.returned = make(map[string]struct{})
	}
	st.returned[r.OrderID] = struct{}{}
	st.give(r.UserID, r.Quantity)
	return true, nil
}
