package httpapi

import (
	"errors"
	"strings"
	"testing"

	"github.com/spikehq/spike"
)

// TestDecodeStrict: nothing a client sends is silently ignored.
func TestDecodeStrict(t *testing.T) {
	type body struct {
		Name  *string `json:"name"`
		Price *int64  `json:"price_cents"`
		Tags  []struct {
			K string `json:"k"`
		} `json:"tags"`
	}
	tests := []struct {
		in, wantErr string // wantErr: "" for ok, else a part of the message
	}{
		{`{"name":"a"}`, ""},
		{`{"name":"a","price_cents":1,"tags":[{"k":"x"},{"k":"y"}]}`, ""},
		{`{"stock":5}`, `unknown field "stock"`},
		{`{"name":"a","name":"b"}`, `"name" is given twice`},
		{`{"tags":[{"k":"x","k":"y"}]}`, `"k" is given twice`},
		{`{"tags":[{"k":"x"}],"name":"a","tags":[]}`, `"tags" is given twice`},
		{`{"name":"a"} {"name":"b"}`, "data after the object"},
		{`{"price_cents":"1"}`, `"price_cents" must be an integer`},
		{`{"name":"a"`, "malformed JSON"},
	}
	for _, tt := range tests {
		var v body
		err := decodeBytes([]byte(tt.in), &v, false)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tt.in, err)
		case tt.wantErr != "" && (err == nil || !errors.Is(err, spike.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: %v, want an invalid error with %q", tt.in, err, tt.wantErr)
		}
	}
}

func FuzzDuplicateKey(f *testing.F) {
	for _, s := range []string{`{"a":1,"a":2}`, `{"a":{"b":1,"b":2}}`, `[{"a":1},{"a":1}]`, `{"a":[1,{"a":1}]}`, `{`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		duplicateKey([]byte(s)) // must not panic or loop
		var v map[string]any
		decodeBytes([]byte(s), &v, true)
	})
}
