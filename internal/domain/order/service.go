package order

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/inventory"
)

// Reserver holds and releases stock; *inventory.Counters is one.
type Reserver interface {
	// Reserve takes stock atomically (see inventory.Counters.Reserve).
	Reserve(ctx context.Context, r inventory.Request) (res inventory.Reservation, replay bool, err error)
	// Confirm marks a reservation durably enqueued, so replays of its key
	// are answered with it.
	Confirm(ctx context.Context, res inventory.Reservation) error
	// Release undoes a reservation that was never enqueued.
	Release(ctx context.Context, res inventory.Reservation) error
}

// LaterConfirmer is a Reserver that can confirm in the background
// (batched with other confirms, as redisstock does): Place answers once the
// stream acknowledged the event, without waiting for the confirm. Until it
// lands a replay of the key finds the reservation unconfirmed and answers
// from the stream (see Place), so nothing a client sees changes.
type LaterConfirmer interface {
	ConfirmLater(ctx context.Context, res inventory.Reservation)
}

// PendingLookup finds an acknowledged order that is not yet persisted, by
// id, wherever it was placed; the stream is one.
type PendingLookup interface {
	Placed(ctx context.Context, orderID string) (Placed, bool, error)
}

// Leases say which instance may still publish a reservation's event, in a
// clustered deployment: every instance holds a lease named after the node
// its order ids carry (spike.IDNode), renews it while it lives and
// publishes only under a lease it holds with time to spare. A dead
// instance's lease expires, and from then on nothing can store its
// unconfirmed reservations' events: a replay of such a key settles it at
// once instead of waiting AbandonAfter. redisstock.Lease is one.
type Leases interface {
	// Owns reports whether this instance may publish the event of the
	// order: it made the id under the lease it holds now, with time to
	// spare before that lease could expire.
	Owns(orderID string) bool
	// Alive reports whether the instance that made the order id still
	// holds its lease. false means the lease certainly expired (or never
	// existed); an error means it is not known.
	Alive(ctx context.Context, orderID string) (bool, error)
}

// ErrLeaseLost is returned by Place when this instance no longer holds the
// lease its reservation was made under: it may not publish (another
// instance may already have released the units), so nothing was placed.
var ErrLeaseLost = &spike.Error{Kind: spike.ErrUnavailable, Message: "this instance lost its lease; nothing was placed"}

// Service places, persists and reads orders. It is safe for concurrent use.
type Service struct {
	reserver Reserver
	stream   Stream
	store    Store
	// Lookup, if set, finds orders placed through other instances and not
	// yet persisted (clustered mode).
	Lookup  PendingLookup
	log     *slog.Logger
	pending pendingIndex

	// EnqueueTimeout bounds one enqueue attempt. If zero, 5s is used.
	EnqueueTimeout time.Duration
	// AbandonAfter is when an unconfirmed reservation whose event is not
	// durable counts as abandoned (its instance died before enqueueing):
	// a replay of its key then releases it and places afresh. In-doubt
	// resolvers stop re-publishing at half of it, so nothing can store the
	// event later. If zero, 90s is used.
	AbandonAfter time.Duration
	// Leases, if set (clustered mode), settle a reservation whose instance
	// died as soon as its lease expired, and keep an instance that lost its
	// lease from publishing (see Leases). Without them only AbandonAfter
	// does.
	Leases Leases
	// PaymentWindow, if set, returns a sale's payment window (zero: none).
	// Persist gives each order its deadline from it (placed_at + window)
	// in the same insert: registering a deadline costs the placement path
	// nothing. Windows never change, so each sale's is asked once.
	PaymentWindow func(ctx context.Context, saleID string) (time.Duration, error)
	windows       sync.Map // sale id → time.Duration
	// Pacer, if set, counts placements, so that the order workers can
	// give way while placements arrive fast (see Pacer).
	Pacer *Pacer

	inDoubt chan inventory.Reservation
}

// NewService returns a Service.
func NewService(reserver Reserver, stream Stream, store Store, log *slog.Logger) *Service {
	s := &Service{reserver: reserver, stream: stream, store: store, log: log, inDoubt: make(chan inventory.Reservation, 4096)}
	s.pending.init()
	return s
}

// PlaceRequest asks to place an order.
type PlaceRequest struct {
	UserID   int64
	SaleID   string
	Key      string
	Quantity int64
}

// Place reserves stock and durably enqueues the order; only then does it
// return the order (status Pending). A repeated key returns the first
// order. If the stream refuses the event the reservation is undone and
// ErrStreamDown returned; if the stream does not answer in time the
// reservation is kept while Run's resolvers make sure the event is
// stored, and ErrInDoubt is returned (a retry with the same key gets the
// order once it is stored).
func (s *Service) Place(ctx context.Context, r PlaceRequest) (Order, error) {
	if !spike.ValidIdempotencyKey(r.Key) {
		return Order{}, spike.Errorf(spike.ErrInvalid, "Idempotency-Key must be 1-128 printable ASCII characters")
	}
	s.Pacer.Placed()
	req := inventory.Request{SaleID: r.SaleID, UserID: r.UserID, Key: r.Key, Quantity: r.Quantity}
	res, replay, err := s.reserver.Reserve(ctx, req)
	if errors.Is(err, inventory.ErrInProgress) && res.OrderID != "" {
		stored, known := s.stored(ctx, res.OrderID)
		switch {
		case stored:
			// The first request's event is durable, but its confirmation
			// never came (its instance died, or it is a moment away).
			s.confirm(ctx, res)
			ev := placedEvent(res)
			return ev.Order(), nil
		case known && s.abandoned(ctx, res):
			// Its instance died before enqueueing, and nothing can store
			// the event any more: free the units and place afresh.
			s.log.Warn("releasing an abandoned reservation", "order_id", res.OrderID, "placed_at", res.PlacedAt)
			if rerr := s.reserver.Release(ctx, res); rerr != nil {
				return Order{}, err
			}
			res, replay, err = s.reserver.Reserve(ctx, req)
		}
	}
	if err != nil {
		return Order{}, err
	}
	ev := placedEvent(res)
	o := ev.Order()
	if replay {
		return o, nil
	}
	if s.Leases != nil && !s.Leases.Owns(o.ID) {
		// Another instance may call this reservation abandoned any moment
		// now: publishing it could store an order whose units were freed.
		if err := s.reserver.Release(context.WithoutCancel(ctx), res); err != nil {
			s.log.Error("release reservation", "order_id", o.ID, "err", err)
		}
		return Order{}, ErrLeaseLost
	}
	// Index before enqueueing: the worker may persist (and unindex) the
	// order before Enqueue even returns.
	s.pending.add(ev)
	err = s.enqueue(ctx, ev)
	switch {
	case err == nil:
		s.confirmAfterAck(ctx, res)
		return o, nil
	case errors.Is(err, ErrNotEnqueued):
		s.pending.remove(o.UserID, o.ID)
		if err := s.reserver.Release(context.WithoutCancel(ctx), res); err != nil {
			// The units stay held until the counters are rebuilt: no oversell, a late sale.
			s.log.Error("release reservation", "order_id", o.ID, "err", err)
		}
		return Order{}, ErrStreamDown
	default:
		// The event may or may not be stored. Releasing the stock now could
		// oversell if it was; keep it held until the resolver knows.
		s.log.Warn("enqueue in doubt", "order_id", o.ID, "err", err)
		select {
		case s.inDoubt <- res:
		default:
			// Resolver backlog full (thousands in doubt: the stream has been
			// unreachable for a while). No goroutine of its own: the
			// reservation stays held, which cannot oversell, and is settled
			// by a replay of its key or the next rebuild, as those still in
			// doubt when Run stops are.
			s.log.Error("in-doubt backlog full: leaving the reservation to a replay or the next rebuild", "order_id", o.ID)
		}
		return Order{}, ErrInDoubt
	}
}

// abandoned reports whether an unconfirmed reservation can no longer have
// its event stored by anyone: its instance's lease expired, or it is older
// than AbandonAfter (the in-doubt resolvers stop at half of it).
func (s *Service) abandoned(ctx context.Context, res inventory.Reservation) bool {
	if time.Since(res.PlacedAt) > s.abandonAfter() {
		return true
	}
	if s.Leases == nil {
		return false
	}
	alive, err := s.Leases.Alive(ctx, res.OrderID)
	return err == nil && !alive
}

func (s *Service) abandonAfter() time.Duration {
	if s.AbandonAfter > 0 {
		return s.AbandonAfter
	}
	return 90 * time.Second
}

// confirm marks a durable reservation confirmed. A failure only delays
// replays: the order is on the stream, and Persist confirms it again.
func (s *Service) confirm(ctx context.Context, res inventory.Reservation) {
	if err := s.reserver.Confirm(ctx, res); err != nil {
		s.log.Warn("confirm reservation", "order_id", res.OrderID, "err", err)
	}
}

// confirmAfterAck confirms a reservation whose event the stream has just
// acknowledged: in the background when the reserver can.
func (s *Service) confirmAfterAck(ctx context.Context, res inventory.Reservation) {
	if lc, ok := s.reserver.(LaterConfirmer); ok {
		lc.ConfirmLater(ctx, res)
		return
	}
	s.confirm(ctx, res)
}

// stored reports whether an order's event is durable: on the stream or
// persisted. known is false when a lookup failed, so "not stored" is not
// certain: an abandoned reservation must not be released on a guess.
func (s *Service) stored(ctx context.Context, id string) (stored, known bool) {
	known = true
	if s.Lookup != nil {
		_, ok, err := s.Lookup.Placed(ctx, id)
		if err == nil && ok {
			return true, true
		}
		known = err == nil
	}
	_, err := s.store.Order(ctx, id)
	switch {
	case err == nil:
		return true, true
	case !errors.Is(err, ErrOrderNotFound):
		known = false
	}
	return false, known
}

func (s *Service) enqueue(ctx context.Context, ev Placed) error {
	timeout := s.EnqueueTimeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	return EnqueueWithin(ctx, s.stream, ev, timeout)
}

func placedEvent(res inventory.Reservation) Placed {
	return Placed{
		V: 1, OrderID: res.OrderID, SaleID: res.SaleID, SKU: res.SKU, UserID: res.UserID,
		Quantity: res.Quantity, PriceCents: res.PriceCents, Key: res.Key, PlacedAt: res.PlacedAt,
	}
}

// resolvers is how many in-doubt events Run resolves at once.
const resolvers = 8

// Run is the Service's background work: it republishes in-doubt events
// (same order id, so the stream deduplicates), from the bounded queue Place
// fills, until each is acknowledged, then confirms its reservation; up to
// resolvers at a time. The caller starts it once and waits for it: it
// returns when ctx is done and its resolvers have stopped, so nothing of
// the Service's runs after it. Events still in doubt then are settled by
// the rebuild at the next start, which reads the stream (embedded), or by a
// replay of their key (clustered).
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range resolvers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case res := <-s.inDoubt:
					s.resolve(ctx, res)
				}
			}
		})
	}
	wg.Wait()
	return nil
}

// RunResolver is Run.
//
// Deprecated: use Run.
func (s *Service) RunResolver(ctx context.Context) error { return s.Run(ctx) }

func (s *Service) resolve(ctx context.Context, res inventory.Reservation) {
	ev := placedEvent(res)
	backoff := 50 * time.Millisecond
	// Stop well before a replay may call the reservation abandoned; the
	// rebuild (embedded) or the replay path (clustered) settles it then.
	ctx, cancel := context.WithDeadline(ctx, res.PlacedAt.Add(s.abandonAfter()/2))
	defer cancel()
	for {
		// Publish only under the lease the reservation was made under, held
		// with time to spare. While it is failing to renew, wait: if it
		// renews, nobody can have freed the units; if it expires, a replay
		// of the key settles the reservation and this loop runs out.
		if s.Leases == nil || s.Leases.Owns(res.OrderID) {
			if err := s.enqueue(ctx, ev); err == nil {
				s.confirm(ctx, res)
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// Persist stores a batch of OrderPlaced events as Created orders,
// idempotently. It is what order workers call for each batch they consume;
// when it returns nil the batch may be acknowledged.
func (s *Service) Persist(ctx context.Context, events []Placed) error {
	orders := make([]Order, len(events))
	for i := range events {
		orders[i] = events[i].Order()
		orders[i].Status = Created
		if orders[i].PaymentDeadline.IsZero() && s.PaymentWindow != nil {
			w, err := s.window(ctx, orders[i].SaleID)
			if err != nil {
				return err
			}
			if w > 0 {
				orders[i].PaymentDeadline = orders[i].CreatedAt.Add(w)
			}
		}
	}
	if err := s.store.InsertOrders(ctx, orders); err != nil {
		return err
	}
	// An order whose placing instance died before confirming it is settled
	// by the next replay of its key (see Place), without a round trip here.
	for i := range orders {
		s.pending.remove(orders[i].UserID, orders[i].ID)
	}
	return nil
}

// deadline is the payment deadline of a placed order (zero: it has none);
// known is false when the sale's payment window could not be read.
func (s *Service) deadline(ctx context.Context, e Placed) (deadline time.Time, known bool) {
	if !e.PaymentDeadline.IsZero() {
		return e.PaymentDeadline, true
	}
	if s.PaymentWindow == nil {
		return time.Time{}, true
	}
	w, err := s.window(ctx, e.SaleID)
	if err != nil {
		return time.Time{}, false
	}
	if w <= 0 {
		return time.Time{}, true
	}
	return e.PlacedAt.Add(w), true
}

func (s *Service) window(ctx context.Context, saleID string) (time.Duration, error) {
	if w, ok := s.windows.Load(saleID); ok {
		return w.(time.Duration), nil
	}
	w, err := s.PaymentWindow(ctx, saleID)
	if err != nil {
		return 0, err
	}
	s.windows.Store(saleID, w)
	return w, nil
}

// Caller is who asks to read an order.
type Caller struct {
	UserID int64
	Admin  bool
}

// Order returns an order its buyer (or an admin) may read; another buyer's
// order is ErrOrderNotFound. An acknowledged order not yet persisted is
// returned in status Pending.
func (s *Service) Order(ctx context.Context, id string, c Caller) (Order, error) {
	if !validOrderID(id) {
		return Order{}, ErrOrderNotFound
	}
	// The store first: once persisted, an order may have moved on (paid,
	// cancelled) while its event is still on the stream. An order not
	// found there is looked for where it waits before it is persisted; it
	// leaves those only after its insert committed, so if it was persisted
	// in between, the second store read finds it.
	o, err := s.store.Order(ctx, id)
	if err == nil {
		return owned(o, c)
	}
	if !errors.Is(err, ErrOrderNotFound) {
		return Order{}, err
	}
	if o, ok := s.pending.find(id, c); ok {
		return o, nil
	}
	if s.Lookup != nil {
		e, ok, err := s.Lookup.Placed(ctx, id)
		if err != nil {
			return Order{}, err
		}
		if ok {
			return owned(e.Order(), c)
		}
	}
	o, err = s.store.Order(ctx, id)
	if err != nil {
		return Order{}, err
	}
	return owned(o, c)
}

// owned returns o if c may read it; another buyer's order is not found.
func owned(o Order, c Caller) (Order, error) {
	if !c.Admin && o.UserID != c.UserID {
		return Order{}, ErrOrderNotFound
	}
	return o, nil
}

// validOrderID reports whether id could be an order id: it is also a NATS
// subject token, so no wildcards or dots.
func validOrderID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// List returns a page of the user's orders, newest first, and the cursor of
// the next page (zero at the end). limit must be 1–100.
func (s *Service) List(ctx context.Context, userID int64, after Cursor, limit int) ([]Order, Cursor, error) {
	if limit < 1 || limit > 100 {
		return nil, Cursor{}, spike.Errorf(spike.ErrInvalid, "limit must be between 1 and 100")
	}
	pending := s.pending.forUser(userID, after) // before the store read; see Order
	stored, err := s.store.ListOrders(ctx, userID, after, limit+1)
	if err != nil {
		return nil, Cursor{}, err
	}
	all := append(stored, pending...)
	slices.SortFunc(all, func(a, b Order) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		switch {
		case a.ID > b.ID:
			return -1
		case a.ID < b.ID:
			return 1
		}
		// The same order both pending and stored: keep the stored one first.
		if a.Status != Pending {
			return -1
		}
		return 1
	})
	all = slices.CompactFunc(all, func(a, b Order) bool { return a.ID == b.ID })
	if len(all) <= limit {
		return all, Cursor{}, nil
	}
	all = all[:limit]
	return all, CursorAfter(&all[limit-1]), nil
}

// Persisted drops an order from the pending index: another instance's
// worker persisted it (clustered instances announce what they persist).
func (s *Service) Persisted(userID int64, orderID string) {
	s.pending.remove(userID, orderID)
}

// PendingCount returns how many acknowledged orders this instance has not
// seen persisted yet.
func (s *Service) PendingCount() int { return s.pending.count() }

// pendingIndex holds acknowledged orders until they are persisted, sharded
// by buyer so that placements of different buyers rarely share a lock. It
// keeps their events, not their Orders (less than half the size, and one
// allocation per placement of a flash sale): what a read of a pending
// order needs is in the event (Placed.Order).
type pendingIndex struct {
	shards [64]pendingShard
}

type pendingShard struct {
	mu     sync.Mutex
	byUser map[int64][]Placed
	n      int
}

func (p *pendingIndex) init() {
	for i := range p.shards {
		p.shards[i].byUser = make(map[int64][]Placed)
	}
}

func (p *pendingIndex) shard(user int64) *pendingShard {
	return &p.shards[uint64(user)%uint64(len(p.shards))]
}

func (p *pendingIndex) add(e Placed) {
	sh := p.shard(e.UserID)
	sh.mu.Lock()
	sh.byUser[e.UserID] = append(sh.byUser[e.UserID], e)
	sh.n++
	sh.mu.Unlock()
}

func (p *pendingIndex) remove(user int64, id string) {
	sh := p.shard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.byUser[user]
	i := slices.IndexFunc(list, func(x Placed) bool { return x.OrderID == id })
	if i < 0 {
		return
	}
	list = slices.Delete(list, i, i+1)
	sh.n--
	if len(list) == 0 {
		delete(sh.byUser, user)
	} else {
		sh.byUser[user] = list
	}
}

func (p *pendingIndex) find(id string, c Caller) (Order, bool) {
	look := func(sh *pendingShard, user int64) (Order, bool) {
		for i := range sh.byUser[user] {
			if e := &sh.byUser[user][i]; e.OrderID == id {
				return e.Order(), true
			}
		}
		return Order{}, false
	}
	if !c.Admin {
		sh := p.shard(c.UserID)
		sh.mu.Lock()
		defer sh.mu.Unlock()
		return look(sh, c.UserID)
	}
	for i := range p.shards {
		sh := &p.shards[i]
		sh.mu.Lock()
		for user := range sh.byUser {
			if o, ok := look(sh, user); ok {
				sh.mu.Unlock()
				return o, true
			}
		}
		sh.mu.Unlock()
	}
	return Order{}, false
}

func (p *pendingIndex) forUser(user int64, after Cursor) []Order {
	sh := p.shard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var out []Order
	for i := range sh.byUser[user] {
		if o := sh.byUser[user][i].Order(); after.Before(&o) {
			out = append(out, o)
		}
	}
	return out
}

func (p *pendingIndex) count() int {
	n := 0
	for i := range p.shards {
		sh := &p.shards[i]
		sh.mu.Lock()
		n += sh.n
		sh.mu.Unlock()
	}
	return n
}

// Restore indexes events found on the stream at start as pending orders.
func (s *Service) Restore(events []Placed) {
	for i := range events {
		s.pending.add(events[i])
	}
}

// RunPendingSweeper drops pending orders that another instance's worker
// persisted without this instance hearing of it (an announcement lost
// while disconnected: see Persisted): with many instances the workers
// compete for events, so the instance that acknowledged an order does not
// always persist it. An order is dropped once it has left the stream (it
// leaves only after its insert committed). Each round looks at up to
// sweepBatch orders acknowledged over sweepAge ago: younger ones are
// normally persisted and announced within milliseconds, or held back on
// purpose (Pacer, a database outage), and a round over every pending
// order cost a flash sale 6 % of its CPU. Without a Lookup it only waits
// for ctx; embedded mode, whose one worker tells Persist directly, need
// not run it.
func (s *Service) RunPendingSweeper(ctx context.Context, every time.Duration) error {
	if s.Lookup == nil {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cutoff := time.Now().Add(-max(every, sweepAge))
		for _, e := range s.pending.olderThan(cutoff, sweepBatch) {
			_, onStream, err := s.Lookup.Placed(ctx, e.OrderID)
			if err != nil {
				break // the stream is unreachable: try again next round
			}
			if !onStream {
				s.pending.remove(e.UserID, e.OrderID)
			}
		}
	}
}

const (
	sweepAge   = 10 * time.Second
	sweepBatch = 1024
)

// olderThan returns up to limit pending orders' events placed before t.
func (p *pendingIndex) olderThan(t time.Time, limit int) []Placed {
	var out []Placed
	for i := range p.shards {
		sh := &p.shards[i]
		sh.mu.Lock()
		for _, list := range sh.byUser {
			for _, e := range list {
				if e.PlacedAt.Before(t) {
					out = append(out, e)
					if len(out) == limit {
						sh.mu.Unlock()
						return out
					}
				}
			}
		}
		sh.mu.Unlock()
	}
	return out
}

// OldestPending returns when the oldest order this instance acknowledged
// and has not yet seen persisted was placed; false if none is pending.
// For metrics at scrape time: a buyer holds few pending orders.
func (s *Service) OldestPending() (time.Time, bool) {
	var oldest time.Time
	for i := range s.pending.shards {
		sh := &s.pending.shards[i]
		sh.mu.Lock()
		for _, list := range sh.byUser {
			for _, e := range list {
				if oldest.IsZero() || e.PlacedAt.Before(oldest) {
					oldest = e.PlacedAt
				}
			}
		}
		sh.mu.Unlock()
	}
	return oldest, !oldest.IsZero()
}

// PendingIDs returns the ids of the orders this instance acknowledged and
// has not yet seen persisted.
func (s *Service) PendingIDs() []string {
	var ids []string
	for i := range s.pending.shards {
		sh := &s.pending.shards[i]
		sh.mu.Lock()
		for _, list := range sh.byUser {
			for _, e := range list {
				ids = append(ids, e.OrderID)
			}
		}
		sh.mu.Unlock()
	}
	return ids
}
