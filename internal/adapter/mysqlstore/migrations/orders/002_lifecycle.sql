-- The order lifecycle, on every order shard: payment deadline, status
-- timestamps, shipping, the stock-return outbox flag; the history of
-- transitions and the payments, both beside their order (same shard, by
-- user). Expand only. MySQL has no ADD COLUMN IF NOT EXISTS (MariaDB has):
-- the columns are one ALTER, atomic, and Migrate treats "duplicate column"
-- and "duplicate key name" as already applied, so a migration stopped
-- halfway can run again. Times are Unix microseconds, NULL when unset;
-- updated_at is NULL on rows stored before this migration (read as
-- created_at).
ALTER TABLE orders
    ADD COLUMN updated_at       BIGINT NULL,
    ADD COLUMN payment_deadline BIGINT NULL,
    ADD COLUMN paid_at          BIGINT NULL,
    ADD COLUMN cancelled_at     BIGINT NULL,
    ADD COLUMN cancel_reason    VARBINARY(32) NOT NULL DEFAULT '',
    ADD COLUMN carrier          VARBINARY(64) NOT NULL DEFAULT '',
    ADD COLUMN tracking         VARBINARY(128) NOT NULL DEFAULT '',
    ADD COLUMN shipped_at       BIGINT NULL,
    ADD COLUMN delivered_at     BIGINT NULL,
    ADD COLUMN refunded_at      BIGINT NULL,
    ADD COLUMN stock_returned   BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN stock_returned_to VARBINARY(16) NOT NULL DEFAULT '';

-- The deadline sweep reads a range of it: status = 'created' AND
-- payment_deadline <= now, oldest first, FOR UPDATE SKIP LOCKED.
CREATE INDEX orders_by_deadline ON orders (status, payment_deadline);

-- The stock-return outbox: cancelled or refunded orders not yet returned.
CREATE INDEX orders_stock_outbox ON orders (stock_returned, status, updated_at);

CREATE TABLE IF NOT EXISTS order_history (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    order_id    VARBINARY(64) NOT NULL,
    from_status VARBINARY(16) NOT NULL,
    to_status   VARBINARY(16) NOT NULL,
    transition  VARBINARY(16) NOT NULL,
    cause       VARBINARY(255) NOT NULL,
    at          BIGINT NOT NULL, -- Unix microseconds
    PRIMARY KEY (id),
    KEY order_history_by_order (order_id, id)
) ENGINE = InnoDB;

-- provider_ref is NULL until the provider names the payment, so that the
-- unique key holds only the set ones.
CREATE TABLE IF NOT EXISTS payments (
    payment_id      VARBINARY(64) NOT NULL,
    order_id        VARBINARY(64) NOT NULL,
    user_id         BIGINT NOT NULL,
    provider        VARBINARY(32) NOT NULL,
    amount_cents    BIGINT NOT NULL,
    status          VARBINARY(32) NOT NULL,
    idempotency_key VARBINARY(128) NOT NULL,
    provider_ref    VARBINARY(255) NULL,
    checkout_url    VARBINARY(2048) NOT NULL DEFAULT '',
    refunded_cents  BIGINT NOT NULL DEFAULT 0,
    refund_ref      VARBINARY(255) NOT NULL DEFAULT '',
    refunded_at     BIGINT NULL,     -- Unix microseconds
    created_at      BIGINT NOT NULL, -- Unix microseconds
    updated_at      BIGINT NOT NULL, -- Unix microseconds
    PRIMARY KEY (payment_id),
    UNIQUE KEY payments_order_key (order_id, idempotency_key),
    UNIQUE KEY payments_by_ref (provider, provider_ref)
) ENGINE = InnoDB;
