package sandboxpay

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"mime"
	"net/http"
	"path"
	"strings"

	"github.com/spikehq/spike/internal/domain/payment"
)

// Handler serves the checkout pages, at any prefix: the payment's ref is
// the last element of the path (or the {ref} wildcard of a ServeMux
// pattern). GET shows the payment with "pay" and "fail" buttons; POST
// decides it, with the JSON body {"outcome": "succeeded"|"failed"} (answer
// 200 {"ref","status"}) or the page's form (answer 303 back to the page).
// There is no authentication: the URL is the secret. The ref may be of any
// instance sharing Config.Secret; a ref whose MAC does not verify → 404,
// bad body → 400, another outcome than the one already decided → 409, the
// webhook queue full → 503.
func (g *Gateway) Handler() http.Handler { return http.HandlerFunc(g.serveCheckout) }

var page = template.Must(template.New("checkout").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Spike sandbox checkout</title>
<style>body{font-family:system-ui,sans-serif;max-width:28em;margin:3em auto;padding:0 1em}
button{font-size:1.1em;padding:.5em 1.5em;margin-right:1em}.ref{color:#666;font-size:.9em}</style></head>
<body><h1>Sandbox checkout</h1>
<p>Amount: <strong>{{.Amount}}</strong></p>
<p class="ref">Payment {{.Ref}}</p>
{{if .Open}}<p>This is Spike's simulated payment gateway: no money moves.</p>
<form method="post"><input type="hidden" name="outcome" value="succeeded"><button type="submit">Pay</button></form>
<form method="post"><input type="hidden" name="outcome" value="failed"><button type="submit">Fail</button></form>
{{else}}<p>Status: <strong>{{.Status}}</strong>. You may close this page.</p>{{end}}
</body></html>
`))

func (g *Gateway) serveCheckout(w http.ResponseWriter, r *http.Request) {
	ref := r.PathValue("ref")
	if ref == "" {
		ref = path.Base(r.URL.Path)
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		in, ok := g.parseRef(ref)
		if !ok {
			http.Error(w, "unknown payment", http.StatusNotFound)
			return
		}
		st, amount := g.status(in.paymentID), in.amountCents
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_ = page.Execute(w, map[string]any{
			"Ref": in.paymentID, "Status": st, "Open": st == payment.RequiresAction,
			"Amount": fmt.Sprintf("%d.%02d", amount/100, amount%100),
		})
	case http.MethodPost:
		g.decide(w, r, ref)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func (g *Gateway) decide(w http.ResponseWriter, r *http.Request, ref string) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	form := ct == "application/x-www-form-urlencoded"
	var outcome string
	if form {
		outcome = r.PostFormValue("outcome")
	} else {
		var body struct {
			Outcome string `json:"outcome"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			writeError(w, http.StatusBadRequest, "invalid", `body must be JSON {"outcome": "succeeded"|"failed"}`)
			return
		}
		outcome = body.Outcome
	}
	st := payment.Status(strings.TrimSpace(outcome))
	if st != payment.Succeeded && st != payment.Failed {
		writeError(w, http.StatusBadRequest, "invalid", `outcome must be "succeeded" or "failed"`)
		return
	}
	now, err := g.Decide(ref, st)
	switch {
	case errors.Is(err, errUnknownRef):
		writeError(w, http.StatusNotFound, "not_found", "unknown payment")
	case errors.Is(err, errDecided):
		writeError(w, http.StatusConflict, "conflict", "payment is already "+string(now))
	case errors.Is(err, errBusy):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "unavailable", "sandbox gateway busy")
	case err != nil:
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
	case form:
		http.Redirect(w, r, r.URL.Path, http.StatusSeeOther)
	default:
		writeJSON(w, http.StatusOK, map[string]string{"ref": ref, "status": string(now)})
	}
}

// writeError answers in Spike's API error shape (docs/api.md): the page
// is served on Spike's own router.
func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": message}})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
