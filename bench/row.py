#!/usr/bin/env python3
"""Format one Markdown table row for bench/run.sh.

  row.py http   WRK_JSON MODEL MODE CONCURRENCY EXEC0 EXEC1 ITEMS0 ITEMS1
  row.py inproc MODEL < ort_inproc's JSON line
  row.py delay  BENCH_JSON MODEL LOAD DELAY EXEC0 EXEC1 ITEMS0 ITEMS1
"""
import json
import sys


def http(path, model, mode, conc, e0, e1, i0, i1):
    r = json.load(open(path))
    e0, e1, i0, i1 = (float(x or 0) for x in (e0, e1, i0, i1))
    rps = r["requests"] / (r["duration_us"] / 1e6)
    batch = (i1 - i0) / (e1 - e0) if e1 > e0 else 0.0
    bad = r["non2xx"] + r["socket_errors"]
    print(f"| {model} | {mode} | {conc} | {rps:,.0f} | {batch:.1f} | "
          f"{r['p50_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | {bad} |")


def inproc(model):
    r = json.loads(sys.stdin.read())
    print(f"| {model} | {r['batch']} | {r['threads']} | {r['calls_per_s']:,.0f} | "
          f"{r['rows_per_s']:,.0f} | {r['p50_us'] / 1000:.3f} | {r['p99_us'] / 1000:.3f} |")


def delay(path, model, load, d, e0, e1, i0, i1):
    (lv,) = json.load(open(path))["levels"]
    e0, e1, i0, i1 = (float(x or 0) for x in (e0, e1, i0, i1))
    batch = (i1 - i0) / (e1 - e0) if e1 > e0 else 0.0
    lat = lv["latency_us"]
    transport = sum(v for k, v in lv["errors"].items() if not k.startswith("http_"))
    failed = lv["responses"] - lv["status_counts"].get("200", 0) + transport
    print(f"| {model} | {load} | {d} | {lv['offered_rps']:,.0f} | {lv['achieved_rps']:,.0f} | "
          f"{lat['p50'] / 1000:.2f} | {lat['p99'] / 1000:.2f} | {batch:.1f} | {failed} |")


if __name__ == "__main__":
    if sys.argv[1] == "http":
        http(*sys.argv[2:10])
    elif sys.argv[1] == "delay":
        delay(*sys.argv[2:10])
    else:
        inproc(sys.argv[2])
