package spike_test

import (
	"encoding/base32"
	"encoding/binary"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike"
)

func TestValidID(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"empty", "", false},
		{"one char", "a", true},
		{"all classes", "Az09._-", true},
		{"64 chars", strings.Repeat("x", 64), true},
		{"65 chars", strings.Repeat("x", 65), false},
		{"space", "a b", false},
		{"slash", "a/b", false},
		{"colon", "a:b", false},
		{"percent", "a%20", false},
		{"plus", "a+b", false},
		{"non-ASCII letter", "caf\u00e9", false},
		{"NUL", "a\x00", false},
		{"newline", "a\n", false},
		{"dots only", "..", true},
		{"high byte", "a\xff", false},
		{"tilde", "a~", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := spike.ValidID(tt.in); got != tt.want {
				t.Errorf("ValidID(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestValidIdempotencyKey(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"empty", "", false},
		{"one char", "k", true},
		{"space is printable", "a b", true},
		{"all printable ASCII", printableASCII(), true},
		{"128 chars", strings.Repeat("k", 128), true},
		{"129 chars", strings.Repeat("k", 129), false},
		{"tab", "a\tb", false},
		{"newline", "a\nb", false},
		{"carriage return", "a\rb", false},
		{"NUL", "\x00", false},
		{"DEL", "a\x7f", false},
		{"unit separator", "\x1f", false},
		{"non-ASCII", "cl\u00e9", false},
		{"invalid UTF-8", "\xff\xfe", false},
		{"uuid", "0f8fad5b-d9cb-469f-a165-70867728950e", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := spike.ValidIdempotencyKey(tt.in); got != tt.want {
				t.Errorf("ValidIdempotencyKey(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func printableASCII() string {
	var b strings.Builder
	for c := byte(0x20); c <= 0x7e; c++ {
		b.WriteByte(c)
	}
	return b.String()
}

func TestParseUserID(t *testing.T) {
	type result struct {
		ID int64
		OK bool
	}
	tests := []struct {
		name string
		in   string
		want result
	}{
		{"one", "1", result{1, true}},
		{"42", "42", result{42, true}},
		{"max int64", "9223372036854775807", result{9223372036854775807, true}},
		{"max int64 + 1", "9223372036854775808", result{}},
		{"20 digits", "10000000000000000000", result{}},
		{"zero", "0", result{}},
		{"leading zero", "042", result{}},
		{"negative", "-1", result{}},
		{"plus sign", "+1", result{}},
		{"empty", "", result{}},
		{"space", " 1", result{}},
		{"trailing space", "1 ", result{}},
		{"hex", "0x10", result{}},
		{"float", "1.0", result{}},
		{"exponent", "1e3", result{}},
		{"letters", "abc", result{}},
		{"underscore", "1_000", result{}},
		{"non-ASCII digit", "\u0661", result{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, ok := spike.ParseUserID(tt.in)
			if diff := cmp.Diff(tt.want, result{id, ok}); diff != "" {
				t.Errorf("ParseUserID(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

// idTime decodes the Unix milliseconds an order id encodes.
func idTime(t *testing.T, id string) int64 {
	t.Helper()
	raw, err := base32.HexEncoding.WithPadding(base32.NoPadding).DecodeString(id)
	if err != nil || len(raw) != 16 {
		t.Fatalf("id %q is not 16 bytes of base32hex: %v", id, err)
	}
	var b [8]byte
	copy(b[2:], raw[:6])
	return int64(binary.BigEndian.Uint64(b[:]))
}

func TestIDGeneratorShape(t *testing.T) {
	g := spike.NewIDGenerator()
	before := time.Now().UnixMilli()
	id := g.New()
	after := time.Now().UnixMilli()
	if len(id) != 26 {
		t.Fatalf("len(%q) = %d, want 26", id, len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'V') {
			t.Fatalf("id %q has %q, not a base32hex character", id, c)
		}
	}
	if ms := idTime(t, id); ms < before || ms > after {
		t.Errorf("id %q encodes %d ms, want within [%d, %d]", id, ms, before, after)
	}
	if !spike.ValidID(id) {
		t.Errorf("order id %q is not a valid id", id)
	}
}

func TestIDGeneratorUniqueConcurrent(t *testing.T) {
	const (
		goroutines = 8
		perG       = 10_000
	)
	gens := []*spike.IDGenerator{spike.NewIDGenerator(), spike.NewIDGenerator()} // two instances
	ids := make([][]string, goroutines)
	var wg sync.WaitGroup
	for i := range goroutines {
		wg.Go(func() {
			g := gens[i%len(gens)]
			out := make([]string, perG)
			for j := range out {
				out[j] = g.New()
			}
			ids[i] = out
		})
	}
	wg.Wait()
	seen := make(map[string]bool, goroutines*perG)
	for _, out := range ids {
		for _, id := range out {
			if len(id) != 26 {
				t.Fatalf("len(%q) = %d, want 26", id, len(id))
			}
			if seen[id] {
				t.Fatalf("duplicate id %q", id)
			}
			seen[id] = true
		}
	}
}

func TestIDGeneratorSortsByTime(t *testing.T) {
	base := time.Date(2026, 11, 29, 20, 0, 0, 0, time.UTC)
	var now time.Time
	g := spike.NewIDGeneratorWithClock(func() time.Time { return now })
	other := spike.NewIDGeneratorWithClock(func() time.Time { return now })
	steps := []time.Duration{0, time.Millisecond, 2 * time.Millisecond, time.Second, time.Hour, 24 * time.Hour, 365 * 24 * time.Hour}
	var ids []string
	for _, d := range steps {
		now = base.Add(d)
		id := g.New()
		if ms := idTime(t, id); ms != now.UnixMilli() {
			t.Errorf("id %q encodes %d ms, want %d", id, ms, now.UnixMilli())
		}
		ids = append(ids, id)
	}
	if !slices.IsSorted(ids) {
		t.Errorf("ids made at increasing times do not sort: %q", ids)
	}
	// Across instances: an id from a later millisecond sorts after, whatever the node bits.
	now = base
	a := g.New()
	now = base.Add(time.Millisecond)
	b := other.New()
	if !(a < b) {
		t.Errorf("id %q (t) does not sort before %q (t+1ms, another instance)", a, b)
	}
}

// TestParseID: the binary form of an order id round-trips, and ParseID
// refuses every string FormatID would not write.
func TestParseID(t *testing.T) {
	g := spike.NewIDGenerator()
	for range 100 {
		raw := g.NewRaw()
		s := spike.FormatID(raw)
		got, ok := spike.ParseID(s)
		if !ok || got != raw {
			t.Fatalf("ParseID(%q) = %x, %v; want %x", s, got, ok, raw)
		}
	}
	id := g.New()
	if _, ok := spike.ParseID(id); !ok {
		t.Errorf("ParseID(New() = %q) failed", id)
	}
	for _, s := range []string{
		"", "o1", id[:25], id + "0", strings.ToLower(id),
		id[:25] + "1",           // non-zero trailing bits: decodes, but FormatID never writes it
		id[:10] + "W" + id[11:], // outside base32hex
		id[:10] + "=" + id[11:],
	} {
		if raw, ok := spike.ParseID(s); ok {
			t.Errorf("ParseID(%q) = %x, ok; want refused", s, raw)
		}
	}
}

// TestIDNode: every id names the node of the generator that made it, and a
// new node is never the old one.
func TestIDNode(t *testing.T) {
	g := spike.NewIDGenerator()
	first := g.Node()
	if len(first) != 12 {
		t.Fatalf("Node() = %q, want 12 hex digits", first)
	}
	id := g.New()
	if n, ok := spike.IDNode(id); !ok || n != first {
		t.Errorf("IDNode(%q) = %q, %v; want %q", id, n, ok, first)
	}
	second := g.NewNode()
	if second == first || g.Node() != second {
		t.Errorf("NewNode() = %q after %q, Node() = %q", second, first, g.Node())
	}
	id2 := g.New()
	if n, _ := spike.IDNode(id2); n != second {
		t.Errorf("IDNode(%q) = %q after NewNode, want %q", id2, n, second)
	}
	for _, bad := range []string{"", "x", strings.ToLower(id)} {
		if n, ok := spike.IDNode(bad); ok {
			t.Errorf("IDNode(%q) = %q, true; want false", bad, n)
		}
	}
}
