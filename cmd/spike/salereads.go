package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spikehq/spike/internal/depguard"
	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/internal/readcache/salecache"
)

// newSaleReads puts the sale page's reads (GET /v1/sales/{id}, polled by
// every buyer during a flash sale) behind caches: sale records in front of
// the database always, and remaining units in front of the Redis counters
// when clustered. In-process counters are no dependency and exact, so they
// are read directly. While cacheOnly (the reads.cache_only switch) reports
// true, sale records are served from the cache only. The caches' loads are
// guarded as depguard.SaleDB and depguard.SaleCounters.
func newSaleReads(records sale.Store, counters sale.Counters, clustered bool, cacheOnly func() bool, reg prometheus.Registerer, m *depguard.Metrics) (sale.Store, sale.Counters) {
	db := depguard.For(depguard.SaleDB)
	cachedRecords := salecache.NewRecords(records, salecache.RecordsOptions{
		CacheOnly: cacheOnly,
		Breaker:   db.Breaker, MaxLoads: db.Bulkhead, LoadWait: db.BulkheadWait, LoadTimeout: db.Timeout,
		Metrics: m,
	})
	registerSaleCacheMetrics(reg, "records", cachedRecords.Stats)
	if !clustered {
		return cachedRecords, counters
	}
	redis := depguard.For(depguard.SaleCounters)
	cachedCounters := salecache.NewCounters(counters, salecache.CountersOptions{
		Breaker: redis.Breaker, MaxLoads: redis.Bulkhead, LoadWait: redis.BulkheadWait, LoadTimeout: redis.Timeout,
		Metrics: m,
	})
	registerSaleCacheMetrics(reg, "remaining", cachedCounters.Stats)
	return cachedRecords, cachedCounters
}

// registerSaleCacheMetrics exports one sale cache's counters under
// cache="records" or cache="remaining" (its guard is exported by
// depguard.Metrics).
func registerSaleCacheMetrics(reg prometheus.Registerer, cache string, stats func() salecache.Stats) {
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
}
