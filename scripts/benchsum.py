"""Summarises `spike bench --json` reports for scripts/overload.sh."""
import json
import re
import sys


def accepted(run):
    for o in run["outcomes"]:
        if o["name"] == "accepted":
            return o
    return {"count": 0, "rate": 0.0, "latency": {"p99_ms": 0.0}}


def seconds(d):
    """A Go duration such as 5ms, 500us or 1.5ms, in seconds."""
    m = re.fullmatch(r"([0-9.]+)(ns|us|µs|ms|s)", d)
    if not m:
        sys.exit("bad duration %r" % d)
    unit = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]
    return float(m.group(1)) * unit


def main():
    cmd = sys.argv[1]
    if cmd == "nominal":  # slots / delay: a slowed dependency's capacity per second
        print(round(int(sys.argv[2]) / seconds(sys.argv[3])))
        return
    path = sys.argv[2]
    run = json.load(open(path))["run"]
    acc = accepted(run)
    if cmd == "rate":  # goodput, for arithmetic
        print(acc["rate"])
    elif cmd == "p99":  # all answers
        print(run["latency"]["p99_ms"])
    elif cmd == "p99admitted":  # 202s only
        print(acc["latency"]["p99_ms"])
    elif cmd == "show":
        offered = run["sent"] / (run["elapsed_ns"] / 1e9)
        other = {o["name"]: o["count"] for o in run["outcomes"] if o["name"] != "accepted"}
        al = acc["latency"]
        print("%8s: offered %8.0f/s  goodput %8.0f/s  admitted p50/p90/p99 %.1f/%.1f/%.1fms  p99 all %7.2fms  other %s"
              % (sys.argv[3], offered, acc["rate"], al.get("p50_ms", 0), al.get("p90_ms", 0), al["p99_ms"],
                 run["latency"]["p99_ms"], other))
    elif cmd == "bad":  # answers that are neither 202 nor a clean 429/503
        ok = {"accepted", "overloaded", "rate_limited", "unavailable", "client_overload"}
        bad = {o["name"]: o["count"] for o in run["outcomes"] if o["name"] not in ok}
        print(bad or "none")


main()
