package httpapi

import (
	"encoding/json"
	"testing"
)

// FuzzQuantityFastPath: whenever the hand parser accepts a body, encoding/json
// must accept it too and decode the same quantity.
func FuzzQuantityFastPath(f *testing.F) {
	for _, s := range []string{`{"quantity":1}`, `{ "quantity" : 2 }`, `{"quantity":-1}`, `{"quantity":0}`, `{"quantity":01}`,
		`{"quantity":1.5}`, `{"quantity":1}x`, `{"quantity":999999999999999999}`, `{"quantity":1,"x":2}`, "{\t\"quantity\":\n3}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		q, ok := fastQuantity(b)
		if !ok {
			return
		}
		var req placeRequest
		if err := json.Unmarshal(b, &req); err != nil {
			t.Fatalf("fast path accepted %q (quantity %d) but encoding/json says %v", b, q, err)
		}
		if req.Quantity == nil || *req.Quantity != q {
			t.Fatalf("fast path read %d from %q, encoding/json %v", q, b, req.Quantity)
		}
	})
}
