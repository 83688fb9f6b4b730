#!/usr/bin/env bash
# bench/floor.sh: what one request costs batchd next to nginx `return 200` (issue 11), in one
# run: req/s, and server CPU, syscalls and context switches per request, for an identity infer
# (sim model, 64-byte binary tensor in, binary out) and GET /v2/health/live; then the mlp (ONNX)
# at concurrency 64 and 1 against nginx fed the same body, with the mean batch and, at 1, the p50
# against in-process ONNX Runtime at batch 1 (ort_inproc).
#
#   bench/floor.sh [MODELS_DIR] [SECONDS] [REPS]      (defaults: ../shared/models, 5, 3)
#
# Environment: BATCHD_BIN (build/batchd), ORT_INPROC_BIN (build/ort_inproc), PYTHON
# (/usr/bin/python3), FLOOR_SYSCALLS (perf, strace or none; default: perf when it can count
# raw_syscalls:sys_enter here, else strace, else none).
#
# wrk 1 thread, 64 connections (mlp: 64, then 1). Each rep runs every workload on nginx and on
# batchd back to back (which goes first alternates per rep), so the machine's noise hits both
# alike; the table gives medians over the reps and batchd/nginx as the median of the per-rep
# ratios (min..max). Per-request figures are of the server process during its wrk run (nginx:
# its one worker; batchd: the whole process), divided by the requests wrk completed: utime +
# stime from /proc/PID/stat, voluntary + nonvoluntary context switches summed over
# /proc/PID/task/*/status; syscalls are counted by `perf stat -e raw_syscalls:sys_enter -p PID`
# (or strace -c -f -p) over a second run of at most 2 s right after, whose req/s and CPU are
# not used: counting slows the server (perf's tracepoint added 3-4 µs of CPU to a health check
# here). Markdown on stdout and in bench/results/floor-<UTC time>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${1:-../shared/models}
SECS=${2:-5}
REPS=${3:-3}
BIN=${BATCHD_BIN:-build/batchd}
INPROC=${ORT_INPROC_BIN:-build/ort_inproc}
PY=${PYTHON:-/usr/bin/python3}
. bench/lib.sh
command -v wrk >/dev/null ||
  { echo "floor: wrk is missing (scripts/setup.sh installs it)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "floor: build first (make build)" >&2; exit 1; }

bench_temp
mkdir -p bench/results

# How syscalls get counted: perf if it counts here (root, or perf_event_paranoid allows it).
SYSCALLS=${FLOOR_SYSCALLS:-}
if [ -z "$SYSCALLS" ]; then
  SYSCALLS=none
  if command -v perf >/dev/null &&
    perf stat -e raw_syscalls:sys_enter -x, -o "$work/probe" -- true 2>/dev/null &&
    [ "$("$PY" bench/floor.py perf "$work/probe")" != n/a ]; then
    SYSCALLS=perf
  elif command -v strace >/dev/null; then
    SYSCALLS=strace
  fi
fi

request_path_repo "$work/repo" "$MODELS"
hl_identity=$("$PY" bench/make_body.py "$work/identity.body" INPUT0 1,16 OUTPUT0)
workloads="identity health"
if [ -n "$has_mlp" ]; then
  hl_mlp=$("$PY" bench/make_body.py "$work/mlp.body" input 1,64 probs)
  workloads="$workloads mlp64 mlp1"
else
  echo "floor: no $MODELS/mlp/1/model.onnx; skipping the mlp rows" >&2
fi

start_server "$work/repo"
batchd_url=$url

nginx_note=""
if command -v nginx >/dev/null; then
  port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
  mkdir -p "$work/nginx"
  cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $work/nginx/pid; error_log $work/nginx/error.log;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:$port; location / { return 200 "ok"; } } }
NGINX
  nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" 2> "$work/nginx/stderr" &
  ngx=$!
  others=$ngx
  nginx_url=http://127.0.0.1:$port
  for _ in $(seq 1 50); do
    curl -sf -o /dev/null "$nginx_url/" && break
    sleep 0.1
  done
  ngx_worker=$(pgrep -P "$ngx" | head -1 || true)
  if [ -z "$ngx_worker" ]; then
    echo "floor: nginx did not start" >&2
    cat "$work/nginx/stderr" "$work/nginx/error.log" >&2 2>/dev/null || true
    exit 1
  fi
else
  nginx_note="not installed"
  echo "floor: nginx not installed (apt-get install nginx-light); batchd's figures only" >&2
fi

tck=$(getconf CLK_TCK)
SYS_SECS=$((SECS < 2 ? SECS : 2)) # the syscall-counting runs
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; } # utime + stime
ctxsw() { # voluntary + nonvoluntary context switches over all threads
  { cat /proc/"$1"/task/*/status 2>/dev/null || true; } |
    awk '/^(non)?voluntary_ctxt_switches/ {s += $2} END {print s + 0}'
}

# wrk_cmd CONNS SECONDS WORKLOAD URL: sets cmd to the wrk command line of WORKLOAD against URL
# (the summary goes to $WRK_OUT).
wrk_cmd() {
  cmd=(wrk -t1 -c"$1" -d"$2s" --timeout 30s)
  case $3 in
    identity) cmd+=(-s bench/wrk_infer.lua "$4/v2/models/identity/infer" --
      "$work/identity.body" "$hl_identity") ;;
    health) cmd+=(-s bench/wrk_get.lua "$4/v2/health/live") ;;
    mlp*) cmd+=(-s bench/wrk_infer.lua "$4/v2/models/mlp/infer" -- "$work/mlp.body" "$hl_mlp") ;;
  esac
}

# measure REP SERVER WORKLOAD: one measured run, a JSON line appended to $work/runs.jsonl.
measure() {
  local rep=$1 who=$2 what=$3 pid target conns=64 model="" e0="" e1="" i0="" i1="" t0 t1 c0 c1 sc=n/a
  if [ "$who" = nginx ]; then pid=$ngx_worker target=$nginx_url; else pid=$srv target=$batchd_url; fi
  [ "$what" = mlp1 ] && conns=1
  case $what in identity) model=identity ;; mlp*) model=mlp ;; esac
  if [ "$who" = batchd ] && [ -n "$model" ]; then
    e0=$(metric batchd_inference_executions_total $model)
    i0=$(metric batchd_inference_items_total $model)
  fi
  wrk_cmd "$conns" "$SECS" "$what" "$target"
  t0=$(ticks "$pid")
  c0=$(ctxsw "$pid")
  WRK_OUT=$work/r.json "${cmd[@]}" > /dev/null
  t1=$(ticks "$pid")
  c1=$(ctxsw "$pid")
  if [ "$who" = batchd ] && [ -n "$model" ]; then
    e1=$(metric batchd_inference_executions_total $model)
    i1=$(metric batchd_inference_items_total $model)
  fi
  # Syscalls in a second, shorter run: counting them slows the server (perf's tracepoint by
  # a few µs a request here, strace many times over), which would skew the run above.
  wrk_cmd "$conns" "$SYS_SECS" "$what" "$target"
  if [ "$SYSCALLS" = perf ]; then # perf counts PID's threads while wrk runs, not wrk itself
    WRK_OUT=$work/s.json perf stat -e raw_syscalls:sys_enter -p "$pid" -x, -o "$work/perf.txt" \
      -- "${cmd[@]}" > /dev/null
    sc=$("$PY" bench/floor.py perf "$work/perf.txt")
  elif [ "$SYSCALLS" = strace ]; then
    strace -c -f -p "$pid" -o "$work/strace.txt" 2> /dev/null &
    local st=$!
    sleep 0.5 # let it attach to every thread
    WRK_OUT=$work/s.json "${cmd[@]}" > /dev/null
    kill -INT $st
    wait $st || true
    sc=$("$PY" bench/floor.py strace "$work/strace.txt")
  fi
  "$PY" bench/floor.py record "$work/r.json" "$rep" "$who" "$what" "$tck" $((t1 - t0)) \
    $((c1 - c0)) "$sc" "$work/s.json" "$e0" "$e1" "$i0" "$i1" >> "$work/runs.jsonl"
  echo "floor: rep $rep $who $what: $(tail -1 "$work/runs.jsonl")" >&2
}

servers="batchd"
[ -z "$nginx_note" ] && servers="nginx batchd"
for who in $servers; do # warm-up: first connections, first model runs
  for what in $workloads; do
    target=$batchd_url
    [ "$who" = nginx ] && target=$nginx_url
    wrk_cmd 8 1 "$what" "$target"
    WRK_OUT=$work/warm.json "${cmd[@]}" > /dev/null
  done
done

threads=$(grep -o 'model=mlp version=1 state=ready .*threads_per_instance=[0-9]*' "$work/server.log" |
  sed 's/.*=//' || true)
: > "$work/runs.jsonl"
for rep in $(seq 1 "$REPS"); do
  order=$servers
  if [ $((rep % 2)) = 0 ] && [ -z "$nginx_note" ]; then order="batchd nginx"; fi
  for what in $workloads; do
    for who in $order; do
      measure "$rep" "$who" "$what"
    done
  done
  if [ -x "$INPROC" ] && [ -n "${hl_mlp:-}" ]; then
    kill -STOP "$srv" # keep the idle server off the CPU while the in-process run measures
    "$INPROC" "$MODELS/mlp/1/model.onnx" "${threads:-1}" 1 "$SECS" 2> /dev/null |
      "$PY" bench/floor.py inproc "$rep" >> "$work/runs.jsonl"
    kill -CONT "$srv"
  fi
done

case $SYSCALLS in
  perf) sysnote="counted by \`perf stat -e raw_syscalls:sys_enter -p PID\` over a second run of ${SYS_SECS} s after each measured one (counting costs the server a few µs a request, so the measured run goes uncounted)" ;;
  strace) sysnote="counted by \`strace -c -f -p PID\` over a second run of ${SYS_SECS} s after each measured one (strace slows the server many times over, so only the measured run gives req/s and CPU)" ;;
  *) sysnote="not counted (neither perf nor strace works here)" ;;
esac
out=bench/results/floor-$(date -u +%Y%m%dT%H%M%SZ).md
{
  echo "## HTTP floor per request, $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo
  echo "Command: \`bench/floor.sh $MODELS $SECS $REPS\` (BATCHD_BIN=$BIN; wrk 1 thread, 64 connections unless said; medians of $REPS rep(s) of $SECS s, each rep running nginx and batchd back to back, the order alternating; batchd/nginx: the median of the per-rep ratios (min..max); $( [ -z "$nginx_note" ] && nginx -v 2>&1 | sed 's/.*version: //' || echo "nginx not installed"); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
  echo
  "$PY" bench/floor.py table "$work/runs.jsonl" "$nginx_note"
  echo
  echo "Identity infer: a sim model (latency 0, max_batch_size 64, batching on) posted INPUT0 FP32 [1,16] (64 B) as a binary tensor, asking for OUTPUT0 in binary; nginx gets the same POST. Server CPU: utime+stime of the process (nginx: its worker); context switches summed over its threads; syscalls $sysnote; each divided by wrk's completed requests. DESIGN's goals: batchd/nginx req/s at least 0.8, CPU per request at most 1.5."
} | tee "$out"
echo "floor: written to $out" >&2
