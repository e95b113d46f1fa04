package ledger

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/sale"
)

// Recovery rebuilds shared stock counters (clustered mode) after a loss: a
// sale whose counters are missing or from an older epoch fences (503), the
// counters report it (Fenced), and Run rebuilds the sale from the record:
// its persisted orders plus the events still on the stream. One rebuild
// per sale and instance at a time; other instances wait for the winner's
// new epoch.
type Recovery struct {
	stock  inventory.Rebuilder
	sales  sale.Store
	orders order.Store
	events EventSource
	cfg    RecoveryConfig

	fenced     chan string
	rebuilding sync.Map // sale id → struct{}: queued or running

	rebuilt, failed atomic.Uint64 // rebuilds by outcome, for metrics
}

// RecoveryConfig configures a Recovery. The zero RecoveryConfig is valid.
type RecoveryConfig struct {
	// Timeout bounds one rebuild. If zero, 2 minutes is used.
	Timeout time.Duration
	// Queue bounds the fenced sales waiting for Run; a sale reported while
	// it is full is dropped (the counters report it again on a later
	// reserve). If zero, 1024 is used.
	Queue int
	// Log receives the outcome of each rebuild. If nil, slog.Default().
	Log *slog.Logger
}

// NewRecovery returns a Recovery that reads the record from sales, orders
// and events. Set its counters with SetStock before Run (the counters take
// Fenced as a callback, so they are made after it).
func NewRecovery(sales sale.Store, orders order.Store, events EventSource, cfg RecoveryConfig) *Recovery {
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.Queue == 0 {
		cfg.Queue = 1024
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Recovery{sales: sales, orders: orders, events: events, cfg: cfg, fenced: make(chan string, cfg.Queue)}
}

// SetStock names the counters to rebuild; call it before Run.
func (r *Recovery) SetStock(stock inventory.Rebuilder) { r.stock = stock }

// Fenced reports a sale whose counters are fenced; it never blocks. It is
// the counters' OnFenced callback.
func (r *Recovery) Fenced(saleID string) {
	if _, busy := r.rebuilding.LoadOrStore(saleID, struct{}{}); busy {
		return
	}
	select {
	case r.fenced <- saleID:
	default:
		r.rebuilding.Delete(saleID)
	}
}

// Run rebuilds the fenced sales until ctx is done, then waits for the
// rebuilds under way (which ctx cancels) and returns.
func (r *Recovery) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return nil
		case id := <-r.fenced:
			wg.Go(func() {
				defer r.rebuilding.Delete(id)
				r.rebuild(ctx, id)
			})
		}
	}
}

func (r *Recovery) rebuild(ctx context.Context, saleID string) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	began := time.Now()
	s, err := r.sales.Sale(ctx, saleID)
	if err != nil {
		r.failed.Add(1)
		r.cfg.Log.Error("rebuild: read sale", "sale_id", saleID, "err", err)
		return
	}
	done, err := r.stock.Rebuild(ctx, s, func(ctx context.Context) ([]inventory.Holding, error) {
		return SaleHoldings(ctx, r.orders, r.events, saleID)
	})
	switch {
	case err != nil:
		r.failed.Add(1)
		r.cfg.Log.Error("rebuild stock counters", "sale_id", saleID, "err", err)
	case done:
		r.rebuilt.Add(1)
		r.cfg.Log.Warn("stock counters rebuilt after loss", "sale_id", saleID, "fenced_for", time.Since(began).Round(time.Millisecond))
	}
}

// Fencing returns the sales this instance found fenced and has not yet
// seen rebuilt (queued, rebuilding, or waiting for another instance's
// rebuild). Read by the metrics at scrape time.
func (r *Recovery) Fencing() []string {
	var ids []string
	r.rebuilding.Range(func(k, _ any) bool {
		ids = append(ids, k.(string))
		return true
	})
	return ids
}

// Rebuilds returns how many rebuilds this instance completed and how many
// failed (the sale stays fenced and is reported again on its next reserve).
func (r *Recovery) Rebuilds() (rebuilt, failed uint64) {
	return r.rebuilt.Load(), r.failed.Load()
}
