#!/usr/bin/env python3
"""The arithmetic of bench/floor.sh: one JSON line per measured run, then the Markdown tables.

  floor.py record WRK_JSON REP SERVER WORKLOAD CLK_TCK TICKS CTXSW SYSCALLS SYS_WRK_JSON \
      EXEC0 EXEC1 ITEMS0 ITEMS1                     -> one JSON line (stdout)
  floor.py inproc REP < ort_inproc's JSON line      -> one JSON line
  floor.py perf PERF_STAT_FILE                      -> the raw_syscalls:sys_enter count, or n/a
  floor.py strace STRACE_C_FILE                     -> the total of calls, or n/a
  floor.py table RUNS_JSONL NGINX_NOTE              -> the Markdown tables

TICKS and CTXSW are the server's utime+stime (clock ticks) and context switches during the
run; SYSCALLS its syscalls (or n/a) during SYS_WRK_JSON's run, a second, shorter one right
after (counting syscalls slows the server); EXEC/ITEMS the model's metric counters around the run (empty for nginx). Every
figure is divided by the requests wrk completed in that run. NGINX_NOTE is empty, or what the
nginx cells say instead of numbers ("not installed").
"""
import json
import statistics
import sys


def num(s):
    try:
        return float(s)
    except ValueError:
        return None


def record(wrk, rep, server, workload, tck, ticks, ctxsw, syscalls, sys_wrk, e0, e1, i0, i1):
    r = json.load(open(wrk))
    n = r["requests"]
    out = {
        "rep": int(rep), "server": server, "workload": workload, "requests": n,
        "rps": n / (r["duration_us"] / 1e6), "p50_ms": r["p50_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "errors": r["non2xx"] + r["socket_errors"],
        "cpu_us": int(ticks) / int(tck) * 1e6 / n if n else None,
        "ctxsw": int(ctxsw) / n if n else None,
        "syscalls": None, "batch": None,
    }
    sc = num(syscalls)
    if sc is not None:
        sn = json.load(open(sys_wrk))["requests"]
        out["syscalls"] = sc / sn if sn else None
    e = [num(x) for x in (e0, e1, i0, i1)]
    if None not in e and e[1] > e[0]:
        out["batch"] = (e[3] - e[2]) / (e[1] - e[0])
    print(json.dumps(out))


def inproc(rep):
    r = json.loads(sys.stdin.read())
    print(json.dumps({"rep": int(rep), "server": "inproc", "workload": "mlp1",
                      "p50_ms": r["p50_us"] / 1000, "threads": r["threads"]}))


def perf(path):
    # perf stat -x, lines: COUNT,UNIT,EVENT,... ; COUNT is "<not counted>" when the task never ran
    for line in open(path):
        f = line.strip().split(",")
        if len(f) > 2 and f[2].startswith("raw_syscalls:sys_enter") and num(f[0]) is not None:
            print(int(float(f[0])))
            return
    print("n/a")


def strace(path):
    # strace -c: "% time  seconds  usecs/call  calls  errors  syscall"; the last row is "total"
    for line in open(path):
        f = line.split()
        if f and f[-1] == "total" and len(f) >= 4 and num(f[3]) is not None:
            print(int(f[3]))
            return
    print("n/a")


FIGURES = [  # (label, workload, key, format); no ratio for context switches: nginx's are near 0
    ("identity infer (binary, 64 B), req/s", "identity", "rps", "{:,.0f}"),
    ("GET /v2/health/live, req/s", "health", "rps", "{:,.0f}"),
    ("server CPU per request (µs), identity infer", "identity", "cpu_us", "{:.1f}"),
    ("server CPU per request (µs), health", "health", "cpu_us", "{:.1f}"),
    ("syscalls per request, identity infer", "identity", "syscalls", "{:.2f}"),
    ("syscalls per request, health", "health", "syscalls", "{:.2f}"),
    ("context switches per request, identity infer", "identity", "ctxsw", "{:.2f}"),
    ("context switches per request, health", "health", "ctxsw", "{:.2f}"),
]


def table(path, nginx_note):
    runs = [json.loads(line) for line in open(path) if line.strip()]

    def values(server, workload, key):
        """{rep: value} over the reps that measured it"""
        return {r["rep"]: r[key] for r in runs
                if r["server"] == server and r["workload"] == workload and r.get(key) is not None}

    def median(server, workload, key, fmt):
        v = values(server, workload, key)
        return fmt.format(statistics.median(v.values())) if v else "n/a"

    def ratio(workload, key, server="batchd", base="nginx"):
        """median of the per-rep ratios (min..max)"""
        a, b = values(server, workload, key), values(base, workload, key)
        q = [a[i] / b[i] for i in a if i in b and b[i]]
        if not q:
            return "n/a"
        return f"{statistics.median(q):.2f} ({min(q):.2f}..{max(q):.2f})"

    def ngx(workload, key, fmt):
        return nginx_note or median("nginx", workload, key, fmt)

    print("| figure | nginx `return 200` | batchd | batchd/nginx |")
    print("|---|---:|---:|---:|")
    for label, w, key, fmt in FIGURES:
        q = ratio(w, key) if key != "ctxsw" else ""
        print(f"| {label} | {ngx(w, key, fmt)} | {median('batchd', w, key, fmt)} | {q} |")
    print(f"| mean batch, identity infer | | {median('batchd', 'identity', 'batch', '{:.1f}')} | |")

    if any(r["workload"].startswith("mlp") for r in runs):
        print()
        print("| mlp (ONNX), binary | batchd req/s | nginx req/s (same body) | batchd/nginx "
              "req/s | mean batch | p50 ms | p99 ms | CPU µs/req | syscalls/req | ctx sw/req |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for w, c in (("mlp64", 64), ("mlp1", 1)):
            cells = [median("batchd", w, "rps", "{:,.0f}"), ngx(w, "rps", "{:,.0f}"),
                     ratio(w, "rps"), median("batchd", w, "batch", "{:.1f}")]
            cells += [median("batchd", w, k, "{:.3f}") for k in ("p50_ms", "p99_ms")]
            cells += [median("batchd", w, "cpu_us", "{:.1f}"),
                      median("batchd", w, "syscalls", "{:.2f}"),
                      median("batchd", w, "ctxsw", "{:.2f}")]
            print(f"| concurrency {c} | " + " | ".join(cells) + " |")
        inp = values("inproc", "mlp1", "p50_ms")
        srv = values("batchd", "mlp1", "p50_ms")
        d = [srv[i] - inp[i] for i in srv if i in inp]
        if d:
            threads = next(r["threads"] for r in runs if r["server"] == "inproc")
            print()
            print(f"mlp at concurrency 1: batchd p50 {statistics.median(srv.values()):.3f} ms, "
                  f"in-process batch 1 p50 {statistics.median(inp.values()):.3f} ms (ort_inproc, "
                  f"{threads} thread(s)): +{statistics.median(d):.3f} ms "
                  f"({min(d):.3f}..{max(d):.3f} over reps; DESIGN: at most +0.1 ms)")

    bad = [r for r in runs if r.get("errors")]
    if bad:
        print()
        for r in bad:
            print(f"Errors: rep {r['rep']} {r['server']} {r['workload']}: {r['errors']} "
                  f"(non-2xx or socket errors; its figures count only completed requests)")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "record":
        record(*args[:13])
    elif cmd == "inproc":
        inproc(args[0])
    elif cmd == "perf":
        perf(args[0])
    elif cmd == "strace":
        strace(args[0])
    else:
        table(args[0], args[1] if len(args) > 1 else "")
