// Package loadgen is the load generator behind `spike bench`: it drives a
// Spike server through its HTTP API (docs: API.md) and reports throughput,
// latency percentiles and outcomes by API error code.
//
// A run is described by a [Plan]. With Plan.Rate > 0 it is open loop:
// operation i is due at start + i/Rate whatever happened before, latency is
// measured from that intended time (so a stalled server shows up in every
// request that was due during the stall: no coordinated omission), and a
// request due while Plan.Concurrency requests are in flight is not sent but
// counted as "client_overload". With Rate == 0 it is closed loop:
// Concurrency workers each send the next request when the previous one is
// answered, which measures capacity but hides stalls.
//
// [Bench] runs a whole scenario (flash-sale, orders, reads, mixed,
// sale-page): setup through the admin API, an optional baseline run against
// an in-process trivial net/http handler with the same load shape, the
// timed run, and the scenario's checks (for a flash sale: no oversell,
// per-user limits, idempotent replays, accepted orders readable, and
// GET /v1/admin/audit). Every run also has load checks: it fails when
// more than [Config].MaxErrorRate (1 %) of its intended requests got no
// answer, were never sent, or were answered 5xx, since such a run measured
// a failure rather than the server.
//
//	rep, err := loadgen.Bench(ctx, loadgen.Config{
//		Scenario: loadgen.ScenarioFlashSale,
//		Target:   "http://127.0.0.1:8080",
//		Secret:   secret,
//		Buyers:   100000, Stock: 1000, Rate: 20000, Baseline: true,
//	})
//	if err != nil { ... }
//	rep.WriteText(os.Stdout)
//
// Package loadgentest holds an in-memory fake of the API for tests.
package loadgen
