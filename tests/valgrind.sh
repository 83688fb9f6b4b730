#!/usr/bin/env bash
# tests/valgrind.sh BATCHD MODEL_REPO: run the server under valgrind's memcheck, send a few
# good and bad requests to the demo models over HTTP and a WebSocket, stop it with SIGTERM,
# and fail on any error or definite leak that tests/valgrind.supp does not explain. Slow
# (about 30 s): `make valgrind`.
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
# A WebSocket stream: good and bad requests, a binary one, a ping, then one socket dropped
# with requests still queued and one left open for the drain to close.
/usr/bin/python3 - "$port" "$repo" <<'PY'
import asyncio, json, struct, sys
import websockets
port, repo = sys.argv[1], sys.argv[2]
body = json.load(open(repo + "/sim_echo/example.json"))
async def main():
    url = "ws://127.0.0.1:%s/v2/stream" % port
    async with websockets.connect(url) as ws:
        for i in range(20):
            await ws.send(json.dumps(dict(body, model_name="sim_echo", id=str(i))))
        await ws.send("{bad")
        await ws.send(b"\x01")
        hdr = json.dumps({"model_name": "sim_echo", "inputs": [{"name": "INPUT0",
              "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}],
              "parameters": {"binary_data_output": True}}).encode()
        await ws.send(struct.pack("<I", len(hdr)) + hdr + bytes(16))
        for _ in range(23):
            await asyncio.wait_for(ws.recv(), 60)
        await asyncio.wait_for(await ws.ping(), 60)
    ws = await websockets.connect(url)
    for i in range(20):
        await ws.send(json.dumps(dict(body, model_name="sim_echo", id=str(i))))
    ws.transport.abort()
    ws = await websockets.connect(url)
    await ws.send(json.dumps(dict(body, model_name="sim_echo")))
    await asyncio.sleep(1)
asyncio.run(main())
PY
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
