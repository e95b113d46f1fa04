package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestDashboardInChromium drives the dashboard in headless Chromium while
// buyers place orders: the numbers on the page move, and orders.accept
// flipped off on the page (through its confirmation dialog) turns
// placements away. Screenshots go to $SPIKE_TEST_ARTIFACTS (CI:
// test-output/), else to the test's temporary folder.
func TestDashboardInChromium(t *testing.T) {
	chromium := chromiumPath(t)
	a := startApp(t, t.TempDir())
	defer stopApp(t, a)
	c := newClient(t, a.addr, a.secret)
	const saleID = "dash-1"
	c.SetupSale("sku-dash-1", saleID, 1_000_000, 1)
	admin := c.Token(1, true)

	stopLoad := placeInBackground(t, c, saleID, 4)
	defer stopLoad()

	ctx, closeBrowser := browser(t, chromium)
	defer closeBrowser() // before stopApp: the page polls until then
	base := "http://" + a.addr
	act(t, ctx, "sign in",
		chromedp.Navigate(base+"/dashboard"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), admin),
		chromedp.Click(chromedp.ID("login-button")),
		chromedp.WaitVisible(chromedp.ID("board")),
	)

	// The numbers move: the accepted total and the sale's sold units grow
	// between two readings of the page.
	accepted := waitNumber(t, ctx, "#total-accepted", "accepted placements", func(v float64) bool { return v > 0 })
	waitNumber(t, ctx, "#total-accepted", "accepted placements", func(v float64) bool { return v > accepted })
	sold := waitNumber(t, ctx, `tr[data-sale="`+saleID+`"] td.sold`, "units sold", func(v float64) bool { return v > 0 })
	waitNumber(t, ctx, `tr[data-sale="`+saleID+`"] td.sold`, "units sold", func(v float64) bool { return v > sold })
	waitNumber(t, ctx, "#rate-accepted", "accepted per second", func(v float64) bool { return v > 0 })
	screenshot(t, ctx, "dashboard-live.png")

	// Flip orders.accept off on the page, through the confirmation.
	row := `tr[data-switch="orders.accept"]`
	act(t, ctx, "flip orders.accept",
		chromedp.Click(chromedp.CSS(row+" button.flip")),
		chromedp.WaitVisible(chromedp.ID("confirm")),
		chromedp.Click(chromedp.ID("confirm-yes")),
	)
	waitText(t, ctx, row+" td.value", "orders.accept on the page", func(s string) bool { return s == "false" })

	// It took effect: the API reads it off and a placement gets 503.
	r := c.Must("GET", "/v1/admin/switches", admin, nil, 200)
	if !strings.Contains(string(r.Body), `{"name":"orders.accept","value":"false"`) {
		t.Errorf("orders.accept is not off through the API: %s", r.Body)
	}
	resp, _, err := c.Place(context.Background(), 999_999, c.Token(999_999, false), saleID, "after-switch", 1)
	if err != nil || resp.Status != 503 {
		t.Errorf("placement with orders.accept off: %d %s (err %v), want 503", resp.Status, resp.Body, err)
	}
	waitNumber(t, ctx, "#total-switched_off", "placements switched off", func(v float64) bool { return v > 0 })
	stopLoad()
	screenshot(t, ctx, "dashboard-switched-off.png")
	// What the feed cost the server (reported, not asserted).
	n, sum := metric(c, `spike_http_request_duration_seconds_count{route="dashboard_feed"}`),
		metric(c, `spike_http_request_duration_seconds_sum{route="dashboard_feed"}`)
	if n > 0 {
		t.Logf("dashboard feed: %.0f polls, %.2f ms each on average", n, 1000*sum/n)
	}
}

// chromiumPath finds Debian's chromium, or skips (fails under
// SPIKE_TEST_REQUIRE).
func chromiumPath(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("SPIKE_TEST_REQUIRE") != "" {
		t.Fatal("chromium not found (apt-get install chromium) and SPIKE_TEST_REQUIRE is set")
	}
	t.Skip("chromium not found: apt-get install chromium to run the dashboard test")
	return ""
}

// browser starts a headless Chromium with a fresh profile for the test;
// closing it is idempotent.
func browser(t *testing.T, path string) (context.Context, func()) {
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1400, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelBrowser := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	closeAll := func() { cancelTimeout(); cancelBrowser(); cancelAlloc() }
	t.Cleanup(closeAll)
	act(t, ctx, "start chromium", chromedp.EmulateViewport(1400, 1000))
	return ctx, closeAll
}

func act(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// waitText polls the text of the element sel until ok accepts it; the
// page updates once a second, the deadline is generous.
func waitText(t *testing.T, ctx context.Context, sel, what string, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var text string
	for {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var err error
		text, err = chromedp.Run(tctx, chromedp.Text(chromedp.CSS(sel)))
		cancel()
		if err == nil && ok(strings.TrimSpace(text)) {
			return strings.TrimSpace(text)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %q (err %v) never became what the test waits for", what, text, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitNumber is waitText for a number as the page writes it ("1,234",
// "1,234 in all").
func waitNumber(t *testing.T, ctx context.Context, sel, what string, ok func(float64) bool) float64 {
	t.Helper()
	var v float64
	waitText(t, ctx, sel, what, func(s string) bool {
		f := strings.Fields(strings.ReplaceAll(s, ",", ""))
		if len(f) == 0 {
			return false
		}
		n, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return false
		}
		v = n
		return ok(n)
	})
	return v
}

// screenshot writes the whole page as a PNG where CI keeps test output.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv("SPIKE_TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// placeInBackground has buyers goroutines place one unit each for a new
// buyer each time, retrying what a guard turned away, until the returned
// stop is called (idempotent).
func placeInBackground(t *testing.T, c *client, saleID string, buyers int) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var next atomic.Int64
	next.Store(10_000)
	for range buyers {
		wg.Go(func() {
			for {
				user := next.Add(1)
				tok := c.Token(user, false)
				for {
					select {
					case <-done:
						return
					default:
					}
					resp, _, err := c.Place(context.Background(), user, tok, saleID, fmt.Sprintf("k-%d", user), 1)
					if err == nil && resp.Status != 429 && resp.Status != 503 {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// TestDashboardAccess: the page is static and public, its files come from
// the binary with a policy that allows nothing from elsewhere, and the
// snapshot is for admins only.
func TestDashboardAccess(t *testing.T) {
	a := startApp(t, t.TempDir())
	defer stopApp(t, a)
	c := newClient(t, a.addr, a.secret)
	c.SetupSale("sku-dash-2", "dash-2", 10, 1)

	page := c.Must("GET", "/dashboard", "", nil, 200)
	if ct := page.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("page Content-Type %q", ct)
	}
	if csp := page.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("page Content-Security-Policy %q", csp)
	}
	if js := c.Must("GET", "/dashboard/dashboard.js", "", nil, 200); !strings.HasPrefix(js.Header.Get("Content-Type"), "text/javascript") {
		t.Errorf("script Content-Type %q", js.Header.Get("Content-Type"))
	}
	if r := c.Must("GET", "/dashboard/sampler.go", "", nil, 404); r.Code() != "not_found" {
		t.Errorf("unknown file: %s", r.Body)
	}
	c.Must("GET", "/v1/admin/dashboard", "", nil, 401)
	c.Must("GET", "/v1/admin/dashboard", c.Token(7, false), nil, 403)
	var snap struct {
		Placements map[string]float64 `json:"placements"`
		Sales      []struct {
			ID        string `json:"id"`
			Remaining *int64 `json:"remaining"`
			Sold      *int64 `json:"sold"`
		} `json:"sales"`
		Switches []struct{ Name, Value string } `json:"switches"`
	}
	c.Must("GET", "/v1/admin/dashboard", c.Token(1, true), nil, 200).Decode(t, &snap)
	if len(snap.Sales) != 1 || snap.Sales[0].ID != "dash-2" || snap.Sales[0].Remaining == nil || *snap.Sales[0].Remaining != 10 || *snap.Sales[0].Sold != 0 {
		t.Errorf("sales in the snapshot: %+v", snap.Sales)
	}
	if _, ok := snap.Placements["accepted"]; !ok || len(snap.Switches) == 0 {
		t.Errorf("snapshot without placements or switches: %+v", snap)
	}
}
