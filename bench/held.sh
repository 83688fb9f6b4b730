#!/usr/bin/env bash
# bench/held.sh [CONNECTIONS] [MIB] [MAX_BUFFERED_BYTES]: CONNECTIONS clients (default 40) each
# send a head announcing a MIB-MiB body (default 64) and all of it but the last MiB, and keep
# the connection open; prints the server's RSS before and after, and how many were answered
# 503 by --max-buffered-bytes (default: the server's default, 1 GiB; 0 turns the bound off).
# What N clients can make the server hold.
#   BATCHD_BIN=build/batchd PYTHON=/usr/bin/python3 bench/held.sh 40 64 0
set -euo pipefail
conns=${1:-40}
mib=${2:-64}
BIN=${BATCHD_BIN:-build/batchd}
PYTHON=${PYTHON:-/usr/bin/python3}
. "$(dirname "$0")/lib.sh"
bench_temp
wide_repo "$work/repo"
SERVE_FLAGS="--max-body-bytes $((mib << 20)) ${3:+--max-buffered-bytes $3}" start_server "$work/repo"
"$PYTHON" - "$url" "$srv" "$conns" "$mib" <<'PY'
import re, socket, sys, time
import requests
url, pid, n, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
host, port = url.split("//")[1].split(":")
def rss():
    return int(re.search(r"VmRSS:\s+(\d+)", open("/proc/%d/status" % pid).read()).group(1)) >> 10
before = rss()
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
