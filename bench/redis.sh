#!/usr/bin/env bash
# bench/redis.sh: Redis Streams ingest end to end (issue 9). For each model (the sim model,
# and mlp / mobilenet_v2 when MODELS_DIR has them) and 1 and 2 batchd processes sharing one
# consumer group, a producer writes FRAMES frames over 100 camera streams as fast as Redis
# takes them; prints frames/s end to end and the XADD -> result latency (p50/p99/max, ms, from
# the stream ids) as a Markdown table and writes it to bench/results/.
#
#   bench/redis.sh [MODELS_DIR] [FRAMES]      (defaults: ../shared/models, 100000)
#   BENCH_REDIS_MODELS="sim mlp mobilenet_v2" to choose (default: sim mlp)
#
# Redis, the producer (python3-redis, one core at most) and batchd share the machine, as the
# issue's goals assume.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${1:-../shared/models}
FRAMES=${2:-100000}
BIN=${BATCHD_BIN:-build/batchd}
PY=${PYTHON:-/usr/bin/python3}
[ -x "$BIN" ] || { echo "bench: build first (make build)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "bench: redis-server is missing (scripts/setup.sh)" >&2; exit 1; }
mkdir -p bench/results
out=bench/results/redis-$(date -u +%Y%m%dT%H%M%SZ).md
{
  echo "| model | batchd processes | cameras | frames | results | producer frames/s | end-to-end frames/s | p50 ms | p99 ms | max ms |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
} > "$out"
for m in ${BENCH_REDIS_MODELS:-sim mlp}; do
  if [ "$m" != sim ] && [ ! -f "$MODELS/$m/1/model.onnx" ]; then
    echo "bench: $MODELS/$m/1/model.onnx not found; skipping $m" >&2
    continue
  fi
  n=$FRAMES
  [ "$m" = mobilenet_v2 ] && n=$(( FRAMES < 3000 ? FRAMES : 3000 ))
  for procs in 1 2; do
    "$PY" bench/redis_bench.py --bin "$BIN" --model "$m" --models "$MODELS" --procs "$procs" \
      --cameras 100 --frames "$n" >> "$out"
    echo "bench: $m procs=$procs done" >&2
  done
done
cat "$out"
