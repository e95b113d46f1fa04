-- One B-tree keyed by buyer instead of two. Buyers arrive in no order, so
-- each buyer-keyed index costs a page write per order persisted (a random
-- leaf); the unique (user_id, sale_id, idempotency_key) index already
-- finds a buyer's orders, which a listing sorts (a buyer holds a handful).
DROP INDEX orders_by_user;
