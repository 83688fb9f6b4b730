#!/usr/bin/env bash
# bench/ws.sh: mlp over ONE WebSocket with 64 requests in flight (build/ws_load) next to HTTP
# keep-alive with 64 connections (batchd bench, closed loop, concurrency 64), in one run,
# alternating for a few rounds so the machine's noise hits both alike.
#
#   bench/ws.sh [MODELS_DIR] [SECONDS] [ROUNDS]      (defaults: ../shared/models, 5, 3)
#
# Environment: WS_INFLIGHT (64: the in-flight count of both sides), WS_FORMATS ("json binary":
# JSON tensors for both sides, then Triton binary tensors in and out for both), BATCHD_BIN
# (build/batchd), WS_LOAD_BIN (build/ws_load), PYTHON.
#
# One server (defaults, batching on) serves mlp. Both sides send the same request: one
# zero-filled FP32 [1,64] row, JSON "data" or binary tensor bytes; the WebSocket body also
# names its model and carries an "id", as the protocol asks. Each measurement is 1 s warm-up
# then SECONDS measured. Around each, the server's utime+stime (/proc/PID/stat) and its served
# requests, executions and rows (/metrics) are read: server CPU per request = CPU / requests
# served, warm-up included on both sides of the division. The client's own CPU per request
# comes from /usr/bin/time when it is installed. Odd rounds run HTTP first, even rounds the
# WebSocket first. Markdown on stdout and in bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
MODELS=${1:-../shared/models}
SECS=${2:-5}
ROUNDS=${3:-3}
N=${WS_INFLIGHT:-64}
FORMATS=${WS_FORMATS:-"json binary"}
BIN=${BATCHD_BIN:-build/batchd}
WSLOAD=${WS_LOAD_BIN:-build/ws_load}
PY=${PYTHON:-/usr/bin/python3}
[ -x "$BIN" ] && [ -x "$WSLOAD" ] || { echo "ws: build first (make build)" >&2; exit 1; }
TIME=/usr/bin/time
[ -x $TIME ] || { TIME=""; echo "ws: /usr/bin/time missing; no client CPU column" >&2; }

bench_temp
repo=$work/repo
mkdir -p "$repo/mlp/1" bench/results
ln -s "$(realpath "$MODELS/mlp/1/model.onnx")" "$repo/mlp/1/model.onnx"
start_server "$repo"
port=${url##*:}

# The WebSocket bodies: what batchd bench sends (--data zero) plus model_name and an id.
zeros=$(printf '0,%.0s' $(seq 64))
printf '{"model_name":"mlp","id":"00000000","inputs":[{"name":"input","datatype":"FP32","shape":[1,64],"data":[%s]}]}' \
  "${zeros%,}" > "$work/json.body"
printf '{"model_name":"mlp","id":"00000000","inputs":[{"name":"input","datatype":"FP32","shape":[1,64],"parameters":{"binary_data_size":256}}],"parameters":{"binary_data_output":true}}' \
  > "$work/binary.body"
binary_hl=$(stat -c %s "$work/binary.body")
head -c 256 /dev/zero >> "$work/binary.body"

tck=$(getconf CLK_TCK)
cpu_ticks() { sed 's/.*) //' "/proc/$srv/stat" | awk '{print $12 + $13}'; } # utime + stime
sum_metric() { metric "$1" mlp | awk '{s += $1} END {printf "%d", s}'; }
snapshot() { echo "$(cpu_ticks) $(sum_metric batchd_inference_requests_total)" \
  "$(sum_metric batchd_inference_executions_total) $(sum_metric batchd_inference_items_total)"; }

# measure ROUND FORMAT http|ws: one measurement, one line appended to $work/raw.tsv
measure() {
  local round=$1 fmt=$2 side=$3 before after cmd
  if [ "$side" = http ]; then
    cmd=("$BIN" bench --url "$url" --model mlp --concurrency "$N" --duration "${SECS}s"
         --warmup 1s --timeout 10s --quiet --json "$work/out.json")
    if [ "$fmt" = binary ]; then cmd+=(--binary); fi
  else
    cmd=("$WSLOAD" --port "$port" --inflight "$N" --warmup 1 --duration "$SECS" --timeout 10
         --body "$work/$fmt.body")
    if [ "$fmt" = binary ]; then cmd+=(--header-len "$binary_hl"); fi
  fi
  if [ -n "$TIME" ]; then cmd=("$TIME" -f '%U %S' -o "$work/time" "${cmd[@]}"); fi
  before=$(snapshot)
  # bench's JSON goes to --json; ws_load prints its line on stdout.
  if ! timeout $((SECS + 40)) "${cmd[@]}" > "$work/out.stdout" 2> "$work/out.err"; then
    echo "ws: $side $fmt round $round failed:" >&2
    cat "$work/out.err" "$work/out.stdout" >&2
    exit 1
  fi
  after=$(snapshot)
  if [ "$side" = ws ]; then cp "$work/out.stdout" "$work/out.json"; fi
  # shellcheck disable=SC2086  # before/after: 4 numbers each
  "$PY" - "$round" "$fmt" "$side" "$work/out.json" "${TIME:+$work/time}" "$tck" $before $after \
    >> "$work/raw.tsv" <<'PY'
import json, sys
rnd, fmt, side, path, tpath, tck = sys.argv[1:7]
c0, n0, e0, i0, c1, n1, e1, i1 = (int(x) for x in sys.argv[7:15])
r = json.load(open(path))
if side == "http":
    (lv,) = r["levels"]
    rps, lat = lv["achieved_rps"], lv["latency_us"]
    # null when no reply came (every request failed): NaN prints as nan
    p50, p99 = ((lat[k] if lat[k] is not None else float("nan")) / 1000 for k in ("p50", "p99"))
    transport = sum(v for k, v in lv["errors"].items() if not k.startswith("http_"))
    errors = lv["responses"] - lv["status_counts"].get("200", 0) + transport
else:
    rps, p50, p99, errors = r["rps"], r["p50_ms"], r["p99_ms"], r["errors"]
served = max(n1 - n0, 1)
server_cpu = (c1 - c0) / int(tck) * 1e6 / served
client_cpu = -1.0
if tpath:
    u, s = open(tpath).read().split()[-2:]
    client_cpu = (float(u) + float(s)) * 1e6 / served
batch = (i1 - i0) / (e1 - e0) if e1 > e0 else 0.0
print(f"{rnd}\t{fmt}\t{side}\t{rps:.1f}\t{p50:.3f}\t{p99:.3f}\t{server_cpu:.2f}\t"
      f"{client_cpu:.2f}\t{batch:.2f}\t{errors}")
PY
  echo "ws: round $round $fmt $side: $(tail -1 "$work/raw.tsv" | cut -f4-)" >&2
}

: > "$work/raw.tsv"
for r in $(seq 1 "$ROUNDS"); do
  for fmt in $FORMATS; do
    if [ $((r % 2)) = 1 ]; then order="http ws"; else order="ws http"; fi
    for side in $order; do
      measure "$r" "$fmt" "$side"
    done
  done
done

out=bench/results/ws-$(date -u +%Y%m%dT%H%M%SZ).md
{
  echo "## $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo
  echo "Command: \`bench/ws.sh $MODELS $SECS $ROUNDS\` ($N in flight on each side, 1 s warm-up, ${SECS} s measured, load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
  echo
  "$PY" - "$work/raw.tsv" "$N" <<'PY'
import statistics as st, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
n = sys.argv[2]
name = {"http": f"HTTP, {n} connections", "ws": f"WebSocket, 1 socket, {n} in flight"}
cols = ["req/s", "p50 ms", "p99 ms", "server CPU µs/req", "client CPU µs/req", "mean batch"]
fmt_ = ["{:,.0f}", "{:.2f}", "{:.2f}", "{:.1f}", "{:.1f}", "{:.1f}"]
print("| round | tensors | transport | " + " | ".join(cols) + " | errors |")
print("|---:|---|---|" + "---:|" * (len(cols) + 1))
for r in rows:
    vals = [float(x) for x in r[3:9]]
    cells = [f.format(v) if v >= 0 else "n/a" for f, v in zip(fmt_, vals)]
    print(f"| {r[0]} | {r[1]} | {name[r[2]]} | " + " | ".join(cells) + f" | {r[9]} |")
print()
print("Medians of the rounds (min–max in brackets); WS/HTTP is the ratio of the medians, then "
      "the range of the per-round ratios:")
print()
print("| tensors | metric | HTTP | WebSocket | WS/HTTP |")
print("|---|---|---:|---:|---:|")
fmts = []
for r in rows:
    if r[1] not in fmts:
        fmts.append(r[1])
for f in fmts:
    for k, (c, ff) in enumerate(zip(cols, fmt_)):
        by = {}
        for side in ("http", "ws"):
            by[side] = {int(r[0]): float(r[3 + k]) for r in rows if r[1] == f and r[2] == side}
        if any(v < 0 for s in by.values() for v in s.values()):
            continue
        cell = {s: f"{ff.format(st.median(v.values()))} ({ff.format(min(v.values()))}–"
                   f"{ff.format(max(v.values()))})" for s, v in by.items()}
        ratios = [by["ws"][i] / by["http"][i] for i in by["ws"] if i in by["http"] and by["http"][i]]
        mh = st.median(by["http"].values())
        ratio = st.median(by["ws"].values()) / mh if mh else float("nan")
        rr = f"{ratio:.2f} ({min(ratios):.2f}–{max(ratios):.2f})" if ratios else "n/a"
        print(f"| {f} | {c} | {cell['http']} | {cell['ws']} | {rr} |")
PY
} | tee "$out"
echo "ws: written to $out" >&2
