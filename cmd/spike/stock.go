package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/redisstock"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/internal/ledger"
)

// stock is the stock counters as the rest of the wiring sees them: in
// process (embedded, one instance) or on Redis (any number of instances).
type stock interface {
	order.Reserver
	sale.Counters
	ledger.StatsSource
}

// redisStock adapts the Redis counters and runs their recovery: a sale
// whose counters are missing or from an older epoch fences (503), and one
// instance rebuilds it from the database plus the stream.
type redisStock struct {
	*redisstock.Counters
	client rueidis.Client
	log    *slog.Logger

	sales  sale.Store
	orders order.Store
	events ledger.EventSource

	rebuilding sync.Map // sale id → struct{}: one rebuild per sale per instance
	ctx        context.Context
}

func (r *redisStock) Open(ctx context.Context, s sale.Sale) error {
	return r.Counters.Open(ctx, ledger.Campaign(s))
}

func openRedisStock(cfg Config, ids *spike.IDGenerator, st stores, events ledger.EventSource, enqueueTimeout time.Duration, log *slog.Logger) (*redisStock, error) {
	client, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:      cfg.Redis.Addrs,
		Password:         string(cfg.Redis.Password),
		ConnWriteTimeout: 2 * time.Second,
		// Client-side caching is not used: sold-out news travels by pub/sub.
		DisableCache: true,
	})
	if err != nil {
		return nil, fmt.Errorf("connect to redis %v: %w", cfg.Redis.Addrs, err)
	}
	r := &redisStock{client: client, log: log, sales: st, orders: st, events: events, ctx: context.Background()}
	r.Counters = redisstock.New(client, ids, redisstock.Options{
		// A placement that reserved before the fence reaches the stream
		// (or gives up) within the enqueue timeout; the rebuild waits that
		// long before reading the record.
		Settle:   enqueueTimeout + time.Second,
		OnFenced: r.rebuild,
		Lookup: func(ctx context.Context, id string) (inventory.Campaign, error) {
			s, err := st.Sale(ctx, id)
			if errors.Is(err, sale.ErrSaleNotFound) {
				return inventory.Campaign{}, inventory.ErrSaleNotFound
			}
			if err != nil {
				return inventory.Campaign{}, err
			}
			return ledger.Campaign(s), nil
		},
	})
	return r, nil
}

// rebuild restores a fenced sale's counters from the record, once per
// instance at a time; other instances wait for the winner's new epoch.
func (r *redisStock) rebuild(saleID string) {
	if _, busy := r.rebuilding.LoadOrStore(saleID, struct{}{}); busy {
		return
	}
	go func() {
		defer r.rebuilding.Delete(saleID)
		ctx, cancel := context.WithTimeout(r.ctx, 2*time.Minute)
		defer cancel()
		began := time.Now()
		s, err := r.sales.Sale(ctx, saleID)
		if err != nil {
			r.log.Error("rebuild: read sale", "sale_id", saleID, "err", err)
			return
		}
		done, err := r.Counters.Rebuild(ctx, ledger.Campaign(s), func(ctx context.Context) ([]inventory.Holding, error) {
			return ledger.SaleHoldings(ctx, r.orders, r.events, saleID)
		})
		switch {
		case err != nil:
			r.log.Error("rebuild stock counters", "sale_id", saleID, "err", err)
		case done:
			r.log.Warn("stock counters rebuilt after loss", "sale_id", saleID, "fenced_for", time.Since(began).Round(time.Millisecond))
		}
	}()
}

func (r *redisStock) Close() { r.client.Close() }
