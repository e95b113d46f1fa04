#!/usr/bin/env bash
# The performance targets of DESIGN.md, measured with wrk (a C load
# generator, so the client costs less CPU than a Go one) beside the server
# on this machine, as ratios to a trivial net/http handler in the same run:
#
#   scripts/bench-wrk.sh            # SECS=8 ROUNDS=2 by default
#   PROFILE=/tmp/cpu.pprof scripts/bench-wrk.sh   # also a CPU profile of round 1's placements
#   SPIKE_BIN=/tmp/spike-before scripts/bench-wrk.sh   # a prebuilt binary (e.g. of another commit)
#   DRAIN_EACH=1 scripts/bench-wrk.sh   # also drain the persistence backlog before sold-out and reads
#
# Scenarios: placements (202, durably enqueued), sold-out rejections,
# cached product reads; each round runs the trivial handler first.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECS:-8}
rounds=${ROUNDS:-2}
conns=${CONNS:-64}
dir=$(mktemp -d)
if [ -n "${SPIKE_BIN:-}" ]; then
  cp "$SPIKE_BIN" "$dir/spike"
else
  go build -o "$dir/spike" ./cmd/spike
fi
cat >"$dir/trivial.go" <<'GO'
package main

import "net/http"

func main() {
	body := []byte(`{"order_id":"06H2HVJ3P87HFS8766S26U3DH0","sale_id":"bench","quantity":1,"status":"pending"}` + "\n")
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		w.Write(body)
	})
	http.ListenAndServe("127.0.0.1:18501", nil)
}
GO
(cd "$dir" && go mod init trivial >/dev/null 2>&1 && go build -o trivial trivial.go)
export SPIKE_JWT_SECRET=bench-wrk-secret-0123456789abcdef01234567
pprof=()
if [ -n "${PROFILE:-}" ]; then pprof=(--pprof 127.0.0.1:18502); fi
"$dir/spike" serve --data "$dir/data" --addr 127.0.0.1:18500 "${pprof[@]}" >"$dir/serve.log" 2>&1 &
spid=$!
"$dir/trivial" &
tpid=$!
trap 'kill $spid $tpid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -fs 127.0.0.1:18500/healthz >/dev/null && break; sleep 0.1; done
url=http://127.0.0.1:18500
admin=$("$dir/spike" token --user 1 --admin)
post() { curl -fs -XPOST "$url$1" -H "Authorization: Bearer $admin" -d "$2" >/dev/null; }
post /v1/products '{"sku":"p-big","name":"Big","price_cents":100,"stock":50000000}'
post /v1/sales '{"id":"big","sku":"p-big","stock":50000000,"price_cents":50,"per_user_limit":1000000}'
post /v1/products '{"sku":"p-tiny","name":"Tiny","price_cents":100,"stock":1}'
post /v1/sales '{"id":"tiny","sku":"p-tiny","stock":1,"price_cents":50,"per_user_limit":1}'
for i in $(seq 0 99); do post /v1/products "{\"sku\":\"r-$i\",\"name\":\"Read $i\",\"price_cents\":100,\"stock\":10}"; done
# An operator's setting for a benchmark: 200 buyers send thousands of requests per second each.
curl -fs -XPUT $url/v1/admin/switches/ratelimit.user_rps -H "Authorization: Bearer $admin" -d '{"value":0}' >/dev/null
# And the reads all come from one address (wrk's): lift the per-IP limit.
curl -fs -XPUT $url/v1/admin/switches/ratelimit.ip_rps -H "Authorization: Bearer $admin" -d '{"value":0}' >/dev/null
lua() { # $1 = sale id or "reads"
  echo "local tokens = {"
  for u in $(seq 2 201); do echo "\"$("$dir/spike" token --user "$u")\","; done
  echo "}"
  cat <<LUA
local counter, tid, threads = 0, 0, 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
-- A fresh prefix per run and thread: a key reused from an earlier round
-- would be a replay (cheap, nothing placed) and inflate the figure.
function init(args)
  math.randomseed(os.time() + (tonumber(wrk.thread:get("tid")) or 0))
  tid = tostring(math.random(1000000000)) .. "-" .. (wrk.thread:get("tid") or "0")
end
request = function()
  counter = counter + 1
  if "$1" == "reads" then
    return wrk.format("GET", "/v1/products/r-" .. (counter % 100))
  end
  return wrk.format("POST", "/v1/sales/$1/orders", {["Authorization"]="Bearer "..tokens[(counter % #tokens) + 1],
    ["Idempotency-Key"]="k"..tid.."-"..counter, ["Content-Type"]="application/json"}, '{"quantity":1}')
end
LUA
}
lua big >"$dir/big.lua"; lua tiny >"$dir/tiny.lua"; lua reads >"$dir/reads.lua"
run() { wrk -t2 -c"$conns" -d"${secs}s" -s "$2" "$1" | awk '/Requests\/sec/ {print $2}'; }
echo "machine: $(nproc) cores, $(uptime | sed 's/.*load average/load average/')"
printf "%-6s %10s %12s %10s %10s %8s %8s %8s\n" round trivial placements sold_out reads p_ratio s_ratio r_ratio
# Before each round, let the server finish persisting the previous round's
# placements: its workers would otherwise take CPU from the trivial
# handler's run and flatter every ratio of the round.
drain() {
  for _ in $(seq 600); do
    [ "$(curl -fs $url/metrics | awk '/^spike_orders_pending/ {print $2}')" = 0 ] && break
    sleep 0.1
  done
  sleep 1
}
for r in $(seq "$rounds"); do
  drain
  t=$(run http://127.0.0.1:18501 "$dir/big.lua")
  if [ -n "${PROFILE:-}" ] && [ "$r" = 1 ]; then
    # CPU profile of the placement run (PROFILE=file): go tool pprof "$PROFILE"
    (sleep 1; curl -fs -o "$PROFILE" "http://127.0.0.1:18502/debug/pprof/profile?seconds=$((secs - 2))") &
  fi
  p=$(run $url "$dir/big.lua")
  if [ -n "${DRAIN_EACH:-}" ]; then drain; fi
  s=$(run $url "$dir/tiny.lua")
  if [ -n "${DRAIN_EACH:-}" ]; then drain; fi
  rd=$(run $url "$dir/reads.lua")
  printf "%-6s %10.0f %12.0f %10.0f %10.0f %8.2f %8.2f %8.2f\n" "$r" "$t" "$p" "$s" "$rd" \
    "$(echo "$p/$t" | bc -l)" "$(echo "$s/$t" | bc -l)" "$(echo "$rd/$t" | bc -l)"
done
sleep 2
echo "stream backlog after the runs: $(curl -fs $url/metrics | awk '/^spike_orders_pending/ {print $2}') pending orders"
"$dir/spike" audit --addr 127.0.0.1:18500 | tail -1
echo "server peak memory: $(grep VmHWM /proc/$spid/status)"
