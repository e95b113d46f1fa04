package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeCheckConfig: `spike serve --check-config` loads and validates
// the configuration (file, environment, flags), prints "config ok" and
// returns without connecting to anything or writing the data folder; a
// bad configuration is an error naming the key.
func TestServeCheckConfig(t *testing.T) {
	check := func(t *testing.T, env map[string]string, args ...string) (string, error) {
		t.Helper()
		var out, errs bytes.Buffer
		data := filepath.Join(t.TempDir(), "data")
		args = append([]string{"--check-config", "--data", data}, args...)
		err := serve(context.Background(), args, func(k string) string { return env[k] }, &out, &errs)
		if _, statErr := os.Stat(data); statErr == nil {
			t.Errorf("--check-config created the data folder %s", data)
		}
		return out.String(), err
	}
	write := func(t *testing.T, yaml string) string {
		t.Helper()
		p := filepath.Join(t.TempDir(), "spike.yaml")
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("the example files load", func(t *testing.T) {
		for file, mode := range map[string]string{
			"../../deploy/spike.example.yaml":   "config ok (embedded mode)",
			"../../deploy/spike.clustered.yaml": "config ok (clustered backends)",
		} {
			// The clustered file names servers on 10.0.0.x: a connection
			// attempt would hang or fail, and --check-config makes none.
			out, err := check(t, nil, "--config", file)
			if err != nil || !strings.HasPrefix(out, mode+"\n") || strings.Contains(out, "warning") {
				t.Errorf("%s: %q, %v; want %q and no warning", file, out, err, mode)
			}
		}
	})
	t.Run("environment and flags count", func(t *testing.T) {
		_, err := check(t, map[string]string{"SPIKE_NATS_REPLICAS": "2"}, "--config", "../../deploy/spike.example.yaml")
		if err == nil || !strings.Contains(err.Error(), "nats.replicas") {
			t.Errorf("SPIKE_NATS_REPLICAS=2: %v, want an error naming nats.replicas", err)
		}
		_, err = check(t, nil, "--addr", "no-port")
		if err == nil || !strings.Contains(err.Error(), "addr") {
			t.Errorf("--addr no-port: %v, want an error naming addr", err)
		}
	})
	t.Run("bad files", func(t *testing.T) {
		for yaml, want := range map[string]string{
			"nats:\n  replicas: 2\n":                                     "nats.replicas",
			"nats:\n  replicaz: 1\n":                                     "replicaz",
			"mysql:\n  primary: \"spike:pw@tcp(10.0.0.10:3306)/\"\n":     "names no database",
			"mysql:\n  primary: \"spike:pw@tcp(10.0.0.10:3306\"\n":       "mysql.primary",
			"redis:\n  addrs: [10.0.0.30]\n":                             "redis.addrs",
			"mysql:\n  replicas: [\"spike:pw@tcp(10.0.0.20:3306)/s\"]\n": "mysql.primary",
		} {
			out, err := check(t, nil, "--config", write(t, yaml))
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%q: %q, %v; want an error naming %s", yaml, out, err, want)
			}
		}
	})
	t.Run("likely mistakes warn", func(t *testing.T) {
		out, err := check(t, nil, "--config", write(t, "events:\n  hmac_key: "+strings.Repeat("k", 32)+"\nnats:\n  urls: [nats://10.0.0.1:4222]\n  replicas: 3\nmysql:\n  primary: \"u:p@tcp(h:3306)/spike\"\n"))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{"jwt_secret is empty", "nats.replicas 3 with 1 nats.urls", "redis.addrs is empty"} {
			if !strings.Contains(out, "warning: "+w) {
				t.Errorf("output %q: want the warning %q", out, w)
			}
		}
	})
}
