package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/trace"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/mysqlstore"
	"github.com/spikehq/spike/internal/adapter/natsbus"
	"github.com/spikehq/spike/internal/adapter/rediscache"
	"github.com/spikehq/spike/internal/adapter/redisstock"
	"github.com/spikehq/spike/internal/adapter/sqlitestore"
	"github.com/spikehq/spike/internal/dashboard"
	"github.com/spikehq/spike/internal/depguard"
	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/notify"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/payment"
	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/internal/fault"
	"github.com/spikehq/spike/internal/httpapi"
	"github.com/spikehq/spike/internal/ledger"
	"github.com/spikehq/spike/internal/readcache/catalogcache"
	"github.com/spikehq/spike/internal/readcache/salecache"
	"github.com/spikehq/spike/internal/switches"
	"github.com/spikehq/spike/resilience"
)

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve")
	fs.String("nats-listen", "", "also expose the embedded NATS server on this address (env SPIKE_NATS_LISTEN)")
	fs.String("pprof", "", "serve net/http/pprof on this loopback address, e.g. 127.0.0.1:6060 (env SPIKE_PPROF)")
	fs.Bool("pprof-force", false, "allow --pprof on an address that is not loopback (env SPIKE_PPROF_FORCE)")
	fs.String("metrics-addr", "", "serve /metrics here instead of on --addr, and pprof too when --pprof is the same address (env SPIKE_METRICS_ADDR)")
	fs.Bool("sync-always", false, "fsync every stream write: survives power loss, slower (env SPIKE_NATS_SYNC_ALWAYS)")
	fs.String("notify", "", "notification provider: webhook, log or none (env SPIKE_NOTIFY_PROVIDER)")
	fs.String("notify-webhook-url", "", "POST buyer notifications here, signed with notify.webhook_secret (env SPIKE_NOTIFY_WEBHOOK_URL)")
	checkOnly := fs.Bool("check-config", false, "load and validate the configuration, print \"config ok\" and exit, connecting to nothing")
	cfg, err := fs.load(args, getenv, stderr)
	if err != nil {
		return err
	}
	if *checkOnly {
		return checkConfig(cfg, stdout)
	}
	log := cfg.logger(stderr)
	log.Info("starting", "version", versionString())
	logConfig(log, cfg)
	// Fault injection for experiments (scripts/overload.sh dep): every
	// publish to the stream waits SPIKE_FAULT_STREAM_DELAY first.
	if wrap, d, err := fault.StreamFromEnv(getenv); err != nil {
		return err
	} else if wrap != nil {
		log.Warn("fault injection: the order stream is slowed down", "delay", d)
		cfg.wrapStream = wrap
	}

	a, err := start(ctx, cfg, log)
	if err != nil {
		return err
	}
	// After start: the startup rebuild reads the whole record, and at
	// Go's default the garbage it leaves stays near the live data (a
	// restart after 270 000 orders peaked at 320 MB with GOGC=400).
	tuneGC(getenv, log)
	mode := "embedded mode"
	if !cfg.Embedded() {
		mode = "clustered backends"
	}
	fmt.Fprintf(stdout, "spike: serving on http://%s (%s; data in %s)\n", a.addr, mode, cfg.Data)
	fmt.Fprintf(stdout, "spike: get a token with: spike token --user 42   (an admin token: spike token --user 1 --admin)\n")
	if hint := sameFlagsHint(cfg, a.addr); hint != "" {
		fmt.Fprintln(stdout, hint)
	}

	select {
	case <-ctx.Done():
	case err := <-a.httpErr:
		log.Error("http server stopped", "err", err)
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.Limits.ShutdownTimeout)
	defer cancel()
	if err := a.shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped cleanly")
	return nil
}

// app is a running embedded Spike.
type app struct {
	addr     string
	data     string
	secret   []byte
	log      *slog.Logger
	http     *http.Server
	api      *httpapi.Server // what http serves, for the OpenAPI route test
	httpErr  chan error
	store    stores
	redis    *redisStock       // nil: in-process counters
	lease    *redisstock.Lease // clustered: this instance's lease; nil otherwise
	restored []order.Placed    // embedded: events found on the stream at start
	products *catalogcache.Store
	nats     *natsbus.Embedded
	nc       *nats.Conn
	bus      *natsbus.Bus
	orders   *order.Service
	notifier *notify.Notifier // nil: notify.provider none
	// notifyDrain bounds how long stopping waits for queued notifications.
	notifyDrain time.Duration
	pprof       *http.Server // nil: no --pprof, or pprof is on the metrics listener
	metrics     *http.Server // nil: no metrics_addr (metrics are on the API's listener)
	metricsAddr string       // the metrics listener's address
	board       *switches.Board
	unlockData  func() // releases the data folder's lock; nil: not taken

	// Traces (tracing.go): the provider, nil when tracing is off, and
	// the exporter's flush-and-stop, nil when a test brought the provider.
	tracer      trace.TracerProvider
	stopTracing func()

	// Every goroutine the app starts is one of these groups', and close
	// waits for each group before closing what its members use.
	serving    sync.WaitGroup     // the HTTP (and pprof) servers' Serve loops
	reqMu      sync.RWMutex       // guards reqsDone against a request starting
	reqsDone   bool               // no more API requests are let in
	handlers   sync.WaitGroup     // API requests in flight
	stopReqs   context.CancelFunc // cancels the requests' contexts
	stopWork   context.CancelFunc
	work       sync.WaitGroup     // Run loops: order workers, resolvers, caches, switches
	stopNotify context.CancelFunc // the notifier's Run (normally stopped by its Close)
	notifyWork sync.WaitGroup     // the notifier's Run, stopped after the order workers
}

// start opens the stores and the stream, rebuilds the stock counters,
// starts the order workers and begins serving HTTP.
func start(ctx context.Context, cfg Config, log *slog.Logger) (a *app, err error) {
	if err := os.MkdirAll(cfg.Data, 0o700); err != nil {
		return nil, err
	}
	secrets, err := cfg.secrets()
	if err != nil {
		return nil, fmt.Errorf("jwt secret: %w", err)
	}
	verifier, err := cfg.verifier(secrets, log)
	if err != nil {
		return nil, err
	}
	a = &app{data: cfg.Data, secret: secrets[0], log: log, httpErr: make(chan error, 1)}
	// The named result a is nil by the time a failed start's defer runs
	// (return nil, err): close what was built through its own reference.
	built := a
	defer func() {
		if err != nil {
			built.close()
		}
	}()
	warnLoosePermissions(cfg.Data, log)
	if err = a.startTracing(cfg); err != nil {
		return nil, err
	}
	// A data folder holding a database or a JetStream store is one process's.
	if cfg.MySQL.Primary == "" || len(cfg.NATS.URLs) == 0 {
		if a.unlockData, err = lockData(cfg.Data); err != nil {
			return nil, err
		}
	}

	if a.store, err = openStores(ctx, cfg, cfg.MySQL.Migrate); err != nil {
		return nil, err
	}
	if err := checkStore(ctx, a.store, cfg, log); err != nil {
		return nil, err
	}
	if err := a.connectNATS(cfg); err != nil {
		return nil, err
	}
	publishBatch := cfg.NATS.PublishBatch
	if publishBatch == 0 {
		publishBatch = 128
	}
	linger := cfg.NATS.PublishLinger
	if linger == 0 && len(cfg.NATS.URLs) > 0 {
		linger = time.Millisecond // docs/benchmarks.md: 3 instances, 3.6 -> 8 placements per message
	}
	keys, err := cfg.eventKeys()
	if err != nil {
		return nil, err
	}
	rejected := newRejectedEvents()
	if a.bus, err = natsbus.New(ctx, a.nc, natsbus.Config{Replicas: cfg.NATS.Replicas, PublishBatch: publishBatch, PublishLinger: linger, Clustered: a.nats == nil,
		Keys: keys, Rejected: rejected.count}, log.With("component", "natsbus")); err != nil {
		return nil, err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), rejected.vec)

	board := switches.New(switches.Defs)
	a.board = board
	sw, err := natsbus.NewSwitches(ctx, a.bus, board, log.With("component", "switches"))
	if err != nil {
		return nil, err
	}

	ids := spike.NewIDGenerator()
	var counters inventory.Stock
	if len(cfg.Redis.Addrs) > 0 {
		rs, err := openRedisStock(cfg, ids, a.store, a.bus, enqueueTimeout, log.With("component", "redisstock"))
		if err != nil {
			return nil, err
		}
		a.redis = rs
		counters = rs.counters
		// Held before the first placement: a retry of a request that died
		// with an instance is settled once that instance's lease expired.
		a.lease = redisstock.NewLease(rs.client, ids, "", cfg.Limits.InstanceLease, log.With("component", "lease"))
		if err := a.lease.Acquire(ctx); err != nil {
			return nil, err
		}
		lease := a.lease
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "spike_instance_lease_lost_total",
			Help: "Times this instance found its Redis lease gone and went on under a new node (its unconfirmed reservations are settled by replays)."},
			func() float64 { return float64(lease.Lost()) }))
	} else {
		if !cfg.Embedded() {
			log.Warn("stock counters are in process: run only ONE instance without redis.addrs")
		}
		local := inventory.New(ids)
		began := time.Now()
		queued, err := ledger.Rebuild(ctx, a.store, a.store, a.bus, local)
		if err != nil {
			return nil, err
		}
		a.restored = queued
		log.Info("stock counters rebuilt", "queued_events", len(queued), "took", time.Since(began).Round(time.Millisecond))
		counters = local
	}
	if a.nats == nil {
		// Batched events have no subject of their own: this instance
		// answers other instances' lookups of the orders its node makes
		// (natsbus/lookup.go), and of each new node after a lost lease.
		node := ids.Node()
		if a.lease != nil {
			node = a.lease.Node()
			a.lease.OnNewNode = a.bus.AnswerLookups
		}
		if err := a.bus.AnswerLookups(node); err != nil {
			return nil, err
		}
	}
	// The order workers persist only events matching a reservation.
	if err := a.bus.SetHolds(counters); err != nil {
		return nil, err
	}
	// Product reads: L1 in process (+ L2 on Redis when configured) in front
	// of the database; writes on any instance evict everywhere over NATS.
	inv := a.bus.Invalidations("") // signed with the event keys
	guards := depguard.NewMetrics(reg, log)
	cacheOpts := catalogcache.Options{
		Metrics:     guards,
		Invalidator: inv,
		CacheOnly:   func() bool { return board.On(switches.ReadsCacheOnly) },
		Logger:      log.With("component", "catalogcache"),
	}
	if a.redis != nil {
		cacheOpts.L2 = rediscache.NewProducts(a.redis.client, "")
	}
	a.products = catalogcache.New(a.store, cacheOpts)
	registerCacheMetrics(reg, a.products)
	catalogSvc := catalog.NewService(a.products)
	saleInv := a.bus.Invalidations(natsbus.SaleInvalidateSubject)
	saleRecords, saleCounters := newSaleReads(evictingSales{Store: a.store, products: a.products, log: log, sales: saleInv}, counters, a.redis != nil, cacheOpts.CacheOnly, reg, guards)
	salesSvc := sale.NewService(saleRecords, saleCounters)
	var stream order.Stream = a.bus
	if cfg.wrapStream != nil {
		stream = cfg.wrapStream(stream) // tests: faults in front of the stream, inside the guards
	}
	// Every outbound dependency of the order path has its own timeout,
	// breaker and bulkhead (internal/depguard, built in guards.go): the
	// Redis stock counters, the stream, and the order store's writes and
	// reads. In-process counters are no dependency and are called directly.
	// Operators can force each breaker open or closed at runtime with the
	// breaker.<dependency> switches (depguard.FollowSwitches, once the
	// notifier's breaker exists too).
	cpu := new(resilience.CPUSaturation) // the process's: one sampler for the stream's guard and the pacer
	og := newOrderGuards(counters, a.redis != nil, stream, a.store, cfg.Limits, cpu, guards, log)
	breakers := og.breakers
	breakers[depguard.CatalogDB] = a.products.Breaker()
	if r, ok := saleRecords.(*salecache.Records); ok {
		breakers[depguard.SaleDB] = r.Breaker()
	}
	if c, ok := saleCounters.(*salecache.Counters); ok {
		breakers[depguard.SaleCounters] = c.Breaker()
	}
	a.orders = order.NewService(og.reserver, og.stream, og.orders, log.With("component", "order"))
	a.orders.EnqueueTimeout = enqueueTimeout
	a.orders.AbandonAfter = cfg.Limits.AbandonAfter
	if a.lease != nil {
		a.orders.Leases = a.lease
	}
	a.orders.Lookup = a.bus
	a.orders.Restore(a.restored)
	a.orders.PaymentWindow = paymentWindow(a.store)
	a.orders.Pacer = newPacer(cfg.Limits.PersistYield, cpu, reg)

	// The listener comes first: the sandbox gateway's webhooks and checkout
	// pages need the address.
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	a.addr = ln.Addr().String()
	defer func() {
		if err != nil && a.http == nil {
			ln.Close()
		}
	}()
	var metricsLn net.Listener
	if cfg.MetricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return nil, fmt.Errorf("metrics_addr: %w", err)
		}
		defer func() {
			if err != nil && a.metrics == nil {
				metricsLn.Close()
			}
		}()
	}

	// The background work outlives ctx (serve's signal context): it stops
	// when close says so, after the requests have.
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	a.stopWork = stopWork
	if a.redis != nil {
		a.goWork(func() error { return a.redis.counters.Run(workCtx) })
		a.goWork(func() error { return a.redis.recovery.Run(workCtx) })
		a.goWork(func() error { return a.lease.Run(workCtx) })
	}
	if og.stock != nil {
		a.goWork(func() error { return og.stock.Run(workCtx) }) // retries of failed releases
	}
	// Notifications go out after an order is persisted, from a pool of
	// their own that drops when full: they never slow the order workers.
	persist := natsbus.PersistFunc(a.orders.Persist)
	if a.notifier = newNotifier(cfg.Notify, board, reg, guards, log.With("component", "notify")); a.notifier != nil {
		a.notifyDrain = cfg.Notify.Timeout
		// Its own lifetime: it drains after the order workers stop (close).
		notifyCtx, stopNotify := context.WithCancel(context.WithoutCancel(ctx))
		a.stopNotify = stopNotify
		a.notifyWork.Go(func() {
			if err := a.notifier.Run(notifyCtx); err != nil {
				log.Error("notifier stopped", "err", err)
			}
		})
		persist = notifyPersisted(persist, a.notifier)
		breakers[depguard.Notifications] = a.notifier.Breaker()
	}
	after, err := a.newAfterThe202(ctx, cfg, publicURL(cfg, a.addr), counters,
		evictingSales{Store: a.store, products: a.products, log: log}, guards, ids, log)
	if err != nil {
		return nil, err
	}
	breakers[depguard.Payments] = after.breaker.Breaker()
	depguard.FollowSwitches(board, breakers, log)
	a.runAfterThe202(workCtx, cfg, after)
	if r, ok := saleRecords.(*salecache.Records); ok {
		a.goWork(func() error { return saleInv.Subscribe(workCtx, r.Invalidate) })
	}
	if a.nats == nil {
		// Clustered: every instance hears which orders any worker persisted.
		persist = a.bus.AnnouncePersisted("", persist)
		a.goWork(func() error {
			return a.bus.FollowPersisted(workCtx, "", func(userID int64, orderID string) {
				a.orders.Persisted(userID, orderID)
				a.bus.Forget(orderID)
			})
		})
	}
	a.goWork(func() error { return a.bus.RunWorker(workCtx, pacedPersist(persist, a.orders.Pacer)) })
	a.goWork(func() error { return a.orders.Run(workCtx) })
	a.goWork(func() error { return a.products.Run(workCtx) })
	a.goWork(func() error { return inv.Subscribe(workCtx, a.products.Invalidate) })
	if a.nats == nil {
		// Clustered: announcements of orders other instances' workers
		// persisted may be lost; embedded, the one worker tells Persist.
		a.goWork(func() error { return a.orders.RunPendingSweeper(workCtx, time.Second) })
	}
	a.goWork(func() error { return sw.Run(workCtx) })
	a.goWork(func() error { return (&rejectionWatch{reg: reg, log: log}).run(workCtx, rejectionWarnEvery) })
	if verifier.OIDC != nil {
		a.goWork(func() error { return verifier.OIDC.Run(workCtx) }) // the identity provider's keys
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "spike_orders_pending", Help: "Orders acknowledged by this instance and not yet persisted.",
	}, func() float64 { return float64(a.orders.PendingCount()) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "spike_stream_published_messages_total", Help: "Stream messages of batched placements the stream acknowledged.",
	}, func() float64 { m, _ := a.bus.Published(); return float64(m) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "spike_stream_published_events_total", Help: "Placements those messages carried (÷ messages: the mean batch).",
	}, func() float64 { _, e := a.bus.Published(); return float64(e) }))
	// Scrape-time metrics for the alert rules (opsmetrics.go).
	registerOpsMetrics(reg, a)
	audits := newAuditMetrics(reg)

	trusted, err := httpapi.ParseTrustedProxies(cfg.HTTP.TrustedProxies)
	if err != nil {
		return nil, err // Validate checked it
	}
	api := httpapi.New(httpapi.Config{
		Catalog:   catalogSvc,
		Sales:     salesSvc,
		Orders:    a.orders,
		Lifecycle: after.lifecycle,
		Payments:  after.payments,
		Checkout:  after.checkout,
		Auditor: &ledger.Auditor{Sales: a.store, Orders: a.store, Events: a.bus, Counters: counters, Pending: a.orders,
			Lifecycle: &ledger.LifecycleAudit{Products: a.store, Payments: a.store}, OnAudit: audits.observe},
		Auth:           httpapi.NewAuthenticatorFor(verifier),
		Probes:         a.probes(cfg),
		TrustedProxies: trusted,
		Metrics:        metricsMode(cfg),
		Registry:       reg,
		Logger:         log.With("component", "httpapi"),
		Guards: &httpapi.Guards{
			Admission: resilience.NewAdaptive(resilience.AdaptiveConfig{
				// Generous bounds: the limit adapts between them by latency, and
				// the floor keeps a burst of honest buyers from being shed.
				InitialLimit: cfg.Limits.AdmissionInitial, MinLimit: cfg.Limits.AdmissionMin, MaxLimit: cfg.Limits.AdmissionMax,
			}),
			Switches:      board,
			SharedPerUser: sharedPerUser(a.redis, board, cfg.Limits.Instances),
		},
		SwitchStore: sw,
		Dashboard: dashboard.NewSampler(dashboard.Source{Gatherer: reg, Sales: a.store, Counters: saleCounters,
			Backlog: a.bus.Backlog, Switches: board.Snapshot}),
		Tracer: a.apiTracer(),
	})

	// Requests get a context of the app's, cancelled if shutdown gives up
	// waiting for them (see shutdown), and close waits for every handler.
	a.api = api
	reqCtx, stopReqs := context.WithCancel(context.WithoutCancel(ctx))
	a.stopReqs = stopReqs
	a.http = &http.Server{
		Handler:           a.countHandlers(api),
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	a.serving.Go(func() {
		if err := a.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			a.httpErr <- err
		}
	})
	if metricsLn != nil {
		a.serveMetrics(metricsLn, api.MetricsHandler(), cfg.Pprof == cfg.MetricsAddr)
	}
	if cfg.Pprof != "" && cfg.Pprof != cfg.MetricsAddr {
		a.startPprof(cfg.Pprof)
	}
	return a, nil
}

// startPprof serves net/http/pprof on addr (http.DefaultServeMux holds its
// handlers; the API never uses it), as one of the app's servers: shutdown
// stops it. A listen failure is logged and the app serves without it.
// tuneGC collects garbage less often than Go's default (GOGC=400 unless
// the GOGC environment variable says otherwise): a burst allocates fast
// while the live heap stays small, and at GOGC=100 the collector took
// about a tenth of the CPU of a flash sale. The heap may grow to five times
// the live data between collections (a few hundred MB for a million
// buyers); GOMEMLIMIT, if set, still caps it. serve calls it once the
// startup rebuild is done.
func tuneGC(getenv func(string) string, log *slog.Logger) {
	if getenv("GOGC") != "" {
		return
	}
	debug.SetGCPercent(400)
	log.Debug("garbage collector", "GOGC", 400)
}

func (a *app) startPprof(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		a.log.Warn("pprof server stopped", "err", err)
		return
	}
	a.pprof = &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 5 * time.Second}
	srv := a.pprof
	a.serving.Go(func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			a.log.Warn("pprof server stopped", "err", err)
		}
	})
}

// countHandlers tracks the API's requests in flight in a.handlers.
func (a *app) countHandlers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.reqMu.RLock()
		if a.reqsDone {
			// Read off a connection just as the server closed it.
			a.reqMu.RUnlock()
			w.Header().Set("Connection", "close")
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		a.handlers.Add(1)
		a.reqMu.RUnlock()
		defer a.handlers.Done()
		h.ServeHTTP(w, r)
	})
}

// enqueueTimeout bounds one wait for the stream's acknowledgement.
const enqueueTimeout = 5 * time.Second

// stores is what Spike needs of its database: SQLite (embedded) or MySQL.
type stores interface {
	catalog.Store
	catalog.StockLedger
	Products(ctx context.Context) ([]catalog.Product, error)
	sale.Store
	sale.Ender
	order.Store
	order.LifecycleStore
	payment.Store
	Ping(ctx context.Context) error
	Close() error
}

// openStores opens MySQL when configured, else SQLite in the data folder
// (which migrates itself). migrate applies MySQL migrations first.
func openStores(ctx context.Context, cfg Config, migrate bool) (stores, error) {
	if cfg.MySQL.Primary == "" {
		path := filepath.Join(cfg.Data, sqliteFile)
		if err := createPrivate(path); err != nil {
			return nil, fmt.Errorf("open sqlite: %w", err)
		}
		st, err := sqlitestore.Open(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("open sqlite: %w", err)
		}
		return st, nil
	}
	my, err := cfg.MySQL.withTransport() // credentials and TLS
	if err != nil {
		return nil, err
	}
	mc := mysqlstore.Config{Primary: my.Primary, Replicas: my.Replicas}
	for _, sh := range my.OrderShards {
		mc.OrderShards = append(mc.OrderShards, mysqlstore.ShardConfig{Primary: sh.Primary, Replicas: sh.Replicas})
	}
	st, err := mysqlstore.Open(mc)
	if err != nil {
		return nil, fmt.Errorf("open mysql: %w", err)
	}
	if migrate {
		if err := st.Migrate(ctx); err != nil {
			st.Close()
			return nil, fmt.Errorf("migrate mysql: %w", err)
		}
	}
	return st, nil
}

// connectNATS starts the embedded server, or connects to the configured
// cluster with reconnects that back off (and no buffering while
// disconnected: a publish must fail fast, not leave in doubt).
func (a *app) connectNATS(cfg Config) (err error) {
	if len(cfg.NATS.URLs) == 0 {
		ec, err := cfg.NATS.embeddedConfig(filepath.Join(cfg.Data, "nats"))
		if err != nil {
			return err
		}
		if a.nats, err = natsbus.StartEmbeddedServer(ec); err != nil {
			return err
		}
		if a.nc, err = a.nats.Connect("spike"); err != nil {
			return fmt.Errorf("connect to embedded nats: %w", err)
		}
		a.nc.SetErrorHandler(a.natsAsyncError)
		return nil
	}
	secured, err := cfg.NATS.clientOptions()
	if err != nil {
		return err
	}
	a.nc, err = nats.Connect(strings.Join(cfg.NATS.URLs, ","), append(secured,
		nats.Name("spike"),
		nats.Timeout(5*time.Second),
		nats.MaxReconnects(-1),
		nats.ReconnectBufSize(-1),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			d := min(50*time.Millisecond<<min(attempts, 6), 2*time.Second)
			return d/2 + time.Duration(mrand.Int64N(int64(d/2)+1)) // jitter
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { a.log.Warn("nats disconnected", "err", err) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { a.log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(a.natsAsyncError),
	)...)
	if err != nil {
		return fmt.Errorf("connect to nats %v: %w", cfg.NATS.URLs, err)
	}
	return nil
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
// workers drain the stream, and closes everything. When it returns, every
// goroutine the app started has stopped.
func (a *app) shutdown(ctx context.Context) error {
	err := a.http.Shutdown(ctx)
	for _, srv := range []*http.Server{a.pprof, a.metrics} {
		if srv != nil && srv.Shutdown(ctx) != nil {
			srv.Close()
		}
	}
	a.stopServing()
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

// stopServing closes the servers (at once, if shutdown's graceful stop
// gave up), cancels the requests still running and waits for them and
// for the Serve loops.
func (a *app) stopServing() {
	if a.http != nil {
		a.http.Close()
	}
	if a.pprof != nil {
		a.pprof.Close()
	}
	if a.metrics != nil {
		a.metrics.Close()
	}
	if a.stopReqs != nil {
		a.stopReqs()
	}
	a.reqMu.Lock()
	a.reqsDone = true
	a.reqMu.Unlock()
	a.handlers.Wait()
	a.serving.Wait()
}

// close stops the servers, then every Run loop, waiting for each, and only
// then closes the stream and the database: nothing of the app's runs after
// it.
func (a *app) close() {
	a.stopServing()
	if a.stopWork != nil {
		a.stopWork()
		a.work.Wait()
	}
	if a.notifier != nil {
		// The order workers have stopped: nothing more is queued. Sends
		// still waiting after notifyDrain are cancelled and dropped
		// (counted); Close returns once the notifier's Run has.
		ctx, cancel := context.WithTimeout(context.Background(), a.notifyDrain)
		a.notifier.Close(ctx)
		cancel()
	}
	if a.stopNotify != nil {
		a.stopNotify()
		a.notifyWork.Wait()
	}
	if a.products != nil {
		a.products.Close()
	}
	if a.bus != nil {
		a.bus.Close()
	}
	if a.redis != nil {
		a.redis.Close()
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
	if a.unlockData != nil {
		a.unlockData()
	}
	a.closeTracing()
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
		// The bench is one client address with a few tokens: the per-caller
		// limits would measure themselves, not the server.
		for _, name := range []string{switches.IPRate, switches.BuyerRate, switches.AdminRate} {
			a.board.Apply(name, "0")
		}
		stop := func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			return a.shutdown(ctx)
		}
		return "http://" + a.addr, a.secret, stop, nil
	}
}

// evictingSales drops a product's cached stock once a sale has taken some.
type evictingSales struct {
	sale.Store
	products *catalogcache.Store
	log      *slog.Logger
	// sales tells every instance's sale record cache that a sale changed
	// (ended early); nil: nobody is told.
	sales *natsbus.Invalidations
}

// EndSale implements sale.Ender.
func (s evictingSales) EndSale(ctx context.Context, id string, at time.Time) (sale.Sale, error) {
	sl, err := s.Store.(sale.Ender).EndSale(ctx, id, at)
	if err == nil && s.sales != nil {
		if err := s.sales.Publish(ctx, id); err != nil {
			s.log.WarnContext(ctx, "tell the instances a sale ended", "sale_id", id, "err", err) // their records' TTL is the backstop
		}
	}
	return sl, err
}

// SettleSale implements sale.Ender: settling gives units back to the
// product, whose cached copies are evicted.
func (s evictingSales) SettleSale(ctx context.Context, id string, unsold int64, at time.Time) (sale.Sale, bool, error) {
	sl, applied, err := s.Store.(sale.Ender).SettleSale(ctx, id, unsold, at)
	if err == nil && applied {
		if err := s.products.Evict(ctx, sl.SKU); err != nil {
			s.log.WarnContext(ctx, "evict product after settling a sale", "sku", sl.SKU, "err", err)
		}
	}
	return sl, applied, err
}

func (s evictingSales) CreateSale(ctx context.Context, sl sale.Sale) error {
	if err := s.Store.CreateSale(ctx, sl); err != nil {
		return err
	}
	if err := s.products.Evict(ctx, sl.SKU); err != nil {
		s.log.WarnContext(ctx, "evict product after sale", "sku", sl.SKU, "err", err) // the sale stands; the TTL is the backstop
	}
	return nil
}
