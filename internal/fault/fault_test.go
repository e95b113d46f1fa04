package fault

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/domain/order"
)

type countStream struct{ n atomic.Int64 }

func (s *countStream) Enqueue(context.Context, order.Placed) error { s.n.Add(1); return nil }

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestStreamFromEnvUnset(t *testing.T) {
	wrap, d, err := StreamFromEnv(env(nil))
	if wrap != nil || d != 0 || err != nil {
		t.Fatalf("got %v, %v, %v; want nothing", wrap != nil, d, err)
	}
}

func TestStreamFromEnvBadDelay(t *testing.T) {
	if _, _, err := StreamFromEnv(env(map[string]string{"SPIKE_FAULT_STREAM_DELAY": "soon"})); err == nil {
		t.Fatal("no error for a bad duration")
	}
}

// TestSlowStreamCapacity: with 2 slots of 20 ms, 6 publishes at once take
// three rounds (about 60 ms), and all reach the stream.
func TestSlowStreamCapacity(t *testing.T) {
	wrap, d, err := StreamFromEnv(env(map[string]string{"SPIKE_FAULT_STREAM_DELAY": "20ms", "SPIKE_FAULT_STREAM_SLOTS": "2"}))
	if err != nil || d != 20*time.Millisecond {
		t.Fatalf("StreamFromEnv: %v, %v", d, err)
	}
	next := &countStream{}
	s := wrap(next)
	began := time.Now()
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			if err := s.Enqueue(context.Background(), order.Placed{}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if took := time.Since(began); took < 55*time.Millisecond {
		t.Errorf("6 publishes on 2 slots of 20ms took %v, want about 60ms", took)
	}
	if n := next.n.Load(); n != 6 {
		t.Errorf("%d publishes reached the stream, want 6", n)
	}
}

func TestSlowStreamCallerGivesUp(t *testing.T) {
	next := &countStream{}
	s := NewSlowStream(next, time.Minute, NewSchedule(1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := s.Enqueue(ctx, order.Placed{}); !errors.Is(err, ErrSlowStream) || !errors.Is(err, order.ErrNotEnqueued) {
		t.Fatalf("err = %v, want ErrSlowStream (not enqueued)", err)
	}
	if next.n.Load() != 0 {
		t.Fatal("a publish given up reached the stream")
	}
}
