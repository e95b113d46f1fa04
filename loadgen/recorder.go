package loadgen

import (
	"sort"
	"sync"
	"time"
)

// Recorder collects the results of one run: latency histograms (overall,
// per outcome, per second) and outcome counts. It is safe for concurrent use.
//
// Latency is measured from a request's intended send time: in an open-loop
// run that is its slot on the schedule, so time spent waiting to be sent is
// part of it (no coordinated omission); in a closed-loop run it is the
// moment a worker sends it. Service time is measured from the actual send.
// Transport failures and dropped requests are counted but have no latency.
type Recorder struct {
	mu        sync.Mutex
	start     time.Time
	last      time.Time
	latency   *Histogram
	service   *Histogram
	lag       *Histogram
	outcomes  map[string]*outcomeStats
	interval  time.Duration
	buckets   []*bucket
	responses int64
	dropped   int64
	sent      int64
}

type outcomeStats struct {
	count int64
	hist  *Histogram
}

type bucket struct {
	responses int64
	hist      *Histogram
	outcomes  map[string]int64
}

// NewRecorder returns a recorder whose time series starts at start and has
// one point per interval (if zero, one second).
func NewRecorder(start time.Time, interval time.Duration) *Recorder {
	if interval <= 0 {
		interval = time.Second
	}
	return &Recorder{
		start:    start,
		interval: interval,
		last:     start,
		latency:  NewHistogram(),
		service:  NewHistogram(),
		lag:      NewHistogram(),
		outcomes: make(map[string]*outcomeStats),
	}
}

func (r *Recorder) bucketAt(t time.Time) *bucket {
	i := int(t.Sub(r.start) / r.interval)
	if i < 0 {
		i = 0
	}
	for len(r.buckets) <= i {
		r.buckets = append(r.buckets, &bucket{hist: newHistogram(2), outcomes: make(map[string]int64)})
	}
	return r.buckets[i]
}

func (r *Recorder) outcome(name string) *outcomeStats {
	o := r.outcomes[name]
	if o == nil {
		o = &outcomeStats{hist: NewHistogram()}
		r.outcomes[name] = o
	}
	return o
}

// Record adds one sent request: intended is its scheduled send time, sent
// the actual one, done when its outcome was known.
func (r *Recorder) Record(intended, sent, done time.Time, outcome string) {
	lat := done.Sub(intended)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent++
	r.lag.Record(sent.Sub(intended))
	if done.After(r.last) {
		r.last = done
	}
	s := r.bucketAt(done)
	s.outcomes[outcome]++
	o := r.outcome(outcome)
	o.count++
	if IsTransport(outcome) {
		return
	}
	r.responses++
	s.responses++
	o.hist.Record(lat)
	r.latency.Record(lat)
	s.hist.Record(lat)
	r.service.Record(done.Sub(sent))
}

// Drop counts a request that was due at intended but not sent because the
// in-flight bound was reached (outcome "client_overload").
func (r *Recorder) Drop(intended time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropped++
	r.bucketAt(intended).outcomes[OutcomeClientOverload]++
	r.outcome(OutcomeClientOverload).count++
}

// Progress is a point-in-time view of a running recorder.
type Progress struct {
	Elapsed   time.Duration
	Sent      int64
	Responses int64
	Dropped   int64
	LastRate  float64       // responses per second in the last full interval
	P99       time.Duration // over the run so far
	Errors    int64         // transport errors so far
}

// Progress returns a snapshot for a progress line at time now.
func (r *Recorder) Progress(now time.Time) Progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := Progress{
		Elapsed:   now.Sub(r.start),
		Sent:      r.sent,
		Responses: r.responses,
		Dropped:   r.dropped,
		P99:       r.latency.Quantile(0.99),
	}
	if i := int(now.Sub(r.start)/r.interval) - 1; i >= 0 && i < len(r.buckets) {
		p.LastRate = float64(r.buckets[i].responses) / r.interval.Seconds()
	}
	p.Errors = r.countLocked(OutcomeTimeout) + r.countLocked(OutcomeTransport)
	return p
}

func (r *Recorder) countLocked(name string) int64 {
	if o := r.outcomes[name]; o != nil {
		return o.count
	}
	return 0
}

// Stats summarises one run. Rates are per second of Elapsed.
type Stats struct {
	Mode        string        `json:"mode"` // "open" or "closed"
	Target      string        `json:"target"`
	Rate        float64       `json:"rate,omitempty"` // open loop: offered requests per second
	Concurrency int           `json:"concurrency"`    // closed loop: workers; open loop: in-flight bound
	Elapsed     time.Duration `json:"elapsed_ns"`
	Sent        int64         `json:"sent"`      // requests sent (with or without a response)
	Responses   int64         `json:"responses"` // HTTP responses received, any status
	Dropped     int64         `json:"dropped"`   // open loop: not sent, in-flight bound reached
	// Unsent counts the operations the plan intended but never sent: the
	// dropped ones, and those a Total-bound run did not reach.
	Unsent int64 `json:"unsent"`
	// ServerErrors counts 5xx answers (set by [Bench]).
	ServerErrors int64       `json:"server_errors"`
	Throughput   float64     `json:"throughput"`
	Latency      Percentiles `json:"latency"`      // from intended send time
	Service      Percentiles `json:"service_time"` // from actual send time
	// SendLag is actual minus intended send time: how late the generator
	// sent (open loop). Large values mean the client, not the server, was slow.
	SendLag  Percentiles   `json:"send_lag"`
	Outcomes []Outcome     `json:"outcomes"`
	Interval time.Duration `json:"interval_ns"` // width of each Series point
	Series   []Point       `json:"series"`
}

// Outcome is the count, rate and latency of one outcome.
type Outcome struct {
	Name    string      `json:"name"`
	Count   int64       `json:"count"`
	Rate    float64     `json:"rate"`
	Latency Percentiles `json:"latency"`
}

// Point is one interval of the time series, by completion time.
type Point struct {
	T          float64          `json:"t"`          // start of the interval, seconds since the start of the run
	Throughput float64          `json:"throughput"` // responses per second during the interval
	Latency    Percentiles      `json:"latency"`
	Outcomes   map[string]int64 `json:"outcomes"` // counts during the interval (not per second)
}

// Count returns the count of the named outcome in s (0 if absent).
func (s *Stats) Count(name string) int64 {
	for _, o := range s.Outcomes {
		if o.Name == name {
			return o.Count
		}
	}
	return 0
}

// OutcomeRate returns the rate per second of the named outcome.
func (s *Stats) OutcomeRate(name string) float64 {
	for _, o := range s.Outcomes {
		if o.Name == name {
			return o.Rate
		}
	}
	return 0
}

// Stats returns the summary of everything recorded so far. Elapsed runs from
// the start to the last completion (at least 1 ms, to keep rates finite).
func (r *Recorder) Stats() *Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	el := r.last.Sub(r.start)
	if el < time.Millisecond {
		el = time.Millisecond
	}
	secs := el.Seconds()
	st := &Stats{
		Elapsed:    el,
		Sent:       r.sent,
		Responses:  r.responses,
		Dropped:    r.dropped,
		Throughput: float64(r.responses) / secs,
		Latency:    r.latency.Summary(),
		Service:    r.service.Summary(),
		SendLag:    r.lag.Summary(),
	}
	for name, o := range r.outcomes {
		st.Outcomes = append(st.Outcomes, Outcome{Name: name, Count: o.count, Rate: float64(o.count) / secs, Latency: o.hist.Summary()})
	}
	sort.Slice(st.Outcomes, func(i, j int) bool {
		if st.Outcomes[i].Count != st.Outcomes[j].Count {
			return st.Outcomes[i].Count > st.Outcomes[j].Count
		}
		return st.Outcomes[i].Name < st.Outcomes[j].Name
	})
	st.Interval = r.interval
	for i, s := range r.buckets {
		oc := make(map[string]int64, len(s.outcomes))
		for k, v := range s.outcomes {
			oc[k] = v
		}
		st.Series = append(st.Series, Point{
			T:          (time.Duration(i) * r.interval).Seconds(),
			Throughput: float64(s.responses) / r.interval.Seconds(),
			Latency:    s.hist.Summary(),
			Outcomes:   oc,
		})
	}
	return st
}
