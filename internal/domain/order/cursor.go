package order

import (
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"github.com/spikehq/spike"
)

// Cursor is a position in a buyer's order listing: the last order of the
// previous page. The zero Cursor is the start.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// IsZero reports whether c is the start of a listing.
func (c Cursor) IsZero() bool { return c.ID == "" }

// Before reports whether o sorts after the cursor in newest-first order,
// that is whether o belongs to a page that starts at c.
func (c Cursor) Before(o *Order) bool {
	if c.IsZero() {
		return true
	}
	t, ct := o.CreatedAt.UnixMicro(), c.CreatedAt.UnixMicro()
	return t < ct || (t == ct && o.ID < c.ID)
}

// CursorAfter returns the cursor that continues a listing after o.
func CursorAfter(o *Order) Cursor { return Cursor{CreatedAt: o.CreatedAt, ID: o.ID} }

// String encodes the cursor as an opaque, URL-safe string.
func (c Cursor) String() string {
	if c.IsZero() {
		return ""
	}
	raw := strconv.FormatInt(c.CreatedAt.UnixMicro(), 10) + ":" + c.ID
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// ErrBadCursor is returned by ParseCursor.
var ErrBadCursor = &spike.Error{Kind: spike.ErrInvalid, Message: "cursor is not one this server issued"}

// ParseCursor decodes a cursor made by Cursor.String. The empty string is
// the zero Cursor.
func ParseCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	if len(s) > 200 {
		return Cursor{}, ErrBadCursor
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Cursor{}, ErrBadCursor
	}
	ts, id, ok := strings.Cut(string(raw), ":")
	if !ok || id == "" || len(id) > 64 {
		return Cursor{}, ErrBadCursor
	}
	us, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || us < 0 || strconv.FormatInt(us, 10) != ts {
		return Cursor{}, ErrBadCursor
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return Cursor{}, ErrBadCursor
		}
	}
	return Cursor{CreatedAt: time.UnixMicro(us).UTC(), ID: id}, nil
}
