// Package catalog is the product service: products with a SKU, a name, a
// price and the stock not yet allocated to any sale. Product reads are the
// hot read path; writes are rare and made by admins.
package catalog

import (
	"context"
	"time"
	"unicode/utf8"

	"github.com/spikehq/spike"
)

// Product is a sellable item. Stock is what the product still holds: units
// allocated to a sale leave it when the sale is created.
type Product struct {
	SKU        string `json:"sku"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
	Stock      int64  `json:"stock"`
}

// ProductUpdate changes the fields that are set.
type ProductUpdate struct {
	Name       *string `json:"name"`
	PriceCents *int64  `json:"price_cents"`
}

// Errors returned by a Store.
var (
	ErrProductNotFound = &spike.Error{Kind: spike.ErrNotFound, Message: "product not found"}
	ErrProductExists   = &spike.Error{Kind: spike.ErrConflict, Message: "a product with this sku already exists"}
)

// Store keeps products. Implementations return ErrProductNotFound and
// ErrProductExists as documented on each method.
type Store interface {
	// CreateProduct stores p, or returns ErrProductExists.
	CreateProduct(ctx context.Context, p Product) error
	// Product returns the product, or ErrProductNotFound.
	Product(ctx context.Context, sku string) (Product, error)
	// UpdateProduct applies u and returns the result, or ErrProductNotFound.
	UpdateProduct(ctx context.Context, sku string, u ProductUpdate) (Product, error)
}

// Service applies the catalog's rules in front of a Store.
// It is safe for concurrent use.
type Service struct {
	store Store
}

// NewService returns a Service over store.
func NewService(store Store) *Service { return &Service{store: store} }

// Validate reports the first rule p breaks, as an ErrInvalid *spike.Error.
func (p Product) Validate() error {
	switch {
	case !spike.ValidID(p.SKU):
		return spike.Errorf(spike.ErrInvalid, "sku must be 1-64 characters of [A-Za-z0-9._-]")
	case !validName(p.Name):
		return spike.Errorf(spike.ErrInvalid, "name must be 1-200 characters")
	case p.PriceCents < 0 || p.PriceCents > spike.MaxPriceCents:
		return spike.Errorf(spike.ErrInvalid, "price_cents must be between 0 and %d", spike.MaxPriceCents)
	case p.Stock < 0:
		return spike.Errorf(spike.ErrInvalid, "stock must be >= 0")
	}
	return nil
}

func validName(s string) bool {
	n := utf8.RuneCountInString(s)
	return n >= 1 && n <= 200 && utf8.ValidString(s)
}

// Create validates and stores a new product.
func (s *Service) Create(ctx context.Context, p Product) (Product, error) {
	if err := p.Validate(); err != nil {
		return Product{}, err
	}
	if err := s.store.CreateProduct(ctx, p); err != nil {
		return Product{}, err
	}
	return p, nil
}

// Product returns the product with the given SKU.
func (s *Service) Product(ctx context.Context, sku string) (Product, error) {
	if !spike.ValidID(sku) {
		return Product{}, ErrProductNotFound
	}
	return s.store.Product(ctx, sku)
}

// Update changes a product's name and/or price.
func (s *Service) Update(ctx context.Context, sku string, u ProductUpdate) (Product, error) {
	if !spike.ValidID(sku) {
		return Product{}, ErrProductNotFound
	}
	if u.Name != nil && !validName(*u.Name) {
		return Product{}, spike.Errorf(spike.ErrInvalid, "name must be 1-200 characters")
	}
	if u.PriceCents != nil && (*u.PriceCents < 0 || *u.PriceCents > spike.MaxPriceCents) {
		return Product{}, spike.Errorf(spike.ErrInvalid, "price_cents must be between 0 and %d", spike.MaxPriceCents)
	}
	return s.store.UpdateProduct(ctx, sku, u)
}

// StockMove is one recorded change of a product's stock: a restock or a
// write-off by an admin, units coming back from an order or a sale that
// ended, or units leaving for a sale. Moves are applied once per (SKU, Key).
type StockMove struct {
	SKU    string    `json:"sku"`
	Key    string    `json:"key"`   // idempotency key: "restock:<admin's key>", "order:<id>", "sale-end:<id>", ...
	Delta  int64     `json:"delta"` // units added (< 0: removed)
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Where stock moves come from, as the prefix of their Key.
const (
	MoveCreate  = "create:"   // the product's initial stock
	MoveAdmin   = "admin:"    // a restock or write-off by an admin
	MoveSale    = "sale:"     // units allocated to a sale (negative)
	MoveSaleEnd = "sale-end:" // an ended sale's unsold units
	MoveOrder   = "order:"    // a cancelled or refunded order's units after its sale ended
)

// ErrInsufficientStock is a write-off larger than the product's stock.
var ErrInsufficientStock = &spike.Error{Kind: spike.ErrInsufficient, Message: "the product has less stock than the write-off takes"}

// StockLedger is the part of a Store that records stock moves.
type StockLedger interface {
	// AdjustStock applies m to its product's stock and records it, in one
	// transaction, unless a move with the same (SKU, Key) was recorded
	// before: then it changes nothing and returns the product with
	// applied=false. A move that would take the stock below zero is
	// ErrInsufficientStock; an unknown SKU, ErrProductNotFound.
	AdjustStock(ctx context.Context, m StockMove) (p Product, applied bool, err error)
	// StockMoves returns every recorded move of the product, oldest first.
	StockMoves(ctx context.Context, sku string) ([]StockMove, error)
}

// maxReason bounds a stock move's reason.
const maxReason = 500

// AdjustStock restocks (delta > 0) or writes off (delta < 0) an admin's
// units, once per idempotency key: a repeat returns the product as it is.
func (s *Service) AdjustStock(ctx context.Context, sku, key string, delta int64, reason string) (Product, error) {
	if !spike.ValidID(sku) {
		return Product{}, ErrProductNotFound
	}
	switch {
	case !spike.ValidIdempotencyKey(key):
		return Product{}, spike.Errorf(spike.ErrInvalid, "Idempotency-Key must be 1-128 printable ASCII characters")
	case delta == 0:
		return Product{}, spike.Errorf(spike.ErrInvalid, "delta must not be 0")
	case delta > maxDelta || delta < -maxDelta:
		return Product{}, spike.Errorf(spike.ErrInvalid, "delta must be between %d and %d", -maxDelta, maxDelta)
	case utf8.RuneCountInString(reason) > maxReason || !utf8.ValidString(reason):
		return Product{}, spike.Errorf(spike.ErrInvalid, "reason must be at most %d characters", maxReason)
	}
	l, ok := s.store.(StockLedger)
	if !ok {
		return Product{}, spike.Errorf(spike.ErrUnavailable, "this store does not record stock moves")
	}
	p, _, err := l.AdjustStock(ctx, StockMove{SKU: sku, Key: MoveAdmin + key, Delta: delta, Reason: reason, At: time.Now().UTC()})
	return p, err
}

// maxDelta bounds one restock or write-off.
const maxDelta = 1_000_000_000
