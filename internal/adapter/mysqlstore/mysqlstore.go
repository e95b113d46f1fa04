// Package mysqlstore keeps catalog, sales and orders in MySQL (or MariaDB)
// for Spike's clustered mode, with github.com/go-sql-driver/mysql.
//
// Products and sales live on one primary database. Orders are partitioned
// by user: BucketOf maps a user id to one of NumBuckets logical buckets,
// and the configuration maps bucket ranges to order shards, each its own
// database. Every database may have read replicas: reads that may be stale
// go to a replica, and a point read that finds nothing there is retried on
// the primary, so "not found" is always the primary's answer. A buyer's
// listing is read from the primary for a short while after this Store
// wrote one of their orders (read-your-writes).
//
// The schema is applied by [Store.Migrate]; see docs/mysql.md.
package mysqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"golang.org/x/sync/errgroup"

	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/payment"
	"github.com/spikehq/spike/internal/domain/sale"
)

// Config says where the databases are. DSNs are go-sql-driver/mysql DSNs
// ("user:password@tcp(host:3306)/dbname"); each must name a database. A DSN
// without a timeout parameter gets a 5 s dial timeout, so that a database
// that is down fails calls quickly instead of after the OS's TCP timeout.
type Config struct {
	// Primary holds products and sales (and orders, if OrderShards is empty).
	Primary string
	// Replicas are read replicas of Primary; may be empty.
	Replicas []string
	// OrderShards hold the orders. If empty, orders live on Primary and
	// its Replicas.
	OrderShards []ShardConfig
	// ReadYourWrites is how long after writing a user's order this Store
	// reads that user's listings from the shard primary rather than a
	// replica. It should exceed the replicas' usual lag. If zero,
	// DefaultReadYourWrites is used; if negative, listings always use
	// replicas when there are any.
	ReadYourWrites time.Duration
	// MaxOpenConns limits the connections to each database. If zero, 32.
	MaxOpenConns int
}

// ShardConfig is one order shard: a primary database, its replicas and the
// buckets it holds.
type ShardConfig struct {
	Primary  string
	Replicas []string
	// Buckets are the buckets this shard holds. If no shard lists any,
	// the buckets are split evenly in shard order (see EvenBuckets);
	// otherwise every bucket must be listed by exactly one shard.
	Buckets []BucketRange
}

// DefaultReadYourWrites is the default Config.ReadYourWrites.
const DefaultReadYourWrites = 5 * time.Second

// Store implements catalog.Store, catalog.StockLedger, sale.Store,
// sale.Ender, order.Store, order.LifecycleStore and payment.Store over
// MySQL.
// It is safe for concurrent use.
type Store struct {
	main   *node
	shards []*node
	bucket [NumBuckets]int // bucket → index in shards
	dbs    []*sql.DB       // every distinct database, for Ping and Close
	names  []string        // what each of dbs is, for errors
	ryw    *recentWriters
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

// node is one primary and its replicas.
type node struct {
	name     string // for error messages: "primary", "order shard 2"
	primary  *sql.DB
	replicas []*sql.DB
	next     atomic.Uint32
}

// reader returns the database to read possibly stale data from: a replica
// (round robin) if there are any, else the primary.
func (n *node) reader() *sql.DB {
	if len(n.replicas) == 0 {
		return n.primary
	}
	return n.replicas[int(n.next.Add(1)-1)%len(n.replicas)]
}

// Open returns a Store over the databases of cfg. It does not connect: use
// Ping to check the databases and Migrate to create or upgrade the schema.
// It returns an error if a DSN does not parse or names no database, or if
// the bucket ranges do not cover every bucket exactly once.
func Open(cfg Config) (*Store, error) {
	if cfg.MaxOpenConns == 0 {
		cfg.MaxOpenConns = 32
	}
	if cfg.ReadYourWrites == 0 {
		cfg.ReadYourWrites = DefaultReadYourWrites
	}
	shards := cfg.OrderShards
	if len(shards) == 0 {
		shards = []ShardConfig{{Primary: cfg.Primary, Replicas: cfg.Replicas}}
	}
	ranges := make([][]BucketRange, len(shards))
	for i, sh := range shards {
		ranges[i] = sh.Buckets
	}
	bm, err := bucketMap(ranges)
	if err != nil {
		return nil, fmt.Errorf("mysqlstore: %w", err)
	}

	s := &Store{bucket: bm, ryw: newRecentWriters(cfg.ReadYourWrites)}
	opened := make(map[string]*sql.DB) // by normalised DSN: one pool per database
	open := func(what, dsn string) (*sql.DB, string, error) {
		mc, err := mysql.ParseDSN(dsn)
		if err != nil {
			return nil, "", fmt.Errorf("mysqlstore: %s: %w", what, err)
		}
		if mc.DBName == "" {
			return nil, "", fmt.Errorf("mysqlstore: %s: the DSN names no database", what)
		}
		if mc.Timeout == 0 {
			mc.Timeout = 5 * time.Second
		}
		// Arguments interpolated by the driver: a statement is one round
		// trip instead of three (prepare, execute, close), and a batch
		// insert of a new row count is not prepared for a single use.
		mc.InterpolateParams = true
		key := mc.FormatDSN()
		if db, ok := opened[key]; ok {
			return db, key, nil
		}
		c, err := mysql.NewConnector(mc)
		if err != nil {
			return nil, "", fmt.Errorf("mysqlstore: %s: %w", what, err)
		}
		db := sql.OpenDB(c)
		db.SetMaxOpenConns(cfg.MaxOpenConns)
		db.SetMaxIdleConns(cfg.MaxOpenConns)
		db.SetConnMaxLifetime(time.Hour)
		db.SetConnMaxIdleTime(5 * time.Minute)
		opened[key] = db
		s.dbs = append(s.dbs, db)
		s.names = append(s.names, what+" ("+mc.DBName+")")
		return db, key, nil
	}
	newNode := func(name, primary string, replicas []string) (*node, string, error) {
		n := &node{name: name}
		var key string
		var err error
		if n.primary, key, err = open(name+" primary", primary); err != nil {
			return nil, "", err
		}
		for i, r := range replicas {
			db, _, err := open(fmt.Sprintf("%s replica %d", name, i), r)
			if err != nil {
				return nil, "", err
			}
			n.replicas = append(n.replicas, db)
		}
		return n, key, nil
	}

	fail := func(err error) (*Store, error) {
		s.Close()
		return nil, err
	}
	main, _, err := newNode("primary", cfg.Primary, cfg.Replicas)
	if err != nil {
		return fail(err)
	}
	s.main = main
	seen := map[string]int{}
	for i, sh := range shards {
		name := fmt.Sprintf("order shard %d", i)
		if len(cfg.OrderShards) == 0 {
			s.shards = append(s.shards, main)
			break
		}
		n, key, err := newNode(name, sh.Primary, sh.Replicas)
		if err != nil {
			return fail(err)
		}
		if j, ok := seen[key]; ok {
			return fail(fmt.Errorf("mysqlstore: order shards %d and %d use the same database", j, i))
		}
		seen[key] = i
		s.shards = append(s.shards, n)
	}
	return s, nil
}

// Close closes every database.
func (s *Store) Close() error {
	var errs []error
	for _, db := range s.dbs {
		errs = append(errs, db.Close())
	}
	return errors.Join(errs...)
}

// Ping checks every database, primaries and replicas, in parallel, and
// returns the errors of those that do not answer.
func (s *Store) Ping(ctx context.Context) error {
	errs := make([]error, len(s.dbs))
	var g errgroup.Group
	for i, db := range s.dbs {
		g.Go(func() error {
			if err := db.PingContext(ctx); err != nil {
				errs[i] = fmt.Errorf("ping %s: %w", s.names[i], err)
			}
			return nil
		})
	}
	g.Wait()
	return errors.Join(errs...)
}

// shardOf returns the node holding the user's orders.
func (s *Store) shardOf(userID int64) *node { return s.shards[s.bucket[BucketOf(userID)]] }

// MySQL error numbers translated at the boundary.
const (
	errDupFieldName = 1060 // ER_DUP_FIELDNAME
	errDupKeyName   = 1061 // ER_DUP_KEYNAME
	errDupEntry     = 1062 // ER_DUP_ENTRY
	errLockDeadlock = 1213 // ER_LOCK_DEADLOCK
)

func isMySQLError(err error, number uint16) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == number
}

// retryDeadlock runs fn, a whole transaction, again (up to 3 tries) when
// MySQL chose it as a deadlock victim: the transaction was rolled back, so
// running it again is safe.
func retryDeadlock(ctx context.Context, fn func() error) error {
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return err
			case <-time.After(time.Duration(attempt*attempt) * 5 * time.Millisecond):
			}
		}
		if err = fn(); !isMySQLError(err, errLockDeadlock) {
			return err
		}
	}
	return err
}
