package depguard

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/resilience"
)

// Stream puts the order stream behind its guard (OrderStream: a circuit
// breaker, an adaptive concurrency limit and a bulkhead): when JetStream
// is slow or down, placements fail fast (their reservations undone)
// instead of piling up waiting for acks.
//
// The adaptive limit (a gradient limiter against the probed latency of
// publishes that did not queue, resilience.Probed) keeps the publishes in
// flight near what the stream serves at once: when the stream slows down,
// the admitted placements do not queue behind each other and the excess is
// refused at once with 503 and Retry-After (after the reservation, which
// is undone). The bulkhead is only a hard bound on goroutines parked on
// acks.
//
// While the CPU is saturated (Config.Saturated, resilience.CPUSaturation)
// the limit still holds but learns only from publishes admitted with half
// of it or more in flight (the rest are ignored): publish latency then
// rises with the CPU's queue, not the stream's, and shrinking the limit
// would refuse placements of a healthy sale after their reservation,
// wasting the work already done; the HTTP admission limit sheds that
// overload before decoding. Publishes crowding the limit while another
// process takes the CPU (this one's goroutines are not queuing for it:
// Config.Queued) are queuing at the stream as well: a slow stream on a
// busy host still cuts it. (Letting publishes through the limit
// while the CPU is saturated was tried: with a slowed stream on a busy
// machine they queued at the stream in bursts.)
type Stream struct {
	next  order.Stream
	guard *Guard
}

var (
	_ order.Stream      = (*Stream)(nil)
	_ order.TimedStream = (*Stream)(nil)
)

// Errors of [Stream.Enqueue] for a publish refused by the guard: it never
// reached the stream, so it is certainly not enqueued.
var (
	ErrStreamBreakerOpen = fmt.Errorf("order stream circuit breaker is open: %w", order.ErrNotEnqueued)
	ErrStreamBusy        = fmt.Errorf("too many placements waiting on the order stream: %w", order.ErrNotEnqueued)
)

// NewStream returns next behind g, the OrderStream guard (see
// [StreamLimits] for its settings).
func NewStream(next order.Stream, g *Guard) *Stream { return &Stream{next: next, guard: g} }

// Guard returns the stream's guard.
func (s *Stream) Guard() *Guard { return s.guard }

// Enqueue implements order.Stream. A call refused by the breaker, the
// limit or the bulkhead returns ErrStreamBreakerOpen or ErrStreamBusy.
func (s *Stream) Enqueue(ctx context.Context, e order.Placed) error {
	return streamErr(s.guard.do(ctx, "order_stream.enqueue", func(ctx context.Context) error { return s.next.Enqueue(ctx, e) }))
}

// EnqueueWithin implements order.TimedStream (order.EnqueueWithin on the
// stream it wraps).
func (s *Stream) EnqueueWithin(ctx context.Context, e order.Placed, d time.Duration) error {
	return streamErr(s.guard.do(ctx, "order_stream.enqueue", func(ctx context.Context) error {
		return order.EnqueueWithin(ctx, s.next, e, d)
	}))
}

func streamErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, resilience.ErrBreakerOpen):
		return ErrStreamBreakerOpen
	case errors.Is(err, resilience.ErrShed), errors.Is(err, resilience.ErrBulkheadFull):
		return ErrStreamBusy
	}
	return err
}
