package httpapi

import (
	"net/http"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/dashboard"
)

// dashboardRoutes serves the live sale dashboard (docs/dashboard.md): the
// page, which holds no secret, and the snapshot it polls, for admins only.
func (s *Server) dashboardRoutes() {
	page := func(w http.ResponseWriter, r *http.Request) error {
		if !dashboard.ServeFile(w, r.PathValue("file")) {
			return spike.Errorf(spike.ErrNotFound, "the dashboard has no file %q", r.PathValue("file"))
		}
		return nil
	}
	s.handle("GET /dashboard", "dashboard_page", page)
	s.handle("GET /dashboard/{file}", "dashboard_page", page)
	s.handle("GET /v1/admin/dashboard", "dashboard_feed", s.admin(func(w http.ResponseWriter, r *http.Request, _ Identity) error {
		snap, err := s.Dashboard.Snapshot(r.Context())
		if err != nil {
			return err
		}
		w.Header().Set("Cache-Control", "no-store")
		return writeJSON(w, http.StatusOK, snap)
	}))
}
