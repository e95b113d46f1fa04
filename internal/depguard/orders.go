package depguard

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/trace"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/resilience"
)

// OrderStore puts an order store behind two guards: its reads (buyers
// reading their orders, listings; OrderReads: a time budget, a bulkhead
// and a breaker) and its inserts (the order workers' batches;
// OrderWrites: a time budget and a breaker). A slow database sheds reads
// quickly instead of piling goroutines up. The workers insert once per
// batch, one batch at a time per instance, so writes need no bulkhead:
// when the database is slow or down the breaker opens and the workers'
// batches fail at once; the workers back off and the events stay on the
// durable stream, unacknowledged, until a trial insert succeeds.
type OrderStore struct {
	order.Store
	reads, writes *Guard
}

var _ order.Store = (*OrderStore)(nil)

// Errors of [OrderStore] for calls refused by a guard (503).
var (
	ErrOrderReadsShed  = &spike.Error{Kind: spike.ErrUnavailable, Message: "order reads are shed while the database is slow; retry shortly"}
	ErrOrderWritesOpen = &spike.Error{Kind: spike.ErrUnavailable, Message: "order writes are paused while the database is slow or down"}
)

// OrderStoreConfig configures [NewOrderStore]. The zero value is valid.
type OrderStoreConfig struct {
	// Metrics exports the guards; nil exports nothing.
	Metrics *Metrics
}

// NewOrderStore returns next's reads behind the OrderReads guard and its
// inserts behind the OrderWrites guard. Not found is an answer, not a
// failure of the database.
func NewOrderStore(next order.Store, cfg OrderStoreConfig) *OrderStore {
	m := cfg.Metrics
	isFailure := func(err error) bool {
		return err != nil && !errors.Is(err, order.ErrOrderNotFound) && !errors.Is(err, context.Canceled)
	}
	return &OrderStore{
		Store:  next,
		reads:  New(OrderReads, Config{IsFailure: isFailure, Metrics: m}),
		writes: New(OrderWrites, Config{Metrics: m}),
	}
}

// Reads and Writes return the guards.
func (s *OrderStore) Reads() *Guard  { return s.reads }
func (s *OrderStore) Writes() *Guard { return s.writes }

// read runs a read behind the reads guard; a refusal or a read cut by the
// time budget is ErrOrderReadsShed.
func (s *OrderStore) read(ctx context.Context, read func(context.Context) error) error {
	err := s.reads.Do(ctx, read)
	if errors.Is(err, resilience.ErrBulkheadFull) || errors.Is(err, resilience.ErrBreakerOpen) || errors.Is(err, resilience.ErrTimeout) {
		return ErrOrderReadsShed
	}
	return err
}

// Order implements order.Store.
func (s *OrderStore) Order(ctx context.Context, id string) (o order.Order, err error) {
	err = s.read(ctx, func(ctx context.Context) (err error) { o, err = s.Store.Order(ctx, id); return err })
	return o, err
}

// ListOrders implements order.Store.
func (s *OrderStore) ListOrders(ctx context.Context, userID int64, after order.Cursor, limit int) (os []order.Order, err error) {
	err = s.read(ctx, func(ctx context.Context) (err error) {
		os, err = s.Store.ListOrders(ctx, userID, after, limit)
		return err
	})
	return os, err
}

// InsertOrders implements order.Store. The deadline sweep's inserts
// (order.IsDeadlineWork: a few placements whose deadline is near) are not
// shed: refused by an open breaker, their orders would be cancelled as
// late as the breaker stays open (I6 allows 5 s; it opens for 5), and the
// sweep's own cancellations do not pass the breaker either.
func (s *OrderStore) InsertOrders(ctx context.Context, orders []order.Order) error {
	if order.IsDeadlineWork(ctx) {
		return s.Store.InsertOrders(ctx, orders)
	}
	err := s.writes.do(ctx, "order_writes.insert", func(ctx context.Context) error {
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			span.SetAttributes(attrOrders.Int(len(orders)))
		}
		return s.Store.InsertOrders(ctx, orders)
	})
	if errors.Is(err, resilience.ErrBreakerOpen) {
		return ErrOrderWritesOpen
	}
	return err
}
