package httpapi

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/catalog"
)

// bodyTypes are the request bodies of every route that has one, by the
// index FuzzDecodeBodies picks them with.
var bodyTypes = []struct {
	name       string
	new        func() any
	allowEmpty bool
}{
	{"product", func() any { return new(productRequest) }, false},
	{"product update", func() any { return new(catalog.ProductUpdate) }, false},
	{"sale", func() any { return new(saleRequest) }, false},
	{"ship", func() any { return new(shipRequest) }, false},
	{"stock", func() any { return new(stockRequest) }, false},
	{"payment", func() any { return new(paymentRequest) }, true},
	{"switch", func() any {
		return new(struct {
			Value json.RawMessage `json:"value"`
		})
	}, false},
	{"no body (cancel, deliver, refund, end)", func() any { return new(struct{}) }, true},
}

// FuzzDecodeBodies drives the strict decoder with arbitrary bytes for
// every request body type. It never panics; a refusal is a 400 invalid
// (never a 5xx); what it accepts is well-formed JSON that encoding/json
// decodes to the same value (strict only ever refuses more).
func FuzzDecodeBodies(f *testing.F) {
	seeds := []string{
		`{"sku":"p1","name":"Widget","price_cents":1999,"stock":10}`,
		`{"name":"renamed","price_cents":5}`,
		`{"id":"s1","sku":"p1","stock":1,"price_cents":1,"per_user_limit":3,"starts_at":"2030-01-01T00:00:00Z","ends_at":null,"payment_window":0}`,
		`{"carrier":"DHL","tracking":"T-1"}`,
		`{"delta":-5,"reason":"write-off"}`,
		`{"provider":"sandbox"}`,
		`{"value":false}`, `{"value":"20"}`, `{"value":{"a":[1,2]}}`,
		`{}`, ``, `  `, `null`, `[]`, `{"a":1}`, `{"name":"a","name":"b"}`, `{"x":{"y":1,"y":2}}`,
		`{"stock":1e400}`, `{"stock":"1"}`, `{"delta":9223372036854775808}`, `{"sku":"\ud800"}`,
		`{} {}`, `{"carrier":"a"} x`, `{"starts_at":"2030-13-01T00:00:00Z"}`,
	}
	for i := range bodyTypes {
		for _, s := range seeds {
			f.Add(uint8(i), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		bt := bodyTypes[int(which)%len(bodyTypes)]
		strict := bt.new()
		err := decodeBytes(body, strict, bt.allowEmpty)
		if err != nil {
			var se *spike.Error
			if !errors.As(err, &se) || !errors.Is(err, spike.ErrInvalid) {
				t.Fatalf("%s %q: refused with %T %v, want a spike.ErrInvalid", bt.name, body, err, err)
			}
			if status, code, _ := statusOf(err); status != 400 || code != "invalid" {
				t.Fatalf("%s %q: refusal answers %d %s", bt.name, body, status, code)
			}
			return
		}
		if len(trimSpace(body)) == 0 {
			return // allowed empty: nothing decoded
		}
		if !json.Valid(body) {
			t.Fatalf("%s: accepted malformed JSON %q", bt.name, body)
		}
		lenient := bt.new()
		if err := json.Unmarshal(body, lenient); err != nil {
			t.Fatalf("%s %q: strict accepted, encoding/json: %v", bt.name, body, err)
		}
		if !reflect.DeepEqual(strict, lenient) {
			t.Fatalf("%s %q: strict %+v, encoding/json %+v", bt.name, body, strict, lenient)
		}
	})
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
