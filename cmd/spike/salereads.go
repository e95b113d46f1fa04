package main

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/internal/readcache/salecache"
	"github.com/spikehq/spike/resilience"
)

// newSaleReads puts the sale page's reads (GET /v1/sales/{id}, polled by
// every buyer during a flash sale) behind caches: sale records in front of
// the database always, and remaining units in front of the Redis counters
// when clustered. In-process counters are no dependency and exact, so they
// are read directly. While cacheOnly (the reads.cache_only switch) reports
// true, sale records are served from the cache only.
func newSaleReads(records sale.Store, counters sale.Counters, clustered bool, cacheOnly func() bool, reg prometheus.Registerer, log *slog.Logger) (sale.Store, sale.Counters) {
	dbMetrics := newBreakerMetrics(reg, log, "sale_db")
	cachedRecords := salecache.NewRecords(records, salecache.RecordsOptions{
		CacheOnly: cacheOnly,
		// Loads are rare (a record is read once per 10 min per instance),
		// so the window counts loads, not seconds.
		Breaker: resilience.BreakerConfig{
			Name: "sale_db", Window: resilience.CountWindow, WindowSize: 20, MinimumCalls: 10,
			FailureRateThreshold: 0.5, SlowCallDuration: time.Second, SlowCallRateThreshold: 0.8,
			OpenTimeout: 2 * time.Second, HalfOpenCalls: 2,
			OnStateChange: dbMetrics.onStateChange,
		},
	})
	dbMetrics.breaker = cachedRecords.Breaker()
	registerSaleCacheMetrics(reg, "records", "sale_db", cachedRecords.Stats)
	if !clustered {
		return cachedRecords, counters
	}
	redisMetrics := newBreakerMetrics(reg, log, "sale_counters")
	cachedCounters := salecache.NewCounters(counters, salecache.CountersOptions{
		// At most one load per sale per 500 ms per instance: a window of
		// the last 10 loads, and slow as for the stock counters.
		Breaker: resilience.BreakerConfig{
			Name: "sale_counters", Window: resilience.CountWindow, WindowSize: 10, MinimumCalls: 5,
			FailureRateThreshold: 0.5, SlowCallDuration: stockSlowCall, SlowCallRateThreshold: 0.8,
			OpenTimeout: 2 * time.Second, HalfOpenCalls: 1,
			OnStateChange: redisMetrics.onStateChange,
		},
	})
	redisMetrics.breaker = cachedCounters.Breaker()
	registerSaleCacheMetrics(reg, "remaining", "sale_counters", cachedCounters.Stats)
	return cachedRecords, cachedCounters
}

// registerSaleCacheMetrics exports one sale cache's counters under
// cache="records" or cache="remaining", and its bulkhead under its
// dependency's name.
func registerSaleCacheMetrics(reg prometheus.Registerer, cache, dependency string, stats func() salecache.Stats) {
	labels := prometheus.Labels{"cache": cache}
	counter := func(name, help string, f func(salecache.Stats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "spike_sale_cache_" + name + "_total", Help: help, ConstLabels: labels},
			func() float64 { return float64(f(stats())) }))
	}
	counter("hits", "Sale page reads answered from a fresh cache entry.", func(s salecache.Stats) uint64 { return s.Hits })
	counter("misses", "Sale page reads that waited for a load.", func(s salecache.Stats) uint64 { return s.Misses })
	counter("loads", "Reads of the database (records) or the stock counters (remaining) made by the cache.", func(s salecache.Stats) uint64 { return s.Loads })
	counter("load_errors", "Loads that failed or were refused by the breaker or the bulkhead.", func(s salecache.Stats) uint64 { return s.LoadErrors })
	counter("stale_served", "Reads answered with an older entry because the load failed.", func(s salecache.Stats) uint64 { return s.StaleServed })
	counter("unavailable", "Sale page reads refused (503).", func(s salecache.Stats) uint64 { return s.Unavailable })
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spike_sale_cache_entries", Help: "Entries of a sale cache.", ConstLabels: labels},
		func() float64 { return float64(stats().Entries) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "spike_bulkhead_in_use", Help: "Calls holding a slot of a dependency's bulkhead.",
		ConstLabels: prometheus.Labels{"dependency": dependency},
	}, func() float64 { return float64(stats().LoadsInFlight) }))
}
