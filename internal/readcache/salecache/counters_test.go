package salecache_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/readcache/salecache"
	"github.com/spikehq/spike/resilience"
)

// TestCountersOneLoadForConcurrentReads: 1000 buyers polling a sale page
// at once cost the counters one read.
func TestCountersOneLoadForConcurrentReads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCounters()
		f.setRemaining("bf", 42)
		gate := make(chan struct{})
		f.set(nil, gate, false)
		c := salecache.NewCounters(f, salecache.CountersOptions{})
		var wg sync.WaitGroup
		for range 1000 {
			wg.Go(func() {
				if n, ok, err := c.Remaining(bg, "bf"); n != 42 || !ok || err != nil {
					t.Errorf("Remaining() = %d, %v, %v", n, ok, err)
				}
			})
		}
		synctest.Wait()
		close(gate)
		wg.Wait()
		if n := f.reads.Load(); n != 1 {
			t.Errorf("1000 concurrent reads made %d counter reads, want 1", n)
		}
		if st := c.Stats(); st.Misses != 1000 || st.Loads != 1 || st.Entries != 1 {
			t.Errorf("Stats() = %+v, want 1000 misses, 1 load, 1 entry", st)
		}
	})
}

// TestCountersNeverOlderThanMaxLag polls a sale every 10 ms for 5 s while
// its remaining units drop by one every 10 ms: every answer is a value the
// counters held less than Fresh (500 ms) ago, and the counters are read
// about twice a second.
func TestCountersNeverOlderThanMaxLag(t *testing.T) {
	clk := newClock()
	f := newFakeCounters()
	c := salecache.NewCounters(f, salecache.CountersOptions{Now: clk.Now})
	const steps, stock = 500, 1000
	for i := range steps {
		truth := int64(stock - i) // units left at step i
		f.setRemaining("bf", truth)
		n, ok, err := c.Remaining(bg, "bf")
		if err != nil || !ok {
			t.Fatalf("step %d: Remaining() = %d, %v, %v", i, n, ok, err)
		}
		if lag := time.Duration(n-truth) * 10 * time.Millisecond; lag < 0 || lag >= 500*time.Millisecond {
			t.Fatalf("step %d: Remaining() = %d, the truth %v ago; want less than 500ms ago", i, n, lag)
		}
		clk.Advance(10 * time.Millisecond)
	}
	if n := f.reads.Load(); n != steps/50 {
		t.Errorf("%d polls over 5 s made %d counter reads, want %d (one per 500 ms)", steps, n, steps/50)
	}
}

// TestCountersStaleWithinMaxLag: when the counters fail, the last value is
// served while it is younger than MaxLag, then the read fails with a 503
// kind; once they answer again the value is fresh.
func TestCountersStaleWithinMaxLag(t *testing.T) {
	clk := newClock()
	f := newFakeCounters()
	f.setRemaining("bf", 10)
	c := salecache.NewCounters(f, salecache.CountersOptions{Now: clk.Now})
	c.Remaining(bg, "bf")
	f.set(errDown, nil, false)
	f.setRemaining("bf", 7) // unseen while the counters fail
	clk.Advance(999 * time.Millisecond)
	if n, ok, err := c.Remaining(bg, "bf"); n != 10 || !ok || err != nil {
		t.Errorf("999 ms after the last read, counters failing: Remaining() = %d, %v, %v; want the last value 10", n, ok, err)
	}
	clk.Advance(time.Millisecond)
	_, ok, err := c.Remaining(bg, "bf")
	if ok || !errors.Is(err, spike.ErrUnavailable) || !errors.Is(err, errDown) {
		t.Errorf("1 s after the last read, counters failing: ok %v, err %v; want ErrRemainingUnavailable", ok, err)
	}
	f.set(nil, nil, false)
	if n, ok, err := c.Remaining(bg, "bf"); n != 7 || !ok || err != nil {
		t.Errorf("counters answering again: Remaining() = %d, %v, %v; want 7", n, ok, err)
	}
	st := c.Stats()
	if st.StaleServed != 1 || st.Unavailable != 1 || st.LoadErrors != 2 || st.Loads != 4 {
		t.Errorf("Stats() = %+v, want 4 loads, 2 load errors, 1 stale served, 1 unavailable", st)
	}
}

// TestCountersBreaker: failing counters open the breaker; reads then fail
// fast (stale value within MaxLag, else a 503 kind) without reaching them;
// a trial read after OpenTimeout closes it once they heal.
func TestCountersBreaker(t *testing.T) {
	clk := newClock()
	f := newFakeCounters()
	f.setRemaining("bf", 10)
	c := salecache.NewCounters(f, salecache.CountersOptions{Now: clk.Now, Breaker: testBreaker()})
	f.set(errDown, nil, false)
	for i := range 5 {
		if _, _, err := c.Remaining(bg, "bf"); !errors.Is(err, errDown) {
			t.Fatalf("read #%d, counters failing: err = %v", i, err)
		}
	}
	if s := c.Breaker().State(); s != resilience.Open {
		t.Fatalf("breaker %v after 5 failed loads, want open", s)
	}
	reads := f.reads.Load()
	_, _, err := c.Remaining(bg, "bf")
	if !errors.Is(err, spike.ErrUnavailable) || !errors.Is(err, resilience.ErrBreakerOpen) {
		t.Errorf("read with the breaker open: err = %v, want ErrRemainingUnavailable (breaker open)", err)
	}
	if n := f.reads.Load(); n != reads {
		t.Errorf("%d counter reads with the breaker open, want 0", n-reads)
	}
	f.set(nil, nil, false)
	clk.Advance(2 * time.Second)
	if n, ok, err := c.Remaining(bg, "bf"); n != 10 || !ok || err != nil {
		t.Errorf("trial read after the counters healed: %d, %v, %v", n, ok, err)
	}
	if s := c.Breaker().State(); s != resilience.Closed {
		t.Errorf("breaker %v after a successful trial, want closed", s)
	}
}

// TestCountersRebuildingAndOpen: ok=false (counters being rebuilt) is
// passed through and drops the cached value; Open drops it too.
func TestCountersRebuildingAndOpen(t *testing.T) {
	clk := newClock()
	f := newFakeCounters()
	f.setRemaining("bf", 10)
	c := salecache.NewCounters(f, salecache.CountersOptions{Now: clk.Now})
	c.Remaining(bg, "bf")
	clk.Advance(500 * time.Millisecond)
	f.set(nil, nil, true)
	if _, ok, err := c.Remaining(bg, "bf"); ok || err != nil {
		t.Errorf("counters being rebuilt: ok %v, err %v; want ok=false, no error", ok, err)
	}
	f.set(errDown, nil, false)
	if _, ok, err := c.Remaining(bg, "bf"); ok || !errors.Is(err, spike.ErrUnavailable) {
		t.Errorf("after a rebuild answer, counters failing: ok %v, err %v; want no stale value", ok, err)
	}

	f.set(nil, nil, false)
	c.Remaining(bg, "bf")
	if err := c.Open(bg, blackFriday); err != nil { // re-opened: 100 units
		t.Fatal(err)
	}
	if n, _, _ := c.Remaining(bg, "bf"); n != blackFriday.Stock {
		t.Errorf("after Open: Remaining() = %d, want %d (not the cached 10)", n, blackFriday.Stock)
	}
}

// TestCountersCallerDeadline: counters that do not answer hold a reader
// only until its own deadline; the load itself is cut at LoadTimeout (at
// most MaxLag), and a value older than MaxLag is never served.
func TestCountersCallerDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCounters()
		f.setRemaining("bf", 10)
		clk := newClock()
		c := salecache.NewCounters(f, salecache.CountersOptions{Now: clk.Now, LoadTimeout: 5 * time.Second})
		c.Remaining(bg, "bf")
		clk.Advance(500 * time.Millisecond) // no longer fresh
		f.set(nil, make(chan struct{}), false)

		ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
		defer cancel()
		began := time.Now()
		_, _, err := c.Remaining(ctx, "bf")
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, spike.ErrUnavailable) || time.Since(began) != 100*time.Millisecond {
			t.Errorf("read with a 100 ms deadline: err = %v after %v, want DeadlineExceeded (503 kind) at the deadline", err, time.Since(began))
		}
		clk.Advance(500 * time.Millisecond) // the last value is now MaxLag old
		began = time.Now()
		_, _, err = c.Remaining(bg, "bf") // joins the load, cut at MaxLag
		if !errors.Is(err, spike.ErrUnavailable) || !errors.Is(err, resilience.ErrTimeout) {
			t.Errorf("read of counters that do not answer: err = %v, want ErrRemainingUnavailable (timeout)", err)
		}
		if d := time.Since(began); d != 900*time.Millisecond {
			t.Errorf("waited %v, want the rest of the 1 s load timeout (900ms)", d)
		}
	})
}
