# bench/lib.sh: sourced by the bench scripts. Needs BIN set, and work (a temp folder: bench_temp
# makes one).

# bench_temp: work=a new temporary folder, removed at exit, when the processes the script
# started are stopped: every pid in srv (the servers: one pid, or several separated by spaces)
# and in others (nginx, ...), each resumed first in case the script had it SIGSTOPped; an
# interrupt exits through the same path.
bench_temp() {
  work=$(mktemp -d)
  trap 'for p in ${srv:-} ${others:-}; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
  trap 'exit 130' INT TERM
}

# start_server REPO: serve REPO on a free port (plus $SERVE_FLAGS); sets srv (pid) and url, or
# exits with the log.
start_server() {
  "$BIN" serve --model-repository "$1" --http-port 0 ${SERVE_FLAGS:-} 2> "$work/server.log" &
  srv=$!
  listen_port "$work/server.log" 30
  url=http://127.0.0.1:$port
}

# listen_port LOG SECONDS: port=the HTTP port a starting server logs to LOG, waiting up to
# SECONDS for it; else prints the log and exits.
listen_port() {
  port=""
  for _ in $(seq 1 $(($2 * 10))); do
    port=$(grep -o 'http listening host=[^ ]* port=[0-9]*' "$1" 2>/dev/null | sed 's/.*port=//' || true)
    [ -n "$port" ] && return 0
    sleep 0.1
  done
  echo "bench: the server did not start" >&2
  cat "$1" >&2
  exit 1
}

# metric NAME MODEL: the value of a per-model series on /metrics.
metric() {
  curl -s "$url/metrics" | awk -v n="$1" -v m="$2" '$0 ~ "^"n"\\{" && $0 ~ "model=\""m"\"" {print $2}'
}

# wide_repo DIR: a repository in DIR with one sim model "wide" (FP32 [-1] in, the same out, one
# row per request): what the large-body benchmarks post to.
wide_repo() {
  mkdir -p "$1/wide/1"
  cat > "$1/wide/config.json" <<'JSON'
{"backend": "sim", "max_batch_size": 1,
 "inputs": [{"name": "INPUT0", "datatype": "FP32", "dims": [-1]}],
 "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "dims": [-1]}]}
JSON
}

# request_path_repo DIR MODELS_DIR: in DIR, the models the request-path benchmarks post to:
# "identity" (sim, latency 0, FP32 [16] in and out, batches of up to 64: the request path is all
# there is to measure) and, when MODELS_DIR has it, "mlp" (linked, the server's defaults). Sets
# has_mlp to 1 when it is there, else empty.
request_path_repo() {
  mkdir -p "$1/identity/1"
  echo '{"backend": "sim", "max_batch_size": 64, "sim": {"latency_us": 0},
 "inputs": [{"name": "INPUT0", "datatype": "FP32", "dims": [16]}],
 "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "dims": [16]}]}' > "$1/identity/config.json"
  has_mlp=""
  if [ -f "$2/mlp/1/model.onnx" ]; then
    mkdir -p "$1/mlp/1"
    ln -s "$(realpath "$2/mlp/1/model.onnx")" "$1/mlp/1/model.onnx"
    has_mlp=1
  fi
}
