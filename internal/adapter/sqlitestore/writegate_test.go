package sqlitestore

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestWriteGateOrder: while the connection is taken, waiters are served
// in arrival order, urgent ones first but never two urgent in a row while
// a normal one waits; a waiter whose context ends leaves the queue, or
// passes the connection on if it was handed over at that moment.
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
	// The first holder was normal: u1; then n1 (no two urgent in a row
	// while n1 waits); u2; n2; u3.
	if want := []string{"u1", "n1", "u2", "n2", "u3"}; !slices.Equal(served, want) {
		t.Fatalf("served %v, want %v", served, want)
	}
	if g.held {
		t.Fatal("the gate is still held after everyone released it")
	}
}

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
