package apitest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/spikehq/spike/api"
)

// Spec is api/openapi.yaml loaded for checking answers against it.
type Spec struct {
	Doc    *openapi3.T
	router routers.Router
	// bodies compiles each response schema once: kin-openapi compiles a
	// JSON Schema 2020-12 validator on every call for OpenAPI 3.1
	// documents, which costs milliseconds per answer.
	compiler *jsonschema.Compiler
	mu       sync.Mutex
	bodies   map[string]*jsonschema.Schema // by JSON pointer into the document
}

// LoadSpec loads and validates api/openapi.yaml (once per test binary).
func LoadSpec() (*Spec, error) { return loadSpec() }

// specURL names the document for the JSON Schema compiler.
const specURL = "spike:openapi.json"

var loadSpec = sync.OnceValues(func() (*Spec, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.YAML())
	if err != nil {
		return nil, fmt.Errorf("load api/openapi.yaml: %w", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		return nil, fmt.Errorf("api/openapi.yaml is not a valid OpenAPI document: %w", err)
	}
	// Match paths on whatever host and port the test's server has.
	routed := *doc
	routed.Servers = nil
	r, err := legacy.NewRouter(&routed)
	if err != nil {
		return nil, err
	}
	whole, err := jsonschema.UnmarshalJSON(bytes.NewReader(api.JSON()))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat() // date-time, uri
	if err := c.AddResource(specURL, whole); err != nil {
		return nil, err
	}
	return &Spec{Doc: doc, router: r, compiler: c, bodies: map[string]*jsonschema.Schema{}}, nil
})

// CheckResponse reports how an answer to req departs from the spec: the
// request's method and path must be an operation (or the answer a 404 or a
// 405 with Allow, in the API's error shape), its status declared there,
// its declared headers (Retry-After) present and its body valid against
// the declared schema. It returns nil for a conforming answer.
func (s *Spec) CheckResponse(req *http.Request, status int, header http.Header, body []byte) error {
	if req.Method == http.MethodHead {
		return s.checkHead(req, status, header)
	}
	route, params, err := s.router.FindRoute(req)
	if err != nil || emptyParam(params) {
		return s.checkUnrouted(status, header, body)
	}
	// kin-openapi checks that the status is declared and the declared
	// headers; the content type and the body are checked below, against
	// the schema compiled once.
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 status,
		Header:                 header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true, ExcludeResponseBody: true},
	}
	in.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		return fmt.Errorf("%s %s (operation %s): %w", req.Method, route.Path, route.Operation.OperationID, err)
	}
	if err := s.checkBody(route, status, header, body); err != nil {
		return fmt.Errorf("%s %s (operation %s) %d: %w", req.Method, route.Path, route.Operation.OperationID, status, err)
	}
	return nil
}

// checkHead checks the answer to a HEAD request, which a GET route
// serves: its status must be declared for the GET.
func (s *Spec) checkHead(req *http.Request, status int, header http.Header) error {
	get := req.Clone(req.Context())
	get.Method = http.MethodGet
	route, params, err := s.router.FindRoute(get)
	if err != nil || emptyParam(params) {
		if status == http.StatusNotFound || status == http.StatusMethodNotAllowed && header.Get("Allow") != "" {
			return nil // no body to check
		}
		return fmt.Errorf("HEAD of a path no GET serves answered %d, want 404 or 405 with Allow", status)
	}
	if route.Operation.Responses.Value(strconv.Itoa(status)) == nil {
		return fmt.Errorf("HEAD %s (operation %s): status %d is not declared for GET", route.Path, route.Operation.OperationID, status)
	}
	return nil
}

// checkBody validates a JSON body against the schema its operation
// declares for status and content type (other media types: only that
// they are declared).
func (s *Spec) checkBody(route *routers.Route, status int, header http.Header, body []byte) error {
	code := strconv.Itoa(status)
	resp := route.Operation.Responses.Value(code)
	if resp == nil || resp.Value == nil {
		return nil // a status kin-openapi does not validate (a redirect)
	}
	if len(resp.Value.Content) == 0 {
		return nil // no body declared (a 303)
	}
	ct := header.Get("Content-Type")
	mt := resp.Value.Content.Get(ct)
	if mt == nil {
		return fmt.Errorf("Content-Type %q is not declared for this status", ct)
	}
	if mt.Schema == nil {
		return nil
	}
	if base, _, _ := strings.Cut(ct, ";"); strings.TrimSpace(base) != "application/json" {
		return nil
	}
	ptr := "#/paths/" + pointerToken(route.Path) + "/" + strings.ToLower(route.Method) + "/responses/" + code
	if resp.Ref != "" {
		ptr = resp.Ref
	}
	for key, v := range resp.Value.Content {
		if v == mt {
			ptr += "/content/" + pointerToken(key) + "/schema"
		}
	}
	return s.validateBody(ptr, body)
}

// validateBody validates a JSON body against the schema at ptr.
func (s *Spec) validateBody(ptr string, body []byte) error {
	sch, err := s.bodySchema(ptr)
	if err != nil {
		return err
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("body is not JSON: %w", err)
	}
	if err := sch.Validate(v); err != nil {
		return fmt.Errorf("body does not match %s: %w", ptr, err)
	}
	return nil
}

func (s *Spec) bodySchema(ptr string) (*jsonschema.Schema, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sch, ok := s.bodies[ptr]; ok {
		return sch, nil
	}
	sch, err := s.compiler.Compile(specURL + ptr)
	if err != nil {
		return nil, fmt.Errorf("compile %s: %w", ptr, err)
	}
	s.bodies[ptr] = sch
	return sch, nil
}

// pointerToken escapes s as one JSON pointer token (RFC 6901).
func pointerToken(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// emptyParam reports a path parameter matched to nothing: kin-openapi's
// router matches /v1/products to /v1/products/{sku}; ServeMux does not.
func emptyParam(params map[string]string) bool {
	for _, v := range params {
		if v == "" {
			return true
		}
	}
	return false
}

// checkUnrouted checks the answer to a request that no operation of the
// spec describes: an unknown path is the spec's NotFound response and a
// known path with another method its MethodNotAllowed (with Allow). A
// redirect of net/http's ServeMux (an unclean path) passes.
func (s *Spec) checkUnrouted(status int, header http.Header, body []byte) error {
	var ptr string
	switch status {
	case http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return nil
	case http.StatusNotFound:
		ptr = "#/components/responses/NotFound/content/application~1json/schema"
	case http.StatusMethodNotAllowed:
		if header.Get("Allow") == "" {
			return fmt.Errorf("405 without Allow")
		}
		ptr = "#/components/responses/MethodNotAllowed/content/application~1json/schema"
	default:
		return fmt.Errorf("a request the spec has no operation for answered %d, want 404 or 405", status)
	}
	if ct := header.Get("Content-Type"); ct != "application/json" {
		return fmt.Errorf("%d with Content-Type %q, want the API's JSON error shape", status, ct)
	}
	return s.validateBody(ptr, body)
}

// specTransport checks every answer that passes through it against the
// spec and keeps what departs from it, for its test's cleanup to report:
// a test's goroutines may still be sending after the test returns, when
// t.Errorf may no longer be called.
type specTransport struct {
	next http.RoundTripper
	spec *Spec
	// proxied: the server is reached through a load balancer, whose own
	// answers are not checked (see Client.BehindProxy).
	proxied atomic.Bool

	mu         sync.Mutex
	checked    int
	spent      time.Duration // in CheckResponse, summed over goroutines
	violations []string
	more       int // violations past the first maxViolations
}

const maxViolations = 10

func (s *specTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := s.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return resp, nil // the caller sees a truncated body and fails on it
	}
	if s.proxied.Load() && proxyAnswer(resp) {
		return resp, nil
	}
	start := time.Now()
	verr := s.spec.CheckResponse(req, resp.StatusCode, resp.Header, body)
	spent := time.Since(start)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checked++
	s.spent += spent
	if verr != nil {
		if len(s.violations) < maxViolations {
			s.violations = append(s.violations, fmt.Sprintf("%s %s → %d: %v\n\tbody: %.300s", req.Method, req.URL.RequestURI(), resp.StatusCode, verr, body))
		} else {
			s.more++
		}
	}
	return resp, nil
}

// proxyAnswer reports an answer that a load balancer makes itself when
// no instance answers in time (HAProxy's 502, 503 and 504 pages): Spike
// answers every error in JSON and never with 502 or 504.
func proxyAnswer(resp *http.Response) bool {
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json")
	}
	return false
}

// report fails t with the answers that departed from the spec.
func (s *specTransport) report(t testing.TB) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.checked > 0 {
		t.Logf("checked %d answers against api/openapi.yaml in %v", s.checked, s.spent.Round(time.Millisecond))
	}
	if len(s.violations) == 0 {
		return
	}
	t.Errorf("%d of %d answers do not match api/openapi.yaml (fix the code or the spec, and docs/api.md):\n%s%s",
		len(s.violations)+s.more, s.checked, strings.Join(s.violations, "\n"), moreNote(s.more))
}

func moreNote(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("\n… and %d more", n)
}

// checkedTransport returns next wrapped so that every answer is checked
// against the spec, reported when t ends.
func checkedTransport(t testing.TB, next http.RoundTripper) *specTransport {
	spec, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	st := &specTransport{next: next, spec: spec}
	t.Cleanup(func() { st.report(t) })
	return st
}

// CloseIdleConnections closes the wrapped transport's idle connections
// (http.Client.CloseIdleConnections reaches them through it).
func (s *specTransport) CloseIdleConnections() {
	if c, ok := s.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
