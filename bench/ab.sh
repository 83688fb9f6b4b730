#!/usr/bin/env bash
# bench/ab.sh: two builds of batchd side by side on the request path (issue 11), interleaved, so
# the machine's swings hit both alike: both servers run at once on the same repository (a sim
# identity model and, when MODELS_DIR has it, the mlp), and each rep drives identity infer and
# the mlp at CONNS connections with wrk on A and on B back to back, which goes first
# alternating per rep.
#
#   bench/ab.sh A_BIN B_BIN [MODELS_DIR] [CONNS] [REPS] [SECONDS]
#                                 (defaults: ../shared/models, 64, 6, 4)
#
# Environment: PYTHON (/usr/bin/python3).
#
# Per run: req/s and p50 from wrk, and the server's CPU per request (utime + stime of its
# process from /proc/PID/stat over the run, divided by wrk's completed requests). The table
# gives the medians over the reps (min..max) and B over A of the medians. A run with non-2xx
# replies or socket errors stops the script. Markdown on stdout and in
# bench/results/ab-<UTC time>.md.
set -euo pipefail
usage="usage: bench/ab.sh A_BIN B_BIN [MODELS_DIR] [CONNS] [REPS] [SECONDS]"
A=$(realpath -e "${1:?$usage}") # as given from where it was run, before the cd below
B=$(realpath -e "${2:?$usage}")
MODELS=$(realpath -m "${3:-$(dirname "$0")/../../shared/models}")
cd "$(dirname "$0")/.."
CONNS=${4:-64}
REPS=${5:-6}
SECS=${6:-4}
PY=${PYTHON:-/usr/bin/python3}
. bench/lib.sh
command -v wrk >/dev/null ||
  { echo "ab: wrk is missing (scripts/setup.sh installs it)" >&2; exit 1; }
for bin in "$A" "$B"; do
  [ -x "$bin" ] || { echo "ab: $bin is not an executable" >&2; exit 1; }
done

bench_temp
srv="" # both servers' pids
mkdir -p bench/results
request_path_repo "$work/repo" "$MODELS"
hl_identity=$("$PY" bench/make_body.py "$work/identity.body" INPUT0 1,16 OUTPUT0)
workloads=identity
if [ -n "$has_mlp" ]; then
  hl_mlp=$("$PY" bench/make_body.py "$work/mlp.body" input 1,64 probs)
  workloads="identity mlp"
else
  echo "ab: no $MODELS/mlp/1/model.onnx; identity infer only" >&2
fi

# start WHO BIN: sets pid_WHO and port_WHO.
start() {
  "$2" serve --model-repository "$work/repo" --http-port 0 2> "$work/$1.log" &
  local pid=$!
  srv="$srv $pid"
  listen_port "$work/$1.log" 30
  printf -v "pid_$1" '%s' "$pid"
  printf -v "port_$1" '%s' "$port"
}
start A "$A"
start B "$B"

# run WHO WORKLOAD SECONDS REP: one wrk run, a JSON line appended to runs.jsonl (REP 0: the
# warm-up, checked but not kept).
run() {
  local pid_var=pid_$1 port_var=port_$1 hl_var=hl_$2
  local pid=${!pid_var} t0 t1
  rm -f "$work/r.json"
  t0=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
  WRK_OUT=$work/r.json wrk -t1 -c"$CONNS" -d"$3s" --timeout 30s -s bench/wrk_infer.lua \
    "http://127.0.0.1:${!port_var}/v2/models/$2/infer" -- "$work/$2.body" "${!hl_var}" > /dev/null
  t1=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
  [ -s "$work/r.json" ] || { echo "ab: wrk wrote no summary for $1 $2" >&2; exit 1; }
  "$PY" - "$work/r.json" "$4" "$1" "$2" $((t1 - t0)) "$(getconf CLK_TCK)" >> "$work/runs.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
if r["non2xx"] or r["socket_errors"] or not r["requests"]:
    sys.exit("ab: %s %s: %d non-2xx, %d socket errors" % (sys.argv[3], sys.argv[4], r["non2xx"],
                                                          r["socket_errors"]))
print(json.dumps({"rep": int(sys.argv[2]), "who": sys.argv[3], "what": sys.argv[4],
                  "rps": r["requests"] / (r["duration_us"] / 1e6), "p50_us": r["p50_us"],
                  "cpu_us": int(sys.argv[5]) / int(sys.argv[6]) * 1e6 / r["requests"]}))
PY
  echo "ab: rep $4 $1 $2: $(tail -1 "$work/runs.jsonl")" >&2
}

for who in A B; do # warm-up: first connections, first model runs
  for what in $workloads; do run "$who" "$what" 1 0; done
done
: > "$work/runs.jsonl"
for rep in $(seq 1 "$REPS"); do
  order="A B"
  [ $((rep % 2)) = 0 ] && order="B A"
  for what in $workloads; do
    for who in $order; do run "$who" "$what" "$SECS" "$rep"; done
  done
done

out=bench/results/ab-$(date -u +%Y%m%dT%H%M%SZ).md
"$PY" - "$work/runs.jsonl" "$A" "$B" "$MODELS" "$CONNS" "$REPS" "$SECS" > "$out" <<'PY'
import json, os, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
a, b, models, conns, reps, secs = sys.argv[2:8]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
            if l.startswith("model name")), "?")
print("## Two builds side by side, %d cores, %s\n" % (os.cpu_count(), cpu))
print("Command: `bench/ab.sh %s %s %s %s %s %s` (wrk 1 thread, %s connections; medians of "
      "%s interleaved reps of %s s, min..max)\n" % (a, b, models, conns, reps, secs, conns, reps,
                                                    secs))
print("| workload | figure | A | B | B/A |")
print("|---|---|---:|---:|---:|")
for what in sorted({r["what"] for r in runs}):
    for key, name, fmt in (("rps", "req/s", "%.0f"), ("p50_us", "p50 µs", "%.0f"),
                           ("cpu_us", "server CPU µs/request", "%.2f")):
        cells, med = [], {}
        for who in ("A", "B"):
            v = [r[key] for r in runs if r["what"] == what and r["who"] == who]
            med[who] = statistics.median(v)
            cells.append((fmt + " (" + fmt + ".." + fmt + ")") % (med[who], min(v), max(v)))
        print("| %s | %s | %s | %s | %.3f |" % (what, name, cells[0], cells[1],
                                                med["B"] / med["A"] if med["A"] else 0))
PY
cat "$out"
