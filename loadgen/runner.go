package loadgen

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Op performs operation number i (0, 1, 2, ...) and returns its outcome
// (see [Classify]). It is called from many goroutines at once.
type Op func(ctx context.Context, i int) string

// Plan describes the load shape of one run.
type Plan struct {
	// Rate, when > 0, makes the run open loop: operation i is due at
	// start + i/Rate, whatever happened to earlier ones. When 0, the run is
	// closed loop: Concurrency workers each send the next operation as soon
	// as their previous one is answered.
	Rate float64
	// Concurrency is the number of closed-loop workers, or the bound on
	// requests in flight in an open-loop run: a request due while the bound
	// is reached is not sent and is counted as "client_overload".
	// If zero, 1 is used.
	Concurrency int
	// Total, when > 0, is the number of operations to run. Otherwise the run
	// lasts Duration (open loop: exactly round(Rate×Duration) operations).
	Total int
	// Duration bounds the run; if zero the run ends after Total operations.
	// In-flight requests still finish after it.
	Duration time.Duration
	// Op performs one operation.
	Op Op
	// Interval is the width of each point of the time series; if zero, one
	// second.
	Interval time.Duration
	// OnTick, if set, is called about once a second with the recorder.
	OnTick func(*Recorder)
}

// OpenLoopCount returns the number of operations an open-loop run at rate
// per second sends in d: round(rate × d).
func OpenLoopCount(rate float64, d time.Duration) int {
	return int(math.Round(rate * d.Seconds()))
}

// Intended returns the scheduled send time of operation i in an open-loop
// run at rate per second starting at start.
func Intended(start time.Time, rate float64, i int) time.Time {
	return start.Add(time.Duration(float64(i) * float64(time.Second) / rate))
}

// Run executes p and returns the recorded statistics. It stops early, with
// the statistics so far and ctx's error, when ctx is done.
func Run(ctx context.Context, p Plan) (*Stats, error) {
	if p.Op == nil {
		return nil, errors.New("loadgen: plan has no Op")
	}
	if p.Concurrency < 1 {
		p.Concurrency = 1
	}
	if p.Rate < 0 || math.IsNaN(p.Rate) || math.IsInf(p.Rate, 0) {
		return nil, errors.New("loadgen: rate must be a finite number ≥ 0")
	}
	if p.Total <= 0 && p.Duration <= 0 {
		return nil, errors.New("loadgen: plan needs a total or a duration")
	}
	start := time.Now()
	rec := NewRecorder(start, p.Interval)

	stopTick := make(chan struct{})
	var tickWG sync.WaitGroup
	if p.OnTick != nil {
		tickWG.Add(1)
		go func() {
			defer tickWG.Done()
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					p.OnTick(rec)
				case <-stopTick:
					return
				}
			}
		}()
	}

	var st *Stats
	if p.Rate > 0 {
		runOpen(ctx, p, start, rec)
		st = rec.Stats()
		st.Mode, st.Rate = "open", p.Rate
	} else {
		runClosed(ctx, p, start, rec)
		st = rec.Stats()
		st.Mode = "closed"
	}
	st.Concurrency = p.Concurrency
	st.Unsent = st.Dropped
	if p.Total > 0 {
		st.Unsent = int64(p.Total) - st.Sent // dropped, or never reached (interrupted)
	}
	close(stopTick)
	tickWG.Wait()
	return st, ctx.Err()
}

type job struct {
	i        int
	intended time.Time
}

func runOpen(ctx context.Context, p Plan, start time.Time, rec *Recorder) {
	n := p.Total
	if n <= 0 {
		n = OpenLoopCount(p.Rate, p.Duration)
	}
	var inflight atomic.Int64
	jobs := make(chan job, p.Concurrency) // never blocks: queued+running ≤ Concurrency
	var wg sync.WaitGroup
	for range p.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				sent := time.Now()
				out := p.Op(ctx, j.i)
				rec.Record(j.intended, sent, time.Now(), out)
				inflight.Add(-1)
			}
		}()
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
schedule:
	for i := range n {
		t := Intended(start, p.Rate, i)
		if p.Duration > 0 && t.Sub(start) >= p.Duration {
			break
		}
		if d := time.Until(t); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				break schedule
			}
		} else if ctx.Err() != nil {
			break
		}
		if inflight.Load() >= int64(p.Concurrency) {
			rec.Drop(t)
			continue
		}
		inflight.Add(1)
		jobs <- job{i: i, intended: t}
	}
	close(jobs)
	wg.Wait()
}

func runClosed(ctx context.Context, p Plan, start time.Time, rec *Recorder) {
	var deadline time.Time
	if p.Duration > 0 {
		deadline = start.Add(p.Duration)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range p.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if p.Total > 0 && i >= p.Total {
					return
				}
				now := time.Now()
				if !deadline.IsZero() && !now.Before(deadline) {
					return
				}
				out := p.Op(ctx, i)
				rec.Record(now, now, time.Now(), out)
			}
		}()
	}
	wg.Wait()
}
