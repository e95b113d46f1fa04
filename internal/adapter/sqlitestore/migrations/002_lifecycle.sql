-- The order lifecycle: payment deadline, status timestamps, shipping,
-- the stock-return outbox flag; the history of transitions; payments.
-- Expand only: new nullable or defaulted columns, new tables and indexes.
-- Times are Unix microseconds, NULL when not set. updated_at is NULL on rows
-- stored before this migration, read as created_at; payment_deadline NULL:
-- no deadline.
ALTER TABLE orders ADD COLUMN updated_at INTEGER;
ALTER TABLE orders ADD COLUMN payment_deadline INTEGER;
ALTER TABLE orders ADD COLUMN paid_at INTEGER;
ALTER TABLE orders ADD COLUMN cancelled_at INTEGER;
ALTER TABLE orders ADD COLUMN cancel_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE orders ADD COLUMN carrier TEXT NOT NULL DEFAULT '';
ALTER TABLE orders ADD COLUMN tracking TEXT NOT NULL DEFAULT '';
ALTER TABLE orders ADD COLUMN shipped_at INTEGER;
ALTER TABLE orders ADD COLUMN delivered_at INTEGER;
ALTER TABLE orders ADD COLUMN refunded_at INTEGER;
ALTER TABLE orders ADD COLUMN stock_returned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN stock_returned_to TEXT NOT NULL DEFAULT ''; -- 'sale' or 'product'

-- The deadline sweep reads a range of it: status = 'created' AND
-- payment_deadline <= now, oldest first; open deadlines are never read.
CREATE INDEX orders_by_deadline ON orders (status, payment_deadline);

-- The stock-return outbox: partial, so that placing (and every order that
-- is not cancelled or refunded) never writes to it.
CREATE INDEX orders_stock_outbox ON orders (updated_at, order_id) WHERE stock_returned = 0 AND status IN ('cancelled', 'refunded');

CREATE TABLE order_history (
    id          INTEGER PRIMARY KEY,
    order_id    TEXT NOT NULL,
    from_status TEXT NOT NULL,
    to_status   TEXT NOT NULL,
    transition  TEXT NOT NULL,
    cause       TEXT NOT NULL,
    at          INTEGER NOT NULL -- Unix microseconds
);

CREATE INDEX order_history_by_order ON order_history (order_id, id);

CREATE TABLE payments (
    payment_id      TEXT PRIMARY KEY,
    order_id        TEXT NOT NULL,
    user_id         INTEGER NOT NULL,
    provider        TEXT NOT NULL,
    amount_cents    INTEGER NOT NULL,
    status          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    provider_ref    TEXT NOT NULL DEFAULT '',
    checkout_url    TEXT NOT NULL DEFAULT '',
    refunded_cents  INTEGER NOT NULL DEFAULT 0,
    refund_ref      TEXT NOT NULL DEFAULT '',
    refunded_at     INTEGER,          -- Unix microseconds; NULL: not refunded
    created_at      INTEGER NOT NULL, -- Unix microseconds
    updated_at      INTEGER NOT NULL, -- Unix microseconds
    UNIQUE (order_id, idempotency_key)
) WITHOUT ROWID;

CREATE UNIQUE INDEX payments_by_ref ON payments (provider, provider_ref) WHERE provider_ref <> '';
