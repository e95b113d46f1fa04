package resilience

import "time"

// clock measures monotonic nanoseconds since it was created. With a nil now
// func it uses the runtime's monotonic clock (time.Since takes a fast path
// that skips reading the wall clock); tests inject a fake now.
type clock struct {
	now   func() time.Time
	epoch time.Time
}

func newClock(now func() time.Time) clock {
	if now == nil {
		return clock{epoch: time.Now()}
	}
	return clock{now: now, epoch: now()}
}

// nanos returns the time since the clock's epoch in nanoseconds.
func (c *clock) nanos() int64 {
	if c.now == nil {
		return int64(time.Since(c.epoch))
	}
	return int64(c.now().Sub(c.epoch))
}

// durationUntilDeadline returns how long until ctx's deadline and whether it
// has one. Deadlines are always real (wall or synctest) time.
type deadliner interface {
	Deadline() (time.Time, bool)
}

func untilDeadline(ctx deadliner) (time.Duration, bool) {
	d, ok := ctx.Deadline()
	if !ok {
		return 0, false
	}
	return time.Until(d), true
}

// sleep waits for d or until ctx is done, returning ctx's error in that case.
func sleep(ctx interface {
	Done() <-chan struct{}
	Err() error
}, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
