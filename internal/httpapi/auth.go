package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/auth"
)

// Identity is the authenticated caller.
type Identity = auth.Identity

// Errors of authentication.
var (
	errNoToken   = auth.ErrNoToken
	errBadToken  = auth.ErrBadToken
	errForbidden = &spike.Error{Kind: spike.ErrForbidden, Message: "this endpoint needs an admin token"}
)

// Authenticator reads the bearer token of a request and verifies it (see
// package auth). Verified tokens are not cached: a flash sale brings
// 100,000 buyers each seen once or twice, and an HS256 verification now
// costs less than a cache's miss and insert (docs/security.md).
type Authenticator struct {
	v *auth.Verifier
}

// NewAuthenticator returns an Authenticator for HS256 tokens signed with
// secret. It panics if secret is shorter than auth.MinSecretLen; spike
// serve builds its verifier with NewAuthenticatorFor.
func NewAuthenticator(secret []byte) *Authenticator {
	h, err := auth.NewHS256(secret)
	if err != nil {
		panic(fmt.Sprintf("httpapi.NewAuthenticator: %v", err))
	}
	return NewAuthenticatorFor(&auth.Verifier{HS256: h})
}

// NewAuthenticatorFor returns an Authenticator using v.
func NewAuthenticatorFor(v *auth.Verifier) *Authenticator { return &Authenticator{v: v} }

// Authenticate returns the identity the request's bearer token proves.
func (a *Authenticator) Authenticate(r *http.Request) (Identity, error) {
	tok, ok := strings.CutPrefix(headerValue(r.Header, "Authorization"), "Bearer ")
	if !ok || tok == "" {
		return Identity{}, errNoToken
	}
	return a.v.Verify(r.Context(), tok)
}

// Verify checks a token and returns its identity.
func (a *Authenticator) Verify(tok string) (Identity, error) {
	return a.v.Verify(context.Background(), tok)
}

// Sign returns an HS256 token for user, valid for ttl; admin adds the
// admin role.
func Sign(secret []byte, user int64, admin bool, ttl time.Duration) (string, error) {
	return auth.Sign(secret, user, admin, ttl)
}

// headerValue is h.Get(key) for a key already in canonical form, without
// Get's canonicalising of the key on every call.
func headerValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}
