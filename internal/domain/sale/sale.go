// Package sale holds flash-sale campaigns: a window in time, a number of
// units allocated from a product, a unit price and a per-user limit.
//
// Creating a sale moves its units out of the product's stock in one step,
// so stock is never counted twice. While the sale runs, its remaining units
// live in the stock counters (package inventory), not here.
package sale

import (
	"context"
	"fmt"
	"time"

	"github.com/spikehq/spike"
)

// State is where a sale is in its life.
type State string

// States of a sale.
const (
	Scheduled State = "scheduled"
	Active    State = "active"
	SoldOut   State = "sold_out"
	Ended     State = "ended"
)

// Sale is a flash-sale campaign. A zero EndsAt means open until sold out.
type Sale struct {
	ID           string
	SKU          string
	Stock        int64 // units allocated from the product
	PriceCents   int64
	PerUserLimit int64
	StartsAt     time.Time
	EndsAt       time.Time
	// PaymentWindow is how long an order has to be paid before it is
	// cancelled and its units come back; zero means no deadline.
	PaymentWindow time.Duration
	// SettledAt is when the sale's unsold units went back to the product
	// (once, after it ended); zero while they have not.
	SettledAt time.Time
}

// DefaultPaymentWindow is a new sale's payment window when none is given.
const DefaultPaymentWindow = 15 * time.Minute

// MaxPaymentWindow bounds a sale's payment window.
const MaxPaymentWindow = 30 * 24 * time.Hour

// PaymentDeadline returns when an order placed at placedAt must be paid
// by; zero when the sale sets no payment window.
func (s *Sale) PaymentDeadline(placedAt time.Time) time.Time {
	if s.PaymentWindow <= 0 {
		return time.Time{}
	}
	return placedAt.Add(s.PaymentWindow)
}

// EndedAt reports whether the sale's window is over at t.
func (s *Sale) EndedAt(t time.Time) bool { return !s.EndsAt.IsZero() && !t.Before(s.EndsAt) }

// ActiveAt reports whether t is inside the sale's window.
func (s *Sale) ActiveAt(t time.Time) bool {
	return !t.Before(s.StartsAt) && (s.EndsAt.IsZero() || t.Before(s.EndsAt))
}

// StateAt returns the sale's state at t given its remaining units.
func (s *Sale) StateAt(t time.Time, remaining int64) State {
	switch {
	case t.Before(s.StartsAt):
		return Scheduled
	case !s.EndsAt.IsZero() && !t.Before(s.EndsAt):
		return Ended
	case remaining <= 0:
		return SoldOut
	}
	return Active
}

// Validate reports the first rule s breaks, as an ErrInvalid *spike.Error.
func (s *Sale) Validate() error {
	switch {
	case !spike.ValidID(s.ID):
		return spike.Errorf(spike.ErrInvalid, "id must be 1-64 characters of [A-Za-z0-9._-]")
	case !spike.ValidID(s.SKU):
		return spike.Errorf(spike.ErrInvalid, "sku must be 1-64 characters of [A-Za-z0-9._-]")
	case s.Stock <= 0:
		return spike.Errorf(spike.ErrInvalid, "stock must be > 0")
	case s.PriceCents < 0 || s.PriceCents > spike.MaxPriceCents:
		return spike.Errorf(spike.ErrInvalid, "price_cents must be between 0 and %d", spike.MaxPriceCents)
	case s.PerUserLimit < 1:
		return spike.Errorf(spike.ErrInvalid, "per_user_limit must be >= 1")
	case s.PerUserLimit > 1_000_000:
		return spike.Errorf(spike.ErrInvalid, "per_user_limit must be <= 1000000")
	case !s.EndsAt.IsZero() && !s.EndsAt.After(s.StartsAt):
		return spike.Errorf(spike.ErrInvalid, "ends_at must be after starts_at")
	case s.PaymentWindow < 0 || s.PaymentWindow > MaxPaymentWindow:
		return spike.Errorf(spike.ErrInvalid, "payment_window must be between 0 and %d seconds", int64(MaxPaymentWindow/time.Second))
	case s.PaymentWindow%time.Second != 0:
		return spike.Errorf(spike.ErrInvalid, "payment_window must be whole seconds")
	}
	return nil
}

// Errors returned by a Store (an unknown product is
// catalog.ErrProductNotFound).
var (
	ErrSaleNotFound      = &spike.Error{Kind: spike.ErrNotFound, Message: "sale not found"}
	ErrSaleExists        = &spike.Error{Kind: spike.ErrConflict, Message: "a sale with this id already exists"}
	ErrInsufficientStock = &spike.Error{Kind: spike.ErrInsufficient, Message: "the product has less stock than the sale asks for"}
)

// Store keeps sales.
type Store interface {
	// CreateSale stores s and takes s.Stock units from its product's stock in
	// one transaction. Returns ErrSaleExists, catalog.ErrProductNotFound or
	// ErrInsufficientStock.
	CreateSale(ctx context.Context, s Sale) error
	// Sale returns the sale, or ErrSaleNotFound.
	Sale(ctx context.Context, id string) (Sale, error)
	// Sales returns every sale.
	Sales(ctx context.Context) ([]Sale, error)
}

// Ender ends sales early and settles ended ones. Its two steps are each
// applied once, whoever asks how many times.
type Ender interface {
	// EndSale sets the sale's EndsAt to at unless it already ends by then,
	// and returns the sale as stored.
	EndSale(ctx context.Context, id string, at time.Time) (Sale, error)
	// SettleSale gives unsold units of an ended sale back to its product
	// and sets SettledAt, in one transaction; applied is false (and
	// nothing changes) when the sale was settled already.
	SettleSale(ctx context.Context, id string, unsold int64, at time.Time) (s Sale, applied bool, err error)
}

// Counters is the part of the stock counters a sale needs: opening a new
// sale's counters and reading how many units remain.
type Counters interface {
	// Open starts counting a new sale with all its units remaining.
	Open(ctx context.Context, s Sale) error
	// Remaining returns a sale's units left; ok is false while its
	// counters are unknown or being rebuilt.
	Remaining(ctx context.Context, saleID string) (remaining int64, ok bool, err error)
	// End moves the end of an open sale's window to at, on every instance.
	End(ctx context.Context, saleID string, at time.Time) error
}

// View is a sale as clients see it.
type View struct {
	Sale
	Remaining int64
	Sold      int64
	State     State
}

// Service applies the sale rules. It is safe for concurrent use.
type Service struct {
	store    Store
	counters Counters
	now      func() time.Time
}

// NewService returns a Service over store whose stock lives in counters.
func NewService(store Store, counters Counters) *Service {
	return &Service{store: store, counters: counters, now: time.Now}
}

// Create validates s, stores it (taking its stock from the product) and
// opens its stock counters. A zero StartsAt means now; a zero PerUserLimit
// means 1.
func (s *Service) Create(ctx context.Context, sl Sale) (Sale, error) {
	if sl.StartsAt.IsZero() {
		sl.StartsAt = s.now()
	}
	if sl.PerUserLimit == 0 {
		sl.PerUserLimit = 1
	}
	sl.StartsAt = sl.StartsAt.UTC().Truncate(time.Millisecond)
	if !sl.EndsAt.IsZero() {
		sl.EndsAt = sl.EndsAt.UTC().Truncate(time.Millisecond)
	}
	if err := sl.Validate(); err != nil {
		return Sale{}, err
	}
	if !sl.EndsAt.IsZero() && !sl.EndsAt.After(s.now()) {
		return Sale{}, spike.Errorf(spike.ErrInvalid, "ends_at must be in the future")
	}
	if err := s.store.CreateSale(ctx, sl); err != nil {
		return Sale{}, err
	}
	if err := s.counters.Open(ctx, sl); err != nil {
		// The sale is stored: its counters are rebuilt from the record
		// (embedded: at the next start; clustered: when first fenced).
		return sl, fmt.Errorf("open stock counters of sale %s: %w", sl.ID, err)
	}
	return sl, nil
}

// View returns the sale with its live remaining and sold units.
func (s *Service) View(ctx context.Context, id string) (View, error) {
	if !spike.ValidID(id) {
		return View{}, ErrSaleNotFound
	}
	sl, err := s.store.Sale(ctx, id)
	if err != nil {
		return View{}, err
	}
	remaining, ok, err := s.counters.Remaining(ctx, id)
	if err != nil {
		return View{}, err
	}
	if !ok {
		return View{}, spike.Errorf(spike.ErrUnavailable, "the sale's stock counters are being rebuilt")
	}
	return View{Sale: sl, Remaining: remaining, Sold: sl.Stock - remaining, State: sl.StateAt(s.now(), remaining)}, nil
}

// End ends a running or scheduled sale now: no placement is accepted from
// this moment on any instance, and its unsold units go back to the product
// once it is settled (see ledger.Returns). Ending an ended sale changes
// nothing.
func (s *Service) End(ctx context.Context, id string) (View, error) {
	if !spike.ValidID(id) {
		return View{}, ErrSaleNotFound
	}
	e, ok := s.store.(Ender)
	if !ok {
		return View{}, spike.Errorf(spike.ErrUnavailable, "this store cannot end sales")
	}
	sl, err := e.EndSale(ctx, id, s.now().UTC().Truncate(time.Millisecond))
	if err != nil {
		return View{}, err
	}
	if err := s.counters.End(ctx, sl.ID, sl.EndsAt); err != nil {
		return View{}, fmt.Errorf("end the stock counters of sale %s: %w", sl.ID, err)
	}
	return s.View(ctx, id)
}
