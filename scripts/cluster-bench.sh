#!/usr/bin/env bash
# Clustered placement throughput through HAProxy (issue 12, item 4), as a
# ratio to a trivial net/http handler behind the same HAProxy, before and
# after, in one run:
#
#   scripts/cluster-bench.sh            # 1 and 3 instances, SECS=5
#   scripts/cluster-bench.sh 3          # 3 instances only
#   BEFORE=<rev> scripts/cluster-bench.sh   # "before" binary (default: main)
#   BEFORE=none scripts/cluster-bench.sh    # this tree only
#   PROFILE=/tmp/prof scripts/cluster-bench.sh  # CPU profile of instance 1 per phase
#   ORDERED=1 scripts/cluster-bench.sh      # buyers in user-id order (default: random)
#
# Uses the machine's MariaDB (a fresh database per phase), Redis and NATS
# on their default loopback ports. For each instance count it starts one
# HAProxy with three frontends over the same backend settings: the trivial
# handler (N processes), "before" (N `spike serve` of BEFORE) and "after"
# (N of this tree). The phases run one at a time (the instances of one
# phase share the machine's ORDERS stream, so the other binary's are
# stopped), each on a fresh sale, each request from a different buyer out
# of BUYERS (150,000) tokens, fresh idempotency keys. Printed per phase:
# requests/s, ratio to the trivial phase, Redis commands and scripts per
# placement, and CPU milliseconds per 1,000 requests of each process (the
# shared Redis, NATS and MariaDB also serve whoever else uses them: read
# those columns with the load average). Every spike phase ends with the
# audit (I1-I5) once the stream has drained. Needs wrk and haproxy.
set -euo pipefail
cd "$(dirname "$0")/.."
counts=${*:-1 3}
secs=${SECS:-5}
buyers=${BUYERS:-150000}
conns=${CONNS:-128}
base=${PORT_BASE:-18400}
before=${BEFORE:-main}
# The order stream's adaptive limit reads a CPU shared with other work as a
# slow stream and sheds (issue 12, "a healthy sale on a busy host"); its
# floor is raised for both binaries so that the phases measure throughput.
# STREAM_MIN=4 measures the default.
stream_min=${STREAM_MIN:-4096}
dir=$(mktemp -d)
pids=()
dbs=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  for db in "${dbs[@]}"; do mariadb -uroot -e "DROP DATABASE IF EXISTS $db"; done
  rm -rf "$dir"
}
trap cleanup EXIT

echo "== building (after: this tree; before: $before)"
go build -o "$dir/spike-after" ./cmd/spike
bins=(after)
if [ "$before" != none ]; then
  rev=$(git rev-parse "$before")
  mkdir "$dir/src"
  git archive "$rev" | tar -x -C "$dir/src"
  (cd "$dir/src" && go build -o "$dir/spike-before" ./cmd/spike)
  echo "before = $rev"
  bins=(before after)
fi
mkdir "$dir/tools"
cat >"$dir/tools/trivial.go" <<'GO'
//go:build ignore

package main

import (
	"net/http"
	"os"
)

func main() {
	body := []byte(`{"order_id":"06H2HVJ3P87HFS8766S26U3DH0","sale_id":"bench","quantity":1,"status":"pending"}` + "\n")
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		w.Write(body)
	})
	http.ListenAndServe(os.Args[1], nil)
}
GO
# HS256 tokens as `spike token` signs them (sub, exp, iat), one a line.
cat >"$dir/tools/tokens.go" <<'GO'
//go:build ignore

package main

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	secret := []byte(os.Getenv("SPIKE_JWT_SECRET"))
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	now := time.Now().Unix()
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for u := 2; u < n+2; u++ {
		body := head + "." + enc.EncodeToString(fmt.Appendf(nil, `{"sub":"%d","exp":%d,"iat":%d}`, u, now+86400, now))
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(body))
		fmt.Fprintln(w, body+"."+enc.EncodeToString(m.Sum(nil)))
	}
}
GO
(cd "$dir/tools" && go build -o "$dir/trivial" trivial.go && go build -o "$dir/tokens" tokens.go)
export SPIKE_JWT_SECRET=cluster-bench-secret-0123456789abcdef0123
export SPIKE_EVENTS_HMAC_KEY=cluster-bench-event-key-0123456789abcdef
"$dir/tokens" "$buyers" >"$dir/tokens.txt"
# In random order, as a sale's buyers arrive (ORDERED=1: by user id, which
# lets the buyer-keyed indexes take each new entry on the same few pages).
if [ -z "${ORDERED:-}" ]; then shuf -o "$dir/tokens.txt" "$dir/tokens.txt"; fi
cat >"$dir/place.lua" <<LUA
-- Each thread walks its own share of the tokens: every request is a
-- different buyer's (while the phase sends fewer requests than BUYERS).
local tokens, counter, tid, threads, path, prefix = {}, 0, 0, 0, "", ""
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function init(args)
  for line in io.lines("$dir/tokens.txt") do tokens[#tokens + 1] = line end
  tid = tonumber(wrk.thread:get("tid")) or 0
  path = "/v1/sales/" .. args[1] .. "/orders"
  prefix = "k" .. args[1] .. "-" .. tid .. "-"
  counter = math.floor(tid * #tokens / 2)
end
request = function()
  counter = counter + 1
  return wrk.format("POST", path, {["Authorization"] = "Bearer " .. tokens[(counter % #tokens) + 1],
    ["Idempotency-Key"] = prefix .. counter, ["Content-Type"] = "application/json"}, '{"quantity":1}')
end
LUA

# cpu PID...: user+system clock ticks of the processes, summed.
cpu() { local s=0 p; for p in "$@"; do [ -r /proc/$p/stat ] && s=$((s + $(awk '{print $14 + $15}' /proc/$p/stat))); done; echo $s; }
svc() { pgrep -o -x "$1" || true; }
# mysql_stat NAME: a MariaDB global status counter (the server is shared).
mysql_stat() { mariadb -uroot -N -e "SHOW GLOBAL STATUS LIKE '$1'" | awk '{print $2}'; }
redis_calls() { redis-cli info commandstats | awk -F'[:=,]' -v c="$1" '$1 ~ c {s += $3} END {print s+0}'; }
tick=$(getconf CLK_TCK)

# outcomes BIN N: placements by outcome, summed over the instances' /metrics.
outcomes() {
  local i
  for i in $(seq "$2"); do curl -fs 127.0.0.1:$((base + $(off "$1") + i))/metrics; done |
    awk -F'[{}"]' '/^spike_placements_total\{/ {n[$3] += $NF}
      /^spike_stream_published_messages_total / {split($0, f, " "); m += f[2]}
      /^spike_stream_published_events_total / {split($0, f, " "); e += f[2]}
      END {for (k in n) if (n[k] > 0) printf "%s=%d ", k, n[k]; if (m > 0) printf "(%d stream messages, %.1f placements each)", m, e / m}'
}

# off BIN: the port offset of its instances.
off() { if [ "$1" = before ]; then echo 10; else echo 20; fi; }

start_spike() { # bin n db -> instance pids in spids
  local bin=$1 n=$2 db=$3 i
  cat >"$dir/$db.yaml" <<YAML
nats:
  urls: [nats://127.0.0.1:4222]
mysql:
  primary: "root@tcp(127.0.0.1:3306)/$db"
  migrate: true
redis:
  addrs: [127.0.0.1:6379]
limits:
  stream_min: $stream_min
YAML
  spids=()
  for i in $(seq "$n"); do
    local port=$((base + $(off "$bin") + i)) pp=()
    if [ -n "${PROFILE:-}" ] && [ "$i" = 1 ]; then pp=(--pprof 127.0.0.1:$((base + 9))); fi
    "$dir/spike-$bin" serve --config "$dir/$db.yaml" --addr 127.0.0.1:$port --data "$dir/d-$db-$i" "${pp[@]}" >"$dir/$db-$i.log" 2>&1 &
    spids+=($!)
    pids+=($!)
    for _ in $(seq 100); do curl -fs 127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
  done
}

stop() { kill "$@" 2>/dev/null || true; for p in "$@"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done; }

run_phase() { # name url sale_or_trivial procs... ; prints one line, sets rps
  local name=$1 url=$2 sale=$3; shift 3
  local r0 s0 w0 h0 n0 m0 a0 out
  local hap redis nats maria
  hap=$hpid; redis=$(svc redis-server); nats=$(svc nats-server); maria=$(svc mariadbd)
  r0=$(redis_calls cmdstat_); s0=$(redis_calls 'cmdstat_evalsha$')
  a0=$(cpu "$@"); h0=$(cpu $hap); w0=$(cpu $redis); n0=$(cpu $nats); m0=$(cpu $maria)
  local prof=""
  if [ -n "${PROFILE:-}" ] && [ "$sale" != - ]; then
    mkdir -p "$PROFILE"
    curl -s "http://127.0.0.1:$((base + 9))/debug/pprof/profile?seconds=$((secs - 1))" -o "$PROFILE/$name.pprof" &
    prof=$!
    (sleep $((secs / 2)); curl -s "http://127.0.0.1:$((base + 9))/debug/pprof/goroutine?debug=1" -o "$PROFILE/$name.goroutines") &
  fi
  out=$(wrk -t2 -c"$conns" -d"${secs}s" -s "$dir/place.lua" "$url" -- "${sale}")
  [ -n "$prof" ] && wait $prof
  local total
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$out")
  local non2xx lat
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out"); non2xx=${non2xx:-0}
  lat=$(awk '/Latency/ {print $2}' <<<"$out")
  local per=$((total > 0 ? total : 1))
  ms() { python3 -c "print(round(($1) * 1000 / $tick * 1000 / $per, 1))"; }
  printf '%-14s %7d req/s  ratio %-5s  lat %-8s non-2xx %-6s  redis cmds/req %-5s scripts/req %-5s  cpu ms/1k req: app %-5s haproxy %-5s redis %-5s nats %-5s mariadb %-5s\n' \
    "$name" "$rps" "$(python3 -c "print(round($rps / max($trivial_rps, 1), 3))")" "$lat" "$non2xx" \
    "$(python3 -c "print(round(($(redis_calls cmdstat_) - $r0) / $per, 2))")" \
    "$(python3 -c "print(round(($(redis_calls 'cmdstat_evalsha$') - $s0) / $per, 2))")" \
    "$(ms "$(cpu "$@") - $a0")" "$(ms "$(cpu $hap) - $h0")" "$(ms "$(cpu $redis) - $w0")" \
    "$(ms "$(cpu $nats) - $n0")" "$(ms "$(cpu $maria) - $m0")"
}

echo "== $(date -u +%FT%TZ) $(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg); wrk -t2 -c$conns, ${secs}s per phase, $buyers buyers"
for n in $counts; do
  servers() { local off=$1 i; for i in $(seq "$n"); do echo "    server s$i 127.0.0.1:$((base + off + i)) check inter 500ms"; done; }
  cat >"$dir/haproxy-$n.cfg" <<CFG
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
    balance roundrobin
    option httpchk GET /healthz
frontend trivial
    bind 127.0.0.1:$((base + 1))
    default_backend trivial
frontend before
    bind 127.0.0.1:$((base + 2))
    default_backend before
frontend after
    bind 127.0.0.1:$((base + 3))
    default_backend after
backend trivial
$(servers 30)
backend before
$(servers 10)
backend after
$(servers 20)
CFG
  haproxy -f "$dir/haproxy-$n.cfg" >"$dir/haproxy-$n.log" 2>&1 &
  hpid=$!
  pids+=($hpid)
  tpids=()
  for i in $(seq "$n"); do "$dir/trivial" 127.0.0.1:$((base + 30 + i)) & tpids+=($!); pids+=($!); done
  for _ in $(seq 50); do curl -s -o /dev/null 127.0.0.1:$((base + 1))/ && break; sleep 0.2; done
  sleep 1 # health checks
  echo "-- $n instance(s); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  trivial_rps=1
  run_phase "trivial-$n" "http://127.0.0.1:$((base + 1))" - "${tpids[@]}"
  trivial_rps=$rps
  stop "${tpids[@]}"
  for bin in "${bins[@]}"; do
    db=spike_cb_${bin}_${n}_$RANDOM
    dbs+=("$db")
    mariadb -uroot -e "CREATE DATABASE $db"
    start_spike "$bin" "$n" "$db"
    fe=$((base + $(off "$bin") / 10 + 1))
    url=http://127.0.0.1:$fe
    for _ in $(seq 50); do curl -fs $url/healthz >/dev/null && break; sleep 0.2; done
    admin=$("$dir/spike-after" token --user 1 --admin)
    sale=s${bin}${n}x$RANDOM
    curl -fs -XPOST $url/v1/products -H "Authorization: Bearer $admin" -d "{\"sku\":\"p-$sale\",\"name\":\"x\",\"price_cents\":100,\"stock\":50000000}" >/dev/null
    curl -fs -XPOST $url/v1/sales -H "Authorization: Bearer $admin" -d "{\"id\":\"$sale\",\"sku\":\"p-$sale\",\"stock\":50000000,\"price_cents\":50,\"per_user_limit\":1000000}" >/dev/null
    curl -fs -XPUT $url/v1/admin/switches/ratelimit.user_rps -H "Authorization: Bearer $admin" -d '{"value":0}' >/dev/null
    sleep 0.5
    q0=$(mysql_stat Questions); p0=$(mysql_stat Com_stmt_prepare); c0=$(mysql_stat Com_commit)
    run_phase "$bin-$n" "$url" "$sale" "${spids[@]}"
    echo "               outcomes: $(outcomes "$bin" "$n")"
    sold=$(curl -fs $url/v1/sales/$sale | python3 -c 'import json,sys; print(json.load(sys.stdin)["sold"])')
    ok=""
    for _ in $(seq 30); do
      if a=$("$dir/spike-after" audit --addr 127.0.0.1:$((base + $(off "$bin") + 1)) 2>&1); then ok=1; break; fi
      sleep 1
    done
    echo "               sold $sold; audit: $(if [ -n "$ok" ]; then echo ok; else echo "FAILED: $(tail -3 <<<"$a" | tr '\n' ' ')"; fi)"
    echo "               MariaDB until the audit passed, per placement: statements $(python3 -c "print(round(($(mysql_stat Questions) - $q0) / max($sold, 1), 3))"), prepares $(python3 -c "print(round(($(mysql_stat Com_stmt_prepare) - $p0) / max($sold, 1), 3))"), commits $(python3 -c "print(round(($(mysql_stat Com_commit) - $c0) / max($sold, 1), 4))")"
    stop "${spids[@]}"
  done
  stop "$hpid"
done
