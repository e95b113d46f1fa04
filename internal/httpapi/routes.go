package httpapi

import (
	"net/http"
	"slices"
	"strings"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/api"
)

// routeMux is the server's ServeMux that also keeps the patterns
// registered on it: the route table that the OpenAPI conformance test
// compares with api/openapi.yaml both ways (Routes).
type routeMux struct {
	*http.ServeMux
	patterns []string
}

func newRouteMux() *routeMux { return &routeMux{ServeMux: http.NewServeMux()} }

func (m *routeMux) Handle(pattern string, h http.Handler) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.Handle(pattern, h)
}

func (m *routeMux) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	m.Handle(pattern, http.HandlerFunc(h))
}

// catchAll is the pattern that answers what no route serves.
const catchAll = "/"

// Routes returns the patterns the server serves ("METHOD /path/{wildcard}"),
// in the order they were registered, without the catch-all.
func (s *Server) Routes() []string {
	return slices.DeleteFunc(slices.Clone(s.mux.patterns), func(p string) bool { return p == catchAll })
}

// serveOpenAPI answers GET /openapi.json with api/openapi.yaml as JSON.
func (s *Server) serveOpenAPI(w http.ResponseWriter, _ *http.Request) error {
	w.Header()["Content-Type"] = jsonContentType
	w.Header().Set("Cache-Control", "no-cache")
	_, err := w.Write(api.JSON())
	return err
}

// noRoute answers a request that no route serves: 405 with Allow when
// the path is served with other methods, else 404. ServeMux itself would
// send every method to the catch-all pattern "/", which matches them all.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	if allow := s.allowed(r); len(allow) > 0 {
		h := w.Header()
		h.Set("Allow", strings.Join(allow, ", "))
		h["Content-Type"] = jsonContentType
		w.WriteHeader(http.StatusMethodNotAllowed)
		w.Write(encodeError("method_not_allowed", r.Method+" is not served here; allowed: "+h.Get("Allow")))
		return
	}
	s.writeError(w, r, spike.Errorf(spike.ErrNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
}

var routeMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// allowed returns the methods r's path is served with.
func (s *Server) allowed(r *http.Request) []string {
	var allow []string
	for _, m := range routeMethods {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != catchAll && pattern != "" {
			allow = append(allow, m)
		}
	}
	return allow
}
