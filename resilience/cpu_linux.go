//go:build linux

package resilience

import (
	"bytes"
	"os"
	"strconv"
)

// threadWaits samples the run-queue wait of this process's threads, as
// the kernel counts it (/proc/self/task/<tid>/schedstat: time on the CPU,
// time runnable but waiting for one, in nanoseconds).
type threadWaits struct {
	run, wait uint64
	sampled   bool
	buf       []byte
}

// osContendedShare is the share of running time that, spent waiting on a
// run queue, makes the CPU count as taken: a fifth.
const osContendedShare = 5

// contended reports whether the threads waited more than a fifth of their
// running time since the last sample. A thread that exited since makes the
// sums shrink: that sample judges nothing.
func (t *threadWaits) contended() bool {
	run, wait, ok := t.read()
	if !ok {
		return false
	}
	prevRun, prevWait, sampled := t.run, t.wait, t.sampled
	t.run, t.wait, t.sampled = run, wait, true
	if !sampled || run < prevRun || wait < prevWait {
		return false
	}
	return waitedTooLong(run-prevRun, wait-prevWait)
}

// waitedTooLong judges a period in which the threads ran dr and waited dw
// nanoseconds. Only a process that is doing something can be kept from it:
// under 5 ms of CPU per period, nothing is judged.
func waitedTooLong(dr, dw uint64) bool {
	return dr >= 5e6 && dw*osContendedShare > dr
}

// read sums the run and wait times of every thread of the process.
func (t *threadWaits) read() (run, wait uint64, ok bool) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0, 0, false
	}
	for _, task := range tasks {
		f, err := os.Open("/proc/self/task/" + task.Name() + "/schedstat")
		if err != nil {
			continue // the thread exited
		}
		if t.buf == nil {
			t.buf = make([]byte, 128)
		}
		n, _ := f.Read(t.buf)
		f.Close()
		r, w, good := parseSchedstat(t.buf[:n])
		if !good {
			return 0, 0, false
		}
		run, wait = run+r, wait+w
	}
	return run, wait, len(tasks) > 0
}

// parseSchedstat reads the first two fields of a schedstat line.
func parseSchedstat(b []byte) (run, wait uint64, ok bool) {
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0, 0, false
	}
	r, err1 := strconv.ParseUint(string(f[0]), 10, 64)
	w, err2 := strconv.ParseUint(string(f[1]), 10, 64)
	return r, w, err1 == nil && err2 == nil
}
