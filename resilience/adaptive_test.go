package resilience_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike/resilience"
)

// runWindow admits as many Critical requests as the limit allows (the server
// is saturated), lets them take latency, and completes them.
func runWindow(clk *fakeClock, a *resilience.Adaptive, latency time.Duration) {
	var tickets []resilience.Ticket
	for {
		t, ok := a.Acquire(resilience.Critical)
		if !ok {
			break
		}
		tickets = append(tickets, t)
	}
	clk.Advance(latency)
	for _, t := range tickets {
		t.Success()
	}
}

// newStreamLimit returns a Probed limiter with the order stream's
// settings (cmd/spike: min 4, max 8192, tolerance 3, slack 20 ms).
func newStreamLimit(clk *fakeClock, initial int) *resilience.Adaptive {
	return resilience.NewAdaptive(resilience.AdaptiveConfig{
		InitialLimit: initial, MinLimit: 4, MaxLimit: 8192,
		Baseline: resilience.Probed, Tolerance: 3, Slack: 20 * time.Millisecond, Now: clk.Now,
	})
}

// runUnqueued runs n rounds of two calls at a time, each taking latency:
// load light enough to measure the unqueued latency.
func runUnqueued(clk *fakeClock, a *resilience.Adaptive, n int, latency time.Duration) {
	for range n {
		t1, _ := a.Acquire(resilience.Critical)
		t2, _ := a.Acquire(resilience.Critical)
		clk.Advance(latency)
		t1.Success()
		t2.Success()
	}
}

// runTogether admits n calls at once (as far as the limit lets), finishes
// them all after latency, and returns how many the limit refused.
func runTogether(clk *fakeClock, a *resilience.Adaptive, n int, latency time.Duration) (refused int) {
	var tickets []resilience.Ticket
	for range n {
		if tk, ok := a.Acquire(resilience.Critical); ok {
			tickets = append(tickets, tk)
		} else {
			refused++
		}
	}
	clk.Advance(latency)
	for _, tk := range tickets {
		tk.Success()
	}
	return refused
}

// acquireAll admits n calls, failing the test if the limit refuses one.
func acquireAll(t *testing.T, a *resilience.Adaptive, n int) []resilience.Ticket {
	t.Helper()
	tickets := make([]resilience.Ticket, 0, n)
	for i := range n {
		tk, ok := a.Acquire(resilience.Critical)
		if !ok {
			t.Fatalf("call %d of %d refused under a limit of %d", i+1, n, a.Limit())
		}
		tickets = append(tickets, tk)
	}
	return tickets
}

func TestAdaptiveLimitFollowsLatency(t *testing.T) {
	clk := newFakeClock()
	a := resilience.NewAdaptive(resilience.AdaptiveConfig{
		InitialLimit: 10, MaxLimit: 500, WindowSamples: 5, WindowDuration: time.Millisecond, Now: clk.Now,
	})
	// Steady latency under full load: the limit grows.
	limits := []int{a.Limit()}
	for range 30 {
		runWindow(clk, a, 10*time.Millisecond)
		limits = append(limits, a.Limit())
	}
	grown := a.Limit()
	if grown <= 15 {
		t.Fatalf("limit after 30 windows at steady latency = %d (history %v), want > 15", grown, limits)
	}
	for i := 1; i < len(limits); i++ {
		if limits[i] < limits[i-1] {
			t.Fatalf("limit fell at steady latency: %v", limits)
		}
	}
	// The dependency slows down fivefold: requests queue, the limit shrinks.
	for range 10 {
		runWindow(clk, a, 50*time.Millisecond)
	}
	if shrunk := a.Limit(); shrunk > grown*2/3 {
		t.Errorf("limit after latency rose 5x = %d, want <= %d (2/3 of %d)", shrunk, grown*2/3, grown)
	}
	if n := a.InFlight(); n != 0 {
		t.Errorf("InFlight() = %d after all tickets finished, want 0", n)
	}
}

func TestAdaptiveIdleDoesNotGrow(t *testing.T) {
	clk := newFakeClock()
	a := resilience.NewAdaptive(resilience.AdaptiveConfig{InitialLimit: 20, WindowSamples: 1, WindowDuration: time.Millisecond, Now: clk.Now})
	for range 100 {
		tk, _ := a.Acquire(resilience.Normal) // one at a time: app-limited
		clk.Advance(time.Millisecond)
		tk.Success()
	}
	if got := a.Limit(); got != 20 {
		t.Errorf("Limit() after light load = %d, want 20 (unchanged)", got)
	}
}

func TestAdaptiveDropsBackOff(t *testing.T) {
	clk := newFakeClock()
	a := resilience.NewAdaptive(resilience.AdaptiveConfig{InitialLimit: 100, WindowDuration: time.Millisecond, Now: clk.Now})
	for range 5 {
		tk, _ := a.Acquire(resilience.Normal)
		clk.Advance(time.Millisecond)
		tk.Dropped()
	}
	if got := a.Limit(); got != 59 { // 100 * 0.9^5
		t.Errorf("Limit() after 5 drops = %d, want 59", got)
	}
}

func TestAdaptivePriorityHeadroom(t *testing.T) {
	a := resilience.NewAdaptive(resilience.AdaptiveConfig{InitialLimit: 10})
	// Limit 10: Sheddable may hold 5, Normal 9, Critical all 10.
	steps := []struct {
		p    resilience.Priority
		n    int
		want int // admitted
	}{
		{resilience.Sheddable, 10, 5},
		{resilience.Normal, 10, 4},
		{resilience.Critical, 10, 1},
		{resilience.Sheddable, 1, 0},
	}
	var got, want []string
	var held []resilience.Ticket
	for _, s := range steps {
		admitted := 0
		for range s.n {
			if tk, ok := a.Acquire(s.p); ok {
				admitted++
				held = append(held, tk)
			}
		}
		got = append(got, fmt.Sprintf("%v: %d", s.p, admitted))
		want = append(want, fmt.Sprintf("%v: %d", s.p, s.want))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("admitted per priority mismatch (-want +got):\n%s", diff)
	}
	if a.InFlight() != 10 || a.Shed() != 21 {
		t.Errorf("InFlight(), Shed() = %d, %d; want 10, 21", a.InFlight(), a.Shed())
	}
	for _, tk := range held {
		tk.Ignore()
	}
	if err := a.Policy(resilience.Sheddable).Do(context.Background(), func(context.Context) error { return nil }); err != nil {
		t.Errorf("Policy().Do() after release = %v, want nil", err)
	}
	held = held[:0]
	for range 10 {
		tk, _ := a.Acquire(resilience.Critical)
		held = append(held, tk)
	}
	if err := a.Policy(resilience.Critical).Do(context.Background(), func(context.Context) error { return nil }); !errors.Is(err, resilience.ErrShed) {
		t.Errorf("Policy().Do() at the limit = %v, want ErrShed", err)
	}
}

// simulateDependency drives limiter a (on clk) with an open-loop load of
// offered calls per second in front of a dependency that serves slots calls
// at a time, each taking service, in simulated time. It returns the
// goodput (calls/s) and the p99 latency of admitted calls over the second
// half of the run, and the limit at the end.
func simulateDependency(clk *fakeClock, a *resilience.Adaptive, slots int, service time.Duration, offered float64, run time.Duration) (goodput float64, p99 time.Duration, limit int) {
	return simulate(clk, a, simulation{slots: slots, service: service, offered: offered, run: run, measureFrom: run / 2})
}

// simulation is a load in front of a dependency serving slots calls at a
// time, each taking service: light calls/s until lightFor, then offered
// calls/s until run; latencies and goodput are measured from measureFrom.
type simulation struct {
	slots            int
	service          time.Duration
	light            float64
	lightFor         time.Duration
	offered          float64
	run, measureFrom time.Duration
}

// simulate runs s against limiter a on clk, in simulated time; it returns
// the goodput (calls/s) and the p99 latency of admitted calls from
// s.measureFrom, and the limit at the end.
func simulate(clk *fakeClock, a *resilience.Adaptive, s simulation) (goodput float64, p99 time.Duration, limit int) {
	slots, service, run := s.slots, s.service, s.run
	const step = 250 * time.Microsecond
	type call struct {
		t       resilience.Ticket
		arrived time.Duration
	}
	var queue []call            // admitted, waiting for a slot (FIFO)
	busy := make([]call, slots) // in service
	until := make([]time.Duration, slots)
	free := make([]bool, slots)
	for i := range free {
		free[i] = true
	}
	var lat []time.Duration
	done, acc := 0, 0.0
	for now := time.Duration(0); now < run; now += step {
		clk.Advance(step)
		for i := range slots { // completions
			if !free[i] && until[i] <= now {
				busy[i].t.Success()
				free[i] = true
				if now >= s.measureFrom {
					done++
					lat = append(lat, now-busy[i].arrived)
				}
			}
		}
		offered := s.offered
		if now < s.lightFor {
			offered = s.light
		}
		for acc += offered * step.Seconds(); acc >= 1; acc-- { // arrivals
			if t, ok := a.Acquire(resilience.Critical); ok {
				queue = append(queue, call{t, now})
			}
		}
		for i := range slots { // starts
			if free[i] && len(queue) > 0 {
				busy[i], queue = queue[0], queue[1:]
				free[i], until[i] = false, now+service
			}
		}
	}
	slices.Sort(lat)
	return float64(done) / (run - s.measureFrom).Seconds(), lat[len(lat)*99/100], a.Limit()
}

// TestAdaptiveProbedSlowDependency: a dependency that serves 8 calls
// at a time, 5 ms each (1600/s), offered 3x that. Against the lowest recent
// latency, the limit settles near the dependency's concurrency: admitted
// calls barely queue and the dependency stays busy. A fixed generous limit
// (the bulkhead alone) queues them instead.
func TestAdaptiveProbedSlowDependency(t *testing.T) {
	const (
		slots    = 8
		service  = 5 * time.Millisecond
		capacity = slots / 0.005
	)
	clk := newFakeClock()
	a := resilience.NewAdaptive(resilience.AdaptiveConfig{
		InitialLimit: 256, MinLimit: 4, MaxLimit: 8192,
		Baseline: resilience.Probed, Tolerance: 2, Slack: 5 * time.Millisecond, Now: clk.Now,
	})
	goodput, p99, limit := simulateDependency(clk, a, slots, service, 3*capacity, 20*time.Second)
	t.Logf("adaptive: goodput %.0f/s of %.0f/s, p99 %v (service %v), limit %d", goodput, capacity, p99, service, limit)
	if goodput < 0.9*capacity {
		t.Errorf("goodput %.0f/s < 0.9 x capacity %.0f/s: the limit starves the dependency", goodput, capacity)
	}
	if p99 > 4*service {
		t.Errorf("p99 of admitted calls %v > 4 x service %v: admitted calls queue", p99, service)
	}
	if limit < slots || limit > 6*slots {
		t.Errorf("limit settled at %d, want between %d and %d", limit, slots, 6*slots)
	}

	clk = newFakeClock()
	fixed := resilience.NewAdaptive(resilience.AdaptiveConfig{InitialLimit: 256, MinLimit: 256, MaxLimit: 256, Now: clk.Now})
	_, p99Fixed, _ := simulateDependency(clk, fixed, slots, service, 3*capacity, 20*time.Second)
	t.Logf("fixed limit 256: p99 %v", p99Fixed)
	if p99Fixed < 10*service {
		t.Errorf("with a fixed limit of 256, p99 %v: expected the admitted calls to queue", p99Fixed)
	}
}

// TestAdaptiveProbedSlowNotQueueing: calls that are slow but do not queue
// (the dependency serves them all at once, or the CPU is slow for
// everyone) do not shrink the limit: the probe measures the same latency.
// Latency that rises with the calls in flight does.
func TestAdaptiveProbedSlowNotQueueing(t *testing.T) {
	clk := newFakeClock()
	a := resilience.NewAdaptive(resilience.AdaptiveConfig{
		InitialLimit: 100, MinLimit: 4, MaxLimit: 8192,
		Baseline: resilience.Probed, Tolerance: 2, Now: clk.Now,
	})
	// 1000 slots of 40 ms: 25 000/s; offered 5000/s needs 200 in flight.
	goodput, p99, limit := simulateDependency(clk, a, 1000, 40*time.Millisecond, 5000, 20*time.Second)
	t.Logf("slow, not queueing: goodput %.0f/s, p99 %v, limit %d", goodput, p99, limit)
	if limit < 200 || goodput < 0.9*5000 {
		t.Errorf("limit %d, goodput %.0f/s: slow calls that do not queue shrank the limit", limit, goodput)
	}
	// The same dependency with 20 slots (500/s), offered 5000/s: shrinks.
	clk = newFakeClock()
	a = resilience.NewAdaptive(resilience.AdaptiveConfig{
		InitialLimit: 100, MinLimit: 4, MaxLimit: 8192,
		Baseline: resilience.Probed, Tolerance: 2, Now: clk.Now,
	})
	goodput, p99, limit = simulateDependency(clk, a, 20, 40*time.Millisecond, 5000, 20*time.Second)
	t.Logf("20 slots: goodput %.0f/s, p99 %v, limit %d", goodput, p99, limit)
	if limit > 60 || goodput < 0.9*500 || p99 > 4*40*time.Millisecond {
		t.Errorf("20 slots of 40 ms: limit %d, goodput %.0f/s, p99 %v; want limit <= 60, goodput >= 450/s, p99 <= 160ms", limit, goodput, p99)
	}
}

// TestAdaptiveProbeEndsWhenLatenciesIgnored: a probe whose calls are all
// ignored (their latency says nothing) ends after a bounded time instead of
// holding the limit at MinLimit.
func TestAdaptiveProbeEndsWhenLatenciesIgnored(t *testing.T) {
	clk := newFakeClock()
	a := resilience.NewAdaptive(resilience.AdaptiveConfig{
		InitialLimit: 100, MinLimit: 4, Baseline: resilience.Probed, WindowSamples: 5,
		WindowDuration: 10 * time.Millisecond, Now: clk.Now,
	})
	runWindow(clk, a, 20*time.Millisecond) // limit reached, baseline unknown: a probe starts
	if got := a.Limit(); got != 4 {
		t.Fatalf("Limit() after a window with no baseline = %d, want 4 (probing)", got)
	}
	for range 20 {
		tk, ok := a.Acquire(resilience.Critical)
		clk.Advance(10 * time.Millisecond)
		if ok {
			tk.Ignore()
		}
	}
	if got := a.Limit(); got < 100 {
		t.Errorf("Limit() after 200 ms of ignored calls = %d, want the probe over and >= 100", got)
	}
}

// TestAdaptiveProbedSlackWindowKeepsBaseline: a window of queued calls
// whose mean latency is within Slack does not become the baseline. It
// did, and then the tolerated latency was Tolerance × that queued latency:
// against a dependency whose unqueued latency is 8 ms, a queue of 18 ms
// let admitted calls wait 54 ms before the limit shrank (the overload
// experiment's p99 settled near 60 ms, 5.9 × the unloaded p99).
func TestAdaptiveProbedSlackWindowKeepsBaseline(t *testing.T) {
	clk := newFakeClock()
	a := newStreamLimit(clk, 64)
	// Unqueued: two calls at a time, 8 ms each, for 2 s (baseline 8 ms).
	runUnqueued(clk, a, 250, 8*time.Millisecond)
	// Queued within Slack: the limit full, 18 ms a call, for 0.5 s.
	for range 28 {
		runWindow(clk, a, 18*time.Millisecond)
	}
	start := a.Limit()
	// Queued beyond 3 × 8 ms and 8 ms + Slack: 40 ms a call, for 2 s.
	for range 50 {
		runWindow(clk, a, 40*time.Millisecond)
	}
	if got := a.Limit(); got >= start {
		t.Errorf("limit after 2 s of calls queued 40 ms (unqueued 8 ms, tolerated 28 ms) = %d, was %d: it should shrink", got, start)
	}
}

// TestAdaptiveProbedSlackWindowFollowsDrift: while the limit does not
// bind, a window within Slack is the dependency's own latency and may
// raise the baseline: a dependency slowing down by 1 ms a second, 16 calls
// in flight under a limit of 256, no queue, is never refused. (Were such
// windows only to lower the baseline, the tolerated latency would stay
// at 1 ms + Slack and the limit would fall to its floor at 22 ms.)
func TestAdaptiveProbedSlackWindowFollowsDrift(t *testing.T) {
	clk := newFakeClock()
	a := newStreamLimit(clk, 256)
	refused := 0
	for latency := time.Millisecond; latency <= 26*time.Millisecond; latency += time.Millisecond {
		for elapsed := time.Duration(0); elapsed < time.Second; elapsed += latency {
			refused += runTogether(clk, a, 16, latency)
		}
	}
	if refused > 0 || a.Limit() < 16 {
		t.Errorf("a dependency slowing from 1 to 26 ms, 16 calls in flight: %d refused, limit %d; want none refused", refused, a.Limit())
	}
}

// TestAdaptiveProbedDriftWhileBinding: a dependency that serves every
// call at once slows down by 1 ms a second while the limit binds (a
// healthy burst at the limit, no queue). Windows within Slack may then
// only lower the baseline, so the probe must still come and measure it
// again: were those windows to keep postponing the probe, the tolerated
// latency would stay at 1 ms + Slack and the limit would collapse to its
// floor once calls took 22 ms.
func TestAdaptiveProbedDriftWhileBinding(t *testing.T) {
	clk := newFakeClock()
	a := newStreamLimit(clk, 256)
	lowest := a.Limit()
	for latency := time.Millisecond; latency <= 30*time.Millisecond; latency += time.Millisecond {
		for elapsed := time.Duration(0); elapsed < time.Second; elapsed += latency {
			runWindow(clk, a, latency)
			if l := a.Limit(); l > 4 { // 4: probing
				lowest = min(lowest, l)
			}
		}
	}
	if lowest < 64 {
		t.Errorf("a dependency slowing from 1 to 30 ms with no queue, the limit binding: the limit fell to %d (outside probes); want it kept near 256", lowest)
	}
}

// TestAdaptiveProbedIgnoredCallsCountForRate: while most calls are
// ignored (a saturated CPU: their latencies say nothing), they still
// complete, and the rate they complete at is what tells a queued call from
// one slowed by something else. Counted from the samples alone, the rate
// looked forty times lower, and one call slowed by the CPU cut the limit
// from 256 to 22: the CPU-bound overload experiment's closed-loop peak
// then got 25 706 placements refused (none with the fix).
func TestAdaptiveProbedIgnoredCallsCountForRate(t *testing.T) {
	clk := newFakeClock()
	a := newStreamLimit(clk, 64)
	// Light: two calls at a time, 1 ms each, for 1 s (baseline 1 ms).
	runUnqueued(clk, a, 1000, time.Millisecond)
	// Saturated: 40 calls at a time, 2 ms each (20 000/s), for 1 s; as
	// depguard does while the CPU is saturated, only a call admitted with
	// half the limit or more in flight counts (the last), the rest are
	// ignored.
	for range 500 {
		tickets := acquireAll(t, a, 40)
		clk.Advance(2 * time.Millisecond)
		for _, tk := range tickets[:39] {
			tk.Ignore()
		}
		tickets[39].Success()
	}
	before := a.Limit()
	// One burst of calls slowed to 25 ms by the CPU (tolerated: 22 ms, the
	// baseline 2 ms), 24 in flight: 1 000/s if it were a queue, against
	// 20 000/s completed.
	runTogether(clk, a, 24, 25*time.Millisecond)
	if got := a.Limit(); got < before*3/4 {
		t.Errorf("limit after calls slowed by the CPU = %d, was %d: a stall passed for a queue", got, before)
	}
}

// TestAdaptiveProbedNoProbeWithinSlack: a fast dependency under a burst
// (latency within Slack) is never probed, so no call is shed; a slow one is.
func TestAdaptiveProbedNoProbeWithinSlack(t *testing.T) {
	for _, tt := range []struct {
		latency   time.Duration
		wantProbe bool
	}{{2 * time.Millisecond, false}, {50 * time.Millisecond, true}} {
		clk := newFakeClock()
		lowest := 1 << 30
		a := resilience.NewAdaptive(resilience.AdaptiveConfig{
			InitialLimit: 256, MinLimit: 4, MaxLimit: 8192,
			Baseline: resilience.Probed, Tolerance: 3, Slack: 20 * time.Millisecond, Now: clk.Now,
			OnLimitChange: func(l int) { lowest = min(lowest, l) },
		})
		for range 500 {
			runWindow(clk, a, tt.latency)
		}
		if probed := lowest == 4; probed != tt.wantProbe {
			t.Errorf("latency %v: lowest limit %d; probed %v, want %v", tt.latency, lowest, probed, tt.wantProbe)
		}
	}
}

// TestAdaptiveProbedSurgeOnset: a slowed dependency (8 calls at a time, 8
// ms each: 1000/s) under light load, then offered 3x its capacity at once.
// The limit, still at its initial 256, must not let a queue of hundreds of
// calls form before the first window closes: a call that queued beyond the
// tolerated latency cuts the limit on its own. The p99 of admitted calls
// over the whole surge, its onset included, stays within 5x the unqueued
// latency, and the dependency stays busy.
func TestAdaptiveProbedSurgeOnset(t *testing.T) {
	const (
		slots    = 8
		service  = 8 * time.Millisecond
		capacity = slots / 0.008
	)
	clk := newFakeClock()
	reported := 0
	a := resilience.NewAdaptive(resilience.AdaptiveConfig{
		InitialLimit: 256, MinLimit: 4, MaxLimit: 8192,
		Baseline: resilience.Probed, Tolerance: 3, Slack: 20 * time.Millisecond, Now: clk.Now,
		OnLimitChange: func(l int) { reported = l },
	})
	goodput, p99, limit := simulate(clk, a, simulation{
		slots: slots, service: service,
		light: capacity / 4, lightFor: 5 * time.Second,
		offered: 3 * capacity, run: 15 * time.Second, measureFrom: 5 * time.Second,
	})
	t.Logf("surge: goodput %.0f/s of %.0f/s, p99 %v (service %v), limit %d", goodput, capacity, p99, service, limit)
	if goodput < 0.9*capacity {
		t.Errorf("goodput %.0f/s < 0.9 x capacity %.0f/s", goodput, capacity)
	}
	if p99 > 5*service {
		t.Errorf("p99 of admitted calls over the surge %v > 5 x service %v: a queue formed at its onset", p99, service)
	}
	if reported != limit {
		t.Errorf("OnLimitChange last reported %d, the limit is %d: a change went unreported", reported, limit)
	}
}

// TestAdaptiveProbedStallDoesNotCut: calls made slow by a stall of the
// process (every call in flight waits, whatever its place), not by a
// queue at the dependency, do not cut the limit: their latency implies a
// dependency far slower than the completion rate just measured.
func TestAdaptiveProbedStallDoesNotCut(t *testing.T) {
	clk := newFakeClock()
	a := newStreamLimit(clk, 256)
	// Light load: two calls at a time, 8 ms each, for 2 s (baseline 8 ms,
	// 250 calls/s).
	runUnqueued(clk, a, 250, 8*time.Millisecond)
	// A 300 ms stall with 16 calls in flight.
	runTogether(clk, a, 16, 300*time.Millisecond)
	if got := a.Limit(); got < 200 {
		t.Errorf("limit after a stall = %d, want it near 256: a stall is not a queue", got)
	}
}

// TestTicketCrowded: a ticket admitted with at least half the limit in
// flight is crowded.
func TestTicketCrowded(t *testing.T) {
	a := resilience.NewAdaptive(resilience.AdaptiveConfig{InitialLimit: 10, MinLimit: 10, MaxLimit: 10})
	var crowded []bool
	var tickets []resilience.Ticket
	for range 6 {
		tk := acquireAll(t, a, 1)[0]
		tickets = append(tickets, tk)
		crowded = append(crowded, tk.Crowded())
	}
	if want := []bool{false, false, false, false, true, true}; !slices.Equal(crowded, want) {
		t.Errorf("Crowded of the 1st to 6th in flight of 10 = %v, want %v", crowded, want)
	}
	for _, tk := range tickets {
		tk.Ignore()
	}
	if (resilience.Ticket{}).Crowded() {
		t.Error("the zero Ticket is crowded")
	}
}
