package mysqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/payment"
)

// Payments live on their order's shard (by user id). A payment's id or
// provider reference does not say which shard that is, so lookups by them
// ask every shard's primary, as Order does.

const paymentColumns = `payment_id, order_id, user_id, provider, amount_cents, status, idempotency_key, coalesce(provider_ref, ''),
	checkout_url, refunded_cents, refund_ref, refunded_at, created_at, updated_at`

func scanPayment(row scanner) (payment.Payment, error) {
	var (
		p                payment.Payment
		status           string
		refunded         sql.NullInt64
		created, updated int64
	)
	if err := row.Scan(&p.ID, &p.OrderID, &p.UserID, &p.Provider, &p.AmountCents, &status, &p.IdempotencyKey, &p.ProviderRef,
		&p.CheckoutURL, &p.RefundedCents, &p.RefundRef, &refunded, &created, &updated); err != nil {
		return payment.Payment{}, err
	}
	p.Status = payment.Status(status)
	p.RefundedAt = fromMicros(refunded)
	p.CreatedAt = time.UnixMicro(created).UTC()
	p.UpdatedAt = time.UnixMicro(updated).UTC()
	return p, nil
}

// normalPayment is p as the store keeps it: times in UTC to the microsecond.
func normalPayment(p payment.Payment) payment.Payment {
	norm := func(t time.Time) time.Time {
		if t.IsZero() {
			return t
		}
		return t.UTC().Truncate(time.Microsecond)
	}
	p.CreatedAt, p.UpdatedAt, p.RefundedAt = norm(p.CreatedAt), norm(p.UpdatedAt), norm(p.RefundedAt)
	if p.UpdatedAt.IsZero() {
		p.UpdatedAt = p.CreatedAt
	}
	return p
}

// nullRef stores an empty provider reference as NULL, which the unique key
// on (provider, provider_ref) does not hold.
func nullRef(ref string) any {
	if ref == "" {
		return nil
	}
	return ref
}

// errPaymentConflict: a payment with the id, or with the provider's
// reference, is already stored (for another order or key).
var errPaymentConflict = spike.Errorf(spike.ErrConflict, "a payment with this id or provider reference already exists")

// CreatePayment implements payment.Store, on the shard of p.UserID.
func (s *Store) CreatePayment(ctx context.Context, p payment.Payment) (payment.Payment, bool, error) {
	p = normalPayment(p)
	n := s.shardOf(p.UserID)
	// A duplicate of any unique key is a no-op (0 rows); which one it was
	// is read next.
	res, err := n.primary.ExecContext(ctx, `INSERT INTO payments (payment_id, order_id, user_id, provider, amount_cents, status,
		idempotency_key, provider_ref, checkout_url, refunded_cents, refund_ref, refunded_at, created_at, updated_at)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON DUPLICATE KEY UPDATE payment_id = payment_id`,
		p.ID, p.OrderID, p.UserID, p.Provider, p.AmountCents, string(p.Status), p.IdempotencyKey, nullRef(p.ProviderRef),
		p.CheckoutURL, p.RefundedCents, p.RefundRef, micros(p.RefundedAt), p.CreatedAt.UnixMicro(), p.UpdatedAt.UnixMicro())
	if err != nil {
		return payment.Payment{}, false, lost(fmt.Errorf("create payment on %s: %w", n.name, err))
	}
	if k, err := res.RowsAffected(); err != nil {
		return payment.Payment{}, false, lost(fmt.Errorf("create payment on %s: %w", n.name, err))
	} else if k == 1 {
		return p, true, nil
	}
	stored, err := scanPayment(n.primary.QueryRowContext(ctx, `SELECT `+paymentColumns+` FROM payments
		WHERE order_id = ? AND idempotency_key = ?`, p.OrderID, p.IdempotencyKey))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return payment.Payment{}, false, errPaymentConflict
	case err != nil:
		return payment.Payment{}, false, lost(fmt.Errorf("create payment on %s: %w", n.name, err))
	}
	return stored, false, nil
}

// payments reads the payments matching where on every shard.
func (s *Store) payments(ctx context.Context, where string, args ...any) ([]payment.Payment, error) {
	return scatter(ctx, s, func(ctx context.Context, n *node) ([]payment.Payment, error) {
		rows, err := n.primary.QueryContext(ctx, `SELECT `+paymentColumns+` FROM payments WHERE `+where, args...)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var out []payment.Payment
		for rows.Next() {
			p, err := scanPayment(rows)
			if err != nil {
				return nil, err
			}
			out = append(out, p)
		}
		return out, rows.Err()
	})
}

func (s *Store) onePayment(ctx context.Context, where string, args ...any) (payment.Payment, error) {
	found, err := s.payments(ctx, where, args...)
	switch {
	case err != nil:
		return payment.Payment{}, lost(fmt.Errorf("read payment: %w", err))
	case len(found) == 0:
		return payment.Payment{}, payment.ErrPaymentNotFound
	}
	return found[0], nil
}

// Payment implements payment.Store.
func (s *Store) Payment(ctx context.Context, id string) (payment.Payment, error) {
	return s.onePayment(ctx, `payment_id = ?`, id)
}

// PaymentByRef implements payment.Store.
func (s *Store) PaymentByRef(ctx context.Context, provider, ref string) (payment.Payment, error) {
	if ref == "" {
		return payment.Payment{}, payment.ErrPaymentNotFound
	}
	return s.onePayment(ctx, `provider = ? AND provider_ref = ?`, provider, ref)
}

// OrderPayments implements payment.Store, oldest first.
func (s *Store) OrderPayments(ctx context.Context, orderID string) ([]payment.Payment, error) {
	out, err := s.payments(ctx, `order_id = ?`, orderID)
	if err != nil {
		return nil, lost(fmt.Errorf("payments of order %s: %w", orderID, err))
	}
	slices.SortFunc(out, func(a, b payment.Payment) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// Payments implements payment.Store: every shard's first limit after the
// id, merged.
func (s *Store) Payments(ctx context.Context, after string, limit int) ([]payment.Payment, error) {
	if limit <= 0 {
		return nil, nil
	}
	out, err := s.payments(ctx, `payment_id > ? ORDER BY payment_id LIMIT ?`, after, limit)
	if err != nil {
		return nil, lost(fmt.Errorf("list payments: %w", err))
	}
	slices.SortFunc(out, func(a, b payment.Payment) int { return strings.Compare(a.ID, b.ID) })
	return out[:min(limit, len(out))], nil
}

// UpdatePayment implements payment.Store: on the payment's shard (of
// p.UserID, or found by id if that is 0), one transaction locks the row,
// compares its status with from and updates it.
func (s *Store) UpdatePayment(ctx context.Context, p payment.Payment, from []payment.Status) (payment.Payment, bool, error) {
	p = normalPayment(p)
	var n *node
	if p.UserID != 0 {
		n = s.shardOf(p.UserID)
	} else {
		var err error
		if n, err = s.locate(ctx, "payments", "payment_id", p.ID, payment.ErrPaymentNotFound); err != nil {
			return payment.Payment{}, false, err
		}
	}
	var stored payment.Payment
	var applied bool
	err := retryDeadlock(ctx, func() (err error) {
		stored, applied, err = updatePayment(ctx, n.primary, p, from)
		return err
	})
	switch {
	case isMySQLError(err, errDupEntry):
		return payment.Payment{}, false, errPaymentConflict
	case err != nil && !errors.Is(err, payment.ErrPaymentNotFound):
		return payment.Payment{}, false, lost(fmt.Errorf("update payment %s on %s: %w", p.ID, n.name, err))
	}
	return stored, applied, err
}

func updatePayment(ctx context.Context, db *sql.DB, p payment.Payment, from []payment.Status) (payment.Payment, bool, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return payment.Payment{}, false, err
	}
	defer tx.Rollback()
	read := func() (payment.Payment, error) {
		stored, err := scanPayment(tx.QueryRowContext(ctx, `SELECT `+paymentColumns+` FROM payments WHERE payment_id = ? FOR UPDATE`, p.ID))
		if errors.Is(err, sql.ErrNoRows) {
			return payment.Payment{}, payment.ErrPaymentNotFound
		}
		return stored, err
	}
	stored, err := read()
	if err != nil {
		return payment.Payment{}, false, err
	}
	if !slices.Contains(from, stored.Status) {
		return stored, false, tx.Commit()
	}
	args := []any{string(p.Status), nullRef(p.ProviderRef), p.CheckoutURL, p.RefundedCents, p.RefundRef, micros(p.RefundedAt), p.UpdatedAt.UnixMicro(), p.ID}
	for _, st := range from {
		args = append(args, string(st))
	}
	if _, err := tx.ExecContext(ctx, `UPDATE payments SET status = ?, provider_ref = ?, checkout_url = ?, refunded_cents = ?,
		refund_ref = ?, refunded_at = ?, updated_at = ? WHERE payment_id = ? AND status IN (`+placeholders(len(from))+`)`, args...); err != nil {
		return payment.Payment{}, false, err
	}
	if stored, err = read(); err != nil {
		return payment.Payment{}, false, err
	}
	return stored, true, tx.Commit()
}
