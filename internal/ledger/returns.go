package ledger

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/sale"
)

// Where a cancelled order's units went back to.
const (
	ReturnedToSale    = "sale"
	ReturnedToProduct = "product"
)

// ReturnStock is the part of the stock counters that takes units back.
type ReturnStock interface {
	// Return gives a cancelled order's units back to its sale while the
	// sale runs, once per order id (returned is false for a repeat). It
	// fails with inventory.ErrSaleEnded once the sale's window is over
	// (unless the order was returned before), and the units then go to the
	// product instead.
	Return(ctx context.Context, r inventory.Return) (returned bool, err error)
	// Remaining returns a sale's units left; ok is false while they are
	// unknown (being rebuilt).
	Remaining(ctx context.Context, saleID string) (remaining int64, ok bool, err error)
}

// ReturnOrders is the order store's outbox of stock returns.
type ReturnOrders interface {
	StockToReturn(ctx context.Context, limit int) ([]order.Order, error)
	MarkStockReturned(ctx context.Context, id, to string) error
}

// ProductStock adjusts a product's stock once per key.
type ProductStock interface {
	AdjustStock(ctx context.Context, m catalog.StockMove) (p catalog.Product, applied bool, err error)
}

// SaleLedger reads sales and settles ended ones.
type SaleLedger interface {
	sale.Store
	sale.Ender
}

// ReturnsConfig configures Returns. Every field may be left zero.
type ReturnsConfig struct {
	// Interval is how often the outbox and the ended sales are polled
	// besides kicks; zero means 1 s.
	Interval time.Duration
	// SettleAfter is how long after its end a sale is settled: long enough
	// for placements in flight at the end (whose enqueue fails and whose
	// units are then released) to finish. Zero means 10 s.
	SettleAfter time.Duration
	Now         func() time.Time
	Logger      *slog.Logger
}

// Returns gives stock back exactly once: the units of cancelled orders (and
// of orders refunded before shipping) to their sale while it runs, or to
// the product once it has ended; and the unsold units of an ended sale to
// the product. The orders to return are an outbox in the order store
// (written in the same transaction as the cancellation), so a crash between
// the cancellation and the return only delays it; every step is idempotent
// (the counters by order id, the product by the move's key), so the outbox
// may be replayed by any instance, any number of times.
type Returns struct {
	stock    ReturnStock
	orders   ReturnOrders
	products ProductStock
	sales    SaleLedger
	cfg      ReturnsConfig
	log      *slog.Logger
	kick     chan struct{}
}

// NewReturns returns a Returns; run it with Run.
func NewReturns(stock ReturnStock, orders ReturnOrders, products ProductStock, sales SaleLedger, cfg ReturnsConfig) *Returns {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.SettleAfter <= 0 {
		cfg.SettleAfter = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Returns{stock: stock, orders: orders, products: products, sales: sales, cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1)}
}

// Kick asks Run to look at the outbox now (a cancellation just committed).
// It never blocks.
func (r *Returns) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run drains the outbox and settles ended sales until ctx is done.
func (r *Returns) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	lastSettle := time.Time{}
	for {
		if _, err := r.ReturnDue(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("stock returns", "err", err)
		}
		if now := r.cfg.Now(); now.Sub(lastSettle) >= r.cfg.Interval {
			lastSettle = now
			if _, err := r.SettleEnded(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("settle ended sales", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-r.kick:
		}
	}
}

// ReturnDue returns the units of every order in the outbox and reports how
// many orders it handled.
func (r *Returns) ReturnDue(ctx context.Context) (int, error) {
	n := 0
	for {
		due, err := r.orders.StockToReturn(ctx, 256)
		if err != nil {
			return n, err
		}
		progress := false
		waiting := make(map[string]bool) // sales whose counters cannot take returns now
		for _, o := range due {
			if waiting[o.SaleID] {
				continue
			}
			to, err := r.returnOrder(ctx, o)
			if err != nil {
				// Counters being rebuilt (or unreachable) refuse every order
				// of the sale alike: one line, and the next pass tries again.
				waiting[o.SaleID] = true
				r.log.Warn("return stock: will retry", "sale_id", o.SaleID, "order_id", o.ID, "err", err)
				continue
			}
			if err := r.orders.MarkStockReturned(ctx, o.ID, to); err != nil {
				return n, err
			}
			n++
			progress = true
		}
		if len(due) < 256 || !progress {
			return n, nil
		}
	}
}

func (r *Returns) returnOrder(ctx context.Context, o order.Order) (to string, err error) {
	s, err := r.sales.Sale(ctx, o.SaleID)
	if err != nil {
		return "", err
	}
	if s.SettledAt.IsZero() {
		_, err := r.stock.Return(ctx, inventory.Return{SaleID: o.SaleID, OrderID: o.ID, UserID: o.UserID, Key: o.IdempotencyKey, Quantity: o.Quantity})
		if err == nil {
			return ReturnedToSale, nil
		}
		if !errors.Is(err, inventory.ErrSaleEnded) {
			return "", err
		}
	}
	// The sale has ended: the units go to the product, once (the move's key).
	_, _, err = r.products.AdjustStock(ctx, catalog.StockMove{
		SKU: o.SKU, Key: "order:" + o.ID, Delta: o.Quantity, Reason: "order " + string(o.Status) + " after its sale ended",
	})
	if err != nil {
		return "", err
	}
	return ReturnedToProduct, nil
}

// SettleEnded gives the unsold units of every sale that ended at least
// SettleAfter ago back to its product, once, and reports how many sales it
// settled.
func (r *Returns) SettleEnded(ctx context.Context) (int, error) {
	all, err := r.sales.Sales(ctx)
	if err != nil {
		return 0, err
	}
	now := r.cfg.Now()
	n := 0
	for _, s := range all {
		if !s.SettledAt.IsZero() || !s.EndedAt(now.Add(-r.cfg.SettleAfter)) {
			continue
		}
		if err := r.Settle(ctx, s.ID); err != nil {
			r.log.Warn("settle sale", "sale_id", s.ID, "err", err)
			continue
		}
		n++
	}
	return n, nil
}

// Settle gives an ended sale's unsold units back to its product, once.
// Its remaining units no longer change once it has ended (no reservation
// and no return is accepted after the end), so reading them and settling
// may be repeated safely: the store applies the settlement once.
func (r *Returns) Settle(ctx context.Context, saleID string) error {
	remaining, ok, err := r.stock.Remaining(ctx, saleID)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("the sale's stock counters are being rebuilt")
	}
	_, applied, err := r.sales.SettleSale(ctx, saleID, remaining, r.cfg.Now().UTC())
	if applied {
		r.log.Info("sale settled: unsold units back to the product", "sale_id", saleID, "units", remaining)
	}
	return err
}
