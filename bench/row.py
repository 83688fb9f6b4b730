#!/usr/bin/env python3
"""Format one Markdown table row for bench/run.sh.

  row.py http   WRK_JSON MODEL MODE CONCURRENCY EXEC0 EXEC1 ITEMS0 ITEMS1
  row.py inproc MODEL < ort_inproc's JSON line
  row.py delay  BENCH_JSON MODEL LOAD DELAY EXEC0 EXEC1 ITEMS0 ITEMS1
  row.py ratios HTTP_MD INPROC_MD   (the two tables above: each model against in-process)
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
    p50, p99 = (("%.2f" % (lat[k] / 1000)) if lat[k] is not None else "-" for k in ("p50", "p99"))
    print(f"| {model} | {load} | {d} | {lv['offered_rps']:,.0f} | {lv['achieved_rps']:,.0f} | "
          f"{p50} | {p99} | {batch:.1f} | {failed} |")


def cells(path):
    """The data rows of a Markdown table, as lists of stripped cells."""
    rows = []
    for line in open(path):
        c = [x.strip() for x in line.strip().strip("|").split("|")]
        if line.startswith("|") and not c[0].startswith("-") and c[0] != "model":
            rows.append(c)
    return rows


def ratios(http_md, inproc_md):
    num = lambda x: float(x.replace(",", ""))
    print("| model | best HTTP rows/s (batching on) | best in-process rows/s | ratio |"
          " c1 p50 ms | in-process batch 1 p50 ms | difference ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    h, ip = cells(http_md), cells(inproc_md)
    for model in dict.fromkeys(r[0] for r in h):
        served = [r for r in h if r[0] == model and r[1] == "batch"]
        local = [r for r in ip if r[0] == model]
        if not served or not local:
            continue
        best_h = max(num(r[3]) for r in served)
        best_i = max(num(r[4]) for r in local)
        c1 = [num(r[5]) for r in served if r[2] == "1"]
        b1 = [num(r[5]) for r in local if r[1] == "1"]
        p50 = (f"{c1[0]:.3f} | {b1[0]:.3f} | {c1[0] - b1[0]:+.3f}" if c1 and b1
               else "- | - | -")
        print(f"| {model} | {best_h:,.0f} | {best_i:,.0f} | {best_h / best_i:.2f} | {p50} |")


if __name__ == "__main__":
    if sys.argv[1] == "http":
        http(*sys.argv[2:10])
    elif sys.argv[1] == "delay":
        delay(*sys.argv[2:10])
    elif sys.argv[1] == "ratios":
        ratios(sys.argv[2], sys.argv[3])
    else:
        inproc(sys.argv[2])
