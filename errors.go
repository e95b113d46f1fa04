// Package spike holds the vocabulary shared by every Spike domain: error
// kinds, order ids and user ids. It depends on the standard library only.
package spike

import (
	"errors"
	"fmt"
)

// Error kinds. Every domain error wraps exactly one of them, and the HTTP
// layer maps each kind to one status code.
var (
	ErrInvalid         = errors.New("invalid")
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrForbidden       = errors.New("forbidden")
	ErrNotFound        = errors.New("not found")
	ErrConflict        = errors.New("conflict")
	ErrInsufficient    = errors.New("insufficient stock")
	ErrSoldOut         = errors.New("sold out")
	ErrLimitExceeded   = errors.New("limit exceeded")
	ErrSaleNotActive   = errors.New("sale not active")
	ErrTooLarge        = errors.New("too large")
	ErrRateLimited     = errors.New("rate limited")
	ErrOverloaded      = errors.New("overloaded")
	ErrUnavailable     = errors.New("unavailable")
)

// MaxPriceCents bounds every price (10 billion in the currency's main
// unit), so that price × quantity (quantity ≤ 1,000,000) never overflows.
const MaxPriceCents = 1_000_000_000_000

// Error is a domain error whose Message is safe to return to API clients.
type Error struct {
	Kind    error // one of the Err* kinds above
	Message string
}

func (e *Error) Error() string { return e.Message }
func (e *Error) Unwrap() error { return e.Kind }

// Errorf returns an *Error of the given kind; the message is client-safe.
func Errorf(kind error, format string, args ...any) *Error {
	if len(args) == 0 {
		return &Error{Kind: kind, Message: format}
	}
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}
