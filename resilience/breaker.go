package resilience

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// State is a circuit breaker state.
type State int32

// Breaker states.
const (
	// Closed lets calls through and records their outcomes.
	Closed State = iota
	// Open rejects calls with ErrBreakerOpen until OpenTimeout passes.
	Open
	// HalfOpen lets a few trial calls through to decide whether to close.
	HalfOpen
	// ForcedOpen rejects every call until Reset or ForceClosed.
	ForcedOpen
	// ForcedClosed lets every call through and records nothing.
	ForcedClosed
)

// String returns the state's name.
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half-open"
	case ForcedOpen:
		return "forced-open"
	case ForcedClosed:
		return "forced-closed"
	}
	return "unknown"
}

// WindowType selects how a breaker's sliding window is measured.
type WindowType int

// Sliding window types.
const (
	// CountWindow keeps the outcomes of the last WindowSize calls.
	CountWindow WindowType = iota
	// TimeWindow keeps the outcomes of the last WindowSize seconds, in
	// one-second buckets.
	TimeWindow
)

// BreakerConfig configures a [Breaker]. The zero value is valid: a
// count-based window of 100 calls that opens at a 50% failure rate once it
// has seen 20 calls, stays open 30s, and probes with 5 trial calls.
type BreakerConfig struct {
	// Name identifies the breaker in callbacks; it is not used otherwise.
	Name string
	// Window selects a count- or time-based sliding window.
	Window WindowType
	// WindowSize is the number of calls (CountWindow, default 100) or of
	// seconds (TimeWindow, default 10) in the window.
	WindowSize int
	// MinimumCalls is the least number of calls in the window before the
	// rates are evaluated; default 20 (capped at WindowSize for CountWindow).
	MinimumCalls int
	// FailureRateThreshold opens the breaker when the failure rate in the
	// window reaches it, in (0,1]; default 0.5.
	FailureRateThreshold float64
	// SlowCallDuration marks calls taking at least this long as slow; zero
	// disables slow-call tracking (and the clock read it needs).
	SlowCallDuration time.Duration
	// SlowCallRateThreshold opens the breaker when the slow-call rate
	// reaches it, in (0,1]; default 1 (only when every call is slow).
	SlowCallRateThreshold float64
	// OpenTimeout is how long the breaker stays open before going half-open;
	// default 30s.
	OpenTimeout time.Duration
	// HalfOpenCalls is the number of trial calls allowed in half-open; the
	// breaker closes if their failure and slow rates are below the
	// thresholds and opens again otherwise. If the trials have not all
	// reported back within OpenTimeout, new trials are allowed. Default 5.
	HalfOpenCalls int
	// IsFailure classifies a call's error. Errors for which it returns false
	// are not recorded at all. The default treats every non-nil error except
	// context.Canceled (the caller gave up; the dependency is not at fault)
	// as a failure.
	IsFailure func(err error) bool
	// OnStateChange, if set, is called after every state change, outside the
	// breaker's lock. Calls from concurrent transitions may interleave.
	OnStateChange func(name string, from, to State)
	// Now returns the current time; nil means the real monotonic clock.
	Now func() time.Time
}

// BreakerCounts are cumulative counters for metrics.
type BreakerCounts struct {
	Successes uint64 // calls recorded as successes
	Failures  uint64 // calls recorded as failures
	Slow      uint64 // recorded calls that were slow (also counted above)
	Ignored   uint64 // calls whose error IsFailure ignored
	Rejected  uint64 // calls refused with ErrBreakerOpen
}

// Breaker is a circuit breaker: it stops calling a dependency whose failure
// or slow-call rate over a sliding window crosses a threshold, then probes
// it with a few trial calls before closing again. It is safe for concurrent
// use. In the closed state Acquire is a single atomic load and Record takes
// one uncontended lock; neither allocates.
type Breaker struct {
	// status packs generation<<8 | State so the hot path reads both with one
	// atomic load. The generation is bumped on every state change, and
	// outcomes of permits from an older generation are ignored.
	status atomic.Uint64
	// openUntil is when an open breaker may go half-open, ns since epoch.
	openUntil atomic.Int64
	rejected  atomic.Uint64

	mu     sync.Mutex
	cfg    BreakerConfig
	clock  clock
	window outcomeWindow
	counts BreakerCounts // all but Rejected, under mu
	// Half-open bookkeeping.
	trialsIssued int
	trials       windowTotals
}

// Permit is permission for one call, returned by [Breaker.Acquire]. Pass the
// call's outcome to Record exactly once.
type Permit struct {
	b          *Breaker
	start      int64 // ns since epoch, only if slow calls are tracked
	generation uint64
}

// NewBreaker returns a closed breaker configured by cfg; see [BreakerConfig]
// for defaults.
func NewBreaker(cfg BreakerConfig) *Breaker {
	if cfg.WindowSize <= 0 {
		cfg.WindowSize = 100
		if cfg.Window == TimeWindow {
			cfg.WindowSize = 10
		}
	}
	if cfg.MinimumCalls <= 0 {
		cfg.MinimumCalls = 20
	}
	if cfg.Window == CountWindow {
		cfg.MinimumCalls = min(cfg.MinimumCalls, cfg.WindowSize)
	}
	if cfg.FailureRateThreshold <= 0 || cfg.FailureRateThreshold > 1 {
		cfg.FailureRateThreshold = 0.5
	}
	if cfg.SlowCallRateThreshold <= 0 || cfg.SlowCallRateThreshold > 1 {
		cfg.SlowCallRateThreshold = 1
	}
	if cfg.OpenTimeout <= 0 {
		cfg.OpenTimeout = 30 * time.Second
	}
	if cfg.HalfOpenCalls <= 0 {
		cfg.HalfOpenCalls = 5
	}
	if cfg.IsFailure == nil {
		cfg.IsFailure = defaultIsFailure
	}
	b := &Breaker{cfg: cfg, clock: newClock(cfg.Now)}
	b.window.init(cfg.Window, cfg.WindowSize)
	return b
}

func defaultIsFailure(err error) bool {
	return err != nil && !errors.Is(err, context.Canceled)
}

// Do calls fn unless the breaker refuses, in which case it returns
// ErrBreakerOpen without calling fn. It returns fn's error unchanged.
func (b *Breaker) Do(ctx context.Context, fn func(context.Context) error) error {
	p, err := b.Acquire()
	if err != nil {
		return err
	}
	err = fn(ctx)
	p.Record(err)
	return err
}

// Acquire asks permission for one call. It returns ErrBreakerOpen if the
// breaker is open (or half-open with all trial calls taken); otherwise the
// caller must make the call and pass its outcome to [Permit.Record].
func (b *Breaker) Acquire() (Permit, error) {
	status := b.status.Load()
	switch State(status & 0xff) {
	case Closed:
		p := Permit{b: b, generation: status >> 8}
		if b.cfg.SlowCallDuration > 0 {
			p.start = b.clock.nanos()
		}
		return p, nil
	case ForcedClosed:
		return Permit{}, nil // a nil breaker makes Record a no-op
	case Open:
		if b.clock.nanos() < b.openUntil.Load() {
			b.rejected.Add(1)
			return Permit{}, ErrBreakerOpen
		}
	case ForcedOpen:
		b.rejected.Add(1)
		return Permit{}, ErrBreakerOpen
	}
	return b.acquireSlow()
}

// acquireSlow handles open-timeout expiry and half-open trial calls.
func (b *Breaker) acquireSlow() (Permit, error) {
	var change stateChange
	defer func() { change.notify(b) }() // after the unlock below
	now := b.clock.nanos()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state() == Open && now >= b.openUntil.Load() {
		change = b.transition(HalfOpen)
	}
	switch b.state() {
	case Closed:
		return Permit{b: b, start: now, generation: b.generation()}, nil
	case ForcedClosed:
		return Permit{}, nil
	case HalfOpen:
		if b.trialsIssued >= b.cfg.HalfOpenCalls && now >= b.openUntil.Load() {
			// Trial calls never reported back (lost permits); start over
			// rather than stay half-open forever.
			b.restartTrials(now)
		}
		if b.trialsIssued < b.cfg.HalfOpenCalls {
			b.trialsIssued++
			return Permit{b: b, start: now, generation: b.generation()}, nil
		}
	}
	b.rejected.Add(1)
	return Permit{}, ErrBreakerOpen
}

// Record reports the outcome of the permitted call: err is the call's error
// (nil for success), classified by IsFailure. Outcomes of permits issued
// before the last state change are ignored. Record on the zero Permit is a
// no-op.
func (p Permit) Record(err error) {
	b := p.b
	if b == nil {
		return
	}
	var elapsed int64
	if b.cfg.SlowCallDuration > 0 {
		elapsed = b.clock.nanos() - p.start
	}
	failed := err != nil && b.cfg.IsFailure(err)
	ignored := err != nil && !failed
	var change stateChange
	b.mu.Lock()
	if p.generation == b.generation() {
		change = b.record(failed, ignored, elapsed)
	}
	b.mu.Unlock()
	change.notify(b)
}

func (b *Breaker) record(failed, ignored bool, elapsed int64) stateChange {
	slow := b.cfg.SlowCallDuration > 0 && elapsed >= int64(b.cfg.SlowCallDuration)
	switch {
	case ignored:
		b.counts.Ignored++
	case failed:
		b.counts.Failures++
	default:
		b.counts.Successes++
	}
	if slow && !ignored {
		b.counts.Slow++
	}
	switch b.state() {
	case Closed:
		if ignored {
			return stateChange{}
		}
		var now int64
		if b.window.timeBased {
			now = b.clock.nanos()
		}
		t := b.window.add(now, failed, slow)
		if b.tripped(t, b.cfg.MinimumCalls) {
			return b.transition(Open)
		}
	case HalfOpen:
		if ignored {
			b.trialsIssued-- // let another trial call take its place
			return stateChange{}
		}
		b.trials.calls++
		if failed {
			b.trials.failures++
		}
		if slow {
			b.trials.slow++
		}
		if b.trials.calls >= b.cfg.HalfOpenCalls {
			if b.tripped(b.trials, 1) {
				return b.transition(Open)
			}
			return b.transition(Closed)
		}
	}
	return stateChange{}
}

func (b *Breaker) tripped(t windowTotals, minimumCalls int) bool {
	if t.calls < minimumCalls || t.calls == 0 {
		return false
	}
	calls := float64(t.calls)
	return float64(t.failures)/calls >= b.cfg.FailureRateThreshold ||
		(b.cfg.SlowCallDuration > 0 && float64(t.slow)/calls >= b.cfg.SlowCallRateThreshold)
}

// stateChange is a transition to report once the lock is released.
type stateChange struct {
	from, to State
	changed  bool
}

func (c stateChange) notify(b *Breaker) {
	if c.changed && b.cfg.OnStateChange != nil {
		b.cfg.OnStateChange(b.cfg.Name, c.from, c.to)
	}
}

func (b *Breaker) state() State       { return State(b.status.Load() & 0xff) }
func (b *Breaker) generation() uint64 { return b.status.Load() >> 8 }

// transition moves to state to; b.mu must be held.
func (b *Breaker) transition(to State) stateChange {
	from := b.state()
	if from == to {
		return stateChange{}
	}
	b.window.reset()
	b.trialsIssued = 0
	b.trials = windowTotals{}
	if to == Open || to == HalfOpen {
		// Open: when to probe. HalfOpen: when to give up on lost trials.
		b.openUntil.Store(b.clock.nanos() + int64(b.cfg.OpenTimeout))
	}
	b.status.Store((b.generation()+1)<<8 | uint64(to))
	return stateChange{from: from, to: to, changed: true}
}

// restartTrials forgets outstanding half-open trials; b.mu must be held.
func (b *Breaker) restartTrials(now int64) {
	b.trialsIssued = 0
	b.trials = windowTotals{}
	b.openUntil.Store(now + int64(b.cfg.OpenTimeout))
	b.status.Store((b.generation()+1)<<8 | uint64(HalfOpen))
}

func (b *Breaker) force(to State) {
	b.mu.Lock()
	change := b.transition(to)
	b.mu.Unlock()
	change.notify(b)
}

// ForceOpen rejects every call until [Breaker.Reset] or
// [Breaker.ForceClosed]; use it as a manual degradation switch.
func (b *Breaker) ForceOpen() { b.force(ForcedOpen) }

// ForceClosed lets every call through, recording nothing, until
// [Breaker.Reset] or [Breaker.ForceOpen].
func (b *Breaker) ForceClosed() { b.force(ForcedClosed) }

// Reset closes the breaker and clears its window (counters are kept).
func (b *Breaker) Reset() { b.force(Closed) }

// State returns the current state. An open breaker whose timeout has passed
// reports Open until the next call moves it to HalfOpen.
func (b *Breaker) State() State { return b.state() }

// Counts returns cumulative counters for metrics.
func (b *Breaker) Counts() BreakerCounts {
	b.mu.Lock()
	c := b.counts
	b.mu.Unlock()
	c.Rejected = b.rejected.Load()
	return c
}

// windowTotals are the sums over a window.
type windowTotals struct {
	calls, failures, slow int
}

// outcomeWindow is a count- or time-based sliding window with running totals,
// so adding an outcome is O(1).
type outcomeWindow struct {
	timeBased bool
	// Count-based: a ring of outcomes.
	outcomes []uint8 // bit 0 failed, bit 1 slow
	next     int
	filled   int
	// Time-based: one bucket per second.
	buckets    []timeBucket
	lastSecond int64 // expiry runs only when the second changes
	totals     windowTotals
}

type timeBucket struct {
	second int64
	windowTotals
}

const (
	outcomeFailed = 1 << iota
	outcomeSlow
)

func (w *outcomeWindow) init(kind WindowType, size int) {
	if kind == TimeWindow {
		w.timeBased = true
		w.buckets = make([]timeBucket, size)
		w.reset()
		return
	}
	w.outcomes = make([]uint8, size)
}

func (w *outcomeWindow) reset() {
	w.totals = windowTotals{}
	w.next, w.filled = 0, 0
	w.lastSecond = -1
	for i := range w.buckets {
		w.buckets[i] = timeBucket{second: -1}
	}
}

func (w *outcomeWindow) add(now int64, failed, slow bool) windowTotals {
	if w.timeBased {
		return w.addTimed(now, failed, slow)
	}
	var o uint8
	if failed {
		o |= outcomeFailed
	}
	if slow {
		o |= outcomeSlow
	}
	if w.filled == len(w.outcomes) {
		w.subtract(w.outcomes[w.next])
	} else {
		w.filled++
	}
	w.outcomes[w.next] = o
	w.next++
	if w.next == len(w.outcomes) {
		w.next = 0
	}
	w.totals.calls++
	w.totals.failures += int(o & outcomeFailed)
	w.totals.slow += int(o&outcomeSlow) >> 1
	return w.totals
}

func (w *outcomeWindow) subtract(o uint8) {
	w.totals.calls--
	w.totals.failures -= int(o & outcomeFailed)
	w.totals.slow -= int(o&outcomeSlow) >> 1
}

func (w *outcomeWindow) addTimed(now int64, failed, slow bool) windowTotals {
	second := now / int64(time.Second)
	// Expire buckets older than the window (any bucket not in
	// (second-size, second]).
	for i := 0; second != w.lastSecond && i < len(w.buckets); i++ {
		bk := &w.buckets[i]
		if bk.second >= 0 && bk.second <= second-int64(len(w.buckets)) {
			w.totals.calls -= bk.calls
			w.totals.failures -= bk.failures
			w.totals.slow -= bk.slow
			*bk = timeBucket{second: -1}
		}
	}
	w.lastSecond = second
	bk := &w.buckets[second%int64(len(w.buckets))]
	bk.second = second
	bk.calls++
	w.totals.calls++
	if failed {
		bk.failures++
		w.totals.failures++
	}
	if slow {
		bk.slow++
		w.totals.slow++
	}
	return w.totals
}
