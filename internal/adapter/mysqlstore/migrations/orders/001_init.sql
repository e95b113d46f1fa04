-- Orders, on every order shard. bucket is BucketOf(user_id): the unit in
-- which orders would move between shards.
CREATE TABLE IF NOT EXISTS orders (
    order_id        VARBINARY(64) NOT NULL,
    bucket          SMALLINT UNSIGNED NOT NULL,
    sale_id         VARBINARY(64) NOT NULL,
    sku             VARBINARY(64) NOT NULL,
    user_id         BIGINT NOT NULL,
    quantity        BIGINT NOT NULL,
    price_cents     BIGINT NOT NULL,
    status          VARBINARY(16) NOT NULL,
    idempotency_key VARBINARY(128) NOT NULL,
    created_at      BIGINT NOT NULL, -- Unix microseconds
    PRIMARY KEY (order_id),
    UNIQUE KEY orders_user_sale_key (user_id, sale_id, idempotency_key),
    KEY orders_by_user (user_id, created_at, order_id),
    KEY orders_by_sale (sale_id),
    KEY orders_by_bucket (bucket)
) ENGINE = InnoDB;
