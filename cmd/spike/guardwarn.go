package main

import (
	"context"
	"log/slog"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// rejectionWarnEvery is how often, at most, the log says that guards turn
// buyers away.
const rejectionWarnEvery = 10 * time.Second

// rejectionWatch turns the guards' rejection counters
// (spike_guard_rejections_total, counted by internal/httpapi on the hot
// path) into one warning per interval while they grow: read here, in the
// background, so that a rejection costs no more than its counter.
type rejectionWatch struct {
	reg  prometheus.Gatherer
	log  *slog.Logger
	last map[string]float64
}

// run warns every interval in which a guard rejected requests.
func (w *rejectionWatch) run(ctx context.Context, every time.Duration) error {
	w.check(every) // the baseline
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			w.check(every)
		}
	}
}

// check logs the rejections by guard since the last check, if any.
func (w *rejectionWatch) check(window time.Duration) {
	now := w.counts()
	first := w.last == nil
	var attrs []any
	var total float64
	for _, g := range sortedKeys(now) {
		if d := now[g] - w.last[g]; d > 0 {
			attrs = append(attrs, g, int64(d))
			total += d
		}
	}
	w.last = now
	if first || total == 0 {
		return
	}
	w.log.Warn("guards are turning requests away", append([]any{"window", window.String(), "rejected", int64(total)}, attrs...)...)
}

// counts reads spike_guard_rejections_total by guard.
func (w *rejectionWatch) counts() map[string]float64 {
	out := map[string]float64{}
	mfs, err := w.reg.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != "spike_guard_rejections_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "guard" {
					out[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

func sortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
