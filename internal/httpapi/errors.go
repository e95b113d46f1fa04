package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/sale"
)

// errorCodes maps each error kind to its status and API code.
var errorCodes = []struct {
	kind   error
	status int
	code   string
}{
	{spike.ErrInvalid, http.StatusBadRequest, "invalid"},
	{spike.ErrUnauthenticated, http.StatusUnauthorized, "unauthenticated"},
	{spike.ErrForbidden, http.StatusForbidden, "forbidden"},
	{spike.ErrNotFound, http.StatusNotFound, "not_found"},
	{spike.ErrInsufficient, http.StatusConflict, "insufficient_stock"},
	{spike.ErrSoldOut, http.StatusConflict, "sold_out"},
	{spike.ErrLimitExceeded, http.StatusConflict, "limit_exceeded"},
	{spike.ErrSaleNotActive, http.StatusConflict, "sale_not_active"},
	{spike.ErrConflict, http.StatusConflict, "conflict"},
	{spike.ErrTooLarge, http.StatusRequestEntityTooLarge, "too_large"},
	{spike.ErrRateLimited, http.StatusTooManyRequests, "rate_limited"},
	{spike.ErrOverloaded, http.StatusServiceUnavailable, "overloaded"},
	{spike.ErrUnavailable, http.StatusServiceUnavailable, "unavailable"},
}

func encodeError(code, message string) []byte {
	b := make([]byte, 0, 64+len(message))
	b = append(b, `{"error":{"code":"`...)
	b = append(b, code...)
	b = append(b, `","message":`...)
	b = strconv.AppendQuote(b, message)
	return append(b, "}}\n"...)
}

type statusCode struct {
	status int
	code   string
}

// byKind indexes errorCodes by kind, for the common case of a
// *spike.Error whose Kind is one of the sentinels itself.
var byKind = func() map[error]statusCode {
	m := make(map[error]statusCode, len(errorCodes))
	for _, c := range errorCodes {
		m[c.kind] = statusCode{c.status, c.code}
	}
	return m
}()

// errOutOfTime answers a request whose deadline passed, or whose client
// went away, while a dependency had not answered: not a bug (500) but a
// dependency too slow for now.
var errOutOfTime = &spike.Error{Kind: spike.ErrUnavailable, Message: "a dependency did not answer in time; retry shortly"}

// statusOf returns the status and code for err; unknown errors are 500.
func statusOf(err error) (int, string, string) {
	de, ok := err.(*spike.Error)
	if !ok {
		de, ok = asDomainError(err)
	}
	if !ok {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return http.StatusServiceUnavailable, "unavailable", errOutOfTime.Message
		}
		return http.StatusInternalServerError, "internal", "internal error"
	}
	if sc, ok := byKind[de.Kind]; ok {
		return sc.status, sc.code, de.Message
	}
	for _, c := range errorCodes {
		if errors.Is(de.Kind, c.kind) {
			return c.status, c.code, de.Message
		}
	}
	return http.StatusInternalServerError, "internal", "internal error"
}

// asDomainError finds a *spike.Error in err's chain. It is apart from
// statusOf so that the variable errors.As needs is allocated only for
// wrapped errors, not on every call.
func asDomainError(err error) (*spike.Error, bool) {
	var de *spike.Error
	if errors.As(err, &de) {
		return de, true
	}
	return nil, false
}

// hotErrorList are the rejections a flash sale repeats by the thousand:
// their answers (status and body) are worked out once per server, with
// the placement outcome each counts as.
var hotErrorList = []*spike.Error{
	inventory.ErrSoldOut, inventory.ErrLimit, inventory.ErrNotActive, inventory.ErrKeyReused,
	inventory.ErrInProgress, inventory.ErrFenced, sale.ErrSaleNotFound,
	errOverloaded, errUserRate, errSaleRate, errNotAccepted, errNoToken, errBadToken,
	errKeyMissing, errQuantity,
}

// hotError is the answer to one of hotErrorList.
type hotError struct {
	status  int
	body    []byte
	outcome prometheus.Counter // its spike_placements_total series; nil: not pre-resolved
}

func (s *Server) hotErrors() map[*spike.Error]*hotError {
	m := make(map[*spike.Error]*hotError, len(hotErrorList))
	for _, e := range hotErrorList {
		status, code, msg := statusOf(e)
		m[e] = &hotError{status: status, body: encodeError(code, msg), outcome: s.metrics.outcome[code]}
	}
	return m
}

// writeError writes err in the API's error shape and returns the status.
// Only errors that are not domain errors (bugs, or a dependency failing in
// a way nobody mapped) are logged, in full.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) int {
	if de, ok := err.(*spike.Error); ok {
		if h := s.hot[de]; h != nil {
			writeErrorBody(w, h.status, h.body)
			return h.status
		}
	}
	status, code, msg := statusOf(err)
	if status == http.StatusInternalServerError {
		s.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeErrorBody(w, status, encodeError(code, msg))
	return status
}

func writeErrorBody(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		if _, set := h["Retry-After"]; !set { // a limit may have set its own
			h["Retry-After"] = retryAfterOne
		}
	}
	w.WriteHeader(status)
	w.Write(body)
}

var (
	jsonContentType = []string{"application/json"}
	retryAfterOne   = []string{"1"}
)
