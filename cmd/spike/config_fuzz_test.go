package main

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// envNames are every SPIKE_* variable the loader reads, found by asking
// applyEnv with a getenv that records what it is asked.
func envNames() []string {
	var names []string
	cfg := DefaultConfig()
	applyEnv(reflect.ValueOf(&cfg).Elem(), "SPIKE", func(k string) string { names = append(names, k); return "" })
	return names
}

// FuzzConfig loads arbitrary YAML files with one arbitrary SPIKE_*
// variable set. It never panics; what loads is valid (load validates it)
// and loads again to the same configuration.
func FuzzConfig(f *testing.F) {
	example, err := os.ReadFile("../../deploy/spike.example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example, uint16(0), "")
	f.Add([]byte("nats:\n  urls: [nats://127.0.0.1:4222]\nmysql:\n  primary: root@tcp(127.0.0.1:3306)/spike\nredis:\n  addrs: [127.0.0.1:6379]\n"), uint16(3), "x")
	f.Add([]byte("limits:\n  shutdown_timeout: -1s\n"), uint16(5), "1h")
	f.Add([]byte("payments:\n  sandbox:\n    duplicate_rate: 2\n"), uint16(9), "NaN")
	f.Add([]byte("mysql:\n  order_shards:\n    - primary: x\n    - {}\n"), uint16(11), "true")
	f.Add([]byte("addr: [1, 2]\n"), uint16(1), "")
	f.Add([]byte("nats: {urls: []}\nunknown: 1\n"), uint16(2), "")
	f.Add([]byte("&a [*a]"), uint16(0), "")
	f.Add([]byte("a: &a {b: *a}\n"), uint16(0), "")
	f.Add([]byte("jwt_secret: !!binary aGVsbG8=\n"), uint16(0), "")
	f.Add([]byte("\t- x"), uint16(7), "9999999999999999999999")
	names := envNames()
	if len(names) < 10 {
		f.Fatalf("only %d environment variables found: %v", len(names), names)
	}
	f.Fuzz(func(t *testing.T, file []byte, which uint16, value string) {
		path := filepath.Join(t.TempDir(), "spike.yaml")
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		vars := map[string]string{names[int(which)%len(names)]: value}
		load := func() (Config, error) {
			return newFlagSet("serve").load([]string{"--config", path}, env(vars), io.Discard)
		}
		type loaded struct {
			cfg Config
			err error
		}
		done := make(chan loaded, 1)
		go func() { cfg, err := load(); done <- loaded{cfg, err} }()
		var cfg Config
		select {
		case l := <-done:
			if l.err != nil {
				return
			}
			cfg = l.cfg
		case <-time.After(5 * time.Second):
			t.Fatalf("loading %q (%s=%q) did not finish in 5 s", file, names[int(which)%len(names)], value)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("load accepted a config that does not validate: %v", err)
		}
		again, err := load()
		if err != nil || again.redacted() != cfg.redacted() {
			t.Fatalf("the same file and environment loaded twice: %v\n%s\n%s", err, cfg.redacted(), again.redacted())
		}
	})
}
