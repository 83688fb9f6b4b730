#!/usr/bin/env bash
# bench/cnn.sh: the CNNs over HTTP against in-process ONNX Runtime (issue 11's goals for
# mobilenet_v2 and resnet18), in one run: batchd with its defaults, fed one binary FP32
# [1,3,224,224] row per request by wrk at CONNS connections and at 1; between them, with the
# server stopped (SIGSTOP), ort_inproc on the same model with the threads the server chose, at
# batch 1, 8, 16 and 32.
#
#   bench/cnn.sh [MODELS_DIR] [SECONDS] [REPS] [CONNS]   (defaults: ../shared/models, 6, 3, 16)
#
# Environment: BATCHD_BIN (build/batchd), ORT_INPROC_BIN (build/ort_inproc), PYTHON
# (/usr/bin/python3), CNN_MODELS (mobilenet_v2 resnet18), CNN_SPINNING (off; on: the models'
# config.json sets "intra_op_spinning": true and ort_inproc runs with --intra-op-spinning on).
#
# Per model and rep: batchd's rows/s at CONNS, its mean batch, its server CPU per row (utime +
# stime from /proc/PID/stat over the wrk run, divided by the rows), wrk's own CPU per request
# (what the load generator takes from the same cores), p50 at concurrency 1; the
# in-process rows/s at each batch and the best of them, and its CPU per row (threads / rows/s,
# its threads being busy throughout). The ratio is batchd's rows/s over the in-process best of
# the same rep; the table gives medians over the reps and the ratio's min..max. Each rep ends
# with a sim model (latency 0) fed the same 602 KB row plus a 16-byte input, replying with the
# small one only: the server's own CPU per request there is what serving a row costs besides
# the model. Markdown on stdout and in bench/results/cnn-<UTC time>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${1:-../shared/models}
SECS=${2:-6}
REPS=${3:-3}
CONNS=${4:-16}
SPIN=${CNN_SPINNING:-off}
case $SPIN in on | off) ;; *) echo "cnn: CNN_SPINNING must be on or off" >&2; exit 2 ;; esac
BIN=${BATCHD_BIN:-build/batchd}
INPROC=${ORT_INPROC_BIN:-build/ort_inproc}
PY=${PYTHON:-/usr/bin/python3}
. bench/lib.sh
command -v wrk >/dev/null ||
  { echo "cnn: wrk is missing (scripts/setup.sh installs it)" >&2; exit 1; }
[ -x "$BIN" ] && [ -x "$INPROC" ] || { echo "cnn: build first (make build)" >&2; exit 1; }

bench_temp
models=""
for m in ${CNN_MODELS:-mobilenet_v2 resnet18}; do
  if [ -f "$MODELS/$m/1/model.onnx" ]; then
    mkdir -p "$work/repo/$m/1"
    ln -s "$(realpath "$MODELS/$m/1/model.onnx")" "$work/repo/$m/1/model.onnx"
    [ "$SPIN" = on ] && echo '{"intra_op_spinning": true}' > "$work/repo/$m/config.json"
    models="$models $m"
  else
    echo "cnn: no $MODELS/$m/1/model.onnx; skipping $m" >&2
  fi
done
[ -n "$models" ] || { echo "cnn: no model to run" >&2; exit 1; }
# Both take FP32 [N,3,224,224] named "input" and give "logits".
hl=$("$PY" bench/make_body.py "$work/body" input 1,3,224,224 logits)
# The server's own work on such a row: a sim model (latency 0) that takes the same input and a
# 16-byte one, and echoes them; each request asks for the small one only, as a CNN's reply is
# small.
mkdir -p "$work/repo/sim_cnn/1"
cat > "$work/repo/sim_cnn/config.json" <<'JSON'
{"backend": "sim", "max_batch_size": 64,
 "inputs": [{"name": "input", "datatype": "FP32", "dims": [3, 224, 224]},
            {"name": "tag", "datatype": "FP32", "dims": [4]}],
 "outputs": [{"name": "echo", "datatype": "FP32", "dims": [3, 224, 224]},
             {"name": "logits", "datatype": "FP32", "dims": [4]}]}
JSON
sim_hl=$("$PY" - "$work/sim.body" <<'PY'
import json, struct, sys
n = 3 * 224 * 224
head = json.dumps({"inputs": [
    {"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224],
     "parameters": {"binary_data_size": n * 4}},
    {"name": "tag", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}],
    "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]},
    separators=(",", ":")).encode()
with open(sys.argv[1], "wb") as f:
    f.write(head + struct.pack("<%df" % n, *[((i * 37) % 101) / 101.0 for i in range(n)])
            + struct.pack("<4f", 1, 2, 3, 4))
print(len(head))
PY
)

start_server "$work/repo"
tck=$(getconf CLK_TCK)
ticks() { sed 's/.*) //' "/proc/$srv/stat" | awk '{print $12 + $13}'; } # utime + stime
# CPU seconds (user + system) of this shell's finished children: `times` in the shell itself
# (its second line), since a subshell would count its own children only.
child_cpu() { # sets cpu
  times > "$work/times"
  cpu=$(awk 'NR == 2 { split($0, f, /[ms ]+/); print f[1] * 60 + f[2] + f[3] * 60 + f[4] }' \
    "$work/times")
}
wrk_run() { # CONNS MODEL SECONDS: the summary JSON in $work/r.json, wrk's CPU in $wrk_cpu
  local c0 body=$work/body h=$hl
  [ "$2" = sim_cnn ] && body=$work/sim.body h=$sim_hl
  child_cpu
  c0=$cpu
  WRK_OUT=$work/r.json wrk -t1 -c"$1" -d"$3s" --timeout 30s -s bench/wrk_infer.lua \
    "$url/v2/models/$2/infer" -- "$body" "$h" > /dev/null
  child_cpu
  wrk_cpu=$(awk -v a="$c0" -v b="$cpu" 'BEGIN { print b - a }')
}

for m in $models sim_cnn; do # warm-up: first connections, first runs of the batch sizes
  wrk_run "$CONNS" "$m" 2
  wrk_run 1 "$m" 1
done

: > "$work/runs.jsonl"
for rep in $(seq 1 "$REPS"); do
  for m in $models; do
    threads=$(grep -o "model=$m version=1 state=ready .*threads_per_instance=[0-9]*" \
      "$work/server.log" | sed 's/.*=//' | head -1)
    e0=$(metric batchd_inference_executions_total "$m")
    i0=$(metric batchd_inference_items_total "$m")
    t0=$(ticks)
    wrk_run "$CONNS" "$m" "$SECS"
    t1=$(ticks)
    e1=$(metric batchd_inference_executions_total "$m")
    i1=$(metric batchd_inference_items_total "$m")
    cp "$work/r.json" "$work/many.json"
    many_wrk_cpu=$wrk_cpu
    wrk_run 1 "$m" "$SECS"
    kill -STOP "$srv" # keep the idle server off the CPU while the in-process runs measure
    for b in 1 8 16 32; do
      "$INPROC" "$MODELS/$m/1/model.onnx" "${threads:-1}" "$b" "$SECS" \
        --intra-op-spinning "$SPIN" 2> /dev/null > "$work/ip$b.json"
    done
    kill -CONT "$srv"
    "$PY" - "$rep" "$m" "${threads:-1}" "$CONNS" "$tck" $((t1 - t0)) "$e0" "$e1" "$i0" "$i1" \
      "$work" "$many_wrk_cpu" >> "$work/runs.jsonl" <<'PY'
import json, sys
rep, model, threads, conns, tck, ticks, e0, e1, i0, i1, work, wrk_cpu = sys.argv[1:]
many = json.load(open(work + "/many.json"))
one = json.load(open(work + "/r.json"))
rows = int(i1) - int(i0)
ip = {b: json.loads(open("%s/ip%d.json" % (work, b)).read()) for b in (1, 8, 16, 32)}
best = max(ip.values(), key=lambda r: r["rows_per_s"])
rps = many["requests"] / (many["duration_us"] / 1e6)
print(json.dumps({
    "rep": int(rep), "model": model, "threads": int(threads), "conns": int(conns),
    "rps": rps, "errors": many["non2xx"] + many["socket_errors"] + one["non2xx"] + one["socket_errors"],
    "batch": rows / (int(e1) - int(e0)) if int(e1) > int(e0) else None,
    "cpu_ms_row": int(ticks) / int(tck) * 1e3 / rows if rows else None,
    "wrk_cpu_ms_row": float(wrk_cpu) * 1e3 / many["requests"] if many["requests"] else None,
    "p50_ms": many["p50_us"] / 1e3, "c1_p50_ms": one["p50_us"] / 1e3,
    "inproc": {b: r["rows_per_s"] for b, r in ip.items()},
    "inproc_best": best["rows_per_s"], "inproc_best_batch": best["batch"],
    "inproc_cpu_ms_row": int(threads) * 1e3 / best["rows_per_s"],
    "inproc_b1_p50_ms": ip[1]["p50_us"] / 1e3,
}))
PY
    echo "cnn: rep $rep $m: $(tail -1 "$work/runs.jsonl")" >&2
  done
  t0=$(ticks)
  wrk_run "$CONNS" sim_cnn "$SECS"
  t1=$(ticks)
  cp "$work/r.json" "$work/many.json"
  wrk_run 1 sim_cnn "$SECS"
  "$PY" - "$rep" "$tck" $((t1 - t0)) "$work" >> "$work/runs.jsonl" <<'PY'
import json, sys
rep, tck, ticks, work = sys.argv[1:]
many = json.load(open(work + "/many.json"))
one = json.load(open(work + "/r.json"))
print(json.dumps({"rep": int(rep), "model": "sim_cnn",
                  "rps": many["requests"] / (many["duration_us"] / 1e6),
                  "cpu_us_req": int(ticks) / int(tck) * 1e6 / many["requests"],
                  "c1_p50_ms": one["p50_us"] / 1e3,
                  "errors": many["non2xx"] + many["socket_errors"] + one["non2xx"] + one["socket_errors"]}))
PY
  echo "cnn: rep $rep sim_cnn: $(tail -1 "$work/runs.jsonl")" >&2
done

mkdir -p bench/results
out=bench/results/cnn-$(date -u +%Y%m%dT%H%M%SZ).md
"$PY" - "$work/runs.jsonl" "$SECS" "$REPS" "$CONNS" "$SPIN" <<'PY' | tee "$out"
import json, statistics as st, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
secs, reps, conns, spin = sys.argv[2:]
med = lambda xs: st.median(xs) if xs else float("nan")
print("wrk -t1, %s s a run, %s reps; batchd with its defaults%s at %s connections and at 1; "
      "in-process: ort_inproc with the same threads, best of batch 1, 8, 16, 32.\n"
      % (secs, reps, " but intra_op_spinning (both sides)" if spin == "on" else "", conns))
print("| model | threads | batchd rows/s (mean batch) | in-process best rows/s (batch) | ratio (goal 0.95) "
      "| CPU ms per row, batchd / in-process / wrk | c1 p50 ms, batchd / in-process batch 1 (goal +0.3) | errors |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
sims = [r for r in runs if r["model"] == "sim_cnn"]
runs = [r for r in runs if r["model"] != "sim_cnn"]
for m in dict.fromkeys(r["model"] for r in runs):
    rs = [r for r in runs if r["model"] == m]
    ratio = [r["rps"] / r["inproc_best"] for r in rs]
    d = [r["c1_p50_ms"] - r["inproc_b1_p50_ms"] for r in rs]
    print("| %s | %d | %.0f (%.1f) | %.0f (%s) | **%.2f**, %.2f..%.2f | %.2f / %.2f / %.2f | %.2f / %.2f (%+.2f, %+.2f..%+.2f) | %d |" % (
        m, rs[0]["threads"], med([r["rps"] for r in rs]), med([r["batch"] for r in rs if r["batch"]]),
        med([r["inproc_best"] for r in rs]), "/".join(str(r["inproc_best_batch"]) for r in rs),
        med(ratio), min(ratio), max(ratio),
        med([r["cpu_ms_row"] for r in rs if r["cpu_ms_row"]]), med([r["inproc_cpu_ms_row"] for r in rs]),
        med([r["wrk_cpu_ms_row"] for r in rs if r["wrk_cpu_ms_row"]]),
        med([r["c1_p50_ms"] for r in rs]), med([r["inproc_b1_p50_ms"] for r in rs]), med(d), min(d), max(d),
        sum(r["errors"] for r in rs)))
print("\nPer rep (rows/s): " + "; ".join(
    "%s %d: %.0f vs %s" % (r["model"], r["rep"], r["rps"],
                          "/".join("%.0f" % r["inproc"][b] for b in ("1", "8", "16", "32")))
    for r in runs) + " (in-process at batch 1/8/16/32)")
if sims:
    print("\nThe server's own work on such a row, from a sim model (latency 0) taking the same "
          "602 KB input and a 16-byte one, each request asking for the small output only: "
          "%.0f µs of server CPU per request at %s connections (%.0f req/s), p50 %.2f ms at 1; "
          "%d errors." % (med([r["cpu_us_req"] for r in sims]), conns,
                          med([r["rps"] for r in sims]), med([r["c1_p50_ms"] for r in sims]),
                          sum(r["errors"] for r in sims)))
PY
echo "cnn: written to $out" >&2
