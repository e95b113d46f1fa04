package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/spikehq/spike/loadgen/loadgentest"
)

var benchSecret = []byte("bench-test-secret-0123456789abcdef0123") // ≥ 32 bytes, as servers require

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
		{"missing file", []string{"--data", t.TempDir()}, benchNoEnv, "no JWT secret: looked in"},
		{"config file", []string{"--config", writeConfig(t, "data: "+dir+"\n")}, benchNoEnv, ""},
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
		"--rate", "200", "--duration", "300ms", "--concurrency", "16", "--baseline", "--html", html,
		"--max-error-rate", "1"}, benchNoEnv, &out) // the wiring is under test, not a loaded machine's timers
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
	if err := run(context.Background(), []string{"bench", "-h"}, env, &help, io.Discard); err != nil {
		t.Errorf("spike bench -h = %v, want nil", err)
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

// badServer returns a test server in front of a fake Spike whose order
// placements misbehave as fail says: fail(n) is called with the placement's
// ordinal (1, 2, ...) and returns "" to serve it, "die" to close the
// connection and every later one (the server died), or "503" to answer
// 503 unavailable.
func badServer(t *testing.T, fail func(n int64) string) *httptest.Server {
	t.Helper()
	fake := loadgentest.NewServer(benchSecret)
	t.Cleanup(fake.Close)
	var placements atomic.Int64
	var dead atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/orders") && !dead.Load() {
			switch fail(placements.Add(1)) {
			case "die":
				dead.Store(true)
			case "503":
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusServiceUnavailable)
				io.WriteString(w, `{"error":{"code":"unavailable","message":"the order stream is unavailable"}}`)
				return
			}
		}
		if dead.Load() { // answer nothing, ever again
			if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
				c.Close()
			}
			return
		}
		fake.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestBenchFailsBadRuns: a run that did not deliver its load (the server
// died, or shed half of it with 503) FAILs in the text and the JSON report
// and returns an error (a non-zero exit); a healthy run PASSes.
func TestBenchFailsBadRuns(t *testing.T) {
	tests := []struct {
		name      string
		fail      func(n int64) string
		wantCheck string // the check that must FAIL; "" = a healthy run
	}{
		{"server dies mid-run", func(n int64) string {
			if n > 40 {
				return "die"
			}
			return ""
		}, "transport_errors"},
		{"503 to half", func(n int64) string {
			if n%2 == 0 {
				return "503"
			}
			return ""
		}, "server_errors"},
		{"healthy", func(int64) string { return "" }, ""},
	}
	for _, tt := range tests {
		for _, format := range []string{"text", "json"} {
			t.Run(tt.name+"/"+format, func(t *testing.T) {
				srv := badServer(t, tt.fail)
				args := []string{"--target", srv.URL, "--secret", string(benchSecret), "--buyers", "100",
					"--stock", "1000", "--concurrency", "4", "--drain-timeout", "1s"}
				if format == "json" {
					args = append(args, "--json")
				}
				var out bytes.Buffer
				err := bench(context.Background(), args, benchNoEnv, &out)
				if tt.wantCheck == "" && err != nil {
					t.Fatalf("bench() = %v, want nil\n%s", err, out.String())
				}
				if tt.wantCheck != "" && !errors.Is(err, errBenchChecksFailed) {
					t.Fatalf("bench() = %v, want errBenchChecksFailed\n%s", err, out.String())
				}
				result, failed := benchOutcome(t, format, out.Bytes())
				want := "PASS"
				if tt.wantCheck != "" {
					want = "FAIL"
					if !failed[tt.wantCheck] {
						t.Errorf("check %s did not fail; failed: %v\n%s", tt.wantCheck, failed, out.String())
					}
				} else if len(failed) > 0 {
					t.Errorf("failed checks %v in a healthy run\n%s", failed, out.String())
				}
				if result != want {
					t.Errorf("result %q, want %q\n%s", result, want, out.String())
				}
			})
		}
	}
}

// benchOutcome reads the overall result and the names of failed checks from
// a text or JSON report.
func benchOutcome(t *testing.T, format string, out []byte) (result string, failed map[string]bool) {
	t.Helper()
	failed = map[string]bool{}
	if format == "json" {
		var rep struct {
			Result string `json:"result"`
			Checks []struct {
				Name string `json:"name"`
				OK   bool   `json:"ok"`
			} `json:"checks"`
		}
		if err := json.Unmarshal(out, &rep); err != nil {
			t.Fatalf("output is not JSON (%v):\n%s", err, out)
		}
		for _, c := range rep.Checks {
			if !c.OK {
				failed[c.Name] = true
			}
		}
		return rep.Result, failed
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "FAIL":
			failed[f[1]] = true
		case len(f) == 2 && f[0] == "result:":
			result = f[1]
		}
	}
	return result, failed
}
