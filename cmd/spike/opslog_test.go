package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spikehq/spike/internal/testkit/mysqltest"
)

// textAttrs parses one slog text line into its key=value pairs.
var textAttr = regexp.MustCompile(`([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)`)

func textAttrs(line string) map[string]string {
	out := map[string]string{}
	for _, m := range textAttr.FindAllStringSubmatch(line, -1) {
		out[m[1]] = strings.Trim(m[2], `"`)
	}
	return out
}

// TestConfigLogLines: the configuration is logged as key=value lines, one
// per section, durations as 2s, secrets redacted.
func TestConfigLogLines(t *testing.T) {
	cfg := DefaultConfig()
	cfg.JWTSecret = "do-not-log-this-secret-0123456789abcdef"
	cfg.Limits.ShutdownTimeout = 2 * time.Second
	cfg.MySQL.Primary = "spike:hunter2@tcp(db:3306)/spike"
	var buf bytes.Buffer
	logConfig(slog.New(slog.NewTextHandler(&buf, nil)), cfg)
	out := buf.String()
	if strings.Contains(out, "do-not-log-this") || strings.Contains(out, "hunter2") {
		t.Fatalf("a secret was logged:\n%s", out)
	}
	sections := map[string]map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		a := textAttrs(line)
		if a["msg"] != "configuration" {
			t.Fatalf("line %q is not a configuration line", line)
		}
		sections[a["section"]] = a
	}
	if got := sections["limits"]["shutdown_timeout"]; got != "2s" {
		t.Errorf("limits shutdown_timeout=%q, want 2s\n%s", got, out)
	}
	if got := sections["main"]["addr"]; got != cfg.Addr || sections["main"]["config_file"] != "" {
		t.Errorf("main addr=%q, want %s", got, cfg.Addr)
	}
	if got := sections["main"]["jwt_secret"]; got != "REDACTED" {
		t.Errorf("main jwt_secret=%q, want REDACTED", got)
	}
	if got := sections["mysql"]["primary"]; !strings.Contains(got, "REDACTED") {
		t.Errorf("mysql primary=%q, want its password redacted", got)
	}
	for _, s := range []string{"nats", "redis", "notify", "payments"} {
		if sections[s] == nil {
			t.Errorf("no %s section in\n%s", s, out)
		}
	}
}

// TestRejectionWarning: the background check warns once per interval in
// which guards rejected requests, with counts by guard, and not otherwise.
func TestRejectionWarning(t *testing.T) {
	reg := prometheus.NewRegistry()
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "spike_guard_rejections_total", Help: "h"}, []string{"guard"})
	reg.MustRegister(rejected)
	rejected.WithLabelValues("user_rate").Add(5) // before the baseline: not reported
	var buf bytes.Buffer
	w := &rejectionWatch{reg: reg, log: slog.New(slog.NewTextHandler(&buf, nil))}
	w.check(10 * time.Second)
	w.check(10 * time.Second)
	if buf.Len() != 0 {
		t.Fatalf("warned with no new rejections: %s", buf.String())
	}
	rejected.WithLabelValues("user_rate").Add(3)
	rejected.WithLabelValues("admission").Add(40)
	w.check(10 * time.Second)
	a := textAttrs(buf.String())
	if a["level"] != "WARN" || a["user_rate"] != "3" || a["admission"] != "40" || a["rejected"] != "43" || a["window"] != "10s" {
		t.Errorf("warning %q", buf.String())
	}
	buf.Reset()
	w.check(10 * time.Second)
	if buf.Len() != 0 {
		t.Errorf("warned again with no new rejections: %s", buf.String())
	}
}

// TestAuditDrainingDecision: only a failing I5 (work still on the stream)
// is draining; any other failure is a failure.
func TestAuditDrainingDecision(t *testing.T) {
	rep := func(failing ...string) auditReport {
		var r auditReport
		r.OK = len(failing) == 0
		for _, n := range []string{"I1 no oversell", "I2 no lost orders", "I4 conservation", stuckWorkCheck} {
			ok := true
			for _, f := range failing {
				ok = ok && f != n
			}
			r.Checks = append(r.Checks, struct {
				Name   string `json:"name"`
				OK     bool   `json:"ok"`
				Detail string `json:"detail"`
			}{n, ok, ""})
		}
		return r
	}
	for _, c := range []struct {
		failing []string
		want    bool
	}{
		{nil, false},
		{[]string{stuckWorkCheck}, true},
		{[]string{"I4 conservation", stuckWorkCheck}, false},
		{[]string{"I1 no oversell"}, false},
	} {
		if got := rep(c.failing...).draining(); got != c.want {
			t.Errorf("failing %v: draining %v, want %v", c.failing, got, c.want)
		}
	}
}

// TestMigrateCounts: spike migrate on a fresh MySQL database applies the
// migrations and says how many; again, it says it had nothing to do.
func TestMigrateCounts(t *testing.T) {
	dbs := mysqltest.Databases(t, 1)
	env := map[string]string{"SPIKE_MYSQL_PRIMARY": dbs[0].FormatDSN(), "SPIKE_DATA": t.TempDir()}
	out := mustCLI(t, env, "migrate")
	if !regexp.MustCompile(`^migrate: applied [1-9][0-9]* migrations`).MatchString(out) {
		t.Errorf("first migrate printed %q", out)
	}
	if out := mustCLI(t, env, "migrate"); out != "migrate: already up to date\n" {
		t.Errorf("second migrate printed %q", out)
	}
}

// auditServer answers GET /v1/admin/audit with I5 failing for the first
// drainingFor calls, and failing (a check other than I5) when broken.
func auditServer(t *testing.T, drainingFor int64, broken bool) string {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		i5 := n > drainingFor
		i1 := !broken
		fmt.Fprintf(w, `{"ok":%v,"checks":[{"name":"I1 no oversell","ok":%v,"detail":"d"},{"name":%q,"ok":%v,"detail":"3 events on the stream"}]}`,
			i1 && i5, i1, stuckWorkCheck, i5)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// TestAuditWaitsWhileDraining: spike audit says "draining" and waits while
// only I5 fails, up to --wait; any other failure is reported at once.
func TestAuditWaitsWhileDraining(t *testing.T) {
	env := func(addr string) map[string]string {
		return map[string]string{"SPIKE_ADDR": addr, "SPIKE_JWT_SECRET": tokenTestSecret}
	}
	out, err := cli(t, env(auditServer(t, 2, false)), "audit", "--wait", "5m")
	if err != nil || !strings.Contains(out, "audit: draining: 3 events on the stream") || !strings.Contains(out, "all invariants hold") {
		t.Errorf("drains, then holds: err %v\n%s", err, out)
	}
	out, err = cli(t, env(auditServer(t, 1<<40, false)), "audit", "--wait", "1s")
	if !errors.Is(err, errSilent) || !strings.Contains(out, "FAILED: still draining after --wait") {
		t.Errorf("never drains: err %v\n%s", err, out)
	}
	out, err = cli(t, env(auditServer(t, 1<<40, true)), "audit", "--wait", "5m")
	if !errors.Is(err, errSilent) || strings.Contains(out, "draining") || !strings.Contains(out, "audit: FAILED") {
		t.Errorf("broken: err %v\n%s", err, out)
	}
}
