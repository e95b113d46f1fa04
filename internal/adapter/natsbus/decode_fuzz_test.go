package natsbus

import (
	"testing"
	"time"

	"github.com/spikehq/spike/internal/domain/order"
)

// FuzzDecodeEvents drives the stream's message decoder (the fast path and
// the encoding/json fallback, one event or a batch) with arbitrary bytes.
// It never panics; a refused message appends nothing; an accepted one
// appends at least one event, each valid, that the publisher's encoder
// writes back to a message decoding to the same events.
func FuzzDecodeEvents(f *testing.F) {
	e := order.Placed{V: 1, OrderID: "06H2HVJ3P87HFS8766S26U3DH0", SaleID: "s", SKU: "p", UserID: 7, Quantity: 2, PriceCents: 50,
		Key: "k-1", PlacedAt: time.Date(2026, 11, 29, 23, 0, 0, 123456789, time.UTC)}
	f.Add(appendPlaced(nil, &e))
	f.Add(appendBatch(nil, []*publishRequest{{e: e}, {e: e}}))
	f.Add([]byte(` [ {"v":1,"order_id":"a","sale_id":"s","sku":"p","user_id":1,"quantity":1,"price_cents":1,"idempotency_key":"k","placed_at":"2026-11-29T23:00:00+01:00","extra":[1,{"x":null}]} ] `))
	f.Add([]byte(`{"v":1,"order_id":"a","sale_id":"s","sku":"p","user_id":0,"quantity":1,"price_cents":1,"idempotency_key":"k","placed_at":"2026-11-29T23:00:00Z"}`))
	f.Add([]byte(`{"v":1,"order_id":"a","sale_id":"s/../x","sku":"p","user_id":1,"quantity":1,"price_cents":1,"idempotency_key":"k","placed_at":"2026-11-29T23:00:00Z"}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`[null]`))
	f.Add([]byte(`null`))
	f.Add([]byte(``))
	f.Add([]byte(`{"v":1e1000}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		keep := order.Placed{OrderID: "kept"}
		out, err := decodeEvents(data, []order.Placed{keep})
		if len(out) < 1 || out[0] != keep {
			t.Fatalf("%q: the events before were not kept: %+v", data, out)
		}
		if err != nil {
			if len(out) != 1 {
				t.Fatalf("%q refused (%v) but appended %d events", data, err, len(out)-1)
			}
			return
		}
		events := out[1:]
		if len(events) == 0 {
			t.Fatalf("%q accepted with no event", data)
		}
		reqs := make([]*publishRequest, len(events))
		for i := range events {
			if err := events[i].Validate(); err != nil {
				t.Fatalf("%q: accepted an invalid event %+v: %v", data, events[i], err)
			}
			reqs[i] = &publishRequest{e: events[i]}
		}
		enc := appendBatch(nil, reqs)
		back, err := decodeEvents(enc, nil)
		if err != nil || len(back) != len(events) {
			t.Fatalf("%q re-encoded as %q: %d events, %v", data, enc, len(back), err)
		}
		for i := range back {
			a, b := events[i], back[i]
			if !a.PlacedAt.Equal(b.PlacedAt) || !a.PaymentDeadline.Equal(b.PaymentDeadline) {
				t.Fatalf("%q: times changed in the round trip: %+v → %+v", data, a, b)
			}
			a.PlacedAt, b.PlacedAt, a.PaymentDeadline, b.PaymentDeadline = time.Time{}, time.Time{}, time.Time{}, time.Time{}
			if a != b {
				t.Fatalf("%q: round trip %+v → %+v", data, events[i], back[i])
			}
		}
	})
}
