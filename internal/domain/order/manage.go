package order

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/spikehq/spike"
)

// Orders is the store the lifecycle needs: persisted orders and their
// transitions.
type Orders interface {
	Store
	LifecycleStore
}

// TransitionEvent is the event every applied transition emits (order.paid,
// order.cancelled, order.shipped, order.delivered, order.refunded), version
// 1. Consumers ignore fields they do not know.
type TransitionEvent struct {
	V            int        `json:"v"`
	OrderID      string     `json:"order_id"`
	SaleID       string     `json:"sale_id"`
	SKU          string     `json:"sku"`
	UserID       int64      `json:"user_id"`
	Quantity     int64      `json:"quantity"`
	From         Status     `json:"from"`
	To           Status     `json:"to"`
	Transition   Transition `json:"transition"`
	Cause        string     `json:"cause"`
	CancelReason string     `json:"cancel_reason,omitempty"`
	At           time.Time  `json:"at"`
}

// Name is the event's name: "order." and the status reached.
func (e *TransitionEvent) Name() string { return "order." + string(e.To) }

// EventPublisher puts transition events on the stream.
type EventPublisher interface {
	PublishTransition(ctx context.Context, e TransitionEvent) error
}

// OverdueSource lists placements stored on the stream before a time and
// not yet persisted, oldest first, from a position in the stream (0: its
// oldest), up to limit; next is where a later call continues: every
// message before it was read (or is gone).
type OverdueSource interface {
	Overdue(ctx context.Context, before time.Time, from uint64, limit int) (events []Placed, next uint64, err error)
}

// overdueAfter is how long a placement may wait for its order worker
// before the deadline sweep persists it itself: well above the workers'
// normal latency (a 50 ms linger), well below the 5 s of I6.
const overdueAfter = 2 * time.Second

// overdueHorizon: an overdue placement is persisted by the deadline sweep
// only if its payment deadline falls within this long.
const overdueHorizon = 10 * time.Second

// placedBeforeStored bounds how long before the stream stored a placement
// it was placed (its PlacedAt, on which its deadline counts): an in-doubt
// placement is published again for up to half of Service.AbandonAfter
// (45 s by default), plus clock skew between instances.
const placedBeforeStored = 2 * time.Minute

// LifecycleConfig configures a Lifecycle. Every field may be left zero.
type LifecycleConfig struct {
	// Events receives every applied transition; nil: none are published.
	Events EventPublisher
	// Notify is called (and must not block) for every applied transition,
	// to tell the buyer; nil: nobody is told.
	Notify func(o Order, e TransitionEvent)
	// StockFreed is called after a transition that gives units back (the
	// order is then in the store's stock-return outbox); nil: the
	// outbox's poll finds it.
	StockFreed func()
	// Overdue, if set, finds acknowledged placements still waiting to be
	// persisted long after they were placed (their worker died and the
	// stream redelivers only after its AckWait): the deadline sweep
	// persists them, so that their deadlines are kept too.
	Overdue OverdueSource
	// MinPaymentWindow, if set, returns the shortest payment window of any
	// sale (ok false: no sale has one). The overdue scan then reads only
	// the placements that could have a deadline within the horizon: during
	// a burst every placement is overdue for a while (the Pacer holds the
	// workers back) but, with windows of minutes, none is due.
	MinPaymentWindow func(ctx context.Context) (w time.Duration, ok bool, err error)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Lifecycle moves persisted orders through the state machine of
// lifecycle.go. Each transition is a compare-and-set on the stored status,
// so of two racing transitions (a payment and the deadline, a buyer's
// cancel and an admin's refund) exactly one wins; repeating one that
// already happened answers the order as it is.
type Lifecycle struct {
	store   Orders
	pending *Service // finds acknowledged orders not yet persisted
	cfg     LifecycleConfig
	log     *slog.Logger

	// The overdue scan's memory (persistOverdue): where the next scan
	// continues, and the earliest deadline among the overdue placements
	// read and left to their worker because it was not near yet.
	overdueMu       sync.Mutex
	overdueFrom     uint64
	overdueEarliest time.Time
}

// NewLifecycle returns a Lifecycle over store. pending, if not nil, finds
// orders that are acknowledged but not yet persisted, which a transition
// persists first.
func NewLifecycle(store Orders, pending *Service, cfg LifecycleConfig) *Lifecycle {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Lifecycle{store: store, pending: pending, cfg: cfg, log: cfg.Logger}
}

// Request asks for one transition of one order.
type Request struct {
	OrderID    string
	Transition Transition
	Caller     Caller // who asks; a buyer may only touch their own orders
	Cause      string // recorded with the transition; default from Caller
	// CancelReason, for Cancel: "buyer" or "admin" (default from Caller).
	CancelReason      string
	Carrier, Tracking string // for Ship
}

// Apply applies r and returns the order as it now is. Repeating a
// transition that already happened returns the order unchanged; one the
// order's state does not allow is a spike.ErrConflict naming the state.
func (l *Lifecycle) Apply(ctx context.Context, r Request) (Order, error) {
	o, err := l.load(ctx, r.OrderID, r.Caller)
	if err != nil {
		return Order{}, err
	}
	to, err := Next(o.Status, r.Transition)
	if err != nil {
		if reached(o, r.Transition) {
			return o, nil
		}
		return o, err
	}
	c := Change{Transition: r.Transition, To: to, At: l.cfg.Now().UTC(), Cause: r.Cause,
		CancelReason: r.CancelReason, Carrier: r.Carrier, Tracking: r.Tracking}
	if c.Cause == "" {
		c.Cause = r.Caller.cause()
	}
	if r.Transition == Cancel && c.CancelReason == "" {
		c.CancelReason = "buyer"
		if r.Caller.Admin {
			c.CancelReason = "admin"
		}
	}
	return l.apply(ctx, o, c)
}

// reached reports whether o is already where t leads, so that repeating a
// transition answers the order as it is: cancel on a cancelled order, pay
// on a paid one (and on one that has moved past paid), and so on.
func reached(o Order, t Transition) bool {
	switch t {
	case Cancel, Expire:
		return o.Status == Cancelled
	case Pay:
		return o.Status == Paid || o.Status == Shipped || o.Status == Delivered
	case Ship:
		return o.Status == Shipped || o.Status == Delivered
	case Deliver:
		return o.Status == Delivered
	case Refund:
		return o.Status == Refunded
	}
	return false
}

func (l *Lifecycle) apply(ctx context.Context, o Order, c Change) (Order, error) {
	from := o.Status
	got, applied, err := l.store.Transition(ctx, o.ID, From(c.Transition), c)
	if err != nil {
		return Order{}, err
	}
	if !applied {
		// Somebody else moved it first.
		if reached(got, c.Transition) {
			return got, nil
		}
		_, err := Next(got.Status, c.Transition)
		if err == nil {
			err = spike.Errorf(spike.ErrConflict, "order %s changed while this request ran; it is %s", got.ID, got.Status)
		}
		return got, err
	}
	l.applied(ctx, from, got, c)
	return got, nil
}

// applied publishes, notifies and frees stock after a transition committed.
// The transition is recorded in the order's history in the same
// transaction; the event and the notification are best effort (the
// history is the record), the stock return is an outbox (durable).
func (l *Lifecycle) applied(ctx context.Context, from Status, o Order, c Change) {
	if from == Pending {
		from = Created
	}
	e := TransitionEvent{V: 1, OrderID: o.ID, SaleID: o.SaleID, SKU: o.SKU, UserID: o.UserID, Quantity: o.Quantity,
		From: from, To: o.Status, Transition: c.Transition, Cause: c.Cause, CancelReason: c.CancelReason, At: c.At}
	if l.cfg.Events != nil {
		if err := l.cfg.Events.PublishTransition(ctx, e); err != nil {
			l.log.Warn("publish order event", "order_id", o.ID, "event", e.Name(), "err", err)
		}
	}
	if l.cfg.Notify != nil {
		l.cfg.Notify(o, e)
	}
	if ReturnsStock(from, o.Status) && l.cfg.StockFreed != nil {
		l.cfg.StockFreed()
	}
}

// load returns the order the caller may act on, persisting it first if it
// is acknowledged but not yet persisted (so that its transition can be a
// compare-and-set on the store like any other).
func (l *Lifecycle) load(ctx context.Context, id string, c Caller) (Order, error) {
	if !validOrderID(id) {
		return Order{}, ErrOrderNotFound
	}
	o, err := l.store.Order(ctx, id)
	if errors.Is(err, ErrOrderNotFound) && l.pending != nil {
		var p Order
		p, err = l.pending.Order(ctx, id, Caller{Admin: true})
		if err != nil {
			return Order{}, err
		}
		if p.Status == Pending {
			if err := l.pending.Persist(ctx, []Placed{placedOf(p)}); err != nil {
				return Order{}, err
			}
		}
		o, err = l.store.Order(ctx, id)
	}
	if err != nil {
		return Order{}, err
	}
	if !c.Admin && o.UserID != c.UserID {
		return Order{}, ErrOrderNotFound
	}
	return o, nil
}

func placedOf(o Order) Placed {
	return Placed{V: 1, OrderID: o.ID, SaleID: o.SaleID, SKU: o.SKU, UserID: o.UserID, Quantity: o.Quantity,
		PriceCents: o.PriceCents, Key: o.IdempotencyKey, PlacedAt: o.CreatedAt, PaymentDeadline: o.PaymentDeadline}
}

func (c Caller) cause() string {
	if c.Admin {
		return "admin:" + strconv.FormatInt(c.UserID, 10)
	}
	return "buyer:" + strconv.FormatInt(c.UserID, 10)
}

// MarkPaid moves the order to paid on a provider's confirmation of
// payment paymentID. applied is false when the order was no longer unpaid
// (cancelled by its buyer or its deadline first); status is then what it
// is, and the caller refunds the payment.
func (l *Lifecycle) MarkPaid(ctx context.Context, orderID, paymentID string, at time.Time) (applied bool, status string, err error) {
	o, err := l.load(ctx, orderID, Caller{Admin: true})
	if err != nil {
		return false, "", err
	}
	if _, err := Next(o.Status, Pay); err != nil {
		return false, string(o.Status), nil
	}
	c := Change{Transition: Pay, To: Paid, At: at.UTC(), Cause: "payment:" + paymentID}
	got, ok, err := l.store.Transition(ctx, o.ID, From(Pay), c)
	if err != nil {
		return false, "", err
	}
	if ok {
		l.applied(ctx, o.Status, got, c)
	}
	return ok, string(got.Status), nil
}

// Order returns a persisted order (or an acknowledged one, persisting it),
// for callers that check rules before a transition (payments).
func (l *Lifecycle) Order(ctx context.Context, id string, c Caller) (Order, error) {
	return l.load(ctx, id, c)
}

// History returns the order's applied transitions, oldest first.
func (l *Lifecycle) History(ctx context.Context, id string) ([]HistoryEntry, error) {
	return l.store.History(ctx, id)
}

// ExpireDue cancels the unpaid orders whose payment deadline has passed
// (each exactly once, whichever instance gets it) and reports how many.
func (l *Lifecycle) ExpireDue(ctx context.Context, limit int) (int, error) {
	expired, err := l.store.ExpireDue(ctx, l.cfg.Now().UTC(), limit)
	// The cancellations are committed; their events go out in parallel, so
	// that a sweep of hundreds of orders does not hold the next one back by
	// a stream round trip each (that made deadlines late under load).
	var g errgroup.Group
	g.SetLimit(64)
	for i := range expired {
		o := expired[i]
		g.Go(func() error {
			c := Change{Transition: Expire, To: Cancelled, At: o.CancelledAt, Cause: "deadline", CancelReason: "payment_timeout"}
			l.applied(ctx, Created, o, c)
			return nil
		})
	}
	g.Wait()
	return len(expired), err
}

// RunDeadlines sweeps due payment deadlines every interval (zero: 500 ms)
// until ctx is done: an order is cancelled within interval plus one sweep
// of its deadline. Many instances may run it at once.
func (l *Lifecycle) RunDeadlines(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = 500 * time.Millisecond
	}
	const batch = 512
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		start := time.Now()
		l.persistOverdue(ctx)
		for {
			n, err := l.ExpireDue(ctx, batch)
			if err != nil {
				if ctx.Err() == nil {
					l.log.Warn("payment deadline sweep", "err", err)
				}
				break
			}
			if n < batch {
				break
			}
		}
		if took := time.Since(start); took > 2*time.Second && ctx.Err() == nil {
			// I6 allows 5 s: say so before deadlines are late.
			l.log.Warn("payment deadline sweep is slow; deadlines may be kept late", "took", took)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

type deadlineWorkKey struct{}

// WithDeadlineWork marks ctx as carrying the deadline sweep's writes
// (persisting a placement whose deadline is near so that the sweep can
// cancel it): a store with one writer may serve them before the others.
func WithDeadlineWork(ctx context.Context) context.Context {
	return context.WithValue(ctx, deadlineWorkKey{}, true)
}

// IsDeadlineWork reports whether ctx carries the deadline sweep's writes.
func IsDeadlineWork(ctx context.Context) bool {
	v, _ := ctx.Value(deadlineWorkKey{}).(bool)
	return v
}

// persistOverdue persists the placements that have waited too long for
// their worker (idempotent: the worker's later insert of the same order is
// a no-op), so that the sweep sees their deadlines. Only orders whose
// deadline is near (overdueHorizon): persisting the others early would
// undo what the Pacer holds back during a burst, and do the worker's
// inserts twice (4 % of a flash sale's CPU); a stuck worker's orders are
// still taken in time, as their deadlines come near.
//
// A scan continues where the last one stopped, so each message is read
// once, not every sweep: during a burst the backlog the Pacer holds back
// is thousands of messages older than overdueAfter, and reading all of
// them every 500 ms on every instance cost more than a third of the
// stream server's CPU (issue 12). The placements it passed over come back
// into view by a scan from the start once the earliest of their
// deadlines is within the horizon.
func (l *Lifecycle) persistOverdue(ctx context.Context) {
	if l.cfg.Overdue == nil || l.pending == nil {
		return
	}
	l.overdueMu.Lock()
	defer l.overdueMu.Unlock()
	now := l.cfg.Now()
	horizon := now.Add(overdueHorizon)
	if !l.overdueEarliest.IsZero() && l.overdueEarliest.Before(horizon) {
		l.overdueFrom, l.overdueEarliest = 0, time.Time{}
	}
	before := now.Add(-overdueAfter)
	if l.cfg.MinPaymentWindow != nil {
		// A placement stored at t has its deadline no earlier than
		// t - placedBeforeStored + the shortest window: those stored
		// later than this cannot be due within the horizon.
		w, ok, err := l.cfg.MinPaymentWindow(ctx)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				l.log.Warn("read the shortest payment window", "err", err)
			}
		case !ok:
			return // no sale has a deadline
		default:
			if b := horizon.Add(placedBeforeStored - w); b.Before(before) {
				before = b
			}
		}
	}
	events, next, err := l.cfg.Overdue.Overdue(ctx, before, l.overdueFrom, 2048)
	if err != nil {
		if ctx.Err() == nil {
			l.log.Warn("read overdue placements", "err", err)
		}
		return
	}
	earliest := l.overdueEarliest
	events = slices.DeleteFunc(events, func(e Placed) bool {
		deadline, known := l.pending.deadline(ctx, e)
		switch {
		case !known:
			return false // its sale's window could not be read: may be due
		case deadline.IsZero():
			return true // no deadline: its worker's
		case !deadline.Before(horizon):
			if earliest.IsZero() || deadline.Before(earliest) {
				earliest = deadline
			}
			return true
		}
		return false
	})
	if len(events) > 0 {
		if err := l.pending.Persist(WithDeadlineWork(ctx), events); err != nil {
			if ctx.Err() == nil {
				l.log.Warn("persist overdue placements", "count", len(events), "err", err)
			}
			return // the same messages again next time
		}
		l.log.Info("persisted placements their worker had not", "count", len(events))
	}
	l.overdueFrom, l.overdueEarliest = next, earliest
}
