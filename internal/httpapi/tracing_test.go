package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/httpapi"
)

// brokenCatalog fails every read with an error nobody mapped: a 500, and
// a request-scoped error log.
type brokenCatalog struct{ hungCatalog }

func (brokenCatalog) Product(context.Context, string) (catalog.Product, error) {
	return catalog.Product{}, errors.New("disk on fire")
}

const (
	callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpan  = "00f067aa0ba902b7"
)

// tracedServer serves a broken catalogue, tracing into an in-memory
// exporter (every trace sampled) when traced, and logging JSON into log.
func tracedServer(traced bool, log *bytes.Buffer) (*httpapi.Server, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	cfg := httpapi.Config{
		Catalog:  catalog.NewService(brokenCatalog{}),
		Auth:     httpapi.NewAuthenticator(testSecret),
		Registry: prometheus.NewRegistry(),
		Logger:   slog.New(httpapi.TraceLogHandler(slog.NewJSONHandler(log, nil))),
	}
	if traced {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
		cfg.Tracer = tp.Tracer(httpapi.TracerName)
	}
	return httpapi.New(cfg), exp
}

// logged returns the JSON log lines of buf.
func logged(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

// TestRequestSpan: a request is a server span named by its route that
// continues the caller's traceparent, records its status, and the error
// logged while serving it carries its trace and span ids.
func TestRequestSpan(t *testing.T) {
	var log bytes.Buffer
	srv, exp := tracedServer(true, &log)
	req := httptest.NewRequest("GET", "/v1/products/sku-1", nil)
	req.Header.Set("traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	if rec.Code != 500 {
		t.Fatalf("status %d %s, want 500", rec.Code, rec.Body)
	}

	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1: %+v", len(spans), spans)
	}
	s := spans[0]
	if s.Name != "GET /v1/products/{sku}" || s.SpanContext.TraceID().String() != callerTrace || s.Parent.SpanID().String() != callerSpan {
		t.Errorf("span %q trace %s parent %s, want GET /v1/products/{sku} in trace %s under %s", s.Name, s.SpanContext.TraceID(), s.Parent.SpanID(), callerTrace, callerSpan)
	}
	if got := attr(s, "http.response.status_code"); got != "500" {
		t.Errorf("http.response.status_code = %q, want 500", got)
	}

	lines := logged(t, &log)
	if len(lines) != 1 || lines[0]["msg"] != "request failed" {
		t.Fatalf("logs = %v, want one request failed", lines)
	}
	if lines[0]["trace_id"] != callerTrace || lines[0]["span_id"] != s.SpanContext.SpanID().String() {
		t.Errorf("log trace_id=%v span_id=%v, want %s %s", lines[0]["trace_id"], lines[0]["span_id"], callerTrace, s.SpanContext.SpanID())
	}
}

// TestNoTracer: without a tracer a request makes no span and its logs no
// trace ids, traceparent or not.
func TestNoTracer(t *testing.T) {
	var log bytes.Buffer
	srv, exp := tracedServer(false, &log)
	req := httptest.NewRequest("GET", "/v1/products/sku-1", nil)
	req.Header.Set("traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
	srv.ServeHTTP(httptest.NewRecorder(), req)
	if n := len(exp.GetSpans()); n != 0 {
		t.Errorf("%d spans, want none", n)
	}
	for _, l := range logged(t, &log) {
		if _, ok := l["trace_id"]; ok {
			t.Errorf("log line %v has a trace id", l)
		}
	}
}

func attr(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return ""
}

// BenchmarkTracedRequest: what the server span costs a cheap request
// (GET /healthz) with tracing off and on at 1 % sampling.
func BenchmarkTracedRequest(b *testing.B) {
	for _, tc := range []struct {
		name  string
		ratio float64
	}{{"off", -1}, {"ratio_0.01", 0.01}} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := httpapi.Config{Auth: httpapi.NewAuthenticator(testSecret), Registry: prometheus.NewRegistry()}
			if tc.ratio >= 0 {
				tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(tc.ratio))),
					sdktrace.WithSpanProcessor(sdktrace.NewBatchSpanProcessor(tracetest.NewNoopExporter())))
				defer tp.Shutdown(context.Background())
				cfg.Tracer = tp.Tracer(httpapi.TracerName)
			}
			srv := httpapi.New(cfg)
			req := httptest.NewRequest("GET", "/healthz", nil)
			b.ReportAllocs()
			for b.Loop() {
				srv.ServeHTTP(httptest.NewRecorder(), req)
			}
		})
	}
}
