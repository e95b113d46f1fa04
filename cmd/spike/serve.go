package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/catalog"
	"github.com/spikehq/spike/flashsale"
	"github.com/spikehq/spike/httpapi"
	"github.com/spikehq/spike/inventory"
	"github.com/spikehq/spike/natsbus"
	"github.com/spikehq/spike/order"
	"github.com/spikehq/spike/resilience"
	"github.com/spikehq/spike/sale"
	"github.com/spikehq/spike/sqlitestore"
	"github.com/spikehq/spike/switches"
)

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg := DefaultConfig()
	fs := commonFlags("serve", &cfg, getenv)
	fs.StringVar(&cfg.NATSListen, "nats-listen", cfg.NATSListen, "also expose the embedded NATS server on this address (env SPIKE_NATS_LISTEN)")
	fs.StringVar(&cfg.PprofAddr, "pprof", cfg.PprofAddr, "serve net/http/pprof on this address, e.g. 127.0.0.1:6060 (env SPIKE_PPROF)")
	fs.BoolVar(&cfg.SyncAlways, "sync-always", cfg.SyncAlways, "fsync every stream write: survives power loss, slower (env SPIKE_SYNC_ALWAYS)")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.logger(stderr)
	log.Info("configuration", "addr", cfg.Addr, "data", cfg.Data, "jwt_secret", cfg.JWTSecret,
		"nats_listen", cfg.NATSListen, "sync_always", cfg.SyncAlways, "version", versionString())

	a, err := start(ctx, cfg, log)
	if err != nil {
		return err
	}
	if cfg.PprofAddr != "" {
		// http.DefaultServeMux holds the net/http/pprof handlers; the API never uses it.
		go func() { log.Warn("pprof server stopped", "err", http.ListenAndServe(cfg.PprofAddr, nil)) }()
	}
	fmt.Fprintf(stdout, "spike: serving on http://%s (embedded mode; data in %s)\n", a.addr, cfg.Data)
	fmt.Fprintf(stdout, "spike: get a token with: spike token --user 42   (an admin token: spike token --user 1 --admin)\n")
	if cfg.Data != DefaultConfig().Data {
		fmt.Fprintf(stdout, "spike: (pass the same --data %s to spike token)\n", cfg.Data)
	}

	select {
	case <-ctx.Done():
	case err := <-a.httpErr:
		log.Error("http server stopped", "err", err)
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped cleanly")
	return nil
}

// app is a running embedded Spike.
type app struct {
	addr    string
	data    string
	secret  []byte
	log     *slog.Logger
	http    *http.Server
	httpErr chan error
	store   *sqlitestore.Store
	nats    *natsbus.Embedded
	nc      *nats.Conn
	bus     *natsbus.Bus
	orders  *order.Service

	stopWork context.CancelFunc
	work     sync.WaitGroup
}

// start opens the stores and the stream, rebuilds the stock counters,
// starts the order workers and begins serving HTTP.
func start(ctx context.Context, cfg Config, log *slog.Logger) (a *app, err error) {
	if err := os.MkdirAll(cfg.Data, 0o755); err != nil {
		return nil, err
	}
	secret, err := cfg.secret()
	if err != nil {
		return nil, fmt.Errorf("jwt secret: %w", err)
	}
	a = &app{data: cfg.Data, secret: secret, log: log, httpErr: make(chan error, 1)}
	defer func() {
		if err != nil {
			a.close()
		}
	}()

	if a.store, err = sqlitestore.Open(ctx, filepath.Join(cfg.Data, "spike.db")); err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if a.nats, err = natsbus.StartEmbedded(filepath.Join(cfg.Data, "nats"), cfg.NATSListen, cfg.SyncAlways); err != nil {
		return nil, err
	}
	if a.nc, err = a.nats.Connect("spike"); err != nil {
		return nil, fmt.Errorf("connect to embedded nats: %w", err)
	}
	if a.bus, err = natsbus.New(ctx, a.nc, natsbus.Config{}, log.With("component", "natsbus")); err != nil {
		return nil, err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	board := switches.New(switches.Defs)
	sw, err := natsbus.NewSwitches(ctx, a.bus, board, log.With("component", "switches"))
	if err != nil {
		return nil, err
	}

	counters := inventory.New(spike.NewIDGenerator())
	catalogSvc := catalog.NewService(a.store)
	salesSvc := sale.NewService(a.store, saleCounters{counters})
	var stream order.Stream = a.bus
	if cfg.wrapStream != nil {
		stream = cfg.wrapStream(stream) // tests: faults in front of the stream, inside the guards
	}
	a.orders = order.NewService(counters, newGuardedStream(stream, reg, log), a.store, log.With("component", "order"))

	began := time.Now()
	queued, err := flashsale.Rebuild(ctx, a.store, a.store, a.bus, counters)
	if err != nil {
		return nil, err
	}
	a.orders.Restore(queued)
	log.Info("stock counters rebuilt", "queued_events", len(queued), "took", time.Since(began).Round(time.Millisecond))

	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	a.stopWork = stopWork
	a.goWork(func() error { return a.bus.RunWorker(workCtx, a.orders.Persist) })
	a.goWork(func() error { return a.orders.RunResolver(workCtx) })
	a.goWork(func() error { return sw.Run(workCtx) })
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "spike_orders_pending", Help: "Orders acknowledged by this instance and not yet persisted.",
	}, func() float64 { return float64(a.orders.PendingCount()) }))

	api := httpapi.New(httpapi.Config{
		Catalog: catalogSvc,
		Sales:   salesSvc,
		Orders:  a.orders,
		Auditor: &flashsale.Auditor{Sales: a.store, Orders: a.store, Events: a.bus, Counters: counters, Pending: a.orders},
		Auth:    httpapi.NewAuthenticator(secret),
		Probes: []httpapi.Probe{
			{Name: "sqlite", Check: a.store.Ping},
			{Name: "nats", Check: func(ctx context.Context) error { _, err := a.bus.Backlog(ctx); return err }},
		},
		Registry: reg,
		Logger:   log.With("component", "httpapi"),
		Guards: &httpapi.Guards{
			Admission: resilience.NewAdaptive(resilience.AdaptiveConfig{
				// Generous bounds: the limit adapts between them by latency, and
				// the floor keeps a burst of honest buyers from being shed.
				InitialLimit: 1000, MinLimit: 256, MaxLimit: 20000,
			}),
			Switches: board,
		},
		SwitchStore: sw,
	})

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	a.addr = ln.Addr().String()
	a.http = &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() {
		if err := a.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			a.httpErr <- err
		}
	}()
	return a, nil
}

func (a *app) goWork(f func() error) {
	a.work.Add(1)
	go func() {
		defer a.work.Done()
		if err := f(); err != nil {
			a.log.Error("worker stopped", "err", err)
		}
	}()
}

// shutdown stops taking requests, finishes those in flight, lets the order
// workers drain the stream, and closes everything.
func (a *app) shutdown(ctx context.Context) error {
	err := a.http.Shutdown(ctx)
	for {
		n, berr := a.bus.Backlog(ctx)
		if berr != nil || n == 0 || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.close()
	return err
}

// close stops the workers and closes the stream and the database.
func (a *app) close() {
	if a.stopWork != nil {
		a.stopWork()
		a.work.Wait()
	}
	if a.nc != nil {
		a.nc.Close()
	}
	if a.nats != nil {
		a.nats.Shutdown()
	}
	if a.store != nil {
		a.store.Close()
	}
}

// saleCounters adapts the stock counters to what the sale domain needs.
type saleCounters struct{ c *inventory.Counters }

func (s saleCounters) Open(sl sale.Sale) { s.c.Open(flashsale.Campaign(sl)) }
func (s saleCounters) Remaining(id string) (int64, bool) {
	return s.c.Remaining(id)
}

// startEmbedded lets `spike bench --embedded` run a server in-process.
func init() {
	startEmbedded = func(ctx context.Context, dataDir string) (string, []byte, func() error, error) {
		cfg := DefaultConfig()
		cfg.Addr = "127.0.0.1:0"
		cfg.Data = dataDir
		a, err := start(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			return "", nil, nil, err
		}
		stop := func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			return a.shutdown(ctx)
		}
		return "http://" + a.addr, a.secret, stop, nil
	}
}
