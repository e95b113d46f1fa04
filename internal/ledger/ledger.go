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

// SaleHoldings reads one sale's holdings from the record: its persisted
// orders and its events still on the stream (read first), each order id
// once; orders that are no longer live (cancelled, refunded) are marked
// Returned, so that the rebuilt counters count them returned. Clustered
// stock counters rebuild a fenced sale from it.
func SaleHoldings(ctx context.Context, orders order.Store, events EventSource, saleID string) ([]inventory.Holding, error) {
	queued, err := events.Unpersisted(ctx)
	if err != nil {
		return nil, fmt.Errorf("read stream: %w", err)
	}
	var mine []order.Placed
	for _, e := range queued {
		if e.SaleID == saleID {
			mine = append(mine, e)
		}
	}
	hs, _, err := saleHoldings(ctx, orders, saleID, mine)
	return hs, err
}

// saleHoldings converts a sale's orders (scanSale) to holdings, and
// returns the events it took.
func saleHoldings(ctx context.Context, orders order.Store, saleID string, queued []order.Placed) ([]inventory.Holding, []order.Placed, error) {
	var out []inventory.Holding
	took, err := scanSale(ctx, orders, saleID, queued, func(o *order.Order) {
		out = append(out, holding(o))
	})
	if err != nil {
		return nil, nil, err
	}
	return out, took, nil
}

// scanSale calls visit with each of a sale's persisted orders as it is
// read (ScanSaleOrders), then with each of its events in queued that is
// not persisted, each order id once (the first wins: a persisted order
// before its event); it returns the events it took. The record is never
// held whole: rebuilds and audits of a sale of a million orders keep what
// they need of each order, not the orders.
func scanSale(ctx context.Context, orders order.Store, saleID string, queued []order.Placed, visit func(*order.Order)) ([]order.Placed, error) {
	seen := make(map[string]bool, len(queued)) // event id → persisted or taken
	for _, e := range queued {
		seen[e.OrderID] = false
	}
	err := orders.ScanSaleOrders(ctx, saleID, func(o *order.Order) error {
		if taken, ok := seen[o.ID]; ok {
			if taken {
				return nil
			}
			seen[o.ID] = true
		}
		visit(o)
		return nil
	})
	if err != nil {
		return nil, err
	}
	var took []order.Placed
	for _, e := range queued {
		if !seen[e.OrderID] {
			seen[e.OrderID] = true
			o := e.Order()
			visit(&o)
			took = append(took, e)
		}
	}
	return took, nil
}

// backInSale reports whether a rebuild counts o's units as back in its
// sale: given back to it, or cancelled (or refunded before shipping) and
// not yet given back anywhere, in which case the rebuild gives them back
// and the outbox's later Return finds the order returned and does nothing.
// Units that went to the product after the sale ended, and units that
// shipped, are still held as far as the sale's counters are concerned.
func backInSale(o order.Order) bool {
	switch o.StockReturnedTo {
	case ReturnedToSale:
		return true
	case ReturnedToProduct:
		return false
	}
	return !o.Status.Live() && (o.Status == order.Cancelled || o.ShippedAt.IsZero())
}

// holding is what the stock counters keep of o.
func holding(o *order.Order) inventory.Holding {
	return inventory.Holding{OrderID: o.ID, UserID: o.UserID, Key: o.IdempotencyKey, Quantity: o.Quantity,
		PlacedAt: o.CreatedAt, Returned: backInSale(*o)}
}

// Rebuild restores every sale's stock counters from the record and returns
// the events still queued, so the caller can index them as pending orders.
// It reads the record sale by sale and order by order (ScanSaleOrders)
// rather than all of it at once: a restart after a sale of a million
// orders holds their holdings, not the orders. Nothing may place orders
// meanwhile (embedded mode, at start).
func Rebuild(ctx context.Context, sales sale.Store, orders order.Store, events EventSource, stock inventory.Stock) ([]order.Placed, error) {
	queued, err := events.Unpersisted(ctx)
	if err != nil {
		return nil, fmt.Errorf("rebuild stock counters: read stream: %w", err)
	}
	all, err := sales.Sales(ctx)
	if err != nil {
		return nil, fmt.Errorf("rebuild stock counters: %w", err)
	}
	bySale := make(map[string][]order.Placed)
	for _, e := range queued {
		bySale[e.SaleID] = append(bySale[e.SaleID], e)
	}
	known := make(map[string]bool, len(all))
	took := make(map[string]bool) // events not persisted
	for _, s := range all {
		hs, t, err := saleHoldings(ctx, orders, s.ID, bySale[s.ID])
		if err != nil {
			return nil, fmt.Errorf("rebuild stock counters: %w", err)
		}
		for _, e := range t {
			took[e.OrderID] = true
		}
		known[s.ID] = true
		if err := stock.Restore(ctx, s, hs); err != nil {
			return nil, fmt.Errorf("rebuild stock counters: %w", err)
		}
	}
	// The events not persisted (and those of no known sale), each once,
	// in the stream's order.
	var out []order.Placed
	listed := make(map[string]bool, len(took))
	for _, e := range queued {
		if (took[e.OrderID] || !known[e.SaleID]) && !listed[e.OrderID] {
			listed[e.OrderID] = true
			out = append(out, e)
		}
	}
	return out, nil
}
