package httpapi

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// probeTimeout bounds each /readyz check: a dependency slower than this
// is not ready.
const probeTimeout = 2 * time.Second

// probeLogEvery is how often one failing probe's raw error is logged.
const probeLogEvery = 10 * time.Second

// readiness remembers when each probe's failure was last logged.
type readiness struct {
	mu     sync.Mutex
	logged map[string]time.Time
}

type readyBody struct {
	Status  string   `json:"status"` // ready or unavailable
	Failed  []string `json:"failed,omitempty"`
	Checked []string `json:"checked"`
}

// readyz checks every configured dependency at once. A failure answers
// 503 naming the dependencies that failed; their errors (which may name
// hosts, users or files) go to the log, never to the client.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), probeTimeout)
	defer cancel()
	type result struct {
		i   int
		err error
	}
	results := make(chan result, len(s.Probes))
	for i, p := range s.Probes {
		go func() { results <- result{i, p.Check(ctx)} }()
	}
	errs := make([]error, len(s.Probes))
	for i := range errs {
		errs[i] = context.DeadlineExceeded // until it answers
	}
	for answered := 0; answered < len(s.Probes) && ctx.Err() == nil; answered++ {
		select {
		case res := <-results:
			errs[res.i] = res.err
		case <-ctx.Done():
		}
	}
	body := readyBody{Status: "ready", Checked: make([]string, 0, len(s.Probes))}
	for i, p := range s.Probes {
		body.Checked = append(body.Checked, p.Name)
		if errs[i] != nil {
			body.Failed = append(body.Failed, p.Name)
			s.logProbeFailure(r.Context(), p.Name, errs[i])
		}
	}
	if len(body.Failed) > 0 {
		body.Status = "unavailable"
		w.Header()["Retry-After"] = retryAfterOne
		return writeJSON(w, http.StatusServiceUnavailable, body)
	}
	return writeJSON(w, http.StatusOK, body)
}

// logProbeFailure logs a probe's error, at most once per probeLogEvery
// per probe: a prober polling a down dependency must not flood the log.
func (s *Server) logProbeFailure(ctx context.Context, name string, err error) {
	rd := &s.readiness
	now := time.Now()
	rd.mu.Lock()
	if rd.logged == nil {
		rd.logged = map[string]time.Time{}
	}
	last, seen := rd.logged[name]
	due := !seen || now.Sub(last) >= probeLogEvery
	if due {
		rd.logged[name] = now
	}
	rd.mu.Unlock()
	if due {
		s.log.WarnContext(ctx, "readiness check failed", "dependency", name, "err", err)
	}
}

// metricsRoute serves /metrics as Config.Metrics says.
func (s *Server) metricsRoute() {
	h := s.MetricsHandler()
	serve := func(w http.ResponseWriter, r *http.Request) error {
		h.ServeHTTP(w, r)
		return nil
	}
	switch s.Metrics {
	case MetricsOff:
		// Served by another listener; here it is an unknown path.
	case MetricsAdmin:
		s.handle("GET /metrics", "metrics", s.admin(func(w http.ResponseWriter, r *http.Request, _ Identity) error { return serve(w, r) }))
	default:
		s.handle("GET /metrics", "metrics", serve)
	}
}

// MetricsHandler serves the registry's metrics (for a listener of its own).
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{})
}
