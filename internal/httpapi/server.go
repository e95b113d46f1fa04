// Package httpapi serves Spike's HTTP API (docs/api.md): routes,
// authentication, request decoding and the one table that maps domain
// errors to statuses.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/dashboard"
	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/payment"
	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/internal/ledger"
	"github.com/spikehq/spike/internal/switches"
)

// MaxBodyBytes is the largest request body accepted.
const MaxBodyBytes = 1 << 20

// Probe is a dependency /readyz checks.
type Probe struct {
	Name  string
	Check func(ctx context.Context) error
}

// Config is what a Server serves.
type Config struct {
	Catalog *catalog.Service
	Sales   *sale.Service
	Orders  *order.Service
	// Lifecycle moves orders after the 202 (pay, cancel, ship, deliver,
	// refund); nil: those routes are not served.
	Lifecycle *order.Lifecycle
	// Payments starts payments and takes providers' webhooks; nil: the
	// payment routes are not served.
	Payments *payment.Service
	// Checkout maps URL patterns to providers' pages served by Spike (the
	// sandbox gateway's checkout page).
	Checkout map[string]http.Handler
	Auditor  *ledger.Auditor
	Auth     *Authenticator
	Probes   []Probe
	Registry *prometheus.Registry // metrics are registered here and served on /metrics
	Logger   *slog.Logger
	// Guards protect the placement path; nil means none.
	Guards *Guards
	// SwitchStore persists switch changes made through the admin API (the
	// config centre); nil means the switch endpoints are read-only.
	SwitchStore SwitchStore
	// TrustedProxies are the peers whose X-Forwarded-For names the client
	// for the per-IP limit (ParseTrustedProxies); from anyone else the
	// header is ignored.
	TrustedProxies []netip.Prefix
	// Metrics says how /metrics is served here.
	Metrics MetricsMode
	// AdminBudget bounds an admin request (catalogue and sale writes,
	// audits, switches): the top of the timeout funnel for calls that have
	// no guard of their own; past it they fail with 503. Buyers' routes are
	// bounded hop by hop instead (the placement's stock and stream budgets,
	// the order reads' guard, the caches' loads), without a timer per
	// request on the hot path. Zero means DefaultAdminBudget.
	AdminBudget time.Duration
	// Dashboard feeds the live sale dashboard at /dashboard; nil: it is
	// not served.
	Dashboard *dashboard.Sampler
	// Tracer makes each request a server span (tracing.go); nil traces
	// nothing.
	Tracer trace.Tracer
}

// MetricsMode says how the API's handler serves /metrics.
type MetricsMode int

// Metrics modes.
const (
	MetricsPublic MetricsMode = iota // anonymous, limited per IP
	MetricsAdmin                     // an admin token is required
	MetricsOff                       // not served here (see Server.MetricsHandler)
)

// SwitchStore stores a switch in the config centre and applies it.
type SwitchStore interface {
	Set(ctx context.Context, name, value string) error
}

// Server is the API's http.Handler.
type Server struct {
	Config
	adminBudget time.Duration
	log         *slog.Logger
	mux         *routeMux
	metrics     *metrics
	guard       *guardMetrics
	limits      *routeLimits
	readiness   readiness
	// place serves a placement whose sale id ServeHTTP found; nil: the
	// mux dispatches placements too.
	place func(w http.ResponseWriter, r *http.Request, id string)
	// hot answers the rejections a flash sale repeats (hotError).
	hot map[*spike.Error]*hotError
}

// New returns a Server.
func New(cfg Config) *Server {
	s := &Server{Config: cfg, log: cfg.Logger, mux: newRouteMux(), adminBudget: cfg.AdminBudget}
	if s.adminBudget <= 0 {
		s.adminBudget = DefaultAdminBudget
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	s.Registry = cfg.Registry
	s.metrics = newMetrics(cfg.Registry)
	s.hot = s.hotErrors()
	if s.Guards != nil {
		s.Guards.init()
	}
	s.guard = newGuardMetrics(cfg.Registry, s.Guards)
	for _, name := range limitGuards {
		s.guard.byGuard[name] = s.guard.rejected.WithLabelValues(name)
	}
	var board *switches.Board
	if s.Guards != nil {
		board = s.Guards.Switches
	}
	s.limits = newRouteLimits(board, cfg.TrustedProxies, s.guard.reject)
	s.routes()
	return s
}

func (s *Server) routes() {
	place := s.handleStatus(placementPattern, "place_order", s.placeOrder)
	if s.Tracer == nil { // with a tracer every route goes through the mux and its span
		s.place = place
	}
	// The cached product read is the other hot route: no status wrapper.
	s.handleStatus("GET /v1/products/{sku}", "get_product", s.anonymous(s.getProduct))
	s.handle("PATCH /v1/products/{sku}", "update_product", s.admin(s.updateProduct))
	s.handle("POST /v1/products", "create_product", s.admin(s.createProduct))
	s.handle("POST /v1/sales", "create_sale", s.admin(s.createSale))
	s.handle("GET /v1/sales/{id}", "get_sale", s.getSale)
	s.handle("GET /v1/orders/{id}", "get_order", s.buyer(s.getOrder))
	s.handle("GET /v1/orders", "list_orders", s.buyer(s.listOrders))
	s.handle("GET /v1/admin/audit", "audit", s.admin(func(w http.ResponseWriter, r *http.Request, _ Identity) error { return s.audit(w, r) }))
	s.handle("GET /healthz", "healthz", func(w http.ResponseWriter, r *http.Request) error {
		return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.handle("GET /readyz", "readyz", s.readyz)
	s.handle("GET /v1/admin/switches", "get_switches", s.admin(s.getSwitches))
	s.handle("PUT /v1/admin/switches/{name}", "put_switch", s.admin(s.putSwitch))
	s.lifecycleRoutes()
	s.handle("GET /openapi.json", "openapi", s.serveOpenAPI)
	if s.Dashboard != nil {
		s.dashboardRoutes()
	}
	s.metricsRoute()
	// Anything else gets the API's error shape, not the mux's plain text.
	s.mux.HandleFunc(catchAll, s.noRoute)
}

// handlerFunc is a handler that returns its error for writeError.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// statusHandler is a handler that reports the status it wrote, so that
// the route need not wrap the ResponseWriter to learn it; id is the path
// value the fast dispatch (placement) found, "" on other routes. When it
// returns an error, nothing was written and the route writes the error.
type statusHandler func(w http.ResponseWriter, r *http.Request, id string) (int, error)

func (s *Server) handle(pattern, route string, h handlerFunc) {
	h = s.limitAnonymous(route, h)
	s.handleStatus(pattern, route, func(w http.ResponseWriter, r *http.Request, _ string) (int, error) {
		rw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		err := h(rw, r)
		return rw.status, err
	})
}

// handleStatus serves pattern with h behind the route's guards (admission,
// body size) and metrics, and returns the route's handler without tracing
// for the fast dispatch.
func (s *Server) handleStatus(pattern, route string, h statusHandler) func(w http.ResponseWriter, r *http.Request, id string) {
	m := s.metrics.route(route)
	priority := routePriority(route)
	serve := func(w http.ResponseWriter, r *http.Request, id string) {
		// Shed first: a rejection must cost a small part of a placement.
		ticket, ok := s.Guards.admit(priority)
		if !ok {
			start := monoNow()
			s.guard.reject("admission")
			status := s.writeError(w, r, errOverloaded)
			m.observe(status, monoNow()-start)
			return
		}
		// The ticket measures the request's latency: one clock read when
		// it is taken and one when it is finished. Without admission the
		// route reads the clock itself.
		var start time.Duration
		if !ticket.Measures() {
			start = monoNow()
		}
		status, finished := http.StatusOK, false
		defer func() {
			if !finished { // h panicked
				s.Guards.finish(ticket, status)
			}
		}()
		var err error
		if r.ContentLength > MaxBodyBytes {
			err = errTooLarge
		} else {
			limitBody(w, r)
			status, err = h(w, r, id)
		}
		if err != nil {
			status = s.writeError(w, r, err)
		}
		finished = true
		d := s.Guards.finish(ticket, status)
		if !ticket.Measures() {
			d = monoNow() - start
		}
		m.observe(status, d)
	}
	s.mux.HandleFunc(pattern, s.traced(pattern, func(w http.ResponseWriter, r *http.Request) { serve(w, r, "") }))
	return serve
}

// epoch is the origin of monoNow.
var epoch = time.Now()

// monoNow reads the monotonic clock only (time.Now reads the wall clock
// too, which costs as much again).
func monoNow() time.Duration { return time.Since(epoch) }

// limitBody caps r's body at MaxBodyBytes. A body whose length was
// declared (and checked) needs no cap: net/http never reads past the
// declared length.
func limitBody(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > 0 || r.Body == nil || r.Body == http.NoBody {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
}

// placementPrefix and placementSuffix frame the placement route's path,
// which ServeHTTP dispatches without the mux.
const (
	placementPattern = "POST /v1/sales/{id}/orders"
	placementPrefix  = "/v1/sales/"
	placementSuffix  = "/orders"
)

// ServeHTTP implements http.Handler. Placements, the one route a flash
// sale hits by the hundred thousand, skip the mux's matching when the
// path is plainly theirs (what the mux would match the same way).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.place != nil && r.Method == http.MethodPost && r.URL.RawPath == "" {
		if id, ok := placementID(r.URL.Path); ok {
			r.Pattern = placementPattern
			s.place(w, r, id)
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

// placementID returns the sale id of a placement's path: a valid id
// that path cleaning leaves as it is.
func placementID(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, placementPrefix)
	if !ok {
		return "", false
	}
	id, ok := strings.CutSuffix(rest, placementSuffix)
	if !ok || id == "." || id == ".." || !spike.ValidID(id) {
		return "", false
	}
	return id, true
}

type identityHandler func(w http.ResponseWriter, r *http.Request, id Identity) error

func (s *Server) buyer(h identityHandler) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := s.Auth.Authenticate(r)
		if err != nil {
			// Refused tokens count as anonymous requests: guessing costs
			// the guesser's address its budget.
			if lerr := s.limits.allowIP(w, r); lerr != nil {
				return lerr
			}
			return err
		}
		if err := s.limits.allowCaller(w, id); err != nil {
			return err
		}
		return h(w, r, id)
	}
}

// DefaultAdminBudget is Config.AdminBudget's default: below the 30 s
// WriteTimeout of cmd/spike's HTTP server, so that the handler gives up
// (503) before the server drops the connection.
const DefaultAdminBudget = 25 * time.Second

func (s *Server) admin(h identityHandler) handlerFunc {
	return s.buyer(func(w http.ResponseWriter, r *http.Request, id Identity) error {
		if !id.Admin {
			return errForbidden
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.adminBudget)
		defer cancel()
		return h(w, r.WithContext(ctx), id)
	})
}

// statusWriter records the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

var (
	errTooLarge  = &spike.Error{Kind: spike.ErrTooLarge, Message: "request body is larger than 1 MiB"}
	errEmptyBody = &spike.Error{Kind: spike.ErrInvalid, Message: "request body must be a JSON object"}
)

// decode reads a JSON object from the body into v. Malformed JSON, wrong
// types and trailing data are ErrInvalid; an oversized body is ErrTooLarge.
// An empty body leaves v untouched if allowEmpty.
func decode(r *http.Request, v any, allowEmpty bool) error {
	buf := bodyBuffers.Get().(*bytes.Buffer)
	defer bodyBuffers.Put(buf)
	body, err := readBody(r, buf)
	if err != nil {
		return err
	}
	return decodeBytes(body, v, allowEmpty)
}

// readBody reads the (size-capped) body into buf and returns it trimmed.
func readBody(r *http.Request, buf *bytes.Buffer) ([]byte, error) {
	buf.Reset()
	if _, err := buf.ReadFrom(r.Body); err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			return nil, errTooLarge
		}
		return nil, spike.Errorf(spike.ErrInvalid, "could not read the request body")
	}
	return trimJSONSpace(buf.Bytes()), nil
}

// trimJSONSpace trims the whitespace JSON allows around a value (space,
// tab, CR, LF) and nothing else: bytes.TrimSpace also drops \v, \f and
// Unicode spaces, which made "{}\v" an accepted body (FuzzDecodeBodies).
func trimJSONSpace(b []byte) []byte {
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func decodeBytes(body []byte, v any, allowEmpty bool) error {
	if len(body) == 0 {
		if allowEmpty {
			return nil
		}
		return errEmptyBody
	}
	if body[0] != '{' {
		return errEmptyBody
	}
	// Strict: an unknown field, a duplicated key or trailing data is a 400
	// naming it; nothing a client sends is silently ignored.
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return spike.Errorf(spike.ErrInvalid, "unknown field %s", f)
		}
		return decodeError(err, allowEmpty)
	}
	if len(trimJSONSpace(body[dec.InputOffset():])) > 0 {
		return spike.Errorf(spike.ErrInvalid, "malformed JSON: data after the object")
	}
	if k, dup := duplicateKey(body); dup {
		return spike.Errorf(spike.ErrInvalid, "field %q is given twice", k)
	}
	return nil
}

// duplicateKey reports the first key that appears twice in the same
// object of a well-formed JSON document (encoding/json keeps the last).
func duplicateKey(body []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	type frame struct {
		keys   map[string]bool
		object bool
		expect bool // the next string token is a key
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				if n := len(stack); n > 0 && stack[n-1].object {
					stack[n-1].expect = true
				}
				stack = append(stack, frame{keys: map[string]bool{}, object: true, expect: true})
				continue
			case '[':
				if n := len(stack); n > 0 && stack[n-1].object {
					stack[n-1].expect = true
				}
				stack = append(stack, frame{})
				continue
			default:
				stack = stack[:len(stack)-1]
				if len(stack) == 0 {
					return "", false
				}
				continue
			}
		case string:
			if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].expect {
				if stack[n-1].keys[t] {
					return t, true
				}
				stack[n-1].keys[t] = true
				stack[n-1].expect = false
				continue
			}
		}
		if n := len(stack); n > 0 && stack[n-1].object {
			stack[n-1].expect = true
		}
	}
}

var bodyBuffers = sync.Pool{New: func() any { return bytes.NewBuffer(make([]byte, 0, 512)) }}

func decodeError(err error, allowEmpty bool) error {
	var (
		mbe *http.MaxBytesError
		ute *json.UnmarshalTypeError
		se  *json.SyntaxError
	)
	switch {
	case errors.As(err, &mbe):
		return errTooLarge
	case errors.Is(err, io.EOF):
		if allowEmpty {
			return nil
		}
		return errEmptyBody
	case errors.As(err, &ute):
		if ute.Field != "" {
			return spike.Errorf(spike.ErrInvalid, "field %q must be %s", ute.Field, describeType(ute.Type.String()))
		}
		return errEmptyBody
	case errors.As(err, &se):
		return spike.Errorf(spike.ErrInvalid, "malformed JSON at byte %d: %s", se.Offset, se.Error())
	case errors.Is(err, io.ErrUnexpectedEOF):
		return spike.Errorf(spike.ErrInvalid, "malformed JSON: unexpected end")
	}
	var pe *time.ParseError
	if errors.As(err, &pe) {
		return spike.Errorf(spike.ErrInvalid, "times must be RFC 3339, like 2026-11-29T20:00:00Z")
	}
	return spike.Errorf(spike.ErrInvalid, "malformed JSON")
}

func describeType(t string) string {
	switch t {
	case "int64", "*int64", "int", "*int":
		return "an integer"
	case "string", "*string":
		return "a string"
	case "time.Time", "*time.Time":
		return "an RFC 3339 time"
	}
	return "of type " + t
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
	return nil
}
