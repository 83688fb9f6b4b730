#!/usr/bin/env bash
# bench/instr.sh: user-space instructions per request (issue 11), counted by valgrind's
# callgrind, which, unlike time, does not swing with the machine: batchd runs under callgrind
# serving a sim identity model (and, when MODELS_DIR has it, the mlp); after WARM requests the
# counters are zeroed, N more are sent, in rounds of one request on each of CONNS keep-alive
# connections (so the loop batches as under load), and the counters are dumped.
#
#   bench/instr.sh [MODELS_DIR] [N] [CONNS]     (defaults: ../shared/models, 4000, 16)
#
# Environment: BATCHD_BIN (build/batchd), PYTHON (/usr/bin/python3), INSTR_MODELS (identity
# mlp), WARM (500), INSTR_TOP (25: how many functions to list, by instructions of their own).
#
# Prints, per model, the instructions per request of the whole process (every thread: the loop,
# and the worker when a batch goes there) and the functions that cost most, per request. The
# callgrind files stay in bench/results/instr-<UTC time>-<model>.out for callgrind_annotate.
# Under callgrind everything runs some 50 times slower, so the mlp's batches, measured in that
# time, go to its worker instead of running on the loop: count the loop's own work with the
# identity model.
set -euo pipefail
# Paths as given from where it was run, before the cd below.
MODELS=$(realpath -m "${1:-$(dirname "$0")/../../shared/models}")
BIN=$(realpath -m "${BATCHD_BIN:-$(dirname "$0")/../build/batchd}")
cd "$(dirname "$0")/.."
N=${2:-4000}
CONNS=${3:-16}
PY=${PYTHON:-/usr/bin/python3}
WARM=${WARM:-500}
TOP=${INSTR_TOP:-25}
. bench/lib.sh
command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null ||
  { echo "instr: valgrind is missing (scripts/setup.sh installs it)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "instr: build first (make build)" >&2; exit 1; }

bench_temp
srv="" # the valgrind-run server of the model being counted
mkdir -p bench/results
request_path_repo "$work/repo" "$MODELS"
models=${INSTR_MODELS:-identity mlp}
if [ -z "$has_mlp" ]; then
  models=${models//mlp/}
  echo "instr: no $MODELS/mlp/1/model.onnx; identity infer only" >&2
fi

# The client: N requests over CONNS connections, one per connection per round, each reply
# read whole and checked for 200 before the next round.
cat > "$work/rounds.py" <<'PY'
import socket, sys
port, n, conns, body_file, hl, model = sys.argv[1:7]
n, conns, body = int(n), int(conns), open(body_file, "rb").read()
req = (("POST /v2/models/%s/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
        "application/octet-stream\r\nInference-Header-Content-Length: %s\r\n"
        "Content-Length: %d\r\n\r\n") % (model, hl, len(body))).encode() + body
socks = [socket.create_connection(("127.0.0.1", int(port))) for _ in range(conns)]
bufs = [b""] * conns
done = 0
while done < n:
    k = min(conns, n - done)
    for s in socks[:k]:
        s.sendall(req)
    for i, s in enumerate(socks[:k]):
        while True:
            end = bufs[i].find(b"\r\n\r\n")
            if end >= 0:
                head = bufs[i][:end].decode("latin-1")
                if not head.startswith("HTTP/1.1 200"):
                    sys.exit("instr: a reply was not 200: " + head.split("\r\n")[0])
                length = next(int(l.split(":", 1)[1]) for l in head.split("\r\n")
                              if l.lower().startswith("content-length:"))
                if len(bufs[i]) >= end + 4 + length:
                    bufs[i] = bufs[i][end + 4 + length:]
                    break
            data = s.recv(65536)
            if not data:
                sys.exit("instr: the server closed a connection")
            bufs[i] += data
    done += k
PY

stamp=$(date -u +%Y%m%dT%H%M%SZ)
for model in $models; do
  case $model in
    identity) hl=$("$PY" bench/make_body.py "$work/body" INPUT0 1,16 OUTPUT0) ;;
    mlp) hl=$("$PY" bench/make_body.py "$work/body" input 1,64 probs) ;;
    *) echo "instr: unknown model '$model' (identity or mlp)" >&2; exit 2 ;;
  esac
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" "$BIN" serve \
    --model-repository "$work/repo" --http-port 0 2> "$work/server.log" &
  srv=$!
  listen_port "$work/server.log" 120 # valgrind starts slowly
  "$PY" "$work/rounds.py" "$port" "$WARM" "$CONNS" "$work/body" "$hl" "$model"
  callgrind_control -z "$srv" > "$work/ctl.log" 2>&1 ||
    { echo "instr: callgrind_control -z failed" >&2; cat "$work/ctl.log" >&2; exit 1; }
  "$PY" "$work/rounds.py" "$port" "$N" "$CONNS" "$work/body" "$hl" "$model"
  callgrind_control -d "$srv" > "$work/ctl.log" 2>&1 ||
    { echo "instr: callgrind_control -d failed" >&2; cat "$work/ctl.log" >&2; exit 1; }
  kill "$srv"
  wait "$srv" 2>/dev/null || true
  srv=""
  out=bench/results/instr-$stamp-$model.out
  cp "$(ls "$work"/cg.*.1)" "$out" # the dump after zeroing, not the exit's
  rm -f "$work"/cg.*
  echo "## $model: user-space instructions per request ($N requests over $CONNS connections, $(basename "$BIN"))"
  echo
  callgrind_annotate --threshold=100 "$out" 2> /dev/null |
    awk -v n="$N" -v top="$TOP" '
      /PROGRAM TOTALS/ { gsub(",", "", $1); printf "total: %.0f\n\n| per request | function |\n|---:|---|\n", $1 / n; next }
      /^-+$/ { sep++; next }
      sep >= 3 && $1 ~ /^[0-9,]+$/ && shown < top && $0 !~ /:main |libc-start|below main|ld-linux|bd_cli_serve|clone.S|start_thread/ {
        v = $1; gsub(",", "", v); f = $0; sub(/^ *[0-9,]+ +\([ 0-9.]+%\) +/, "", f)
        printf "| %.0f | %s |\n", v / n, f; shown++ }'
  echo
done
