// Package auth verifies bearer tokens: Spike's own HS256 tokens (a fast
// path without reflection or JSON decoding on the common shape, checked
// differentially against golang-jwt) and, optionally, tokens of an OpenID
// Connect identity provider signed with RS256, ES256 or EdDSA and verified
// against its JWKS.
package auth

import (
	"context"
	"encoding/base64"
	"strings"
	"time"

	"github.com/spikehq/spike"
)

// Identity is the authenticated caller.
type Identity struct {
	UserID int64
	Admin  bool
}

// Errors of authentication. They are returned as these very values, so a
// caller may encode their answers once.
var (
	ErrNoToken  = &spike.Error{Kind: spike.ErrUnauthenticated, Message: "missing bearer token"}
	ErrBadToken = &spike.Error{Kind: spike.ErrUnauthenticated, Message: "invalid or expired token"}
	ErrBadUser  = &spike.Error{Kind: spike.ErrUnauthenticated, Message: "token subject must be a positive integer user id"}
)

const (
	// Leeway is the clock skew allowed on exp and nbf.
	Leeway = 5 * time.Second
	// MaxTokenLen bounds what is looked at: a longer token is refused unread.
	MaxTokenLen = 4096
	// MinSecretLen is the shortest HS256 secret accepted, in bytes: a
	// shorter one can be brute-forced offline from one captured token.
	MinSecretLen = 32
)

// Verifier checks Spike's HS256 tokens and, when OIDC is set, tokens of an
// identity provider. The two never mix: a token whose signature is 32
// bytes long is an HS256 candidate, checked against the HS256 secrets only;
// any other goes to the identity provider's public keys only, so no key of
// one kind is ever used as the other (no alg confusion).
type Verifier struct {
	HS256 *HS256
	OIDC  *OIDC // nil: HS256 tokens only
}

// Verify checks tok and returns the identity it proves. ctx bounds a JWKS
// refresh an OIDC token with an unknown key id may wait for.
func (v *Verifier) Verify(ctx context.Context, tok string) (Identity, error) {
	if len(tok) > MaxTokenLen {
		return Identity{}, ErrBadToken
	}
	if v.OIDC == nil || isHS256Candidate(tok) {
		return v.HS256.Verify(tok)
	}
	return v.OIDC.Verify(ctx, tok)
}

// isHS256Candidate reports whether tok's last segment could hold a 32-byte
// HMAC-SHA256: RS256, ES256 and EdDSA signatures are 64 bytes or more.
func isHS256Candidate(tok string) bool {
	i := strings.LastIndexByte(tok, '.')
	if i < 0 {
		return true // malformed: the HS256 path refuses it
	}
	sig := tok[i+1:]
	// The decoder skips line breaks, so they do not count.
	n := len(sig) - strings.Count(sig, "\n") - strings.Count(sig, "\r")
	return base64.RawURLEncoding.DecodedLen(n) == 32
}
