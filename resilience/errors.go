package resilience

import (
	"context"
	"errors"
)

// Sentinel errors, one per policy. Callers match them with [errors.Is]; the
// HTTP layer maps ErrRateLimited, ErrBulkheadFull and ErrShed to 429/503 and
// ErrTimeout to 503.
var (
	// ErrRateLimited is returned when a rate limiter rejects a call.
	ErrRateLimited = errors.New("resilience: rate limited")
	// ErrBreakerOpen is returned when a circuit breaker rejects a call.
	ErrBreakerOpen = errors.New("resilience: circuit breaker open")
	// ErrBulkheadFull is returned when a semaphore or worker pool has no room.
	ErrBulkheadFull = errors.New("resilience: bulkhead full")
	// ErrShed is returned when the adaptive concurrency limiter sheds a call.
	ErrShed = errors.New("resilience: load shed")
	// ErrClosed is returned by a [Pool] after Close.
	ErrClosed = errors.New("resilience: closed")
	// ErrTimeout is returned when a [Timeout] or [Budget] deadline expires.
	// errors.Is(ErrTimeout, context.DeadlineExceeded) is true, so code that
	// only knows the context package still recognises it.
	ErrTimeout error = timeoutError{}
)

// timeoutError matches context.DeadlineExceeded and reports Timeout() like
// net.Error, so both idioms recognise it.
type timeoutError struct{}

func (timeoutError) Error() string        { return "resilience: timeout" }
func (timeoutError) Timeout() bool        { return true }
func (timeoutError) Temporary() bool      { return true }
func (timeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// Preallocated wrapped errors keep rejection paths allocation-free.
var (
	errWaitPastDeadline = wrapSentinel(ErrRateLimited, "wait would pass the context deadline")
	errExceedsCapacity  = wrapSentinel(ErrRateLimited, "request exceeds limiter capacity")
	errQueueFull        = wrapSentinel(ErrRateLimited, "leaky bucket queue full")
)

type wrappedSentinel struct {
	sentinel error
	msg      string
}

func wrapSentinel(sentinel error, msg string) error { return &wrappedSentinel{sentinel, msg} }
func (e *wrappedSentinel) Error() string            { return e.sentinel.Error() + ": " + e.msg }
func (e *wrappedSentinel) Unwrap() error            { return e.sentinel }

// Retryable marks err as safe to retry: the operation is idempotent and the
// failure is transient. [Retry] retries only such errors unless its RetryIf
// says otherwise. Retryable(nil) returns nil.
func Retryable(err error) error {
	if err == nil {
		return nil
	}
	return &retryableError{err}
}

// IsRetryable reports whether err, or any error it wraps, was marked by
// [Retryable].
func IsRetryable(err error) bool {
	var r *retryableError
	return errors.As(err, &r)
}

type retryableError struct{ err error }

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }
