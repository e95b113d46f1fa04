package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// HS256 verifies Spike's own tokens: HMAC-SHA256 under one of several
// secrets (rotation: every secret is accepted, the first signs), alg
// exactly HS256, exp required, nbf honoured, Leeway on both. Its decisions
// are golang-jwt's (ParseWithClaims with those options) on every input, at
// a fraction of the cost: no reflection on the common claims shape and no
// allocation (FuzzHS256Differential keeps the two in step).
type HS256 struct {
	secrets [][]byte
	states  sync.Pool // *hsState
	now     func() time.Time
}

// hsState is one verification's scratch space, pooled: a keyed hasher per
// secret (keying HMAC costs two block hashes) and buffers for the token.
type hsState struct {
	macs []hash.Hash
	tok  []byte
	seg  []byte
	sum  [sha256.Size]byte
	sig  [sha256.Size]byte
}

// NewHS256 returns a verifier accepting tokens signed with any of secrets;
// the first is the one Sign uses. Each must be at least MinSecretLen bytes.
func NewHS256(secrets ...[]byte) (*HS256, error) {
	if len(secrets) == 0 {
		return nil, errors.New("no HS256 secret")
	}
	h := &HS256{now: time.Now}
	for i, s := range secrets {
		if len(s) < MinSecretLen {
			return nil, fmt.Errorf("HS256 secret %d of %d is %d bytes long; at least %d are needed", i+1, len(secrets), len(s), MinSecretLen)
		}
		h.secrets = append(h.secrets, append([]byte(nil), s...))
	}
	h.states.New = func() any {
		st := &hsState{
			tok: make([]byte, 0, MaxTokenLen),
			seg: make([]byte, base64.RawURLEncoding.DecodedLen(MaxTokenLen)),
		}
		for _, s := range h.secrets {
			st.macs = append(st.macs, hmac.New(sha256.New, s))
		}
		return st
	}
	return h, nil
}

// Sign returns a token for user signed with the first secret.
func (h *HS256) Sign(user int64, admin bool, ttl time.Duration) (string, error) {
	return Sign(h.secrets[0], user, admin, ttl)
}

// Verify checks a token and returns its identity. The signature is checked
// before any JSON is read, so a forged token costs one base64 decode and
// one HMAC per secret.
func (h *HS256) Verify(tok string) (Identity, error) {
	if len(tok) > MaxTokenLen {
		return Identity{}, ErrBadToken
	}
	d1 := strings.IndexByte(tok, '.')
	if d1 < 0 {
		return Identity{}, ErrBadToken
	}
	d2 := strings.IndexByte(tok[d1+1:], '.')
	if d2 < 0 {
		return Identity{}, ErrBadToken
	}
	d2 += d1 + 1
	if strings.IndexByte(tok[d2+1:], '.') >= 0 {
		return Identity{}, ErrBadToken
	}
	st := h.states.Get().(*hsState)
	defer h.states.Put(st)
	st.tok = append(st.tok[:0], tok...)
	b := st.tok

	n, err := base64.RawURLEncoding.Decode(st.seg, b[d2+1:])
	if err != nil || n != sha256.Size {
		return Identity{}, ErrBadToken
	}
	copy(st.sig[:], st.seg[:n])
	if !h.signedWithASecret(st, b[:d2]) {
		return Identity{}, ErrBadToken
	}

	n, err = base64.RawURLEncoding.Decode(st.seg, b[:d1])
	if err != nil || !headerSaysHS256(st.seg[:n]) {
		return Identity{}, ErrBadToken
	}
	n, err = base64.RawURLEncoding.Decode(st.seg, b[d1+1:d2])
	if err != nil {
		return Identity{}, ErrBadToken
	}
	var c hsClaims
	if !c.parse(st.seg[:n]) {
		return Identity{}, ErrBadToken
	}
	return c.identity(h.now())
}

// signedWithASecret reports whether st.sig is the HMAC-SHA256 of signed
// under one of the secrets (compared in constant time).
func (h *HS256) signedWithASecret(st *hsState, signed []byte) bool {
	for _, m := range st.macs {
		m.Reset()
		m.Write(signed)
		if hmac.Equal(st.sig[:], m.Sum(st.sum[:0])) {
			return true
		}
	}
	return false
}

// hsClaims are the claims Spike's tokens use, as golang-jwt would decode
// them into RegisteredClaims plus a role.
type hsClaims struct {
	sub      []byte // fast path; subStr when decoded by encoding/json
	subStr   string
	slow     bool
	exp, nbf time.Time
	hasExp   bool
	hasNbf   bool
	admin    bool
}

// identity applies what golang-jwt's validator would (exp required and
// not past, nbf not ahead, both with Leeway), then the subject rule.
func (c *hsClaims) identity(now time.Time) (Identity, error) {
	if !c.hasExp || !now.Before(c.exp.Add(Leeway)) {
		return Identity{}, ErrBadToken
	}
	if c.hasNbf && now.Before(c.nbf.Add(-Leeway)) {
		return Identity{}, ErrBadToken
	}
	var uid int64
	var ok bool
	if c.slow {
		uid, ok = parseUserIDString(c.subStr)
	} else {
		uid, ok = parseUserID(c.sub)
	}
	if !ok {
		return Identity{}, ErrBadUser
	}
	return Identity{UserID: uid, Admin: c.admin}, nil
}

// parseUserID is spike.ParseUserID on bytes: a positive int64 in plain
// decimal, no sign, no leading zero.
func parseUserID(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 19 || b[0] < '1' || b[0] > '9' {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (1<<63-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

func parseUserIDString(s string) (int64, bool) {
	if len(s) == 0 || len(s) > 19 || s[0] < '1' || s[0] > '9' {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n > 0
}

// Sign returns an HS256 token for user, valid for ttl; admin adds the
// admin role. Its claims are sub (the decimal user id), exp, iat and role.
func Sign(secret []byte, user int64, admin bool, ttl time.Duration) (string, error) {
	if user <= 0 {
		return "", errors.New("user id must be positive")
	}
	c := refClaims{RegisteredClaims: jwt.RegisteredClaims{
		Subject:   strconv.FormatInt(user, 10),
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(ttl)),
		IssuedAt:  jwt.NewNumericDate(time.Now()),
	}}
	if admin {
		c.Role = "admin"
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
}

// refClaims is what golang-jwt decodes Spike's tokens into: the slow path
// uses it for shapes the fast parser leaves alone, so both agree by
// construction there.
type refClaims struct {
	Role string `json:"role,omitempty"`
	jwt.RegisteredClaims
}
