package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/spikehq/spike/internal/adapter/natsbus"
	"github.com/spikehq/spike/internal/testkit/apitest"
	"github.com/spikehq/spike/internal/testkit/tlstest"
)

// writeSeed writes a new user nkey's seed to a file of the given mode and
// returns the file and the public key.
func writeSeed(t *testing.T, mode os.FileMode) (path, pub string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	pub, _ = kp.PublicKey()
	path = filepath.Join(t.TempDir(), "spike.nk")
	if err := os.WriteFile(path, append(seed, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path, pub
}

func TestNATSAuthConfigErrorsNameTheKey(t *testing.T) {
	ca := tlstest.New(t)
	seed, pub := writeSeed(t, 0o600)
	loose, _ := writeSeed(t, 0o644)
	groupRead, _ := writeSeed(t, 0o640)
	listen := fmt.Sprintf("nats:\n  listen: 127.0.0.1:4333\n  listen_tls: {cert_file: %s, key_file: %s}\n", ca.ServerCert, ca.ServerKey)
	urls := "events:\n  hmac_key: " + testEventKey + "\nnats:\n  urls: [nats://a:4222]\n"
	tests := []struct{ name, file, want string }{
		{"seed and user", listen + "  nkey_seed_file: " + seed + "\n  user: u\n  password: p\n", "nats"},
		{"seed and creds", urls + "  nkey_seed_file: " + seed + "\n  creds_file: " + seed + "\n", "nats"},
		{"seed readable by others", listen + "  nkey_seed_file: " + loose + "\n", "nats.nkey_seed_file"},
		{"seed readable by the group", urls + "  nkey_seed_file: " + groupRead + "\n", "nats.nkey_seed_file"},
		{"creds readable by others", urls + "  creds_file: " + loose + "\n", "nats.creds_file"},
		{"missing seed", urls + "  nkey_seed_file: /nonexistent/spike.nk\n", "nats.nkey_seed_file"},
		{"not a seed", urls + "  nkey_seed_file: " + notSeed(t) + "\n", "nats.nkey_seed_file"},
		{"creds on embedded", listen + "  creds_file: " + seed + "\n", "nats.creds_file"},
		{"monitor without listen", "nats:\n  monitor: {user: m, password: p}\n", "nats.monitor"},
		{"monitor with urls", urls + "  monitor: {nkey: " + pub + "}\n", "nats.monitor"},
		{"monitor with a token instance", listen + "  token: tok3n-tok3n\n  monitor: {user: m, password: p}\n", "nats.listen"},
		{"monitor nkey not a public key", listen + "  user: u\n  password: p\n  monitor: {nkey: UNOTAKEY}\n", "nats.listen"},
		{"monitor nkey is a seed", listen + "  user: u\n  password: p\n  monitor: {nkey: " + seedText(t, seed) + "}\n", "nats.listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newFlagSet("serve").load([]string{"--config", writeConfig(t, tt.file)}, env(nil), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one naming %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "SU") {
				t.Errorf("error %v shows a seed", err)
			}
		})
	}
	monitorKey := writeSeedPub(t)
	for name, good := range map[string]string{
		"seed and monitor":      listen + "  nkey_seed_file: " + seed + "\n  monitor: {nkey: " + monitorKey + "}\n",
		"user and monitor user": listen + "  user: u\n  password: p\n  monitor: {user: m, password: q}\n",
		"seed with urls":        urls + "  nkey_seed_file: " + seed + "\n",
		"creds with urls":       urls + "  creds_file: " + seed + "\n",
	} {
		if _, err := newFlagSet("serve").load([]string{"--config", writeConfig(t, good)}, env(nil), io.Discard); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The keys have environment variables.
	cfg, err := newFlagSet("serve").load(nil, env(map[string]string{
		"SPIKE_NATS_URLS": "nats://a:4222", "SPIKE_EVENTS_HMAC_KEY": testEventKey, "SPIKE_NATS_NKEY_SEED_FILE": seed,
	}), io.Discard)
	if err != nil || cfg.NATS.NkeySeedFile != seed {
		t.Errorf("SPIKE_NATS_NKEY_SEED_FILE: %q, %v", cfg.NATS.NkeySeedFile, err)
	}
}

// seedText returns the seed in a seed file.
func seedText(t *testing.T, path string) string {
	t.Helper()
	seed, err := readSeed(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(seed)
}

func notSeed(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "not.nk")
	if err := os.WriteFile(p, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeSeedPub(t *testing.T) string {
	t.Helper()
	_, pub := writeSeed(t, 0o600)
	return pub
}

// connectWith runs connectNATS with n and reports its error.
func connectWith(n NATSConfig) error {
	a := &app{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	err := a.connectNATS(Config{NATS: n})
	if a.nc != nil {
		a.nc.Close()
	}
	return err
}

// TestExternalNATSNkey: a NATS server (over TLS) whose user is an nkey
// takes an instance configured with that nkey's seed file, and refuses one
// with another seed; a seed file others may read is refused before
// connecting.
func TestExternalNATSNkey(t *testing.T) {
	ca := tlstest.New(t)
	seedFile, _ := writeSeed(t, 0o600)
	seed, err := readSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsbus.StartEmbeddedServer(natsbus.EmbeddedConfig{Dir: t.TempDir(), Listen: "127.0.0.1:0", NkeySeed: seed, TLS: ca.ServerConfig(t, false)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	url := strings.Replace(srv.ClientURL(), "nats://", "tls://", 1)
	good := NATSConfig{URLs: []string{url}, NkeySeedFile: seedFile, TLS: TLSFiles{CAFile: ca.CAFile}}
	if err := connectWith(good); err != nil {
		t.Fatalf("the right seed: %v", err)
	}
	wrong, _ := writeSeed(t, 0o600)
	bad := good
	bad.NkeySeedFile = wrong
	if err := connectWith(bad); err == nil {
		t.Error("another seed connected")
	}
	if err := os.Chmod(seedFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := connectWith(good); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a seed file others may read: %v", err)
	}
}

// TestExternalNATSCreds: a NATS server in operator mode (JWTs) takes an
// instance configured with a .creds file of a user of its account, and
// refuses one whose user an unknown account signed.
func TestExternalNATSCreds(t *testing.T) {
	operator, _ := nkeys.CreateOperator()
	opPub, _ := operator.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	opJWT, err := oc.Encode(operator)
	if err != nil {
		t.Fatal(err)
	}
	oc, err = jwt.DecodeOperatorClaims(opJWT)
	if err != nil {
		t.Fatal(err)
	}
	account, _ := nkeys.CreateAccount()
	accPub, _ := account.PublicKey()
	accJWT, err := jwt.NewAccountClaims(accPub).Encode(operator)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	if err := resolver.Store(accPub, accJWT); err != nil {
		t.Fatal(err)
	}
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		TrustedOperators: []*jwt.OperatorClaims{oc}, AccountResolver: resolver})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	creds := func(signer nkeys.KeyPair, mode os.FileMode) string {
		user, _ := nkeys.CreateUser()
		userPub, _ := user.PublicKey()
		uc := jwt.NewUserClaims(userPub)
		uc.IssuerAccount = ""
		userJWT, err := uc.Encode(signer)
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := user.Seed()
		file, err := jwt.FormatUserConfig(userJWT, seed)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "spike.creds")
		if err := os.WriteFile(p, file, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	n := NATSConfig{URLs: []string{srv.ClientURL()}, CredsFile: creds(account, 0o600)}
	if err := connectWith(n); err != nil {
		t.Fatalf("the account's user: %v", err)
	}
	stranger, _ := nkeys.CreateAccount()
	n.CredsFile = creds(stranger, 0o600)
	if err := connectWith(n); err == nil {
		t.Error("a user of an unknown account connected")
	}
	n.CredsFile = creds(account, 0o644)
	if err := connectWith(n); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a creds file others may read: %v", err)
	}
}

// TestServeWithNkeyAndMonitor: an embedded instance whose listening NATS
// has an nkey instance user and a monitor works under the instance's
// permissions (a sale, placements, a switch, product and sale
// invalidations, the audit; no permission violation logged), and the
// monitor reads the ORDERS stream but can neither purge it nor flip a
// switch. An invalidation from a client with the instance's nkey but not
// the event key is dropped and counted.
func TestServeWithNkeyAndMonitor(t *testing.T) {
	ca := tlstest.New(t)
	seedFile, _ := writeSeed(t, 0o600)
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Data = t.TempDir()
	cfg.NATS.Listen = "127.0.0.1:0"
	cfg.NATS.NkeySeedFile = seedFile
	cfg.NATS.Monitor = NATSMonitor{User: "monitor", Password: "m0nitor-password"}
	cfg.NATS.ListenTLS = ListenTLS{CertFile: ca.ServerCert, KeyFile: ca.ServerKey}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	a, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopApp(t, a) })
	c := newClient(t, a.addr, a.secret)
	c.SetupSale("sku-nkey", "nkey", 10, 2)
	admin := c.Token(1, true)
	ctx := context.Background()
	var placed []string
	for u := int64(300); u < 303; u++ {
		r, p, err := c.Place(ctx, u, c.Token(u, false), "nkey", "k", 1)
		if err != nil || r.Status != 202 {
			t.Fatalf("placement: %v %d %s", err, r.Status, r.Body)
		}
		placed = append(placed, p.OrderID)
	}
	for _, id := range placed {
		c.WaitOrder(t, id, 30*time.Second, "persisted", func(o apitest.LifeOrder) bool { return o.Status == "created" })
	}
	c.Must("PUT", "/v1/admin/switches/ratelimit.user_rps", admin, `{"value":0}`, 200)
	c.Must("PATCH", "/v1/products/sku-nkey", admin, `{"name":"renamed"}`, 200)
	if rep, ok := c.WaitAudit(60 * time.Second); !ok {
		t.Fatalf("audit: %+v", rep)
	}

	mon, err := nats.Connect(a.nats.ClientURL(), nats.Secure(clientTLS(t, ca, TLSFiles{CAFile: ca.CAFile})), nats.UserInfo("monitor", "m0nitor-password"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mon.Close)
	js, err := jetstream.New(mon)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, natsbus.StreamName)
	if err != nil {
		t.Fatalf("monitor reads ORDERS: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := stream.Purge(short); err == nil {
		t.Error("the monitor purged ORDERS")
	}
	if _, err := js.KeyValue(ctx, natsbus.SwitchBucket); err != nil {
		t.Errorf("monitor reads the switch bucket's info: %v", err)
	}
	if err := mon.Publish("$KV."+natsbus.SwitchBucket+".orders.accept", []byte("false")); err != nil {
		t.Fatal(err)
	}
	if err := mon.Flush(); err != nil {
		t.Fatal(err)
	}
	var sw struct {
		Switches []struct{ Name, Value string }
	}
	c.Must("GET", "/v1/admin/switches", admin, nil, 200).Decode(t, &sw)
	for _, st := range sw.Switches {
		if st.Name == "orders.accept" && st.Value != "true" {
			t.Errorf("the monitor's orders.accept=%s was applied", st.Value)
		}
	}
	// A client holding the instance's nkey but not the event key: its
	// invalidation is dropped and counted; the instance's own evict.
	seed, err := readSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := nkeys.FromSeed(seed)
	pub, _ := kp.PublicKey()
	intruder, err := nats.Connect(a.nats.ClientURL(), nats.Secure(clientTLS(t, ca, TLSFiles{CAFile: ca.CAFile})), nats.Nkey(pub, kp.Sign))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(intruder.Close)
	if err := natsbus.NewInvalidations(intruder, "").Publish(ctx, "sku-nkey"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for rejectedCount(t, c, natsbus.RejectInvalidationUnsigned) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the unsigned invalidation was not counted")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.Must("PATCH", "/v1/products/sku-nkey", admin, `{"name":"renamed again"}`, 200)
	var p struct{ Name string }
	c.Must("GET", "/v1/products/sku-nkey", "", nil, 200).Decode(t, &p)
	if p.Name != "renamed again" {
		t.Errorf("product after a signed invalidation: %q", p.Name)
	}
	if strings.Contains(logs.String(), "ermissions violation") {
		t.Errorf("the instance hit a permission violation:\n%s", logs.String())
	}
}
