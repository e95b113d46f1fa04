package loadgen_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spikehq/spike/loadgen"
)

func TestOpenLoopSchedule(t *testing.T) {
	tests := []struct {
		rate float64
		d    time.Duration
		want int
	}{
		{100, time.Second, 100},
		{1000, 2500 * time.Millisecond, 2500},
		{3, 10 * time.Second, 30},
		{36000, 30 * time.Second, 1_080_000},
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range tests {
		if got := loadgen.OpenLoopCount(tt.rate, tt.d); got != tt.want {
			t.Errorf("OpenLoopCount(%v, %v) = %d, want %d", tt.rate, tt.d, got, tt.want)
		}
		last := loadgen.Intended(start, tt.rate, tt.want-1)
		if last.Sub(start) >= tt.d {
			t.Errorf("rate %v: last intended send at %v, not before %v", tt.rate, last.Sub(start), tt.d)
		}
		if next := loadgen.Intended(start, tt.rate, tt.want); next.Sub(start) < tt.d-time.Microsecond {
			t.Errorf("rate %v: one more op would be due at %v, inside %v", tt.rate, next.Sub(start), tt.d)
		}
	}
	if got := loadgen.Intended(start, 4, 3).Sub(start); got != 750*time.Millisecond {
		t.Errorf("Intended(rate 4, op 3) = %v after start, want 750ms", got)
	}
}

// In a synctest bubble time is fake: time.Sleep and timers advance it
// exactly, so these tests check the schedule, not the machine's speed.

func TestOpenLoopSendsExactlyRateTimesDuration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int64
		start := time.Now()
		var lastCall atomic.Int64
		st, err := loadgen.Run(context.Background(), loadgen.Plan{
			Rate: 250, Duration: 2 * time.Second, Concurrency: 10,
			Op: func(ctx context.Context, i int) string {
				calls.Add(1)
				lastCall.Store(int64(time.Since(start)))
				time.Sleep(2 * time.Millisecond)
				return loadgen.OutcomeAccepted
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		if calls.Load() != 500 || st.Sent != 500 || st.Responses != 500 || st.Dropped != 0 {
			t.Errorf("calls %d sent %d responses %d dropped %d, want 500/500/500/0", calls.Load(), st.Sent, st.Responses, st.Dropped)
		}
		if got, want := time.Duration(lastCall.Load()), 1996*time.Millisecond; got != want {
			t.Errorf("last op sent at %v, want %v", got, want)
		}
		// With fake time every op takes exactly 2ms, from its intended time.
		if st.Latency.P50 != 2*time.Millisecond || st.Latency.Max != 2*time.Millisecond {
			t.Errorf("latency %+v, want exactly 2ms", st.Latency)
		}
		if st.SendLag.Max > time.Microsecond {
			t.Errorf("send lag %+v, want none with fake time", st.SendLag)
		}
		if len(st.Series) != 2 || st.Series[0].Throughput != 250 {
			t.Errorf("series %+v, want 2 seconds of 250/s", st.Series)
		}
	})
}

// stalledServer simulates a server that answers in 1 ms except between
// 500 ms and 1500 ms after start, when it answers nothing until 1500 ms.
func stalledServer(start time.Time) loadgen.Op {
	return func(ctx context.Context, i int) string {
		el := time.Since(start)
		if el >= 500*time.Millisecond && el < 1500*time.Millisecond {
			time.Sleep(1500*time.Millisecond - el)
		}
		time.Sleep(time.Millisecond)
		return loadgen.OutcomeAccepted
	}
}

func TestOpenLoopShowsStallNoCoordinatedOmission(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, err := loadgen.Run(context.Background(), loadgen.Plan{
			Rate: 100, Duration: 2 * time.Second, Concurrency: 1000,
			Op: stalledServer(time.Now()),
		})
		if err != nil {
			t.Fatal(err)
		}
		if st.Sent != 200 || st.Dropped != 0 {
			t.Fatalf("sent %d dropped %d, want 200 and 0", st.Sent, st.Dropped)
		}
		// Ops due during the stall (half of them) wait 1000ms..10ms: the
		// median is around 10ms and p90 around 800ms.
		if st.Latency.P90 < 700*time.Millisecond || st.Latency.Max < 990*time.Millisecond {
			t.Errorf("open loop latency %+v: the 1 s stall is not visible", st.Latency)
		}
		// Service time also shows it here: every stalled request was sent on time.
		if st.Service.P90 < 700*time.Millisecond {
			t.Errorf("service time %+v", st.Service)
		}
	})
}

func TestOpenLoopQueueingCountsFromIntendedTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// An in-flight bound of 1, ops taking 15 ms, one due every 10 ms: a
		// closed-loop generator would quietly send late (and report 15 ms for
		// everything); here every op that finds the slot busy is not delayed
		// but dropped and counted as client_overload.
		st, err := loadgen.Run(context.Background(), loadgen.Plan{
			Rate: 100, Duration: time.Second, Concurrency: 1,
			Op: func(ctx context.Context, i int) string { time.Sleep(15 * time.Millisecond); return loadgen.OutcomeOK },
		})
		if err != nil {
			t.Fatal(err)
		}
		if st.Sent+st.Dropped != 100 {
			t.Errorf("sent %d + dropped %d, want 100 intended", st.Sent, st.Dropped)
		}
		if st.Dropped != 50 || st.Count(loadgen.OutcomeClientOverload) != 50 {
			t.Errorf("dropped %d (client_overload %d), want 50", st.Dropped, st.Count(loadgen.OutcomeClientOverload))
		}
	})
}

func TestClosedLoopHidesStall(t *testing.T) {
	// The same stall measured closed loop with one worker: only one request
	// sees it, which is coordinated omission. This documents why open loop
	// is the default for latency figures.
	synctest.Test(t, func(t *testing.T) {
		st, err := loadgen.Run(context.Background(), loadgen.Plan{
			Duration: 2 * time.Second, Concurrency: 1,
			Op: stalledServer(time.Now()),
		})
		if err != nil {
			t.Fatal(err)
		}
		if st.Latency.Max < 990*time.Millisecond {
			t.Errorf("max %v, want the stall", st.Latency.Max)
		}
		if st.Latency.P99 > 2*time.Millisecond {
			t.Errorf("closed loop p99 %v, want ≈1ms (stall hidden)", st.Latency.P99)
		}
	})
}

func TestSeriesInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, err := loadgen.Run(context.Background(), loadgen.Plan{
			Rate: 100, Duration: time.Second, Concurrency: 4, Interval: 100 * time.Millisecond,
			Op: func(context.Context, int) string { time.Sleep(time.Millisecond); return loadgen.OutcomeAccepted },
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Series) != 10 || st.Interval != 100*time.Millisecond {
			t.Fatalf("%d points of %v, want 10 of 100ms", len(st.Series), st.Interval)
		}
		for i, p := range st.Series {
			if p.Throughput != 100 || p.Outcomes["accepted"] != 10 || p.T != float64(i)/10 {
				t.Errorf("point %d = %+v, want t=%v, 100/s, 10 accepted", i, p, float64(i)/10)
			}
		}
	})
}

func TestClosedLoopTotal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		seen := make([]atomic.Int32, 123)
		st, err := loadgen.Run(context.Background(), loadgen.Plan{
			Total: 123, Concurrency: 7,
			Op: func(ctx context.Context, i int) string {
				seen[i].Add(1)
				time.Sleep(time.Millisecond)
				return loadgen.OutcomeAccepted
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		for i := range seen {
			if n := seen[i].Load(); n != 1 {
				t.Errorf("op %d ran %d times", i, n)
			}
		}
		if st.Mode != "closed" || st.Count(loadgen.OutcomeAccepted) != 123 {
			t.Errorf("mode %s accepted %d", st.Mode, st.Count(loadgen.OutcomeAccepted))
		}
	})
}

func TestRunRejectsBadPlans(t *testing.T) {
	op := func(context.Context, int) string { return "" }
	for _, p := range []loadgen.Plan{
		{Total: 1},
		{Op: op},
		{Op: op, Total: 1, Rate: -1},
	} {
		if _, err := loadgen.Run(context.Background(), p); err == nil {
			t.Errorf("Run(%+v) = nil error", p)
		}
	}
}

func TestProgressTicks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ticks atomic.Int32
		_, err := loadgen.Run(context.Background(), loadgen.Plan{
			Rate: 10, Duration: 3 * time.Second, Concurrency: 2,
			Op:     func(context.Context, int) string { return loadgen.OutcomeOK },
			OnTick: func(r *loadgen.Recorder) { ticks.Add(1); _ = r.Progress(time.Now()) },
		})
		if err != nil {
			t.Fatal(err)
		}
		if n := ticks.Load(); n < 2 || n > 3 {
			t.Errorf("%d ticks in 3 s, want 2 or 3", n)
		}
	})
}
