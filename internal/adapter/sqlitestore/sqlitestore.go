// Package sqlitestore keeps catalog, sales and orders in SQLite
// (modernc.org/sqlite, no cgo) for Spike's embedded mode. It uses WAL with
// synchronous=NORMAL: a committed transaction survives a crash of the
// process (not necessarily of the machine), and readers never block the
// writer. All writes go through one connection, as SQLite allows only one
// writer at a time anyway; reads use a small pool.
package sqlitestore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/payment"
	"github.com/spikehq/spike/internal/domain/sale"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store implements catalog.Store, catalog.StockLedger, sale.Store,
// sale.Ender, order.Store, order.LifecycleStore and payment.Store.
type Store struct {
	w *sql.DB // the single writer
	r *sql.DB // readers

	insertMu    sync.Mutex
	insertStmts map[int]*sql.Stmt // multi-row order inserts by row count
	gate        writeGate         // takes turns on w's one connection
}

var (
	_ catalog.Store       = (*Store)(nil)
	_ catalog.StockLedger = (*Store)(nil)
	_ sale.Store          = (*Store)(nil)
	_ sale.Ender          = (*Store)(nil)
	_ order.Store         = (*Store)(nil)

	_ order.LifecycleStore = (*Store)(nil)
	_ payment.Store        = (*Store)(nil)
)

// Open opens (creating if needed) the database at path and applies any
// pending migrations. path ":memory:" opens a private in-memory database.
func Open(ctx context.Context, path string) (*Store, error) {
	memory := path == ":memory:"
	if memory {
		// A shared-cache in-memory database, so that reader and writer see the same data.
		path = fmt.Sprintf("file:mem%d?mode=memory&cache=shared", time.Now().UnixNano())
	} else {
		// A URI filename: escape what SQLite's URI parser would read as syntax.
		path = "file:" + strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path) + "?"
	}
	// temp_store: temporary tables and statement journals stay in memory;
	// cache_size: 64 MiB of pages per connection instead of 2.
	pragmas := "&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=temp_store(MEMORY)&_pragma=cache_size(-65536)&_txlock=immediate"
	if !memory {
		// synchronous=NORMAL in WAL mode: a commit is written to the WAL
		// but not fsynced (the WAL is fsynced before each checkpoint, so
		// the database file never gets a page the WAL may lose). That is
		// enough for what Spike promises, that a crash of the process
		// (kill -9) loses no acknowledged order: once the write returns the
		// commit is in the kernel and survives the process, and an order
		// worker acknowledges (deletes) its events on the stream only after
		// InsertOrders has committed, so every order not yet committed is
		// still on the stream and is inserted again after a restart.
		// Only a power or kernel failure can drop the last commits; keeping
		// those too would take synchronous=FULL here as well as
		// nats.sync_always on the stream.
		//
		// wal_autocheckpoint: copy the WAL into the database every 10,000
		// pages (40 MiB) rather than 1,000. With many distinct buyers every
		// order dirties its own leaf page of the two buyer-keyed indexes;
		// a page written to the WAL many times between checkpoints is
		// copied back once, so fewer checkpoints copy fewer pages (and
		// fsync less). journal_size_limit truncates the WAL back to 64 MiB
		// if a long reader made it grow past that.
		pragmas += "&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=wal_autocheckpoint(10000)&_pragma=journal_size_limit(67108864)"
	}
	w, err := sql.Open("sqlite", path+pragmas)
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	w.SetConnMaxLifetime(0)
	r, err := sql.Open("sqlite", path+pragmas)
	if err != nil {
		w.Close()
		return nil, err
	}
	r.SetMaxOpenConns(4)
	s := &Store{w: w, r: r, insertStmts: map[int]*sql.Stmt{}}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("migrate: %w", err)
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
	s.insertMu.Lock()
	for _, st := range s.insertStmts {
		st.Close()
	}
	s.insertMu.Unlock()
	return errors.Join(s.r.Close(), s.w.Close())
}

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return errors.Join(s.r.PingContext(ctx), s.w.PingContext(ctx))
}

func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY)`); err != nil {
		return err
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		var n int
		if err := s.w.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE name = ?`, name).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			continue
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		tx, err := s.w.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		for _, stmt := range strings.Split(string(body), ";\n") {
			if strings.TrimSpace(stmt) == "" {
				continue
			}
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				tx.Rollback()
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (name) VALUES (?)`, name); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

func isUniqueViolation(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE
	}
	return false
}

// CreateProduct implements catalog.Store: the product and the move of its
// initial stock (catalog.MoveCreate, even of 0 units) in one transaction.
func (s *Store) CreateProduct(ctx context.Context, p catalog.Product) error {
	tx, end, err := s.beginWrite(ctx, false)
	if err != nil {
		return fmt.Errorf("create product %s: %w", p.SKU, err)
	}
	defer end()
	_, err = tx.ExecContext(ctx, `INSERT INTO products (sku, name, price_cents, stock) VALUES (?, ?, ?, ?)`,
		p.SKU, p.Name, p.PriceCents, p.Stock)
	if isUniqueViolation(err) {
		return catalog.ErrProductExists
	}
	if err != nil {
		return fmt.Errorf("create product %s: %w", p.SKU, err)
	}
	if err := insertMove(ctx, tx, catalog.StockMove{SKU: p.SKU, Key: catalog.MoveCreate + p.SKU, Delta: p.Stock, Reason: "initial stock"}); err != nil {
		return fmt.Errorf("create product %s: %w", p.SKU, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("create product %s: %w", p.SKU, err)
	}
	return nil
}

// Product implements catalog.Store.
func (s *Store) Product(ctx context.Context, sku string) (catalog.Product, error) {
	return scanProduct(s.r.QueryRowContext(ctx, `SELECT `+productColumns+` FROM products WHERE sku = ?`, sku))
}

func scanProduct(row *sql.Row) (catalog.Product, error) {
	var p catalog.Product
	err := row.Scan(&p.SKU, &p.Name, &p.PriceCents, &p.Stock)
	if errors.Is(err, sql.ErrNoRows) {
		return catalog.Product{}, catalog.ErrProductNotFound
	}
	if err != nil {
		return catalog.Product{}, fmt.Errorf("read product: %w", err)
	}
	return p, nil
}

// UpdateProduct implements catalog.Store.
func (s *Store) UpdateProduct(ctx context.Context, sku string, u catalog.ProductUpdate) (catalog.Product, error) {
	done, err := s.writing(ctx, false)
	if err != nil {
		return catalog.Product{}, fmt.Errorf("update product %s: %w", sku, err)
	}
	defer done()
	return scanProduct(s.w.QueryRowContext(ctx, `
		UPDATE products SET name = coalesce(?, name), price_cents = coalesce(?, price_cents)
		WHERE sku = ? RETURNING sku, name, price_cents, stock`, u.Name, u.PriceCents, sku))
}

// CreateSale implements sale.Store: the sale, the units taken from the
// product and their move (catalog.MoveSale) in one transaction.
func (s *Store) CreateSale(ctx context.Context, sl sale.Sale) (err error) {
	tx, end, err := s.beginWrite(ctx, false)
	if err != nil {
		return fmt.Errorf("create sale %s: %w", sl.ID, err)
	}
	defer end()
	var stock int64
	switch err := tx.QueryRowContext(ctx, `SELECT stock FROM products WHERE sku = ?`, sl.SKU).Scan(&stock); {
	case errors.Is(err, sql.ErrNoRows):
		return catalog.ErrProductNotFound
	case err != nil:
		return fmt.Errorf("create sale %s: %w", sl.ID, err)
	case stock < sl.Stock:
		return sale.ErrInsufficientStock
	}
	var ends any
	if !sl.EndsAt.IsZero() {
		ends = sl.EndsAt.UnixMilli()
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO sales (id, sku, stock, price_cents, per_user_limit, starts_at, ends_at, payment_window)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		sl.ID, sl.SKU, sl.Stock, sl.PriceCents, sl.PerUserLimit, sl.StartsAt.UnixMilli(), ends, int64(sl.PaymentWindow/time.Second))
	if isUniqueViolation(err) {
		return sale.ErrSaleExists
	}
	if err != nil {
		return fmt.Errorf("create sale %s: %w", sl.ID, err)
	}
	if _, err = tx.ExecContext(ctx, `UPDATE products SET stock = stock - ? WHERE sku = ?`, sl.Stock, sl.SKU); err != nil {
		return fmt.Errorf("create sale %s: %w", sl.ID, err)
	}
	if err = insertMove(ctx, tx, catalog.StockMove{SKU: sl.SKU, Key: catalog.MoveSale + sl.ID, Delta: -sl.Stock, Reason: "sale " + sl.ID}); err != nil {
		return fmt.Errorf("create sale %s: %w", sl.ID, err)
	}
	return tx.Commit()
}

const saleColumns = `id, sku, stock, price_cents, per_user_limit, starts_at, ends_at, payment_window, settled_at`

type scanner interface{ Scan(dest ...any) error }

func scanSale(row scanner) (sale.Sale, error) {
	var (
		sl      sale.Sale
		starts  int64
		ends    sql.NullInt64
		window  int64
		settled sql.NullInt64
	)
	if err := row.Scan(&sl.ID, &sl.SKU, &sl.Stock, &sl.PriceCents, &sl.PerUserLimit, &starts, &ends, &window, &settled); err != nil {
		return sale.Sale{}, err
	}
	sl.StartsAt = time.UnixMilli(starts).UTC()
	if ends.Valid {
		sl.EndsAt = time.UnixMilli(ends.Int64).UTC()
	}
	sl.PaymentWindow = time.Duration(window) * time.Second
	sl.SettledAt = fromMicros(settled)
	return sl, nil
}

// Sale implements sale.Store.
func (s *Store) Sale(ctx context.Context, id string) (sale.Sale, error) {
	sl, err := scanSale(s.r.QueryRowContext(ctx, `SELECT `+saleColumns+` FROM sales WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return sale.Sale{}, sale.ErrSaleNotFound
	}
	if err != nil {
		return sale.Sale{}, fmt.Errorf("read sale %s: %w", id, err)
	}
	return sl, nil
}

// MinPaymentWindow returns the shortest payment window of any sale;
// ok is false when no sale has one. The deadline sweep's overdue scan
// reads only placements that could be due soon (order.LifecycleConfig).
func (s *Store) MinPaymentWindow(ctx context.Context) (w time.Duration, ok bool, err error) {
	var secs sql.NullInt64
	if err := s.r.QueryRowContext(ctx, `SELECT MIN(payment_window) FROM sales WHERE payment_window > 0`).Scan(&secs); err != nil {
		return 0, false, fmt.Errorf("shortest payment window: %w", err)
	}
	return time.Duration(secs.Int64) * time.Second, secs.Valid, nil
}

// Sales implements sale.Store.
func (s *Store) Sales(ctx context.Context) ([]sale.Sale, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+saleColumns+` FROM sales ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list sales: %w", err)
	}
	defer rows.Close()
	var out []sale.Sale
	for rows.Next() {
		sl, err := scanSale(rows)
		if err != nil {
			return nil, fmt.Errorf("list sales: %w", err)
		}
		out = append(out, sl)
	}
	return out, rows.Err()
}

// InsertOrders implements order.Store: one transaction, one multi-row
// statement per chunk, duplicates ignored.
func (s *Store) InsertOrders(ctx context.Context, orders []order.Order) error {
	if len(orders) == 0 {
		return nil
	}
	// Prepare before the transaction: the writer has one connection, and
	// the transaction holds it.
	full, err := s.insertStmt(ctx, min(insertChunk, len(orders)))
	if err != nil {
		return fmt.Errorf("insert orders: %w", err)
	}
	rest := full
	if r := len(orders) % insertChunk; r != 0 && len(orders) > insertChunk {
		if rest, err = s.insertStmt(ctx, r); err != nil {
			return fmt.Errorf("insert orders: %w", err)
		}
	}
	// The workers' inserts wait their turn like any other write: made
	// urgent, they took the turns of payments (and with them buyers'
	// payments missed their deadlines); only the deadline sweep's go first.
	tx, end, err := s.beginWrite(ctx, order.IsDeadlineWork(ctx))
	if err != nil {
		return fmt.Errorf("insert orders: %w", err)
	}
	defer end()
	args := make([]any, 0, insertColumns*min(insertChunk, len(orders)))
	var bx boxer
	for start := 0; start < len(orders); start += insertChunk {
		chunk := orders[start:min(start+insertChunk, len(orders))]
		stmt := full
		if len(chunk) < insertChunk && start > 0 {
			stmt = rest
		}
		args = args[:0]
		for i := range chunk {
			o := &chunk[i]
			created := any(o.CreatedAt.UnixMicro())
			updated := created // until the first transition
			if !o.UpdatedAt.IsZero() {
				updated = o.UpdatedAt.UnixMicro()
			}
			var deadline any // NULL: no deadline
			if !o.PaymentDeadline.IsZero() {
				deadline = o.PaymentDeadline.UnixMicro()
			}
			args = append(args, o.ID, bx.sale(o.SaleID), bx.sku(o.SKU), o.UserID, o.Quantity,
				bx.price(o.PriceCents), bx.status(o.Status), o.IdempotencyKey, created, updated, deadline)
		}
		if _, err := tx.StmtContext(ctx, stmt).ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("insert orders: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("insert orders: %w", err)
	}
	return nil
}

// boxer converts the columns that repeat along a batch (the orders of one
// sale) to interface values once, rather than allocating for every order.
type boxer struct {
	saleID, skuID string
	saleV, skuV   any
	priceN        int64
	priceV        any
}

func (b *boxer) sale(id string) any {
	if b.saleV == nil || id != b.saleID {
		b.saleID, b.saleV = id, id
	}
	return b.saleV
}

func (b *boxer) sku(id string) any {
	if b.skuV == nil || id != b.skuID {
		b.skuID, b.skuV = id, id
	}
	return b.skuV
}

func (b *boxer) price(n int64) any {
	if b.priceV == nil || n != b.priceN {
		b.priceN, b.priceV = n, n
	}
	return b.priceV
}

// statusValues are the statuses as interface values, made once.
var statusValues = func() map[order.Status]any {
	m := map[order.Status]any{}
	for _, st := range []order.Status{order.Pending, order.Created, order.Paid, order.Cancelled, order.Shipped, order.Delivered, order.Refunded} {
		m[st] = string(st)
	}
	return m
}()

func (b *boxer) status(st order.Status) any {
	if v, ok := statusValues[st]; ok {
		return v
	}
	return string(st)
}

// insertColumns is the number of parameters per order row.
const insertColumns = 11

// insertChunk is the most rows one INSERT carries: 11 parameters each, well
// under SQLite's limit.
const insertChunk = 100

// insertStmt returns the prepared multi-row insert for n rows; preparing
// a 100-row statement costs more than running it, so they are kept.
//
// INSERT OR IGNORE rather than ON CONFLICT DO NOTHING: both skip a row
// whose order id, or whose (user, sale, idempotency key), is already
// stored, but an upsert clause still lets a NOT NULL violation abort the
// statement, so SQLite must keep a statement journal (a copy of every page
// the statement changes, to undo a partly applied multi-row insert); OR
// IGNORE cannot abort halfway, so it writes none. Every NOT NULL column is bound
// from a Go value that cannot be NULL, and the table has no CHECK, so OR
// IGNORE skips nothing that the upsert would have refused.
func (s *Store) insertStmt(ctx context.Context, n int) (*sql.Stmt, error) {
	s.insertMu.Lock()
	defer s.insertMu.Unlock()
	if st, ok := s.insertStmts[n]; ok {
		return st, nil
	}
	var b strings.Builder
	b.WriteString(`INSERT OR IGNORE INTO orders (order_id, sale_id, sku, user_id, quantity, price_cents, status, idempotency_key, created_at, updated_at, payment_deadline) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?,?,?,?,?,?,?,?,?,?,?)")
	}
	st, err := s.w.PrepareContext(ctx, b.String())
	if err != nil {
		return nil, err
	}
	s.insertStmts[n] = st
	return st, nil
}

// orderColumns are the columns scanOrder reads. Rows stored before the
// lifecycle migration have no updated_at: it is their created_at.
const orderColumns = `order_id, sale_id, sku, user_id, quantity, price_cents, status, idempotency_key, created_at,
	coalesce(updated_at, created_at), payment_deadline, paid_at, cancelled_at, cancel_reason, carrier, tracking,
	shipped_at, delivered_at, refunded_at, stock_returned_to`

func scanOrder(row scanner) (order.Order, error) {
	var (
		o                                                   order.Order
		status                                              string
		created, updated                                    int64
		deadline, paid, cancelled, shipped, deliv, refunded sql.NullInt64
	)
	if err := row.Scan(&o.ID, &o.SaleID, &o.SKU, &o.UserID, &o.Quantity, &o.PriceCents, &status, &o.IdempotencyKey, &created,
		&updated, &deadline, &paid, &cancelled, &o.CancelReason, &o.Carrier, &o.Tracking,
		&shipped, &deliv, &refunded, &o.StockReturnedTo); err != nil {
		return order.Order{}, err
	}
	o.Status = order.Status(status)
	o.CreatedAt = time.UnixMicro(created).UTC()
	o.UpdatedAt = time.UnixMicro(updated).UTC()
	o.PaymentDeadline = fromMicros(deadline)
	o.PaidAt = fromMicros(paid)
	o.CancelledAt = fromMicros(cancelled)
	o.ShippedAt = fromMicros(shipped)
	o.DeliveredAt = fromMicros(deliv)
	o.RefundedAt = fromMicros(refunded)
	return o, nil
}

// fromMicros converts a nullable Unix-microsecond column; NULL is the zero time.
func fromMicros(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.UnixMicro(n.Int64).UTC()
}

// micros converts a time to a nullable Unix-microsecond column; the zero
// time is NULL.
func micros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

// Order implements order.Store.
func (s *Store) Order(ctx context.Context, id string) (order.Order, error) {
	o, err := scanOrder(s.r.QueryRowContext(ctx, `SELECT `+orderColumns+` FROM orders WHERE order_id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return order.Order{}, order.ErrOrderNotFound
	}
	if err != nil {
		return order.Order{}, fmt.Errorf("read order: %w", err)
	}
	return o, nil
}

// A buyer's orders, newest first. They are found through the unique
// (user_id, sale_id, idempotency_key) index and sorted: a buyer holds a
// handful, and a second buyer-keyed index would cost every persisted
// order a write to a random page (migrations/004_one_buyer_index.sql).
const (
	listOrdersSQL = `SELECT ` + orderColumns + ` FROM orders WHERE user_id = ?
		ORDER BY created_at DESC, order_id DESC LIMIT ?`
	listOrdersAfterSQL = `SELECT ` + orderColumns + ` FROM orders WHERE user_id = ?
		AND (created_at < ? OR (created_at = ? AND order_id < ?))
		ORDER BY created_at DESC, order_id DESC LIMIT ?`
)

// ListOrders implements order.Store.
func (s *Store) ListOrders(ctx context.Context, userID int64, after order.Cursor, limit int) ([]order.Order, error) {
	var rows *sql.Rows
	var err error
	if after.IsZero() {
		rows, err = s.r.QueryContext(ctx, listOrdersSQL, userID, limit)
	} else {
		ts := after.CreatedAt.UnixMicro()
		rows, err = s.r.QueryContext(ctx, listOrdersAfterSQL, userID, ts, ts, after.ID, limit)
	}
	return collectOrders(rows, err)
}

// ScanSaleOrders implements order.Store.
func (s *Store) ScanSaleOrders(ctx context.Context, saleID string, fn func(*order.Order) error) error {
	rows, err := s.r.QueryContext(ctx, `SELECT `+orderColumns+` FROM orders WHERE sale_id = ?`, saleID)
	if err != nil {
		return fmt.Errorf("list orders: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return fmt.Errorf("list orders: %w", err)
		}
		if err := fn(&o); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list orders: %w", err)
	}
	return nil
}

func collectOrders(rows *sql.Rows, err error) ([]order.Order, error) {
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	defer rows.Close()
	var out []order.Order
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, fmt.Errorf("list orders: %w", err)
		}
		out = append(out, o)
	}
	return out, rows.Err()
}
