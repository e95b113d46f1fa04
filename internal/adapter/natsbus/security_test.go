package natsbus

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/internal/testkit/tlstest"
)

// secured starts an embedded server listening on loopback with a user,
// a password and TLS (mutual when asked).
func secured(t *testing.T, ca *tlstest.CA, mutual bool) *Embedded {
	t.Helper()
	e, err := StartEmbeddedServer(EmbeddedConfig{Dir: t.TempDir(), Listen: "127.0.0.1:0",
		User: "spike", Password: "s3cret-password", TLS: ca.ServerConfig(t, mutual),
		Monitor: &MonitorUser{User: "monitor", Password: "m0nitor-password"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	return e
}

func clientTLS(t *testing.T, ca *tlstest.CA, withCert bool) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(ca.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if withCert {
		cert, err := tls.LoadX509KeyPair(ca.ClientCert, ca.ClientKey)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

// TestListenRefusedWhenOpen: a listening embedded server needs credentials
// and TLS; the insecure override is for loopback only.
func TestListenRefusedWhenOpen(t *testing.T) {
	ca := tlstest.New(t)
	tlsCfg := ca.ServerConfig(t, false)
	for _, tt := range []struct {
		name string
		cfg  EmbeddedConfig
	}{
		{"nothing", EmbeddedConfig{Listen: "127.0.0.1:0"}},
		{"credentials without TLS", EmbeddedConfig{Listen: "127.0.0.1:0", User: "u", Password: "p"}},
		{"token without TLS", EmbeddedConfig{Listen: "127.0.0.1:0", Token: "t"}},
		{"TLS without credentials", EmbeddedConfig{Listen: "127.0.0.1:0", TLS: tlsCfg}},
		{"user without password", EmbeddedConfig{Listen: "127.0.0.1:0", User: "u", TLS: tlsCfg}},
		{"user and token", EmbeddedConfig{Listen: "127.0.0.1:0", User: "u", Password: "p", Token: "t", TLS: tlsCfg}},
		{"insecure override off loopback", EmbeddedConfig{Listen: "0.0.0.0:0", InsecureLoopback: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Dir = t.TempDir()
			e, err := StartEmbeddedServer(tt.cfg)
			if err == nil {
				e.Shutdown()
				t.Fatal("started; want refused")
			}
			t.Log(err)
		})
	}
	e, err := StartEmbeddedServer(EmbeddedConfig{Dir: t.TempDir(), Listen: "127.0.0.1:0", InsecureLoopback: true})
	if err != nil {
		t.Fatalf("insecure override on loopback: %v", err)
	}
	e.Shutdown()
}

// TestListenRequiresCredentialsAndTLS: against the listening server, a
// client without credentials, with wrong ones, or without TLS is refused;
// with both it connects, and so does the process's own connection.
func TestListenRequiresCredentialsAndTLS(t *testing.T) {
	ca := tlstest.New(t)
	e := secured(t, ca, false)
	url := e.ClientURL()
	try := func(opts ...nats.Option) error {
		nc, err := nats.Connect(url, append([]nats.Option{nats.NoReconnect(), nats.Timeout(5 * time.Second)}, opts...)...)
		if err == nil {
			nc.Close()
		}
		return err
	}
	if err := try(nats.Secure(clientTLS(t, ca, false))); err == nil {
		t.Error("a client without credentials connected")
	}
	if err := try(nats.Secure(clientTLS(t, ca, false)), nats.UserInfo("spike", "wrong")); err == nil {
		t.Error("a client with a wrong password connected")
	}
	if err := try(nats.UserInfo("spike", "s3cret-password")); err == nil {
		t.Error("a client without TLS connected")
	}
	other := clientTLS(t, ca, false)
	otherPEM, _ := os.ReadFile(ca.OtherCAFile)
	other.RootCAs = x509.NewCertPool()
	other.RootCAs.AppendCertsFromPEM(otherPEM)
	if err := try(nats.Secure(other), nats.UserInfo("spike", "s3cret-password")); err == nil {
		t.Error("a client trusting another CA connected")
	}
	if err := try(nats.Secure(clientTLS(t, ca, false)), nats.UserInfo("spike", "s3cret-password")); err != nil {
		t.Errorf("a client with credentials and TLS: %v", err)
	}
	own, err := e.Connect("spike")
	if err != nil {
		t.Fatalf("the process's own connection: %v", err)
	}
	own.Close()

	// A token instead of a user.
	tok, err := StartEmbeddedServer(EmbeddedConfig{Dir: t.TempDir(), Listen: "127.0.0.1:0", Token: "t0ken-t0ken", TLS: ca.ServerConfig(t, false)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tok.Shutdown)
	url = tok.ClientURL()
	if err := try(nats.Secure(clientTLS(t, ca, false)), nats.Token("wrong")); err == nil {
		t.Error("a client with a wrong token connected")
	}
	if err := try(nats.Secure(clientTLS(t, ca, false)), nats.Token("t0ken-t0ken")); err != nil {
		t.Errorf("a client with the token and TLS: %v", err)
	}
	if own, err := tok.Connect("spike"); err != nil {
		t.Errorf("the process's own connection (token): %v", err)
	} else {
		own.Close()
	}

	// Mutual TLS: a client certificate is required too.
	m := secured(t, ca, true)
	url = m.ClientURL()
	if err := try(nats.Secure(clientTLS(t, ca, false)), nats.UserInfo("spike", "s3cret-password")); err == nil {
		t.Error("mutual TLS: a client without a certificate connected")
	}
	if err := try(nats.Secure(clientTLS(t, ca, true)), nats.UserInfo("spike", "s3cret-password")); err != nil {
		t.Errorf("mutual TLS: a client with a certificate: %v", err)
	}
}

func testKeys(t *testing.T, key string) *Keys {
	t.Helper()
	k, err := NewKeys([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// recorder is a persist function that remembers what it persisted.
type recorder struct {
	mu  sync.Mutex
	ids []string
}

func (r *recorder) persist(_ context.Context, events []order.Placed) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range events {
		r.ids = append(r.ids, e.OrderID)
	}
	return nil
}

func (r *recorder) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.ids, id)
}

// TestForgedEventsRefused is the attack of issue 13: a client with the
// right NATS credentials but not the event key publishes OrderPlaced
// events. Unsigned, badly signed, and validly signed but matching no
// reservation, each is parked, counted and never persisted, and no reader
// of the stream (a rebuild, the overdue sweep, a lookup) sees the badly
// signed ones; a genuine placement persists.
func TestForgedEventsRefused(t *testing.T) {
	for _, batch := range []int{1, 16} {
		t.Run(map[int]string{1: "single", 16: "batched"}[batch], func(t *testing.T) {
			testForgedEventsRefused(t, batch)
		})
	}
}

func testForgedEventsRefused(t *testing.T, batch int) {
	ctx := context.Background()
	ca := tlstest.New(t)
	e := secured(t, ca, false)
	nc, err := e.Connect("spike")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	keys := testKeys(t, "0123456789abcdef0123456789abcdef-instances")
	counters := inventory.New(spike.NewIDGenerator())
	now := time.Now().UTC().Truncate(time.Millisecond)
	sl := sale.Sale{ID: "sale-1", SKU: "sku-1", Stock: 10, PriceCents: 500, PerUserLimit: 2, StartsAt: now.Add(-time.Hour), EndsAt: now.Add(time.Hour)}
	if err := counters.Open(ctx, sl); err != nil {
		t.Fatal(err)
	}
	var rejMu sync.Mutex
	rejected := map[string]int{}
	bus, err := New(ctx, nc, Config{AckWait: time.Second, PublishBatch: batch, Keys: keys, Holds: counters,
		Rejected: func(reason string) { rejMu.Lock(); rejected[reason]++; rejMu.Unlock() }}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)

	// The intruder: right credentials, over TLS, no event key.
	intruder, err := nats.Connect(e.ClientURL(), nats.Secure(clientTLS(t, ca, false)), nats.UserInfo("spike", "s3cret-password"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(intruder.Close)
	forged := func(id string) order.Placed {
		return order.Placed{V: 1, OrderID: id, SaleID: sl.ID, SKU: sl.SKU, UserID: 7, Quantity: 5, PriceCents: 0, Key: "k-" + id, PlacedAt: now}
	}
	publish := func(id string, sign *Keys) {
		ev := forged(id)
		m := signedMsg(sign, purposePlaced, PlacedSubject+"."+id, appendPlaced(nil, &ev))
		js, err := jetstream.New(intruder)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	publish("forged-unsigned", nil)
	publish("forged-wrong-key", testKeys(t, "an attacker's guess at the key, 32+ bytes"))
	// Signed with the instances' key (as if it leaked) but reserved nowhere.
	publish("forged-no-reservation", keys)

	// A genuine placement: reserved, then enqueued through the bus.
	res, _, err := counters.Reserve(ctx, inventory.Request{SaleID: sl.ID, UserID: 42, Key: "genuine", Quantity: 1})
	if err != nil {
		t.Fatal(err)
	}
	genuine := order.Placed{V: 1, OrderID: res.OrderID, SaleID: sl.ID, SKU: sl.SKU, UserID: 42, Quantity: 1, PriceCents: 500, Key: "genuine", PlacedAt: res.PlacedAt}
	if err := bus.Enqueue(ctx, genuine); err != nil {
		t.Fatal(err)
	}

	// Readers of the stream see only signed events.
	queued, err := bus.Unpersisted(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, q := range queued {
		ids = append(ids, q.OrderID)
	}
	slices.Sort(ids)
	want := []string{"forged-no-reservation", genuine.OrderID}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Errorf("Unpersisted = %v, want %v", ids, want)
	}
	if batch == 1 {
		if _, ok, err := bus.Placed(ctx, "forged-unsigned"); ok || err != nil {
			t.Errorf("Placed(forged-unsigned) = %v, %v; want not found", ok, err)
		}
	}
	overdue, _, err := bus.Overdue(ctx, time.Now().Add(time.Hour), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(overdue) != 1 || overdue[0].OrderID != genuine.OrderID {
		t.Errorf("Overdue = %v, want only the genuine event", overdue)
	}

	wctx, stop := context.WithCancel(ctx)
	var rec recorder
	done := make(chan error, 1)
	go func() { done <- bus.RunWorker(wctx, rec.persist) }()
	deadline := time.Now().Add(30 * time.Second)
	for !rec.has(genuine.OrderID) || parkedCount(t, bus) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: persisted %v, parked %d", rec.ids, parkedCount(t, bus))
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"forged-unsigned", "forged-wrong-key", "forged-no-reservation"} {
		if rec.has(id) {
			t.Errorf("%s was persisted", id)
		}
	}
	rejMu.Lock()
	wantRejected := map[string]int{RejectUnsigned: 1, RejectUnknownKey: 1, RejectNoReservation: 1}
	if !mapsEqual(rejected, wantRejected) {
		t.Errorf("rejected = %v, want %v", rejected, wantRejected)
	}
	rejMu.Unlock()
	if n, err := bus.Backlog(ctx); err != nil || n != 0 {
		t.Errorf("Backlog = %d, %v; want the refused events gone from the order stream", n, err)
	}
	// The parked messages say why, and where they came from: an operator
	// reads them as the monitor (the instances never do).
	monitor, err := nats.Connect(e.ClientURL(), nats.Secure(clientTLS(t, ca, false)), nats.UserInfo("monitor", "m0nitor-password"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(monitor.Close)
	mjs, err := jetstream.New(monitor)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := mjs.Stream(ctx, bus.cfg.ParkedStream)
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]bool{}
	for seq := uint64(1); seq <= 3; seq++ {
		m, err := ps.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		reasons[m.Header.Get(RejectReasonHeader)] = true
		if !bytes.Contains(m.Data, []byte(`"forged-`)) || m.Header.Get(OriginalSubjectHeader) == "" {
			t.Errorf("parked message %d: %s %v", seq, m.Data, m.Header)
		}
	}
	if len(reasons) != 3 {
		t.Errorf("parked reasons = %v", reasons)
	}
}

func parkedCount(t *testing.T, b *Bus) uint64 {
	t.Helper()
	ps, err := b.js.Stream(context.Background(), b.cfg.ParkedStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := ps.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestSignature: a signature verifies with the key that made it and with
// a rotated-in key that lists the old one, and fails when the bytes, the
// purpose or the key change.
func TestSignature(t *testing.T) {
	old := testKeys(t, "the old key, at least thirty-two bytes")
	data := []byte(`{"v":1}`)
	m := signedMsg(old, purposePlaced, "s", data)
	if err := old.verify(purposePlaced, data, m.Header); err != nil {
		t.Fatal(err)
	}
	rotated, err := NewKeys([]byte("the new key, at least thirty-two bytes"), []byte("the old key, at least thirty-two bytes"))
	if err != nil {
		t.Fatal(err)
	}
	if err := rotated.verify(purposePlaced, data, m.Header); err != nil {
		t.Errorf("rotated keys refuse the old key's signature: %v", err)
	}
	if err := old.verify(purposeTransition, data, m.Header); reasonOf(err) != RejectBadSignature {
		t.Errorf("another purpose: %v", err)
	}
	if err := old.verify(purposePlaced, []byte(`{"v":2}`), m.Header); reasonOf(err) != RejectBadSignature {
		t.Errorf("changed bytes: %v", err)
	}
	newOnly := testKeys(t, "the new key, at least thirty-two bytes")
	if err := newOnly.verify(purposePlaced, data, m.Header); reasonOf(err) != RejectUnknownKey {
		t.Errorf("retired key: %v", err)
	}
	if _, err := NewKeys([]byte("short")); err == nil {
		t.Error("a short key was accepted")
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// BenchmarkSignAndVerify: the cost each event (or batch) pays for its
// proof of origin: one HMAC-SHA256 to sign, one to verify.
func BenchmarkSignAndVerify(b *testing.B) {
	k, err := NewKeys([]byte("0123456789abcdef0123456789abcdef-bench"))
	if err != nil {
		b.Fatal(err)
	}
	ev := order.Placed{V: 1, OrderID: "06H3S4PBOBHVOM3KGS60QCCMUC", SaleID: "sale-1", SKU: "sku-1", UserID: 42, Quantity: 1,
		PriceCents: 999, Key: "idempotency-key-0001", PlacedAt: time.Now().UTC()}
	data := appendPlaced(nil, &ev)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		m := signedMsg(k, purposePlaced, "s", data)
		if err := k.verify(purposePlaced, data, m.Header); err != nil {
			b.Fatal(err)
		}
	}
}
