package order_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/order"
)

// FuzzParseCursor: any string is either rejected with ErrBadCursor or
// parses to a cursor whose String() parses back to the same cursor (and is
// canonical: encoding it again gives the same string).
func FuzzParseCursor(f *testing.F) {
	f.Add("")
	f.Add(order.Cursor{CreatedAt: time.Date(2026, 11, 29, 20, 0, 0, 123456000, time.UTC), ID: "0VQ3J8H1C0000000000000000K"}.String())
	f.Add(enc("1:a"))
	f.Add(enc("0:a"))
	f.Add(enc("-1:a"))
	f.Add(enc("01:a"))
	f.Add(enc("9223372036854775807:" + strings.Repeat("z", 64)))
	f.Add(enc("9223372036854775808:a"))
	f.Add(enc("1:a:b"))
	f.Add(enc("1:"))
	f.Add(enc("1:a b"))
	f.Add("MTphYmM=")
	f.Add("MTph\nYmM")
	f.Add("garbage")
	f.Add(strings.Repeat("A", 201))
	f.Fuzz(func(t *testing.T, s string) {
		c, err := order.ParseCursor(s)
		if err != nil {
			if !errors.Is(err, order.ErrBadCursor) {
				t.Fatalf("ParseCursor(%q) = %v, want ErrBadCursor", s, err)
			}
			if !cmp.Equal(order.Cursor{}, c) {
				t.Fatalf("ParseCursor(%q) failed but returned %+v", s, c)
			}
			return
		}
		if s == "" {
			if !c.IsZero() {
				t.Fatalf(`ParseCursor("") = %+v, want zero`, c)
			}
			return
		}
		if c.IsZero() {
			t.Fatalf("ParseCursor(%q) = zero cursor for a non-empty string", s)
		}
		if c.CreatedAt.Location() != time.UTC || c.CreatedAt.Nanosecond()%1000 != 0 {
			t.Fatalf("ParseCursor(%q) time %v is not UTC microseconds", s, c.CreatedAt)
		}
		if len(c.ID) == 0 || len(c.ID) > 64 {
			t.Fatalf("ParseCursor(%q) id %q has length %d", s, c.ID, len(c.ID))
		}
		again := c.String()
		c2, err := order.ParseCursor(again)
		if err != nil {
			t.Fatalf("ParseCursor(%q).String() = %q does not parse: %v", s, again, err)
		}
		if diff := cmp.Diff(c, c2); diff != "" {
			t.Fatalf("round trip of %q mismatch (-want +got):\n%s", s, diff)
		}
		if c2.String() != again {
			t.Fatalf("String() is not canonical: %q then %q", again, c2.String())
		}
	})
}

func validEvent() order.Placed {
	return order.Placed{V: 1, OrderID: "0VQ3J8H1C0000000000000000K", SaleID: "bf-2026", SKU: "sku-1", UserID: 42,
		Quantity: 2, PriceCents: 999, Key: "key-1", PlacedAt: time.Date(2026, 11, 29, 20, 0, 0, 123456000, time.UTC)}
}

func TestPlacedValidate(t *testing.T) {
	with := func(f func(*order.Placed)) order.Placed { e := validEvent(); f(&e); return e }
	tests := []struct {
		name string
		e    order.Placed
		ok   bool
	}{
		{"valid", validEvent(), true},
		{"future version", with(func(e *order.Placed) { e.V = 2 }), true},
		{"free", with(func(e *order.Placed) { e.PriceCents = 0 }), true},
		{"version 0", with(func(e *order.Placed) { e.V = 0 }), false},
		{"no order id", with(func(e *order.Placed) { e.OrderID = "" }), false},
		{"bad sale id", with(func(e *order.Placed) { e.SaleID = "a b" }), false},
		{"bad sku", with(func(e *order.Placed) { e.SKU = "" }), false},
		{"user 0", with(func(e *order.Placed) { e.UserID = 0 }), false},
		{"negative user", with(func(e *order.Placed) { e.UserID = -1 }), false},
		{"quantity 0", with(func(e *order.Placed) { e.Quantity = 0 }), false},
		{"negative price", with(func(e *order.Placed) { e.PriceCents = -1 }), false},
		{"no key", with(func(e *order.Placed) { e.Key = "" }), false},
		{"key with newline", with(func(e *order.Placed) { e.Key = "a\nb" }), false},
		{"no time", with(func(e *order.Placed) { e.PlacedAt = time.Time{} }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.e.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok %v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, spike.ErrInvalid) {
				t.Errorf("Validate() = %v, want an ErrInvalid", err)
			}
		})
	}
	e := validEvent()
	want := order.Order{ID: e.OrderID, SaleID: e.SaleID, SKU: e.SKU, UserID: e.UserID, Quantity: e.Quantity,
		PriceCents: e.PriceCents, Status: order.Pending, IdempotencyKey: e.Key, CreatedAt: e.PlacedAt}
	if diff := cmp.Diff(want, e.Order()); diff != "" {
		t.Errorf("Order() mismatch (-want +got):\n%s", diff)
	}
}

// FuzzPlacedEvent decodes arbitrary bytes as an OrderPlaced event the way
// the consumer does. A valid event must survive json.Marshal → Unmarshal
// unchanged and still be valid, and its Order must carry its fields.
func FuzzPlacedEvent(f *testing.F) {
	good, _ := json.Marshal(validEvent())
	f.Add(good)
	f.Add([]byte(`{"v":1,"order_id":"o","sale_id":"s","sku":"k","user_id":1,"quantity":1,"price_cents":0,"idempotency_key":" ","placed_at":"2026-11-29T20:00:00+01:00"}`))
	f.Add([]byte(`{"v":2,"order_id":"o","sale_id":"s","sku":"k","user_id":9223372036854775807,"quantity":9223372036854775807,"price_cents":9223372036854775807,"idempotency_key":"~","placed_at":"0001-01-01T00:00:00.000000001Z","extra":[1,2,3]}`))
	f.Add([]byte(`{"V":1,"ORDER_ID":"o","Sale_Id":"s","sku":"k","user_id":1,"quantity":1,"price_cents":1,"idempotency_key":"k","placed_at":"2026-11-29T20:00:00Z"}`))
	f.Add([]byte(`{"v":1,"order_id":"\ud800","sale_id":"s","sku":"k","user_id":1,"quantity":1,"price_cents":1,"idempotency_key":"k","placed_at":"2026-11-29T20:00:00Z"}`))
	f.Add([]byte(`{"v":1,"user_id":"1"}`))
	f.Add([]byte(`{"v":1.5}`))
	f.Add([]byte(`{"placed_at":"yesterday"}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[]`))
	f.Add([]byte(``))
	f.Add([]byte(`{"v":1}{"v":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var e order.Placed
		if err := json.Unmarshal(data, &e); err != nil {
			return
		}
		if err := e.Validate(); err != nil {
			if !errors.Is(err, spike.ErrInvalid) {
				t.Fatalf("Validate() = %v, want ErrInvalid", err)
			}
			return
		}
		// Validate's promises.
		if e.V < 1 || e.OrderID == "" || !spike.ValidID(e.SaleID) || !spike.ValidID(e.SKU) || e.UserID <= 0 ||
			e.Quantity < 1 || e.PriceCents < 0 || !spike.ValidIdempotencyKey(e.Key) || e.PlacedAt.IsZero() {
			t.Fatalf("Validate() accepted %+v", e)
		}
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("Marshal(%+v) of a valid event: %v", e, err)
		}
		var back order.Placed
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("Unmarshal(%s): %v", b, err)
		}
		if diff := cmp.Diff(e, back); diff != "" {
			t.Fatalf("round trip mismatch (-want +got):\n%s", diff)
		}
		if err := back.Validate(); err != nil {
			t.Fatalf("round-tripped event is invalid: %v", err)
		}
		o := back.Order()
		if o.ID != e.OrderID || o.UserID != e.UserID || o.Quantity != e.Quantity || o.Status != order.Pending ||
			o.IdempotencyKey != e.Key || !o.CreatedAt.Equal(e.PlacedAt) || o.PriceCents != e.PriceCents {
			t.Fatalf("Order() = %+v does not carry %+v", o, e)
		}
	})
}
