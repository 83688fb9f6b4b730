#!/usr/bin/env bash
# bench/bigbody.sh [MB] [SECONDS] [CLIENTS]: while CLIENTS clients (default 4) post JSON bodies
# of about MB megabytes (default 50) in a loop to a sim model for SECONDS (default 10), one
# more (a process of its own) GETs /v2/health/live every 10 ms. Prints the infers done, the health latency
# percentiles, and the server's peak RSS against the bytes in flight (CLIENTS x the body):
# how much large JSON bodies hold up everyone else, and what they cost in memory.
#   BATCHD_BIN=build/batchd PYTHON=/usr/bin/python3 bench/bigbody.sh 50 10 4
set -euo pipefail
mb=${1:-50}
secs=${2:-10}
clients=${3:-4}
BIN=${BATCHD_BIN:-build/batchd}
PYTHON=${PYTHON:-/usr/bin/python3}
. "$(dirname "$0")/lib.sh"
bench_temp
wide_repo "$work/repo"
start_server "$work/repo"
timeout $((secs + 300)) "$PYTHON" - "$url" "$mb" "$secs" "$clients" "$work/body_bytes" <<'PY'
import json, multiprocessing, sys, threading, time
import requests
url, mb, secs, clients = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
n = int(mb * 1e6 / 5)  # "1.5, " is 5 bytes
body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, n],
                               "data": [1.5] * n}]}).encode()
stop = time.monotonic() + secs

def health(out):
    # The fifth client, in a process of its own: the senders' threads share one interpreter
    # lock, which would otherwise add their waits to its latencies.
    lat, s = [], requests.Session()
    while time.monotonic() < stop:
        t0 = time.monotonic()
        s.get(url + "/v2/health/live", timeout=120)
        lat.append(time.monotonic() - t0)
        time.sleep(0.01)
    out.put(lat)

codes = []
def send():
    s = requests.Session()
    while time.monotonic() < stop:
        codes.append(s.post(url + "/v2/models/wide/infer", data=body, timeout=120,
                            headers={"Content-Type": "application/json"}).status_code)
q = multiprocessing.get_context("fork").Queue()
checker = multiprocessing.get_context("fork").Process(target=health, args=(q,))
checker.start()
ts = [threading.Thread(target=send) for _ in range(clients)]
for t in ts:
    t.start()
lat = q.get()
checker.join()
for t in ts:
    t.join()
lat.sort()
pct = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))] * 1e3
print("body %.1f MB; infers %s; health checks %d, p50 %.1f ms, p99 %.1f ms, max %.1f ms"
      % (len(body) / 1e6, {c: codes.count(c) for c in set(codes)}, len(lat), pct(0.5),
         pct(0.99), lat[-1] * 1e3))
open(sys.argv[5], "w").write(str(len(body) * clients))
PY
peak=$(awk '/VmHWM/ {print $2}' /proc/$srv/status)
awk -v p="$peak" -v f="$(cat "$work/body_bytes")" 'BEGIN {
    printf "server peak RSS: %.0f MB; bytes in flight: %.0f MB; ratio %.2f\n", p * 1024 / 1e6, f / 1e6, p * 1024 / f }'
