// Package benchmarks compares Spike's resilience primitives with
// golang.org/x/time/rate, github.com/sony/gobreaker/v2 and
// github.com/failsafe-go/failsafe-go in one run. It is a separate module so
// the main module does not depend on those libraries.
//
//	cd benchmarks/resilience
//	go test -run '^$' -bench . -benchmem -count 5 | tee bench.txt
//	go run golang.org/x/perf/cmd/benchstat@latest -col /impl bench.txt
package benchmarks
