package e2e_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/testkit/apitest"
)

// request is one placement a buyer made, kept so it can be retried with
// the same idempotency key.
type request struct {
	user int64
	key  string
	qty  int64
}

// load is a crowd of buyers placing orders on one sale through the load
// balancer. Each buyer goroutine walks through fresh users, three attempts
// each (so the per-user limit is hit), and retries a request that got no
// definite answer (transport error, 429, 5xx) with the same key until it
// gets one or the load stops.
type load struct {
	t       *testing.T
	c       *client
	saleID  string
	l       *apitest.Ledger
	buyers  int
	pace    time.Duration // pause after a definite answer, per buyer
	base    int64         // first user id
	perUser int64

	stop    chan struct{}
	done    chan struct{}
	began   time.Time
	stopped time.Time

	// diagnose, if set, describes a request stuck without a definite answer.
	diagnose func(req request) string

	soldOut atomic.Int64 // sold_out answers
	acks    atomic.Int64 // 202 answers

	mu         sync.Mutex
	statuses   map[string]int // "202", "409 sold_out", "transport", ...
	unavail    []time.Time    // when each 503 unavailable was answered
	ackSent    []time.Time    // when each request answered 202 was sent
	failLat    []time.Duration
	unanswered []request
}

func startLoad(t *testing.T, c *client, saleID string, l *apitest.Ledger, buyers int, pace time.Duration, base, perUser int64) *load {
	ld := &load{t: t, c: c, saleID: saleID, l: l, buyers: buyers, pace: pace, base: base, perUser: perUser,
		stop: make(chan struct{}), done: make(chan struct{}), began: time.Now(), statuses: map[string]int{}}
	var wg sync.WaitGroup
	for g := range buyers {
		wg.Add(1)
		go func() { defer wg.Done(); ld.buyer(g) }()
	}
	go func() { wg.Wait(); close(ld.done) }()
	return ld
}

func (ld *load) isStopped() bool {
	select {
	case <-ld.stop:
		return true
	default:
		return false
	}
}

func (ld *load) buyer(g int) {
	// Spread the start so the buyers do not arrive in lock step.
	time.Sleep(rand.N(ld.pace + time.Millisecond))
	for i := 0; !ld.isStopped(); i++ {
		user := ld.base + int64(g)*100_000 + int64(i/3)
		req := request{user: user, key: ld.saleID + "-u" + strconv.FormatInt(user, 10) + "-" + strconv.Itoa(i), qty: 1 + rand.Int64N(2)}
		if !ld.untilAnswered(req) {
			return
		}
		if ld.pace == 0 {
			continue
		}
		select {
		case <-ld.stop:
			return
		case <-time.After(ld.pace/2 + rand.N(ld.pace)):
		}
	}
}

// untilAnswered sends req until a definite answer; false if the load
// stopped first (req is then kept for retryUnanswered).
func (ld *load) untilAnswered(req request) bool {
	for {
		sent := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		r, p, err := ld.c.Place(ctx, req.user, ld.c.Token(req.user, false), ld.saleID, req.key, req.qty)
		cancel()
		now := time.Now()
		kind := ""
		switch {
		case err != nil:
			kind = "transport"
		case r.Status == 202:
			kind = "202"
		default:
			kind = strconv.Itoa(r.Status) + " " + r.Code()
		}
		ld.mu.Lock()
		ld.statuses[kind]++
		switch {
		case err == nil && r.Status == 503 && r.Code() == "unavailable":
			ld.unavail = append(ld.unavail, now)
			ld.failLat = append(ld.failLat, now.Sub(sent))
		case kind == "202":
			ld.ackSent = append(ld.ackSent, sent)
		}
		ld.mu.Unlock()
		switch {
		case kind == "202":
			ld.acks.Add(1)
			ld.l.Record(req.user, req.key, req.qty, p)
			return true
		case err == nil && r.Status == 409:
			if r.Code() == "sold_out" {
				ld.soldOut.Add(1)
			}
			return true // a clean rejection: sold out, over the limit
		case err == nil && r.Status != 429 && r.Status < 500:
			ld.t.Errorf("place %+v: unexpected %d: %s", req, r.Status, r.Body)
			return true
		case err == nil && r.Status == 500:
			ld.t.Errorf("place %+v: 500 (a bug): %s", req, r.Body)
		}
		// No definite answer: wait (a short version of Retry-After, so the
		// fence is measured finely) and send the same key again.
		wait := 100*time.Millisecond + rand.N(150*time.Millisecond)
		if err != nil {
			wait = 200 * time.Millisecond
		}
		select {
		case <-ld.stop:
			ld.mu.Lock()
			ld.unanswered = append(ld.unanswered, req)
			ld.mu.Unlock()
			return false
		case <-time.After(wait):
		}
	}
}

// halt stops the buyers and waits for them (bounded by their request
// timeouts).
func (ld *load) halt() {
	close(ld.stop)
	select {
	case <-ld.done:
	case <-time.After(60 * time.Second):
		ld.t.Fatal("buyers did not stop within 60 s")
	}
	ld.stopped = time.Now()
}

// retryUnanswered sends every request left without a definite answer again,
// with its key, until it gets one (each bounded to 60 s; a request still
// without an answer then is an error, reported with what the server holds).
func (ld *load) retryUnanswered() {
	ld.t.Helper()
	recovered := 0
	for _, req := range ld.unanswered {
		deadline := time.Now().Add(60 * time.Second)
	retry:
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			r, p, err := ld.c.Place(ctx, req.user, ld.c.Token(req.user, false), ld.saleID, req.key, req.qty)
			cancel()
			if err == nil && r.Status == 202 {
				ld.l.Record(req.user, req.key, req.qty, p)
				recovered++
				break
			}
			if err == nil && r.Status == 409 {
				break
			}
			if err == nil && r.Status != 429 && r.Status < 500 {
				ld.t.Errorf("retry %+v: unexpected %d: %s", req, r.Status, r.Body)
				break
			}
			if time.Now().After(deadline) {
				diag := ""
				if ld.diagnose != nil {
					diag = ld.diagnose(req)
				}
				ld.t.Errorf("request %+v still without a definite answer after 60 s of retries: %v %d %s\n%s", req, err, r.Status, r.Body, diag)
				break retry
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	ld.t.Logf("%d requests unanswered when the load stopped, retried with their keys: %d placed", len(ld.unanswered), recovered)
}

// waitSoldOut waits until n sold_out answers came after this call, or
// timeout passes.
func (ld *load) waitSoldOut(n int64, timeout time.Duration) bool {
	start := ld.soldOut.Load()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if ld.soldOut.Load()-start >= n {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// waitAck waits until a request sent after since is answered 202, and
// returns when it was sent.
func (ld *load) waitAck(since time.Time, timeout time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	for {
		ld.mu.Lock()
		var first time.Time
		for _, s := range ld.ackSent {
			if s.After(since) && (first.IsZero() || s.Before(first)) {
				first = s
			}
		}
		ld.mu.Unlock()
		if !first.IsZero() {
			return first, true
		}
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// acksBetween counts the 202s to requests sent in [from, to).
func (ld *load) acksBetween(from, to time.Time) int {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	n := 0
	for _, s := range ld.ackSent {
		if !s.Before(from) && s.Before(to) {
			n++
		}
	}
	return n
}

// fenced returns the first 503 unavailable answered after since, and the
// send time of the first request after it that was answered 202.
func (ld *load) fenced(since time.Time) (first503, firstAck time.Time) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	for _, u := range ld.unavail {
		if u.After(since) && (first503.IsZero() || u.Before(first503)) {
			first503 = u
		}
	}
	if first503.IsZero() {
		return
	}
	for _, s := range ld.ackSent {
		if s.After(first503) && (firstAck.IsZero() || s.Before(firstAck)) {
			firstAck = s
		}
	}
	return
}

// report logs what the buyers saw and the placement throughput.
func (ld *load) report() {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	kinds := make([]string, 0, len(ld.statuses))
	total := 0
	for k, n := range ld.statuses {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
		total += n
	}
	sort.Strings(kinds)
	d := ld.stopped.Sub(ld.began)
	ld.t.Logf("load: %d buyers for %v: %d answers (%.0f/s), %d placed (%.0f placements/s); %v",
		ld.buyers, d.Round(time.Millisecond), total, float64(total)/d.Seconds(), ld.acks.Load(), float64(ld.acks.Load())/d.Seconds(), kinds)
	if len(ld.failLat) > 0 {
		lat := append([]time.Duration(nil), ld.failLat...)
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		ld.t.Logf("503 unavailable answers: %d, latency p50 %v p99 %v max %v", len(lat),
			lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)*99/100].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	}
}
