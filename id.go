package spike

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"strconv"
	"sync/atomic"
	"time"
)

// ValidID reports whether s is a valid SKU or sale id: 1–64 characters of
// [A-Za-z0-9._-].
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// ValidIdempotencyKey reports whether k is 1–128 printable ASCII characters.
func ValidIdempotencyKey(k string) bool {
	if len(k) == 0 || len(k) > 128 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// ParseUserID parses a user id: a positive 64-bit integer in decimal.
func ParseUserID(s string) (int64, bool) {
	if len(s) == 0 || len(s) > 19 || s[0] == '+' || s[0] == '-' || (s[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}

// IDGenerator makes order ids that are unique across a deployment and
// roughly time-ordered: 48 bits of Unix milliseconds, 48 random bits fixed
// per generator (the instance) and a 32-bit counter, written in base32hex
// (26 characters) so that ids sort like the time they encode.
// An IDGenerator is safe for concurrent use.
type IDGenerator struct {
	node [6]byte
	seq  atomic.Uint32
	now  func() time.Time
}

// NewIDGenerator returns a generator with a fresh random node id.
func NewIDGenerator() *IDGenerator {
	var b [10]byte
	_, _ = rand.Read(b[:])
	g := &IDGenerator{now: time.Now}
	copy(g.node[:], b[:6])
	g.seq.Store(binary.BigEndian.Uint32(b[6:]))
	return g
}

var idEncoding = base32.HexEncoding.WithPadding(base32.NoPadding)

// New returns a new order id.
func (g *IDGenerator) New() string { return FormatID(g.NewRaw()) }

// NewRaw returns a new order id in its 16-byte binary form, for stores that
// keep millions of them: FormatID(g.NewRaw()) is what New returns.
func (g *IDGenerator) NewRaw() [16]byte {
	var raw [16]byte
	ms := uint64(g.now().UnixMilli())
	binary.BigEndian.PutUint64(raw[0:8], ms<<16) // keep the low 48 bits of ms in bytes 0..5
	copy(raw[6:12], g.node[:])
	binary.BigEndian.PutUint32(raw[12:16], g.seq.Add(1))
	return raw
}

// FormatID writes a binary order id as New does: 26 characters of
// base32hex.
func FormatID(raw [16]byte) string {
	var out [26]byte
	idEncoding.Encode(out[:], raw[:])
	return string(out[:])
}

// ParseID reads an order id that FormatID wrote; ok is false for any other
// string (another length, lower case, non-zero trailing bits), so that
// FormatID(raw) == s whenever ok.
func ParseID(s string) (raw [16]byte, ok bool) {
	if len(s) != 26 {
		return raw, false
	}
	var in, back [26]byte
	copy(in[:], s)
	if n, err := idEncoding.Decode(raw[:], in[:]); err != nil || n != 16 {
		return [16]byte{}, false
	}
	idEncoding.Encode(back[:], raw[:])
	if back != in {
		return [16]byte{}, false
	}
	return raw, true
}
