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
	node atomic.Uint64 // 48 bits
	seq  atomic.Uint32
	now  func() time.Time
}

// NewIDGenerator returns a generator with a fresh random node id.
func NewIDGenerator() *IDGenerator {
	var b [4]byte
	_, _ = rand.Read(b[:])
	g := &IDGenerator{now: time.Now}
	g.NewNode()
	g.seq.Store(binary.BigEndian.Uint32(b[:]))
	return g
}

// Node returns the generator's node id: the 48 bits every id it makes
// carries, in hex (12 characters).
func (g *IDGenerator) Node() string { return formatNode(g.node.Load()) }

// NewNode gives the generator a fresh random node id and returns it. Ids
// made before and after never share a node: clustered instances name
// their lease after the node (an instance that lost its lease goes on
// under a new one, so its old reservations are known to be abandoned).
func (g *IDGenerator) NewNode() string {
	var b [8]byte
	_, _ = rand.Read(b[2:])
	n := binary.BigEndian.Uint64(b[:])
	g.node.Store(n)
	return formatNode(n)
}

// IDNode returns the node id (as Node writes it) of an order id that
// FormatID wrote; ok is false for any other string.
func IDNode(id string) (node string, ok bool) {
	raw, ok := ParseID(id)
	if !ok {
		return "", false
	}
	var b [8]byte
	copy(b[2:], raw[6:12])
	return formatNode(binary.BigEndian.Uint64(b[:])), true
}

func formatNode(n uint64) string {
	const hexdigits = "0123456789abcdef"
	var out [12]byte
	for i := 11; i >= 0; i-- {
		out[i] = hexdigits[n&0xf]
		n >>= 4
	}
	return string(out[:])
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
	var node [8]byte
	binary.BigEndian.PutUint64(node[:], g.node.Load())
	copy(raw[6:12], node[2:])
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
