#!/usr/bin/env bash
# bench/delay.sh: fixed max_queue_delay_us values against "auto", per model and load, in one
# run (ratios, not absolute numbers, are what carries between runs on a shared machine).
#
#   bench/delay.sh [MODELS_DIR] [SECONDS]      (defaults: ../shared/models, 5)
#
# Models: mobilenet_v2 (a CNN: cost grows linearly with the batch on this CPU) and `fixed`,
# a sim model with a large fixed cost per call (5 ms + 0.1 ms per row, max_batch_size 32).
# Loads, all open loop with batchd bench, so latency counts from the scheduled send time:
#   light  - Poisson at a tenth of batch-1 capacity
#   bursty - bursts of 16 requests at once, mean rate about half of what batching allows
#   heavy  - Poisson near the capacity that batching allows
# For each (model, delay, load) it reports achieved req/s, p50/p99 latency, the mean batch
# size formed (from /metrics) and failures. Markdown on stdout and in bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
MODELS=${1:-../shared/models}
SECS=${2:-5}
BIN=${BATCHD_BIN:-build/batchd}
MODELS_RUN=${DELAY_MODELS:-"mobilenet_v2 fixed"}   # e.g. DELAY_MODELS=fixed for the sim model only
PY=${PYTHON:-/usr/bin/python3}
[ -x "$BIN" ] || { echo "delay: build first (make build)" >&2; exit 1; }

bench_temp
repo=$work/repo
declare -A DELAYS=([mobilenet_v2]="0 2000 10000 auto" [fixed]="0 1000 5000 auto")
for m in mobilenet_v2 fixed; do
  for d in ${DELAYS[$m]}; do
    dir=$repo/${m}_d$d
    mkdir -p "$dir/1"
    [ "$d" = auto ] && dj='"auto"' || dj=$d
    if [ $m = mobilenet_v2 ]; then
      ln -s "$(realpath "$MODELS/mobilenet_v2/1/model.onnx")" "$dir/1/model.onnx"
      echo "{\"max_batch_size\": 32, \"dynamic_batching\": {\"max_queue_delay_us\": $dj}}" > "$dir/config.json"
    else
      cat > "$dir/config.json" <<JSON
{"backend": "sim", "max_batch_size": 32,
 "dynamic_batching": {"max_queue_delay_us": $dj, "max_queue_size": 4096},
 "inputs": [{"name": "INPUT0", "datatype": "FP32", "dims": [16]}],
 "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "dims": [16]}],
 "sim": {"latency_us": 5000, "per_item_us": 100}}
JSON
    fi
  done
done
start_server "$repo"

# load NAME -> "bench args" per model
load_args() {
  case "$1:$2" in
    mobilenet_v2:light)  echo "--rate 10 --distribution poisson" ;;
    mobilenet_v2:bursty) echo "--rate 60 --distribution bursty --burst 16" ;;
    mobilenet_v2:heavy)  echo "--rate 110 --distribution poisson" ;;
    fixed:light)         echo "--rate 20 --distribution poisson" ;;
    fixed:bursty)        echo "--rate 1000 --distribution bursty --burst 16" ;;
    fixed:heavy)         echo "--rate 3000 --distribution poisson" ;;
  esac
}

out=bench/results/delay-$(date -u +%Y%m%dT%H%M%SZ).md
mkdir -p bench/results
{
  echo "| model | load | max_queue_delay_us | offered/s | achieved/s | p50 ms | p99 ms | mean batch | failed |"
  echo "|---|---|---|---:|---:|---:|---:|---:|---:|"
} > "$work/t.md"
for m in $MODELS_RUN; do
  for load in light bursty heavy; do
    for d in ${DELAYS[$m]}; do
      name=${m}_d$d
      e0=$(metric batchd_inference_executions_total "$name"); i0=$(metric batchd_inference_items_total "$name")
      # shellcheck disable=SC2046
      "$BIN" bench --url "$url" --model "$name" --binary $(load_args $m $load) \
        --duration "${SECS}s" --warmup 1s --timeout 10s --quiet --json "$work/r.json" >/dev/null 2>"$work/b.err" \
        || { echo "delay: bench failed for $name $load"; cat "$work/b.err"; exit 1; }
      e1=$(metric batchd_inference_executions_total "$name"); i1=$(metric batchd_inference_items_total "$name")
      "$PY" bench/row.py delay "$work/r.json" "$m" "$load" "$d" "$e0" "$e1" "$i0" "$i1" >> "$work/t.md"
      echo "delay: $m $load delay=$d done" >&2
    done
  done
done
{
  echo "## $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo
  echo "Command: \`bench/delay.sh $MODELS $SECS\` (batchd bench, open loop, binary tensors, 1 s warm-up)"
  echo
  cat "$work/t.md"
} | tee "$out"
