package httpapi

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/maypok86/otter/v2"

	"github.com/spikehq/spike"
)

// Identity is the authenticated caller.
type Identity struct {
	UserID int64
	Admin  bool
}

type claims struct {
	Role string `json:"role,omitempty"`
	jwt.RegisteredClaims
}

// Errors of authentication.
var (
	errNoToken   = &spike.Error{Kind: spike.ErrUnauthenticated, Message: "missing bearer token"}
	errBadToken  = &spike.Error{Kind: spike.ErrUnauthenticated, Message: "invalid or expired token"}
	errBadUser   = &spike.Error{Kind: spike.ErrUnauthenticated, Message: "token subject must be a positive integer user id"}
	errForbidden = &spike.Error{Kind: spike.ErrForbidden, Message: "this endpoint needs an admin token"}
)

// Authenticator verifies HS256 bearer tokens. Verified tokens are cached
// (bounded, keyed by the token itself, expiry rechecked on every use): in a
// flash sale the same buyer retries with the same token many times, and
// verifying costs more than everything else a rejection does.
type Authenticator struct {
	secret []byte
	parser *jwt.Parser
	cache  *otter.Cache[string, verified]
	now    func() time.Time
}

type verified struct {
	id  Identity
	exp time.Time
}

// NewAuthenticator returns an Authenticator for tokens signed with secret.
func NewAuthenticator(secret []byte) *Authenticator {
	return &Authenticator{
		secret: secret,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(leeway),
		),
		cache: otter.Must(&otter.Options[string, verified]{MaximumSize: 100_000}),
		now:   time.Now,
	}
}

const leeway = 5 * time.Second

func (a *Authenticator) key(*jwt.Token) (any, error) { return a.secret, nil }

// Authenticate returns the identity the request's bearer token proves.
func (a *Authenticator) Authenticate(r *http.Request) (Identity, error) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return Identity{}, errNoToken
	}
	return a.Verify(tok)
}

// Verify checks a token and returns its identity.
func (a *Authenticator) Verify(tok string) (Identity, error) {
	if len(tok) > 4096 {
		return Identity{}, errBadToken
	}
	if v, ok := a.cache.GetIfPresent(tok); ok {
		if a.now().Before(v.exp.Add(leeway)) {
			return v.id, nil
		}
		a.cache.Invalidate(tok)
		return Identity{}, errBadToken
	}
	var c claims
	if _, err := a.parser.ParseWithClaims(tok, &c, a.key); err != nil {
		return Identity{}, errBadToken
	}
	uid, ok := spike.ParseUserID(c.Subject)
	if !ok {
		return Identity{}, errBadUser
	}
	id := Identity{UserID: uid, Admin: c.Role == "admin"}
	a.cache.Set(tok, verified{id: id, exp: c.ExpiresAt.Time})
	return id, nil
}

// Sign returns a token for user, valid for ttl; admin adds the admin role.
func Sign(secret []byte, user int64, admin bool, ttl time.Duration) (string, error) {
	if user <= 0 {
		return "", errors.New("user id must be positive")
	}
	c := claims{RegisteredClaims: jwt.RegisteredClaims{
		Subject:   strconv.FormatInt(user, 10),
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(ttl)),
		IssuedAt:  jwt.NewNumericDate(time.Now()),
	}}
	if admin {
		c.Role = "admin"
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
}
