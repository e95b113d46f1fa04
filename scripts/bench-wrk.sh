#!/usr/bin/env bash
# The performance targets of DESIGN.md and issue 12, measured with wrk (a C
# load generator, so the client costs less CPU than a Go one) beside the
# server on this machine, as ratios to a trivial net/http handler answering
# the same 202 JSON in the same round:
#
#   scripts/bench-wrk.sh                 # wrk -t1 -c64, 3 s runs, 5 rounds, 150 000 buyers per run
#   SECS=2 ROUNDS=1 scripts/bench-wrk.sh # a quick look
#   PROFILE=/tmp/cpu.pprof scripts/bench-wrk.sh   # also a CPU profile of round 1's placements
#   PROFILE_RUN=sold-out PROFILE=... scripts/bench-wrk.sh  # ... or of its sold-out run
#   PROFILE_RUN=drain PROFILE=... scripts/bench-wrk.sh     # ... or of persisting its placements after them
#   SPIKE_BIN=/tmp/spike-before scripts/bench-wrk.sh   # a prebuilt binary (e.g. of another commit)
#   DRAIN_EACH=1 scripts/bench-wrk.sh    # also drain the persistence backlog before sold-out and reads
#
# Settings (environment): SECS (3), ROUNDS (5), CONNS (64), THREADS (1),
# BUYERS (150000: distinct buyers per placement run and per sold-out run,
# fresh ones every run), SMALL_BUYERS (200: the old shape, as a second
# line; 0 skips it), MAX_ERRORS (1: percent of a run's requests that may
# fail), PORT (18500; PORT+1 is the trivial handler, PORT+2 pprof),
# ORDERED (unset: each run's buyers arrive in random order; 1: by user id).
#
# Two shapes of buyers, each measured in every round:
#  - distinct: every request of a placement or sold-out run comes from a
#    different buyer's token (BUYERS of them, fresh user ids in every run),
#    as in a real flash sale where a hundred thousand buyers send one to
#    three requests each; no cache of verified tokens or per-buyer state
#    can flatter it. The server runs with its default limits.
#  - small: SMALL_BUYERS buyers round-robin, the same ones in every round
#    (the method of the figures before issue 12), with the per-buyer rate
#    limit switched off (ratelimit.user_rps 0) for these runs only: 200
#    buyers send thousands of requests per second each.
# Scenarios: placements (202, durably enqueued), sold-out rejections (409),
# cached product reads (anonymous, the same for both shapes). Every request
# carries a fresh Idempotency-Key. Each round drains the persistence
# backlog, then runs the trivial handler first.
#
# A run FAILs the whole script (exit 1, "result: FAIL") when more than
# MAX_ERRORS % of its requests got a socket error (connect, read, write,
# timeout) or an unexpected status: anything but 202 for placements and the
# trivial handler, 200 for reads, 202 or 409 for sold-out (statuses from the
# server's spike_http_requests_total, so wrk's Lua never parses a response).
# The script ends with `spike audit` (I1-I5) once the backlog has drained;
# a failed audit fails the script too.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECS:-3}
rounds=${ROUNDS:-5}
conns=${CONNS:-64}
threads=${THREADS:-1}
buyers=${BUYERS:-150000}
small=${SMALL_BUYERS:-200}
maxerr=${MAX_ERRORS:-1}
port=${PORT:-18500}
tport=$((port + 1))
pport=$((port + 2))
dir=$(mktemp -d)
# This tree's binary signs the tokens (spike token --users), whatever
# SPIKE_BIN serves: a binary of an older commit may not have the option.
go build -o "$dir/spike-tools" ./cmd/spike
if [ -n "${SPIKE_BIN:-}" ]; then
  cp "$SPIKE_BIN" "$dir/spike"
else
  cp "$dir/spike-tools" "$dir/spike"
fi
cat >"$dir/trivial.go" <<GO
package main

import "net/http"

func main() {
	body := []byte(\`{"order_id":"06H2HVJ3P87HFS8766S26U3DH0","sale_id":"bench","quantity":1,"status":"pending"}\` + "\n")
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		w.Write(body)
	})
	http.ListenAndServe("127.0.0.1:$tport", nil)
}
GO
(cd "$dir" && go mod init trivial >/dev/null 2>&1 && go build -o trivial trivial.go)
export SPIKE_JWT_SECRET=bench-wrk-secret-0123456789abcdef01234567
pprof=()
if [ -n "${PROFILE:-}" ]; then pprof=(--pprof 127.0.0.1:$pport); fi
"$dir/spike" serve --data "$dir/data" --addr 127.0.0.1:$port "${pprof[@]}" >"$dir/serve.log" 2>&1 &
spid=$!
"$dir/trivial" &
tpid=$!
trap 'kill $spid $tpid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -fs 127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
url=http://127.0.0.1:$port
admin=$("$dir/spike" token --user 1 --admin)
post() { curl -fs -XPOST "$url$1" -H "Authorization: Bearer $admin" -d "$2" >/dev/null; }
setswitch() { curl -fs -XPUT "$url/v1/admin/switches/$1" -H "Authorization: Bearer $admin" -d "{\"value\":\"$2\"}" >/dev/null; }
post /v1/products '{"sku":"p-big","name":"Big","price_cents":100,"stock":50000000}'
post /v1/sales '{"id":"big","sku":"p-big","stock":50000000,"price_cents":50,"per_user_limit":1000000}'
post /v1/products '{"sku":"p-tiny","name":"Tiny","price_cents":100,"stock":1}'
post /v1/sales '{"id":"tiny","sku":"p-tiny","stock":1,"price_cents":50,"per_user_limit":1}'
for i in $(seq 0 99); do post /v1/products "{\"sku\":\"r-$i\",\"name\":\"Read $i\",\"price_cents\":100,\"stock\":10}"; done
user_rps=$(curl -fs $url/v1/admin/switches -H "Authorization: Bearer $admin" |
  jq -r '.switches[] | select(.name == "ratelimit.user_rps") | .value')
# The reads all come from one address (wrk's): lift the per-IP limit, or
# the runs measure it instead of the server.
setswitch ratelimit.ip_rps 0 || echo "(no ratelimit.ip_rps switch in this binary: reads are not limited per IP there)"

# One script for every run: wrk ... -s bench.lua URL -- MODE SALE TOKENS.
# Each thread reads its own slice of the token file (every THREADS-th line)
# and sends its tokens in order, one per request, with a fresh key prefix
# per run and thread (a key reused from an earlier run would be a replay:
# cheap, nothing placed). done() prints wrk's totals for the script.
cat >"$dir/bench.lua" <<LUA
local threads, nthreads = 0, $threads
local mode, path, tokens, counter, prefix = "read", "", {}, 0, ""
local headers = {["Content-Type"] = "application/json"}
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function init(args)
  local tid = tonumber(wrk.thread:get("tid")) or 0
  mode, path = args[1], "/v1/sales/" .. (args[2] or "") .. "/orders"
  if mode == "order" then
    local i = 0
    for line in io.lines(args[3]) do
      if i % nthreads == tid then tokens[#tokens + 1] = "Bearer " .. line end
      i = i + 1
    end
  end
  math.randomseed(os.time() * 1000 + tid)
  prefix = "k" .. tostring(math.random(1000000000)) .. "-" .. tid .. "-"
end
function request()
  counter = counter + 1
  if mode == "read" then
    return wrk.format("GET", "/v1/products/r-" .. (counter % 100))
  end
  headers["Authorization"] = tokens[((counter - 1) % #tokens) + 1]
  headers["Idempotency-Key"] = prefix .. counter
  return wrk.format("POST", path, headers, '{"quantity":1}')
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKSUM %d %d %d\n", summary.requests, e.connect + e.read + e.write + e.timeout, e.status))
end
LUA

# statuses ROUTE: "status count" lines of the server's request counter.
statuses() {
  curl -fs $url/metrics | awk -v r="route=\"$1\"" '/^spike_http_requests_total\{/ && index($0, r) {
    match($0, /status="[0-9]+"/); print substr($0, RSTART + 8, 3), $NF }'
}
# unexpected BEFORE AFTER OKSTATUSES: requests between two statuses
# snapshots whose status is not among OKSTATUSES (e.g. "202 409").
unexpected() {
  awk -v ok=" $3 " 'FNR == NR { before[$1] = $2; next }
    index(ok, " " $1 " ") == 0 { n += $2 - before[$1] } END { printf "%d", n }' <(echo "$1") <(echo "$2")
}

errlog=$dir/errors
: >"$errlog"
# CPU the serving process spent during each run (utime + stime, in clock
# ticks), per request: a cost that the machine's other load (or a
# hypervisor's steal) moves less than it moves requests/s.
cpulog=$dir/cpu
: >"$cpulog"
cputicks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# run NAME URL MODE SALE TOKENS ROUTE OKSTATUSES: one wrk run; prints its
# requests/s, and records its errors in $errlog.
run() {
  local name=$1 target=$2 mode=$3 sale=$4 tokens=$5 route=$6 ok=$7 before="" out
  [ -n "$route" ] && before=$(statuses "$route")
  local pid=$spid c0
  [ "$target" = "http://127.0.0.1:$tport" ] && pid=$tpid
  c0=$(cputicks "$pid")
  out=$(wrk -t"$threads" -c"$conns" -d"${secs}s" -s "$dir/bench.lua" "$target" -- "$mode" "$sale" "$tokens")
  local rps reqs sock status bad=0 c1
  c1=$(cputicks "$pid")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  read -r reqs sock status < <(awk '/^WRKSUM/ {print $2, $3, $4}' <<<"$out")
  if [ -n "$route" ]; then
    local after
    after=$(statuses "$route")
    bad=$(unexpected "$before" "$after" "$ok")
    if [ "$bad" -gt 0 ]; then
      # Which statuses, and what the server logged meanwhile: a FAIL says why.
      echo "$name: unexpected statuses: $(awk -v ok=" $ok " 'FNR == NR { b[$1] = $2; next }
        index(ok, " " $1 " ") == 0 && $2 - b[$1] > 0 { printf "%s×%d ", $1, $2 - b[$1] }' <(echo "$before") <(echo "$after"))" >>"$dir/why"
    fi
  fi
  # wrk's own non-2xx count covers what the server's counter cannot see.
  if [ "$ok" = 202 ] || [ "$ok" = 200 ]; then [ "$status" -gt "$bad" ] && bad=$status; fi
  echo "$name $reqs $sock $bad" >>"$errlog"
  echo "$name $reqs $((c1 - c0))" >>"$cpulog"
  echo "${rps:-0}"
}

echo "machine: $(nproc) cores, $(uptime | sed 's/.*load average/load average/')"
echo "method: wrk -t$threads -c$conns, ${secs} s per run, $rounds rounds; distinct shape: $buyers buyers per run, fresh each run;" \
  "small shape: $small buyers round-robin (ratelimit.user_rps 0); a run fails above $maxerr % errors"
# Before each round, let the server finish persisting the previous round's
# placements: its workers would otherwise take CPU from the trivial
# handler's run and flatter every ratio of the round.
# Each drain of 1 000 orders or more also records what persisting cost:
# the orders pending at its start, the server's CPU ticks and the
# milliseconds until none was pending (reported at the end). The CPU
# includes answering the drain's own /metrics polls, ten a second, which
# scan the pending index: about 8 % of a 80 000-order drain's.
drainlog=$dir/drains
: >"$drainlog"
drain() {
  local p0 c0 t0 p
  p0=$(curl -fs $url/metrics | awk '$1 == "spike_orders_pending" {printf "%d", $2}')
  c0=$(cputicks "$spid") t0=$(date +%s%N)
  for _ in $(seq 600); do
    p=$(curl -fs $url/metrics | awk '$1 == "spike_orders_pending" {print $2}')
    [ "$p" = 0 ] && break
    sleep 0.1
  done
  if [ "${p0:-0}" -ge 1000 ] && [ "$p" = 0 ]; then
    echo "$p0 $(($(cputicks "$spid") - c0)) $((($(date +%s%N) - t0) / 1000000))" >>"$drainlog"
  fi
  sleep 1
}
# The buyers of a distinct-shape run arrive in random order, as a real
# sale's do (ORDERED=1: in the order of their ids, which lets the buyer-
# keyed indexes of the orders table take each page once, and flatters
# persistence).
tokens() {
  "$dir/spike-tools" token --users "$1-$(($1 + $2 - 1))" --out "$3"
  if [ -z "${ORDERED:-}" ]; then shuf -o "$3" "$3"; fi
}
# User ids: 1 is the admin; the distinct shape's run k (0, 1, ... over all
# rounds) has ids 2 + k*BUYERS onwards; the small shape's come after all of them.
tokens $((2 + 2 * rounds * buyers)) "$((small > 0 ? small : 1))" "$dir/small.tok"
ratios=$dir/ratios
: >"$ratios"
printf "%-5s %8s %8s | %-22s %9s %9s %6s %6s | %-22s %9s %9s %6s %6s | %8s %6s\n" round load trivial \
  "shape" placements sold_out p× s× "shape" placements sold_out p× s× reads r×
ratio() { echo "$1 / $2" | bc -l; }
# profile: a CPU profile of the next run's middle, in the background.
profile() {
  (sleep 1; curl -fs -o "$PROFILE" "http://127.0.0.1:$pport/debug/pprof/profile?seconds=$((secs > 2 ? secs - 2 : 1))") &
  profiler=$!
}
for r in $(seq "$rounds"); do
  tokens $((2 + (2 * r - 2) * buyers)) "$buyers" "$dir/place.tok"
  tokens $((2 + (2 * r - 1) * buyers)) "$buyers" "$dir/soldout.tok"
  drain
  load=$(cut -d' ' -f1 /proc/loadavg)
  t=$(run "r$r-trivial" http://127.0.0.1:$tport order big "$dir/place.tok" "" 202)
  profiler=""
  if [ -n "${PROFILE:-}" ] && [ "$r" = 1 ] && [ "${PROFILE_RUN:-placements}" = placements ]; then
    # CPU profile of the placement run (PROFILE=file): go tool pprof "$PROFILE"
    profile
  fi
  p=$(run "r$r-distinct-placements" $url order big "$dir/place.tok" place_order 202)
  if [ -n "${PROFILE:-}" ] && [ "$r" = 1 ] && [ "${PROFILE_RUN:-}" = drain ]; then
    # CPU profile of the first second persisting the run's placements.
    curl -fs -o "$PROFILE" "http://127.0.0.1:$pport/debug/pprof/profile?seconds=1" &
    profiler=$!
    drain
  elif [ -n "${DRAIN_EACH:-}" ]; then drain; fi
  if [ -n "${PROFILE:-}" ] && [ "$r" = 1 ] && [ "${PROFILE_RUN:-}" = sold-out ]; then profile; fi
  s=$(run "r$r-distinct-sold-out" $url order tiny "$dir/soldout.tok" place_order "202 409")
  if [ -n "${DRAIN_EACH:-}" ]; then drain; fi
  rd=$(run "r$r-reads" $url read "" "" get_product 200)
  if [ -n "$profiler" ]; then wait "$profiler"; fi
  rm -f "$dir/place.tok" "$dir/soldout.tok"
  sp=0 ss=0
  if [ "$small" -gt 0 ]; then
    setswitch ratelimit.user_rps 0
    drain
    sp=$(run "r$r-small-placements" $url order big "$dir/small.tok" place_order 202)
    if [ -n "${DRAIN_EACH:-}" ]; then drain; fi
    ss=$(run "r$r-small-sold-out" $url order tiny "$dir/small.tok" place_order "202 409")
    setswitch ratelimit.user_rps "$user_rps"
  fi
  pr=$(ratio "$p" "$t") sr=$(ratio "$s" "$t") rr=$(ratio "$rd" "$t") spr=$(ratio "$sp" "$t") ssr=$(ratio "$ss" "$t")
  echo "$pr $sr $rr $spr $ssr" >>"$ratios"
  printf "%-5s %8s %8.0f | %-22s %9.0f %9.0f %6.2f %6.2f | %-22s %9.0f %9.0f %6.2f %6.2f | %8.0f %6.2f\n" "$r" "$load" "$t" \
    "$buyers distinct" "$p" "$s" "$pr" "$sr" "$([ "$small" -gt 0 ] && echo "$small round-robin" || echo "(skipped)")" \
    "$sp" "$ss" "$spr" "$ssr" "$rd" "$rr"
done

# Median and spread (min-max) of each column of per-round ratios.
# median FORMAT: the median of the numbers on stdin (one a line), then
# their min and max, printed with FORMAT ("-" when there are none).
median() { sort -g | awk -v f="$1" '{v[NR] = $1} END { if (!NR) { printf "-"; exit }
  printf f, NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[1], v[NR] }'; }
stat() { cut -d' ' -f"$1" "$ratios" | median "%.2f (%.2f–%.2f)"; }
echo
echo "median (min–max) over $rounds rounds of the per-round ratios to the trivial handler:"
echo "  $buyers distinct buyers:    placements $(stat 1)   sold-out $(stat 2)"
if [ "$small" -gt 0 ]; then
  echo "  $small buyers round-robin:  placements $(stat 4)   sold-out $(stat 5)"
fi
echo "  cached product reads:      $(stat 3)"
# Server CPU µs per request (trivial handler; Spike's distinct placements
# and sold-out runs), median over the rounds; work a run defers (the
# persistence the pacer holds back) lands in the runs after it.
hz=$(getconf CLK_TCK)
cpu_us() { awk -v pat="$1" -v hz="$hz" '$1 ~ pat && $2 > 0 { print 1e6 * $3 / hz / $2 }' "$cpulog" | median "%.1f"; }
ct=$(cpu_us '-trivial$') cp=$(cpu_us '-distinct-placements$') cs=$(cpu_us '-distinct-sold-out$')
echo "server CPU µs per request (median of runs): trivial $ct, distinct placements $cp, distinct sold-out $cs" \
  "(trivial ÷ Spike: $(echo "$ct $cp" | awk '{ printf "%.2f", $1 / $2 }') / $(echo "$ct $cs" | awk '{ printf "%.2f", $1 / $2 }'))"

# Persisting: the drains of a backlog (DRAIN_EACH=1 drains each run's
# placements right after it; otherwise what the runs after left over).
if [ -s "$drainlog" ]; then
  echo "persisting a backlog (median of $(wc -l <"$drainlog") drains): $(awk -v hz="$hz" '{ print 1e6 * $2 / hz / $1 }' "$drainlog" | median "%.1f") server CPU µs per order," \
    "$(awk '$3 > 0 { print 1000 * $1 / $3 }' "$drainlog" | median "%.0f") orders/s (the largest: $(sort -n "$drainlog" | tail -1 | awk '{ printf "%d orders in %.1f s", $1, $3 / 1000 }'))"
fi
echo "placements per stream message (mean batch): $(curl -fs $url/metrics | awk '$1 == "spike_stream_published_messages_total" { m = $2 }
  $1 == "spike_stream_published_events_total" { e = $2 } END { printf "%.1f", m ? e / m : 0 }')"
# The distinct shape promises each token once or twice per run.
maxuse=$(awk -v b="$buyers" '$1 ~ /distinct/ { u = int(($2 + $3 + b - 1) / b); if (u > m) m = u } END { print m + 0 }' "$errlog")
echo "uses per distinct buyer's token in one run: at most $maxuse$([ "$maxuse" -gt 2 ] && echo " (more than twice: raise BUYERS)")"

result=PASS
worst=$(awk '{ n = $2 + $3; e = $3 + $4; p = n ? 100 * e / n : 100; print p, $1, e, n }' "$errlog" | sort -g | tail -1)
bad=$(awk -v max="$maxerr" '{ n = $2 + $3; e = $3 + $4; p = n ? 100 * e / n : 100
  if (p > max) printf "  FAIL %s: %d of %d requests failed (%.2f %%: %d socket errors, %d unexpected statuses)\n", $1, e, n, p, $3, $4 }' "$errlog")
if [ -n "$bad" ]; then
  echo "errors: runs above $maxerr %:"
  echo "$bad"
  [ -s "$dir/why" ] && sed 's/^/  /' "$dir/why"
  echo "  server log (warnings and errors, last 10):"
  grep -E '"level":"(WARN|ERROR)"|level=(WARN|ERROR)' "$dir/serve.log" | tail -10 | cut -c1-300 | sed 's/^/    /' || true
  result=FAIL
else
  read -r wp wn we wt <<<"$worst"
  printf "errors: PASS, every run within %s %% (worst: %s, %d of %d requests, %.2f %%)\n" "$maxerr" "$wn" "$we" "$wt" "$wp"
fi

drain
echo "stream backlog after the runs: $(curl -fs $url/metrics | awk '$1 == "spike_orders_pending" {print $2}') pending orders"
if ! "$dir/spike" audit --addr 127.0.0.1:$port >"$dir/audit" 2>&1; then
  result=FAIL
fi
sed 's/^/  /' "$dir/audit"
echo "server peak memory: $(grep VmHWM /proc/$spid/status)"
echo "result: $result"
[ "$result" = PASS ]
