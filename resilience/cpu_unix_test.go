//go:build unix

package resilience_test

import (
	"syscall"
	"time"
)

// cpuTime returns the CPU time the process has used (user + system, all
// threads, the garbage collector's included). On a shared machine it is a
// steadier measure of work than the wall clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
