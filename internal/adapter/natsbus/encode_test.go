package natsbus

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/domain/order"
)

// FuzzAppendPlaced holds the hand-written event encoder to encoding/json:
// what it writes decodes to what json.Marshal's output decodes to.
func FuzzAppendPlaced(f *testing.F) {
	f.Add("06H2HVJ3P87HFS8766S26U3DH0", "sale-1", "sku-1", "key-1", int64(42), int64(1), int64(100), int64(1_700_000_000_123_456_789), int64(0))
	f.Add("06H2HVJ3P87HFS8766S26U3DH0", "sale-1", "sku-1", "key-1", int64(42), int64(1), int64(100), int64(1_700_000_000_123_456_789), int64(900_000_000_000))
	f.Add(`a"b\c`, "\x00\x1f\u2028", "\xff\xfe", "<&>", int64(-1), int64(0), int64(1e12), int64(0), int64(-1))
	f.Fuzz(func(t *testing.T, id, sale, sku, key string, user, qty, price, nanos, window int64) {
		e := order.Placed{V: 1, OrderID: id, SaleID: sale, SKU: sku, UserID: user, Quantity: qty, PriceCents: price, Key: key,
			PlacedAt: time.Unix(0, nanos).UTC()}
		if window != 0 { // zero: no deadline
			e.PaymentDeadline = e.PlacedAt.Add(time.Duration(window))
		}
		want, err := json.Marshal(&e)
		if err != nil {
			t.Skip() // a time json cannot encode
		}
		var fromJSON, fromOurs order.Placed
		if err := json.Unmarshal(want, &fromJSON); err != nil {
			t.Fatal(err)
		}
		got := appendPlaced(nil, &e)
		if err := json.Unmarshal(got, &fromOurs); err != nil {
			t.Fatalf("our encoding %q does not decode: %v", got, err)
		}
		if !fromOurs.PlacedAt.Equal(fromJSON.PlacedAt) {
			t.Fatalf("placed_at: ours %v, json %v", fromOurs.PlacedAt, fromJSON.PlacedAt)
		}
		if !fromOurs.PaymentDeadline.Equal(fromJSON.PaymentDeadline) {
			t.Fatalf("payment_deadline: ours %v, json %v", fromOurs.PaymentDeadline, fromJSON.PaymentDeadline)
		}
		if e.PaymentDeadline.IsZero() && strings.Contains(string(got), "payment_deadline") {
			t.Fatalf("our encoding %q has a zero payment_deadline, want it omitted", got)
		}
		fromOurs.PlacedAt, fromJSON.PlacedAt = time.Time{}, time.Time{}
		fromOurs.PaymentDeadline, fromJSON.PaymentDeadline = time.Time{}, time.Time{}
		if fromOurs != fromJSON {
			t.Fatalf("ours decodes to %+v, json to %+v (ours %q)", fromOurs, fromJSON, got)
		}
	})
}

func BenchmarkEncodePlaced(b *testing.B) {
	e := order.Placed{V: 1, OrderID: "06H2HVJ3P87HFS8766S26U3DH0", SaleID: "big", SKU: "p-big", UserID: 12345, Quantity: 1, PriceCents: 50,
		Key: "k123456789-1-42", PlacedAt: time.Now().UTC()}
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = json.Marshal(&e)
		}
	})
	b.Run("appendPlaced", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf = appendPlaced(buf[:0], &e)
		}
	})
}

// FuzzDecodeFast: whatever the fast decoder accepts, encoding/json decodes
// to the same events.
func FuzzDecodeFast(f *testing.F) {
	e := order.Placed{V: 1, OrderID: "06H2HVJ3P87HFS8766S26U3DH0", SaleID: "s", SKU: "p", UserID: 7, Quantity: 2, PriceCents: 50,
		Key: "k-1", PlacedAt: time.Date(2026, 11, 29, 23, 0, 0, 123456789, time.UTC)}
	one := appendPlaced(nil, &e)
	f.Add(one)
	withDeadline := e
	withDeadline.PaymentDeadline = e.PlacedAt.Add(15 * time.Minute)
	f.Add(appendPlaced(nil, &withDeadline))
	f.Add(appendBatch(nil, []*publishRequest{{e: e}, {e: withDeadline}}))
	f.Add([]byte(`{"v":1,"order_id":"a","sale_id":"s","sku":"p","user_id":1,"quantity":1,"price_cents":1,"idempotency_key":"k","placed_at":"2026-11-29T23:00:00Z","payment_deadline":""}`))
	f.Add(appendBatch(nil, []*publishRequest{{e: e}, {e: e}}))
	f.Add([]byte(`{"v":01,"order_id":"a","sale_id":"s","sku":"p","user_id":1,"quantity":1,"price_cents":1,"idempotency_key":"k","placed_at":"2026-11-29T23:00:00+01:00"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, ok := decodeFast(data, nil)
		if !ok {
			return
		}
		var slow []order.Placed
		if len(data) > 0 && data[0] == '[' {
			if err := json.Unmarshal(data, &slow); err != nil {
				t.Fatalf("fast decoder accepted %q, encoding/json: %v", data, err)
			}
		} else {
			var one order.Placed
			if err := json.Unmarshal(data, &one); err != nil {
				t.Fatalf("fast decoder accepted %q, encoding/json: %v", data, err)
			}
			slow = []order.Placed{one}
		}
		if len(fast) != len(slow) {
			t.Fatalf("%q: fast %d events, json %d", data, len(fast), len(slow))
		}
		for i := range fast {
			if !fast[i].PlacedAt.Equal(slow[i].PlacedAt) {
				t.Fatalf("%q: placed_at fast %v, json %v", data, fast[i].PlacedAt, slow[i].PlacedAt)
			}
			if !fast[i].PaymentDeadline.Equal(slow[i].PaymentDeadline) {
				t.Fatalf("%q: payment_deadline fast %v, json %v", data, fast[i].PaymentDeadline, slow[i].PaymentDeadline)
			}
			a, b := fast[i], slow[i]
			a.PlacedAt, b.PlacedAt = time.Time{}, time.Time{}
			a.PaymentDeadline, b.PaymentDeadline = time.Time{}, time.Time{}
			if a != b {
				t.Fatalf("%q: fast %+v, json %+v", data, fast[i], slow[i])
			}
		}
	})
}

func BenchmarkDecodeBatch(b *testing.B) {
	var batch []*publishRequest
	for i := range 64 {
		batch = append(batch, &publishRequest{e: order.Placed{V: 1, OrderID: "06H2HVJ3P87HFS8766S26U3DH0", SaleID: "big", SKU: "p-big", UserID: int64(i), Quantity: 1, PriceCents: 50,
			Key: "k123456789-1-42", PlacedAt: time.Now().UTC()}})
	}
	data := appendBatch(nil, batch)
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var out []order.Placed
			_ = json.Unmarshal(data, &out)
		}
	})
	b.Run("decodeFast", func(b *testing.B) {
		b.ReportAllocs()
		out := make([]order.Placed, 0, 64)
		for b.Loop() {
			out, _ = decodeFast(data, out[:0])
		}
	})
}
