#!/usr/bin/env bash
# Overload experiments of issue 5, reproducible with one command each:
#
#   scripts/overload.sh cpu   # placements offered at 3x the measured peak
#   scripts/overload.sh dep   # a slowed dependency: 3x its reduced capacity
#   SPIKE_BIN=/tmp/spike-before scripts/overload.sh dep   # a prebuilt binary
#
# The server runs on core 0 and the load generator on core 1 (taskset), on
# loopback only, for a bounded time. Prints every figure the targets are
# computed from, the outcomes, the server's peak memory and the invariant
# audit.
#
# cpu: the peak is the closed-loop goodput with 64 workers; then 3x peak is
# offered open loop (in flight bounded by INFLIGHT, default 1024).
#
# dep: the server's fault hook puts a slowed dependency in front of the
# order stream that serves SLOTS publishes at a time (default 8), each
# taking DELAY (default 8ms): capacity SLOTS/DELAY (1000/s), far below what
# one core places (~7000/s), so the run is bound by the dependency, not the
# CPU. Phases:
#   1. unloaded p99: on the fresh server, open loop at LIGHT (default 0.25)
#      x the nominal capacity, p99 of the admitted (202) placements;
#   2. reduced capacity: closed loop with CAP_WORKERS (default 32) workers,
#      4x what the dependency serves at once; the reduced capacity is the
#      larger of that goodput and the nominal SLOTS/DELAY (so a limiter that
#      wastes capacity cannot flatter its own ratio);
#   3. overload: open loop at 3x reduced capacity; goodput / reduced
#      capacity (target >= 0.9) and p99 of admitted / unloaded p99 (<= 5).
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-cpu}
secs=${SECS:-15}
bin=$(mktemp -d)/spike
# SPIKE_BIN: a prebuilt binary (e.g. of another commit) instead of this tree.
if [ -n "${SPIKE_BIN:-}" ]; then cp "$SPIKE_BIN" "$bin"; else go build -o "$bin" ./cmd/spike; fi
dir=$(mktemp -d)
port=${PORT:-18300}
export SPIKE_JWT_SECRET=overload-experiment-secret-0123456789abcdef
case "$kind" in
cpu) ;;
dep)
  delay=${DELAY:-8ms}
  slots=${SLOTS:-8}
  export SPIKE_FAULT_STREAM_DELAY=$delay SPIKE_FAULT_STREAM_SLOTS=$slots
  ;;
*) echo "usage: $0 cpu|dep" >&2; exit 2 ;;
esac
taskset -c 0 "$bin" serve --data "$dir/data" --addr 127.0.0.1:$port >"$dir/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir" "$(dirname "$bin")"' EXIT
for _ in $(seq 100); do curl -fs 127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done

echo "== $kind: load average before: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared: other load skews every figure)"
bench() { taskset -c 1 "$bin" bench --target http://127.0.0.1:$port --scenario orders --buyers 20000 --json "$@"; }
# Runs that overload the server on purpose expect shedding (503, dropped
# requests): they turn off spike bench's check that a run delivered its load.
shed=(--max-error-rate 1)
sum() { python3 scripts/benchsum.py "$@"; }
calc() { python3 -c "print($*)"; }
placehist() { # le and cumulative count of the placement route's server-side latency
  curl -fs 127.0.0.1:$port/metrics | grep '^spike_http_request_duration_seconds_bucket' | grep 'route="place_order"' |
    sed 's/.*le="\([^"]*\)".* \([^ ]*\)$/\1 \2/; s/^+Inf /inf /'
}
guards() {
  curl -fs 127.0.0.1:$port/metrics | grep -E '^spike_(dependency|admission|guard_rejections)' | tr '\n' ' ' || true
  echo
}

if [ "$kind" = cpu ]; then
  echo "== cpu: measuring the peak (closed loop, 64 workers, ${secs}s)"
  bench --concurrency 64 --duration ${secs}s >"$dir/peak.json"
  sum show "$dir/peak.json" peak
  peak=$(sum rate "$dir/peak.json")
  p99=$(sum p99 "$dir/peak.json")
  rate=$(calc "int(3*$peak)")
  echo "== cpu: offering 3x peak = $rate/s open loop for ${secs}s"
  bench --rate "$rate" --concurrency ${INFLIGHT:-1024} --duration ${secs}s "${shed[@]}" >"$dir/over.json" || true
  sum show "$dir/over.json" 3xpeak
  good=$(sum rate "$dir/over.json")
  over99=$(sum p99admitted "$dir/over.json")
  calc "'goodput/peak = %.2f   (target >= 0.5)' % ($good/$peak)"
  calc "'p99 of admitted under overload / p99 at peak = %.1f ms / %.1f ms = %.2f' % ($over99, $p99, $over99/$p99)"
else
  nominal=$(sum nominal "$slots" "$delay")
  workers=${CAP_WORKERS:-32}
  echo "== dep: a dependency serving $slots publishes at a time, $delay each: nominal capacity $nominal/s"
  light=$(calc "int(${LIGHT:-0.25}*$nominal)")
  echo "== dep: unloaded p99: $light/s open loop (${LIGHT:-0.25} x nominal capacity) for ${secs}s, on the fresh server"
  bench --rate "$light" --concurrency ${INFLIGHT:-1024} --duration ${secs}s >"$dir/light.json" || true
  sum show "$dir/light.json" light
  p99=$(sum p99admitted "$dir/light.json")
  sleep 3
  echo "== dep: measuring the reduced capacity (closed loop, $workers workers, ${secs}s)"
  bench --concurrency $workers --duration ${secs}s "${shed[@]}" >"$dir/cap.json"
  sum show "$dir/cap.json" capacity
  measured=$(sum rate "$dir/cap.json")
  cap=$(calc "max($measured, $nominal)")
  calc "'reduced capacity = max(measured %.0f/s, nominal %.0f/s) = %.0f/s' % ($measured, $nominal, $cap)"
  rate=$(calc "int(3*$cap)")
  sleep 3
  echo "== dep: offering 3x reduced capacity = $rate/s open loop for ${secs}s"
  placehist >"$dir/hist0"
  bench --rate "$rate" --concurrency ${INFLIGHT:-1024} --duration ${secs}s "${shed[@]}" >"$dir/over.json" || true
  placehist >"$dir/hist1"
  # Time spent inside the server (handler, every outcome) against the
  # client's view: a tail the server did not see was spent in the kernel,
  # the scheduler or the generator.
  python3 - "$dir/hist0" "$dir/hist1" <<'PY'
import sys
def load(f):
    return {float(l.split()[0]): float(l.split()[1]) for l in open(f) if l.strip()}
a, b = load(sys.argv[1]), load(sys.argv[2])
n = b[float('inf')] - a.get(float('inf'), 0)
if n:
    parts = []
    for le in (0.01, 0.025, 0.05, 0.1, 0.25):
        slower = n - (b.get(le, 0) - a.get(le, 0))
        parts.append('> %g ms: %.2f%%' % (le * 1000, 100 * slower / n))
    print('inside the server, placements of the overload phase (all outcomes): ' + ', '.join(parts))
PY
  sum show "$dir/over.json" 3xcap
  good=$(sum rate "$dir/over.json")
  over99=$(sum p99admitted "$dir/over.json")
  calc "'goodput / reduced capacity = %.0f / %.0f = %.2f   (target >= 0.9)' % ($good, $cap, $good/$cap)"
  calc "'p99 admitted under overload / unloaded p99 = %.1f ms / %.1f ms = %.2f   (target <= 5)' % ($over99, $p99, $over99/$p99)"
fi
echo "guards after the run: $(guards)"
echo "answers other than 202/429/503: $(sum bad "$dir/over.json")"
echo "server peak memory: $(grep VmHWM /proc/$pid/status)"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
sleep 2
"$bin" audit --addr 127.0.0.1:$port
