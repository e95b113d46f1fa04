package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

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

// Transition implements order.LifecycleStore: in one write transaction it
// reads the order, and if its status is one of from, updates it with a
// compare-and-set on the status and records the history entry. SQLite has
// one writer, so transitions (and ExpireDue) are serialised.
func (s *Store) Transition(ctx context.Context, id string, from []order.Status, c order.Change) (order.Order, bool, error) {
	c.At = changeTime(c.At)
	tx, end, err := s.beginWrite(ctx, false)
	if err != nil {
		return order.Order{}, false, fmt.Errorf("transition order %s: %w", id, err)
	}
	defer end()
	o, err := scanOrder(tx.QueryRowContext(ctx, `SELECT `+orderColumns+` FROM orders WHERE order_id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return order.Order{}, false, order.ErrOrderNotFound
	}
	if err != nil {
		return order.Order{}, false, fmt.Errorf("transition order %s: %w", id, err)
	}
	if !slices.Contains(from, o.Status) {
		return o, false, nil
	}
	prev := o.Status
	o.Apply(c)
	args := []any{string(o.Status), micros(o.UpdatedAt), micros(o.PaidAt), micros(o.CancelledAt), o.CancelReason,
		o.Carrier, o.Tracking, micros(o.ShippedAt), micros(o.DeliveredAt), micros(o.RefundedAt), id}
	for _, st := range from {
		args = append(args, string(st))
	}
	res, err := tx.ExecContext(ctx, `UPDATE orders SET status = ?, updated_at = ?, paid_at = ?, cancelled_at = ?,
		cancel_reason = ?, carrier = ?, tracking = ?, shipped_at = ?, delivered_at = ?, refunded_at = ?
		WHERE order_id = ? AND status IN (`+placeholders(len(from))+`)`, args...)
	if err != nil {
		return order.Order{}, false, fmt.Errorf("transition order %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return order.Order{}, false, fmt.Errorf("transition order %s: %d rows updated (%v)", id, n, err)
	}
	if err := insertHistory(ctx, tx, []order.HistoryEntry{{OrderID: id, From: prev, To: o.Status, Transition: c.Transition, Cause: c.Cause, At: c.At}}); err != nil {
		return order.Order{}, false, fmt.Errorf("transition order %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return order.Order{}, false, fmt.Errorf("transition order %s: %w", id, err)
	}
	return o, true, nil
}

// historyChunk is the most history rows one INSERT carries.
const historyChunk = 100

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

// expireDueSQL cancels the due orders: its subquery reads them off the
// (status, payment_deadline) index, oldest deadline first. The unary + keeps the outer status guard from being answered with the
// same index (status = 'created' alone: every open order); the outer
// UPDATE looks the orders up by primary key (see TestExpireDuePlan).
const expireDueSQL = `UPDATE orders SET status = 'cancelled', updated_at = ?1, cancelled_at = ?1,
		cancel_reason = '` + order.ReasonPaymentTimeout + `'
		WHERE order_id IN (SELECT order_id FROM orders INDEXED BY orders_by_deadline
			WHERE status = 'created' AND payment_deadline <= ?2 ORDER BY payment_deadline LIMIT ?3)
		AND +status = 'created'
		RETURNING ` + orderColumns

// ExpireDue implements order.LifecycleStore in one write transaction:
// expireDueSQL and the history rows. SQLite has one writer, so concurrent
// sweeps are serialised and each due order is expired by one of them.
func (s *Store) ExpireDue(ctx context.Context, now time.Time, limit int) ([]order.Order, error) {
	if limit <= 0 {
		return nil, nil
	}
	at := changeTime(now)
	tx, end, err := s.beginWrite(ctx, true)
	if err != nil {
		return nil, fmt.Errorf("expire orders: %w", err)
	}
	defer end()
	rows, err := tx.QueryContext(ctx, expireDueSQL, at.UnixMicro(), at.UnixMicro(), limit)
	out, err := collectOrders(rows, err)
	if err != nil {
		return nil, fmt.Errorf("expire orders: %w", err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	hist := make([]order.HistoryEntry, len(out))
	for i, o := range out {
		hist[i] = order.HistoryEntry{OrderID: o.ID, From: order.Created, To: order.Cancelled, Transition: order.Expire, Cause: order.CauseDeadline, At: at}
	}
	if err := insertHistory(ctx, tx, hist); err != nil {
		return nil, fmt.Errorf("expire orders: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("expire orders: %w", err)
	}
	slices.SortFunc(out, func(a, b order.Order) int {
		if c := a.PaymentDeadline.Compare(b.PaymentDeadline); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// stockOutbox selects the orders whose units are owed back: cancelled, or
// refunded before shipping (never shipped), not yet marked returned. Its
// first two terms are the partial index's condition.
const stockOutbox = `stock_returned = 0 AND status IN ('cancelled', 'refunded') AND (status = 'cancelled' OR shipped_at IS NULL)`

// StockToReturn implements order.LifecycleStore, oldest change first.
func (s *Store) StockToReturn(ctx context.Context, limit int) ([]order.Order, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+orderColumns+` FROM orders WHERE `+stockOutbox+`
		ORDER BY updated_at, order_id LIMIT ?`, limit)
	out, err := collectOrders(rows, err)
	if err != nil {
		return nil, fmt.Errorf("stock to return: %w", err)
	}
	return out, nil
}

// MarkStockReturned implements order.LifecycleStore.
func (s *Store) MarkStockReturned(ctx context.Context, id, to string) error {
	done, err := s.writing(ctx, false)
	if err != nil {
		return fmt.Errorf("mark stock returned %s: %w", id, err)
	}
	defer done()
	res, err := s.w.ExecContext(ctx, `UPDATE orders SET stock_returned_to = CASE WHEN stock_returned = 1 THEN stock_returned_to ELSE ? END, stock_returned = 1 WHERE order_id = ?`, to, id)
	if err != nil {
		return fmt.Errorf("mark stock returned %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("mark stock returned %s: %w", id, err)
	} else if n == 0 {
		return order.ErrOrderNotFound
	}
	return nil
}

// History implements order.LifecycleStore. An order without transitions,
// or no order, has an empty history.
func (s *Store) History(ctx context.Context, id string) ([]order.HistoryEntry, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT order_id, from_status, to_status, transition, cause, at
		FROM order_history WHERE order_id = ? ORDER BY id`, id)
	if err != nil {
		return nil, fmt.Errorf("order history %s: %w", id, err)
	}
	defer rows.Close()
	var out []order.HistoryEntry
	for rows.Next() {
		var h order.HistoryEntry
		var from, to, tr string
		var at int64
		if err := rows.Scan(&h.OrderID, &from, &to, &tr, &h.Cause, &at); err != nil {
			return nil, fmt.Errorf("order history %s: %w", id, err)
		}
		h.From, h.To, h.Transition, h.At = order.Status(from), order.Status(to), order.Transition(tr), time.UnixMicro(at).UTC()
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("order history %s: %w", id, err)
	}
	return out, nil
}
