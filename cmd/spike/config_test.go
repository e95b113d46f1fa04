package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "spike.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigExampleFileLoads(t *testing.T) {
	cfg, err := newFlagSet("serve").load([]string{"--config", "../../deploy/spike.example.yaml"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	def := DefaultConfig()
	def.ConfigFile = "../../deploy/spike.example.yaml"
	if cfg.redacted() != def.redacted() {
		t.Errorf("the example file does not hold the defaults:\nfile     %s\ndefaults %s", cfg.redacted(), def.redacted())
	}
}

func TestConfigPrecedence(t *testing.T) {
	file := writeConfig(t, `
addr: 127.0.0.1:9000
data: /tmp/from-file
nats:
  urls: [nats://10.0.0.1:4222]
  replicas: 3
mysql:
  primary: "spike:hunter2@tcp(db:3306)/spike"
  order_shards:
    - primary: "spike:hunter2@tcp(db1:3306)/o0"
limits:
  shutdown_timeout: 30s
`)
	fs := newFlagSet("serve")
	fs.String("pprof", "", "")
	cfg, err := fs.load([]string{"--config", file, "--addr", "127.0.0.1:9999"}, env(map[string]string{
		"SPIKE_ADDR":                 "127.0.0.1:9001", // the flag wins
		"SPIKE_DATA":                 "/tmp/from-env",  // env beats the file
		"SPIKE_REDIS_ADDRS":          "127.0.0.1:7000, 127.0.0.1:7001",
		"SPIKE_JWT_SECRET":           "s3cret-s3cret-s3cret-s3cret-s3cret",
		"SPIKE_LIMITS_ADMISSION_MIN": "300",
		"SPIKE_EVENTS_HMAC_KEY":      "event-key-event-key-event-key-event-key",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "127.0.0.1:9999" || cfg.Data != "/tmp/from-env" || cfg.NATS.Replicas != 3 ||
		len(cfg.Redis.Addrs) != 2 || cfg.Redis.Addrs[1] != "127.0.0.1:7001" || cfg.Limits.AdmissionMin != 300 ||
		cfg.Limits.ShutdownTimeout != 30*time.Second || len(cfg.MySQL.OrderShards) != 1 || cfg.Embedded() {
		t.Errorf("effective config: %s", cfg.redacted())
	}
	red := cfg.redacted()
	for _, secret := range []string{"hunter2", "s3cret"} {
		if strings.Contains(red, secret) {
			t.Errorf("secret %q shows in the logged config: %s", secret, red)
		}
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name, file string
		env        map[string]string
		want       string
	}{
		{"unknown key", "nats:\n  url: nats://x:4222\n", nil, "url"},
		{"unknown top key", "adress: 1\n", nil, "adress"},
		{"bad type", "limits:\n  admission_min: lots\n", nil, "admission_min"},
		{"bad replicas", "nats:\n  replicas: 2\n", nil, "nats.replicas"},
		{"bad url", "nats:\n  urls: [http://x]\n", nil, "nats.urls"},
		{"bad redis addr", "", map[string]string{"SPIKE_REDIS_ADDRS": "nohost"}, "redis.addrs"},
		{"bad env int", "", map[string]string{"SPIKE_LIMITS_ADMISSION_MAX": "many"}, "SPIKE_LIMITS_ADMISSION_MAX"},
		{"bad env duration", "", map[string]string{"SPIKE_LIMITS_SHUTDOWN_TIMEOUT": "soon"}, "SPIKE_LIMITS_SHUTDOWN_TIMEOUT"},
		{"shards without primary", "mysql:\n  order_shards: [{primary: x}]\n", nil, "mysql.primary"},
		{"stream bounds", "limits:\n  stream_min: 10\n  stream_max: 5\n", nil, "limits.stream_min"},
		{"stream tolerance", "limits:\n  stream_tolerance: 0.5\n", nil, "limits.stream_tolerance"},
		{"bad env float", "", map[string]string{"SPIKE_LIMITS_STREAM_TOLERANCE": "lots"}, "SPIKE_LIMITS_STREAM_TOLERANCE"},
		{"stream slack", "limits:\n  stream_slack: -1ms\n", nil, "limits.stream_slack"},
		{"stock timeout", "", map[string]string{"SPIKE_LIMITS_STOCK_TIMEOUT": "1ms"}, "limits.stock_timeout"},
		{"embedded-only with urls", "nats:\n  urls: [nats://a:4222]\n  listen: 127.0.0.1:4333\n", nil, "nats.listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{}
			if tt.file != "" {
				args = append(args, "--config", writeConfig(t, tt.file))
			}
			_, err := newFlagSet("serve").load(args, env(tt.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one naming %q", err, tt.want)
			}
		})
	}
}

func TestNotifyConfig(t *testing.T) {
	file := writeConfig(t, `
notify:
  workers: 8
  webhook_url: https://file.example/hook
  timeout: 1s
`)
	fs := newFlagSet("serve")
	fs.String("notify-webhook-url", "", "")
	cfg, err := fs.load([]string{"--config", file, "--notify-webhook-url", "https://user:pw@flag.example/hook?token=tok3n"}, env(map[string]string{
		"SPIKE_NOTIFY_WEBHOOK_URL":    "https://env.example/hook", // the flag wins
		"SPIKE_NOTIFY_WEBHOOK_SECRET": "hmac-s3cret",
		"SPIKE_NOTIFY_QUEUE":          "100", // env beats the default
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.Notify
	if n.WebhookURL != "https://user:pw@flag.example/hook?token=tok3n" || n.WebhookSecret != "hmac-s3cret" || n.Workers != 8 ||
		n.Queue != 100 || n.Timeout != time.Second || n.provider() != "webhook" {
		t.Errorf("effective notify config: %+v", n)
	}
	red := cfg.redacted()
	for _, secret := range []string{"hmac-s3cret", "tok3n", ":pw@"} {
		if strings.Contains(red, secret) {
			t.Errorf("secret %q shows in the logged config: %s", secret, red)
		}
	}
	if !strings.Contains(red, "flag.example/hook") {
		t.Errorf("the logged config lost the webhook host and path: %s", red)
	}
	if def := DefaultConfig(); def.Notify.provider() != "none" {
		t.Errorf("default provider %q, want none", def.Notify.provider())
	}

	for _, tt := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"bad provider", map[string]string{"SPIKE_NOTIFY_PROVIDER": "sms"}, "notify.provider"},
		{"webhook without url", map[string]string{"SPIKE_NOTIFY_PROVIDER": "webhook"}, "notify.webhook_url"},
		{"url without secret", map[string]string{"SPIKE_NOTIFY_WEBHOOK_URL": "https://x.example/"}, "notify.webhook_secret"},
		{"url not http", map[string]string{"SPIKE_NOTIFY_WEBHOOK_URL": "ftp://x.example/", "SPIKE_NOTIFY_WEBHOOK_SECRET": "s"}, "notify.webhook_url"},
		{"no workers", map[string]string{"SPIKE_NOTIFY_WORKERS": "0"}, "notify.workers"},
		{"negative queue", map[string]string{"SPIKE_NOTIFY_QUEUE": "-1"}, "notify.queue"},
		{"zero timeout", map[string]string{"SPIKE_NOTIFY_TIMEOUT": "0s"}, "notify.timeout"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newFlagSet("serve").load(nil, env(tt.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one naming %q", err, tt.want)
			}
		})
	}
}

// TestRedactedPayments: the payment providers' secrets never reach the log.
func TestRedactedPayments(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Payments.Stripe.APIKey = "sk_live_secret1"
	cfg.Payments.Stripe.WebhookSecret = "whsec_secret2"
	cfg.Payments.Sandbox.Secret = "sandbox_secret3"
	out := cfg.redacted()
	for _, s := range []string{"sk_live_secret1", "whsec_secret2", "sandbox_secret3"} {
		if strings.Contains(out, s) {
			t.Errorf("redacted config shows %q: %s", s, out)
		}
	}
	if !strings.Contains(out, `"Provider":"sandbox"`) {
		t.Errorf("redacted config lacks the payments section: %s", out)
	}
}

// TestStartFailureIsAnError: a start that fails after the app is built
// (here: the port is taken) returns the error; it does not panic closing a
// half-built app.
func TestStartFailureIsAnError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := DefaultConfig()
	cfg.Addr = ln.Addr().String()
	cfg.Data = t.TempDir()
	a, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		stopApp(t, a)
		t.Fatal("start on a taken port succeeded")
	}
	if !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("start on a taken port: %v", err)
	}
}

// TestOneServerPerDataFolder: a second server on a data folder in use is
// refused with a clear error, and the folder is free again once the first
// stops.
func TestOneServerPerDataFolder(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Data = t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := start(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := start(context.Background(), cfg, log); err == nil {
		stopApp(t, b)
		stopApp(t, a)
		t.Fatal("a second server started on a data folder in use")
	} else if !strings.Contains(err.Error(), "in use by another spike serve") {
		t.Errorf("second server: %v", err)
	}
	stopApp(t, a)
	b, err := start(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("after the first stopped: %v", err)
	}
	stopApp(t, b)
}
