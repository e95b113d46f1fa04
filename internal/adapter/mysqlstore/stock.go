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

// insertMove records m in tx; its At is now if unset. A move whose (SKU,
// Key) is recorded already is a duplicate-entry error.
func insertMove(ctx context.Context, tx *sql.Tx, m catalog.StockMove) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO stock_moves (sku, move_key, delta, reason, at) VALUES (?, ?, ?, ?, ?)`,
		m.SKU, m.Key, m.Delta, m.Reason, changeTime(m.At).UnixMicro())
	return err
}

// AdjustStock implements catalog.StockLedger: in one transaction it locks
// the product row (so adjustments of a product are serialised, and locks
// are taken in the same order as CreateSale's), records the move (a
// duplicate key means it was applied before) and applies it with a
// conditional UPDATE.
func (s *Store) AdjustStock(ctx context.Context, m catalog.StockMove) (p catalog.Product, applied bool, err error) {
	err = retryDeadlock(ctx, func() error {
		p, applied, err = s.adjustStock(ctx, m)
		return err
	})
	if err != nil {
		return catalog.Product{}, false, err
	}
	return p, applied, nil
}

func (s *Store) adjustStock(ctx context.Context, m catalog.StockMove) (catalog.Product, bool, error) {
	tx, err := s.main.primary.BeginTx(ctx, nil)
	if err != nil {
		return catalog.Product{}, false, fmt.Errorf("adjust stock of %s: %w", m.SKU, err)
	}
	defer tx.Rollback()
	p, err := scanProduct(tx.QueryRowContext(ctx, productQuery+` FOR UPDATE`, m.SKU))
	if err != nil {
		return catalog.Product{}, false, err
	}
	err = insertMove(ctx, tx, m)
	if isMySQLError(err, errDupEntry) {
		return p, false, nil // applied before: nothing changes
	}
	if err != nil {
		return catalog.Product{}, false, fmt.Errorf("adjust stock of %s: %w", m.SKU, err)
	}
	res, err := tx.ExecContext(ctx, `UPDATE products SET stock = stock + ? WHERE sku = ? AND stock + ? >= 0`, m.Delta, m.SKU, m.Delta)
	if err != nil {
		return catalog.Product{}, false, fmt.Errorf("adjust stock of %s: %w", m.SKU, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return catalog.Product{}, false, fmt.Errorf("adjust stock of %s: %w", m.SKU, err)
	}
	if n != 1 {
		return catalog.Product{}, false, catalog.ErrInsufficientStock // the row is locked: it exists
	}
	if err := tx.Commit(); err != nil {
		return catalog.Product{}, false, fmt.Errorf("adjust stock of %s: %w", m.SKU, err)
	}
	p.Stock += m.Delta
	return p, true, nil
}

// StockMoves implements catalog.StockLedger: the moves in the order they
// were recorded, read from the primary; none for an unknown SKU.
func (s *Store) StockMoves(ctx context.Context, sku string) ([]catalog.StockMove, error) {
	rows, err := s.main.primary.QueryContext(ctx, `SELECT sku, move_key, delta, reason, at FROM stock_moves WHERE sku = ? ORDER BY id`, sku)
	if err != nil {
		return nil, fmt.Errorf("stock moves of %s: %w", sku, err)
	}
	defer rows.Close()
	var out []catalog.StockMove
	for rows.Next() {
		var (
			m  catalog.StockMove
			at int64
		)
		if err := rows.Scan(&m.SKU, &m.Key, &m.Delta, &m.Reason, &at); err != nil {
			return nil, fmt.Errorf("stock moves of %s: %w", sku, err)
		}
		m.At = time.UnixMicro(at).UTC()
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("stock moves of %s: %w", sku, err)
	}
	return out, nil
}

// Products returns every product, ordered by SKU, read from the primary
// (the audit compares it with the stock moves).
func (s *Store) Products(ctx context.Context) ([]catalog.Product, error) {
	rows, err := s.main.primary.QueryContext(ctx, `SELECT `+productColumns+` FROM products ORDER BY sku`)
	if err != nil {
		return nil, fmt.Errorf("list products: %w", err)
	}
	defer rows.Close()
	var out []catalog.Product
	for rows.Next() {
		p, err := scanProduct(rows)
		if err != nil {
			return nil, fmt.Errorf("list products: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list products: %w", err)
	}
	return out, nil
}

// readSale scans the sale id from row; ErrSaleNotFound if there is none.
func readSale(row *sql.Row, id string) (sale.Sale, error) {
	sl, err := scanSale(row)
	if errors.Is(err, sql.ErrNoRows) {
		return sale.Sale{}, sale.ErrSaleNotFound
	}
	if err != nil {
		return sale.Sale{}, fmt.Errorf("read sale %s: %w", id, err)
	}
	return sl, nil
}

// EndSale implements sale.Ender: a conditional UPDATE that only moves the
// end earlier, then the sale as stored on the primary.
func (s *Store) EndSale(ctx context.Context, id string, at time.Time) (sale.Sale, error) {
	ms := at.UnixMilli()
	if _, err := s.main.primary.ExecContext(ctx, `UPDATE sales SET ends_at = ? WHERE id = ? AND (ends_at IS NULL OR ends_at > ?)`,
		ms, id, ms); err != nil {
		return sale.Sale{}, fmt.Errorf("end sale %s: %w", id, err)
	}
	return readSale(s.main.primary.QueryRowContext(ctx, `SELECT `+saleColumns+` FROM sales WHERE id = ?`, id), id)
}

// SettleSale implements sale.Ender: the compare-and-set of settled_at, the
// move of the unsold units (catalog.MoveSaleEnd) and the product's stock,
// in one transaction. Concurrent settles of a sale wait on its row; the
// first one applies, the others then update no row.
func (s *Store) SettleSale(ctx context.Context, id string, unsold int64, at time.Time) (sl sale.Sale, applied bool, err error) {
	at = changeTime(at)
	err = retryDeadlock(ctx, func() error {
		sl, applied, err = s.settleSale(ctx, id, unsold, at)
		return err
	})
	if err != nil {
		return sale.Sale{}, false, err
	}
	return sl, applied, nil
}

func (s *Store) settleSale(ctx context.Context, id string, unsold int64, at time.Time) (sale.Sale, bool, error) {
	tx, err := s.main.primary.BeginTx(ctx, nil)
	if err != nil {
		return sale.Sale{}, false, fmt.Errorf("settle sale %s: %w", id, err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `UPDATE sales SET settled_at = ? WHERE id = ? AND settled_at IS NULL`, at.UnixMicro(), id)
	if err != nil {
		return sale.Sale{}, false, fmt.Errorf("settle sale %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return sale.Sale{}, false, fmt.Errorf("settle sale %s: %w", id, err)
	}
	// A locking read: the latest version, as the UPDATE saw it.
	sl, err := readSale(tx.QueryRowContext(ctx, `SELECT `+saleColumns+` FROM sales WHERE id = ? FOR UPDATE`, id), id)
	if err != nil {
		return sale.Sale{}, false, err
	}
	if n == 0 {
		return sl, false, nil // settled before
	}
	if unsold > 0 {
		if err := insertMove(ctx, tx, catalog.StockMove{SKU: sl.SKU, Key: catalog.MoveSaleEnd + id, Delta: unsold,
			Reason: "unsold units of sale " + id, At: at}); err != nil {
			return sale.Sale{}, false, fmt.Errorf("settle sale %s: %w", id, err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE products SET stock = stock + ? WHERE sku = ?`, unsold, sl.SKU); err != nil {
			return sale.Sale{}, false, fmt.Errorf("settle sale %s: %w", id, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return sale.Sale{}, false, fmt.Errorf("settle sale %s: %w", id, err)
	}
	return sl, true, nil
}
