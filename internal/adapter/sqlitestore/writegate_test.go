package sqlitestore

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestWriteGateOrder: while the connection is taken, urgent waiters are
// served first in arrival order, but never two in a row while another
// waits; the others in any order; a waiter whose context ends leaves the
// queue.
func TestWriteGateOrder(t *testing.T) {
	var g writeGate
	ctx := context.Background()
	if err := g.acquire(ctx, false); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var served []string
	var wg sync.WaitGroup
	queued := 0
	queue := func(name string, urgent bool) {
		wg.Go(func() {
			if err := g.acquire(ctx, urgent); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			served = append(served, name)
			mu.Unlock()
			g.release()
		})
		// Wait until it is queued, so that arrival order is known.
		for {
			g.mu.Lock()
			n := len(g.urgent) + len(g.normal)
			g.mu.Unlock()
			if n == queued+1 {
				queued++
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	queue("n1", false)
	queue("u1", true)
	queue("n2", false)
	queue("u2", true)
	queue("u3", true)
	// A waiter that gives up leaves the queue and does not block it.
	gone, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- g.acquire(gone, true) }()
	for g.mu.Lock(); len(g.urgent) < 3; g.mu.Lock() {
		g.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	g.mu.Unlock()
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("acquire with a cancelled context succeeded")
	}
	g.release()
	wg.Wait()
	// The first holder was normal: u1; then a normal one (never two urgent
	// in a row while one waits); u2; the other normal one; u3.
	if len(served) != 5 || served[0] != "u1" || served[2] != "u2" || served[4] != "u3" ||
		!slices.Equal(sorted(served[1], served[3]), []string{"n1", "n2"}) {
		t.Fatalf("served %v, want u1, n1|n2, u2, n2|n1, u3", served)
	}
	if g.held {
		t.Fatal("the gate is still held after everyone released it")
	}
}

func sorted(s ...string) []string { slices.Sort(s); return s }

// TestWriteGateHandoverOnCancel: a connection handed to a waiter whose
// context ends at that moment is passed on, never lost.
func TestWriteGateHandoverOnCancel(t *testing.T) {
	for i := range 200 {
		var g writeGate
		if err := g.acquire(context.Background(), false); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			err := g.acquire(ctx, i%2 == 0)
			if err == nil {
				g.release()
			}
			errc <- err
		}()
		time.Sleep(time.Duration(i%3) * 50 * time.Microsecond)
		go cancel()
		g.release()
		<-errc
		done := make(chan error, 1)
		go func() { done <- g.acquire(context.Background(), false) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the connection was lost in a handover to a cancelled waiter", i)
		}
	}
}
