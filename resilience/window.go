package resilience

import (
	"context"
	"math"
	"sync"
	"time"
)

// WindowConfig configures the window-based limiters: [FixedWindow],
// [SlidingLog] and [SlidingWindow].
type WindowConfig struct {
	// Limit is the most events allowed per Window. Zero or negative denies
	// everything.
	Limit int
	// Window is the window length; zero means one second.
	Window time.Duration
	// Now returns the current time; nil means the real monotonic clock.
	Now func() time.Time
}

func (c WindowConfig) window() int64 {
	if c.Window <= 0 {
		return int64(time.Second)
	}
	return int64(c.Window)
}

// tryFunc either consumes n events and returns ok, or returns how long to wait
// before trying again; a negative delay means it can never succeed.
type tryFunc func(n int, consume bool) (ok bool, delay int64)

// waitWindow implements Wait for the window limiters: retry after the delay
// the limiter reports. Unlike the buckets it does not reserve, so waiters are
// not served strictly in call order.
func waitWindow(ctx context.Context, try tryFunc) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		ok, delay := try(1, true)
		if ok {
			return nil
		}
		if delay < 0 {
			return errExceedsCapacity
		}
		if left, has := untilDeadline(ctx); has && time.Duration(delay) > left {
			return errWaitPastDeadline
		}
		if err := sleep(ctx, time.Duration(delay)); err != nil {
			return err
		}
	}
}

func delayOf(try tryFunc) time.Duration {
	if ok, delay := try(1, false); !ok {
		return time.Duration(delay)
	}
	return 0
}

// FixedWindow is a fixed-window counter: at most Limit events per aligned
// window. It is the cheapest limiter but allows up to 2×Limit events across a
// window boundary.
type FixedWindow struct {
	mu     sync.Mutex
	clock  clock
	limit  int
	window int64
	start  int64 // start of the current window, ns since epoch
	count  int
}

// NewFixedWindow returns a fixed-window counter.
func NewFixedWindow(cfg WindowConfig) *FixedWindow {
	return &FixedWindow{clock: newClock(cfg.Now), limit: cfg.Limit, window: cfg.window()}
}

// SetLimit changes the limit per window; it is safe for concurrent use.
func (w *FixedWindow) SetLimit(limit int) {
	w.mu.Lock()
	w.limit = limit
	w.mu.Unlock()
}

// Allow reports whether one event may happen now.
func (w *FixedWindow) Allow() bool { return w.AllowN(1) }

// AllowN reports whether n events may happen now, counting them if so.
func (w *FixedWindow) AllowN(n int) bool {
	ok, _ := w.try(n, true)
	return ok
}

// Delay returns how long until one more event would be allowed (zero if
// now, negative if never), without consuming anything: use it for
// Retry-After.
func (w *FixedWindow) Delay() time.Duration { return delayOf(w.try) }

// Wait blocks until an event may happen; see [Limiter].
func (w *FixedWindow) Wait(ctx context.Context) error { return waitWindow(ctx, w.try) }

func (w *FixedWindow) try(n int, consume bool) (bool, int64) {
	now := w.clock.nanos()
	w.mu.Lock()
	defer w.mu.Unlock()
	if n > w.limit {
		return n <= 0, -1
	}
	if elapsed := now - w.start; elapsed >= w.window {
		w.start = now - elapsed%w.window
		w.count = 0
	}
	if w.count+n > w.limit {
		return false, w.start + w.window - now
	}
	if consume {
		w.count += n
	}
	return true, 0
}

// SlidingLog is a sliding-window log: it remembers the time of each of the
// last Limit events and allows an event if fewer than Limit happened in the
// past Window. It is exact, and uses memory proportional to Limit.
type SlidingLog struct {
	mu     sync.Mutex
	clock  clock
	window int64
	times  []int64 // ring buffer of event times, capacity = limit
	head   int     // index of the oldest event
	size   int
}

// NewSlidingLog returns a sliding-window log limiter.
func NewSlidingLog(cfg WindowConfig) *SlidingLog {
	return &SlidingLog{clock: newClock(cfg.Now), window: cfg.window(), times: make([]int64, max(cfg.Limit, 0))}
}

// SetLimit changes the limit per window, keeping the most recent events; it
// is safe for concurrent use but allocates a new log.
func (l *SlidingLog) SetLimit(limit int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	limit = max(limit, 0)
	times := make([]int64, limit)
	keep := min(l.size, limit)
	for i := range keep {
		times[i] = l.times[(l.head+l.size-keep+i)%len(l.times)]
	}
	l.times, l.head, l.size = times, 0, keep
}

// Allow reports whether one event may happen now.
func (l *SlidingLog) Allow() bool { return l.AllowN(1) }

// AllowN reports whether n events may happen now, logging them if so.
func (l *SlidingLog) AllowN(n int) bool {
	ok, _ := l.try(n, true)
	return ok
}

// Delay returns how long until one more event would be allowed (zero if
// now, negative if never), without consuming anything: use it for
// Retry-After.
func (l *SlidingLog) Delay() time.Duration { return delayOf(l.try) }

// Wait blocks until an event may happen; see [Limiter].
func (l *SlidingLog) Wait(ctx context.Context) error { return waitWindow(ctx, l.try) }

func (l *SlidingLog) try(n int, consume bool) (bool, int64) {
	now := l.clock.nanos()
	l.mu.Lock()
	defer l.mu.Unlock()
	limit := len(l.times)
	if n <= 0 || n > limit {
		return n <= 0, -1
	}
	// Forget events that left the window (older than now-window).
	for l.size > 0 && l.times[l.head] <= now-l.window {
		l.head = (l.head + 1) % limit
		l.size--
	}
	if l.size+n > limit {
		// The event that must expire before n more fit.
		oldest := l.times[(l.head+l.size+n-limit-1)%limit]
		return false, oldest + l.window - now
	}
	for i := 0; consume && i < n; i++ {
		l.times[(l.head+l.size)%limit] = now
		l.size++
	}
	return true, 0
}

// SlidingWindow is a sliding-window counter: it keeps counts for the current
// and previous fixed windows and weights the previous one by how much of it
// still overlaps the sliding window. It approximates [SlidingLog] in constant
// memory.
type SlidingWindow struct {
	mu     sync.Mutex
	clock  clock
	limit  int
	window int64
	start  int64 // start of the current window
	prev   int
	curr   int
}

// NewSlidingWindow returns a sliding-window counter.
func NewSlidingWindow(cfg WindowConfig) *SlidingWindow {
	return &SlidingWindow{clock: newClock(cfg.Now), limit: cfg.Limit, window: cfg.window()}
}

// SetLimit changes the limit per window; it is safe for concurrent use.
func (w *SlidingWindow) SetLimit(limit int) {
	w.mu.Lock()
	w.limit = limit
	w.mu.Unlock()
}

// Allow reports whether one event may happen now.
func (w *SlidingWindow) Allow() bool { return w.AllowN(1) }

// AllowN reports whether n events may happen now, counting them if so.
func (w *SlidingWindow) AllowN(n int) bool {
	ok, _ := w.try(n, true)
	return ok
}

// Delay returns how long until one more event would be allowed (zero if
// now, negative if never), without consuming anything: use it for
// Retry-After.
func (w *SlidingWindow) Delay() time.Duration { return delayOf(w.try) }

// Wait blocks until an event may happen; see [Limiter].
func (w *SlidingWindow) Wait(ctx context.Context) error { return waitWindow(ctx, w.try) }

func (w *SlidingWindow) try(n int, consume bool) (bool, int64) {
	now := w.clock.nanos()
	w.mu.Lock()
	defer w.mu.Unlock()
	if n <= 0 || n > w.limit {
		return n <= 0, -1
	}
	switch windows := (now - w.start) / w.window; {
	case windows == 1:
		w.prev, w.curr = w.curr, 0
		w.start += w.window
	case windows > 1:
		w.prev, w.curr = 0, 0
		w.start += windows * w.window
	}
	elapsed := now - w.start
	// The previous window still covers (window-elapsed)/window of the
	// sliding window ending now.
	weighted := float64(w.prev) * float64(w.window-elapsed) / float64(w.window)
	if weighted+float64(w.curr+n) <= float64(w.limit) {
		if consume {
			w.curr += n
		}
		return true, 0
	}
	// Solve prev*(window-e)/window <= limit-curr-n for the elapsed time e,
	// in this window if curr leaves room, else in the next one (prev=curr).
	free := float64(w.limit - w.curr - n)
	if free >= 0 {
		e := math.Ceil(float64(w.window) * (1 - free/float64(w.prev)))
		return false, int64(e) - elapsed
	}
	e := math.Ceil(float64(w.window) * (1 - float64(w.limit-n)/float64(w.curr)))
	return false, w.start + w.window - now + int64(e)
}
