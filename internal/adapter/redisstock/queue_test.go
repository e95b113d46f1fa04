package redisstock_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/redisstock"
)

// TestRunOwnsBackgroundWork: undos and confirm retries run on Run's
// workers; when Run's ctx ends, each job still pending gets one last
// attempt (within DrainTimeout) and Run returns: shutdown waits for the
// work, boundedly.
func TestRunOwnsBackgroundWork(t *testing.T) {
	c := redisstock.New(mustShared(t), spike.NewIDGenerator(), redisstock.Config{Prefix: "spiketest", RetryQueue: 4, RetryWorkers: 1, DrainTimeout: time.Second})
	var calls, late atomic.Int32
	// A job between rounds when the shutdown comes: its next round is due
	// in an hour, but it gets its last attempt at once.
	redisstock.Enqueue(c, []time.Duration{0, time.Hour}, func(ctx context.Context) error {
		if ctx.Err() != nil {
			t.Error("a job ran with a done ctx")
		}
		calls.Add(1)
		return nil
	})
	// A job queued behind it, never started before the shutdown.
	redisstock.Enqueue(c, nil, func(context.Context) error { late.Add(1); return nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	eventually(t, "the first round", func() bool { return calls.Load() == 1 })
	began := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its ctx ended")
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Errorf("Run took %v to stop", d)
	}
	if calls.Load() != 2 || late.Load() != 1 {
		t.Errorf("last attempts: %d calls of the first job (want 2), %d of the queued one (want 1)", calls.Load(), late.Load())
	}
	if c.Queued() != 0 {
		t.Errorf("%d jobs left queued", c.Queued())
	}

	// Without room, work is dropped and counted, never blocking the caller.
	d := redisstock.New(mustShared(t), spike.NewIDGenerator(), redisstock.Config{Prefix: "spiketest", RetryQueue: 2})
	for range 5 {
		redisstock.Enqueue(d, nil, func(context.Context) error { return nil })
	}
	if d.Dropped() != 3 || d.Queued() != 2 {
		t.Errorf("Dropped() = %d, Queued() = %d; want 3, 2", d.Dropped(), d.Queued())
	}
}
