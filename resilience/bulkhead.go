package resilience

import (
	"context"
	"sync"
	"time"
)

// Semaphore is a bulkhead that bounds concurrent calls to a dependency, so a
// slow dependency can tie up at most its own slots. It is safe for
// concurrent use; TryAcquire and Release do not allocate.
type Semaphore struct {
	slots   chan struct{}
	maxWait time.Duration
}

// NewSemaphore returns a semaphore with size slots (at least 1). Acquire
// waits at most maxWait for a slot; zero means it never waits.
func NewSemaphore(size int, maxWait time.Duration) *Semaphore {
	return &Semaphore{slots: make(chan struct{}, max(size, 1)), maxWait: maxWait}
}

// TryAcquire takes a slot if one is free now and reports whether it did.
func (s *Semaphore) TryAcquire() bool {
	select {
	case s.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// Acquire takes a slot, waiting up to maxWait. It returns ErrBulkheadFull if
// none frees up in time and ctx.Err() if ctx is done first. A successful
// Acquire must be paired with Release.
func (s *Semaphore) Acquire(ctx context.Context) error {
	if s.TryAcquire() {
		return nil
	}
	if s.maxWait <= 0 {
		return ErrBulkheadFull
	}
	t := time.NewTimer(s.maxWait)
	defer t.Stop()
	select {
	case s.slots <- struct{}{}:
		return nil
	case <-t.C:
		return ErrBulkheadFull
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Release frees a slot taken by Acquire or TryAcquire.
func (s *Semaphore) Release() { <-s.slots }

// Do runs fn holding a slot; it returns ErrBulkheadFull (or ctx.Err()) if
// Acquire fails, and fn's error otherwise.
func (s *Semaphore) Do(ctx context.Context, fn func(context.Context) error) error {
	if err := s.Acquire(ctx); err != nil {
		return err
	}
	defer s.Release()
	return fn(ctx)
}

// InUse returns the number of slots taken.
func (s *Semaphore) InUse() int { return len(s.slots) }

// Size returns the number of slots.
func (s *Semaphore) Size() int { return cap(s.slots) }

// Pool is a bulkhead of a fixed number of worker goroutines fed by a bounded
// queue, for work that may run after the caller returns (core vs non-core
// work: notifications get their own small pool and can never slow orders).
// It is safe for concurrent use.
type Pool struct {
	mu     sync.RWMutex // guards closed against Submit racing Close
	closed bool
	tasks  chan func()
	wg     sync.WaitGroup
}

// NewPool starts workers goroutines (at least 1) that run submitted tasks,
// with room for queue tasks waiting (zero means a task is accepted only if
// a worker is idle and ready).
func NewPool(workers, queue int) *Pool {
	p := &Pool{tasks: make(chan func(), max(queue, 0))}
	for range max(workers, 1) {
		p.wg.Go(func() {
			for task := range p.tasks {
				task()
			}
		})
	}
	return p
}

// Submit queues task to run on a worker. It never blocks: it returns
// ErrBulkheadFull if the queue is full and ErrClosed after Close.
func (p *Pool) Submit(task func()) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	select {
	case p.tasks <- task:
		return nil
	default:
		return ErrBulkheadFull
	}
}

// Close stops accepting tasks, lets the workers drain the queue, and waits
// for them to finish. It is safe to call more than once.
func (p *Pool) Close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.tasks)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// Queued returns the number of tasks waiting for a worker.
func (p *Pool) Queued() int { return len(p.tasks) }
