// Package fault injects faults for experiments (scripts/overload.sh dep),
// configured by environment variables read through the getenv function
// its caller passes:
//
//   - SPIKE_FAULT_STREAM_DELAY (a duration): the order stream is slowed
//     down, every publish waiting that long first;
//   - SPIKE_FAULT_STREAM_SLOTS (default 8): how many such publishes the
//     slowed stream serves at once.
package fault

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/spikehq/spike/internal/domain/order"
)

// StreamFromEnv returns the wrapper of the order stream that
// SPIKE_FAULT_STREAM_DELAY asks for, and its delay; nil and zero when the
// variable is unset. Every stream wrapped by the returned function shares
// one schedule of slots.
func StreamFromEnv(getenv func(string) string) (wrap func(order.Stream) order.Stream, delay time.Duration, err error) {
	v := getenv("SPIKE_FAULT_STREAM_DELAY")
	if v == "" {
		return nil, 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return nil, 0, fmt.Errorf("SPIKE_FAULT_STREAM_DELAY: %w", err)
	}
	slots := 8
	if n, err := strconv.Atoi(getenv("SPIKE_FAULT_STREAM_SLOTS")); err == nil && n > 0 {
		slots = n
	}
	sched := NewSchedule(slots)
	return func(s order.Stream) order.Stream { return NewSlowStream(s, d, sched) }, d, nil
}

// SlowStream is a slowed dependency in front of a stream that serves at
// most a Schedule's slots publishes at a time, each taking delay, first
// come first served, so its capacity is slots / delay (8 / 5 ms = 1600/s)
// whatever the CPU: each publish books the slot that frees first and waits
// until its booked end, so a goroutine woken late by a busy CPU is slow
// itself but does not hold up the next call.
type SlowStream struct {
	next  order.Stream
	delay time.Duration
	sched *Schedule
}

// NewSlowStream returns next slowed by delay on sched's slots.
func NewSlowStream(next order.Stream, delay time.Duration, sched *Schedule) *SlowStream {
	return &SlowStream{next: next, delay: delay, sched: sched}
}

// ErrSlowStream is returned by a publish whose caller gave up while it
// waited for its slot: it was not published.
var ErrSlowStream = fmt.Errorf("slowed stream: gave up before publishing: %w", order.ErrNotEnqueued)

// Enqueue implements order.Stream.
func (s *SlowStream) Enqueue(ctx context.Context, e order.Placed) error {
	t := time.NewTimer(time.Until(s.sched.book(s.delay)))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ErrSlowStream // the slot stays booked: the dependency did the work
	}
	return s.next.Enqueue(ctx, e)
}

// Schedule books calls on the slot that frees first.
type Schedule struct {
	mu   sync.Mutex
	free []time.Time // when each slot is next free
}

// NewSchedule returns a schedule of slots (at least 1), all free now.
func NewSchedule(slots int) *Schedule { return &Schedule{free: make([]time.Time, max(slots, 1))} }

// book returns when a call arriving now and taking d ends.
func (s *Schedule) book(d time.Duration) time.Time {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	first := 0
	for i, t := range s.free {
		if t.Before(s.free[first]) {
			first = i
		}
	}
	end := s.free[first]
	if now.After(end) {
		end = now
	}
	end = end.Add(d)
	s.free[first] = end
	return end
}
