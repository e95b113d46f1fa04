package natsbus_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/natsbus"
	"github.com/spikehq/spike/internal/domain/order"
)

// clusteredPair returns two clustered, batching buses on one stream (two
// instances), each answering lookups for its generator's node, and a third
// connection to the same server.
func clusteredPair(t *testing.T) (a, b *natsbus.Bus, idsA, idsB *spike.IDGenerator, third *nats.Conn) {
	t.Helper()
	e, err := natsbus.StartEmbedded(t.TempDir(), "", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	conns := make([]*nats.Conn, 3)
	for i := range conns {
		if conns[i], err = e.Connect(fmt.Sprint("test-", i)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(conns[i].Close)
	}
	keys, err := natsbus.NewKeys([]byte("a lookup test key of thirty-two bytes"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := natsbus.Config{AckWait: time.Second, PublishBatch: 8, Clustered: true, Keys: keys, Linger: time.Millisecond}
	idsA, idsB = spike.NewIDGenerator(), spike.NewIDGenerator()
	buses := make([]*natsbus.Bus, 2)
	for i, ids := range []*spike.IDGenerator{idsA, idsB} {
		bus, err := natsbus.New(context.Background(), conns[i], cfg, quiet)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(bus.Close)
		if err := bus.AnswerLookups(ids.Node()); err != nil {
			t.Fatal(err)
		}
		buses[i] = bus
	}
	return buses[0], buses[1], idsA, idsB, conns[2]
}

func eventWithID(id string, i int) order.Placed {
	e := event(i)
	e.OrderID = id
	return e
}

// TestClusteredLookups: an order published in a batch by instance A is
// found from instance B by asking A; an order A never stored is not; once
// A is gone, B finds A's events on the stream itself.
func TestClusteredLookups(t *testing.T) {
	a, b, idsA, _, _ := clusteredPair(t)
	ctx := context.Background()
	var ids []string
	var wg sync.WaitGroup
	for i := range 40 { // concurrent: several events per batch
		id := idsA.New()
		ids = append(ids, id)
		wg.Go(func() {
			if err := a.Enqueue(ctx, eventWithID(id, i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for i, id := range ids {
		e, ok, err := b.Placed(ctx, id)
		if err != nil || !ok || e.OrderID != id || e.Key != event(i).Key {
			t.Fatalf("B.Placed(%s) = %+v, %v, %v; want A's event", id, e, ok, err)
		}
	}
	never := idsA.New()
	if _, ok, err := b.Placed(ctx, never); err != nil || ok {
		t.Errorf("B.Placed(an id A never stored) = %v, %v; want not found", ok, err)
	}
	if _, ok, err := a.Placed(ctx, never); err != nil || ok {
		t.Errorf("A.Placed(its own unstored id) = %v, %v; want not found", ok, err)
	}

	a.Close() // A's instance is gone: nobody answers for its node
	for _, id := range []string{ids[0], ids[len(ids)-1]} {
		e, ok, err := b.Placed(ctx, id)
		if err != nil || !ok || e.OrderID != id {
			t.Errorf("B.Placed(%s) after A is gone = %v, %v; want it from the stream", id, ok, err)
		}
	}
	if _, ok, err := b.Placed(ctx, never); err != nil || ok {
		t.Errorf("B.Placed(never stored) after A is gone = %v, %v; want not found", ok, err)
	}
}

// TestForgedLookupAnswer: an answer without the instances' key is not
// believed ("not on the stream" could get a stored order's units freed).
func TestForgedLookupAnswer(t *testing.T) {
	_, b, _, _, third := clusteredPair(t)
	forger := spike.NewIDGenerator()
	sub, err := third.Subscribe(natsbus.LookupSubject+"."+forger.Node(), func(m *nats.Msg) {
		_ = m.Respond(append([]byte("-"), m.Data...))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := third.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := b.Placed(context.Background(), forger.New()); err == nil || ok {
		t.Errorf("Placed with a forged answer = %v, %v; want an error", ok, err)
	}
}

// TestLookupAfterLostAnnouncement: an event that another instance's worker
// persisted without a word (the announcement lost) stops being reported on
// the stream once its message is gone.
func TestLookupAfterLostAnnouncement(t *testing.T) {
	a, b, idsA, _, _ := clusteredPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	id := idsA.New()
	if err := a.Enqueue(ctx, eventWithID(id, 1)); err != nil {
		t.Fatal(err)
	}
	persisted := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		done <- b.RunWorker(ctx, func(context.Context, []order.Placed) error {
			once.Do(func() { close(persisted) })
			return nil
		})
	}()
	defer func() { cancel(); <-done }()
	<-persisted
	if _, ok, _ := a.Placed(ctx, id); !ok {
		t.Fatalf("A lost its index entry before it was stale")
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, ok, err := a.Placed(ctx, id)
		if err == nil && !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A still reports %s on the stream after B's worker persisted it: %v, %v", id, ok, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestForgedAnnouncementsDropped: an announcement of persisted orders
// without the instances' key drops nothing from anyone's indexes; a signed
// one is heard.
func TestForgedAnnouncementsDropped(t *testing.T) {
	a, b, idsA, _, third := clusteredPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	heard := make(chan string, 16)
	done := make(chan error, 1)
	go func() { done <- b.FollowPersisted(ctx, "", func(_ int64, id string) { heard <- id }) }()
	defer func() { cancel(); <-done }()

	announce := a.AnnouncePersisted("", func(context.Context, []order.Placed) error { return nil })
	// The follower's subscription is in place once a signed probe arrives.
	probe := eventWithID(idsA.New(), 0)
	for subscribed := false; !subscribed; {
		if err := announce(ctx, []order.Placed{probe}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-heard:
			subscribed = true
		case <-time.After(200 * time.Millisecond):
		}
	}
	for len(heard) > 0 {
		<-heard
	}
	forged := idsA.New()
	if err := third.Publish(natsbus.PersistedSubject, []byte("7 "+forged+"\n")); err != nil {
		t.Fatal(err)
	}
	signed := eventWithID(idsA.New(), 1)
	if err := announce(ctx, []order.Placed{signed}); err != nil {
		t.Fatal(err)
	}
	// NATS keeps one publisher's order, not two publishers': wait for the
	// signed one, then a moment for a late forged one.
	select {
	case id := <-heard:
		if id != signed.OrderID {
			t.Fatalf("heard %s, want only the signed announcement %s", id, signed.OrderID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the signed announcement was not heard")
	}
	time.Sleep(200 * time.Millisecond)
	if len(heard) > 0 {
		t.Errorf("heard %s from an unsigned announcement", <-heard)
	}
}
