package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spikehq/spike/loadgen/loadgentest"
)

var benchSecret = []byte("bench-test-secret")

func benchNoEnv(string) string { return "" }

func TestBenchFlashSaleJSON(t *testing.T) {
	fake := loadgentest.NewServer(benchSecret)
	defer fake.Close()
	var out bytes.Buffer
	err := bench(context.Background(), []string{
		"--target", fake.URL, "--secret", string(benchSecret), "--buyers", "60", "--stock", "20",
		"--concurrency", "4", "--repeat-fraction", "0.2", "--retry-fraction", "0.2", "--json",
	}, benchNoEnv, &out)
	if err != nil {
		t.Fatalf("bench() = %v\n%s", err, out.String())
	}
	var rep struct {
		Scenario string `json:"scenario"`
		Run      struct {
			Sent     int64 `json:"sent"`
			Outcomes []struct {
				Name  string `json:"name"`
				Count int64  `json:"count"`
			} `json:"outcomes"`
		} `json:"run"`
		Audit struct {
			OK bool `json:"ok"`
		} `json:"audit"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("output is not JSON (%v):\n%s", err, out.String())
	}
	if rep.Scenario != "flash-sale" || rep.Run.Sent != 60+12+12 || !rep.Audit.OK {
		t.Errorf("report %+v", rep)
	}
	if fake.Accepted() != 20 {
		t.Errorf("fake accepted %d, want 20", fake.Accepted())
	}
}

func TestBenchSecretSources(t *testing.T) {
	fake := loadgentest.NewServer(benchSecret)
	defer fake.Close()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "jwt.secret"), append(benchSecret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(k string) string {
		if k == "SPIKE_JWT_SECRET" {
			return string(benchSecret)
		}
		return ""
	}
	base := []string{"--target", fake.URL, "--buyers", "5", "--stock", "2", "--concurrency", "2"}
	tests := []struct {
		name    string
		args    []string
		getenv  func(string) string
		wantErr string
	}{
		{"env", nil, env, ""},
		{"data dir", []string{"--data", dir}, benchNoEnv, ""},
		{"flag beats env", []string{"--secret", "wrong"}, env, "unauthenticated"},
		{"none", nil, benchNoEnv, "no JWT secret"},
		{"missing file", []string{"--data", t.TempDir()}, benchNoEnv, "read secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := bench(context.Background(), append(append([]string{}, base...), tt.args...), tt.getenv, &out)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("bench() = %v\n%s", err, out.String())
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("bench() = %v, want error containing %q", err, tt.wantErr)
			}
			if tt.wantErr == "" && !strings.Contains(out.String(), "result: PASS") {
				t.Errorf("text report:\n%s", out.String())
			}
		})
	}
}

func TestBenchEmbedded(t *testing.T) {
	old := startEmbedded
	t.Cleanup(func() { startEmbedded = old })

	startEmbedded = nil
	err := bench(context.Background(), []string{"--embedded"}, benchNoEnv, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "startEmbedded is not wired") {
		t.Fatalf("bench(--embedded) with nil startEmbedded = %v", err)
	}

	var gotDir string
	stopped := false
	startEmbedded = func(ctx context.Context, dataDir string) (string, []byte, func() error, error) {
		gotDir = dataDir
		fake := loadgentest.NewServer(benchSecret)
		return fake.URL, benchSecret, func() error { fake.Close(); stopped = true; return nil }, nil
	}
	html := filepath.Join(t.TempDir(), "report.html")
	var out bytes.Buffer
	err = bench(context.Background(), []string{"--embedded", "--scenario", "reads", "--skus", "10",
		"--rate", "200", "--duration", "300ms", "--concurrency", "4", "--baseline", "--html", html}, benchNoEnv, &out)
	if err != nil {
		t.Fatalf("bench() = %v\n%s", err, out.String())
	}
	if !stopped {
		t.Error("embedded server not stopped")
	}
	if gotDir == "" {
		t.Error("no data dir passed")
	} else if _, err := os.Stat(gotDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary data dir %s not removed (%v)", gotDir, err)
	}
	b, err := os.ReadFile(html)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "<svg") || strings.Contains(string(b), "<script") {
		t.Errorf("HTML report looks wrong (%d bytes)", len(b))
	}
	for _, s := range []string{"× baseline", "ok", "HTML report: " + html} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks %q:\n%s", s, out.String())
		}
	}
}

func TestBenchFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--no-such-flag"},
		{"--secret", "x", "extra-arg"},
		{"--secret", "x", "--scenario", "bogus"},
		{"--secret", "x", "--rate", "-5"},
	} {
		if err := bench(context.Background(), args, benchNoEnv, &bytes.Buffer{}); err == nil {
			t.Errorf("bench(%q) = nil, want an error", args)
		}
	}
	var help bytes.Buffer
	env := func(string) string { return "top-secret-value" }
	if err := bench(context.Background(), []string{"-h"}, env, &help); err != nil {
		t.Errorf("bench(-h) = %v, want nil", err)
	}
	if !strings.Contains(help.String(), "-scenario") || strings.Contains(help.String(), "top-secret-value") {
		t.Errorf("help output wrong or leaks the secret:\n%s", help.String())
	}
}

func TestBenchFailedChecksReturnError(t *testing.T) {
	fake := loadgentest.NewServer(benchSecret)
	fake.BreakIdempotency = true
	defer fake.Close()
	var out bytes.Buffer
	err := bench(context.Background(), []string{"--target", fake.URL, "--secret", string(benchSecret),
		"--buyers", "10", "--stock", "100", "--retry-fraction", "1", "--drain-timeout", "100ms", "--concurrency", "2"}, benchNoEnv, &out)
	if !errors.Is(err, errBenchChecksFailed) {
		t.Fatalf("bench() = %v, want errBenchChecksFailed", err)
	}
	if !strings.Contains(out.String(), "FAIL idempotency_violation") {
		t.Errorf("report:\n%s", out.String())
	}
}
