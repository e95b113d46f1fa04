#!/usr/bin/env bash
# What a restart after a big sale costs: place orders for SECS with wrk
# (every request a different buyer), let the server persist them, stop it,
# start it again on the same data and print its peak memory (VmHWM) once it
# answers /healthz, and how long that took. The startup rebuild reads every
# order of the record, so both grow with the orders (the KB per order
# printed include the server's own baseline, ~45 MB).
#
#   scripts/restart-mem.sh                        # this tree, 12 s of placements
#   SPIKE_BIN=/tmp/spike-before SECS=20 scripts/restart-mem.sh
#
# Settings (environment): SPIKE_BIN (a prebuilt binary), SECS (12), BUYERS
# (500000 tokens), PORT (18700). Needs wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECS:-12}
buyers=${BUYERS:-500000}
port=${PORT:-18700}
dir=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
go build -o "$dir/spike-tools" ./cmd/spike
bin=${SPIKE_BIN:-$dir/spike-tools}
export SPIKE_JWT_SECRET=restart-mem-secret-0123456789abcdef0123456
url=http://127.0.0.1:$port
serve() {
  "$bin" serve --data "$dir/data" --addr 127.0.0.1:$port >>"$dir/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do curl -fs $url/healthz >/dev/null && return; sleep 0.05; done
  echo "the server did not answer /healthz; its log ends:" >&2
  tail -20 "$dir/serve.log" >&2
  exit 1
}
stop() { kill -TERM $pid; wait $pid || true; pid=""; }

serve
admin=$("$dir/spike-tools" token --user 1 --admin)
curl -fs -XPOST $url/v1/products -H "Authorization: Bearer $admin" \
  -d '{"sku":"p","name":"P","price_cents":100,"stock":50000000}' >/dev/null
curl -fs -XPOST $url/v1/sales -H "Authorization: Bearer $admin" \
  -d '{"id":"big","sku":"p","stock":50000000,"price_cents":50,"per_user_limit":10}' >/dev/null
"$dir/spike-tools" token --users "2-$((buyers + 1))" --out "$dir/tok"
shuf -o "$dir/tok" "$dir/tok"
cat >"$dir/place.lua" <<'LUA'
local tokens, n = {}, 0
function init(args) for l in io.lines(args[1]) do tokens[#tokens + 1] = "Bearer " .. l end end
function request()
  n = n + 1
  return wrk.format("POST", "/v1/sales/big/orders", {["Authorization"] = tokens[(n - 1) % #tokens + 1],
    ["Idempotency-Key"] = "k" .. n, ["Content-Type"] = "application/json"}, '{"quantity":1}')
end
LUA
wrk -t1 -c64 -d"${secs}s" -s "$dir/place.lua" $url -- "$dir/tok" >"$dir/wrk.out"
pending=""
for _ in $(seq 600); do
  pending=$(curl -fs $url/metrics | awk '$1 == "spike_orders_pending" {print $2}')
  [ "$pending" = 0 ] && break
  sleep 0.2
done
[ "$pending" = 0 ] || echo "warning: $pending orders still pending after 120 s; restarting anyway" >&2
placed=$(curl -fs $url/metrics | awk '/^spike_http_requests_total\{/ && /route="place_order"/ && /status="202"/ {n += $NF} END {printf "%d", n}')
echo "placed $placed orders in ${secs} s; first run's peak: $(awk '/VmHWM/ {printf "%.0f MB", $2 / 1024}' /proc/$pid/status)"
stop
t0=$(date +%s%N)
serve
echo "restart: answered /healthz after $((($(date +%s%N) - t0) / 1000000)) ms;" \
  "peak $(awk '/VmHWM/ {printf "%.0f MB", $2 / 1024}' /proc/$pid/status)" \
  "($(awk -v n="$placed" '/VmHWM/ {printf "%.2f", $2 * 1.024 / n}' /proc/$pid/status) KB per order)"
stop
