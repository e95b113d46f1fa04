CREATE TABLE products (
    sku         TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    stock       INTEGER NOT NULL CHECK (stock >= 0)
) WITHOUT ROWID;

CREATE TABLE sales (
    id             TEXT PRIMARY KEY,
    sku            TEXT NOT NULL REFERENCES products (sku),
    stock          INTEGER NOT NULL CHECK (stock > 0),
    price_cents    INTEGER NOT NULL,
    per_user_limit INTEGER NOT NULL,
    starts_at      INTEGER NOT NULL, -- Unix milliseconds
    ends_at        INTEGER           -- Unix milliseconds; NULL: no end
) WITHOUT ROWID;

CREATE TABLE orders (
    order_id        TEXT PRIMARY KEY,
    sale_id         TEXT NOT NULL,
    sku             TEXT NOT NULL,
    user_id         INTEGER NOT NULL,
    quantity        INTEGER NOT NULL,
    price_cents     INTEGER NOT NULL,
    status          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    created_at      INTEGER NOT NULL, -- Unix microseconds
    UNIQUE (user_id, sale_id, idempotency_key)
) WITHOUT ROWID;

CREATE INDEX orders_by_user ON orders (user_id, created_at DESC, order_id DESC);
CREATE INDEX orders_by_sale ON orders (sale_id);
