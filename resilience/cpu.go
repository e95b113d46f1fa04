package resilience

import (
	"runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// CPUSaturation tells whether this process waits for the CPU: the Go
// scheduler's run queues are long (more than a tenth of the goroutines
// made runnable in the last 100 ms waited 1 ms or more to run,
// runtime/metrics /sched/latencies:seconds), or, on Linux, the operating
// system keeps the process's threads waiting (their run-queue wait in
// /proc/self/task/*/schedstat exceeded a fifth of their running time):
// another process is taking the cores, which the Go scheduler cannot see.
// Latencies measured meanwhile rise with the CPU's queue, not with the
// dependency called, so an [Adaptive] limit should ignore them
// ([Ticket.Ignore]).
// It is refreshed at most every 100 ms by whichever caller of Saturated
// comes first. The zero value is ready to use and safe for concurrent use.
type CPUSaturation struct {
	busy   atomic.Bool
	goBusy atomic.Bool
	next   atomic.Int64 // unix ns of the next refresh
	mu     sync.Mutex
	sample []metrics.Sample
	prev   []uint64
	os     threadWaits
}

const (
	cpuSampleEvery = 100 * time.Millisecond
	cpuSlowWait    = time.Millisecond
)

// Saturated reports whether the CPU was saturated over the last sample
// period. A runtime without the metric is never saturated.
func (c *CPUSaturation) Saturated() bool {
	if now := time.Now().UnixNano(); now >= c.next.Load() && c.mu.TryLock() {
		c.refresh(now)
		c.mu.Unlock()
	}
	return c.busy.Load()
}

// Queued reports whether, over the last sample period, this process's own
// goroutines queued for the CPU (the Go scheduler's run queues were long):
// the process itself has more work than its cores, as opposed to only
// another process taking them. It is refreshed with Saturated.
func (c *CPUSaturation) Queued() bool {
	c.Saturated()
	return c.goBusy.Load()
}

func (c *CPUSaturation) refresh(now int64) {
	c.next.Store(now + int64(cpuSampleEvery))
	if c.sample == nil {
		c.sample = []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	}
	metrics.Read(c.sample)
	if c.sample[0].Value.Kind() != metrics.KindFloat64Histogram {
		return // not supported by this runtime: never saturated
	}
	h := c.sample[0].Value.Float64Histogram()
	goBusy := c.judge(h.Counts, h.Buckets)
	osBusy := c.os.contended() // always sampled: it judges deltas
	c.goBusy.Store(goBusy)
	c.busy.Store(goBusy || osBusy)
}

// judge compares counts with the previous sample's and reports whether
// more than a tenth of the waits since were cpuSlowWait or longer; the
// bucket boundaries are buckets (len(counts)+1 of them).
func (c *CPUSaturation) judge(counts []uint64, buckets []float64) bool {
	if len(c.prev) != len(counts) {
		c.prev = slices.Clone(counts)
		return false
	}
	var total, slow uint64
	for i, n := range counts {
		d := n - c.prev[i]
		total += d
		if buckets[i] >= cpuSlowWait.Seconds() {
			slow += d
		}
	}
	copy(c.prev, counts)
	return slow*10 > total && total > 0
}
