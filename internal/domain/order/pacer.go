package order

import (
	"context"
	"sync/atomic"
	"time"
)

// Pacer lets the order workers give way to the placement path during a
// burst (DESIGN.md, "shave the peak"): while placements arrive fast and
// the CPU is saturated, persisting a batch waits, and the stream, which
// already holds every acknowledged order durably, absorbs the backlog.
// The wait is bounded: no event waits longer than MaxLag after it was
// placed (nor after the worker received it), so the backlog is at most
// MaxLag of placements and drains as soon as the burst ends or the bound
// is reached. A placement's durability does not change: it was
// acknowledged only once on the stream.
//
// The zero value never waits; set Busy and MaxLag. Safe for concurrent
// use.
type Pacer struct {
	// Busy reports whether the CPU is saturated (resilience.CPUSaturation).
	Busy func() bool
	// MaxLag bounds how long after its placement an event may be held;
	// keep it well below the stream's AckWait, or held events are
	// redelivered (harmless: persisting is idempotent, but wasted work).
	MaxLag time.Duration
	// MinRate is the placement rate (per second, counted by Placed) at
	// which the placement path counts as busy; below it, persisting never
	// waits (a saturated CPU with few placements is someone else's load).
	MinRate float64
	// Poll is how often the wait looks again; default 20 ms.
	Poll time.Duration

	placed   atomic.Int64 // placements counted since start
	lastN    atomic.Int64
	lastAt   atomic.Int64 // unix ns of the last rate sample
	hot      atomic.Bool
	waitedNs atomic.Int64
	held     atomic.Int64 // batches that waited
}

// Placed counts one placement attempt; the placement path calls it.
func (p *Pacer) Placed() {
	if p != nil {
		p.placed.Add(1)
	}
}

// Waited returns the total time batches were held, and how many were.
func (p *Pacer) Waited() (time.Duration, int64) {
	return time.Duration(p.waitedNs.Load()), p.held.Load()
}

const rateWindow = 100 * time.Millisecond

// placing reports whether placements arrived at MinRate or faster over
// the last sample window.
func (p *Pacer) placing(now time.Time) bool {
	at := p.lastAt.Load()
	if elapsed := now.UnixNano() - at; elapsed >= int64(rateWindow) && p.lastAt.CompareAndSwap(at, now.UnixNano()) {
		n := p.placed.Load()
		rate := float64(n-p.lastN.Swap(n)) / (float64(elapsed) / float64(time.Second))
		p.hot.Store(at != 0 && rate >= p.MinRate)
	}
	return p.hot.Load()
}

// busy reports whether persisting should give way now.
func (p *Pacer) busy(now time.Time) bool {
	return p.placing(now) && p.Busy()
}

// Wait holds a batch while the placement path is busy, until the oldest
// event in it is MaxLag old (or MaxLag has passed since the call), or ctx
// is done.
func (p *Pacer) Wait(ctx context.Context, events []Placed) {
	if p == nil || p.Busy == nil || p.MaxLag <= 0 || len(events) == 0 {
		return
	}
	start := time.Now()
	if !p.busy(start) {
		return
	}
	deadline := start.Add(p.MaxLag)
	for _, e := range events {
		if d := e.PlacedAt.Add(p.MaxLag); d.Before(deadline) {
			deadline = d
		}
	}
	poll := p.Poll
	if poll <= 0 {
		poll = 20 * time.Millisecond
	}
	t := time.NewTimer(poll)
	defer t.Stop()
	now := start
	for now.Before(deadline) && p.busy(now) {
		t.Reset(min(poll, deadline.Sub(now)))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now = time.Now()
	}
	if waited := now.Sub(start); waited > 0 {
		p.waitedNs.Add(int64(waited))
		p.held.Add(1)
	}
}
