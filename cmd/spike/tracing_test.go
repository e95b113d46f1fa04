package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestTraces runs the embedded app tracing into an in-memory exporter:
// a placement that comes with a traceparent is a server span of the
// caller's trace whose children are the reserve, the stream's enqueue
// (the guard's span) and the confirm; a payment start has the payments
// guard's span; the order's persistence is a batch span with its count.
func TestTraces(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Data = t.TempDir()
	cfg.tracer = tp
	a, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopApp(t, a) })
	c := newClient(t, a.addr, a.secret)
	c.SetupSale("sku-traces", "traces", 100, 1)

	const caller = "4bf92f3577b34da6a3ce929d0e0e4736"
	r, err := c.Do(context.Background(), "POST", "/v1/sales/traces/orders", c.Token(7, false), `{"quantity":1}`,
		map[string]string{"Idempotency-Key": "k1", "traceparent": "00-" + caller + "-00f067aa0ba902b7-01"})
	if err != nil || r.Status != 202 {
		t.Fatalf("placement: %v %d %s", err, r.Status, r.Body)
	}
	var placed struct {
		OrderID string `json:"order_id"`
	}
	if err := json.Unmarshal(r.Body, &placed); err != nil {
		t.Fatal(err)
	}
	orderID := placed.OrderID

	var server tracetest.SpanStub
	children := map[string]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID().String() != caller {
			continue
		}
		if s.Name == "POST /v1/sales/{id}/orders" {
			server = s
		} else {
			children[s.Name] = s
		}
	}
	if !server.SpanContext.IsValid() || server.Parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Fatalf("no server span continuing the caller's trace; spans of the trace: %v", names(children))
	}
	for _, name := range []string{"local_stock.reserve", "order_stream.enqueue", "local_stock.confirm"} {
		s, ok := children[name]
		if !ok {
			t.Errorf("no %s span in the placement's trace; got %v", name, names(children))
			continue
		}
		if s.Parent.SpanID() != server.SpanContext.SpanID() {
			t.Errorf("%s is not a child of the server span", name)
		}
	}
	if s := children["order_stream.enqueue"]; attrOf(s, "spike.dependency") != "order_stream" || attrOf(s, "spike.outcome") != "ok" {
		t.Errorf("enqueue span dependency=%q outcome=%q, want order_stream ok", attrOf(s, "spike.dependency"), attrOf(s, "spike.outcome"))
	}

	// Persistence: a batch span with the orders it inserted, once the
	// worker has persisted the order (a generous bound, not a timing).
	waitSpan(t, exp, "order_writes.insert", func(s tracetest.SpanStub) bool { return attrOf(s, "spike.orders") != "" })

	// A payment start calls the provider behind the payments guard.
	if _, err := c.Pay(context.Background(), 7, orderID, "pay-1", ""); err != nil {
		t.Fatal(err)
	}
	waitSpan(t, exp, "payments", func(s tracetest.SpanStub) bool { return attrOf(s, "spike.dependency") == "payments" })
}

// waitSpan waits up to a minute for a span named name that satisfies ok.
func waitSpan(t *testing.T, exp *tracetest.InMemoryExporter, name string, ok func(tracetest.SpanStub) bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, s := range exp.GetSpans() {
			if s.Name == name && ok(s) {
				return
			}
		}
	}
	t.Errorf("no %s span", name)
}

func names(m map[string]tracetest.SpanStub) []string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	return out
}

func attrOf(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return ""
}

// TestOtelConfig: tracing is off by default (no provider, no exporter);
// otel.endpoint from the environment turns it on with the default ratio,
// and a bad endpoint or ratio is refused.
func TestOtelConfig(t *testing.T) {
	def := DefaultConfig()
	if tp, err := def.Otel.tracerProvider(); tp != nil || err != nil {
		t.Fatalf("default config: provider %v, %v; want none", tp, err)
	}
	var posts atomic.Int64
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" && r.URL.Path == "/v1/traces" {
			posts.Add(1)
		}
	}))
	defer sink.Close()
	env := map[string]string{"SPIKE_OTEL_ENDPOINT": sink.URL, "SPIKE_OTEL_SAMPLE_RATIO": "1"}
	cfg, err := newFlagSet("serve").load(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Otel.Endpoint != sink.URL || cfg.Otel.SampleRatio != 1 || cfg.Otel.ServiceName != "spike" {
		t.Fatalf("otel config = %+v", cfg.Otel)
	}
	tp, err := cfg.Otel.tracerProvider()
	if err != nil || tp == nil {
		t.Fatalf("provider %v, %v; want one", tp, err)
	}
	_, span := tp.Tracer("test").Start(context.Background(), "probe")
	span.End()
	if err := tp.Shutdown(context.Background()); err != nil { // flushes to the sink
		t.Fatal(err)
	}
	if posts.Load() == 0 {
		t.Error("the span was not exported to POST /v1/traces")
	}
	for _, bad := range []OtelConfig{{Endpoint: "127.0.0.1:4318", SampleRatio: 0.01}, {Endpoint: "ftp://x", SampleRatio: 0.01}, {SampleRatio: 2}} {
		if bad.validate() == nil {
			t.Errorf("%+v: accepted", bad)
		}
	}
}
