"""Summarises `spike bench --json` reports for scripts/overload.sh."""
import json
import sys


def accepted(run):
    for o in run["outcomes"]:
        if o["name"] == "accepted":
            return o
    return {"count": 0, "rate": 0.0, "latency": {"p99_ms": 0.0}}


def main():
    cmd, path = sys.argv[1], sys.argv[2]
    run = json.load(open(path))["run"]
    acc = accepted(run)
    if cmd == "rate":  # goodput, for arithmetic
        print(acc["rate"])
    elif cmd == "p99":
        print(run["latency"]["p99_ms"])
    elif cmd == "show":
        offered = run["sent"] / (run["elapsed_ns"] / 1e9)
        other = {o["name"]: o["count"] for o in run["outcomes"] if o["name"] != "accepted"}
        print("%8s: offered %8.0f/s  goodput %8.0f/s  p99 admitted %7.2fms  p99 all %7.2fms  other %s"
              % (sys.argv[3], offered, acc["rate"], acc["latency"]["p99_ms"], run["latency"]["p99_ms"], other))
    elif cmd == "bad":  # answers that are neither 202 nor a clean 429/503
        ok = {"accepted", "overloaded", "rate_limited", "unavailable", "client_overload"}
        bad = {o["name"]: o["count"] for o in run["outcomes"] if o["name"] not in ok}
        print(bad or "none")


main()
