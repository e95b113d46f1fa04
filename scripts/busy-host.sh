#!/usr/bin/env bash
# Issue 12, "a healthy sale on a busy host is never shed": distinct-buyer
# placements on a sale far from overloaded while three busy loops of an
# unrelated process take the cores; prints placements/s per round and how
# many placements were refused (503) and why.
#
#   scripts/busy-host.sh                      # this tree
#   SPIKE_BIN=/tmp/spike-before scripts/busy-host.sh
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-18630}
dir=$(mktemp -d)
go build -o "$dir/spike-tools" ./cmd/spike
if [ -n "${SPIKE_BIN:-}" ]; then cp "$SPIKE_BIN" "$dir/spike"; else cp "$dir/spike-tools" "$dir/spike"; fi
export SPIKE_JWT_SECRET=busy-host-secret-0123456789abcdef0123456
"$dir/spike-tools" token --users 2-120001 --out "$dir/buyers.tok"
# In random order, as a sale's buyers arrive (ORDERED=1: by user id).
if [ -z "${ORDERED:-}" ]; then shuf -o "$dir/buyers.tok" "$dir/buyers.tok"; fi
cat >"$dir/place.lua" <<'LUA'
local tokens, counter, prefix = {}, 0, ""
local headers = {["Content-Type"] = "application/json"}
function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = "Bearer " .. line end
  counter = tonumber(args[2])
  math.randomseed(os.time())
  prefix = "h" .. tostring(math.random(1000000000)) .. "-"
end
function request()
  counter = counter + 1
  headers["Authorization"] = tokens[(counter % #tokens) + 1]
  headers["Idempotency-Key"] = prefix .. counter
  return wrk.format("POST", "/v1/sales/big/orders", headers, '{"quantity":1}')
end
LUA
"$dir/spike" serve --data "$dir/data" --addr 127.0.0.1:$port >"$dir/serve.log" 2>&1 &
spid=$!
hogs=()
trap 'kill $spid ${hogs[@]} 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
url=http://127.0.0.1:$port
for _ in $(seq 100); do curl -fs $url/healthz >/dev/null && break; sleep 0.1; done
admin=$("$dir/spike" token --user 1 --admin)
curl -fs -XPOST $url/v1/products -H "Authorization: Bearer $admin" -d '{"sku":"p-big","name":"Big","price_cents":100,"stock":50000000}' >/dev/null
curl -fs -XPOST $url/v1/sales -H "Authorization: Bearer $admin" -d '{"id":"big","sku":"p-big","stock":50000000,"price_cents":50,"per_user_limit":1000000}' >/dev/null
for _ in 1 2 3; do (while :; do :; done) & hogs+=($!); done
sleep 1
for r in 1 2 3; do
  wrk -t1 -c64 -d4s -s "$dir/place.lua" $url -- "$dir/buyers.tok" $((r * 30000)) | awk -v r=$r '/Requests\/sec/ {print "round " r ": " $2 " placements/s"}'
done
kill "${hogs[@]}"
curl -fs $url/metrics | grep -E '^spike_http_requests_total\{route="place_order",status="(202|429|503)"\}|^spike_dependency_(cpu_ignored|shed)_total\{dependency="order_stream"\}'
# Why anything was refused: the server's warnings and errors, if any,
# counted by message and cause ("enqueue in doubt ... context canceled":
# wrk closed a connection at the end of a round with a placement in
# flight, and the server counted a 503 that nobody received), then the
# last few in full.
grep -E '"level":"(WARN|ERROR)"|level=(WARN|ERROR)' "$dir/serve.log" |
  sed -E 's/.*msg="([^"]*)".*err="([^"]*)".*/\1: \2/; t; s/.*msg="([^"]*)".*/\1/' |
  sed -E 's/^([^:]*): .*: ([^:]*)$/\1: ... \2/' | sort | uniq -c | sort -rn | head -10 || true
grep -E '"level":"(WARN|ERROR)"|level=(WARN|ERROR)' "$dir/serve.log" | tail -3 | cut -c1-300 || true
