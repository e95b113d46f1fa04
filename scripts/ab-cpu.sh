#!/usr/bin/env bash
# Two (or more) spike binaries compared by what a run of distinct-buyer
# placements and sold-out answers costs the server, on fresh servers taken
# in turn, so that the machine's drift (other load, a hypervisor's steal)
# falls on every binary alike:
#
#   scripts/ab-cpu.sh /tmp/spike-before /tmp/spike-after    # 8 pairs
#   PAIRS=12 scripts/ab-cpu.sh A B C
#
# Each trial starts the binary on an empty data folder, creates a large
# sale and a sold-out one, then runs wrk -t1 -c64 for SECS (3) of
# placements and SECS of sold-out answers, every request from a different
# buyer of BUYERS (150000) in random order, and reads the server's CPU
# (utime + stime) per request, its requests/s and its placements per stream
# message. Ends with the median of each column per binary. CPU per request
# moves less with the machine's other load than requests/s does; with
# PAIRS of 8-12 a difference of 4-5 % stands out of this machine's noise.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/ab-cpu.sh BINARY..." >&2; exit 2; }
pairs=${PAIRS:-8}
secs=${SECS:-3}
buyers=${BUYERS:-150000}
port=${PORT:-18600}
dir=$(mktemp -d)
spid=""
trap '[ -n "$spid" ] && kill $spid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
go build -o "$dir/spike-tools" ./cmd/spike
export SPIKE_JWT_SECRET=ab-cpu-secret-0123456789abcdef0123456789
"$dir/spike-tools" token --users "2-$((buyers + 1))" --out "$dir/place.tok"
"$dir/spike-tools" token --users "$((buyers + 2))-$((2 * buyers + 1))" --out "$dir/soldout.tok"
shuf -o "$dir/place.tok" "$dir/place.tok"
shuf -o "$dir/soldout.tok" "$dir/soldout.tok"
admin=$("$dir/spike-tools" token --user 1 --admin)
cat >"$dir/run.lua" <<'LUA'
local tokens, counter, prefix, path = {}, 0, "", ""
local headers = {["Content-Type"] = "application/json"}
function init(args)
  path = "/v1/sales/" .. args[1] .. "/orders"
  for line in io.lines(args[2]) do tokens[#tokens + 1] = "Bearer " .. line end
  math.randomseed(os.time()); prefix = "k" .. tostring(math.random(1000000000)) .. "-"
end
function request()
  counter = counter + 1
  headers["Authorization"] = tokens[((counter - 1) % #tokens) + 1]
  headers["Idempotency-Key"] = prefix .. counter
  return wrk.format("POST", path, headers, '{"quantity":1}')
end
LUA
url=http://127.0.0.1:$port
hz=$(getconf CLK_TCK)
# short BINARY: its name in the table (the last 16 characters of its path).
short() { local b=$1; if [ ${#b} -gt 16 ]; then echo "${b: -16}"; else echo "$b"; fi; }
cputicks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
post() { curl -fs -XPOST "$url$1" -H "Authorization: Bearer $admin" -d "$2" >/dev/null; }
# wrkrun SALE TOKENS: requests/s of one run.
wrkrun() { wrk -t1 -c64 -d"${secs}s" -s "$dir/run.lua" "$url" -- "$1" "$2" | awk '/^Requests\/sec/ {print $2}'; }
results=$dir/results
: >"$results"
printf "%-16s %6s %10s %8s %10s %8s\n" binary batch "place/s" "µs/place" "sold-out/s" "µs/409"
for _ in $(seq "$pairs"); do
  for bin in "$@"; do
    rm -rf "$dir/data"
    "$bin" serve --data "$dir/data" --addr 127.0.0.1:$port >"$dir/serve.log" 2>&1 &
    spid=$!
    for _ in $(seq 100); do curl -fs $url/healthz >/dev/null && break; sleep 0.1; done
    post /v1/products '{"sku":"p-big","name":"Big","price_cents":100,"stock":50000000}'
    post /v1/sales '{"id":"big","sku":"p-big","stock":50000000,"price_cents":50,"per_user_limit":1000000}'
    post /v1/products '{"sku":"p-tiny","name":"Tiny","price_cents":100,"stock":1}'
    post /v1/sales '{"id":"tiny","sku":"p-tiny","stock":1,"price_cents":50,"per_user_limit":1}'
    sleep 1
    c0=$(cputicks $spid)
    p=$(wrkrun big "$dir/place.tok")
    c1=$(cputicks $spid)
    s=$(wrkrun tiny "$dir/soldout.tok")
    c2=$(cputicks $spid)
    batch=$(curl -fs $url/metrics | awk '$1 == "spike_stream_published_messages_total" { m = $2 }
      $1 == "spike_stream_published_events_total" { e = $2 } END { printf "%.1f", m ? e / m : 0 }')
    kill $spid; wait $spid 2>/dev/null || true
    spid=""
    awk -v b="$(short "$bin")" -v mb="$batch" -v p="$p" -v s="$s" -v c1=$((c1 - c0)) -v c2=$((c2 - c1)) -v hz="$hz" -v t="$secs" 'BEGIN {
      printf "%-16s %6s %10.0f %8.1f %10.0f %8.1f\n", b, mb, p, 1e6 * c1 / hz / (p * t), s, 1e6 * c2 / hz / (s * t) }' | tee -a "$results"
  done
done
echo
echo "medians over $pairs runs each:"
# median COLUMN NAME: the median of one column of NAME's rows.
median() { awk -v n="$2" -v c="$1" '$1 == n { print $c }' "$results" | sort -g |
  awk '{ v[NR] = $1 } END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for bin in "$@"; do
  name=$(short "$bin")
  printf "%-16s %6.1f %10.0f %8.1f %10.0f %8.1f\n" "$name" \
    "$(median 2 "$name")" "$(median 3 "$name")" "$(median 4 "$name")" "$(median 5 "$name")" "$(median 6 "$name")"
done
