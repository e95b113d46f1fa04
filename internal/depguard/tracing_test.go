package depguard_test

import (
	"context"
	"errors"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/spikehq/spike/internal/depguard"
	"github.com/spikehq/spike/internal/domain/notify"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/resilience"
)

// traced turns the guards' tracing on for the test, into an in-memory
// exporter. Not parallel: the guards' tracer is process-wide.
func traced(t *testing.T) *tracetest.InMemoryExporter {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	depguard.Trace(tp)
	t.Cleanup(func() { depguard.Trace(nil); _ = tp.Shutdown(context.Background()) })
	return exp
}

func attr(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return ""
}

// TestGuardSpans: a guarded call is a child span of the caller's, named
// after the dependency, with its outcome; a refused call's span says why.
func TestGuardSpans(t *testing.T) {
	exp := traced(t)
	tp := sdktrace.NewTracerProvider()
	ctx, parent := tp.Tracer("test").Start(context.Background(), "request")

	g := depguard.New(depguard.Payments, depguard.Config{})
	if err := g.Do(ctx, func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := g.Do(ctx, func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Do = %v, want boom", err)
	}
	g.Breaker().ForceOpen()
	if err := g.Do(ctx, func(context.Context) error { return nil }); !errors.Is(err, resilience.ErrBreakerOpen) {
		t.Fatalf("Do = %v, want breaker open", err)
	}
	parent.End()

	spans := exp.GetSpans()
	want := []string{"ok", "error", "breaker_open"}
	if len(spans) != len(want) {
		t.Fatalf("%d spans, want %d: %+v", len(spans), len(want), spans)
	}
	for i, s := range spans {
		if s.Name != "payments" || attr(s, "spike.dependency") != "payments" || attr(s, "spike.outcome") != want[i] {
			t.Errorf("span %d: %s dependency=%q outcome=%q, want payments payments %q", i, s.Name, attr(s, "spike.dependency"), attr(s, "spike.outcome"), want[i])
		}
		if s.Parent.SpanID() != parent.SpanContext().SpanID() || s.SpanContext.TraceID() != parent.SpanContext().TraceID() {
			t.Errorf("span %d is not a child of the caller's span", i)
		}
	}
}

// insertStore counts inserted orders.
type insertStore struct {
	order.Store
	n int
}

func (s *insertStore) InsertOrders(_ context.Context, orders []order.Order) error {
	s.n += len(orders)
	return nil
}

// TestInsertOrdersSpan: a persisted batch is one span with its count.
func TestInsertOrdersSpan(t *testing.T) {
	exp := traced(t)
	store := depguard.NewOrderStore(&insertStore{}, depguard.OrderStoreConfig{})
	if err := store.InsertOrders(context.Background(), make([]order.Order, 3)); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Name != "order_writes.insert" || attr(spans[0], "spike.orders") != "3" || attr(spans[0], "spike.outcome") != "ok" {
		t.Fatalf("spans = %+v, want one order_writes.insert with spike.orders=3", spans)
	}
}

// TestNoTracer: without Trace, a guarded call makes no span and the
// in-process reserver is returned unwrapped.
func TestNoTracer(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	ctx, parent := tp.Tracer("test").Start(context.Background(), "request")
	g := depguard.New(depguard.Payments, depguard.Config{})
	_ = g.Do(ctx, func(context.Context) error { return nil })
	parent.End()
	if spans := exp.GetSpans(); len(spans) != 1 {
		t.Fatalf("%d spans, want the caller's only", len(spans))
	}
}

// BenchmarkDoTracing: the cost of a guarded call's span with tracing off,
// and on with the call's trace not sampled (99 % of them at 1 %).
func BenchmarkDoTracing(b *testing.B) {
	g := depguard.New(depguard.Payments, depguard.Config{})
	call := func(context.Context) error { return nil }
	b.Run("off", func(b *testing.B) {
		for b.Loop() {
			_ = g.Do(context.Background(), call)
		}
	})
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	b.Run("unsampled_root", func(b *testing.B) {
		depguard.Trace(tp)
		defer depguard.Trace(nil)
		for b.Loop() {
			_ = g.Do(context.Background(), call)
		}
	})
	b.Run("unsampled_request", func(b *testing.B) {
		ctx, span := tp.Tracer("test").Start(context.Background(), "request")
		defer span.End()
		depguard.Trace(tp)
		defer depguard.Trace(nil)
		for b.Loop() {
			_ = g.Do(ctx, call)
		}
	})
}

// sentNotifications is a notification provider that accepts everything.
type sentNotifications struct{ n int }

func (s *sentNotifications) Send(context.Context, notify.Notification) error { s.n++; return nil }

// TestNotificationSpans: with tracing on, each send is a notifications
// span; off, the provider is returned as it is.
func TestNotificationSpans(t *testing.T) {
	p := &sentNotifications{}
	if depguard.TraceNotifications(p) != notify.Provider(p) {
		t.Fatal("without tracing the provider was wrapped")
	}
	exp := traced(t)
	if err := depguard.TraceNotifications(p).Send(context.Background(), notify.Notification{}); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	if p.n != 1 || len(spans) != 1 || spans[0].Name != "notifications" || attr(spans[0], "spike.outcome") != "ok" {
		t.Fatalf("sent %d, spans %+v; want one notifications span", p.n, spans)
	}
}
