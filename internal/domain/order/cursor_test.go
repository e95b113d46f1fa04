package order_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/order"
)

func TestCursorRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		c    order.Cursor
	}{
		{"typical", order.Cursor{CreatedAt: time.Date(2026, 11, 29, 20, 0, 0, 123456000, time.UTC), ID: "0VQ3J8H1C0000000000000000K"}},
		{"epoch", order.Cursor{CreatedAt: time.Unix(0, 0).UTC(), ID: "x"}},
		{"far future", order.Cursor{CreatedAt: time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC), ID: "z"}},
		{"id with a colon", order.Cursor{CreatedAt: time.UnixMicro(1).UTC(), ID: "a:b:c"}},
		{"id of 64 printable chars", order.Cursor{CreatedAt: time.UnixMicro(42).UTC(), ID: strings.Repeat("~", 64)}},
		{"max micros", order.Cursor{CreatedAt: time.UnixMicro(1<<63 - 1).UTC(), ID: "m"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.c.String()
			if s == "" {
				t.Fatalf("String() of a non-zero cursor is empty")
			}
			for i := 0; i < len(s); i++ {
				if !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", rune(s[i])) {
					t.Fatalf("String() = %q is not URL-safe", s)
				}
			}
			got, err := order.ParseCursor(s)
			if err != nil {
				t.Fatalf("ParseCursor(%q) = %v", s, err)
			}
			if diff := cmp.Diff(tt.c, got); diff != "" {
				t.Errorf("round trip mismatch (-want +got):\n%s", diff)
			}
			if got.CreatedAt.Location() != time.UTC {
				t.Errorf("parsed time %v is not UTC", got.CreatedAt)
			}
		})
	}
}

func TestCursorTruncatesToMicroseconds(t *testing.T) {
	c := order.Cursor{CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.FixedZone("X", 7200)), ID: "o"}
	got, err := order.ParseCursor(c.String())
	if err != nil {
		t.Fatal(err)
	}
	want := order.Cursor{CreatedAt: c.CreatedAt.UTC().Truncate(time.Microsecond), ID: "o"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseCursor mismatch (-want +got):\n%s", diff)
	}
}

func TestZeroCursor(t *testing.T) {
	if s := (order.Cursor{}).String(); s != "" {
		t.Errorf("zero Cursor String() = %q, want empty", s)
	}
	c, err := order.ParseCursor("")
	if err != nil || !c.IsZero() {
		t.Errorf(`ParseCursor("") = %+v, %v; want the zero cursor`, c, err)
	}
}

func enc(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestParseCursorRejects(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"not base64", "!!!"},
		{"padded base64", base64.URLEncoding.EncodeToString([]byte("1:abc"))},
		{"std alphabet", strings.ReplaceAll(strings.ReplaceAll(enc("1:a?>?>"), "-", "+"), "_", "/")},
		{"no colon", enc("12345")},
		{"empty id", enc("12345:")},
		{"empty time", enc(":abc")},
		{"negative time", enc("-1:abc")},
		{"plus sign", enc("+1:abc")},
		{"leading zero", enc("01:abc")},
		{"float time", enc("1.5:abc")},
		{"hex time", enc("0x10:abc")},
		{"time overflows", enc("9223372036854775808:abc")},
		{"space in id", enc("1:a b")},
		{"control in id", enc("1:a\x00")},
		{"newline in id", enc("1:a\n")},
		{"DEL in id", enc("1:a\x7f")},
		{"non-ASCII id", enc("1:caf\u00e9")},
		{"id of 65 chars", enc("1:" + strings.Repeat("a", 65))},
		{"too long", strings.Repeat("A", 201)},
		{"space around time", enc(" 1:abc")},
		{"garbage", "garbage cursor"},
		{"percent-encoded", "MTphYmM%3D"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := order.ParseCursor(tt.in)
			if !errors.Is(err, order.ErrBadCursor) || !errors.Is(err, spike.ErrInvalid) {
				t.Fatalf("ParseCursor(%q) = %+v, %v; want ErrBadCursor", tt.in, c, err)
			}
			if diff := cmp.Diff(order.Cursor{}, c); diff != "" {
				t.Errorf("rejected cursor is not zero (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCursorBefore(t *testing.T) {
	at := time.Date(2026, 11, 29, 20, 0, 0, 0, time.UTC)
	c := order.Cursor{CreatedAt: at, ID: "M"}
	tests := []struct {
		name string
		c    order.Cursor
		o    order.Order
		want bool
	}{
		{"zero cursor: everything", order.Cursor{}, order.Order{ID: "Z", CreatedAt: at.Add(time.Hour)}, true},
		{"older", c, order.Order{ID: "Z", CreatedAt: at.Add(-time.Microsecond)}, true},
		{"newer", c, order.Order{ID: "A", CreatedAt: at.Add(time.Microsecond)}, false},
		{"same time, smaller id", c, order.Order{ID: "L", CreatedAt: at}, true},
		{"same time, same id (the cursor's own order)", c, order.Order{ID: "M", CreatedAt: at}, false},
		{"same time, bigger id", c, order.Order{ID: "N", CreatedAt: at}, false},
		{"same microsecond, other nanos", c, order.Order{ID: "L", CreatedAt: at.Add(999 * time.Nanosecond)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.Before(&tt.o); got != tt.want {
				t.Errorf("Before() = %v, want %v", got, tt.want)
			}
		})
	}
	o := order.Order{ID: "K", CreatedAt: at}
	if diff := cmp.Diff(order.Cursor{CreatedAt: at, ID: "K"}, order.CursorAfter(&o)); diff != "" {
		t.Errorf("CursorAfter() mismatch (-want +got):\n%s", diff)
	}
}
