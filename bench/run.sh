#!/usr/bin/env bash
# bench/run.sh: batchd over HTTP (binary tensors, wrk closed loop) next to the same models run
# in-process through ONNX Runtime, in one run, so the ratios are fair on a shared machine.
#
#   bench/run.sh [MODELS_DIR] [SECONDS]      (defaults: ../shared/models, 5)
#
# For each model (mlp, mobilenet_v2) it serves two copies: batching on (all defaults) and
# batching off ("dynamic_batching": false), drives each at concurrency 1, 8, 32, 64 with one
# row per request, reads the formed batch sizes back from /metrics, and runs the model
# in-process at batch 1, 8, 32 and 64 with the thread count the server chose for it, then the
# ratios (best rows/s served against best in-process, p50 at concurrency 1 against batch 1).
# Prints Markdown tables and writes them to bench/results/. Then bench/floor.sh MODELS_DIR SECONDS (its own servers, 3 reps):
# req/s and server CPU, syscalls and context switches per request next to nginx `return 200`;
# last, bench/cnn.sh MODELS_DIR SECONDS 3: mobilenet_v2 and resnet18 at 16 connections against
# in-process, with CPU per row of the server, of in-process and of wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
MODELS=${1:-../shared/models}
SECS=${2:-5}
CONC=${BENCH_CONCURRENCY:-"1 8 32 64"}
BIN=${BATCHD_BIN:-build/batchd}
INPROC=${ORT_INPROC_BIN:-build/ort_inproc}
PY=${PYTHON:-/usr/bin/python3}
command -v wrk >/dev/null || { echo "bench: wrk is missing (scripts/setup.sh installs it)" >&2; exit 1; }
[ -x "$BIN" ] && [ -x "$INPROC" ] || { echo "bench: build first (make build)" >&2; exit 1; }

bench_temp
repo=$work/repo
mkdir -p "$repo" bench/results
for m in mlp mobilenet_v2; do
  for mode in batch nobatch; do
    mkdir -p "$repo/${m}_$mode/1"
    ln -s "$(realpath "$MODELS/$m/1/model.onnx")" "$repo/${m}_$mode/1/model.onnx"
    if [ $mode = nobatch ]; then
      echo '{"dynamic_batching": false}' > "$repo/${m}_$mode/config.json"
    fi
  done
done

start_server "$repo"

out=bench/results/$(date -u +%Y%m%dT%H%M%SZ).md
{
  echo "| model | mode | concurrency | req/s (= rows/s) | mean batch | p50 ms | p99 ms | errors |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
} > "$work/http.md"
for m in mlp mobilenet_v2; do
  if [ $m = mlp ]; then in=input; dims=1,64; o=probs; else in=input; dims=1,3,224,224; o=logits; fi
  hl=$("$PY" bench/make_body.py "$work/$m.body" $in $dims $o)
  for mode in batch nobatch; do
    name=${m}_$mode
    WRK_OUT=$work/warm.json wrk -t1 -c1 -d1s -s bench/wrk_infer.lua "$url/v2/models/$name/infer" -- "$work/$m.body" "$hl" >/dev/null
    for c in $CONC; do
      e0=$(metric batchd_inference_executions_total $name); i0=$(metric batchd_inference_items_total $name)
      WRK_OUT=$work/r.json wrk -t1 -c"$c" -d"${SECS}s" --timeout 30s -s bench/wrk_infer.lua \
        "$url/v2/models/$name/infer" -- "$work/$m.body" "$hl" >/dev/null
      e1=$(metric batchd_inference_executions_total $name); i1=$(metric batchd_inference_items_total $name)
      "$PY" bench/row.py http "$work/r.json" "$m" "$mode" "$c" "$e0" "$e1" "$i0" "$i1" >> "$work/http.md"
      echo "bench: $m $mode c=$c done" >&2
    done
  done
done

{
  echo "| model | batch | threads | calls/s | rows/s | p50 ms | p99 ms |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
} > "$work/inproc.md"
kill -STOP $srv  # keep the idle server off the CPU while the in-process runs measure
for m in mlp mobilenet_v2; do
  for b in $CONC; do
    threads=$(grep -o "model=${m}_batch .*threads_per_instance=[0-9]*" "$work/server.log" | sed 's/.*=//')
    "$INPROC" "$MODELS/$m/1/model.onnx" "$threads" "$b" "$SECS" | "$PY" bench/row.py inproc "$m" >> "$work/inproc.md"
    echo "bench: in-process $m batch=$b done" >&2
  done
done
kill -CONT $srv

{
  echo "## $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo
  echo "Command: \`bench/run.sh $MODELS $SECS\` (wrk 1 thread, one row per request, binary tensors; server defaults)"
  echo
  echo "### Over HTTP"
  echo
  cat "$work/http.md"
  echo
  echo "### In-process ONNX Runtime (same backend code, no server)"
  echo
  cat "$work/inproc.md"
  echo
  echo "### Against in-process"
  echo
  "$PY" bench/row.py ratios "$work/http.md" "$work/inproc.md"
  echo
  echo "Best rows/s over the concurrencies above (HTTP, batching on) against the best batch in-process with the same threads; p50 at concurrency 1 against in-process batch 1. DESIGN's goals for a CNN: ratio at least 0.95, p50 at most +0.3 ms (the mlp is bound by the HTTP loop: bench/floor.sh compares it with nginx)."
} | tee "$out"
echo "bench: written to $out" >&2

kill $srv # bench/floor.sh starts its own server and nginx
wait $srv 2>/dev/null || true
echo
BATCHD_BIN=$BIN ORT_INPROC_BIN=$INPROC PYTHON=$PY bash bench/floor.sh "$MODELS" "$SECS"
echo
BATCHD_BIN=$BIN ORT_INPROC_BIN=$INPROC PYTHON=$PY bash bench/cnn.sh "$MODELS" "$SECS" 3
