package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/payment"
	"github.com/spikehq/spike/internal/domain/sale"
)

// Products lists products and their stock moves.
type Products interface {
	Products(ctx context.Context) ([]catalog.Product, error)
	StockMoves(ctx context.Context, sku string) ([]catalog.StockMove, error)
}

// PaymentLister lists every payment record.
type PaymentLister interface {
	Payments(ctx context.Context, after string, limit int) ([]payment.Payment, error)
}

// LifecycleAudit is what the audit of life after the 202 reads: I6
// (deadlines kept, stock back exactly once), I7 (money matches orders) and
// product-level conservation.
type LifecycleAudit struct {
	Products Products
	Payments PaymentLister // nil: I7 is not checked
	// Grace is how late a deadline or a stock return may be before it is
	// a failure; zero means 5 s (I6).
	Grace time.Duration
	Now   func() time.Time
}

// heldByOrder is the number of units of o that are neither in its sale's
// counters nor in its product's stock: with the buyer, or on their way
// back (cancelled, not yet returned).
func heldByOrder(o order.Order) int64 {
	switch {
	case o.Status.Live():
		return o.Quantity
	case o.Status == order.Refunded && !o.ShippedAt.IsZero():
		return o.Quantity // shipped units stay with the buyer
	case o.StockReturnedTo == "":
		return o.Quantity // not yet back
	}
	return 0
}

// inSaleCounters reports the units of o the sale's counters count as held:
// all of them, unless they were given back to the sale.
func inSaleCounters(o order.Order) int64 {
	if o.StockReturnedTo == ReturnedToSale {
		return 0
	}
	return o.Quantity
}

// Counters rebuilt from the record count a cancelled order not yet through
// the outbox as returned (backInSale): the audit reads the outbox's mark,
// so it may see such an order held for the moment until the outbox marks
// it, and reads again (Audit retries).

// lifecycleScan gathers what the lifecycle checks need as the audit reads
// the record, one order at a time: the late and unreturned orders, units
// held per product, and the paid side's statuses.
type lifecycleScan struct {
	l          *LifecycleAudit
	now        time.Time
	grace      time.Duration
	queued     []order.Placed // the stream's events, for statuses (below)
	late       []string
	unreturned []string
	heldBySKU  map[string]int64
	paidSide   map[string]order.Status // paid, shipped, delivered or refunded orders
}

func (l *LifecycleAudit) newScan(queued []order.Placed) *lifecycleScan {
	c := &lifecycleScan{l: l, now: time.Now(), grace: l.Grace, queued: queued,
		heldBySKU: make(map[string]int64), paidSide: make(map[string]order.Status)}
	if l.Now != nil {
		c.now = l.Now()
	}
	if c.grace <= 0 {
		c.grace = 5 * time.Second
	}
	return c
}

// visit takes one order of the record into account; a nil scan (no
// lifecycle checks) ignores it.
func (c *lifecycleScan) visit(o *order.Order) {
	if c == nil {
		return
	}
	c.heldBySKU[o.SKU] += heldByOrder(*o)
	if paidStatus(o.Status) || o.Status == order.Refunded {
		c.paidSide[o.ID] = o.Status
	}
	if o.Status == order.Created && !o.PaymentDeadline.IsZero() && c.now.Sub(o.PaymentDeadline) > c.grace {
		c.late = append(c.late, fmt.Sprintf("%s unpaid %s past its deadline", o.ID, c.now.Sub(o.PaymentDeadline).Round(time.Millisecond)))
	}
	if order.ReturnsStock(returnedFrom(*o), o.Status) && o.StockReturnedTo == "" && c.now.Sub(o.UpdatedAt) > c.grace {
		c.unreturned = append(c.unreturned, fmt.Sprintf("%s %s %s ago, units not back", o.ID, o.Status, c.now.Sub(o.UpdatedAt).Round(time.Millisecond)))
	}
}

// checks returns I6, product conservation and I7 once every order has
// been visited; remaining holds each loaded sale's remaining units.
func (c *lifecycleScan) checks(ctx context.Context, orders order.Store, sales []sale.Sale, remaining map[string]int64) ([]Check, error) {
	l := c.l
	checks := []Check{result("I6 deadlines kept", append(c.late, c.unreturned...),
		"no order unpaid past its deadline; every cancelled order's units are back (counted once: see I4 and product conservation)")}

	// Product-level conservation.
	products, err := l.Products.Products(ctx)
	if err != nil {
		return nil, err
	}
	salesBySKU := make(map[string][]sale.Sale)
	for _, s := range sales {
		salesBySKU[s.SKU] = append(salesBySKU[s.SKU], s)
	}
	var leaks []string
	unknown := 0
	for _, p := range products {
		moves, err := l.Products.StockMoves(ctx, p.SKU)
		if err != nil {
			return nil, err
		}
		var ledgerStock, added int64
		for _, m := range moves {
			ledgerStock += m.Delta
			if strings.HasPrefix(m.Key, catalog.MoveCreate) || strings.HasPrefix(m.Key, catalog.MoveAdmin) || m.Key == "baseline" {
				added += m.Delta
			}
		}
		if ledgerStock != p.Stock {
			leaks = append(leaks, fmt.Sprintf("%s: stock %d but its recorded moves sum to %d", p.SKU, p.Stock, ledgerStock))
			continue
		}
		in := p.Stock
		skip := false
		for _, s := range salesBySKU[p.SKU] {
			if !s.SettledAt.IsZero() {
				continue // its unsold units are in the product's stock
			}
			rem, ok := remaining[s.ID]
			if !ok {
				skip = true
				break
			}
			in += rem
		}
		if skip {
			unknown++
			continue
		}
		in += c.heldBySKU[p.SKU]
		if in != added {
			leaks = append(leaks, fmt.Sprintf("%s: %d units added, %d found (stock %d + sales' remaining + orders)", p.SKU, added, in, p.Stock))
		}
	}
	checks = append(checks, result("product conservation", leaks,
		fmt.Sprintf("%d products: every unit added is in the product's stock, a sale's remaining or an order (%d skipped: counters not loaded)", len(products), unknown)))

	if l.Payments == nil {
		return checks, nil
	}
	var money []string
	captured := make(map[string]int) // order id → succeeded payments not refunded
	paidBy := make(map[string]bool)
	// Succeeded, not refunded, for an order not paid: their messages are
	// written once the orders' statuses are known, at the places kept.
	type strayPayment struct {
		at          int // index in money
		id, orderID string
	}
	var stray []strayPayment
	after := ""
	for {
		ps, err := l.Payments.Payments(ctx, after, 1000)
		if err != nil {
			return nil, err
		}
		for _, p := range ps {
			after = p.ID
			if p.Status != payment.Succeeded {
				continue
			}
			paidBy[p.OrderID] = true
			refunded := !p.RefundedAt.IsZero()
			if p.RefundedCents > p.AmountCents {
				money = append(money, fmt.Sprintf("payment %s refunded %d of %d cents", p.ID, p.RefundedCents, p.AmountCents))
			}
			if refunded {
				continue
			}
			captured[p.OrderID]++
			if !paidStatus(c.paidSide[p.OrderID]) {
				stray = append(stray, strayPayment{len(money), p.ID, p.OrderID})
				money = append(money, "")
			}
		}
		if len(ps) < 1000 {
			break
		}
	}
	for _, p := range stray {
		// Rare: the orders' statuses, one lookup each, for the messages
		// the detail lists; a failed lookup does not fail the audit.
		st := "not listed"
		if p.at < maxListed {
			s, err := c.status(ctx, orders, p.orderID)
			if st = string(s); err != nil {
				st = "status unknown: " + err.Error()
			}
		}
		money[p.at] = fmt.Sprintf("payment %s succeeded for order %s (%s) and is not refunded", p.id, p.orderID, st)
	}
	for id, n := range captured {
		if n > 1 {
			money = append(money, fmt.Sprintf("order %s captured %d times", id, n))
		}
	}
	for id, st := range c.paidSide {
		if !paidBy[id] {
			money = append(money, fmt.Sprintf("order %s is %s without a succeeded payment", id, st))
		}
	}
	checks = append(checks, result("I7 money matches orders", money,
		"every succeeded payment is for a paid, shipped or delivered order or refunded; no paid order without one; none captured twice"))
	return checks, nil
}

// status returns the status of order id in the record: persisted, or an
// event on the stream (pending); "" if it is in neither.
func (c *lifecycleScan) status(ctx context.Context, orders order.Store, id string) (order.Status, error) {
	o, err := orders.Order(ctx, id)
	if err == nil {
		return o.Status, nil
	}
	if !errors.Is(err, order.ErrOrderNotFound) {
		return "", err
	}
	for _, e := range c.queued {
		if e.OrderID == id {
			return order.Pending, nil
		}
	}
	return "", nil
}

// paidStatus reports whether an order in status st holds a captured
// payment: paid, shipped or delivered.
func paidStatus(st order.Status) bool {
	return st == order.Paid || st == order.Shipped || st == order.Delivered
}

// returnedFrom is the status an order left when it reached its current
// one, as far as the stock is concerned: a refunded order that never
// shipped was refunded from paid.
func returnedFrom(o order.Order) order.Status {
	if o.Status == order.Refunded {
		if o.ShippedAt.IsZero() {
			return order.Paid
		}
		return order.Shipped
	}
	return order.Created
}
