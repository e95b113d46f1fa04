-- Stock moves: every change of a product's stock, applied once per
-- (sku, move_key), so that a product's stock is the sum of its moves.
-- Sales gain their payment window (seconds; 0: no deadline, and for sales
-- stored before) and the time their unsold units went back to the product
-- (Unix microseconds; NULL until settled). Expand only; the columns are
-- one ALTER, atomic, so a migration stopped halfway runs again.
CREATE TABLE IF NOT EXISTS stock_moves (
    id       BIGINT UNSIGNED NOT NULL AUTO_INCREMENT, -- insertion order: StockMoves reads oldest first
    sku      VARBINARY(64) NOT NULL,
    move_key VARBINARY(255) NOT NULL,
    delta    BIGINT NOT NULL,
    reason   TEXT CHARACTER SET utf8mb4 NOT NULL,
    at       BIGINT NOT NULL, -- Unix microseconds
    PRIMARY KEY (id),
    UNIQUE KEY stock_moves_key (sku, move_key),
    KEY stock_moves_by_sku (sku, id),
    CONSTRAINT stock_moves_product FOREIGN KEY (sku) REFERENCES products (sku)
) ENGINE = InnoDB;

ALTER TABLE sales
    ADD COLUMN payment_window BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN settled_at     BIGINT NULL;

-- Products stored before this migration: a baseline move of their stock
-- plus the units of their sales, then one move per sale taking its units,
-- so that stock = the sum of the moves. One statement, so that the
-- baseline and the sales' moves agree even if an older instance creates a
-- sale meanwhile (during a rolling upgrade). INSERT IGNORE and the NOT
-- EXISTS make it safe to run again: a product with any move already gets
-- no baseline, a sale's move is inserted once.
INSERT IGNORE INTO stock_moves (sku, move_key, delta, reason, at)
SELECT sku, move_key, delta, reason, at FROM (
    SELECT 0 AS ord, p.sku, 'baseline' AS move_key,
           CAST(p.stock + coalesce((SELECT sum(s.stock) FROM sales s WHERE s.sku = p.sku), 0) AS SIGNED) AS delta,
           'stock before stock moves were recorded' AS reason,
           CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED) AS at
    FROM products p
    WHERE NOT EXISTS (SELECT 1 FROM stock_moves m WHERE m.sku = p.sku)
    UNION ALL
    SELECT 1, s.sku, CONCAT('sale:', s.id), -s.stock, CONCAT('sale ', s.id), s.starts_at * 1000
    FROM sales s
) moves
ORDER BY ord, sku, at, move_key;
