package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/payment"
)

const paymentColumns = `payment_id, order_id, user_id, provider, amount_cents, status, idempotency_key, provider_ref,
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

// errPaymentConflict: a payment with the id, or with the provider's
// reference, is already stored (for another order or key).
var errPaymentConflict = spike.Errorf(spike.ErrConflict, "a payment with this id or provider reference already exists")

// CreatePayment implements payment.Store.
func (s *Store) CreatePayment(ctx context.Context, p payment.Payment) (payment.Payment, bool, error) {
	p = normalPayment(p)
	tx, end, err := s.beginWrite(ctx, false)
	if err != nil {
		return payment.Payment{}, false, fmt.Errorf("create payment: %w", err)
	}
	defer end()
	res, err := tx.ExecContext(ctx, `INSERT INTO payments (`+paymentColumns+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT DO NOTHING`,
		p.ID, p.OrderID, p.UserID, p.Provider, p.AmountCents, string(p.Status), p.IdempotencyKey, p.ProviderRef,
		p.CheckoutURL, p.RefundedCents, p.RefundRef, micros(p.RefundedAt), p.CreatedAt.UnixMicro(), p.UpdatedAt.UnixMicro())
	if err != nil {
		return payment.Payment{}, false, fmt.Errorf("create payment: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return payment.Payment{}, false, fmt.Errorf("create payment: %w", err)
	} else if n == 1 {
		if err := tx.Commit(); err != nil {
			return payment.Payment{}, false, fmt.Errorf("create payment: %w", err)
		}
		return p, true, nil
	}
	stored, err := scanPayment(tx.QueryRowContext(ctx, `SELECT `+paymentColumns+` FROM payments
		WHERE order_id = ? AND idempotency_key = ?`, p.OrderID, p.IdempotencyKey))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return payment.Payment{}, false, errPaymentConflict
	case err != nil:
		return payment.Payment{}, false, fmt.Errorf("create payment: %w", err)
	}
	return stored, false, nil
}

func (s *Store) onePayment(ctx context.Context, db interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, where string, args ...any) (payment.Payment, error) {
	p, err := scanPayment(db.QueryRowContext(ctx, `SELECT `+paymentColumns+` FROM payments WHERE `+where, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return payment.Payment{}, payment.ErrPaymentNotFound
	}
	if err != nil {
		return payment.Payment{}, fmt.Errorf("read payment: %w", err)
	}
	return p, nil
}

// Payment implements payment.Store.
func (s *Store) Payment(ctx context.Context, id string) (payment.Payment, error) {
	return s.onePayment(ctx, s.r, `payment_id = ?`, id)
}

// PaymentByRef implements payment.Store.
func (s *Store) PaymentByRef(ctx context.Context, provider, ref string) (payment.Payment, error) {
	if ref == "" {
		return payment.Payment{}, payment.ErrPaymentNotFound
	}
	return s.onePayment(ctx, s.r, `provider = ? AND provider_ref = ?`, provider, ref)
}

func collectPayments(rows *sql.Rows, err error) ([]payment.Payment, error) {
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
}

// OrderPayments implements payment.Store, oldest first.
func (s *Store) OrderPayments(ctx context.Context, orderID string) ([]payment.Payment, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+paymentColumns+` FROM payments WHERE order_id = ?
		ORDER BY created_at, payment_id`, orderID)
	out, err := collectPayments(rows, err)
	if err != nil {
		return nil, fmt.Errorf("payments of order %s: %w", orderID, err)
	}
	return out, nil
}

// Payments implements payment.Store.
func (s *Store) Payments(ctx context.Context, after string, limit int) ([]payment.Payment, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+paymentColumns+` FROM payments WHERE payment_id > ?
		ORDER BY payment_id LIMIT ?`, after, limit)
	out, err := collectPayments(rows, err)
	if err != nil {
		return nil, fmt.Errorf("list payments: %w", err)
	}
	return out, nil
}

// UpdatePayment implements payment.Store with a compare-and-set on the
// stored status.
func (s *Store) UpdatePayment(ctx context.Context, p payment.Payment, from []payment.Status) (payment.Payment, bool, error) {
	p = normalPayment(p)
	tx, end, err := s.beginWrite(ctx, false)
	if err != nil {
		return payment.Payment{}, false, fmt.Errorf("update payment %s: %w", p.ID, err)
	}
	defer end()
	var n int64
	if len(from) > 0 {
		args := []any{string(p.Status), p.ProviderRef, p.CheckoutURL, p.RefundedCents, p.RefundRef, micros(p.RefundedAt), p.UpdatedAt.UnixMicro(), p.ID}
		for _, st := range from {
			args = append(args, string(st))
		}
		res, err := tx.ExecContext(ctx, `UPDATE payments SET status = ?, provider_ref = ?, checkout_url = ?, refunded_cents = ?,
			refund_ref = ?, refunded_at = ?, updated_at = ? WHERE payment_id = ? AND status IN (`+placeholders(len(from))+`)`, args...)
		if isUniqueViolation(err) {
			return payment.Payment{}, false, errPaymentConflict
		}
		if err != nil {
			return payment.Payment{}, false, fmt.Errorf("update payment %s: %w", p.ID, err)
		}
		if n, err = res.RowsAffected(); err != nil {
			return payment.Payment{}, false, fmt.Errorf("update payment %s: %w", p.ID, err)
		}
	}
	stored, err := s.onePayment(ctx, tx, `payment_id = ?`, p.ID)
	if err != nil {
		return payment.Payment{}, false, err
	}
	if err := tx.Commit(); err != nil {
		return payment.Payment{}, false, fmt.Errorf("update payment %s: %w", p.ID, err)
	}
	return stored, n == 1, nil
}
