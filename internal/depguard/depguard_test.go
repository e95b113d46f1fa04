package depguard_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spikehq/spike/internal/depguard"
	"github.com/spikehq/spike/internal/switches"
	"github.com/spikehq/spike/resilience"
)

var bg = context.Background()

var errDown = errors.New("dependency down")

// TestTable: every dependency has settings, and every one but payments
// (not wired yet) has its breaker switch; the switches name no dependency
// that is not in the table.
func TestTable(t *testing.T) {
	for _, dep := range switches.BreakerDependencies {
		if !slices.Contains(depguard.Dependencies, depguard.Dependency(dep)) {
			t.Errorf("switch breaker.%s names no dependency of depguard", dep)
		}
	}
	for _, dep := range depguard.Dependencies {
		if strings.ContainsAny(string(dep), "-. ") {
			t.Errorf("dependency %q: metric label values and switch names use snake_case", dep)
		}
	}
	if s := depguard.For(depguard.Payments); s.Bulkhead == 0 || s.Timeout == 0 || s.Breaker.OpenTimeout == 0 {
		t.Errorf("payments settings %+v: want a bulkhead, a timeout and a breaker", s)
	}
	// For returns copies: changing one does not change the table.
	s := depguard.For(depguard.OrderStream)
	s.Adaptive.MaxLimit = 1
	if depguard.For(depguard.OrderStream).Adaptive.MaxLimit != depguard.StreamLimitMax {
		t.Error("For shares the table's adaptive settings")
	}
	if s := depguard.StreamLimits(2, 100, 2, time.Millisecond); s.Adaptive.InitialLimit != 100 || s.Bulkhead != 100 || s.Adaptive.MinLimit != 2 {
		t.Errorf("StreamLimits(2, 100): %+v, %+v", s, *s.Adaptive)
	}
}

// TestDoRefusals: a full bulkhead, an open breaker and a full limit refuse
// with resilience's errors, unchanged, without calling fn.
func TestDoRefusals(t *testing.T) {
	g := depguard.New("test", depguard.Config{Settings: &depguard.Settings{
		Breaker:  resilience.BreakerConfig{WindowSize: 4, MinimumCalls: 4, OpenTimeout: time.Minute},
		Bulkhead: 1,
	}})
	release := make(chan struct{})
	entered := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- g.Do(bg, func(context.Context) error { close(entered); <-release; return nil })
	}()
	<-entered
	called := false
	if err := g.Do(bg, func(context.Context) error { called = true; return nil }); err != resilience.ErrBulkheadFull || called {
		t.Errorf("bulkhead full: %v (called %v), want ErrBulkheadFull", err, called)
	}
	if g.InFlight() != 1 {
		t.Errorf("in flight %d, want 1", g.InFlight())
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The window's 4 calls: 1 success then failures open it at the 4th.
	for range 3 {
		if err := g.Do(bg, func(context.Context) error { return errDown }); err != errDown {
			t.Fatalf("failing call: %v, want fn's error unchanged", err)
		}
	}
	if err := g.Do(bg, func(context.Context) error { called = true; return nil }); err != resilience.ErrBreakerOpen || called {
		t.Errorf("breaker open: %v (called %v), want ErrBreakerOpen", err, called)
	}
	if g.Breaker().State() != resilience.Open {
		t.Errorf("breaker %v", g.Breaker().State())
	}
}

func TestDoShed(t *testing.T) {
	g := depguard.New("test", depguard.Config{Settings: &depguard.Settings{
		Adaptive: &resilience.AdaptiveConfig{InitialLimit: 1, MinLimit: 1, MaxLimit: 1},
	}})
	release := make(chan struct{})
	entered := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- g.Do(bg, func(context.Context) error { close(entered); <-release; return nil })
	}()
	<-entered
	if err := g.Do(bg, func(context.Context) error { return nil }); err != resilience.ErrShed {
		t.Errorf("limit reached: %v, want ErrShed", err)
	}
	close(release)
	<-done
	if c := g.Breaker().Counts(); c.Failures != 0 {
		t.Errorf("a shed call counted as a failure: %+v", c)
	}
}

// TestDoTimeout: fn gets the budget; a call cut by it matches ErrTimeout
// and fn's error, one cut by the caller's own context does not.
func TestDoTimeout(t *testing.T) {
	g := depguard.New("test", depguard.Config{Settings: &depguard.Settings{Timeout: 20 * time.Millisecond}})
	wait := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	err := g.Do(bg, wait)
	if !errors.Is(err, resilience.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cut by the budget: %v, want ErrTimeout", err)
	}
	ctx, cancel := context.WithCancel(bg)
	cancel()
	if err := g.Do(ctx, wait); err != context.Canceled {
		t.Errorf("caller gone: %v, want context.Canceled unchanged", err)
	}
	// The caller's deadline, less the margin, bounds the budget.
	g = depguard.New("test", depguard.Config{Settings: &depguard.Settings{Timeout: time.Minute, Margin: 10 * time.Millisecond}})
	ctx, cancel = context.WithTimeout(bg, 50*time.Millisecond)
	defer cancel()
	g.Do(ctx, func(ctx context.Context) error {
		d, ok := ctx.Deadline()
		if left := time.Until(d); !ok || left > 45*time.Millisecond {
			t.Errorf("budget %v left (deadline %v), want under 40ms", left, ok)
		}
		return nil
	})
}

// TestDoClassification: answers are successes, IsFailure decides the rest.
func TestDoClassification(t *testing.T) {
	errNotFound := errors.New("not found")
	errMine := errors.New("my fault")
	g := depguard.New("test", depguard.Config{
		IsAnswer:  func(err error) bool { return errors.Is(err, errNotFound) },
		IsFailure: func(err error) bool { return err != nil && !errors.Is(err, errMine) },
	})
	if err := g.Do(bg, func(context.Context) error { return errNotFound }); err != errNotFound {
		t.Fatalf("answer: %v, want it returned", err)
	}
	g.Do(bg, func(context.Context) error { return errMine })
	g.Do(bg, func(context.Context) error { return errDown })
	if c := g.Breaker().Counts(); c.Successes != 1 || c.Ignored != 1 || c.Failures != 1 {
		t.Errorf("counts %+v: want 1 success (the answer), 1 ignored, 1 failure", c)
	}
}

// TestMetrics: one registry takes every dependency's guard (no duplicate
// or inconsistent declarations), and the state gauge follows the breaker.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := depguard.NewMetrics(reg, discard())
	guards := map[depguard.Dependency]*depguard.Guard{}
	for _, dep := range depguard.Dependencies {
		if dep == depguard.Notifications {
			continue
		}
		guards[dep] = depguard.New(dep, depguard.Config{Metrics: m})
	}
	notif := resilience.NewBreaker(depguard.BreakerConfig(depguard.Notifications, m))
	m.Watch(depguard.Notifications, notif)
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	guards[depguard.RedisStock].Breaker().ForceOpen()
	notif.ForceOpen()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]map[string]float64{} // name → dependency → value
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var dep string
			for _, l := range m.GetLabel() {
				if l.GetName() == "dependency" {
					dep = l.GetValue()
				}
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			if series[f.GetName()] == nil {
				series[f.GetName()] = map[string]float64{}
			}
			series[f.GetName()][dep] += v
		}
	}
	for _, dep := range depguard.Dependencies {
		want := 0.0
		if dep == depguard.RedisStock || dep == depguard.Notifications {
			want = float64(resilience.ForcedOpen)
		}
		if got, ok := series["spike_breaker_state"][string(dep)]; !ok || got != want {
			t.Errorf("spike_breaker_state{dependency=%q} = %v (exported %v), want %v", dep, got, ok, want)
		}
	}
	if _, ok := series["spike_dependency_limit"][string(depguard.OrderStream)]; !ok {
		t.Error("the stream's adaptive limit is not exported")
	}
	for _, name := range []string{"spike_bulkhead_in_use", "spike_bulkhead_size", "spike_bulkhead_rejected_total"} {
		if _, ok := series[name][string(depguard.OrderReads)]; !ok {
			t.Errorf("%s{dependency=order_reads} not exported", name)
		}
	}
	if _, ok := series["spike_dependency_calls_total"][string(depguard.Payments)]; !ok {
		t.Error("spike_dependency_calls_total{dependency=payments} not exported")
	}
	// A nil Metrics exports nothing and does not panic.
	var none *depguard.Metrics
	none.Watch(depguard.Payments, notif)
}

func TestFollowSwitches(t *testing.T) {
	board := switches.New(switches.Defs)
	g := depguard.New(depguard.OrderReads, depguard.Config{})
	depguard.FollowSwitches(board, map[depguard.Dependency]*resilience.Breaker{depguard.OrderReads: g.Breaker()}, discard())
	set := func(v string) {
		t.Helper()
		if err := board.Apply(switches.BreakerSwitch(string(depguard.OrderReads)), v); err != nil {
			t.Fatal(err)
		}
	}
	set(switches.BreakerOpen)
	if s := g.Breaker().State(); s != resilience.ForcedOpen {
		t.Fatalf("after open: %v", s)
	}
	set(switches.BreakerAuto)
	if s := g.Breaker().State(); s != resilience.Closed {
		t.Fatalf("after auto: %v", s)
	}
}

// TestDoConcurrent exercises a full guard under the race detector.
func TestDoConcurrent(t *testing.T) {
	g := depguard.New(depguard.OrderStream, depguard.Config{Saturated: func() bool { return false }})
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			for range 50 {
				g.Do(bg, func(context.Context) error {
					if i%7 == 0 {
						return errDown
					}
					return nil
				})
			}
		})
	}
	wg.Wait()
}

// TestSaturatedCrowdedCounts: while the CPU is saturated a call's latency
// is ignored, unless the call was admitted with half the limit or more in
// flight: calls queuing at the dependency on a busy host still teach the
// limit (issue 12: a slow stream beside a CPU hog).
func TestSaturatedCrowdedCounts(t *testing.T) {
	for _, queued := range []bool{false, true} {
		t.Run(fmt.Sprintf("queued=%v", queued), func(t *testing.T) { testSaturatedCrowded(t, queued) })
	}
}

// testSaturatedCrowded: with queued (this process's own goroutines queue
// for the CPU) every latency is ignored, crowded or not: the overload is
// the CPU's.
func testSaturatedCrowded(t *testing.T, queued bool) {
	g := depguard.New("test", depguard.Config{Saturated: func() bool { return true }, Queued: func() bool { return queued },
		Settings: &depguard.Settings{
			Adaptive: &resilience.AdaptiveConfig{InitialLimit: 8, MinLimit: 8, MaxLimit: 8},
		}})
	for range 3 { // one at a time: in flight 1 of 8
		if err := g.Do(bg, func(context.Context) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if n := g.CPUIgnored(); n != 3 {
		t.Fatalf("ignored %d of 3 lone calls, want 3", n)
	}
	// Eight at once: those admitted 4th to 8th had half the limit or more
	// in flight.
	release := make(chan struct{})
	var entered, wg sync.WaitGroup
	entered.Add(8)
	for range 8 {
		wg.Go(func() {
			if err := g.Do(bg, func(context.Context) error { entered.Done(); <-release; return nil }); err != nil {
				t.Error(err)
			}
		})
	}
	entered.Wait()
	close(release)
	wg.Wait()
	want := uint64(3 + 3)
	if queued {
		want = 3 + 8
	}
	if n := g.CPUIgnored(); n != want {
		t.Errorf("ignored %d calls in all, want %d: the 3 lone ones and the 3 admitted below half the limit (all 8 if the CPU queue is the process's own)", n, want)
	}
}
