package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"time"
)

// logConfig logs the effective configuration, secrets redacted, as one
// line per section (main, nats, mysql, ...) of key=value pairs named by
// their config keys, with durations as 2s: readable, and greppable by key.
func logConfig(log *slog.Logger, cfg Config) {
	var red map[string]any
	dec := json.NewDecoder(strings.NewReader(cfg.redacted()))
	dec.UseNumber()
	if err := dec.Decode(&red); err != nil {
		log.Error("configuration: cannot show it", "err", err)
		return
	}
	sections := configSections(reflect.TypeOf(cfg), red)
	for _, s := range sections {
		log.Info("configuration", append([]any{"section", s.name}, s.attrs...)...)
	}
}

type configSection struct {
	name  string
	attrs []any
}

// configSections walks the Config type for key names and kinds, and the
// redacted JSON for values (so that a secret never shows).
func configSections(t reflect.Type, red map[string]any) []configSection {
	top := configSection{name: "main"}
	var out []configSection
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		v, ok := red[jsonName(f)]
		if !ok {
			continue
		}
		key := configKey(f)
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
			s := configSection{name: key}
			flattenConfig(f.Type, v, "", &s.attrs)
			out = append(out, s)
			continue
		}
		top.attrs = append(top.attrs, key, configValue(f.Type, v))
	}
	return append([]configSection{top}, out...)
}

func flattenConfig(t reflect.Type, v any, prefix string, attrs *[]any) {
	m, _ := v.(map[string]any)
	for i := range t.NumField() {
		f := t.Field(i)
		val, ok := m[jsonName(f)]
		if !f.IsExported() || !ok {
			continue
		}
		key := prefix + configKey(f)
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
			flattenConfig(f.Type, val, key+".", attrs)
			continue
		}
		*attrs = append(*attrs, key, configValue(f.Type, val))
	}
}

// configValue shows one setting: a duration as 2s, a list comma-separated,
// an unset value as "".
func configValue(t reflect.Type, v any) string {
	switch {
	case t == reflect.TypeOf(time.Duration(0)):
		if n, ok := v.(json.Number); ok {
			if ns, err := n.Int64(); err == nil {
				return time.Duration(ns).String()
			}
		}
	case v == nil:
		return ""
	}
	switch v := v.(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	case bool:
		return fmt.Sprint(v)
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			if s, ok := e.(string); ok {
				parts[i] = s
			} else {
				b, _ := json.Marshal(e)
				parts[i] = string(b)
			}
		}
		return strings.Join(parts, ",")
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// configKey is a field's config key: its yaml name, else its name.
func configKey(f reflect.StructField) string {
	if k, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); k != "" && k != "-" {
		return k
	}
	var b strings.Builder // ConfigFile → config_file
	for i, r := range f.Name {
		if 'A' <= r && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

func jsonName(f reflect.StructField) string {
	if k, _, _ := strings.Cut(f.Tag.Get("json"), ","); k != "" && k != "-" {
		return k
	}
	return f.Name
}
