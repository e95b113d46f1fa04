package httpapi

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spikehq/spike"
)

type metrics struct {
	requests   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	placements *prometheus.CounterVec
	outcome    map[string]prometheus.Counter
	accepted   prometheus.Counter // outcome["accepted"]
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spike_http_requests_total", Help: "HTTP requests by route and status.",
		}, []string{"route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "spike_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		placements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spike_placements_total", Help: "Order placements by outcome (accepted or the API error code).",
		}, []string{"outcome"}),
		outcome: map[string]prometheus.Counter{},
	}
	reg.MustRegister(m.requests, m.latency, m.placements)
	for _, c := range []string{"accepted", "invalid", "not_found", "conflict", "sold_out", "limit_exceeded", "sale_not_active", "unavailable", "internal"} {
		m.outcome[c] = m.placements.WithLabelValues(c)
	}
	m.accepted = m.outcome["accepted"]
	return m
}

// routeMetrics caches the label lookups of one route.
type routeMetrics struct {
	m       *metrics
	route   string
	latency prometheus.Observer
	byCode  [len(commonStatuses)]prometheus.Counter // by statusSlot
}

var commonStatuses = [...]int{200, 201, 202, 400, 401, 403, 404, 409, 413, 429, 500, 503}

// statusSlots maps a status (100-599) to 1 + its index in commonStatuses;
// 0 is a status that is not common.
var statusSlots = func() (t [500]uint8) {
	for i, st := range commonStatuses {
		t[st-100] = uint8(i + 1)
	}
	return t
}()

// statusSlot returns status's index in commonStatuses, or -1.
func statusSlot(status int) int {
	if status < 100 || status >= 600 {
		return -1
	}
	return int(statusSlots[status-100]) - 1
}

func (m *metrics) route(route string) *routeMetrics {
	rm := &routeMetrics{m: m, route: route, latency: m.latency.WithLabelValues(route)}
	for i, st := range commonStatuses {
		rm.byCode[i] = m.requests.WithLabelValues(route, strconv.Itoa(st))
	}
	return rm
}

func (rm *routeMetrics) observe(status int, d time.Duration) {
	rm.latency.Observe(d.Seconds())
	if i := statusSlot(status); i >= 0 {
		rm.byCode[i].Inc()
		return
	}
	rm.m.requests.WithLabelValues(rm.route, strconv.Itoa(status)).Inc()
}

func (m *metrics) placement(err error) {
	code := "accepted"
	if err != nil {
		_, code, _ = statusOf(err)
		if _, ok := err.(*spike.Error); !ok {
			if _, ok := asDomainError(err); !ok {
				code = "internal"
			}
		}
	}
	if c, ok := m.outcome[code]; ok {
		c.Inc()
		return
	}
	m.placements.WithLabelValues(code).Inc()
}
