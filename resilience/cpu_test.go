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
