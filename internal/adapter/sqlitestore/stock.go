package sqlitestore

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
// Key) is recorded already is a unique violation.
func insertMove(ctx context.Context, tx *sql.Tx, m catalog.StockMove) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO stock_moves (sku, move_key, delta, reason, at) VALUES (?, ?, ?, ?, ?)`,
		m.SKU, m.Key, m.Delta, m.Reason, changeTime(m.At).UnixMicro())
	return err
}

const productColumns = `sku, name, price_cents, stock`

// AdjustStock implements catalog.StockLedger. The writer is one connection
// and transactions begin IMMEDIATE, so adjustments are serialised.
func (s *Store) AdjustStock(ctx context.Context, m catalog.StockMove) (catalog.Product, bool, error) {
	tx, end, err := s.beginWrite(ctx, false)
	if err != nil {
		return catalog.Product{}, false, fmt.Errorf("adjust stock of %s: %w", m.SKU, err)
	}
	defer end()
	p, err := scanProduct(tx.QueryRowContext(ctx, `SELECT `+productColumns+` FROM products WHERE sku = ?`, m.SKU))
	if err != nil {
		return catalog.Product{}, false, err
	}
	err = insertMove(ctx, tx, m)
	if isUniqueViolation(err) {
		return p, false, nil // applied before: nothing changes
	}
	if err != nil {
		return catalog.Product{}, false, fmt.Errorf("adjust stock of %s: %w", m.SKU, err)
	}
	p, err = scanProduct(tx.QueryRowContext(ctx, `UPDATE products SET stock = stock + ? WHERE sku = ? AND stock + ? >= 0
		RETURNING `+productColumns, m.Delta, m.SKU, m.Delta))
	if errors.Is(err, catalog.ErrProductNotFound) {
		return catalog.Product{}, false, catalog.ErrInsufficientStock // the product exists: read above, in this transaction
	}
	if err != nil {
		return catalog.Product{}, false, err
	}
	if err := tx.Commit(); err != nil {
		return catalog.Product{}, false, fmt.Errorf("adjust stock of %s: %w", m.SKU, err)
	}
	return p, true, nil
}

// StockMoves implements catalog.StockLedger: the moves in the order they
// were recorded; none for an unknown SKU.
func (s *Store) StockMoves(ctx context.Context, sku string) ([]catalog.StockMove, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT sku, move_key, delta, reason, at FROM stock_moves WHERE sku = ? ORDER BY id`, sku)
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

// Products returns every product, ordered by SKU.
func (s *Store) Products(ctx context.Context) ([]catalog.Product, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+productColumns+` FROM products ORDER BY sku`)
	if err != nil {
		return nil, fmt.Errorf("list products: %w", err)
	}
	defer rows.Close()
	var out []catalog.Product
	for rows.Next() {
		var p catalog.Product
		if err := rows.Scan(&p.SKU, &p.Name, &p.PriceCents, &p.Stock); err != nil {
			return nil, fmt.Errorf("list products: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list products: %w", err)
	}
	return out, nil
}

// EndSale implements sale.Ender.
func (s *Store) EndSale(ctx context.Context, id string, at time.Time) (sale.Sale, error) {
	ms := at.UnixMilli()
	done, err := s.writing(ctx, false)
	if err != nil {
		return sale.Sale{}, fmt.Errorf("end sale %s: %w", id, err)
	}
	defer done()
	sl, err := scanSale(s.w.QueryRowContext(ctx, `UPDATE sales SET ends_at = CASE WHEN ends_at IS NULL OR ends_at > ? THEN ? ELSE ends_at END
		WHERE id = ? RETURNING `+saleColumns, ms, ms, id))
	if errors.Is(err, sql.ErrNoRows) {
		return sale.Sale{}, sale.ErrSaleNotFound
	}
	if err != nil {
		return sale.Sale{}, fmt.Errorf("end sale %s: %w", id, err)
	}
	return sl, nil
}

// SettleSale implements sale.Ender: the compare-and-set of settled_at, the
// move of the unsold units (catalog.MoveSaleEnd) and the product's stock,
// in one transaction.
func (s *Store) SettleSale(ctx context.Context, id string, unsold int64, at time.Time) (sale.Sale, bool, error) {
	at = changeTime(at)
	tx, end, err := s.beginWrite(ctx, false)
	if err != nil {
		return sale.Sale{}, false, fmt.Errorf("settle sale %s: %w", id, err)
	}
	defer end()
	res, err := tx.ExecContext(ctx, `UPDATE sales SET settled_at = ? WHERE id = ? AND settled_at IS NULL`, at.UnixMicro(), id)
	if err != nil {
		return sale.Sale{}, false, fmt.Errorf("settle sale %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return sale.Sale{}, false, fmt.Errorf("settle sale %s: %w", id, err)
	}
	sl, err := scanSale(tx.QueryRowContext(ctx, `SELECT `+saleColumns+` FROM sales WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return sale.Sale{}, false, sale.ErrSaleNotFound
	}
	if err != nil {
		return sale.Sale{}, false, fmt.Errorf("settle sale %s: %w", id, err)
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
