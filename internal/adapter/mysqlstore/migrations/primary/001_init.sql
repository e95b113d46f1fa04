-- Catalog and sales, on the primary database.
-- Identifiers are VARBINARY so that they compare byte by byte, exactly as
-- SQLite and Go compare strings (no case folding, no PAD SPACE).
CREATE TABLE IF NOT EXISTS products (
    sku         VARBINARY(64) NOT NULL,
    name        TEXT CHARACTER SET utf8mb4 NOT NULL,
    price_cents BIGINT NOT NULL,
    stock       BIGINT NOT NULL,
    PRIMARY KEY (sku),
    CONSTRAINT products_price_cents_nonneg CHECK (price_cents >= 0),
    CONSTRAINT products_stock_nonneg CHECK (stock >= 0)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS sales (
    id             VARBINARY(64) NOT NULL,
    sku            VARBINARY(64) NOT NULL,
    stock          BIGINT NOT NULL,
    price_cents    BIGINT NOT NULL,
    per_user_limit BIGINT NOT NULL,
    starts_at      BIGINT NOT NULL, -- Unix milliseconds
    ends_at        BIGINT NULL,     -- Unix milliseconds; NULL: no end
    PRIMARY KEY (id),
    KEY sales_by_sku (sku),
    CONSTRAINT sales_product FOREIGN KEY (sku) REFERENCES products (sku),
    CONSTRAINT sales_stock_positive CHECK (stock > 0)
) ENGINE = InnoDB;
