package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/spikehq/spike/internal/httpapi"
)

// checkStore pings the database once at start. Credentials or a database
// MySQL refuses are a configuration error, not an outage: the start fails
// naming it. An unreachable server is an outage: the instance serves
// (placements go on through the stream) and /readyz reports it.
func checkStore(ctx context.Context, st stores, cfg Config, log *slog.Logger) error {
	if cfg.MySQL.Primary == "" {
		return nil // SQLite opened its file
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := st.Ping(ctx)
	var me *mysql.MySQLError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &me) && (me.Number == errAccessDenied || me.Number == errDBAccessDenied || me.Number == errBadDB):
		return fmt.Errorf("mysql: %w", err)
	}
	log.Warn("mysql does not answer; serving, /readyz reports it", "err", err)
	return nil
}

// MySQL's refusals of a connection's credentials or database.
const (
	errDBAccessDenied = 1044 // ER_DBACCESS_DENIED_ERROR
	errAccessDenied   = 1045 // ER_ACCESS_DENIED_ERROR
	errBadDB          = 1049 // ER_BAD_DB_ERROR
)

// probes are the dependencies /readyz checks: every one configured.
func (a *app) probes(cfg Config) []httpapi.Probe {
	store := "sqlite"
	if cfg.MySQL.Primary != "" {
		store = "mysql"
	}
	probes := []httpapi.Probe{{Name: store, Check: a.store.Ping}}
	if a.redis != nil {
		client := a.redis.client
		probes = append(probes, httpapi.Probe{Name: "redis", Check: func(ctx context.Context) error {
			return client.Do(ctx, client.B().Ping().Build()).Error()
		}})
	}
	return append(probes, httpapi.Probe{Name: "nats", Check: func(ctx context.Context) error {
		_, err := a.bus.Backlog(ctx) // a round trip to the stream
		return err
	}})
}

// metricsMode is how the API's listener serves /metrics.
func metricsMode(cfg Config) httpapi.MetricsMode {
	switch {
	case cfg.MetricsAddr != "":
		return httpapi.MetricsOff
	case cfg.HTTP.MetricsAdmin:
		return httpapi.MetricsAdmin
	}
	return httpapi.MetricsPublic
}

// serveMetrics serves /metrics (and pprof, when withPprof) on ln, as one
// of the app's servers: shutdown stops it.
func (a *app) serveMetrics(ln net.Listener, metrics http.Handler, withPprof bool) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	if withPprof {
		mux.Handle("/debug/pprof/", http.DefaultServeMux) // net/http/pprof registers there
	}
	a.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	a.metricsAddr = ln.Addr().String()
	srv := a.metrics
	a.serving.Go(func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			a.log.Warn("metrics server stopped", "err", err)
		}
	})
}
