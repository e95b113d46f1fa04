package resilience

import "context"

// Policy guards a call. Do runs fn (or refuses to, returning the policy's
// sentinel error) and returns fn's error otherwise. Every policy in this
// package is safe for concurrent use.
type Policy interface {
	Do(ctx context.Context, fn func(context.Context) error) error
}

// PolicyFunc adapts a function to [Policy].
type PolicyFunc func(ctx context.Context, fn func(context.Context) error) error

// Do calls f(ctx, fn).
func (f PolicyFunc) Do(ctx context.Context, fn func(context.Context) error) error { return f(ctx, fn) }

// Chain composes policies, the first outermost. A typical outbound chain is
// Chain(retry, breaker, bulkhead, timeout): each attempt gets its own timeout
// and bulkhead slot, and the breaker sees every attempt's outcome.
// Chain with no policies calls fn directly. Each layer costs one closure
// allocation per call; hot paths should use the policies' Acquire APIs.
func Chain(policies ...Policy) Policy {
	var p Policy = passThrough{}
	for i := len(policies) - 1; i >= 0; i-- {
		if policies[i] == nil {
			continue
		}
		if _, ok := p.(passThrough); ok {
			p = policies[i]
			continue
		}
		p = link{outer: policies[i], inner: p}
	}
	return p
}

type passThrough struct{}

func (passThrough) Do(ctx context.Context, fn func(context.Context) error) error { return fn(ctx) }

type link struct{ outer, inner Policy }

func (l link) Do(ctx context.Context, fn func(context.Context) error) error {
	return l.outer.Do(ctx, func(ctx context.Context) error { return l.inner.Do(ctx, fn) })
}
