package resilience

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Priority ranks requests for the adaptive limiter: lower-priority requests
// are shed first, so critical traffic keeps headroom during overload.
type Priority int

// Priorities, from most to least protected. The zero value is Normal.
const (
	// Normal is ordinary traffic (buyers placing orders); it may use
	// NormalShare of the limit.
	Normal Priority = iota
	// Critical is traffic that must get through (health checks, admin,
	// payment callbacks); it may use the whole limit.
	Critical
	// Sheddable is traffic that can wait (recommendations, prefetches); it
	// may use SheddableShare of the limit.
	Sheddable
	numPriorities
)

// String returns the priority's name.
func (p Priority) String() string {
	switch p {
	case Normal:
		return "normal"
	case Critical:
		return "critical"
	case Sheddable:
		return "sheddable"
	}
	return "unknown"
}

// AdaptiveConfig configures an [Adaptive] limiter. The zero value is valid.
type AdaptiveConfig struct {
	// InitialLimit is the starting concurrency limit; default 20.
	InitialLimit int
	// MinLimit and MaxLimit bound the limit; defaults 2 and 1000.
	MinLimit, MaxLimit int
	// Tolerance is how much the recent latency may exceed the baseline
	// latency (see Baseline) before the limit shrinks; default 1.5.
	Tolerance float64
	// Baseline is the latency a window's mean latency is compared with:
	// LongAverage (the default, as gradient2) or Probed.
	Baseline Baseline
	// ProbeEvery is how many updates apart Probed measures the baseline;
	// default 50 (5 s at the default WindowDuration).
	ProbeEvery int
	// Slack is queueing delay that is always tolerated: the limit shrinks
	// only when the window's mean latency exceeds both Tolerance × baseline
	// and baseline + Slack. Default 0.
	Slack time.Duration
	// Smoothing is how far each update moves the limit toward its new
	// estimate, in (0,1]; default 0.2.
	Smoothing float64
	// LongWindow is the number of updates the long-term latency averages
	// over; default 600.
	LongWindow int
	// WindowSamples and WindowDuration set how often the limit is updated:
	// after at least WindowSamples completed calls (default 10) and at least
	// WindowDuration (default 100ms).
	WindowSamples  int
	WindowDuration time.Duration
	// NormalShare and SheddableShare are the fractions of the limit that
	// Normal and Sheddable requests may occupy; the rest is reserved for
	// higher priorities. Defaults 0.9 and 0.5.
	NormalShare, SheddableShare float64
	// OnLimitChange, if set, is called (outside locks) when the limit
	// changes, for metrics.
	OnLimitChange func(limit int)
	// Now returns the current time; nil means the real monotonic clock.
	Now func() time.Time
}

// Baseline selects the reference latency of an [Adaptive] limiter.
type Baseline int

const (
	// LongAverage compares with an exponential moving average of window
	// latencies over LongWindow updates (gradient2). It follows slow drifts
	// of the latency, including those of a standing queue that lasts.
	LongAverage Baseline = iota
	// Probed compares with the latency of calls that did not queue: the
	// mean latency of a window in which at most MinLimit calls were in
	// flight (or, with Slack set, whose mean latency is within Slack: see
	// below), or else measured as BBR's ProbeRTT does: in a window where
	// the limit binds (it was reached, or refused calls) while the baseline
	// is unknown, and then every ProbeEvery updates while it binds, the limit
	// drops to MinLimit until 2 × WindowSamples calls admitted under it have
	// completed; their mean latency becomes the baseline and the limit is
	// restored. A probe never starts while the limit refuses nothing: it
	// sheds every call above MinLimit. A probe ends early, the baseline unchanged, when a call
	// admitted under it is finished with Ignore, or after 10 windows. The
	// baseline does not drift with a standing queue, so the limit settles
	// where the mean latency is Tolerance × the unqueued latency (or that
	// plus Slack): in flight near what the dependency serves at once.
	// Slowness that is not queueing at the dependency (a busy CPU) raises
	// the probed latency too, and does not shrink the limit. Suited to a
	// dependency whose capacity is a number of calls at a time (a
	// connection pool, a stream), with MinLimit at or below that number.
	// A window whose mean latency is within Slack (when Slack is set)
	// stands in for a probe (the limit could not shrink for it anyway, and
	// a healthy burst is never shed by a probe): it becomes the baseline
	// if none is known or the limit did not bind in it, and otherwise only
	// lowers it, since its calls may have queued behind the limit; one
	// that neither sets the baseline nor is within Tolerance of it does
	// not postpone the next probe.
	Probed
)

// maxProbeWindows bounds a probe's length, in WindowDurations.
const maxProbeWindows = 10

// Adaptive is an adaptive concurrency limiter and load shedder, after
// Netflix's gradient2 limiter: it measures the latency of completed calls and
// the number in flight, grows the concurrency limit while latency stays near
// its long-term level, and shrinks it when latency rises (requests are
// queueing) or calls are dropped. Requests beyond the limit are rejected at
// once, so excess load costs almost nothing and nobody tunes a QPS number.
// It is safe for concurrent use; Acquire and the Ticket methods do not
// allocate.
type Adaptive struct {
	inflight atomic.Int64
	caps     [numPriorities]atomic.Int64 // in-flight cap per priority
	shed     atomic.Uint64
	// completed counts finished calls that did not time out, ignored ones
	// included (those that failed fast too): about the rate at which the
	// dependency completes calls, whether or not their latency is a
	// sample. Only Probed uses that rate (cutOnQueue), so only Probed
	// counts: the admission limit in front of every request does not pay
	// for it.
	completed atomic.Uint64
	// winShedMark is shed at the start of the window: a window with more
	// refused calls than that had its limit binding. winDoneMark is
	// completed then.
	winShedMark, winDoneMark uint64

	mu        sync.Mutex
	cfg       AdaptiveConfig
	clock     clock
	limit     float64
	longRTT   float64 // ns, exponential moving average
	winStart  int64
	winCount  int
	winSum    int64 // ns
	winMaxIn  int64 // most in flight seen in the window
	winDrops  int
	lastRate  float64 // completed calls per ns: decaying maximum over windows
	alphaLong float64

	// Probed baseline.
	baseline    float64     // ns; 0 until the first probe
	sinceProbe  int         // updates since the last probe
	probing     bool        // the limit is at MinLimit
	probingFlag atomic.Bool // probing, readable without a.mu
	probed      bool        // a probe has started once
	probeStart  int64       // ns
	probeSaved  float64     // the limit to restore
	probeCount  int
	probeSum    int64 // ns
}

// Ticket is an admitted request, returned by [Adaptive.Acquire]. Call exactly
// one of Success, Dropped or Ignore when the request finishes.
type Ticket struct {
	a        *Adaptive
	start    int64
	inflight int64
}

// NewAdaptive returns an adaptive limiter; see [AdaptiveConfig] for defaults.
func NewAdaptive(cfg AdaptiveConfig) *Adaptive {
	if cfg.MinLimit <= 0 {
		cfg.MinLimit = 2
	}
	if cfg.MaxLimit <= 0 {
		cfg.MaxLimit = 1000
	}
	cfg.MaxLimit = max(cfg.MaxLimit, cfg.MinLimit)
	if cfg.InitialLimit <= 0 {
		cfg.InitialLimit = 20
	}
	if cfg.Tolerance < 1 {
		cfg.Tolerance = 1.5
	}
	if cfg.ProbeEvery <= 0 {
		cfg.ProbeEvery = 50
	}
	if cfg.Smoothing <= 0 || cfg.Smoothing > 1 {
		cfg.Smoothing = 0.2
	}
	if cfg.LongWindow <= 0 {
		cfg.LongWindow = 600
	}
	if cfg.WindowSamples <= 0 {
		cfg.WindowSamples = 10
	}
	if cfg.WindowDuration == 0 {
		cfg.WindowDuration = 100 * time.Millisecond
	}
	if cfg.NormalShare <= 0 || cfg.NormalShare > 1 {
		cfg.NormalShare = 0.9
	}
	if cfg.SheddableShare <= 0 || cfg.SheddableShare > 1 {
		cfg.SheddableShare = 0.5
	}
	a := &Adaptive{cfg: cfg, clock: newClock(cfg.Now), alphaLong: 2 / float64(cfg.LongWindow+1)}
	a.setLimit(float64(min(max(cfg.InitialLimit, cfg.MinLimit), cfg.MaxLimit)))
	return a
}

// setLimit stores the limit and the per-priority caps derived from it.
func (a *Adaptive) setLimit(limit float64) {
	a.limit = limit
	n := int64(limit)
	a.caps[Critical].Store(n)
	a.caps[Normal].Store(max(1, int64(limit*a.cfg.NormalShare)))
	a.caps[Sheddable].Store(max(1, int64(limit*a.cfg.SheddableShare)))
}

// Acquire admits a request of priority p if the in-flight count is below
// p's share of the limit. If ok, the caller must finish the ticket; if not,
// the request should be rejected at once (429/503 with Retry-After).
func (a *Adaptive) Acquire(p Priority) (t Ticket, ok bool) {
	if p < 0 || p >= numPriorities {
		p = Normal
	}
	n := a.inflight.Add(1)
	if n > a.caps[p].Load() {
		a.inflight.Add(-1)
		a.shed.Add(1)
		return Ticket{}, false
	}
	return Ticket{a: a, start: a.clock.nanos(), inflight: n}, true
}

// Success finishes a request that completed (even with an application
// error): its latency is a valid sample.
func (t Ticket) Success() {
	if t.a != nil {
		t.a.finish(t, finishSample)
	}
}

// Dropped finishes a request that timed out or was rejected downstream for
// overload; the limit backs off.
func (t Ticket) Dropped() {
	if t.a != nil {
		t.a.finish(t, finishDrop)
	}
}

// Ignore finishes a request whose latency says nothing about capacity (for
// example the client cancelled it).
func (t Ticket) Ignore() {
	if t.a != nil {
		t.a.finish(t, finishIgnore)
	}
}

// SuccessLatency is Success, and returns the request's latency as the
// limiter measured it (on its clock: AdaptiveConfig.Now if set), so that a
// caller recording latencies too need not read the clock again. A zero
// Ticket returns 0.
func (t Ticket) SuccessLatency() time.Duration {
	if t.a == nil {
		return 0
	}
	return t.a.finish(t, finishSample)
}

// DroppedLatency is Dropped, and returns the request's latency as
// SuccessLatency does.
func (t Ticket) DroppedLatency() time.Duration {
	if t.a == nil {
		return 0
	}
	return t.a.finish(t, finishDrop)
}

// Measures reports whether t was taken from a limiter, which measures its
// latency: false for the zero Ticket.
// Crowded reports whether the request was admitted with at least half of
// the limit in flight: requests were then queuing for the dependency, so
// its latency says something of the dependency even when something else
// (a saturated CPU) also slowed it.
func (t Ticket) Crowded() bool { return t.a != nil && 2*t.inflight >= t.a.caps[Critical].Load() }

func (t Ticket) Measures() bool { return t.a != nil }

// How a ticket finished.
const (
	finishSample = iota
	finishDrop
	finishIgnore
)

// finish records a finished call and returns its latency (0 for an
// ignored call outside a probe, which reads no clock).
func (a *Adaptive) finish(t Ticket, outcome int) time.Duration {
	a.inflight.Add(-1)
	if outcome != finishDrop && a.cfg.Baseline == Probed {
		a.completed.Add(1)
	}
	if outcome == finishIgnore && !a.probingFlag.Load() {
		return 0
	}
	now := a.clock.nanos()
	a.mu.Lock()
	if a.probing {
		changed, limit := a.probe(t, outcome, now)
		a.mu.Unlock()
		if changed && a.cfg.OnLimitChange != nil {
			a.cfg.OnLimitChange(limit)
		}
		return time.Duration(now - t.start)
	}
	changed, limit := false, 0
	if outcome == finishDrop {
		a.winDrops++
	} else {
		a.winCount++
		a.winSum += now - t.start
		if outcome == finishSample {
			changed, limit = a.cutOnQueue(t, now-t.start)
		}
	}
	a.winMaxIn = max(a.winMaxIn, t.inflight)
	if (a.winCount >= a.cfg.WindowSamples || a.winDrops > 0) && now-a.winStart >= int64(a.cfg.WindowDuration) {
		// The window's update may leave a limit just cut unchanged: the
		// cut must still be reported.
		if c, l := a.update(); c || changed {
			changed, limit = true, l
		}
	}
	if outcome == finishIgnore {
		a.mu.Unlock()
		return time.Duration(now - t.start)
	}
	a.mu.Unlock()
	if changed && a.cfg.OnLimitChange != nil {
		a.cfg.OnLimitChange(limit)
	}
	return time.Duration(now - t.start)
}

// probe records a call finished during a probe and ends the probe when
// enough calls admitted under it have completed; a.mu must be held.
func (a *Adaptive) probe(t Ticket, outcome int, now int64) (changed bool, limit int) {
	// A probe lasts at most maxProbeWindows windows, and a call admitted
	// under it whose latency the caller ignores (e.g. while its CPU is
	// saturated) ends it: the limit must not stay at MinLimit while
	// latencies say nothing.
	underProbe := t.start >= a.probeStart
	abort := now-a.probeStart >= maxProbeWindows*int64(a.cfg.WindowDuration) || (underProbe && outcome == finishIgnore)
	if !abort && (outcome != finishSample || !underProbe) {
		return false, 0 // admitted before the probe: it may have queued
	}
	if outcome == finishSample && underProbe {
		a.probeCount++
		a.probeSum += now - t.start
	}
	if a.probeCount < 2*a.cfg.WindowSamples && !abort {
		return false, 0
	}
	a.probing = false
	a.probingFlag.Store(false)
	if a.probeCount >= a.cfg.WindowSamples {
		a.baseline = max(1, float64(a.probeSum)/float64(a.probeCount))
	}
	a.resetWindow()
	a.setLimit(a.probeSaved)
	return true, int(a.probeSaved)
}

// startProbe cuts the limit to MinLimit to measure unqueued latency; a.mu
// must be held.
func (a *Adaptive) startProbe(restore float64) {
	a.sinceProbe = 0
	a.probing, a.probed, a.probeStart, a.probeSaved = true, true, a.clock.nanos(), restore
	a.probingFlag.Store(true)
	a.probeCount, a.probeSum = 0, 0
	a.setLimit(float64(a.cfg.MinLimit))
}

// update closes the window and computes the new limit; a.mu must be held.
func (a *Adaptive) update() (changed bool, limit int) {
	old := a.limit
	newLimit := old
	if a.winDrops > 0 {
		newLimit = old * 0.9 // multiplicative decrease on drops, as AIMD
	} else if a.winCount > 0 {
		shortRTT := max(1, float64(a.winSum)/float64(a.winCount))
		// Grow only if the limit was actually used: an idle server's low
		// latency says nothing about a bigger limit.
		used := float64(a.winMaxIn) >= old/2
		if a.cfg.Baseline == Probed {
			return a.updateProbed(old, shortRTT, used)
		}
		if a.longRTT == 0 {
			a.longRTT = shortRTT
		} else {
			a.longRTT += (shortRTT - a.longRTT) * a.alphaLong
		}
		// After an overload the long average is high; let it fall faster
		// so the limit does not grow on stale history.
		if a.longRTT/shortRTT > 2 {
			a.longRTT *= 0.95
		}
		if used {
			newLimit = a.gradient(old, a.longRTT, shortRTT)
		}
	}
	return a.closeWindow(old, newLimit)
}

// gradient returns the limit that latency shortRTT against baseline asks
// for: shrinking when shortRTT exceeds the tolerated latency, growing by a
// queue allowance of √limit otherwise, Smoothing of the way.
func (a *Adaptive) gradient(old, baseline, shortRTT float64) float64 {
	target := max(a.cfg.Tolerance*baseline, baseline+float64(a.cfg.Slack))
	gradient := max(0.5, min(1, target/shortRTT))
	queue := math.Sqrt(old) // allowance for requests waiting
	return old*(1-a.cfg.Smoothing) + (old*gradient+queue)*a.cfg.Smoothing
}

// cutOnQueue is the Probed limiter's fast decrease, applied on every
// completed call rather than once a window: a call whose latency exceeded
// the tolerated latency queued, and by Little's law the dependency served
// the calls in flight when it was admitted (t.inflight, itself included)
// in that latency, so it serves t.inflight × tolerated / latency within
// the tolerated latency. The limit drops to that at once. Without it a
// surge against a limit far above a slowed dependency's capacity (the
// limit does not shrink while unused) admits a queue of hundreds of calls
// before the first window closes; with it the queue is bounded by what
// arrives within one tolerated latency. a.mu must be held.
func (a *Adaptive) cutOnQueue(t Ticket, latency int64) (changed bool, limit int) {
	if a.cfg.Baseline != Probed || a.baseline == 0 {
		return false, 0
	}
	target := max(a.cfg.Tolerance*a.baseline, a.baseline+float64(a.cfg.Slack))
	if float64(latency) <= target || t.inflight <= int64(a.cfg.MinLimit) {
		return false, 0 // no queue, or too few calls in flight to have queued
	}
	// A queue drains at the dependency's rate, which cannot be far below
	// the completion rate recently measured: a call whose latency implies
	// otherwise was slow for another reason (a stall of the process, a
	// pause), not queued behind others. Before any window has measured
	// that rate there is no telling, and the window's update decides.
	if a.lastRate == 0 || float64(t.inflight)/float64(latency) < 0.5*a.lastRate {
		return false, 0
	}
	cut := max(float64(t.inflight)*target/float64(latency), float64(a.cfg.MinLimit))
	if cut >= a.limit {
		return false, 0
	}
	changed = int(cut) != int(a.limit)
	a.setLimit(cut)
	return changed, int(cut)
}

// updateProbed is update for the Probed baseline. A window whose calls all
// ran at most MinLimit at a time measured unqueued latency itself; else,
// the first time, and then when the baseline is old and the limit was
// reached, a probe starts. Unlike LongAverage, the limit also shrinks when it was not used:
// latency above the tolerated with fewer calls in flight than the limit
// means the limit is too high to bind.
func (a *Adaptive) updateProbed(old, shortRTT float64, used bool) (changed bool, limit int) {
	newLimit := old
	a.sinceProbe++
	bound := a.winMaxIn >= int64(old) || a.shed.Load() > a.winShedMark // reached, or refused calls
	switch {
	case a.winMaxIn <= int64(a.cfg.MinLimit):
		a.baseline, a.sinceProbe = shortRTT, 0
	case a.cfg.Slack > 0 && shortRTT <= float64(a.cfg.Slack):
		// A window within Slack: whatever queue there is, the limit could
		// not shrink for it, so it may stand in for a probe (which sheds
		// every call above MinLimit: a healthy burst, such as a flash sale
		// opening, must not pay for that). While the limit binds, its
		// latency may be a queue the limit let in, so it only lowers a
		// known baseline: taken as the baseline, such a queue raised the
		// tolerated latency to Tolerance × Slack under a standing
		// overload, and admitted calls queued that long. While the limit
		// does not bind it is taken as the dependency's own latency (a
		// dependency, or a CPU, slowing down raises it).
		set := a.baseline == 0 || shortRTT < a.baseline || !bound
		if set {
			a.baseline = shortRTT
		}
		// A window that measured nothing postpones the probe only while
		// it is within Tolerance of the baseline: a dependency slowing
		// down while the limit binds must still be probed, or the
		// baseline stays where it was and the limit collapses once calls
		// pass it by Slack.
		if set || shortRTT <= a.cfg.Tolerance*a.baseline {
			a.sinceProbe, a.probed = 0, true
		}
	}
	if a.baseline > 0 {
		newLimit = a.gradient(old, a.baseline, shortRTT)
		if !used {
			newLimit = min(newLimit, old)
		}
	}
	newLimit = min(max(newLimit, float64(a.cfg.MinLimit)), float64(a.cfg.MaxLimit))
	// A probe sheds every call above MinLimit, so it starts only while the
	// limit already binds (calls are being refused anyway): measuring must
	// never turn a dependency that is keeping up into one that sheds.
	stale := bound && (!a.probed || a.baseline == 0 || a.sinceProbe >= a.cfg.ProbeEvery)
	if stale && a.winMaxIn > int64(a.cfg.MinLimit) && old > float64(a.cfg.MinLimit) {
		a.resetWindow()
		a.startProbe(newLimit)
		return true, a.cfg.MinLimit
	}
	return a.closeWindow(old, newLimit)
}

func (a *Adaptive) resetWindow() {
	if now := a.clock.nanos(); now > a.winStart && a.winStart != 0 {
		// A decaying maximum: one window slowed by a stall does not make
		// the next stalled calls look like a queue. Every completion
		// counts, ignored ones too: while most latencies are ignored (a
		// saturated CPU) the window's samples alone made the rate look
		// low, and a call slowed by the CPU then passed for a queued one.
		a.lastRate = max(float64(a.completed.Load()-a.winDoneMark)/float64(now-a.winStart), a.lastRate*0.7)
	}
	a.winCount, a.winSum, a.winMaxIn, a.winDrops = 0, 0, 0, 0
	a.winShedMark, a.winDoneMark = a.shed.Load(), a.completed.Load()
	a.winStart = a.clock.nanos()
}

// closeWindow bounds and stores the new limit and starts a new window.
func (a *Adaptive) closeWindow(old, newLimit float64) (changed bool, limit int) {
	newLimit = min(max(newLimit, float64(a.cfg.MinLimit)), float64(a.cfg.MaxLimit))
	a.resetWindow()
	if int(newLimit) == int(old) {
		a.limit = newLimit
		return false, int(newLimit)
	}
	a.setLimit(newLimit)
	return true, int(newLimit)
}

// Limit returns the current concurrency limit.
func (a *Adaptive) Limit() int { return int(a.caps[Critical].Load()) }

// InFlight returns the number of admitted requests not yet finished.
func (a *Adaptive) InFlight() int { return int(a.inflight.Load()) }

// Shed returns how many requests have been rejected.
func (a *Adaptive) Shed() uint64 { return a.shed.Load() }

// Policy returns a [Policy] that admits calls at priority p, returning
// ErrShed when the limiter rejects them. Errors matching ErrTimeout (and so
// context.DeadlineExceeded), ErrShed, ErrBulkheadFull or ErrRateLimited
// count as drops; context.Canceled is ignored; anything else is a sample.
func (a *Adaptive) Policy(p Priority) Policy { return adaptivePolicy{a, p} }

type adaptivePolicy struct {
	a *Adaptive
	p Priority
}

func (ap adaptivePolicy) Do(ctx context.Context, fn func(context.Context) error) error {
	t, ok := ap.a.Acquire(ap.p)
	if !ok {
		return ErrShed
	}
	err := fn(ctx)
	switch {
	case err == nil:
		t.Success()
	case errors.Is(err, context.Canceled):
		t.Ignore()
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrShed),
		errors.Is(err, ErrBulkheadFull), errors.Is(err, ErrRateLimited):
		t.Dropped()
	default:
		t.Success()
	}
	return err
}
