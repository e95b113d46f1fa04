package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spikehq/spike/internal/adapter/natsbus"
	"github.com/spikehq/spike/internal/testkit/apitest"
	"github.com/spikehq/spike/internal/testkit/tlstest"
)

const testEventKey = "test-event-key-test-event-key-test-event-key"

func TestTransportConfigErrorsNameTheKey(t *testing.T) {
	ca := tlstest.New(t)
	urls := "nats:\n  urls: [nats://a:4222]\n"
	key := "events:\n  hmac_key: " + testEventKey + "\n"
	tests := []struct{ name, file, want string }{
		{"listen without credentials or TLS", "nats:\n  listen: 127.0.0.1:4333\n", "nats.listen"},
		{"listen without TLS", "nats:\n  listen: 127.0.0.1:4333\n  user: u\n  password: p\n", "nats.listen"},
		{"listen without credentials", fmt.Sprintf("nats:\n  listen: 127.0.0.1:4333\n  listen_tls: {cert_file: %s, key_file: %s}\n", ca.ServerCert, ca.ServerKey), "nats.listen"},
		{"insecure override off loopback", "nats:\n  listen: 0.0.0.0:4333\n  insecure_listen_loopback: true\n", "nats.listen"},
		{"token and user", "nats:\n  token: t\n  user: u\n  password: p\n", "nats.token"},
		{"user without password", "nats:\n  user: u\n", "nats.password"},
		{"urls without an event key", urls, "events.hmac_key"},
		{"short event key", "events:\n  hmac_key: short\n", "events.hmac_key"},
		{"client TLS on embedded", "nats:\n  tls: {enable: true}\n", "nats.tls"},
		{"listen TLS with urls", urls + fmt.Sprintf("  listen_tls: {cert_file: %s, key_file: %s}\n", ca.ServerCert, ca.ServerKey) + key, "nats.listen_tls"},
		{"cert without key", urls + "  tls: {cert_file: " + ca.ClientCert + "}\n" + key, "nats.tls"},
		{"missing CA file", "redis:\n  addrs: [127.0.0.1:1]\n  tls: {ca_file: /nonexistent/ca.pem}\n", "redis.tls"},
		{"not a CA file", "mysql:\n  primary: root@tcp(x:3306)/db\n  tls: {ca_file: " + ca.ServerKey + "}\n", "mysql.tls"},
		{"mysql password without user", "mysql:\n  primary: root@tcp(x:3306)/db\n  password: p\n", "mysql.user"},
		{"redis username without password", "redis:\n  addrs: [127.0.0.1:1]\n  username: u\n", "redis.password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newFlagSet("serve").load([]string{"--config", writeConfig(t, tt.file)}, env(nil), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one naming %q", err, tt.want)
			}
		})
	}
	good := fmt.Sprintf("nats:\n  listen: 127.0.0.1:4333\n  token: tok3n-tok3n\n  listen_tls: {cert_file: %s, key_file: %s, client_ca_file: %s}\n", ca.ServerCert, ca.ServerKey, ca.CAFile)
	if _, err := newFlagSet("serve").load([]string{"--config", writeConfig(t, good)}, env(nil), io.Discard); err != nil {
		t.Errorf("listen with a token and TLS: %v", err)
	}
}

// TestServeRefusesOpenNATS: spike serve --nats-listen without credentials
// and TLS does not start, and says why in one line.
func TestServeRefusesOpenNATS(t *testing.T) {
	var out strings.Builder
	err := run(context.Background(), []string{"serve", "--addr", "127.0.0.1:0", "--data", t.TempDir(), "--nats-listen", "127.0.0.1:0"}, env(nil), &out, &out)
	if err == nil {
		t.Fatal("spike serve started with an open NATS port")
	}
	if msg := err.Error(); !strings.Contains(msg, "nats.listen") || strings.Contains(msg, "\n") {
		t.Errorf("error %q: want one line naming nats.listen", msg)
	}
}

func TestTransportSecretsRedacted(t *testing.T) {
	file := writeConfig(t, `
nats:
  urls: [nats://a:4222]
  user: spike
  password: natspw-s3cret
mysql:
  primary: "spike@tcp(db:3306)/spike"
  user: spike
  password: mysqlpw-s3cret
redis:
  addrs: [127.0.0.1:6379]
  username: spike
  password: redispw-s3cret
events:
  hmac_key: eventkey-s3cret-eventkey-s3cret-eventkey
  previous_hmac_key: oldkey-s3cret-oldkey-s3cret-oldkey-s3cret
`)
	cfg, err := newFlagSet("serve").load([]string{"--config", file}, env(map[string]string{"SPIKE_NATS_TOKEN": ""}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	red := cfg.redacted()
	if strings.Contains(red, "s3cret") {
		t.Errorf("a secret shows in the logged config: %s", red)
	}
	if cfg.Events.HMACKey == "" || cfg.MySQL.Password == "" {
		t.Errorf("secrets not loaded: %s", red)
	}
}

// securedEmbedded is a config for an embedded Spike whose NATS listens on
// loopback with a user, a password and TLS.
func securedEmbedded(t *testing.T, ca *tlstest.CA) Config {
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Data = t.TempDir()
	cfg.NATS.Listen = "127.0.0.1:0"
	cfg.NATS.User, cfg.NATS.Password = "spike", "nats-password"
	cfg.NATS.ListenTLS = ListenTLS{CertFile: ca.ServerCert, KeyFile: ca.ServerKey}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestForgedEventsNotPersisted replays issue 13's attack on a running
// instance: a client holding the NATS credentials (but not the event key)
// publishes eight OrderPlaced events for a buyer (0 cents each, over the
// sale's stock and the buyer's limit) and flips orders.accept in the
// switch bucket. The events are refused, parked and counted; none becomes
// an order; the switch is not applied; genuine orders still persist and
// the audit passes.
func TestForgedEventsNotPersisted(t *testing.T) {
	ca := tlstest.New(t)
	a, err := start(context.Background(), securedEmbedded(t, ca), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopApp(t, a) })
	c := newClient(t, a.addr, a.secret)
	c.SetupSale("sku-forge", "forge", 5, 2)
	admin := c.Token(1, true)

	intruder, err := nats.Connect(a.nats.ClientURL(), nats.Secure(clientTLS(t, ca, TLSFiles{CAFile: ca.CAFile})), nats.UserInfo("spike", "nats-password"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(intruder.Close)
	js, err := jetstream.New(intruder)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, natsbus.SwitchBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "orders.accept", []byte("false")); err != nil {
		t.Fatal(err)
	}
	var forged []string
	for i := range 8 {
		id := fmt.Sprintf("FORGED%020d", i)
		forged = append(forged, id)
		ev := fmt.Sprintf(`{"v":1,"order_id":%q,"sale_id":"forge","sku":"sku-forge","user_id":66,"quantity":2,"price_cents":0,"idempotency_key":"forged-%d","placed_at":%q}`,
			id, i, time.Now().UTC().Format(time.RFC3339Nano))
		if _, err := js.Publish(ctx, natsbus.PlacedSubject+"."+id, []byte(ev)); err != nil {
			t.Fatal(err)
		}
	}

	// Genuine buyers still buy: the switch flip was refused.
	var genuine []string
	for u := int64(100); u < 103; u++ {
		r, p, err := c.Place(ctx, u, c.Token(u, false), "forge", "k", 1)
		if err != nil || r.Status != 202 {
			t.Fatalf("genuine placement: %v %d %s", err, r.Status, r.Body)
		}
		genuine = append(genuine, p.OrderID)
	}
	deadline := time.Now().Add(60 * time.Second)
	for rejectedCount(t, c, "unsigned") < 8 {
		if time.Now().After(deadline) {
			t.Fatalf("after 60s only %v forged events refused", rejectedCount(t, c, "unsigned"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	rep, ok := c.WaitAudit(60 * time.Second)
	if !ok {
		t.Fatalf("audit: %+v", rep)
	}
	for _, id := range forged {
		c.Must("GET", "/v1/orders/"+id, admin, nil, 404)
	}
	for _, id := range genuine {
		c.WaitOrder(t, id, 30*time.Second, "persisted", func(o apitest.LifeOrder) bool { return o.Status == "created" })
	}
	var sw struct {
		Switches []struct{ Name, Value string }
	}
	c.Must("GET", "/v1/admin/switches", admin, nil, 200).Decode(t, &sw)
	for _, st := range sw.Switches {
		if st.Name == "orders.accept" && st.Value != "true" {
			t.Errorf("the intruder's orders.accept=%s was applied", st.Value)
		}
	}
	var sale apitest.SaleView
	c.Must("GET", "/v1/sales/forge", "", nil, 200).Decode(t, &sale)
	if sale.Sold != 3 || sale.Remaining != 2 {
		t.Errorf("sale after the attack: %+v, want 3 sold and 2 remaining", sale)
	}
}

// clientTLS is the client TLS configuration f describes.
func clientTLS(t *testing.T, _ *tlstest.CA, f TLSFiles) *tls.Config {
	t.Helper()
	cfg, err := f.config()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

var rejectedLine = regexp.MustCompile(`(?m)^spike_events_rejected_total\{reason="([a-z_]+)"\} (\d+)`)

// rejectedCount reads spike_events_rejected_total for a reason.
func rejectedCount(t *testing.T, c *client, reason string) int {
	t.Helper()
	r := c.Must("GET", "/metrics", "", nil, 200)
	for _, m := range rejectedLine.FindAllStringSubmatch(string(r.Body), -1) {
		if m[1] == reason {
			var n int
			fmt.Sscan(m[2], &n)
			return n
		}
	}
	t.Fatalf("no spike_events_rejected_total{reason=%q} in /metrics", reason)
	return 0
}

// TestRebuildIgnoresForgedEvents: unsigned events left on the stream while
// the instance was down (written straight into its JetStream store) are
// not counted when the stock counters are rebuilt at start: the sale's
// remaining units stay as the genuine orders left them, the forged events
// are refused once the workers run, and the audit passes.
func TestRebuildIgnoresForgedEvents(t *testing.T) {
	ca := tlstest.New(t)
	cfg := securedEmbedded(t, ca)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := start(context.Background(), cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, a.addr, a.secret)
	c.SetupSale("sku-rebuild", "rebuild", 10, 2)
	for u := int64(200); u < 203; u++ {
		if r, _, err := c.Place(context.Background(), u, c.Token(u, false), "rebuild", "k", 2); err != nil || r.Status != 202 {
			t.Fatalf("genuine placement: %v %d %s", err, r.Status, r.Body)
		}
	}
	if rep, ok := c.WaitAudit(60 * time.Second); !ok {
		t.Fatalf("audit before the restart: %+v", rep)
	}
	stopApp(t, a)

	// While it is down, forged events land in its stream.
	srv, err := natsbus.StartEmbeddedServer(natsbus.EmbeddedConfig{Dir: filepath.Join(cfg.Data, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := srv.Connect("intruder")
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		id := fmt.Sprintf("FORGEDREBUILD%013d", i)
		ev := fmt.Sprintf(`{"v":1,"order_id":%q,"sale_id":"rebuild","sku":"sku-rebuild","user_id":77,"quantity":1,"price_cents":0,"idempotency_key":"f-%d","placed_at":%q}`,
			id, i, time.Now().UTC().Format(time.RFC3339Nano))
		if _, err := js.Publish(context.Background(), natsbus.PlacedSubject+"."+id, []byte(ev)); err != nil {
			t.Fatal(err)
		}
	}
	nc.Close()
	srv.Shutdown()

	a, err = start(context.Background(), cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopApp(t, a) })
	if len(a.restored) != 0 {
		t.Errorf("the rebuild counted %d queued events, want none (all forged)", len(a.restored))
	}
	c = newClient(t, a.addr, a.secret)
	var sale apitest.SaleView
	c.Must("GET", "/v1/sales/rebuild", "", nil, 200).Decode(t, &sale)
	if sale.Remaining != 4 {
		t.Errorf("remaining after the rebuild = %d, want 4 (10 - 3 buyers x 2)", sale.Remaining)
	}
	deadline := time.Now().Add(60 * time.Second)
	for rejectedCount(t, c, "unsigned") < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("after 60s only %d forged events refused", rejectedCount(t, c, "unsigned"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if rep, ok := c.WaitAudit(60 * time.Second); !ok {
		t.Fatalf("audit after the restart: %+v", rep)
	}
}
