#!/usr/bin/env bash
# bench/held.sh [CONNECTIONS] [MIB] [MAX_BUFFERED_BYTES] [http|ws]: what clients can make the
# server hold, against --max-buffered-bytes (default: the server's default, 1 GiB; 0 turns the
# bound off); prints the server's RSS before and after.
#   http (default): CONNECTIONS clients (default 40) each send a head announcing a MIB-MiB body
#     (default 64) and all of it but the last MiB, and keep the connection open; also prints how
#     many were answered 503.
#   ws: one WebSocket sends CONNECTIONS binary messages of MIB MiB each to a model that takes
#     one at a time and holds it 30 s, as fast as the server reads them (each send given 3 s);
#     also prints how many were sent and how many requests were in flight.
#   BATCHD_BIN=build/batchd PYTHON=/usr/bin/python3 bench/held.sh 40 64 0
set -euo pipefail
conns=${1:-40}
mib=${2:-64}
BIN=${BATCHD_BIN:-build/batchd}
PYTHON=${PYTHON:-/usr/bin/python3}
. "$(dirname "$0")/lib.sh"
bench_temp
mode=${4:-http}
wide_repo "$work/repo"
mkdir -p "$work/repo/slow/1"
sed 's/"max_batch_size": 1,/"max_batch_size": 1, "instances": 1, "sim": {"latency_us": 30000000},/' \
  "$work/repo/wide/config.json" > "$work/repo/slow/config.json"
SERVE_FLAGS="--max-body-bytes $((mib << 20)) ${3:+--max-buffered-bytes $3}" start_server "$work/repo"
"$PYTHON" - "$url" "$srv" "$conns" "$mib" "$mode" <<'PY'
import asyncio, json, re, socket, struct, sys, time
import requests
url, pid, n, mib, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
host, port = url.split("//")[1].split(":")
def rss():
    return int(re.search(r"VmRSS:\s+(\d+)", open("/proc/%d/status" % pid).read()).group(1)) >> 10
before = rss()
if mode == "ws":
    import websockets
    rows = (mib << 20) // 4 - 64
    head = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, rows],
                                   "parameters": {"binary_data_size": rows * 4}}]}).encode()
    msg = struct.pack("<I", len(head)) + head + bytes(rows * 4)
    async def main():
        sent = 0
        async with websockets.connect("ws://%s:%s/v2/models/slow/stream" % (host, port),
                                      max_size=None, ping_interval=None, compression=None,
                                      close_timeout=1) as ws:
            for _ in range(n):
                try:
                    await asyncio.wait_for(ws.send(msg), 3)
                except asyncio.TimeoutError:
                    break  # the server stopped reading the socket
                sent += 1
            await asyncio.sleep(1)
            m = requests.get(url + "/metrics", timeout=10).text
            fl = re.search(r'^batchd_inference_inflight\{model="slow",version="1"\} (\d+)', m, re.M)
            print("one WebSocket, %d messages of %d MiB: %d sent in full, %s in flight; server "
                  "RSS %d -> %d MiB" % (n, mib, sent, fl.group(1), before, rss()))
            ws.transport.abort()
    asyncio.run(main())
    sys.exit(0)
chunk = b"\0" * (1 << 20)
socks = []
for _ in range(n):
    s = socket.create_connection((host, int(port)))
    s.sendall(b"POST /v2/models/wide/infer HTTP/1.1\r\nHost: x\r\n"
              b"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: 2\r\n"
              b"Content-Length: %d\r\n\r\n{}" % (mib << 20))
    s.settimeout(0.2)
    try:
        for _ in range(mib - 1):
            s.sendall(chunk)
    except (socket.timeout, ConnectionError):
        pass  # refused: the server shut its side after its 503
    socks.append(s)
time.sleep(1)
m = requests.get(url + "/metrics", timeout=10).text
full = re.search(r"^batchd_http_buffer_full_total (\d+)", m, re.M).group(1)
print("connections=%d body=%d MiB (all but the last MiB sent): server RSS %d -> %d MiB, "
      "503 (--max-buffered-bytes): %s" % (n, mib, before, rss(), full))
PY
