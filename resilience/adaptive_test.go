package resilience_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike/resilience"
)

// runWindow admits as many Critical requests as the limit allows (the server
// is saturated), lets them take latency, and completes them.
func runWindow(clk *fakeClock, a *resilience.Adaptive, latency time.Duration) {
	var tickets []resilience.Ticket
	for {
		t, ok := a.Acquire(resilience.Critical)
		if !ok {
			break
		}
		tickets = append(tickets, t)
	}
	clk.Advance(latency)
	for _, t := range tickets {
		t.Success()
	}
}

func TestAdaptiveLimitFollowsLatency(t *testing.T) {
	clk := newFakeClock()
	a := resilience.NewAdaptive(resilience.AdaptiveConfig{
		InitialLimit: 10, MaxLimit: 500, WindowSamples: 5, WindowDuration: time.Millisecond, Now: clk.Now,
	})
	// Steady latency under full load: the limit grows.
	limits := []int{a.Limit()}
	for range 30 {
		runWindow(clk, a, 10*time.Millisecond)
		limits = append(limits, a.Limit())
	}
	grown := a.Limit()
	if grown <= 15 {
		t.Fatalf("limit after 30 windows at steady latency = %d (history %v), want > 15", grown, limits)
	}
	for i := 1; i < len(limits); i++ {
		if limits[i] < limits[i-1] {
			t.Fatalf("limit fell at steady latency: %v", limits)
		}
	}
	// The dependency slows down fivefold: requests queue, the limit shrinks.
	for range 10 {
		runWindow(clk, a, 50*time.Millisecond)
	}
	if shrunk := a.Limit(); shrunk > grown*2/3 {
		t.Errorf("limit after latency rose 5x = %d, want <= %d (2/3 of %d)", shrunk, grown*2/3, grown)
	}
	if n := a.InFlight(); n != 0 {
		t.Errorf("InFlight() = %d after all tickets finished, want 0", n)
	}
}

func TestAdaptiveIdleDoesNotGrow(t *testing.T) {
	clk := newFakeClock()
	a := resilience.NewAdaptive(resilience.AdaptiveConfig{InitialLimit: 20, WindowSamples: 1, WindowDuration: time.Millisecond, Now: clk.Now})
	for range 100 {
		tk, _ := a.Acquire(resilience.Normal) // one at a time: app-limited
		clk.Advance(time.Millisecond)
		tk.Success()
	}
	if got := a.Limit(); got != 20 {
		t.Errorf("Limit() after light load = %d, want 20 (unchanged)", got)
	}
}

func TestAdaptiveDropsBackOff(t *testing.T) {
	clk := newFakeClock()
	a := resilience.NewAdaptive(resilience.AdaptiveConfig{InitialLimit: 100, WindowDuration: time.Millisecond, Now: clk.Now})
	for range 5 {
		tk, _ := a.Acquire(resilience.Normal)
		clk.Advance(time.Millisecond)
		tk.Dropped()
	}
	if got := a.Limit(); got != 59 { // 100 * 0.9^5
		t.Errorf("Limit() after 5 drops = %d, want 59", got)
	}
}

func TestAdaptivePriorityHeadroom(t *testing.T) {
	a := resilience.NewAdaptive(resilience.AdaptiveConfig{InitialLimit: 10})
	// Limit 10: Sheddable may hold 5, Normal 9, Critical all 10.
	steps := []struct {
		p    resilience.Priority
		n    int
		want int // admitted
	}{
		{resilience.Sheddable, 10, 5},
		{resilience.Normal, 10, 4},
		{resilience.Critical, 10, 1},
		{resilience.Sheddable, 1, 0},
	}
	var got, want []string
	var held []resilience.Ticket
	for _, s := range steps {
		admitted := 0
		for range s.n {
			if tk, ok := a.Acquire(s.p); ok {
				admitted++
				held = append(held, tk)
			}
		}
		got = append(got, fmt.Sprintf("%v: %d", s.p, admitted))
		want = append(want, fmt.Sprintf("%v: %d", s.p, s.want))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("admitted per priority mismatch (-want +got):\n%s", diff)
	}
	if a.InFlight() != 10 || a.Shed() != 21 {
		t.Errorf("InFlight(), Shed() = %d, %d; want 10, 21", a.InFlight(), a.Shed())
	}
	for _, tk := range held {
		tk.Ignore()
	}
	if err := a.Policy(resilience.Sheddable).Do(context.Background(), func(context.Context) error { return nil }); err != nil {
		t.Errorf("Policy().Do() after release = %v, want nil", err)
	}
	held = held[:0]
	for range 10 {
		tk, _ := a.Acquire(resilience.Critical)
		held = append(held, tk)
	}
	if err := a.Policy(resilience.Critical).Do(context.Background(), func(context.Context) error { return nil }); !errors.Is(err, resilience.ErrShed) {
		t.Errorf("Policy().Do() at the limit = %v, want ErrShed", err)
	}
}
