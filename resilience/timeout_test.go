package resilience_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spikehq/spike/resilience"
)

func TestBudgetFunnel(t *testing.T) {
	tests := []struct {
		name        string
		parent      time.Duration // parent deadline from now; zero means none
		max, margin time.Duration
		want        time.Duration // hop deadline from now; zero means none
		wantExpired bool
	}{
		{"capped by max", 2 * time.Second, 500 * time.Millisecond, 100 * time.Millisecond, 500 * time.Millisecond, false},
		{"capped by parent minus margin", time.Second, 2 * time.Second, 100 * time.Millisecond, 900 * time.Millisecond, false},
		{"no parent deadline", 0, 300 * time.Millisecond, 100 * time.Millisecond, 300 * time.Millisecond, false},
		{"no max", time.Second, 0, 200 * time.Millisecond, 800 * time.Millisecond, false},
		{"no deadline at all", 0, 0, 0, 0, false},
		{"nothing left", 50 * time.Millisecond, time.Second, 100 * time.Millisecond, -50 * time.Millisecond, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				if tt.parent > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.parent)
					defer cancel()
				}
				hop, cancel := resilience.Budget(ctx, tt.max, tt.margin)
				defer cancel()
				deadline, ok := hop.Deadline()
				if tt.want == 0 {
					if ok {
						t.Errorf("Budget() deadline in %v, want none", time.Until(deadline))
					}
					return
				}
				if got := time.Until(deadline); !ok || got != tt.want {
					t.Errorf("Budget() deadline in %v (set %v), want %v", got, ok, tt.want)
				}
				if expired := hop.Err() != nil; expired != tt.wantExpired {
					t.Errorf("Budget() expired = %v, want %v", expired, tt.wantExpired)
				}
				<-hop.Done()
				if cause := context.Cause(hop); ctx.Err() == nil && !errors.Is(cause, resilience.ErrTimeout) {
					t.Errorf("Cause() = %v, want ErrTimeout", cause)
				}
			})
		})
	}
}

func TestTimeoutPolicy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		waitForCtx := func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		}
		err := resilience.NewTimeout(100*time.Millisecond).Do(context.Background(), waitForCtx)
		if !errors.Is(err, resilience.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Do() past the timeout = %v, want ErrTimeout and DeadlineExceeded", err)
		}
		// The caller's own deadline is not reported as our timeout.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		err = resilience.NewTimeout(time.Second).Do(ctx, waitForCtx)
		if errors.Is(err, resilience.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Do() past the caller's deadline = %v, want plain DeadlineExceeded", err)
		}
		if err := resilience.NewTimeout(time.Second).Do(context.Background(), func(context.Context) error { return nil }); err != nil {
			t.Errorf("Do() in time = %v, want nil", err)
		}
	})
	if !errors.Is(resilience.ErrTimeout, context.DeadlineExceeded) {
		t.Errorf("errors.Is(ErrTimeout, DeadlineExceeded) = false")
	}
}

func TestChain(t *testing.T) {
	var order []string
	trace := func(name string) resilience.Policy {
		return resilience.PolicyFunc(func(ctx context.Context, fn func(context.Context) error) error {
			order = append(order, name+" in")
			err := fn(ctx)
			order = append(order, name+" out")
			return err
		})
	}
	err := resilience.Chain(trace("outer"), nil, trace("inner")).Do(context.Background(), func(context.Context) error {
		order = append(order, "call")
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Errorf("Chain().Do() = %v, want errBoom", err)
	}
	want := "[outer in inner in call inner out outer out]"
	if got := fmtSlice(order); got != want {
		t.Errorf("order = %s, want %s", got, want)
	}
	b := resilience.NewBreaker(resilience.BreakerConfig{})
	b.ForceOpen()
	calls := 0
	err = resilience.Chain(resilience.NewRetry(resilience.RetryConfig{}), b).Do(context.Background(), func(context.Context) error {
		calls++
		return nil
	})
	if !errors.Is(err, resilience.ErrBreakerOpen) || calls != 0 {
		t.Errorf("Chain(retry, open breaker).Do() = %v after %d calls, want ErrBreakerOpen after 0", err, calls)
	}
}

func fmtSlice(s []string) string {
	out := "["
	for i, v := range s {
		if i > 0 {
			out += " "
		}
		out += v
	}
	return out + "]"
}
