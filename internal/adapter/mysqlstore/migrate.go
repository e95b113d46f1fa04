package mysqlstore

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

// Migrations are plain SQL files, applied in name order and recorded by
// name in each database's schema_migrations table. They must only add
// (tables, nullable or defaulted columns, indexes) so that instances of
// the previous version keep working during a rolling upgrade
// (expand/contract); removing anything is a later migration, once no
// running version uses it. MySQL commits DDL implicitly, so each statement
// must be safe to run again (IF NOT EXISTS), in case a migration stopped
// halfway.
//
//go:embed migrations/primary/*.sql migrations/orders/*.sql
var migrations embed.FS

// Migrate creates or upgrades the schema: the catalog tables on the
// primary and the orders table on every order shard's primary (replicas
// get it by replication). It is idempotent, and concurrent calls (several
// instances starting at once) are serialised per database by a named lock.
func (s *Store) Migrate(ctx context.Context) error {
	_, err := s.MigrateCount(ctx)
	return err
}

// MigrateCount is Migrate, and returns how many migrations it applied
// (over all databases): 0 when the schema was already up to date.
func (s *Store) MigrateCount(ctx context.Context) (applied int, err error) {
	n, err := migrate(ctx, s.main.primary, "primary")
	if err != nil {
		return applied, fmt.Errorf("migrate %s: %w", s.main.name, err)
	}
	applied += n
	for _, sh := range s.shards {
		n, err := migrate(ctx, sh.primary, "orders")
		if err != nil {
			return applied, fmt.Errorf("migrate %s: %w", sh.name, err)
		}
		applied += n
	}
	return applied, nil
}

// migrate applies the migrations of one set ("primary" or "orders") and
// returns how many it applied.
func migrate(ctx context.Context, db *sql.DB, set string) (applied int, err error) {
	conn, err := db.Conn(ctx) // GET_LOCK belongs to a session: keep one
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(CONCAT('spike_migrate.', DATABASE()), 60)`).Scan(&got); err != nil {
		return 0, err
	}
	if got.Int64 != 1 {
		return 0, fmt.Errorf("another migration holds the lock")
	}
	defer func() {
		// A fresh context: release the lock even if ctx is done.
		if _, rerr := conn.ExecContext(context.Background(), `SELECT RELEASE_LOCK(CONCAT('spike_migrate.', DATABASE()))`); rerr != nil && err == nil {
			err = rerr
		}
	}()
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		name       VARBINARY(255) NOT NULL PRIMARY KEY,
		applied_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
	) ENGINE = InnoDB`); err != nil {
		return 0, err
	}
	names, err := fs.Glob(migrations, "migrations/"+set+"/*.sql")
	if err != nil {
		return 0, err
	}
	sort.Strings(names)
	for _, path := range names {
		name := strings.TrimPrefix(path, "migrations/")
		var n int
		if err := conn.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE name = ?`, name).Scan(&n); err != nil {
			return applied, err
		}
		if n > 0 {
			continue
		}
		body, err := migrations.ReadFile(path)
		if err != nil {
			return applied, err
		}
		for _, stmt := range splitStatements(string(body)) {
			if _, err := conn.ExecContext(ctx, stmt); err != nil && !alreadyApplied(err) {
				return applied, fmt.Errorf("%s: %w", name, err)
			}
		}
		if _, err := conn.ExecContext(ctx, `INSERT INTO schema_migrations (name) VALUES (?)`, name); err != nil {
			return applied, fmt.Errorf("%s: %w", name, err)
		}
		applied++
	}
	return applied, nil
}

// splitStatements splits a migration at semicolons that end a line,
// dropping comment-only lines.
func splitStatements(body string) []string {
	var out []string
	for _, stmt := range strings.Split(body, ";\n") {
		var lines []string
		for _, l := range strings.Split(stmt, "\n") {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "--") {
				lines = append(lines, l)
			}
		}
		if len(lines) > 0 {
			out = append(out, strings.Join(lines, "\n"))
		}
	}
	return out
}

// alreadyApplied reports whether a DDL error says the statement's change is
// already there: an ADD COLUMN or CREATE INDEX of a migration that stopped
// halfway, run again. MySQL (unlike MariaDB) has no ADD COLUMN IF NOT
// EXISTS or CREATE INDEX IF NOT EXISTS; a migration that adds columns does
// so in one ALTER, which is atomic, so a duplicate means all were added.
func alreadyApplied(err error) bool {
	return isMySQLError(err, errDupFieldName) || isMySQLError(err, errDupKeyName)
}
