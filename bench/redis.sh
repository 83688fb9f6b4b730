#!/usr/bin/env bash
# bench/redis.sh: Redis Streams ingest end to end (issue 9). For each model (the sim model,
# and mlp / mobilenet_v2 when MODELS_DIR has them) and 1 and 2 batchd processes sharing one
# consumer group, a producer writes FRAMES frames over 100 camera streams as fast as Redis
# takes them; prints frames/s end to end and the XADD -> result latency (p50/p99/max, ms, from
# the stream ids) as a Markdown table and writes it to bench/results/. Each run first sends
# WARMUP frames (1000 by default, BENCH_REDIS_WARMUP) and waits for their results, as an
# in-process run warms up before it measures; they are left out of every figure.
#
# Two modes per run: "live" (the producer writes while batchd reads: frames/s and latency) and
# "drain" (batchd paused while the producer writes, then resumed: frames/s of batchd and Redis
# alone with a full backlog, the fair match for an in-process run). For the ONNX models it then
# runs the same model in-process (ORT_INPROC_BIN, build/ort_inproc by default) at batch 1, 8
# and 32 with the threads batchd chose (1 under 1 MiB of model.onnx, else the cores), so the
# ratio to in-process comes from the same session.
#
#   bench/redis.sh [MODELS_DIR] [FRAMES]      (defaults: ../shared/models, 100000)
#   BENCH_REDIS_MODELS="sim mlp mobilenet_v2" to choose (default: sim mlp)
#   BENCH_REDIS_MODES="live drain" (default: live)
#   REDIS_SPINNING=on: the ONNX models' intra_op_spinning, in batchd and in-process (default off)
#   REDIS_TRANSPORT="tcp unix": batchd reaches Redis over loopback TCP, its unix socket, or each
#     in turn (default: tcp)
#
# Redis, the producer (python3-redis, one core at most) and batchd share the machine, as the
# issue's goals assume. mobilenet_v2 frames are 602,112 bytes: at most 3000 are written.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${1:-../shared/models}
FRAMES=${2:-100000}
BIN=${BATCHD_BIN:-build/batchd}
INPROC=${ORT_INPROC_BIN:-$(dirname "$BIN")/ort_inproc}
PY=${PYTHON:-/usr/bin/python3}
SPIN=${REDIS_SPINNING:-off}
case $SPIN in on | off) ;; *) echo "bench: REDIS_SPINNING must be on or off" >&2; exit 2 ;; esac
TRANSPORTS=${REDIS_TRANSPORT:-tcp}
for t in $TRANSPORTS; do
  case $t in tcp | unix) ;; *) echo "bench: REDIS_TRANSPORT must list tcp and/or unix" >&2; exit 2 ;; esac
done
[ -x "$BIN" ] || { echo "bench: build first (make build)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "bench: redis-server is missing (scripts/setup.sh)" >&2; exit 1; }
mkdir -p bench/results
out=bench/results/redis-$(date -u +%Y%m%dT%H%M%SZ).md
{
  echo "## $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo
  echo "Command: \`REDIS_SPINNING=$SPIN REDIS_TRANSPORT=\"$TRANSPORTS\" BENCH_REDIS_MODELS=\"${BENCH_REDIS_MODELS:-sim mlp}\" BENCH_REDIS_MODES=\"${BENCH_REDIS_MODES:-live}\" bench/redis.sh $MODELS $FRAMES\`"
  echo
  echo "| model | batchd processes | mode | cameras | frames | results | producer frames/s | end-to-end frames/s | mean batch | p50 ms | p99 ms | max ms |"
  echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
} > "$out"
inproc=""
for m in ${BENCH_REDIS_MODELS:-sim mlp}; do
  if [ "$m" != sim ] && [ ! -f "$MODELS/$m/1/model.onnx" ]; then
    echo "bench: $MODELS/$m/1/model.onnx not found; skipping $m" >&2
    continue
  fi
  n=$FRAMES
  [ "$m" = mobilenet_v2 ] && n=$(( FRAMES < 3000 ? FRAMES : 3000 ))
  for mode in ${BENCH_REDIS_MODES:-live}; do
    flag=""
    [ "$mode" = drain ] && flag=--drain
    for procs in 1 2; do
      for t in $TRANSPORTS; do
        unix=""
        [ "$t" = unix ] && unix=--unix
        "$PY" bench/redis_bench.py --bin "$BIN" --model "$m" --models "$MODELS" --procs "$procs" \
          --cameras 100 --frames "$n" --warmup "${BENCH_REDIS_WARMUP:-1000}" --spinning "$SPIN" $flag $unix >> "$out"
        echo "bench: $m $mode procs=$procs $t done" >&2
      done
    done
  done
  if [ "$m" != sim ] && [ -x "$INPROC" ]; then
    size=$(stat -L -c %s "$MODELS/$m/1/model.onnx")
    threads=$(( size < 1048576 ? 1 : $(nproc) ))
    for b in 1 8 32; do
      inproc+=$("$INPROC" "$MODELS/$m/1/model.onnx" "$threads" "$b" 5 --intra-op-spinning "$SPIN" 2>/dev/null | "$PY" bench/row.py inproc "$m")$'\n'
      echo "bench: in-process $m batch=$b done" >&2
    done
  fi
done
if [ -n "$inproc" ]; then
  {
    echo
    echo "In-process ONNX Runtime, same session (build/ort_inproc, threads as batchd chose):"
    echo
    echo "| model | batch | threads | calls/s | rows/s | p50 ms | p99 ms |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    printf '%s' "$inproc"
  } >> "$out"
fi
cat "$out"
