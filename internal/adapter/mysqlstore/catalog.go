package mysqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/domain/sale"
)

// CreateProduct implements catalog.Store: the product and the move of its
// initial stock (catalog.MoveCreate, even of 0 units) in one transaction.
func (s *Store) CreateProduct(ctx context.Context, p catalog.Product) error {
	return retryDeadlock(ctx, func() error {
		tx, err := s.main.primary.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("create product %s: %w", p.SKU, err)
		}
		defer tx.Rollback()
		_, err = tx.ExecContext(ctx, `INSERT INTO products (sku, name, price_cents, stock) VALUES (?, ?, ?, ?)`,
			p.SKU, p.Name, p.PriceCents, p.Stock)
		if isMySQLError(err, errDupEntry) {
			return catalog.ErrProductExists
		}
		if err != nil {
			return fmt.Errorf("create product %s: %w", p.SKU, err)
		}
		if err := insertMove(ctx, tx, catalog.StockMove{SKU: p.SKU, Key: catalog.MoveCreate + p.SKU, Delta: p.Stock, Reason: "initial stock"}); err != nil {
			return fmt.Errorf("create product %s: %w", p.SKU, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("create product %s: %w", p.SKU, err)
		}
		return nil
	})
}

const (
	productColumns = `sku, name, price_cents, stock`
	productQuery   = `SELECT ` + productColumns + ` FROM products WHERE sku = ?`
)

// Product implements catalog.Store. It reads from a replica if there is
// one (the stock and price may lag by the replication delay), and from the
// primary if the replica does not have the product or fails.
func (s *Store) Product(ctx context.Context, sku string) (catalog.Product, error) {
	if r := s.main.reader(); r != s.main.primary {
		if p, err := scanProduct(r.QueryRowContext(ctx, productQuery, sku)); err == nil {
			return p, nil
		}
	}
	return scanProduct(s.main.primary.QueryRowContext(ctx, productQuery, sku))
}

type scanner interface{ Scan(dest ...any) error }

func scanProduct(row scanner) (catalog.Product, error) {
	var p catalog.Product
	err := row.Scan(&p.SKU, &p.Name, &p.PriceCents, &p.Stock)
	if errors.Is(err, sql.ErrNoRows) {
		return catalog.Product{}, catalog.ErrProductNotFound
	}
	if err != nil {
		return catalog.Product{}, fmt.Errorf("read product: %w", err)
	}
	return p, nil
}

// UpdateProduct implements catalog.Store. MariaDB has no UPDATE ...
// RETURNING, so it updates and reads back in one transaction.
func (s *Store) UpdateProduct(ctx context.Context, sku string, u catalog.ProductUpdate) (p catalog.Product, err error) {
	err = retryDeadlock(ctx, func() error {
		tx, err := s.main.primary.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("update product %s: %w", sku, err)
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, `UPDATE products SET name = coalesce(?, name), price_cents = coalesce(?, price_cents) WHERE sku = ?`,
			u.Name, u.PriceCents, sku); err != nil {
			return fmt.Errorf("update product %s: %w", sku, err)
		}
		if p, err = scanProduct(tx.QueryRowContext(ctx, productQuery, sku)); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("update product %s: %w", sku, err)
		}
		return nil
	})
	if err != nil {
		return catalog.Product{}, err
	}
	return p, nil
}

// CreateSale implements sale.Store: in one transaction it locks the
// product row (SELECT ... FOR UPDATE), checks its stock, inserts the sale,
// takes the units with a conditional UPDATE and records their move
// (catalog.MoveSale).
func (s *Store) CreateSale(ctx context.Context, sl sale.Sale) error {
	return retryDeadlock(ctx, func() error { return s.createSale(ctx, sl) })
}

func (s *Store) createSale(ctx context.Context, sl sale.Sale) error {
	tx, err := s.main.primary.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create sale %s: %w", sl.ID, err)
	}
	defer tx.Rollback()
	var stock int64
	switch err := tx.QueryRowContext(ctx, `SELECT stock FROM products WHERE sku = ? FOR UPDATE`, sl.SKU).Scan(&stock); {
	case errors.Is(err, sql.ErrNoRows):
		return catalog.ErrProductNotFound
	case err != nil:
		return fmt.Errorf("create sale %s: %w", sl.ID, err)
	case stock < sl.Stock:
		return sale.ErrInsufficientStock
	}
	var ends any
	if !sl.EndsAt.IsZero() {
		ends = sl.EndsAt.UnixMilli()
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO sales (id, sku, stock, price_cents, per_user_limit, starts_at, ends_at, payment_window)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		sl.ID, sl.SKU, sl.Stock, sl.PriceCents, sl.PerUserLimit, sl.StartsAt.UnixMilli(), ends, int64(sl.PaymentWindow/time.Second))
	if isMySQLError(err, errDupEntry) {
		return sale.ErrSaleExists
	}
	if err != nil {
		return fmt.Errorf("create sale %s: %w", sl.ID, err)
	}
	res, err := tx.ExecContext(ctx, `UPDATE products SET stock = stock - ? WHERE sku = ? AND stock >= ?`, sl.Stock, sl.SKU, sl.Stock)
	if err != nil {
		return fmt.Errorf("create sale %s: %w", sl.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("create sale %s: %w", sl.ID, err)
	} else if n != 1 {
		// Cannot happen while the row is locked; never oversell if it does.
		return sale.ErrInsufficientStock
	}
	if err := insertMove(ctx, tx, catalog.StockMove{SKU: sl.SKU, Key: catalog.MoveSale + sl.ID, Delta: -sl.Stock, Reason: "sale " + sl.ID}); err != nil {
		return fmt.Errorf("create sale %s: %w", sl.ID, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("create sale %s: %w", sl.ID, err)
	}
	return nil
}

const saleColumns = `id, sku, stock, price_cents, per_user_limit, starts_at, ends_at, payment_window, settled_at`

func scanSale(row scanner) (sale.Sale, error) {
	var (
		sl      sale.Sale
		starts  int64
		ends    sql.NullInt64
		window  int64
		settled sql.NullInt64
	)
	if err := row.Scan(&sl.ID, &sl.SKU, &sl.Stock, &sl.PriceCents, &sl.PerUserLimit, &starts, &ends, &window, &settled); err != nil {
		return sale.Sale{}, err
	}
	sl.StartsAt = time.UnixMilli(starts).UTC()
	if ends.Valid {
		sl.EndsAt = time.UnixMilli(ends.Int64).UTC()
	}
	sl.PaymentWindow = time.Duration(window) * time.Second
	sl.SettledAt = fromMicros(settled)
	return sl, nil
}

// Sale implements sale.Store. It is read from a replica, and from the
// primary if the replica lacks it or fails: a sale changes only when it is
// ended early or settled, and a replica may show that a replication delay
// late (EndSale and SettleSale return the sale as stored on the primary).
func (s *Store) Sale(ctx context.Context, id string) (sale.Sale, error) {
	const q = `SELECT ` + saleColumns + ` FROM sales WHERE id = ?`
	read := func(db *sql.DB) (sale.Sale, error) {
		sl, err := scanSale(db.QueryRowContext(ctx, q, id))
		if errors.Is(err, sql.ErrNoRows) {
			return sale.Sale{}, sale.ErrSaleNotFound
		}
		if err != nil {
			return sale.Sale{}, fmt.Errorf("read sale %s: %w", id, err)
		}
		return sl, nil
	}
	if r := s.main.reader(); r != s.main.primary {
		if sl, err := read(r); err == nil {
			return sl, nil
		}
	}
	return read(s.main.primary)
}

// MinPaymentWindow returns the shortest payment window of any sale;
// ok is false when no sale has one. The deadline sweep's overdue scan
// reads only placements that could be due soon (order.LifecycleConfig).
func (s *Store) MinPaymentWindow(ctx context.Context) (w time.Duration, ok bool, err error) {
	var secs sql.NullInt64
	if err := s.main.primary.QueryRowContext(ctx, `SELECT MIN(payment_window) FROM sales WHERE payment_window > 0`).Scan(&secs); err != nil {
		return 0, false, fmt.Errorf("shortest payment window: %w", err)
	}
	return time.Duration(secs.Int64) * time.Second, secs.Valid, nil
}

// Sales implements sale.Store. It reads from the primary: stock counters
// are rebuilt from this list, and a replica could miss a new sale.
func (s *Store) Sales(ctx context.Context) ([]sale.Sale, error) {
	rows, err := s.main.primary.QueryContext(ctx, `SELECT `+saleColumns+` FROM sales ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list sales: %w", err)
	}
	defer rows.Close()
	var out []sale.Sale
	for rows.Next() {
		sl, err := scanSale(rows)
		if err != nil {
			return nil, fmt.Errorf("list sales: %w", err)
		}
		out = append(out, sl)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list sales: %w", err)
	}
	return out, nil
}
