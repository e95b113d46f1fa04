package resilience

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Budget derives the context for one hop of a call chain, so that timeouts
// form a funnel: each hop gets min(maxHop, remaining-margin), where remaining is
// the time left before ctx's deadline and margin is kept back for the caller
// to handle the result or the failure. A zero or negative maxHop means no cap
// beyond the funnel; without a deadline on ctx the hop gets maxHop (or no
// deadline if maxHop is also zero). If nothing is left the returned context is
// already done; its cause (see context.Cause) is ErrTimeout.
func Budget(ctx context.Context, maxHop, margin time.Duration) (context.Context, context.CancelFunc) {
	d, bounded := maxHop, maxHop > 0
	if deadline, ok := ctx.Deadline(); ok {
		remaining := time.Until(deadline) - margin
		if !bounded || remaining < d {
			d, bounded = remaining, true
		}
	}
	if !bounded {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, d, ErrTimeout)
}

// Timeout is a [Policy] that gives each call at most a fixed time, capped by
// the caller's own deadline. The call must honour its context: Timeout does
// not abandon a call that ignores cancellation.
type Timeout struct {
	d time.Duration
}

// NewTimeout returns a Timeout policy of d.
func NewTimeout(d time.Duration) Timeout { return Timeout{d} }

// Do calls fn with a context that expires after the timeout. If fn fails
// because the timeout expired (and not the caller's own context), the error
// wraps ErrTimeout and fn's error, so it matches both ErrTimeout and
// context.DeadlineExceeded.
func (t Timeout) Do(ctx context.Context, fn func(context.Context) error) error {
	hop, cancel := context.WithTimeoutCause(ctx, t.d, ErrTimeout)
	defer cancel()
	err := fn(hop)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(hop), ErrTimeout) && !errors.Is(err, ErrTimeout) {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return err
}
