package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
)

//go:embed assets
var assets embed.FS

// pageFiles are the page's files, by the name they are served under.
var pageFiles = map[string]string{
	"":               "index.html",
	"dashboard.js":   "dashboard.js",
	"dashboard.css":  "dashboard.css",
	"favicon.svg":    "favicon.svg",
	"index.html":     "index.html",
	"dashboard.html": "index.html",
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// ServeFile writes the page file name ("" for the page itself) and reports
// whether it exists. The page holds no secret: the admin pastes a token,
// which it sends with each poll of the snapshot.
func ServeFile(w http.ResponseWriter, name string) bool {
	file, ok := pageFiles[name]
	if !ok {
		return false
	}
	b, err := fs.ReadFile(assets, "assets/"+file)
	if err != nil {
		return false
	}
	h := w.Header()
	h.Set("Content-Type", contentTypes[path.Ext(file)])
	// Everything comes from this server; no frame may hold the page (its
	// buttons flip switches).
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	return true
}
