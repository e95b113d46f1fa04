// Package resilience is Spike's high-availability toolkit: rate limiters,
// an adaptive concurrency limiter (load shedder), circuit breakers,
// bulkheads, retries with a retry budget, and funnel timeouts. It depends on
// the standard library only, does not log (state changes are reported through
// callbacks such as [BreakerConfig].OnStateChange) and knows nothing about
// HTTP.
//
// Every policy returns one sentinel error when it refuses a call:
// [ErrRateLimited], [ErrShed], [ErrBreakerOpen], [ErrBulkheadFull] or
// [ErrTimeout] (which also matches context.DeadlineExceeded). Match them with
// errors.Is.
//
// Each policy has a simple Do method (it implements [Policy]) and, where the
// call is on a hot path, an allocation-free two-step API:
//
//	// Inbound: shed before decoding the request.
//	ticket, ok := shedder.Acquire(resilience.Normal)
//	if !ok {
//		return 503 // with Retry-After
//	}
//	defer ticket.Success()
//
//	// Outbound: guard a dependency.
//	permit, err := paymentBreaker.Acquire()
//	if err != nil {
//		return err // ErrBreakerOpen: fail fast
//	}
//	err = callPayments(ctx)
//	permit.Record(err)
//
// Policies compose with [Chain], outermost first:
//
//	p := resilience.Chain(retry, breaker, bulkhead, resilience.NewTimeout(2*time.Second))
//	err := p.Do(ctx, func(ctx context.Context) error { return client.Call(ctx) })
//
// Time is read through an injectable Now func in each config (nil means the
// real monotonic clock), so tests drive limiters and breakers with a fake
// clock. Wait methods and retries sleep on real timers; test them with
// testing/synctest.
package resilience
