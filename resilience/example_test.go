package resilience_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spikehq/spike/resilience"
)

// frozen is a clock that never moves, so examples are deterministic.
func frozen() time.Time { return time.Unix(0, 0) }

func ExampleTokenBucket() {
	// 5 requests per second with bursts of 3.
	l := resilience.NewTokenBucket(resilience.TokenBucketConfig{Rate: 5, Burst: 3, Now: frozen})
	for range 4 {
		fmt.Println(l.Allow())
	}
	// Output:
	// true
	// true
	// true
	// false
}

func ExampleKeyed() {
	perUser := resilience.NewKeyed(resilience.KeyedConfig{MaxKeys: 100_000}, func(string) resilience.Limiter {
		return resilience.NewFixedWindow(resilience.WindowConfig{Limit: 2, Window: time.Second, Now: frozen})
	})
	for _, user := range []string{"alice", "alice", "alice", "bob"} {
		fmt.Println(user, perUser.Allow(user))
	}
	// Output:
	// alice true
	// alice true
	// alice false
	// bob true
}

func ExampleBreaker() {
	payments := resilience.NewBreaker(resilience.BreakerConfig{
		Name:         "payments",
		MinimumCalls: 3,
		OpenTimeout:  10 * time.Second,
		OnStateChange: func(name string, from, to resilience.State) {
			fmt.Printf("%s: %v -> %v\n", name, from, to)
		},
	})
	unavailable := errors.New("503 from provider")
	for range 3 {
		payments.Do(context.Background(), func(context.Context) error { return unavailable })
	}
	err := payments.Do(context.Background(), func(context.Context) error { return nil })
	fmt.Println(err, errors.Is(err, resilience.ErrBreakerOpen))
	// Output:
	// payments: closed -> open
	// resilience: circuit breaker open true
}

func ExampleBreaker_Acquire() {
	b := resilience.NewBreaker(resilience.BreakerConfig{})
	permit, err := b.Acquire()
	if err != nil {
		fmt.Println("fail fast:", err)
		return
	}
	err = nil // call the dependency here
	permit.Record(err)
	fmt.Println(b.State(), b.Counts().Successes)
	// Output:
	// closed 1
}

func ExampleAdaptive() {
	shedder := resilience.NewAdaptive(resilience.AdaptiveConfig{InitialLimit: 4})
	// Sheddable traffic may use half the limit; the rest is kept for
	// buyers (Normal) and health checks (Critical).
	for range 3 {
		_, ok := shedder.Acquire(resilience.Sheddable)
		fmt.Println("sheddable admitted:", ok)
	}
	ticket, ok := shedder.Acquire(resilience.Critical)
	fmt.Println("critical admitted:", ok, "in flight:", shedder.InFlight(), "limit:", shedder.Limit())
	ticket.Success()
	// Output:
	// sheddable admitted: true
	// sheddable admitted: true
	// sheddable admitted: false
	// critical admitted: true in flight: 3 limit: 4
}

func ExampleRetry() {
	r := resilience.NewRetry(resilience.RetryConfig{
		MaxAttempts: 3,
		BaseDelay:   time.Millisecond,
		Budget:      resilience.NewRetryBudget(resilience.RetryBudgetConfig{}),
	})
	attempt := 0
	err := r.Do(context.Background(), func(context.Context) error {
		attempt++
		if attempt < 3 {
			// Only errors marked retryable (idempotent call, transient
			// failure) are retried.
			return resilience.Retryable(errors.New("connection reset"))
		}
		return nil
	})
	fmt.Println(attempt, err)
	// Output:
	// 3 <nil>
}

func ExampleBudget() {
	// The request has 1s left; keep 50ms to answer, give the hop at most
	// 300ms.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	hop, cancelHop := resilience.Budget(ctx, 300*time.Millisecond, 50*time.Millisecond)
	defer cancelHop()
	deadline, _ := hop.Deadline()
	fmt.Println(time.Until(deadline).Round(100 * time.Millisecond))
	// Output:
	// 300ms
}

func ExampleChain() {
	breaker := resilience.NewBreaker(resilience.BreakerConfig{})
	bulkhead := resilience.NewSemaphore(10, 0)
	policy := resilience.Chain(
		resilience.NewRetry(resilience.RetryConfig{}),
		breaker,
		bulkhead,
		resilience.NewTimeout(2*time.Second),
	)
	err := policy.Do(context.Background(), func(ctx context.Context) error {
		_, ok := ctx.Deadline()
		fmt.Println("has deadline:", ok)
		return nil
	})
	fmt.Println(err)
	// Output:
	// has deadline: true
	// <nil>
}

func ExamplePool() {
	notifications := resilience.NewPool(2, 100)
	done := make(chan struct{})
	if err := notifications.Submit(func() { close(done) }); err != nil {
		fmt.Println("dropped:", err) // ErrBulkheadFull: degrade, never block orders
	}
	<-done
	notifications.Close()
	fmt.Println(notifications.Submit(func() {}))
	// Output:
	// resilience: closed
}
