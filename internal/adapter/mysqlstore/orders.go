package mysqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/spikehq/spike/internal/domain/order"
)

// rowsPerInsert bounds one multi-row INSERT: 12 placeholders a row, far
// below MySQL's 65,535 and a few hundred KB of packet at most.
const rowsPerInsert = 500

// InsertOrders implements order.Store. It groups the batch by shard and
// inserts each group in one transaction, with one multi-row statement per
// 500 orders, the shards in parallel. An order whose id (or whose user,
// sale and idempotency key) is already stored is skipped, so a batch can
// be inserted again after a partial failure.
//
// Duplicates are skipped with ON DUPLICATE KEY UPDATE order_id = order_id,
// a no-op, rather than INSERT IGNORE: IGNORE would also turn other errors
// (a value too long, a NULL) into warnings and store truncated rows.
func (s *Store) InsertOrders(ctx context.Context, orders []order.Order) error {
	if len(orders) == 0 {
		return nil
	}
	groups := make(map[*node][]order.Order)
	for _, o := range orders {
		n := s.shardOf(o.UserID)
		groups[n] = append(groups[n], o)
	}
	g, gctx := errgroup.WithContext(ctx)
	for n, group := range groups {
		// The same order of rows in every batch makes overlapping batches
		// take their row locks in the same order, avoiding deadlocks.
		slices.SortFunc(group, func(a, b order.Order) int { return strings.Compare(a.ID, b.ID) })
		g.Go(func() error {
			err := retryDeadlock(gctx, func() error { return insertOrders(gctx, n.primary, group) })
			if err != nil {
				return lost(fmt.Errorf("insert orders on %s: %w", n.name, err))
			}
			users := make([]int64, len(group))
			for i := range group {
				users[i] = group[i].UserID
			}
			s.ryw.mark(users)
			return nil
		})
	}
	return g.Wait()
}

func insertOrders(ctx context.Context, db *sql.DB, orders []order.Order) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for start := 0; start < len(orders); start += rowsPerInsert {
		chunk := orders[start:min(start+rowsPerInsert, len(orders))]
		var b strings.Builder
		b.WriteString(`INSERT INTO orders (order_id, bucket, sale_id, sku, user_id, quantity, price_cents, status, idempotency_key, created_at, updated_at, payment_deadline) VALUES `)
		args := make([]any, 0, 12*len(chunk))
		for i, o := range chunk {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString("(?,?,?,?,?,?,?,?,?,?,?,?)")
			created := any(o.CreatedAt.UnixMicro())
			updated := created // until the first transition
			if !o.UpdatedAt.IsZero() {
				updated = o.UpdatedAt.UnixMicro()
			}
			args = append(args, o.ID, BucketOf(o.UserID), o.SaleID, o.SKU, o.UserID, o.Quantity, o.PriceCents,
				string(o.Status), o.IdempotencyKey, created, updated, micros(o.PaymentDeadline))
		}
		b.WriteString(` ON DUPLICATE KEY UPDATE order_id = order_id`)
		if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// orderColumns are the columns scanOrder reads. Rows stored before the
// lifecycle migration have no updated_at: it is their created_at.
const orderColumns = `order_id, sale_id, sku, user_id, quantity, price_cents, status, idempotency_key, created_at,
	coalesce(updated_at, created_at), payment_deadline, paid_at, cancelled_at, cancel_reason, carrier, tracking,
	shipped_at, delivered_at, refunded_at, stock_returned_to`

func scanOrder(row scanner) (order.Order, error) {
	var (
		o                                                   order.Order
		status                                              string
		created, updated                                    int64
		deadline, paid, cancelled, shipped, deliv, refunded sql.NullInt64
	)
	if err := row.Scan(&o.ID, &o.SaleID, &o.SKU, &o.UserID, &o.Quantity, &o.PriceCents, &status, &o.IdempotencyKey, &created,
		&updated, &deadline, &paid, &cancelled, &o.CancelReason, &o.Carrier, &o.Tracking,
		&shipped, &deliv, &refunded, &o.StockReturnedTo); err != nil {
		return order.Order{}, err
	}
	o.Status = order.Status(status)
	o.CreatedAt = time.UnixMicro(created).UTC()
	o.UpdatedAt = time.UnixMicro(updated).UTC()
	o.PaymentDeadline = fromMicros(deadline)
	o.PaidAt = fromMicros(paid)
	o.CancelledAt = fromMicros(cancelled)
	o.ShippedAt = fromMicros(shipped)
	o.DeliveredAt = fromMicros(deliv)
	o.RefundedAt = fromMicros(refunded)
	return o, nil
}

// fromMicros converts a nullable Unix-microsecond column; NULL is the zero time.
func fromMicros(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.UnixMicro(n.Int64).UTC()
}

// micros converts a time to a nullable Unix-microsecond column; the zero
// time is NULL.
func micros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

// Order implements order.Store.
//
// The id does not say which shard holds the order, so Order asks every
// shard in parallel: first their replicas, then, if none has it (or one
// failed), their primaries. A locator table (order id → shard) on the
// primary was the alternative; it would cost a second write, to another
// database and so outside the order's transaction, on the hot persist
// path for every order, and could disagree with the shards after a crash
// between the two writes, while this lookup costs one indexed point query
// per shard on a rarer read. Revisit if the shard count grows large.
func (s *Store) Order(ctx context.Context, id string) (order.Order, error) {
	const q = `SELECT ` + orderColumns + ` FROM orders WHERE order_id = ?`
	find := func(pick func(*node) *sql.DB) (order.Order, bool, error) {
		found := make([]*order.Order, len(s.shards))
		errs := make([]error, len(s.shards))
		var g errgroup.Group
		for i, n := range s.shards {
			g.Go(func() error {
				o, err := scanOrder(pick(n).QueryRowContext(ctx, q, id))
				switch {
				case err == nil:
					found[i] = &o
				case !errors.Is(err, sql.ErrNoRows):
					errs[i] = lost(fmt.Errorf("%s: %w", n.name, err))
				}
				return nil
			})
		}
		g.Wait()
		for _, o := range found {
			if o != nil {
				return *o, true, nil
			}
		}
		return order.Order{}, false, errors.Join(errs...)
	}
	if s.hasOrderReplicas() {
		if o, ok, _ := find((*node).reader); ok {
			return o, nil
		}
	}
	o, ok, err := find(func(n *node) *sql.DB { return n.primary })
	switch {
	case ok:
		return o, nil
	case err != nil:
		// The order may be on a shard that did not answer.
		return order.Order{}, lost(fmt.Errorf("read order %s: %w", id, err))
	}
	return order.Order{}, order.ErrOrderNotFound
}

func (s *Store) hasOrderReplicas() bool {
	for _, n := range s.shards {
		if len(n.replicas) > 0 {
			return true
		}
	}
	return false
}

// ListOrders implements order.Store. It reads the user's shard, from a
// replica unless this Store wrote one of the user's orders within
// Config.ReadYourWrites.
func (s *Store) ListOrders(ctx context.Context, userID int64, after order.Cursor, limit int) ([]order.Order, error) {
	n := s.shardOf(userID)
	db := n.primary
	if !s.ryw.recent(userID) {
		db = n.reader()
	}
	// As in SQLite, a negative limit means no limit.
	lim := uint64(limit)
	if limit < 0 {
		lim = math.MaxUint64
	}
	var rows *sql.Rows
	var err error
	if after.IsZero() {
		rows, err = db.QueryContext(ctx, `SELECT `+orderColumns+` FROM orders WHERE user_id = ?
			ORDER BY created_at DESC, order_id DESC LIMIT ?`, userID, lim)
	} else {
		ts := after.CreatedAt.UnixMicro()
		rows, err = db.QueryContext(ctx, `SELECT `+orderColumns+` FROM orders WHERE user_id = ?
			AND (created_at < ? OR (created_at = ? AND order_id < ?))
			ORDER BY created_at DESC, order_id DESC LIMIT ?`, userID, ts, ts, after.ID, lim)
	}
	out, err := collectOrders(rows, err)
	if err != nil {
		return nil, lost(fmt.Errorf("list orders of user %d: %w", userID, err))
	}
	return out, nil
}

// ScanSaleOrders implements order.Store: every shard's primary (stock
// counters are rebuilt from this, so it must not lag), all at once (a
// fenced sale waits for the rebuild), fn called by one shard at a time.
func (s *Store) ScanSaleOrders(ctx context.Context, saleID string, fn func(*order.Order) error) error {
	var mu sync.Mutex
	var stop error // fn's
	g, gctx := errgroup.WithContext(ctx)
	for _, n := range s.shards {
		g.Go(func() error {
			st, err := scanShard(gctx, n.primary, saleID, func(o *order.Order) error {
				mu.Lock()
				defer mu.Unlock()
				if stop == nil {
					stop = fn(o)
				}
				return stop
			})
			if st != nil {
				return st
			}
			if err != nil {
				return lost(fmt.Errorf("list orders of sale %s: %s: %w", saleID, n.name, err))
			}
			return nil
		})
	}
	err := g.Wait()
	if stop != nil {
		return stop
	}
	return err
}

// scanShard calls fn with each of the sale's orders on db; stop is fn's
// error, err the database's.
func scanShard(ctx context.Context, db *sql.DB, saleID string, fn func(*order.Order) error) (stop, err error) {
	rows, err := db.QueryContext(ctx, `SELECT `+orderColumns+` FROM orders WHERE sale_id = ?`, saleID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, err
		}
		if err := fn(&o); err != nil {
			return err, nil
		}
	}
	return nil, rows.Err()
}

func collectOrders(rows *sql.Rows, err error) ([]order.Order, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []order.Order
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}
