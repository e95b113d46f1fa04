package natsbus

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/internal/switches"
	"github.com/spikehq/spike/internal/testkit/tlstest"
)

// newUserKey makes a user nkey and returns its seed and public key.
func newUserKey(t *testing.T) (seed []byte, pub string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ = kp.Seed()
	pub, _ = kp.PublicKey()
	return seed, pub
}

// nkeyOption is a client option signing with seed.
func nkeyOption(t *testing.T, seed []byte) nats.Option {
	t.Helper()
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return nats.Nkey(pub, kp.Sign)
}

// TestNkeyListen: a listening server whose instance is an nkey takes a
// client signing with that nkey's seed, and refuses one signing with
// another seed, one presenting the right public key with another key's
// signature, and one without credentials.
func TestNkeyListen(t *testing.T) {
	ca := tlstest.New(t)
	seed, pub := newUserKey(t)
	e, err := StartEmbeddedServer(EmbeddedConfig{Dir: t.TempDir(), Listen: "127.0.0.1:0", NkeySeed: seed, TLS: ca.ServerConfig(t, false)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	try := func(opts ...nats.Option) error {
		nc, err := nats.Connect(e.ClientURL(), append([]nats.Option{nats.NoReconnect(), nats.Timeout(5 * time.Second), nats.Secure(clientTLS(t, ca, false))}, opts...)...)
		if err == nil {
			nc.Close()
		}
		return err
	}
	if err := try(nkeyOption(t, seed)); err != nil {
		t.Errorf("the right seed: %v", err)
	}
	wrong, _ := newUserKey(t)
	if err := try(nkeyOption(t, wrong)); err == nil {
		t.Error("another seed connected")
	}
	wrongKP, _ := nkeys.FromSeed(wrong)
	if err := try(nats.Nkey(pub, wrongKP.Sign)); err == nil {
		t.Error("the right public key signed by another seed connected")
	}
	if err := try(); err == nil {
		t.Error("a client without credentials connected")
	}
	own, err := e.Connect("spike")
	if err != nil {
		t.Fatalf("the process's own connection: %v", err)
	}
	own.Close()
}

// TestNkeyConfigRefused: an nkey seed together with another identity, a
// seed that is no user seed, or a malformed monitor is refused.
func TestNkeyConfigRefused(t *testing.T) {
	ca := tlstest.New(t)
	tlsCfg := ca.ServerConfig(t, false)
	seed, pub := newUserKey(t)
	acct, _ := nkeys.CreateAccount()
	acctSeed, _ := acct.Seed()
	for _, tt := range []struct {
		name string
		cfg  EmbeddedConfig
	}{
		{"seed and user", EmbeddedConfig{NkeySeed: seed, User: "u", Password: "p"}},
		{"seed and token", EmbeddedConfig{NkeySeed: seed, Token: "t"}},
		{"not a seed", EmbeddedConfig{NkeySeed: []byte("SUnot-a-seed")}},
		{"an account seed", EmbeddedConfig{NkeySeed: acctSeed}},
		{"monitor with a token instance", EmbeddedConfig{Token: "t", Monitor: &MonitorUser{User: "m", Password: "p"}}},
		{"monitor with user and nkey", EmbeddedConfig{NkeySeed: seed, Monitor: &MonitorUser{User: "m", Password: "p", Nkey: pub}}},
		{"monitor without password", EmbeddedConfig{NkeySeed: seed, Monitor: &MonitorUser{User: "m"}}},
		{"monitor nkey is a seed", EmbeddedConfig{User: "u", Password: "p", Monitor: &MonitorUser{Nkey: string(seed)}}},
		{"monitor is the instance", EmbeddedConfig{NkeySeed: seed, Monitor: &MonitorUser{Nkey: pub}}},
		{"monitor is the instance user", EmbeddedConfig{User: "u", Password: "p", Monitor: &MonitorUser{User: "u", Password: "q"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Dir, tt.cfg.Listen, tt.cfg.TLS = t.TempDir(), "127.0.0.1:0", tlsCfg
			e, err := StartEmbeddedServer(tt.cfg)
			if err == nil {
				e.Shutdown()
				t.Fatal("started; want refused")
			}
			t.Log(err)
		})
	}
}

// violations records the permission violations the server reports to a
// connection.
type violations struct {
	mu   sync.Mutex
	errs []error
}

func (v *violations) option() nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			v.mu.Lock()
			v.errs = append(v.errs, err)
			v.mu.Unlock()
		}
	})
}

func (v *violations) list() []error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]error(nil), v.errs...)
}

// authzServer is a listening server whose instance is an nkey and whose
// monitor is a user and password.
type authzServer struct {
	e          *Embedded
	ca         *tlstest.CA
	seed       []byte
	monitorPub string
}

func startAuthz(t *testing.T) *authzServer {
	t.Helper()
	ca := tlstest.New(t)
	seed, _ := newUserKey(t)
	e, err := StartEmbeddedServer(EmbeddedConfig{Dir: t.TempDir(), Listen: "127.0.0.1:0", NkeySeed: seed, TLS: ca.ServerConfig(t, false),
		Monitor: &MonitorUser{User: "monitor", Password: "m0nitor-password"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	return &authzServer{e: e, ca: ca, seed: seed}
}

// connect opens a connection over TLS with auth and records its
// permission violations in v.
func (s *authzServer) connect(t *testing.T, v *violations, auth nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.e.ClientURL(), nats.Secure(clientTLS(t, s.ca, false)), auth, v.option(), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestInstancePermissionsSuffice runs everything a Spike instance does on
// NATS as the instance's user of a listening server: the order stream
// (single and batched placements, the workers, lookups, the rebuild's
// reads, refusals parked, the orphan sweep), lifecycle events, the switch
// bucket, and core NATS invalidations and persisted announcements. The
// server reports no permission violation.
func TestInstancePermissionsSuffice(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := startAuthz(t)
	var v violations
	// The process's own connection, and one over the listener as another
	// instance would connect.
	own, err := s.e.Connect("spike")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(own.Close)
	own.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			v.mu.Lock()
			v.errs = append(v.errs, err)
			v.mu.Unlock()
		}
	})
	other := s.connect(t, &v, nkeyOption(t, s.seed))

	keys := testKeys(t, "0123456789abcdef0123456789abcdef-instances")
	counters := inventory.New(spike.NewIDGenerator())
	now := time.Now().UTC().Truncate(time.Millisecond)
	sl := sale.Sale{ID: "sale-1", SKU: "sku-1", Stock: 100, PriceCents: 500, PerUserLimit: 5, StartsAt: now.Add(-time.Hour), EndsAt: now.Add(time.Hour)}
	if err := counters.Open(ctx, sl); err != nil {
		t.Fatal(err)
	}
	var rejected sync.Map
	cfg := Config{AckWait: time.Second, Keys: keys, Holds: counters, OrphanSweep: 50 * time.Millisecond,
		Rejected: func(reason string) { rejected.Store(reason, true) }}
	bus, err := New(ctx, other, cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	cfg.PublishBatch = 8
	batched, err := New(ctx, own, cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(batched.Close)

	place := func(b *Bus, user int64) string {
		res, _, err := counters.Reserve(ctx, inventory.Request{SaleID: sl.ID, UserID: user, Key: "k", Quantity: 1})
		if err != nil {
			t.Fatal(err)
		}
		e := order.Placed{V: 1, OrderID: res.OrderID, SaleID: sl.ID, SKU: sl.SKU, UserID: user, Quantity: 1, PriceCents: 500, Key: "k", PlacedAt: res.PlacedAt}
		if err := b.Enqueue(ctx, e); err != nil {
			t.Fatal(err)
		}
		return e.OrderID
	}
	single := place(bus, 1)
	place(batched, 2)
	if _, ok, err := bus.Placed(ctx, single); err != nil || !ok {
		t.Fatalf("Placed(%s) = %v, %v", single, ok, err)
	}
	if _, err := bus.Unpersisted(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := bus.Overdue(ctx, time.Now().Add(time.Hour), 0, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.sweepOrphans(ctx, func(context.Context, []order.Placed) error { return nil }); err != nil {
		t.Fatal(err)
	}
	// An unsigned event is refused: parked.
	if _, err := bus.js.Publish(ctx, PlacedSubject+".unsigned", []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	var rec recorder
	wctx, stopWorker := context.WithCancel(ctx)
	workerDone := make(chan error, 1)
	go func() { workerDone <- bus.RunWorker(wctx, AnnouncePersisted(other, "", rec.persist, quietLog())) }()
	announced := make(chan string, 16)
	fctx, stopFollow := context.WithCancel(ctx)
	followDone := make(chan error, 1)
	go func() {
		followDone <- FollowPersisted(fctx, own, "", func(_ int64, id string) { announced <- id })
	}()
	// Lifecycle events.
	events, err := NewEvents(ctx, bus, EventsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := events.PublishTransition(ctx, order.TransitionEvent{V: 1, OrderID: single, From: order.Created, To: order.Paid}); err != nil {
		t.Fatal(err)
	}
	// Switches: opened, set on one instance, applied on the other.
	boards := []*switches.Board{switches.New(switches.Defs), switches.New(switches.Defs)}
	var sws []*Switches
	var running sync.WaitGroup
	for i, b := range []*Bus{bus, batched} {
		sw, err := NewSwitches(ctx, b, boards[i], quietLog())
		if err != nil {
			t.Fatal(err)
		}
		running.Go(func() { sw.Run(ctx) })
		sws = append(sws, sw)
	}
	defer running.Wait()
	defer cancel()
	applied := make(chan struct{}, 1)
	boards[1].OnChange(func(name, value string) {
		if name == switches.OrdersAccept && value == "false" {
			applied <- struct{}{}
		}
	})
	if err := sws[0].Set(ctx, switches.OrdersAccept, "false"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the switch applied on the other instance", applied)
	// An instance starting now loads the stored value.
	late := switches.New(switches.Defs)
	if _, err := NewSwitches(ctx, bus, late, quietLog()); err != nil {
		t.Fatal(err)
	}
	if late.On(switches.OrdersAccept) {
		t.Error("a starting instance did not load orders.accept=false")
	}
	// Invalidations, both ways.
	for _, subject := range []string{"", SaleInvalidateSubject} {
		got, stop := subscribeInvalidations(t, batched.Invalidations(subject), bus.Invalidations(subject))
		if err := bus.Invalidations(subject).Publish(ctx, "sku-1"); err != nil {
			t.Fatal(err)
		}
		if sku := waitFor(t, "an invalidation", got); sku != "sku-1" {
			t.Errorf("invalidated %q, want sku-1", sku)
		}
		stop()
	}

	// Everything placed is persisted (and announced), the unsigned event
	// refused.
	deadline := time.Now().Add(30 * time.Second)
	for !rec.has(single) || rec.count() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("persisted %v", rec.ids)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, "a persisted announcement", announced)
	for {
		if _, ok := rejected.Load(RejectUnsigned); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the unsigned event was not refused")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopWorker()
	<-workerDone
	stopFollow()
	<-followDone
	for _, nc := range []*nats.Conn{own, other} {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if errs := v.list(); len(errs) > 0 {
		t.Fatalf("permission violations: %v", errs)
	}
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ids)
}

func waitFor[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: not after 30s", what)
	}
	var zero T
	return zero
}

// subscribeInvalidations runs sub.Subscribe until stop is called and
// returns once a "ready" published by pub arrives; the channel receives
// every later SKU.
func subscribeInvalidations(t *testing.T, sub, pub *Invalidations) (got <-chan string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan string, 100)
	done := make(chan error, 1)
	go func() { done <- sub.Subscribe(ctx, func(sku string) { ch <- sku }) }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for {
		if err := pub.Publish(ctx, "ready"); err != nil {
			t.Fatal(err)
		}
		select {
		case sku := <-ch:
			if sku != "ready" {
				t.Fatalf("received %q, want ready", sku)
			}
			for len(ch) > 0 {
				if sku := <-ch; sku != "ready" {
					t.Fatalf("received %q, want ready", sku)
				}
			}
			return ch, func() {
				cancel()
				if err := <-done; err != nil {
					t.Error(err)
				}
			}
		case err := <-done:
			t.Fatalf("Subscribe() = %v before any message", err)
		case <-deadline:
			t.Fatal("subscription not ready after 30s")
		case <-tick.C:
		}
	}
}

// TestMonitorReadOnly: the monitor user of a listening server reads the
// streams' state and watches Spike's events, but cannot purge or delete
// the ORDERS stream, publish an order event (through JetStream or core
// NATS), flip a switch or delete one, or delete the workers' consumer;
// the instance's user, on the same server, places, persists and sets
// switches. Nothing the monitor tried changed anything.
func TestMonitorReadOnly(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := startAuthz(t)
	var iv, mv violations
	inst := s.connect(t, &iv, nkeyOption(t, s.seed))
	mon := s.connect(t, &mv, nats.UserInfo("monitor", "m0nitor-password"))

	keys := testKeys(t, "0123456789abcdef0123456789abcdef-instances")
	bus, err := New(ctx, inst, Config{Keys: keys}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	board := switches.New(switches.Defs)
	sw, err := NewSwitches(ctx, bus, board, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.Set(ctx, switches.OrdersAccept, "true"); err != nil {
		t.Fatal(err)
	}

	// The monitor watches placements as they are stored.
	watched := make(chan *nats.Msg, 16)
	msub, err := mon.ChanSubscribe(PlacedSubject+".>", watched)
	if err != nil {
		t.Fatal(err)
	}
	defer msub.Unsubscribe()
	if err := mon.Flush(); err != nil {
		t.Fatal(err)
	}
	ev := order.Placed{V: 1, OrderID: "ORDER-1", SaleID: "s", SKU: "sku", UserID: 1, Quantity: 1, PriceCents: 100, Key: "k", PlacedAt: time.Now().UTC()}
	if err := bus.Enqueue(ctx, ev); err != nil {
		t.Fatalf("the instance places: %v", err)
	}
	if m := waitFor(t, "the monitor sees the placement", watched); m.Subject != PlacedSubject+".ORDER-1" {
		t.Errorf("monitor saw %s", m.Subject)
	}

	mjs, err := jetstream.New(mon)
	if err != nil {
		t.Fatal(err)
	}
	// Reads: stream info, a stored message, the consumer, the switches.
	stream, err := mjs.Stream(ctx, StreamName)
	if err != nil {
		t.Fatalf("monitor reads stream info: %v", err)
	}
	before, err := stream.Info(ctx)
	if err != nil || before.State.Msgs != 1 {
		t.Fatalf("monitor's stream info: %+v, %v; want 1 message", before, err)
	}
	if _, err := stream.GetMsg(ctx, before.State.FirstSeq); err != nil {
		t.Errorf("monitor reads a message: %v", err)
	}
	if _, err := stream.Consumer(ctx, WorkerName); err != nil {
		t.Errorf("monitor reads the consumer: %v", err)
	}

	// Writes, each bounded: a refused request is never answered.
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 2*time.Second) }
	refused := map[string]func(context.Context) error{
		"purge ORDERS":        func(ctx context.Context) error { return stream.Purge(ctx) },
		"delete ORDERS":       func(ctx context.Context) error { return mjs.DeleteStream(ctx, StreamName) },
		"delete a message":    func(ctx context.Context) error { return stream.DeleteMsg(ctx, before.State.FirstSeq) },
		"delete the consumer": func(ctx context.Context) error { return stream.DeleteConsumer(ctx, WorkerName) },
		"create a consumer": func(ctx context.Context) error {
			_, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "thief"})
			return err
		},
		"delete ORDERS_PARKED": func(ctx context.Context) error { return mjs.DeleteStream(ctx, parkedStreamName) },
		"create a stream": func(ctx context.Context) error {
			_, err := mjs.CreateStream(ctx, jetstream.StreamConfig{Name: "EVIL", Subjects: []string{"evil.>"}})
			return err
		},
		"publish an order (js)": func(ctx context.Context) error {
			_, err := mjs.Publish(ctx, PlacedSubject+".FORGED", []byte(`{"v":1}`))
			return err
		},
		"publish a lifecycle event": func(ctx context.Context) error {
			_, err := mjs.Publish(ctx, EventsSubject+".paid.ORDER-1", []byte(`{"v":1}`))
			return err
		},
		"flip a switch": func(ctx context.Context) error {
			kv, err := mjs.KeyValue(ctx, SwitchBucket)
			if err != nil {
				return err
			}
			_, err = kv.Put(ctx, switches.OrdersAccept, []byte("false"))
			return err
		},
		"delete a switch": func(ctx context.Context) error { return mjs.DeleteKeyValue(ctx, SwitchBucket) },
	}
	var tries sync.WaitGroup
	for name, f := range refused {
		tries.Go(func() { // at once: each waits out its timeout
			c, cancel := short()
			defer cancel()
			if err := f(c); err == nil {
				t.Errorf("%s: the monitor's write succeeded", name)
			}
		})
	}
	tries.Wait()
	// Core NATS publishes are dropped by the server (and reported).
	for _, subject := range []string{PlacedSubject + ".CORE", "$KV." + SwitchBucket + "." + switches.OrdersAccept, InvalidateSubject, "$JS.API.STREAM.PURGE." + StreamName} {
		if err := mon.Publish(subject, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := mon.Flush(); err != nil {
		t.Fatal(err)
	}

	// Nothing changed: the one event is there, the consumer too, the
	// switch is still on; the server told the monitor it was refused.
	if after, err := bus.stream.Info(ctx); err != nil {
		t.Errorf("ORDERS after the monitor's attempts: %v", err)
	} else if after.State.Msgs != 1 || after.State.LastSeq != before.State.LastSeq {
		t.Errorf("ORDERS after the monitor's attempts: %+v; want the one event", after.State)
	}
	if _, err := bus.stream.Consumer(ctx, WorkerName); err != nil {
		t.Errorf("the workers' consumer: %v", err)
	}
	if _, err := mjs.Stream(ctx, "EVIL"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("stream EVIL: %v, want not found", err)
	}
	kv, err := bus.js.KeyValue(ctx, SwitchBucket)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(ctx, switches.OrdersAccept); err != nil || e.Revision() != 1 {
		t.Errorf("orders.accept after the monitor's attempts: %v, %v; want revision 1", e, err)
	}
	if len(mv.list()) == 0 {
		t.Error("the server reported no violation to the monitor")
	}

	// The instance user cannot purge either: no Spike code does.
	c, cancelPurge := short()
	defer cancelPurge()
	if err := bus.stream.Purge(c); err == nil {
		t.Error("the instance purged ORDERS")
	}
	// And it persists what is there.
	var rec recorder
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- bus.RunWorker(wctx, rec.persist) }()
	deadline := time.Now().Add(30 * time.Second)
	for !rec.has("ORDER-1") {
		if time.Now().After(deadline) {
			t.Fatal("ORDER-1 not persisted")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	<-done
	if errs := iv.list(); len(errs) != 1 { // the purge
		t.Errorf("instance violations: %v; want only the purge", errs)
	}
}

// TestForgedInvalidationsDropped: with the instances' key, an
// invalidation published by a client without it (unsigned, signed with
// another key, or a signed sale invalidation replayed as a product's)
// evicts nothing and is counted; a signed one evicts.
func TestForgedInvalidationsDropped(t *testing.T) {
	ctx := context.Background()
	e, err := StartEmbedded(t.TempDir(), "", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	conn := func() *nats.Conn {
		nc, err := e.Connect("test")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	var mu sync.Mutex
	rejected := map[string]int{}
	keys := testKeys(t, "0123456789abcdef0123456789abcdef-instances")
	newBus := func(k *Keys) *Bus {
		b, err := New(ctx, conn(), Config{Keys: k, Rejected: func(r string) { mu.Lock(); rejected[r]++; mu.Unlock() }}, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		return b
	}
	receiver, sender := newBus(keys), newBus(keys)
	got, stop := subscribeInvalidations(t, receiver.Invalidations(""), sender.Invalidations(""))
	defer stop()

	intruder := conn()
	if err := NewInvalidations(intruder, "").Publish(ctx, "sku-unsigned"); err != nil {
		t.Fatal(err)
	}
	if err := newBus(testKeys(t, "an attacker's guess at the key, 32+ bytes")).Invalidations("").Publish(ctx, "sku-other-key"); err != nil {
		t.Fatal(err)
	}
	// A sale's signed invalidation, captured and replayed on the product
	// subject.
	sale := sender.Invalidations(SaleInvalidateSubject)
	replay := &nats.Msg{Subject: InvalidateSubject, Data: []byte("sku-replayed"),
		Header: nats.Header{SigHeader: []string{keys.signature(purposeInvalidate, sale.signed([]byte("sku-replayed")))}}}
	if err := intruder.PublishMsg(replay); err != nil {
		t.Fatal(err)
	}
	if err := intruder.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := sender.Invalidations("").Publish(ctx, "sku-genuine"); err != nil {
		t.Fatal(err)
	}
	// Messages reach the subscriber in the order the server took them:
	// the forged ones first.
	if sku := waitFor(t, "the signed invalidation", got); sku != "sku-genuine" {
		t.Errorf("evicted %q, want sku-genuine only", sku)
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[string]int{RejectInvalidationUnsigned: 1, RejectInvalidationUnknownKey: 1, RejectInvalidationBadSignature: 1}
	if !mapsEqual(rejected, want) {
		t.Errorf("rejected %v, want %v", rejected, want)
	}
}
