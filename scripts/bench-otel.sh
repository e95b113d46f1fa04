#!/usr/bin/env bash
# The tracing overhead (issue 14, docs/observability.md), measured so that
# a shared machine's drift hits both sides: two servers of the same binary
# up at once, A with tracing off and B exporting at otel.sample_ratio 0.01
# to a local OTLP/HTTP sink (answers 200 to POST /v1/traces), and short wrk
# placement runs alternating A, B, B, A, ...; prints each pair's req/s and
# the total and geometric-mean ratios B/A.
#
#   scripts/bench-otel.sh                    # 12 pairs of 2 s runs
#   PAIRS=20 SECS=3 RATIO=0.1 scripts/bench-otel.sh
#   SPIKE_BIN=/tmp/spike scripts/bench-otel.sh
#
# Ports: PORT (18750) for A, PORT+10 for B, PORT+5 for the sink.
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${PAIRS:-12} secs=${SECS:-2} ratio=${RATIO:-0.01} port=${PORT:-18750}
pa=$port pb=$((port + 10)) ps=$((port + 5))
d=$(mktemp -d)
if [ -n "${SPIKE_BIN:-}" ]; then cp "$SPIKE_BIN" "$d/spike"; else go build -o "$d/spike" ./cmd/spike; fi
cat >"$d/sink.go" <<GO
package main

import (
	"io"
	"net/http"
)

func main() {
	http.HandleFunc("/v1/traces", func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) })
	http.ListenAndServe("127.0.0.1:$ps", nil)
}
GO
(cd "$d" && go mod init sink >/dev/null 2>&1 && go build -o sink sink.go)
export SPIKE_JWT_SECRET=bench-otel-secret-0123456789abcdef0123456789
"$d/sink" & sink=$!
"$d/spike" serve --data "$d/a" --addr 127.0.0.1:$pa >"$d/a.log" 2>&1 & sa=$!
SPIKE_OTEL_ENDPOINT=http://127.0.0.1:$ps SPIKE_OTEL_SAMPLE_RATIO=$ratio \
  "$d/spike" serve --data "$d/b" --addr 127.0.0.1:$pb >"$d/b.log" 2>&1 & sb=$!
trap 'kill $sa $sb $sink 2>/dev/null; wait 2>/dev/null; rm -rf "$d"' EXIT
for p in $pa $pb; do for _ in $(seq 100); do curl -fs 127.0.0.1:$p/healthz >/dev/null && break; sleep 0.1; done; done
admin=$("$d/spike" token --user 1 --admin)
for p in $pa $pb; do
  h=(-H "Authorization: Bearer $admin")
  curl -fs -XPOST 127.0.0.1:$p/v1/products "${h[@]}" -d '{"sku":"p-big","name":"Big","price_cents":100,"stock":50000000}' >/dev/null
  curl -fs -XPOST 127.0.0.1:$p/v1/sales "${h[@]}" -d '{"id":"big","sku":"p-big","stock":50000000,"price_cents":50,"per_user_limit":1000000}' >/dev/null
  curl -fs -XPUT 127.0.0.1:$p/v1/admin/switches/ratelimit.ip_rps "${h[@]}" -d '{"value":"0"}' >/dev/null
done
cat >"$d/p.lua" <<'LUA'
local tokens, counter, prefix = {}, 0, ""
local headers = {["Content-Type"] = "application/json"}
function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = "Bearer " .. line end
  counter = tonumber(args[2])
  math.randomseed(os.time() * 1000 + counter)
  prefix = "k" .. tostring(math.random(1000000000)) .. "-"
end
function request()
  counter = counter + 1
  headers["Authorization"] = tokens[((counter - 1) % #tokens) + 1]
  headers["Idempotency-Key"] = prefix .. counter
  return wrk.format("POST", "/v1/sales/big/orders", headers, '{"quantity":1}')
end
LUA
"$d/spike" token --users 2-400001 --out "$d/tok"
run() { wrk -t1 -c64 -d"${secs}s" -s "$d/p.lua" "http://127.0.0.1:$1" -- "$d/tok" "$2" | awk '/Requests\/sec/ {print $2}'; }
echo "machine: $(nproc) cores, $(cut -d' ' -f1-3 /proc/loadavg) load; $pairs pairs of ${secs} s runs, B at sample_ratio $ratio"
off=0 out=$d/pairs
for i in $(seq "$pairs"); do
  order="$pa $pb"; [ $((i % 2)) = 0 ] && order="$pb $pa"
  for p in $order; do
    r=$(run "$p" $off); off=$((off + 20000))
    if [ "$p" = "$pa" ]; then a=$r; else b=$r; fi
  done
  echo "pair $i load $(cut -d' ' -f1 /proc/loadavg) off $a on $b" | tee -a "$out"
done
awk '{a += $6; b += $8; s += log($8 / $6); n++} END {printf "on/off: total %.3f, geometric mean of pairs %.3f (%d pairs)\n", b / a, exp(s / n), n}' "$out"
