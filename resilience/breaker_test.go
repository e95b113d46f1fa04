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

var errBoom = errors.New("boom")

// breakerOp is one step of a breaker scenario.
type breakerOp struct {
	advance time.Duration // move the clock first
	calls   int           // then make this many calls (default 1 unless advance-only)
	err     error         // each call's result
	took    time.Duration // each call's duration
	wantErr error         // what Acquire should return for each call
}

func TestBreakerStateMachine(t *testing.T) {
	base := resilience.BreakerConfig{
		WindowSize: 10, MinimumCalls: 5, FailureRateThreshold: 0.5,
		OpenTimeout: 10 * time.Second, HalfOpenCalls: 2,
	}
	open := resilience.ErrBreakerOpen
	tests := []struct {
		name      string
		cfg       func(*resilience.BreakerConfig)
		ops       []breakerOp
		want      []string // transitions reported by OnStateChange
		wantState resilience.State
	}{
		{
			name: "minimum calls before opening",
			ops:  []breakerOp{{calls: 4, err: errBoom}},
			want: nil, wantState: resilience.Closed,
		},
		{
			name: "opens at the failure rate",
			ops:  []breakerOp{{calls: 5}, {calls: 4, err: errBoom}, {calls: 1, err: errBoom}, {calls: 3, wantErr: open}},
			want: []string{"closed->open"}, wantState: resilience.Open,
		},
		{
			name: "below the failure rate stays closed",
			ops:  []breakerOp{{calls: 6}, {calls: 4, err: errBoom}, {calls: 6}, {calls: 4, err: errBoom}},
			want: nil, wantState: resilience.Closed,
		},
		{
			name: "count window counts only the last calls",
			// 40% failed, then 10 successes push those out; 5 failures make
			// 5 of the last 10 (50%), though only 9 of all 25.
			ops:  []breakerOp{{calls: 6}, {calls: 4, err: errBoom}, {calls: 10}, {calls: 5, err: errBoom}},
			want: []string{"closed->open"}, wantState: resilience.Open,
		},
		{
			name: "half-open closes after successful trials",
			ops: []breakerOp{
				{calls: 5, err: errBoom},
				{advance: 9 * time.Second, calls: 1, wantErr: open},
				{advance: time.Second, calls: 2},
			},
			want: []string{"closed->open", "open->half-open", "half-open->closed"}, wantState: resilience.Closed,
		},
		{
			name: "half-open reopens on a failed trial",
			ops: []breakerOp{
				{calls: 5, err: errBoom},
				{advance: 10 * time.Second, calls: 1},
				{calls: 1, err: errBoom},
				{calls: 1, wantErr: open},
			},
			want: []string{"closed->open", "open->half-open", "half-open->open"}, wantState: resilience.Open,
		},
		{
			name: "slow calls open the breaker",
			cfg: func(c *resilience.BreakerConfig) {
				c.SlowCallDuration = 100 * time.Millisecond
				c.SlowCallRateThreshold = 0.6
			},
			ops:  []breakerOp{{calls: 2, took: 50 * time.Millisecond}, {calls: 3, took: 100 * time.Millisecond}},
			want: []string{"closed->open"}, wantState: resilience.Open,
		},
		{
			name: "cancellations are ignored",
			ops:  []breakerOp{{calls: 20, err: context.Canceled}},
			want: nil, wantState: resilience.Closed,
		},
		{
			name: "custom IsFailure",
			cfg: func(c *resilience.BreakerConfig) {
				c.IsFailure = func(err error) bool { return errors.Is(err, errBoom) }
			},
			ops:  []breakerOp{{calls: 10, err: errors.New("not found")}, {calls: 5, err: errBoom}},
			want: []string{"closed->open"}, wantState: resilience.Open,
		},
		{
			name: "time window forgets old seconds",
			cfg: func(c *resilience.BreakerConfig) {
				c.Window = resilience.TimeWindow
				c.WindowSize = 2
			},
			ops: []breakerOp{
				{calls: 4, err: errBoom},                                  // t=0
				{advance: 2 * time.Second, calls: 4},                      // t=2s: t=0 bucket expired
				{advance: 999 * time.Millisecond, calls: 3, err: errBoom}, // 3/7 failed
			},
			want: nil, wantState: resilience.Closed,
		},
		{
			name: "time window opens within the window",
			cfg: func(c *resilience.BreakerConfig) {
				c.Window = resilience.TimeWindow
				c.WindowSize = 2
			},
			ops: []breakerOp{
				{calls: 3, err: errBoom},
				{advance: 1999 * time.Millisecond, calls: 2, err: errBoom},
			},
			want: []string{"closed->open"}, wantState: resilience.Open,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			cfg := base
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			var got []string
			cfg.Now = clk.Now
			cfg.OnStateChange = func(_ string, from, to resilience.State) {
				got = append(got, fmt.Sprintf("%v->%v", from, to))
			}
			b := resilience.NewBreaker(cfg)
			for i, op := range tt.ops {
				clk.Advance(op.advance)
				for range op.calls {
					p, err := b.Acquire()
					if !errors.Is(err, op.wantErr) {
						t.Fatalf("op %d: Acquire() = %v, want %v", i, err, op.wantErr)
					}
					if err != nil {
						continue
					}
					clk.Advance(op.took)
					p.Record(op.err)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("transitions mismatch (-want +got):\n%s", diff)
			}
			if s := b.State(); s != tt.wantState {
				t.Errorf("State() = %v, want %v", s, tt.wantState)
			}
		})
	}
}

func TestBreakerHalfOpenLimitsTrials(t *testing.T) {
	clk := newFakeClock()
	b := resilience.NewBreaker(resilience.BreakerConfig{MinimumCalls: 1, HalfOpenCalls: 2, OpenTimeout: time.Second, Now: clk.Now})
	p, _ := b.Acquire()
	p.Record(errBoom)
	clk.Advance(time.Second)
	p1, err1 := b.Acquire()
	_, err2 := b.Acquire()
	_, err3 := b.Acquire()
	if err1 != nil || err2 != nil || !errors.Is(err3, resilience.ErrBreakerOpen) {
		t.Fatalf("half-open Acquire() x3 = %v, %v, %v; want nil, nil, ErrBreakerOpen", err1, err2, err3)
	}
	// A cancelled trial frees its slot for another.
	p1.Record(context.Canceled)
	if _, err := b.Acquire(); err != nil {
		t.Errorf("Acquire() after an ignored trial = %v, want nil", err)
	}
}

func TestBreakerIgnoresStalePermits(t *testing.T) {
	clk := newFakeClock()
	b := resilience.NewBreaker(resilience.BreakerConfig{MinimumCalls: 1, HalfOpenCalls: 1, OpenTimeout: time.Second, Now: clk.Now})
	slow, _ := b.Acquire() // issued while closed
	p, _ := b.Acquire()
	p.Record(errBoom) // opens
	clk.Advance(time.Second)
	trial, err := b.Acquire() // half-open
	if err != nil {
		t.Fatalf("Acquire() in half-open = %v", err)
	}
	slow.Record(errBoom) // from the closed generation: must not reopen
	if s := b.State(); s != resilience.HalfOpen {
		t.Fatalf("State() after a stale failure = %v, want half-open", s)
	}
	trial.Record(nil)
	if s := b.State(); s != resilience.Closed {
		t.Errorf("State() after a good trial = %v, want closed", s)
	}
}

func TestBreakerManualControls(t *testing.T) {
	var got []string
	b := resilience.NewBreaker(resilience.BreakerConfig{
		Name: "payments",
		OnStateChange: func(name string, from, to resilience.State) {
			got = append(got, fmt.Sprintf("%s: %v->%v", name, from, to))
		},
	})
	b.ForceOpen()
	if err := b.Do(context.Background(), func(context.Context) error { return nil }); !errors.Is(err, resilience.ErrBreakerOpen) {
		t.Errorf("Do() when forced open = %v, want ErrBreakerOpen", err)
	}
	b.ForceClosed()
	for range 100 {
		b.Do(context.Background(), func(context.Context) error { return errBoom })
	}
	if s := b.State(); s != resilience.ForcedClosed {
		t.Errorf("State() after failures while forced closed = %v, want forced-closed", s)
	}
	b.Reset()
	want := []string{"payments: closed->forced-open", "payments: forced-open->forced-closed", "payments: forced-closed->closed"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("transitions mismatch (-want +got):\n%s", diff)
	}
	c := b.Counts()
	if c.Rejected != 1 {
		t.Errorf("Counts().Rejected = %d, want 1", c.Rejected)
	}
}

func TestBreakerLostTrialsAreReplaced(t *testing.T) {
	clk := newFakeClock()
	b := resilience.NewBreaker(resilience.BreakerConfig{MinimumCalls: 1, HalfOpenCalls: 1, OpenTimeout: time.Second, Now: clk.Now})
	p, _ := b.Acquire()
	p.Record(errBoom)
	clk.Advance(time.Second)
	if _, err := b.Acquire(); err != nil { // trial permit, never recorded
		t.Fatalf("Acquire() trial = %v", err)
	}
	if _, err := b.Acquire(); !errors.Is(err, resilience.ErrBreakerOpen) {
		t.Fatalf("Acquire() with the trial outstanding = %v, want ErrBreakerOpen", err)
	}
	clk.Advance(time.Second)
	trial, err := b.Acquire()
	if err != nil {
		t.Fatalf("Acquire() after the lost trial timed out = %v, want nil", err)
	}
	trial.Record(nil)
	if s := b.State(); s != resilience.Closed {
		t.Errorf("State() = %v, want closed", s)
	}
}
