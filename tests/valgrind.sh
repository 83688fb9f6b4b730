#!/usr/bin/env bash
# tests/valgrind.sh BATCHD MODEL_REPO: run the server under valgrind's memcheck, send a few
# good and bad requests to the demo models, stop it with SIGTERM, and fail on any error or
# definite leak that tests/valgrind.supp does not explain. Slow (about 30 s): `make valgrind`.
set -euo pipefail
bin=$1
repo=$2
port=${VALGRIND_PORT:-18777}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
    --suppressions="$(dirname "$0")/valgrind.supp" \
    "$bin" serve --model-repository "$repo" --http-port "$port" 2> "$log" &
pid=$!
for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$port/v2/health/live" >/dev/null && break
    sleep 0.5
done
url=http://127.0.0.1:$port/v2/models
curl -sf -d @"$repo/digits/example.json" "$url/digits/infer" >/dev/null
curl -sf -d @"$repo/sim_echo/example.json" "$url/sim_echo/infer" >/dev/null
curl -s -d '{bad' "$url/digits/infer" >/dev/null
curl -s -d '{"inputs":[{"name":"pixels","datatype":"FP32","shape":[1,64],"data":[1]}]}' \
    "$url/digits/infer" >/dev/null
curl -s "http://127.0.0.1:$port/metrics" >/dev/null
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
grep -E "ERROR SUMMARY|definitely lost" "$log" || true
if [ "$rc" -ne 0 ]; then
    echo "valgrind: exit status $rc; the full report:" >&2
    cat "$log" >&2
    exit 1
fi
echo "valgrind: clean"
