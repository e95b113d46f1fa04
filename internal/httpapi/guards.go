package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/switches"
	"github.com/spikehq/spike/resilience"
)

// Guards protect the placement path, cheapest first (DESIGN.md, write path
// step 1): the orders.accept switch, adaptive admission, then per-buyer and
// per-sale rate limits. A nil field disables that guard.
type Guards struct {
	// Admission sheds load by measured latency and concurrency; admin and
	// health routes use the Critical priority, so they are shed last.
	Admission *resilience.Adaptive
	// Switches supplies orders.accept and the runtime rate limits.
	Switches *switches.Board

	// SharedPerUser, if set, is the per-buyer limit shared by every
	// instance (on Redis in clustered mode), checked after the local bucket
	// has passed the request: a buyer spreading requests over instances
	// through a load balancer still gets one budget.
	SharedPerUser KeyedLimiter

	perUser atomic.Pointer[resilience.KeyedBuckets] // nil: unlimited
	perSale atomic.Pointer[resilience.Keyed]
	// refusing mirrors orders.accept being off, read on every placement
	// without the board's lookup by name.
	refusing atomic.Bool
}

// KeyedLimiter is a rate limit per key shared between instances.
type KeyedLimiter interface {
	AllowN(ctx context.Context, key string, n int) (ok bool, retryAfter time.Duration, err error)
}

// Errors of the guards.
var (
	errOverloaded  = &spike.Error{Kind: spike.ErrOverloaded, Message: "the server is at capacity; retry shortly"}
	errUserRate    = &spike.Error{Kind: spike.ErrRateLimited, Message: "too many placements from this buyer; slow down"}
	errSaleRate    = &spike.Error{Kind: spike.ErrRateLimited, Message: "too many placements for this sale; retry shortly"}
	errNotAccepted = &spike.Error{Kind: spike.ErrUnavailable, Message: "order placement is switched off for now"}
)

// init builds the rate limiters from the switches and rebuilds them when an
// operator changes a limit.
func (g *Guards) init() {
	if g.Switches == nil {
		return
	}
	g.rebuildLimits()
	g.Switches.OnChange(func(name, _ string) {
		switch name {
		case switches.UserRate, switches.UserBurst, switches.SaleRate:
			g.rebuildLimits()
		case switches.OrdersAccept:
			g.refusing.Store(!g.Switches.On(switches.OrdersAccept))
		}
	})
	// After OnChange: a change in between is not missed.
	g.refusing.Store(!g.Switches.On(switches.OrdersAccept))
}

func (g *Guards) rebuildLimits() {
	// Per buyer: keyed by the user id itself, 16 bytes a buyer and no
	// allocation for a first-time one (a flash sale is mostly those).
	if rate := g.Switches.Number(switches.UserRate); rate > 0 {
		g.perUser.Store(resilience.NewKeyedBuckets(resilience.KeyedBucketsConfig{Rate: rate, Burst: int(g.Switches.Number(switches.UserBurst)), MaxKeys: 1 << 20}))
	} else {
		g.perUser.Store(nil)
	}
	rate := g.Switches.Number(switches.SaleRate)
	g.perSale.Store(keyedBuckets(rate, max(1, int(rate/10)), 4096))
}

// keyedBuckets returns a token bucket per key, or nil for unlimited.
func keyedBuckets(rate float64, burst, maxKeys int) *resilience.Keyed {
	if rate <= 0 {
		return nil
	}
	return resilience.NewKeyed(resilience.KeyedConfig{MaxKeys: maxKeys}, func(string) resilience.Limiter {
		return resilience.NewTokenBucket(resilience.TokenBucketConfig{Rate: rate, Burst: burst})
	})
}

// accepting reports the orders.accept switch.
func (g *Guards) accepting() bool {
	return !g.refusing.Load()
}

func (g *Guards) allowUser(ctx context.Context, user int64) bool {
	k := g.perUser.Load()
	if k == nil {
		return true // unlimited: the shared limit follows the same switch
	}
	if !k.Allow(uint64(user)) {
		return false
	}
	if g.SharedPerUser == nil {
		return true
	}
	// The shared limiter falls back to a local decision when Redis fails;
	// an error here means the request's own deadline passed.
	ok, _, err := g.SharedPerUser.AllowN(ctx, strconv.FormatInt(user, 10), 1)
	return ok || err != nil
}

func (g *Guards) allowSale(sale string) bool {
	k := g.perSale.Load()
	return k == nil || k.Allow(sale)
}

// admit takes an admission ticket for a request of priority p; ok is false
// when the request must be shed.
func (g *Guards) admit(p resilience.Priority) (resilience.Ticket, bool) {
	if g == nil || g.Admission == nil {
		return resilience.Ticket{}, true
	}
	return g.Admission.Acquire(p)
}

// finish reports how an admitted request went: dependency failures
// (5xx) shrink the limit like a timeout would; everything else is a
// latency sample. It returns the latency the ticket measured (0 for a
// ticket of no limiter).
func (g *Guards) finish(t resilience.Ticket, status int) time.Duration {
	if !t.Measures() {
		return 0
	}
	if status >= 500 {
		return t.DroppedLatency()
	}
	return t.SuccessLatency()
}

// guardMetrics counts rejections by guard.
type guardMetrics struct {
	rejected *prometheus.CounterVec
	byGuard  map[string]prometheus.Counter
}

func newGuardMetrics(reg prometheus.Registerer, g *Guards) *guardMetrics {
	m := &guardMetrics{
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spike_guard_rejections_total", Help: "Requests rejected by a guard before doing work, by guard.",
		}, []string{"guard"}),
		byGuard: map[string]prometheus.Counter{},
	}
	reg.MustRegister(m.rejected)
	for _, name := range []string{"admission", "orders_accept_switch", "user_rate", "sale_rate"} {
		m.byGuard[name] = m.rejected.WithLabelValues(name)
	}
	if g != nil && g.Admission != nil {
		a := g.Admission
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spike_admission_limit", Help: "Current adaptive concurrency limit."},
				func() float64 { return float64(a.Limit()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spike_admission_in_flight", Help: "Requests in flight under admission control."},
				func() float64 { return float64(a.InFlight()) }),
		)
	}
	return m
}

func (m *guardMetrics) reject(guard string) { m.byGuard[guard].Inc() }

// routePriority is the admission priority of a route: operators and
// probes before buyers.
func routePriority(route string) resilience.Priority {
	switch route {
	case "healthz", "readyz", "metrics", "audit", "create_product", "update_product", "create_sale", "get_switches", "put_switch", "dashboard_page", "dashboard_feed":
		return resilience.Critical
	}
	return resilience.Normal
}

var _ http.Handler = (*Server)(nil)
