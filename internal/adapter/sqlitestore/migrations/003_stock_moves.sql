-- Stock moves: every change of a product's stock, applied once per
-- (sku, move_key), so that a product's stock is the sum of its moves.
-- Sales gain their payment window and the time their unsold units went
-- back to the product. Expand only.
CREATE TABLE stock_moves (
    id       INTEGER PRIMARY KEY, -- insertion order: StockMoves reads oldest first
    sku      TEXT NOT NULL REFERENCES products (sku),
    move_key TEXT NOT NULL,
    delta    INTEGER NOT NULL,
    reason   TEXT NOT NULL DEFAULT '',
    at       INTEGER NOT NULL, -- Unix microseconds
    UNIQUE (sku, move_key)
);

CREATE INDEX stock_moves_by_sku ON stock_moves (sku, id);

-- payment_window: seconds, 0 for no deadline (and for older sales);
-- settled_at: Unix microseconds, NULL until the sale is settled.
ALTER TABLE sales ADD COLUMN payment_window INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sales ADD COLUMN settled_at INTEGER;

-- Products stored before this migration: a baseline move of their stock
-- plus the units of their sales, then one move per sale taking its units,
-- so that stock = the sum of the moves. The whole migration is one
-- transaction.
INSERT OR IGNORE INTO stock_moves (sku, move_key, delta, reason, at)
SELECT p.sku, 'baseline', p.stock + coalesce((SELECT sum(s.stock) FROM sales s WHERE s.sku = p.sku), 0),
       'stock before stock moves were recorded', CAST(strftime('%s', 'now') AS INTEGER) * 1000000
FROM products p
WHERE NOT EXISTS (SELECT 1 FROM stock_moves m WHERE m.sku = p.sku)
ORDER BY p.sku;

INSERT OR IGNORE INTO stock_moves (sku, move_key, delta, reason, at)
SELECT sku, 'sale:' || id, -stock, 'sale ' || id, starts_at * 1000
FROM sales
ORDER BY starts_at, id;
