package httpapi

import (
	"context"
	"log/slog"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// TracerName is the instrumentation scope of the API's spans.
const TracerName = "github.com/spikehq/spike/internal/httpapi"

// traceContext reads and writes W3C traceparent and tracestate headers.
var traceContext propagation.TraceContext

// traced wraps a route's handler in a server span named by its pattern,
// continuing the caller's trace from its traceparent header. Without a
// tracer it returns h itself: the hot path pays nothing.
func (s *Server) traced(pattern string, h http.HandlerFunc) http.HandlerFunc {
	if s.Tracer == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if r.Header.Get("traceparent") != "" {
			ctx = traceContext.Extract(ctx, propagation.HeaderCarrier(r.Header))
		}
		ctx, span := s.Tracer.Start(ctx, pattern, trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		if !span.IsRecording() {
			h(w, r.WithContext(ctx))
			return
		}
		span.SetAttributes(attribute.String("http.request.method", r.Method), attribute.String("http.route", pattern))
		rw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h(rw, r.WithContext(ctx))
		span.SetAttributes(attribute.Int("http.response.status_code", rw.status))
		if rw.status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(rw.status))
		}
	}
}

// TraceLogHandler returns h adding trace_id and span_id to the records
// logged with a context that holds a sampled span: the request-scoped
// logs (logged with InfoContext, ErrorContext...) then lead to their trace.
func TraceLogHandler(h slog.Handler) slog.Handler { return traceLogHandler{h} }

type traceLogHandler struct{ slog.Handler }

func (t traceLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return t.Handler.Handle(ctx, r)
}

func (t traceLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceLogHandler{t.Handler.WithAttrs(attrs)}
}

func (t traceLogHandler) WithGroup(name string) slog.Handler {
	return traceLogHandler{t.Handler.WithGroup(name)}
}
