package resilience

import (
	"sync"
	"testing"
	"time"
)

func TestCPUSaturationJudge(t *testing.T) {
	var c CPUSaturation
	buckets := []float64{0, 1e-4, 1e-3, 1e-2, 1} // waits: <0.1ms, <1ms, <10ms, <1s
	if c.judge([]uint64{0, 0, 0, 0}, buckets) {
		t.Fatal("first sample judged saturated: it has nothing to compare with")
	}
	// More than a tenth of the waits since the previous sample were 1 ms
	// or longer: saturated.
	check := func(prev, cur []uint64, want bool) {
		t.Helper()
		var c CPUSaturation
		c.judge(prev, buckets)
		if got := c.judge(cur, buckets); got != want {
			t.Errorf("judge(%v → %v) = %v, want %v", prev, cur, got, want)
		}
	}
	check([]uint64{0, 0, 0, 0}, []uint64{0, 0, 0, 0}, false)
	check([]uint64{0, 0, 0, 0}, []uint64{100, 50, 0, 0}, false)
	check([]uint64{0, 0, 0, 0}, []uint64{90, 0, 10, 0}, false) // exactly a tenth: not more
	check([]uint64{0, 0, 0, 0}, []uint64{89, 0, 11, 0}, true)
	check([]uint64{10, 0, 10, 0}, []uint64{20, 0, 10, 5}, true) // deltas: 10 fast, 5 slow
	check([]uint64{0, 0, 0, 0}, []uint64{0, 0, 0}, false)       // histogram changed shape: resample
}

func TestCPUSaturationSaturated(t *testing.T) {
	var c CPUSaturation
	c.Saturated() // first sample
	// Concurrent callers: one refreshes, the others read.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				c.Saturated()
			}
		})
	}
	wg.Wait()
	// An idle test process is not saturated once a sample period passed.
	time.Sleep(2 * cpuSampleEvery)
	c.Saturated()
	time.Sleep(2 * cpuSampleEvery)
	if c.Saturated() {
		t.Log("saturated on an idle process: the machine is busy (not a failure)")
	}
}

func TestParseSchedstat(t *testing.T) {
	r, w, ok := parseSchedstat([]byte("123456 7890 12\n"))
	if !ok || r != 123456 || w != 7890 {
		t.Fatalf("parseSchedstat = %d %d %v", r, w, ok)
	}
	for _, bad := range []string{"", "12", "x 1 2", "1 -2 3"} {
		if _, _, ok := parseSchedstat([]byte(bad)); ok {
			t.Errorf("parseSchedstat(%q) accepted", bad)
		}
	}
}

// A process whose threads ran 10 ms and waited 5 ms on the run queue is
// kept from the CPU: other processes are taking it.
func TestThreadWaitsJudge(t *testing.T) {
	if !waitedTooLong(10e6, 5e6) || waitedTooLong(10e6, 1e6) || waitedTooLong(1e6, 1e6) {
		t.Fatal("waitedTooLong disagrees with the documented rule")
	}
	var tw threadWaits
	if _, _, ok := tw.read(); !ok {
		t.Skip("no /proc/self/task/*/schedstat here")
	}
	if tw.contended() {
		t.Error("the first sample judged contention: it has nothing to compare with")
	}
	if !tw.sampled || tw.run == 0 {
		t.Fatalf("after a sample: sampled %v, run %d ns (this process has run)", tw.sampled, tw.run)
	}
}
