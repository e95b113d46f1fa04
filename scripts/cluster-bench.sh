#!/usr/bin/env bash
# Placement throughput through HAProxy with N clustered instances (issue 3):
#
#   scripts/cluster-bench.sh 1 && scripts/cluster-bench.sh 3
#
# Uses the machine's MariaDB (a fresh database), Redis and NATS on their
# default loopback ports, starts N `spike serve` and HAProxy, drives
# placements with wrk for SECS seconds, and prints the rate, Redis round
# trips and the audit. Needs wrk and haproxy (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1}
secs=${SECS:-10}
dir=$(mktemp -d)
db=spike_bench_$RANDOM
go build -o "$dir/spike" ./cmd/spike
export SPIKE_JWT_SECRET=cluster-bench-secret-0123456789abcdef0123
export SPIKE_EVENTS_HMAC_KEY=cluster-bench-event-key-0123456789abcdef
mariadb -uroot -e "CREATE DATABASE $db"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; mariadb -uroot -e "DROP DATABASE IF EXISTS $db"; rm -rf "$dir"; }
trap cleanup EXIT
cat >"$dir/spike.yaml" <<YAML
nats:
  urls: [nats://127.0.0.1:4222]
mysql:
  primary: "root@tcp(127.0.0.1:3306)/$db"
  migrate: true
redis:
  addrs: [127.0.0.1:6379]
YAML
servers=""
for i in $(seq "$n"); do
  port=$((18400 + i))
  "$dir/spike" serve --config "$dir/spike.yaml" --addr 127.0.0.1:$port --data "$dir/d$i" >"$dir/s$i.log" 2>&1 &
  pids+=($!)
  servers+="    server s$i 127.0.0.1:$port check inter 500ms"$'\n'
  for _ in $(seq 100); do curl -fs 127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
done
cat >"$dir/haproxy.cfg" <<CFG
global
    maxconn 4096
    nbthread 1
defaults
    mode http
    option http-keep-alive
    timeout connect 2s
    timeout client 30s
    timeout server 15s
    retry-on conn-failure
    retries 2
frontend api
    bind 127.0.0.1:18400
    default_backend spike
backend spike
    balance roundrobin
    option httpchk GET /healthz
$servers
CFG
haproxy -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -fs 127.0.0.1:18400/healthz >/dev/null && break; sleep 0.2; done
url=http://127.0.0.1:18400
admin=$("$dir/spike" token --user 1 --admin)
sale=bench$RANDOM
curl -fs -XPOST $url/v1/products -H "Authorization: Bearer $admin" -d "{\"sku\":\"p-$sale\",\"name\":\"x\",\"price_cents\":100,\"stock\":50000000}" >/dev/null
curl -fs -XPOST $url/v1/sales -H "Authorization: Bearer $admin" -d "{\"id\":\"$sale\",\"sku\":\"p-$sale\",\"stock\":50000000,\"price_cents\":50,\"per_user_limit\":1000000}" >/dev/null
curl -fs -XPUT $url/v1/admin/switches/ratelimit.user_rps -H "Authorization: Bearer $admin" -d '{"value":0}' >/dev/null
{
  echo "local tokens = {"
  for u in $(seq 2 201); do echo "\"$("$dir/spike" token --user "$u")\","; done
  echo "}"
  cat <<LUA
local counter, tid, threads = 0, 0, 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function init(args) tid = tonumber(wrk.thread:get("tid")) or 0 end
request = function()
  counter = counter + 1
  return wrk.format("POST", "/v1/sales/$sale/orders", {["Authorization"]="Bearer "..tokens[(counter % #tokens) + 1],
    ["Idempotency-Key"]="k"..tid.."-"..counter, ["Content-Type"]="application/json"}, '{"quantity":1}')
end
LUA
} >"$dir/place.lua"
# Scripts run per placement = Redis round trips of the placement path
# (commandstats also counts the commands scripts run inside, so count EVALSHA).
trips0=$(redis-cli info commandstats | awk -F'[=,]' '/cmdstat_evalsha:/ {s+=$2} END {print s+0}')
echo "== $n instance(s) behind HAProxy: placements for ${secs}s"
wrk -t2 -c128 -d${secs}s -s "$dir/place.lua" $url | grep -E "Requests/sec|Latency|Non-2xx"
trips1=$(redis-cli info commandstats | awk -F'[=,]' '/cmdstat_evalsha:/ {s+=$2} END {print s+0}')
sold=$(curl -fs $url/v1/sales/$sale | python3 -c 'import json,sys; print(json.load(sys.stdin)["sold"])')
echo "orders placed: $sold; Redis scripts: $((trips1 - trips0)) ($(python3 -c "print(round(($trips1-$trips0)/max($sold,1),2))") per placement)"
sleep 3
"$dir/spike" audit --addr 127.0.0.1:18401 | tail -2
