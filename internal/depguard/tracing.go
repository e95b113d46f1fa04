package depguard

import (
	"context"
	"errors"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/notify"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/resilience"
)

// tracer holds the tracer of the guards' spans; nil (the default) traces
// nothing, at the cost of one atomic load per call.
var tracer atomic.Pointer[trace.Tracer]

// TracerName is the instrumentation scope of the guards' spans.
const TracerName = "github.com/spikehq/spike/internal/depguard"

// Trace makes every guarded call a span of tp's (named after the
// dependency, or dependency.operation for the order path's wrappers, with
// its outcome); nil stops tracing. It is process-wide: a server calls it
// once at start-up, before the first call.
func Trace(tp trace.TracerProvider) {
	if tp == nil {
		tracer.Store(nil)
		return
	}
	t := tp.Tracer(TracerName)
	tracer.Store(&t)
}

// Attribute keys of the guards' spans.
const (
	attrDependency = attribute.Key("spike.dependency")
	attrOutcome    = attribute.Key("spike.outcome")
	attrOrders     = attribute.Key("spike.orders")
)

// startSpan starts a span named name when tracing is on and the caller's
// trace, if any, is sampled; otherwise it returns ctx and a nil span.
func startSpan(ctx context.Context, name string, dep Dependency) (context.Context, trace.Span) {
	t := tracer.Load()
	if t == nil {
		return ctx, nil
	}
	// Spike samples by the parent (sdktrace.ParentBased): the child of a
	// span not sampled would not be either, so it is not made at all.
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() && !sc.IsSampled() {
		return ctx, nil
	}
	ctx, span := (*t).Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() && dep != "" {
		span.SetAttributes(attrDependency.String(string(dep)))
	}
	return ctx, span
}

// endSpan records err's outcome on span and ends it; a nil span is a
// call made without tracing.
func endSpan(span trace.Span, err error, answer bool) {
	if span == nil {
		return
	}
	if span.IsRecording() {
		span.SetAttributes(attrOutcome.String(outcome(err, answer)))
		if err != nil && !answer {
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
}

// outcome names what happened to a guarded call, for its span.
func outcome(err error, answer bool) string {
	switch {
	case err == nil:
		return "ok"
	case answer:
		return "answer"
	case errors.Is(err, resilience.ErrBulkheadFull):
		return "bulkhead_full"
	case errors.Is(err, resilience.ErrBreakerOpen):
		return "breaker_open"
	case errors.Is(err, resilience.ErrShed):
		return "shed"
	case errors.Is(err, resilience.ErrTimeout):
		return "timeout"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	}
	return "error"
}

// TraceReserver returns r with a span around each of its calls
// (local_stock.reserve, .confirm, .release) when tracing is on, else r
// itself: for the in-process counters, which have no guard (and so no
// guard's span) of their own.
func TraceReserver(r order.Reserver) order.Reserver {
	if tracer.Load() == nil {
		return r
	}
	return tracedReserver{next: r}
}

type tracedReserver struct{ next order.Reserver }

func (t tracedReserver) Reserve(ctx context.Context, r inventory.Request) (inventory.Reservation, bool, error) {
	ctx, span := startSpan(ctx, "local_stock.reserve", "")
	res, replay, err := t.next.Reserve(ctx, r)
	endSpan(span, err, false)
	return res, replay, err
}

func (t tracedReserver) Confirm(ctx context.Context, res inventory.Reservation) error {
	ctx, span := startSpan(ctx, "local_stock.confirm", "")
	err := t.next.Confirm(ctx, res)
	endSpan(span, err, false)
	return err
}

func (t tracedReserver) Release(ctx context.Context, res inventory.Reservation) error {
	ctx, span := startSpan(ctx, "local_stock.release", "")
	err := t.next.Release(ctx, res)
	endSpan(span, err, false)
	return err
}

// TraceNotifications returns p with a span named notifications around
// each send when tracing is on, else p itself: the notifier guards its
// sends with a breaker of its own, not a [Guard].
func TraceNotifications(p notify.Provider) notify.Provider {
	if tracer.Load() == nil {
		return p
	}
	return tracedNotifications{next: p}
}

type tracedNotifications struct{ next notify.Provider }

func (t tracedNotifications) Send(ctx context.Context, n notify.Notification) error {
	ctx, span := startSpan(ctx, string(Notifications), Notifications)
	err := t.next.Send(ctx, n)
	endSpan(span, err, false)
	return err
}

// CloseIdleConnections passes the notifier's call on to the provider.
func (t tracedNotifications) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
