package mysqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/spikehq/spike/internal/domain/order"
)

// changeTime is the time of a change as stored: UTC, to the microsecond;
// now if unset.
func changeTime(t time.Time) time.Time {
	if t.IsZero() {
		t = time.Now()
	}
	return t.UTC().Truncate(time.Microsecond)
}

// placeholders returns "?,?,…" for n parameters.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

// scatter runs fn on every order shard's primary in parallel and
// concatenates the results, in shard order.
func scatter[T any](ctx context.Context, s *Store, fn func(ctx context.Context, n *node) ([]T, error)) ([]T, error) {
	parts := make([][]T, len(s.shards))
	errs := make([]error, len(s.shards))
	var g errgroup.Group
	for i, n := range s.shards {
		g.Go(func() error {
			var err error
			if parts[i], err = fn(ctx, n); err != nil {
				errs[i] = lost(fmt.Errorf("%s: %w", n.name, err))
			}
			return nil
		})
	}
	g.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var out []T
	for _, p := range parts {
		out = append(out, p...)
	}
	return out, nil
}

// locate returns the shard whose primary holds the row of table with the
// key; notFound if none does. The key does not say which shard holds it,
// so every shard is asked (see Order).
func (s *Store) locate(ctx context.Context, table, key, id string, notFound error) (*node, error) {
	found, err := scatter(ctx, s, func(ctx context.Context, n *node) ([]*node, error) {
		var one int
		switch err := n.primary.QueryRowContext(ctx, `SELECT 1 FROM `+table+` WHERE `+key+` = ?`, id).Scan(&one); {
		case errors.Is(err, sql.ErrNoRows):
			return nil, nil
		case err != nil:
			return nil, err
		}
		return []*node{n}, nil
	})
	switch {
	case err != nil:
		return nil, err
	case len(found) == 0:
		return nil, notFound
	}
	return found[0], nil
}

// Transition implements order.LifecycleStore: on the order's shard, one
// transaction locks the row (SELECT ... FOR UPDATE), checks its status is
// one of from, updates it with the status guard and records the history
// entry.
func (s *Store) Transition(ctx context.Context, id string, from []order.Status, c order.Change) (order.Order, bool, error) {
	c.At = changeTime(c.At)
	n, err := s.locate(ctx, "orders", "order_id", id, order.ErrOrderNotFound)
	if err != nil {
		if errors.Is(err, order.ErrOrderNotFound) {
			return order.Order{}, false, err
		}
		return order.Order{}, false, lost(fmt.Errorf("transition order %s: %w", id, err))
	}
	var o order.Order
	var applied bool
	err = retryDeadlock(ctx, func() (err error) {
		o, applied, err = transition(ctx, n.primary, id, from, c)
		return err
	})
	if err != nil && !errors.Is(err, order.ErrOrderNotFound) {
		err = lost(fmt.Errorf("transition order %s on %s: %w", id, n.name, err))
	}
	return o, applied, err
}

func transition(ctx context.Context, db *sql.DB, id string, from []order.Status, c order.Change) (order.Order, bool, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return order.Order{}, false, err
	}
	defer tx.Rollback()
	o, err := scanOrder(tx.QueryRowContext(ctx, `SELECT `+orderColumns+` FROM orders WHERE order_id = ? FOR UPDATE`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return order.Order{}, false, order.ErrOrderNotFound
	}
	if err != nil {
		return order.Order{}, false, err
	}
	if !slices.Contains(from, o.Status) {
		return o, false, tx.Commit()
	}
	prev := o.Status
	o.Apply(c)
	args := []any{string(o.Status), micros(o.UpdatedAt), micros(o.PaidAt), micros(o.CancelledAt), o.CancelReason,
		o.Carrier, o.Tracking, micros(o.ShippedAt), micros(o.DeliveredAt), micros(o.RefundedAt), id}
	for _, st := range from {
		args = append(args, string(st))
	}
	// The row is locked: the status guard cannot fail, it documents the
	// compare-and-set.
	if _, err := tx.ExecContext(ctx, `UPDATE orders SET status = ?, updated_at = ?, paid_at = ?, cancelled_at = ?,
		cancel_reason = ?, carrier = ?, tracking = ?, shipped_at = ?, delivered_at = ?, refunded_at = ?
		WHERE order_id = ? AND status IN (`+placeholders(len(from))+`)`, args...); err != nil {
		return order.Order{}, false, err
	}
	if err := insertHistory(ctx, tx, []order.HistoryEntry{{OrderID: id, From: prev, To: o.Status, Transition: c.Transition, Cause: c.Cause, At: c.At}}); err != nil {
		return order.Order{}, false, err
	}
	if err := tx.Commit(); err != nil {
		return order.Order{}, false, err
	}
	return o, true, nil
}

// historyChunk is the most history rows one INSERT carries.
const historyChunk = 500

func insertHistory(ctx context.Context, tx *sql.Tx, entries []order.HistoryEntry) error {
	for start := 0; start < len(entries); start += historyChunk {
		chunk := entries[start:min(start+historyChunk, len(entries))]
		var b strings.Builder
		b.WriteString(`INSERT INTO order_history (order_id, from_status, to_status, transition, cause, at) VALUES `)
		args := make([]any, 0, 6*len(chunk))
		for i, h := range chunk {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString("(?,?,?,?,?,?)")
			args = append(args, h.OrderID, string(h.From), string(h.To), string(h.Transition), h.Cause, h.At.UnixMicro())
		}
		if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
			return fmt.Errorf("record history: %w", err)
		}
	}
	return nil
}

// expireStart rotates the shard ExpireDue starts with, so that a limit
// smaller than the due orders does not always favour the first shard.
var expireStart atomic.Uint32

// ExpireDue implements order.LifecycleStore. Shard by shard until limit
// orders are expired, one transaction (READ COMMITTED: no gap locks, so
// placements and payments are not held up) selects the due orders off the
// (status, payment_deadline) index with FOR UPDATE SKIP LOCKED, so that
// concurrent sweepers (other instances) take disjoint sets instead of
// waiting for each other, then cancels them and records their history.
// It needs MySQL 8.0 or MariaDB 10.6 (SKIP LOCKED).
func (s *Store) ExpireDue(ctx context.Context, now time.Time, limit int) ([]order.Order, error) {
	at := changeTime(now)
	var out []order.Order
	first := int(expireStart.Add(1))
	for k := range s.shards {
		if len(out) >= limit {
			break
		}
		n := s.shards[(first+k)%len(s.shards)]
		var got []order.Order
		err := retryDeadlock(ctx, func() (err error) {
			got, err = expireDue(ctx, n.primary, at, limit-len(out))
			return err
		})
		if err != nil {
			return out, lost(fmt.Errorf("expire orders on %s: %w", n.name, err))
		}
		out = append(out, got...)
	}
	return out, nil
}

func expireDue(ctx context.Context, db *sql.DB, at time.Time, limit int) ([]order.Order, error) {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT `+orderColumns+` FROM orders FORCE INDEX (orders_by_deadline)
		WHERE status = 'created' AND payment_deadline <= ? AND payment_deadline IS NOT NULL
		ORDER BY payment_deadline LIMIT ? FOR UPDATE SKIP LOCKED`, at.UnixMicro(), limit)
	due, err := collectOrders(rows, err)
	if err != nil || len(due) == 0 {
		return nil, err
	}
	args := []any{at.UnixMicro(), at.UnixMicro()}
	hist := make([]order.HistoryEntry, len(due))
	for i := range due {
		args = append(args, due[i].ID)
		due[i].Apply(order.Change{Transition: order.Expire, To: order.Cancelled, At: at, CancelReason: order.ReasonPaymentTimeout})
		hist[i] = order.HistoryEntry{OrderID: due[i].ID, From: order.Created, To: order.Cancelled, Transition: order.Expire, Cause: order.CauseDeadline, At: at}
	}
	res, err := tx.ExecContext(ctx, `UPDATE orders SET status = 'cancelled', updated_at = ?, cancelled_at = ?,
		cancel_reason = '`+order.ReasonPaymentTimeout+`'
		WHERE order_id IN (`+placeholders(len(due))+`) AND status = 'created'`, args...)
	if err != nil {
		return nil, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return nil, err
	} else if int(n) != len(due) {
		// The rows are locked: this cannot happen.
		return nil, fmt.Errorf("expired %d of %d locked orders", n, len(due))
	}
	if err := insertHistory(ctx, tx, hist); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return due, nil
}

// stockOutbox selects the orders whose units are owed back: cancelled, or
// refunded before shipping (never shipped), not yet marked returned.
const stockOutbox = `stock_returned = FALSE AND status IN ('cancelled', 'refunded') AND (status = 'cancelled' OR shipped_at IS NULL)`

// StockToReturn implements order.LifecycleStore: every shard's oldest
// owed orders, merged, oldest change first.
func (s *Store) StockToReturn(ctx context.Context, limit int) ([]order.Order, error) {
	if limit <= 0 {
		return nil, nil
	}
	out, err := scatter(ctx, s, func(ctx context.Context, n *node) ([]order.Order, error) {
		rows, err := n.primary.QueryContext(ctx, `SELECT `+orderColumns+` FROM orders WHERE `+stockOutbox+`
			ORDER BY updated_at, order_id LIMIT ?`, limit)
		return collectOrders(rows, err)
	})
	if err != nil {
		return nil, lost(fmt.Errorf("stock to return: %w", err))
	}
	slices.SortFunc(out, func(a, b order.Order) int {
		if c := a.UpdatedAt.Compare(b.UpdatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out[:min(limit, len(out))], nil
}

// MarkStockReturned implements order.LifecycleStore.
func (s *Store) MarkStockReturned(ctx context.Context, id, to string) error {
	n, err := s.locate(ctx, "orders", "order_id", id, order.ErrOrderNotFound)
	if errors.Is(err, order.ErrOrderNotFound) {
		return err
	}
	if err == nil {
		_, err = n.primary.ExecContext(ctx, `UPDATE orders SET stock_returned_to = CASE WHEN stock_returned THEN stock_returned_to ELSE ? END, stock_returned = TRUE WHERE order_id = ?`, to, id)
	}
	if err != nil {
		return lost(fmt.Errorf("mark stock returned %s: %w", id, err))
	}
	return nil
}

// History implements order.LifecycleStore. An order without transitions,
// or no order, has an empty history.
func (s *Store) History(ctx context.Context, id string) ([]order.HistoryEntry, error) {
	out, err := scatter(ctx, s, func(ctx context.Context, n *node) ([]order.HistoryEntry, error) {
		rows, err := n.primary.QueryContext(ctx, `SELECT order_id, from_status, to_status, transition, cause, at
			FROM order_history WHERE order_id = ? ORDER BY id`, id)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var out []order.HistoryEntry
		for rows.Next() {
			var h order.HistoryEntry
			var from, to, tr string
			var at int64
			if err := rows.Scan(&h.OrderID, &from, &to, &tr, &h.Cause, &at); err != nil {
				return nil, err
			}
			h.From, h.To, h.Transition, h.At = order.Status(from), order.Status(to), order.Transition(tr), time.UnixMicro(at).UTC()
			out = append(out, h)
		}
		return out, rows.Err()
	})
	if err != nil {
		return nil, lost(fmt.Errorf("order history %s: %w", id, err))
	}
	return out, nil
}
