package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/spikehq/spike/internal/httpapi"
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
	srv := a.metrics
	a.serving.Go(func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			a.log.Warn("metrics server stopped", "err", err)
		}
	})
}
