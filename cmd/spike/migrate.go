package main

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// migrate runs `spike migrate`: it applies the MySQL migrations the
// databases lack and says how many it applied.
func migrate(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := newFlagSet("migrate").load(args, getenv, stdout)
	if err != nil {
		return err
	}
	if cfg.MySQL.Primary == "" {
		return errors.New("migrate: no MySQL configured (mysql.primary): in embedded mode SQLite migrates itself when spike serve starts, " +
			"so there is nothing to run; for MySQL pass --config FILE (or SPIKE_CONFIG) naming mysql.primary")
	}
	st, err := openStores(ctx, cfg, false)
	if err != nil {
		return err
	}
	defer st.Close()
	m, ok := st.(interface {
		MigrateCount(context.Context) (int, error)
	})
	if !ok {
		return fmt.Errorf("migrate: %T cannot migrate", st)
	}
	n, err := m.MigrateCount(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w (after applying %d)", err, n)
	}
	if n == 0 {
		fmt.Fprintln(stdout, "migrate: already up to date")
		return nil
	}
	fmt.Fprintf(stdout, "migrate: applied %d migrations; the schema is up to date\n", n)
	return nil
}
