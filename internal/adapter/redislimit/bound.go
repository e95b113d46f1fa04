package redislimit

import (
	"context"
	"time"

	"github.com/spikehq/spike/resilience"
)

// For returns l bound to one key, as a [resilience.Limiter]: a global limit
// shared by all instances (one key such as "all"), or a per-sale limit
// kept for the sale's lifetime. Calls without a context are bounded by
// [Config.Timeout] (and fall back locally on failure like the keyed calls);
// with DisableFallback, a Redis failure rejects.
func (l *Limiter) For(key string) *Bound { return &Bound{l: l, key: key} }

// Bound is a [Limiter] bound to one key; it implements [resilience.Limiter]
// and is safe for concurrent use.
type Bound struct {
	l   *Limiter
	key string
}

var _ resilience.Limiter = (*Bound)(nil)

// Allow reports whether one event may happen now, consuming it if so.
func (b *Bound) Allow() bool { return b.AllowN(1) }

// AllowN reports whether n events may happen now, consuming them if so.
func (b *Bound) AllowN(n int) bool {
	ok, _, err := b.l.AllowN(context.Background(), b.key, n)
	return ok && err == nil
}

// Delay returns how long until one more event would be allowed: zero if
// now, negative if never. On a Redis failure with DisableFallback it
// returns the limiter's Timeout as a guess.
func (b *Bound) Delay() time.Duration {
	d, err := b.l.Delay(context.Background(), b.key)
	if err != nil {
		return b.l.timeout
	}
	return d
}

// Wait blocks until one event may happen; see [Limiter.Wait].
func (b *Bound) Wait(ctx context.Context) error { return b.l.Wait(ctx, b.key) }
