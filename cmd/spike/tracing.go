package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/spikehq/spike/internal/depguard"
	"github.com/spikehq/spike/internal/httpapi"
)

// Traces (docs/observability.md): with otel.endpoint set, requests, the
// placement path's calls, payments, order persistence and every guarded
// dependency call are spans, sampled at otel.sample_ratio and exported by
// OTLP/HTTP. Without it nothing is traced and the hot path pays one nil
// check per span it would have made.

// OtelConfig configures tracing.
type OtelConfig struct {
	// Endpoint is the OTLP/HTTP collector's URL, e.g.
	// http://127.0.0.1:4318 (the path /v1/traces is added when the URL
	// has none); empty: tracing is off.
	Endpoint string `yaml:"endpoint"`
	// SampleRatio is the share of new traces sampled (0 to 1); a request
	// that comes with a traceparent follows its caller's decision.
	SampleRatio float64 `yaml:"sample_ratio"`
	// ServiceName is the service.name of the spans' resource.
	ServiceName string `yaml:"service_name"`
}

// defaultOtel is otel's defaults: off, 1 % of traces once an endpoint is set.
var defaultOtel = OtelConfig{SampleRatio: 0.01, ServiceName: "spike"}

// validate checks the otel settings.
func (o OtelConfig) validate() error {
	if !rate(o.SampleRatio) {
		return fmt.Errorf("config otel.sample_ratio: %v must be between 0 and 1", o.SampleRatio)
	}
	if o.Endpoint == "" {
		return nil
	}
	if u, err := url.Parse(o.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("config otel.endpoint: %q must be an http:// or https:// URL of an OTLP/HTTP collector", o.Endpoint)
	}
	return nil
}

// exportURL is the endpoint with the OTLP traces path when it has none.
func (o OtelConfig) exportURL() string {
	u, _ := url.Parse(o.Endpoint) // validate checked it
	if strings.Trim(u.Path, "/") == "" {
		u.Path = "/v1/traces"
	}
	return u.String()
}

// tracerProvider returns the provider exporting to o.Endpoint and the
// function that flushes and stops it, or nil when tracing is off.
func (o OtelConfig) tracerProvider() (*sdktrace.TracerProvider, error) {
	if o.Endpoint == "" {
		return nil, nil
	}
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(o.exportURL()), otlptracehttp.WithTimeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("otel.endpoint: %w", err)
	}
	name := o.ServiceName
	if name == "" {
		name = defaultOtel.ServiceName
	}
	res := resource.NewSchemaless(attribute.String("service.name", name), attribute.String("service.version", versionString()))
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(o.SampleRatio))),
	), nil
}

// shutdownTracing flushes the spans still buffered (bounded) and stops tp.
func shutdownTracing(tp trace.TracerProvider) {
	if p, ok := tp.(interface{ Shutdown(context.Context) error }); ok {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	}
}

// startTracing builds the app's tracer provider (cfg.tracer in tests, else
// otel's exporter, else none) and makes the guards trace into it.
func (a *app) startTracing(cfg Config) error {
	tp := cfg.tracer
	if tp == nil {
		p, err := cfg.Otel.tracerProvider()
		if err != nil {
			return err
		}
		if p == nil {
			return nil
		}
		tp, a.stopTracing = p, func() { shutdownTracing(p) }
	}
	a.tracer = tp
	depguard.Trace(tp)
	return nil
}

// closeTracing stops the guards' tracing and flushes the exporter.
func (a *app) closeTracing() {
	if a.tracer == nil {
		return
	}
	depguard.Trace(nil)
	if a.stopTracing != nil {
		a.stopTracing()
	}
}

// apiTracer is the API's tracer, nil when tracing is off.
func (a *app) apiTracer() trace.Tracer {
	if a.tracer == nil {
		return nil
	}
	return a.tracer.Tracer(httpapi.TracerName)
}
