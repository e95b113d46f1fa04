#!/usr/bin/env bash
# Issue 12, step 3: how far persistence falls behind during a burst of
# placements and how long it takes to catch up, with the order workers
# giving way to the burst (limits.persist_yield, default 4s) and without
# (persist_yield 0), in one run:
#
#   scripts/burst-drain.sh              # BURST=10 s of placements, 64 connections, distinct buyers
#
# For each setting: a fresh server, a BURST-second wrk run where every
# request comes from a different buyer (BUYERS tokens), the backlog
# (spike_orders_pending) sampled every 0.5 s, then the time from the end of
# the burst until the backlog is empty, and `spike audit` (I1-I5).
set -euo pipefail
cd "$(dirname "$0")/.."
burst=${BURST:-10}
conns=${CONNS:-64}
buyers=${BUYERS:-400000}
port=${PORT:-18520}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
if [ -n "${SPIKE_BIN:-}" ]; then cp "$SPIKE_BIN" "$dir/spike"; else go build -o "$dir/spike" ./cmd/spike; fi
export SPIKE_JWT_SECRET=burst-drain-secret-0123456789abcdef012345
"$dir/spike" token --users "2-$((buyers + 1))" --out "$dir/buyers.tok"
# In random order, as a sale's buyers arrive (ORDERED=1: by user id).
if [ -z "${ORDERED:-}" ]; then shuf -o "$dir/buyers.tok" "$dir/buyers.tok"; fi
cat >"$dir/burst.lua" <<'LUA'
local tokens, counter, prefix = {}, 0, ""
local headers = {["Content-Type"] = "application/json"}
function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = "Bearer " .. line end
  math.randomseed(os.time())
  prefix = "b" .. tostring(math.random(1000000000)) .. "-"
end
function request()
  counter = counter + 1
  headers["Authorization"] = tokens[((counter - 1) % #tokens) + 1]
  headers["Idempotency-Key"] = prefix .. counter
  return wrk.format("POST", "/v1/sales/big/orders", headers, '{"quantity":1}')
end
LUA
url=http://127.0.0.1:$port
metric() { curl -fs $url/metrics | awk -v m="$1" '$1 == m {print $2}'; }
echo "machine: $(nproc) cores, $(uptime | sed 's/.*load average/load average/')"
printf "%-14s %12s %10s %14s %12s %10s  %s\n" persist_yield placements/s answered peak_backlog held_s drain_s audit
for yield in 4s 0s; do
  rm -rf "$dir/data"
  SPIKE_LIMITS_PERSIST_YIELD=$yield "$dir/spike" serve --data "$dir/data" --addr 127.0.0.1:$port >"$dir/serve-$yield.log" 2>&1 &
  spid=$!
  for _ in $(seq 100); do curl -fs $url/healthz >/dev/null && break; sleep 0.1; done
  admin=$("$dir/spike" token --user 1 --admin)
  curl -fs -XPOST $url/v1/products -H "Authorization: Bearer $admin" -d '{"sku":"p-big","name":"Big","price_cents":100,"stock":50000000}' >/dev/null
  curl -fs -XPOST $url/v1/sales -H "Authorization: Bearer $admin" -d '{"id":"big","sku":"p-big","stock":50000000,"price_cents":50,"per_user_limit":1000000}' >/dev/null
  peak=0
  (while sleep 0.5; do metric spike_orders_pending; done) >"$dir/samples" &
  sampler=$!
  out=$(wrk -t1 -c"$conns" -d"${burst}s" -s "$dir/burst.lua" $url -- "$dir/buyers.tok")
  t0=$(date +%s.%N)
  while [ "$(metric spike_orders_pending)" != 0 ]; do sleep 0.1; done
  t1=$(date +%s.%N)
  kill $sampler 2>/dev/null || true
  peak=$(sort -n "$dir/samples" | tail -1)
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  answered=$(awk '/requests in/ {print $1}' <<<"$out")
  held=$(metric spike_order_persist_held_seconds_total)
  audit=$("$dir/spike" audit --addr 127.0.0.1:$port | tail -1)
  printf "%-14s %12.0f %10s %14s %12.1f %10.1f  %s\n" "$yield" "$rps" "$answered" "${peak:-0}" "${held:-0}" "$(echo "$t1 - $t0" | bc -l)" "$audit"
  kill $spid; wait $spid 2>/dev/null || true
done
