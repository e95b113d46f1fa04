package api_test

import (
	"encoding/json"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/spikehq/spike/api"
)

// TestSpecIsValid: the document is OpenAPI 3.1 that a validator loads and
// accepts, and its JSON form says the same as the YAML.
func TestSpecIsValid(t *testing.T) {
	for name, b := range map[string][]byte{"yaml": api.YAML(), "json": api.JSON()} {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := doc.Validate(loader.Context); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !doc.IsOpenAPI31OrLater() {
			t.Errorf("%s: openapi %q, want 3.1", name, doc.OpenAPI)
		}
		if n := doc.Paths.Len(); n < 20 {
			t.Errorf("%s: %d paths", name, n)
		}
	}
	var v map[string]any
	if err := json.Unmarshal(api.JSON(), &v); err != nil {
		t.Fatal(err)
	}
	// YAML keys that look like numbers stay strings in JSON.
	ok := v["paths"].(map[string]any)["/v1/products"].(map[string]any)["post"].(map[string]any)["responses"].(map[string]any)["201"]
	if ok == nil {
		t.Errorf(`responses["201"] missing from the JSON form`)
	}
}
