package resilience_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spikehq/spike/resilience"
)

func TestSemaphore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := resilience.NewSemaphore(2, 100*time.Millisecond)
		ctx := context.Background()
		if err := s.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		if !s.TryAcquire() {
			t.Fatal("TryAcquire() with a free slot = false")
		}
		start := time.Now()
		if err := s.Acquire(ctx); !errors.Is(err, resilience.ErrBulkheadFull) {
			t.Errorf("Acquire() when full = %v, want ErrBulkheadFull", err)
		}
		if waited := time.Since(start); waited != 100*time.Millisecond {
			t.Errorf("Acquire() gave up after %v, want the max wait 100ms", waited)
		}
		// A slot freed during the wait is taken.
		go func() {
			time.Sleep(50 * time.Millisecond)
			s.Release()
		}()
		if err := s.Acquire(ctx); err != nil {
			t.Errorf("Acquire() when a slot frees in time = %v, want nil", err)
		}
		if s.InUse() != 2 {
			t.Errorf("InUse() = %d, want 2", s.InUse())
		}
		noWait := resilience.NewSemaphore(1, 0)
		noWait.TryAcquire()
		if err := noWait.Do(ctx, func(context.Context) error { return nil }); !errors.Is(err, resilience.ErrBulkheadFull) {
			t.Errorf("Do() when full without wait = %v, want ErrBulkheadFull", err)
		}
	})
}

func TestPool(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := resilience.NewPool(2, 3)
		release := make(chan struct{})
		var ran atomic.Int32
		task := func() {
			<-release
			ran.Add(1)
		}
		var errs []error
		for range 7 {
			errs = append(errs, p.Submit(task))
			synctest.Wait() // let an idle worker pick the task up
		}
		// 2 running + 3 queued accepted; the rest rejected.
		var full int
		for _, err := range errs {
			if errors.Is(err, resilience.ErrBulkheadFull) {
				full++
			} else if err != nil {
				t.Errorf("Submit() = %v", err)
			}
		}
		if full != 2 {
			t.Errorf("Submit() rejected %d of 7, want 2", full)
		}
		if p.Queued() != 3 {
			t.Errorf("Queued() = %d, want 3", p.Queued())
		}
		close(release)
		p.Close() // drains the queue
		if got := ran.Load(); got != 5 {
			t.Errorf("tasks run after Close() = %d, want 5", got)
		}
		if err := p.Submit(task); !errors.Is(err, resilience.ErrClosed) {
			t.Errorf("Submit() after Close() = %v, want ErrClosed", err)
		}
		p.Close()
	})
}

func TestPoolConcurrentSubmitClose(t *testing.T) {
	p := resilience.NewPool(2, 10)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				p.Submit(func() {})
			}
		})
	}
	p.Close()
	wg.Wait()
}
