#!/usr/bin/env bash
# Overload experiments of issue 5, reproducible with one command each:
#
#   scripts/overload.sh cpu   # placements offered at 3x the measured peak
#   scripts/overload.sh dep   # the stream slowed down, 3x its reduced capacity
#
# The server runs on core 0 and the load generator on core 1 (taskset), on
# loopback only, for a bounded time. Prints peak, goodput, outcomes, p99 of
# admitted requests, the server's peak memory and the invariant audit.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-cpu}
secs=${SECS:-15}
bin=$(mktemp -d)/spike
go build -o "$bin" ./cmd/spike
dir=$(mktemp -d)
port=${PORT:-18300}
export SPIKE_JWT_SECRET=overload-experiment-secret-0123456789abcdef
extra=()
if [ "$kind" = dep ]; then
  # A fault hook of the server: every stream publish waits this long first.
  export SPIKE_FAULT_STREAM_DELAY=${DELAY:-20ms}
fi
taskset -c 0 "$bin" serve --data "$dir/data" --addr 127.0.0.1:$port >"$dir/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir" "$(dirname "$bin")"' EXIT
for _ in $(seq 100); do curl -fs 127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done

bench() { taskset -c 1 "$bin" bench --target http://127.0.0.1:$port --scenario orders --buyers 20000 --json "$@"; }
sum() { python3 scripts/benchsum.py "$@"; }

echo "== $kind: measuring the peak (closed loop, 64 workers, ${secs}s)"
bench --concurrency 64 --duration ${secs}s >"$dir/peak.json"
sum show "$dir/peak.json" peak
peak=$(sum rate "$dir/peak.json")
p99=$(sum p99 "$dir/peak.json")
rate=$(python3 -c "print(int(3*$peak))")
echo "== $kind: offering 3x peak = $rate/s open loop for ${secs}s"
bench --rate "$rate" --concurrency ${INFLIGHT:-1024} --duration ${secs}s >"$dir/over.json" || true
sum show "$dir/over.json" 3xpeak
good=$(sum rate "$dir/over.json")
python3 -c "print('goodput/peak = %.2f' % ($good/$peak))"
over99=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["run"]; print(next((o["latency"]["p99_ms"] for o in r["outcomes"] if o["name"]=="accepted"), 0))' "$dir/over.json")
python3 -c "print('p99 of admitted under overload / unloaded p99 = %.2f' % ($over99/$p99))"
echo "answers other than 202/429/503: $(sum bad "$dir/over.json")"
echo "server peak memory: $(grep VmHWM /proc/$pid/status)"
sleep 2
"$bin" audit --addr 127.0.0.1:$port
