// Package ledger ties the sale, inventory and order domains together at
// the two points where they must agree: rebuilding the stock counters from
// the record (persisted orders plus the events still on the stream), and
// auditing the invariants I1–I5 against that same record.
package ledger

import (
	"context"
	"fmt"

	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/sale"
)

// EventSource lists the OrderPlaced events still on the stream.
type EventSource interface {
	Unpersisted(ctx context.Context) ([]order.Placed, error)
	Backlog(ctx context.Context) (uint64, error)
}

// Campaign converts a sale to what the stock counters need.
func Campaign(s sale.Sale) inventory.Campaign {
	return inventory.Campaign{
		ID: s.ID, SKU: s.SKU, Allocated: s.Stock, PriceCents: s.PriceCents,
		PerUserLimit: s.PerUserLimit, StartsAt: s.StartsAt, EndsAt: s.EndsAt,
	}
}

// Record is everything known to be placed, per sale: persisted orders and
// events on the stream, each order id once (a persisted order wins).
type Record struct {
	Sales  []sale.Sale
	Orders map[string][]order.Order // by sale id
	Queued []order.Placed           // events on the stream, not yet persisted
}

// ReadRecord reads the record. The stream is read before the database, so
// an event persisted in between is seen at least once.
func ReadRecord(ctx context.Context, sales sale.Store, orders order.Store, events EventSource) (*Record, error) {
	queued, err := events.Unpersisted(ctx)
	if err != nil {
		return nil, fmt.Errorf("read stream: %w", err)
	}
	all, err := sales.Sales(ctx)
	if err != nil {
		return nil, err
	}
	r := &Record{Sales: all, Orders: make(map[string][]order.Order, len(all))}
	stored := make(map[string]bool)
	for _, s := range all {
		os, err := orders.SaleOrders(ctx, s.ID)
		if err != nil {
			return nil, err
		}
		for _, o := range os {
			stored[o.ID] = true
		}
		r.Orders[s.ID] = os
	}
	for _, e := range queued {
		if !stored[e.OrderID] {
			stored[e.OrderID] = true
			r.Queued = append(r.Queued, e)
			r.Orders[e.SaleID] = append(r.Orders[e.SaleID], e.Order())
		}
	}
	return r, nil
}

// SaleHoldings reads one sale's live holdings from the record: its live
// persisted orders and its events still on the stream (read first), each
// order id once. Clustered stock counters rebuild a fenced sale from it.
func SaleHoldings(ctx context.Context, orders order.Store, events EventSource, saleID string) ([]inventory.Holding, error) {
	queued, err := events.Unpersisted(ctx)
	if err != nil {
		return nil, fmt.Errorf("read stream: %w", err)
	}
	stored, err := orders.SaleOrders(ctx, saleID)
	if err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(stored)+len(queued))
	var out []inventory.Holding
	add := func(o order.Order) {
		if !seen[o.ID] && o.Status.Live() {
			out = append(out, inventory.Holding{OrderID: o.ID, UserID: o.UserID, Key: o.IdempotencyKey, Quantity: o.Quantity, PlacedAt: o.CreatedAt})
		}
		seen[o.ID] = true
	}
	for _, o := range stored {
		add(o)
	}
	for _, e := range queued {
		if e.SaleID == saleID {
			add(e.Order())
		}
	}
	return out, nil
}

// Rebuild restores every sale's stock counters from the record and returns
// the events still queued, so the caller can index them as pending orders.
func Rebuild(ctx context.Context, sales sale.Store, orders order.Store, events EventSource, counters *inventory.Counters) ([]order.Placed, error) {
	r, err := ReadRecord(ctx, sales, orders, events)
	if err != nil {
		return nil, fmt.Errorf("rebuild stock counters: %w", err)
	}
	for _, s := range r.Sales {
		var holdings []inventory.Holding
		for _, o := range r.Orders[s.ID] {
			if o.Status.Live() {
				holdings = append(holdings, inventory.Holding{OrderID: o.ID, UserID: o.UserID, Key: o.IdempotencyKey, Quantity: o.Quantity, PlacedAt: o.CreatedAt})
			}
		}
		counters.Restore(Campaign(s), holdings)
	}
	return r.Queued, nil
}

// Local adapts the in-process counters of embedded mode to what the sale
// domain and the audit need (the same method set as the Redis counters).
type Local struct{ *inventory.Counters }

// Open implements sale.Counters.
func (l Local) Open(_ context.Context, s sale.Sale) error {
	l.Counters.Open(Campaign(s))
	return nil
}

// Remaining implements sale.Counters.
func (l Local) Remaining(_ context.Context, id string) (int64, bool, error) {
	n, ok := l.Counters.Remaining(id)
	return n, ok, nil
}

// Stats implements StatsSource.
func (l Local) Stats(_ context.Context, id string) (inventory.Stats, bool, error) {
	s, ok := l.Counters.Stats(id)
	return s, ok, nil
}
