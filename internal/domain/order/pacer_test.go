package order

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// warm makes the pacer's rate sample see placements: a first sample, a
// window, then placements counted before the next one.
func warm(p *Pacer, n int) {
	p.placing(time.Now())
	time.Sleep(rateWindow + 10*time.Millisecond)
	for range n {
		p.Placed()
	}
}

func TestPacerHoldsWhileBusyUpToMaxLag(t *testing.T) {
	p := &Pacer{Busy: func() bool { return true }, MaxLag: 150 * time.Millisecond, MinRate: 10}
	warm(p, 100)
	p.Wait(context.Background(), []Placed{{PlacedAt: time.Now()}})
	if waited, held := p.Waited(); held != 1 || waited <= 0 {
		t.Fatalf("a busy pacer did not hold the batch: held %d, waited %v", held, waited)
	}
}

func TestPacerNeverHoldsAnEventPastMaxLag(t *testing.T) {
	p := &Pacer{Busy: func() bool { return true }, MaxLag: time.Hour, MinRate: 10}
	warm(p, 100)
	// Placed over an hour ago: the bound has passed, persist at once.
	p.Wait(context.Background(), []Placed{{PlacedAt: time.Now()}, {PlacedAt: time.Now().Add(-2 * time.Hour)}})
	if _, held := p.Waited(); held != 0 {
		t.Fatal("a batch holding an event older than MaxLag was held")
	}
}

func TestPacerDoesNotHoldWithoutPlacements(t *testing.T) {
	// A saturated CPU with few placements is someone else's load.
	p := &Pacer{Busy: func() bool { return true }, MaxLag: time.Hour, MinRate: 1e9}
	warm(p, 10)
	p.Wait(context.Background(), []Placed{{PlacedAt: time.Now()}})
	if _, held := p.Waited(); held != 0 {
		t.Fatal("held a batch while placements were below MinRate")
	}
}

func TestPacerStopsHoldingWhenTheBurstEnds(t *testing.T) {
	var busy atomic.Bool
	busy.Store(true)
	p := &Pacer{Busy: busy.Load, MaxLag: time.Hour, MinRate: 10, Poll: time.Millisecond}
	warm(p, 100)
	go func() { time.Sleep(50 * time.Millisecond); busy.Store(false) }()
	p.Wait(context.Background(), []Placed{{PlacedAt: time.Now()}}) // returns once Busy is false, not after an hour
	if _, held := p.Waited(); held != 1 {
		t.Fatal("the batch was not held while busy")
	}
}

func TestPacerStopsOnCancel(t *testing.T) {
	p := &Pacer{Busy: func() bool { return true }, MaxLag: time.Hour, MinRate: 10}
	warm(p, 100)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	p.Wait(ctx, []Placed{{PlacedAt: time.Now()}})
}

func TestNilOrZeroPacerNeverWaits(t *testing.T) {
	var p *Pacer
	p.Placed()
	p.Wait(context.Background(), []Placed{{PlacedAt: time.Now()}})
	(&Pacer{}).Wait(context.Background(), []Placed{{PlacedAt: time.Now()}})
}
