package auth

import (
	"bytes"
	"encoding/json"
	"time"
)

// The fast path reads the header and claims of an HS256 token with a small
// JSON scanner that handles the shapes Spike and ordinary JWT libraries
// write: plain keys, plain string and integer values. Anything else that is
// still possibly valid (escapes in a key or a used value, a key that
// matches a claim only case-insensitively, a repeated claim, a fractional
// or quoted number, a JSON syntax error) is "unsure" and goes to
// encoding/json with golang-jwt's own types, which decides. Both run only
// after the signature matched, so the slow path is not a lever for anyone
// without a secret.

// headerSaysHS256 reports whether the header is a JSON object whose alg
// (the last one, as encoding/json keeps it) is the string "HS256".
func headerSaysHS256(b []byte) bool {
	if hs, sure := headerFast(b); sure {
		return hs
	}
	var h map[string]any
	if json.Unmarshal(b, &h) != nil {
		return false
	}
	alg, _ := h["alg"].(string)
	return alg == "HS256"
}

func headerFast(b []byte) (hs256, sure bool) {
	s := scanner{b: b}
	ok := s.object(func(key []byte, escaped bool) bool {
		if escaped {
			return false
		}
		if string(key) != "alg" {
			return s.value()
		}
		if s.peek() != '"' {
			hs256 = false
			return s.value()
		}
		start, end, esc, ok := s.str()
		hs256 = ok && !esc && string(b[start:end]) == "HS256"
		return ok && !esc
	})
	if !ok || !s.end() {
		return false, false
	}
	return hs256, true
}

// Claims the fast path knows; a bit each, to spot repeats.
const (
	claimSub = 1 << iota
	claimExp
	claimNbf
	claimIat
	claimRole
	claimIss
	claimAud
	claimJti
)

var claimNames = [...]string{"sub", "exp", "nbf", "iat", "role", "iss", "aud", "jti"}

// claimOf returns the bit of a known claim, 0 for another key, or -1 for a
// key encoding/json would match to a known claim without being it exactly
// (it matches field names case-insensitively, with Unicode folding).
func claimOf(key []byte) int {
	for i, n := range claimNames {
		if string(key) == n {
			return 1 << i
		}
	}
	for _, n := range claimNames {
		if bytes.EqualFold(key, []byte(n)) {
			return -1
		}
	}
	return 0
}

// parse decodes the claims as golang-jwt would into refClaims; false means
// encoding/json refuses them.
func (c *hsClaims) parse(b []byte) bool {
	if c.parseFast(b) {
		return true
	}
	*c = hsClaims{slow: true}
	var r refClaims
	if json.Unmarshal(b, &r) != nil {
		return false
	}
	c.subStr = r.Subject
	c.admin = r.Role == "admin"
	if r.ExpiresAt != nil {
		c.exp, c.hasExp = r.ExpiresAt.Time, true
	}
	if r.NotBefore != nil {
		c.nbf, c.hasNbf = r.NotBefore.Time, true
	}
	return true
}

// parseFast returns false when unsure (see above), true with c filled in.
func (c *hsClaims) parseFast(b []byte) bool {
	s := scanner{b: b}
	seen := 0
	ok := s.object(func(key []byte, escaped bool) bool {
		if escaped {
			return false
		}
		claim := claimOf(key)
		switch {
		case claim < 0 || claim&seen != 0:
			return false
		case claim == 0:
			return s.value()
		}
		seen |= claim
		switch claim {
		case claimSub:
			v, ok := s.plainStringOrNull()
			c.sub = v
			return ok
		case claimRole:
			v, ok := s.plainStringOrNull()
			c.admin = string(v) == "admin"
			return ok
		case claimIss, claimJti:
			return s.stringOrNull()
		case claimAud:
			return s.audience()
		case claimExp:
			c.exp, c.hasExp = s.dateOrNull()
		case claimNbf:
			c.nbf, c.hasNbf = s.dateOrNull()
		case claimIat:
			s.dateOrNull()
		}
		return s.ok
	})
	return ok && s.end()
}

// scanner walks JSON text. Each method returns false on anything it does
// not accept; callers then treat the input as unsure.
type scanner struct {
	b  []byte
	i  int
	ok bool // dateOrNull's verdict
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// end reports whether only whitespace is left.
func (s *scanner) end() bool {
	s.ws()
	return s.i == len(s.b)
}

// object scans an object, calling member for each key with the scanner at
// the key's value (whitespace skipped); member must consume the value.
func (s *scanner) object(member func(key []byte, escaped bool) bool) bool {
	s.ws()
	if s.peek() != '{' {
		return false
	}
	s.i++
	s.ws()
	if s.peek() == '}' {
		s.i++
		return true
	}
	for {
		start, end, esc, ok := s.str()
		if !ok {
			return false
		}
		s.ws()
		if s.peek() != ':' {
			return false
		}
		s.i++
		s.ws()
		if !member(s.b[start:end], esc) {
			return false
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
			s.ws()
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

// str scans a string; it returns its raw content's bounds and whether it
// holds escapes.
func (s *scanner) str() (start, end int, escaped, ok bool) {
	if s.peek() != '"' {
		return 0, 0, false, false
	}
	s.i++
	start = s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return start, s.i - 1, escaped, true
		case c == '\\':
			escaped = true
			if !s.escape() {
				return 0, 0, false, false
			}
		case c < 0x20:
			return 0, 0, false, false
		default:
			s.i++
		}
	}
	return 0, 0, false, false
}

func (s *scanner) escape() bool {
	s.i++ // the backslash
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.i++
		return true
	case 'u':
		if s.i+4 >= len(s.b) {
			return false
		}
		for _, h := range s.b[s.i+1 : s.i+5] {
			if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
				return false
			}
		}
		s.i += 5
		return true
	}
	return false
}

// value scans any JSON value.
func (s *scanner) value() bool {
	switch c := s.peek(); {
	case c == '{':
		return s.object(func([]byte, bool) bool { return s.value() })
	case c == '[':
		return s.array(s.value)
	case c == '"':
		_, _, _, ok := s.str()
		return ok
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || '0' <= c && c <= '9':
		_, ok := s.number()
		return ok
	}
	return false
}

func (s *scanner) array(elem func() bool) bool {
	s.i++ // '['
	s.ws()
	if s.peek() == ']' {
		s.i++
		return true
	}
	for {
		if !elem() {
			return false
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
			s.ws()
		case ']':
			s.i++
			return true
		default:
			return false
		}
	}
}

func (s *scanner) literal(lit string) bool {
	if !bytes.HasPrefix(s.b[s.i:], []byte(lit)) {
		return false
	}
	s.i += len(lit)
	return true
}

// number scans a JSON number; integer says it is a plain non-negative
// integer of at most 15 digits (exact in a float64).
func (s *scanner) number() (integer, ok bool) {
	start := s.i
	if s.peek() == '-' {
		s.i++
	}
	switch c := s.peek(); {
	case c == '0':
		s.i++
	case '1' <= c && c <= '9':
		s.digits()
	default:
		return false, false
	}
	integer = s.b[start] != '-' && s.i-start <= 15
	if s.peek() == '.' {
		s.i++
		if !s.digits() {
			return false, false
		}
		integer = false
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if !s.digits() {
			return false, false
		}
		integer = false
	}
	return integer, true
}

func (s *scanner) digits() bool {
	start := s.i
	for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}

// plainStringOrNull scans a string without escapes (its bytes are its
// value) or null (nil).
func (s *scanner) plainStringOrNull() ([]byte, bool) {
	if s.peek() == 'n' {
		return nil, s.literal("null")
	}
	start, end, esc, ok := s.str()
	return s.b[start:end], ok && !esc
}

func (s *scanner) stringOrNull() bool {
	if s.peek() == 'n' {
		return s.literal("null")
	}
	_, _, _, ok := s.str()
	return ok
}

// audience scans what golang-jwt's ClaimStrings takes: a string, null, or
// an array of strings.
func (s *scanner) audience() bool {
	if s.peek() != '[' {
		return s.stringOrNull()
	}
	return s.array(func() bool {
		_, _, _, ok := s.str()
		return ok
	})
}

// dateOrNull scans a NumericDate the fast path takes: a plain integer (then
// the time and true) or null (absent). s.ok says whether it was either.
func (s *scanner) dateOrNull() (time.Time, bool) {
	if s.peek() == 'n' {
		s.ok = s.literal("null")
		return time.Time{}, false
	}
	start := s.i
	integer, ok := s.number()
	s.ok = ok && integer
	if !s.ok {
		return time.Time{}, false
	}
	var n int64
	for _, c := range s.b[start:s.i] {
		n = n*10 + int64(c-'0')
	}
	return time.Unix(n, 0), true
}
