package resilience_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike/resilience"
)

// maxJitter makes delays deterministic: always the full backoff cap.
func maxJitter(n time.Duration) time.Duration { return n }

func TestRetry(t *testing.T) {
	transient := resilience.Retryable(errBoom)
	tests := []struct {
		name     string
		cfg      resilience.RetryConfig
		timeout  time.Duration // on ctx; zero means none
		failures []error       // results of successive attempts, then nil
		want     []string      // attempts with the time they started
		wantErr  error
	}{
		{
			name:     "retries retryable errors with doubling backoff",
			cfg:      resilience.RetryConfig{MaxAttempts: 4, BaseDelay: 10 * time.Millisecond},
			failures: []error{transient, transient, transient},
			want:     []string{"attempt 1 at 0s", "attempt 2 at 10ms", "attempt 3 at 30ms", "attempt 4 at 70ms"},
		},
		{
			name:     "stops at max attempts",
			cfg:      resilience.RetryConfig{MaxAttempts: 2, BaseDelay: 10 * time.Millisecond},
			failures: []error{transient, transient, transient},
			want:     []string{"attempt 1 at 0s", "attempt 2 at 10ms"},
			wantErr:  errBoom,
		},
		{
			name:     "does not retry unmarked errors",
			cfg:      resilience.RetryConfig{},
			failures: []error{errBoom},
			want:     []string{"attempt 1 at 0s"},
			wantErr:  errBoom,
		},
		{
			name:     "RetryIf overrides the marker",
			cfg:      resilience.RetryConfig{BaseDelay: time.Millisecond, RetryIf: func(err error) bool { return errors.Is(err, errBoom) }},
			failures: []error{errBoom},
			want:     []string{"attempt 1 at 0s", "attempt 2 at 1ms"},
		},
		{
			name:     "backoff capped at MaxDelay",
			cfg:      resilience.RetryConfig{MaxAttempts: 5, BaseDelay: 100 * time.Millisecond, MaxDelay: 150 * time.Millisecond},
			failures: []error{transient, transient, transient, transient},
			want:     []string{"attempt 1 at 0s", "attempt 2 at 100ms", "attempt 3 at 250ms", "attempt 4 at 400ms", "attempt 5 at 550ms"},
		},
		{
			name:     "never sleeps past the context deadline",
			cfg:      resilience.RetryConfig{MaxAttempts: 10, BaseDelay: 100 * time.Millisecond},
			timeout:  250 * time.Millisecond,
			failures: []error{transient, transient, transient},
			want:     []string{"attempt 1 at 0s", "attempt 2 at 100ms"}, // next delay 200ms would end at 300ms
			wantErr:  errBoom,
		},
		{
			name:     "stops at MaxElapsed",
			cfg:      resilience.RetryConfig{MaxAttempts: 10, BaseDelay: 100 * time.Millisecond, MaxElapsed: 350 * time.Millisecond},
			failures: []error{transient, transient, transient, transient},
			want:     []string{"attempt 1 at 0s", "attempt 2 at 100ms", "attempt 3 at 300ms"},
			wantErr:  errBoom,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				if tt.timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.timeout)
					defer cancel()
				}
				cfg := tt.cfg
				cfg.Jitter = maxJitter
				start := time.Now()
				var got []string
				err := resilience.NewRetry(cfg).Do(ctx, func(context.Context) error {
					got = append(got, fmt.Sprintf("attempt %d at %v", len(got)+1, time.Since(start)))
					if len(got) <= len(tt.failures) {
						return tt.failures[len(got)-1]
					}
					return nil
				})
				if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
					t.Errorf("Do() = %v, want %v", err, tt.wantErr)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("attempts mismatch (-want +got):\n%s", diff)
				}
			})
		})
	}
}

func TestRetryFullJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var delays []time.Duration
		r := resilience.NewRetry(resilience.RetryConfig{
			MaxAttempts: 200, BaseDelay: time.Millisecond, MaxDelay: 8 * time.Millisecond,
			OnRetry: func(_ int, _ error, d time.Duration) { delays = append(delays, d) },
		})
		r.Do(context.Background(), func(context.Context) error { return resilience.Retryable(errBoom) })
		distinct := map[time.Duration]bool{}
		for i, d := range delays {
			capped := min(time.Millisecond<<min(i, 3), 8*time.Millisecond)
			if d < 0 || d >= capped {
				t.Fatalf("delay %d = %v, want in [0, %v)", i, d, capped)
			}
			distinct[d] = true
		}
		if len(distinct) < 100 {
			t.Errorf("%d distinct delays out of %d, want jitter", len(distinct), len(delays))
		}
	})
}

// TestRetryBudgetCapsOutage simulates a dependency that fails every call:
// without a budget each call would make 3 attempts (2 retries); with a 10%
// budget the retries stay near 10% of calls.
func TestRetryBudgetCapsOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		budget := resilience.NewRetryBudget(resilience.RetryBudgetConfig{
			Ratio: 0.1, MinPerSecond: 1, Window: 10 * time.Second,
		})
		r := resilience.NewRetry(resilience.RetryConfig{MaxAttempts: 3, BaseDelay: time.Millisecond, Budget: budget})
		var calls, attempts int
		// 100 calls per second for 30 seconds.
		for range 3000 {
			calls++
			r.Do(context.Background(), func(context.Context) error {
				attempts++
				return resilience.Retryable(errBoom)
			})
			time.Sleep(10 * time.Millisecond)
		}
		retries := attempts - calls
		// Any 10s window holds at most 10% of its calls plus 1/s * 10s, so
		// over 30s: 10% of 3000 calls + 1/s over 30s + the first window's
		// reserve = 300 + 30 + 10. Without the budget it would be 6000.
		if maxRetries := 340; retries > maxRetries {
			t.Errorf("retries = %d over %d calls, want <= %d", retries, calls, maxRetries)
		}
		if retries < 250 {
			t.Errorf("retries = %d, want the budget used (>= 250)", retries)
		}
		if budget.Refused() == 0 {
			t.Errorf("Refused() = 0, want refusals during the outage")
		}
	})
}

func TestRetryBudgetWindow(t *testing.T) {
	clk := newFakeClock()
	b := resilience.NewRetryBudget(resilience.RetryBudgetConfig{Ratio: 0.5, MinPerSecond: -1, Window: time.Second, Now: clk.Now})
	for range 10 {
		b.RecordCall()
	}
	allowed := 0
	for range 10 {
		if b.TryRetry() {
			allowed++
		}
	}
	if allowed != 5 {
		t.Errorf("retries allowed for 10 calls at 50%% = %d, want 5", allowed)
	}
	clk.Advance(time.Second) // calls and retries leave the window together
	if b.TryRetry() {
		t.Errorf("TryRetry() with no calls in the window = true, want false")
	}
	b.RecordCall()
	b.RecordCall()
	if !b.TryRetry() {
		t.Errorf("TryRetry() after 2 new calls = false, want true")
	}
}
