package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/spikehq/spike/internal/httpapi"
	"github.com/spikehq/spike/internal/ledger"

	"github.com/spikehq/spike/internal/testkit/mysqltest"
	"github.com/spikehq/spike/internal/testkit/redistest"
)

// clusteredOnlyMetrics are exported only with redis.addrs (the stock
// counters' recovery): the clustered subtest finds them on a clustered
// instance's /metrics.
var clusteredOnlyMetrics = []string{"spike_sale_fenced", "spike_stock_rebuilds_total"}

// TestDeployFilesNameRealMetrics reads every PromQL expression of the
// Grafana dashboard and the alert rules, and checks that each metric they
// name (spike_*, and the Go client's process_* and go_*) is on the
// /metrics page of a real instance: embedded with notifications on, and
// clustered (MySQL, Redis) for the names only clustered mode exports.
func TestDeployFilesNameRealMetrics(t *testing.T) {
	names := deployMetricNames(t)
	if len(names) < 20 {
		t.Fatalf("found only %d metric names in deploy/: %v", len(names), names)
	}
	cfg := DefaultConfig()
	cfg.Notify.Provider = "log"
	a := startAppConfig(t, cfg)
	defer stopApp(t, a)
	embedded := exportedMetrics(t, a.addr)
	for _, name := range names {
		if slices.Contains(clusteredOnlyMetrics, name) {
			continue
		}
		if !exports(embedded, name) {
			t.Errorf("deploy/ names %s, which an embedded instance's /metrics does not have", name)
		}
	}

	t.Run("clustered", func(t *testing.T) {
		dbs := mysqltest.Databases(t, 1)
		c := startClustered(t, redistest.MustAddr(t), dbs[0], nil)
		defer stopApp(t, c)
		clustered := exportedMetrics(t, c.addr)
		// spike_sale_fenced has a series only while a sale is fenced: add
		// what the same collector exports for one.
		for name, typ := range fencedFamilies(t) {
			clustered[name] = typ
		}
		for _, name := range clusteredOnlyMetrics {
			if !slices.Contains(names, name) {
				t.Errorf("%s is listed as clustered-only but deploy/ does not use it: drop it from the list", name)
			}
			if !exports(clustered, name) {
				t.Errorf("deploy/ names %s, which a clustered instance's /metrics does not have", name)
			}
		}
	})
}

// fencedFamilies returns the families the clustered fenced-sales collector
// exports while a sale is fenced (nothing rebuilds it here).
func fencedFamilies(t *testing.T) map[string]string {
	t.Helper()
	r := ledger.NewRecovery(nil, nil, nil, ledger.RecoveryConfig{})
	r.Fenced("sale-1")
	reg := prometheus.NewRegistry()
	reg.MustRegister(fencedCollector{r})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, mf := range mfs {
		out[mf.GetName()] = strings.ToLower(mf.GetType().String())
	}
	return out
}

// metricName matches a metric name in PromQL; label names and values do
// not start with these prefixes in Spike's expressions.
var metricName = regexp.MustCompile(`\b(?:spike|process|go)_[a-zA-Z0-9_]+`)

// deployMetricNames returns the metric names used by the dashboard's
// targets and variables and by the alert rules, sorted and unique.
func deployMetricNames(t *testing.T) []string {
	t.Helper()
	var exprs []string
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string } `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct{ Definition string } `json:"list"`
		} `json:"templating"`
	}
	readDeploy(t, "grafana/spike.json", func(b []byte) error { return json.Unmarshal(b, &dash) })
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		exprs = append(exprs, v.Definition)
	}
	var rules struct {
		Groups []struct {
			Rules []struct{ Alert, Expr string } `yaml:"rules"`
		} `yaml:"groups"`
	}
	readDeploy(t, "prometheus/alerts.yml", func(b []byte) error { return yaml.Unmarshal(b, &rules) })
	alerts := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
			alerts++
		}
	}
	if alerts == 0 {
		t.Fatal("deploy/prometheus/alerts.yml: no rules found")
	}
	var names []string
	for _, e := range exprs {
		names = append(names, metricName.FindAllString(e, -1)...)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

func readDeploy(t *testing.T, path string, decode func([]byte) error) {
	t.Helper()
	b, err := os.ReadFile("../../deploy/" + path)
	if err != nil {
		t.Fatal(err)
	}
	if err := decode(b); err != nil {
		t.Fatalf("deploy/%s: %v", path, err)
	}
}

// exportedMetrics returns the families of the /metrics page at addr by
// their # TYPE lines: name → type.
func exportedMetrics(t *testing.T, addr string) map[string]string {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), "GET", "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	families := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			families[f[2]] = f[3]
		}
	}
	return families
}

// exports reports whether name is a family of the page, or a series of a
// histogram's or summary's family (its _bucket, _sum or _count).
func exports(families map[string]string, name string) bool {
	if _, ok := families[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if typ := families[base]; ok && (typ == "histogram" || typ == "summary") && (suffix != "_bucket" || typ == "histogram") {
			return true
		}
	}
	return false
}

// TestHAProxyOutlastsInstance: deploy/haproxy.cfg waits for an instance
// longer than the instance may take to answer (its HTTP write timeout, and
// the admin budget below it), so HAProxy never answers 504 for a request
// the instance still completes.
func TestHAProxyOutlastsInstance(t *testing.T) {
	b, err := os.ReadFile("../../deploy/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	timeouts := map[string]time.Duration{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "timeout" {
			d, err := time.ParseDuration(f[2])
			if err != nil {
				t.Fatalf("haproxy.cfg %q: %v", line, err)
			}
			timeouts[f[1]] = d
		}
	}
	a := startApp(t, t.TempDir())
	defer stopApp(t, a)
	longest := max(a.http.WriteTimeout, httpapi.DefaultAdminBudget)
	for _, name := range []string{"server", "client"} {
		if d, ok := timeouts[name]; !ok || d <= longest {
			t.Errorf("haproxy.cfg timeout %s = %v, want above the instance's %v (WriteTimeout, admin budget)", name, d, longest)
		}
	}
}
