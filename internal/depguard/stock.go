package depguard

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/resilience"
)

// Stock puts the stock counters' hot-path calls behind the RedisStock
// guard (a per-call time budget, a circuit breaker on failure and
// slow-call rates, a bulkhead), so that a slow or failing Redis makes
// placements fail fast with 503 instead of piling up.
//
//   - Reserve: refused by the bulkhead or the open breaker, it never
//     reached Redis: nothing was reserved, and the caller gets a 503 kind.
//     A reserve cut by the timeout is in doubt; the counters undo it in
//     the background and return an error of kind ErrUnavailable (503).
//   - Confirm and Release finish a reservation that was already taken:
//     they are never refused (refusing a release would hold its units
//     until a rebuild; refusing a confirm would delay replays) and take no
//     bulkhead slot (there is at most one per reservation in flight), but
//     they run under the timeout, and their outcomes count while the
//     breaker is closed. A failed release is queued for retries by
//     [Stock.Run] (releasing is idempotent: it acts only while the key
//     still maps to that very order id), and still reported to the caller.
//
// Only failures of the counters count against the breaker
// (StockConfig.IsFailure): domain answers (sold out, limit, fenced, in
// progress...) are successes, and a caller that gave up is ignored.
type Stock struct {
	next      order.Reserver
	guard     *Guard
	isFailure func(error) bool
	log       *slog.Logger
	retries   chan *releaseRetry
	retryFor  time.Duration
	// Retry backoff: from retryFirst, doubling up to retryMax.
	retryFirst, retryMax time.Duration
}

var _ order.Reserver = (*Stock)(nil)

// Errors of [Stock.Reserve] for a reserve refused by the guard: nothing
// was reserved.
var (
	ErrStockBreakerOpen = &spike.Error{Kind: spike.ErrUnavailable, Message: "the stock counters are failing fast while Redis is slow or down; nothing was reserved, retry shortly"}
	ErrStockBusy        = &spike.Error{Kind: spike.ErrUnavailable, Message: "too many placements are waiting on the stock counters; nothing was reserved, retry shortly"}
)

// StockConfig configures [NewStock]. The zero value is valid.
type StockConfig struct {
	// Timeout is each call's budget (limits.stock_timeout). If zero,
	// StockCallTimeout is used.
	Timeout time.Duration
	// IsFailure reports whether an error says the counters failed (no
	// answer, timeout, error reply), as opposed to a domain answer or a
	// caller that gave up. If nil, every error but context.Canceled is a
	// failure.
	IsFailure func(error) bool
	// RetryQueue bounds the failed releases waiting for a retry; a release
	// failing while it is full is not retried (logged). If zero, 1024 is
	// used.
	RetryQueue int
	// RetryFor is how long a failed release is retried before its units
	// are left held until the counters are rebuilt. If zero, 30s is used.
	RetryFor time.Duration
	// Metrics exports the guard; nil exports nothing.
	Metrics *Metrics
	// Logger logs retried releases; nil is slog.Default().
	Logger *slog.Logger
}

// NewStock returns next behind the RedisStock guard. Call [Stock.Run] for
// the retries of failed releases.
func NewStock(next order.Reserver, cfg StockConfig) *Stock {
	if cfg.IsFailure == nil {
		cfg.IsFailure = func(err error) bool { return err != nil && !errors.Is(err, context.Canceled) }
	}
	if cfg.RetryQueue <= 0 {
		cfg.RetryQueue = 1024
	}
	if cfg.RetryFor <= 0 {
		cfg.RetryFor = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := For(RedisStock)
	if cfg.Timeout > 0 {
		s.Timeout = cfg.Timeout
	}
	return &Stock{
		next:       next,
		guard:      New(RedisStock, Config{Settings: &s, IsFailure: cfg.IsFailure, Metrics: cfg.Metrics}),
		isFailure:  cfg.IsFailure,
		log:        cfg.Logger,
		retries:    make(chan *releaseRetry, cfg.RetryQueue),
		retryFor:   cfg.RetryFor,
		retryFirst: 100 * time.Millisecond,
		retryMax:   2 * time.Second,
	}
}

// Guard returns the stock counters' guard.
func (s *Stock) Guard() *Guard { return s.guard }

// Reserve implements order.Reserver.
func (s *Stock) Reserve(ctx context.Context, r inventory.Request) (res inventory.Reservation, replay bool, err error) {
	err = s.guard.Do(ctx, func(ctx context.Context) (err error) {
		res, replay, err = s.next.Reserve(ctx, r)
		return err
	})
	switch {
	case errors.Is(err, resilience.ErrBulkheadFull):
		return inventory.Reservation{}, false, ErrStockBusy
	case errors.Is(err, resilience.ErrBreakerOpen):
		return inventory.Reservation{}, false, ErrStockBreakerOpen
	}
	return res, replay, err
}

// Confirm implements order.Reserver.
func (s *Stock) Confirm(ctx context.Context, res inventory.Reservation) error {
	return s.guard.finish(ctx, func(ctx context.Context) error { return s.next.Confirm(ctx, res) })
}

// ConfirmLater implements order.LaterConfirmer: it hands res to the
// counters' own deferred confirms when they have them (those run outside
// the guard, batched; a failure only delays replays), else confirms now.
func (s *Stock) ConfirmLater(ctx context.Context, res inventory.Reservation) {
	if lc, ok := s.next.(order.LaterConfirmer); ok {
		lc.ConfirmLater(ctx, res)
		return
	}
	_ = s.Confirm(ctx, res)
}

// Release implements order.Reserver. A release that fails is queued for
// retries by Run, and the failure is returned as before.
func (s *Stock) Release(ctx context.Context, res inventory.Reservation) error {
	err := s.guard.finish(ctx, func(ctx context.Context) error { return s.next.Release(ctx, res) })
	if s.isFailure(err) {
		r := &releaseRetry{res: res, backoff: s.retryFirst, next: time.Now().Add(s.retryFirst), until: time.Now().Add(s.retryFor)}
		select {
		case s.retries <- r:
		default:
			s.log.Error("release reservation: retry queue full, not retried; its units stay held until the counters are rebuilt", "order_id", res.OrderID)
		}
	}
	return err
}

// releaseRetry is a failed release waiting for its next attempt.
type releaseRetry struct {
	res         inventory.Reservation
	backoff     time.Duration
	next, until time.Time
}

// maxRetriesAtOnce bounds the release retries Run makes at once.
const maxRetriesAtOnce = 16

// Run retries the failed releases, each with a backoff, until it succeeds,
// fails with a domain answer or its StockConfig.RetryFor passes, until ctx
// is done; it then returns nil, logging the releases it gave up. The
// caller starts it and waits for it on shutdown.
func (s *Stock) Run(ctx context.Context) error {
	var pending []*releaseRetry
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if len(pending) > 0 {
			next := pending[0].next
			for _, r := range pending[1:] {
				if r.next.Before(next) {
					next = r.next
				}
			}
			timer.Reset(time.Until(next))
		} else {
			timer.Stop()
		}
		select {
		case <-ctx.Done():
			for _, r := range pending {
				s.log.Error("release reservation: shutting down, giving up; its units stay held until the counters are rebuilt", "order_id", r.res.OrderID)
			}
			return nil
		case r := <-s.retries:
			pending = append(pending, r)
			continue
		case <-timer.C:
		}
		pending = s.retryDue(ctx, pending)
	}
}

// retryDue makes the attempts due now, a few at a time, and returns the
// retries still pending.
func (s *Stock) retryDue(ctx context.Context, pending []*releaseRetry) []*releaseRetry {
	now := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxRetriesAtOnce)
	done := make([]bool, len(pending))
	for i, r := range pending {
		if now.Before(r.next) {
			continue
		}
		if !now.Before(r.until) {
			s.log.Error("release reservation: giving up; its units stay held until the counters are rebuilt", "order_id", r.res.OrderID)
			done[i] = true
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			actx, cancel := context.WithDeadline(ctx, r.until)
			defer cancel()
			err := s.guard.finish(actx, func(ctx context.Context) error { return s.next.Release(ctx, r.res) })
			if !s.isFailure(err) {
				if err == nil {
					s.log.Info("release reservation: done on retry", "order_id", r.res.OrderID)
				}
				done[i] = true
				return
			}
			r.backoff = min(2*r.backoff, s.retryMax)
			r.next = time.Now().Add(r.backoff)
		})
	}
	wg.Wait()
	kept := pending[:0]
	for i, r := range pending {
		if !done[i] {
			kept = append(kept, r)
		}
	}
	clear(pending[len(kept):])
	return kept
}
