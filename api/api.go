// Package api holds Spike's HTTP API description, api/openapi.yaml
// (OpenAPI 3.1), embedded in the binary: the machine-readable form of
// docs/api.md, served by httpapi at GET /openapi.json and checked against
// the router and every response the test suites receive.
package api

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"sync"

	"go.yaml.in/yaml/v3"
)

//go:embed openapi.yaml
var spec []byte

// YAML returns the OpenAPI document as written.
func YAML() []byte { return spec }

// JSON returns the OpenAPI document as JSON, converted once.
func JSON() []byte {
	b, err := toJSON()
	if err != nil {
		// The file is embedded and checked by this package's tests: a
		// failure here is a broken build, not a runtime condition.
		panic("api/openapi.yaml: " + err.Error())
	}
	return b
}

var toJSON = sync.OnceValues(func() ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(spec, &doc); err != nil {
		return nil, err
	}
	v, err := nodeValue(&doc)
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
})

// nodeValue converts a YAML node to what encoding/json marshals: mapping
// keys are always strings (response codes such as 200 stay "200").
func nodeValue(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) != 1 {
			return nil, fmt.Errorf("line %d: want one document", n.Line)
		}
		return nodeValue(n.Content[0])
	case yaml.AliasNode:
		return nodeValue(n.Alias)
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if _, dup := m[k]; dup {
				return nil, fmt.Errorf("line %d: key %q given twice", n.Content[i].Line, k)
			}
			v, err := nodeValue(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			m[k] = v
		}
		return m, nil
	case yaml.SequenceNode:
		s := make([]any, len(n.Content))
		for i, c := range n.Content {
			v, err := nodeValue(c)
			if err != nil {
				return nil, err
			}
			s[i] = v
		}
		return s, nil
	case yaml.ScalarNode:
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, fmt.Errorf("line %d: %w", n.Line, err)
		}
		return v, nil
	}
	return nil, fmt.Errorf("line %d: unexpected YAML node kind %v", n.Line, n.Kind)
}
