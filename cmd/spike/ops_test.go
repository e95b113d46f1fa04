package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/testkit/mysqltest"
	"github.com/spikehq/spike/internal/testkit/redistest"
)

// readyz returns /readyz's status and the dependencies it names as failed.
func readyz(t *testing.T, addr string) (int, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("readyz: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string   `json:"status"`
		Failed []string `json:"failed"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("readyz body %q: %v", raw, err)
	}
	if (resp.StatusCode == 200) != (body.Status == "ready") {
		t.Errorf("readyz: %d with %s", resp.StatusCode, raw)
	}
	return resp.StatusCode, body.Failed
}

// TestReadyzRedisDown: with Redis unreachable (its proxy closed) /readyz
// is 503 naming redis, and only redis.
func TestReadyzRedisDown(t *testing.T) {
	a, proxy := startBehindSlowRedis(t)
	defer stopApp(t, a)
	if code, failed := readyz(t, a.addr); code != 200 {
		t.Fatalf("readyz with every dependency up: %d %v", code, failed)
	}
	proxy.Close()
	var failed []string
	waitFor(t, "readyz 503 naming redis", 60*time.Second, func() bool {
		var code int
		code, failed = readyz(t, a.addr)
		return code == 503 && strings.Join(failed, ",") == "redis"
	})
}

// TestWrongMySQLPasswordRefused: a server given a wrong MySQL password
// does not serve (and answer 500): start refuses, naming MySQL and the
// cause, without the password.
func TestWrongMySQLPasswordRefused(t *testing.T) {
	dbs := mysqltest.Databases(t, 1)
	bad := *dbs[0]
	bad.Passwd = "not-the-password-x9"
	redis := redistest.Start(t)
	for _, tc := range []struct {
		redis, migrate bool
	}{{true, false}, {true, true}, {false, false}} {
		cfg := DefaultConfig()
		cfg.Addr = "127.0.0.1:0"
		cfg.Data = t.TempDir()
		cfg.MySQL.Primary = bad.FormatDSN()
		cfg.MySQL.Migrate = tc.migrate
		if tc.redis {
			cfg.Redis.Addrs = []string{redis.Addr()}
		}
		a, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err == nil {
			stopApp(t, a)
			t.Errorf("%+v: started with a wrong MySQL password", tc)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "mysql") || !strings.Contains(msg, "Access denied") || strings.Contains(msg, bad.Passwd) {
			t.Errorf("%+v: start error %q, want one naming mysql and the refusal, without the password", tc, msg)
		}
	}
}

// TestMetricsAddr: with metrics_addr, /metrics (and pprof on the same
// address) are served there and not on the API's listener.
func TestMetricsAddr(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MetricsAddr = "127.0.0.1:0"
	a := startAppConfig(t, cfg)
	defer stopApp(t, a)
	c := newClient(t, a.addr, a.secret)
	c.Must("GET", "/metrics", "", nil, 404)
	c.Must("GET", "/metrics", c.Token(1, true), nil, 404)
	m := newClient(t, a.metricsAddr, a.secret)
	if body := string(m.Must("GET", "/metrics", "", nil, 200).Body); !strings.Contains(body, "spike_http_requests_total") {
		t.Errorf("metrics listener: no spike_http_requests_total")
	}
	// The metrics listener is not the API (no API error shape there):
	// pprof is elsewhere (not asked for), and the API is not here.
	for _, path := range []string{"/debug/pprof/", "/v1/sales/x"} {
		r, err := http.Get("http://" + a.metricsAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusNotFound {
			t.Errorf("metrics listener: GET %s = %d, want 404", path, r.StatusCode)
		}
	}
}

// TestMetricsAddrWithPprof: pprof on the metrics listener when both are
// the same loopback address.
func TestMetricsAddrWithPprof(t *testing.T) {
	addr := freeAddr(t)
	cfg := DefaultConfig()
	cfg.MetricsAddr, cfg.Pprof = addr, addr
	a := startAppConfig(t, cfg)
	defer stopApp(t, a)
	m := newClient(t, a.metricsAddr, a.secret)
	m.Must("GET", "/metrics", "", nil, 200)
	if r, err := http.Get("http://" + a.metricsAddr + "/debug/pprof/cmdline"); err != nil {
		t.Fatal(err)
	} else if r.Body.Close(); r.StatusCode != http.StatusOK {
		t.Errorf("pprof on the metrics listener: %d", r.StatusCode)
	}
	newClient(t, a.addr, a.secret).Must("GET", "/debug/pprof/cmdline", "", nil, 404)
}

// TestMetricsAdmin: http.metrics_admin asks for an admin token.
func TestMetricsAdmin(t *testing.T) {
	cfg := DefaultConfig()
	cfg.HTTP.MetricsAdmin = true
	a := startAppConfig(t, cfg)
	defer stopApp(t, a)
	c := newClient(t, a.addr, a.secret)
	c.Must("GET", "/metrics", "", nil, 401)
	c.Must("GET", "/metrics", c.Token(5, false), nil, 403)
	c.Must("GET", "/metrics", c.Token(1, true), nil, 200)
}

// TestPprofRefusedOffLoopback: --pprof on an address other hosts can
// reach is refused in one line naming the way out, unless forced.
func TestPprofRefusedOffLoopback(t *testing.T) {
	for _, addr := range []string{":6060", "0.0.0.0:6060", "[::]:6060", "10.1.2.3:6060", "example.com:6060"} {
		var out, errOut bytes.Buffer
		err := serve(context.Background(), []string{"--data", t.TempDir(), "--pprof", addr}, env(nil), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), "config pprof") || !strings.Contains(err.Error(), "--pprof-force") || strings.Contains(err.Error(), "\n") {
			t.Errorf("--pprof %s: %v, want one line refusing it", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:6060", "localhost:6060", "[::1]:6060"} {
		cfg := DefaultConfig()
		cfg.Pprof = addr
		if err := cfg.Validate(); err != nil {
			t.Errorf("pprof %s: %v", addr, err)
		}
	}
	cfg, err := newFlagSetForServe().load([]string{"--pprof", "0.0.0.0:6060", "--pprof-force"}, env(nil), io.Discard)
	if err != nil || !cfg.PprofForce {
		t.Errorf("--pprof-force: %v (force %v)", err, cfg.PprofForce)
	}
	if _, err := newFlagSetForServe().load(nil, env(map[string]string{"SPIKE_PPROF": ":6060", "SPIKE_PPROF_FORCE": "true"}), io.Discard); err != nil {
		t.Errorf("SPIKE_PPROF_FORCE: %v", err)
	}
}

// newFlagSetForServe is serve's flag set, for loading configurations.
func newFlagSetForServe() *flagSet {
	fs := newFlagSet("serve")
	fs.String("pprof", "", "")
	fs.Bool("pprof-force", false, "")
	fs.String("metrics-addr", "", "")
	return fs
}

// TestTrustedProxiesConfig: http.trusted_proxies takes addresses and
// prefixes, and names a bad entry.
func TestTrustedProxiesConfig(t *testing.T) {
	cfg, err := newFlagSet("serve").load(nil, env(map[string]string{"SPIKE_HTTP_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1"}), io.Discard)
	if err != nil || len(cfg.HTTP.TrustedProxies) != 2 {
		t.Errorf("trusted proxies: %v %v", cfg.HTTP.TrustedProxies, err)
	}
	_, err = newFlagSet("serve").load(nil, env(map[string]string{"SPIKE_HTTP_TRUSTED_PROXIES": "haproxy"}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "http.trusted_proxies") {
		t.Errorf("a host name as trusted proxy: %v", err)
	}
}

// TestDataFilesPrivate: the SQLite files Spike creates are 0600 whatever
// the umask, and an existing file others can read is warned about.
func TestDataFilesPrivate(t *testing.T) {
	dir := t.TempDir()
	a := startApp(t, dir)
	c := newClient(t, a.addr, a.secret)
	c.SetupSale("sku-perm", "perm-sale", 10, 1)
	if r, _, err := c.Place(context.Background(), 3, c.Token(3, false), "perm-sale", "perm-1", 1); err != nil || r.Status != 202 {
		t.Fatalf("place: %v %d %s", err, r.Status, r.Body)
	}
	c.WaitAudit(30 * time.Second)
	stopApp(t, a)
	seen := 0
	for _, name := range []string{"spike.db", "spike.db-wal", "spike.db-shm"} {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			continue // -wal and -shm are gone after a clean close
		}
		seen++
		if mode := info.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s: mode %v, want 0600", name, mode)
		}
	}
	if seen == 0 {
		t.Fatal("no SQLite file in the data folder")
	}

	if err := os.Chmod(filepath.Join(dir, "spike.db"), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	cfg := DefaultConfig()
	cfg.Addr, cfg.Data = "127.0.0.1:0", dir
	b, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	stopApp(t, b)
	if out := logs.String(); !strings.Contains(out, "data readable by other users") || !strings.Contains(out, "spike.db") {
		t.Errorf("no warning about a 0644 spike.db; log:\n%s", out)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
