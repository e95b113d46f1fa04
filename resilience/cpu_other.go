//go:build !linux

package resilience

// threadWaits is Linux's: elsewhere the operating system's run queues are
// not read, and only the Go scheduler's latencies judge.
type threadWaits struct{}

func (*threadWaits) contended() bool { return false }
