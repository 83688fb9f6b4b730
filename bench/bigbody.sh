#!/usr/bin/env bash
# bench/bigbody.sh [MB] [SECONDS]: while two clients post JSON bodies of about MB megabytes
# (default 20) in a loop to a sim model for SECONDS (default 6), a third GETs
# /v2/health/live every 10 ms. Prints the infers done, the health latency percentiles and the
# server's peak RSS: how much one large JSON body holds up everyone else.
#   BATCHD_BIN=build/batchd PYTHON=/usr/bin/python3 bench/bigbody.sh 20 6
set -euo pipefail
mb=${1:-20}
secs=${2:-6}
BIN=${BATCHD_BIN:-build/batchd}
PYTHON=${PYTHON:-/usr/bin/python3}
work=$(mktemp -d)
trap 'kill "${srv:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
. "$(dirname "$0")/lib.sh"
mkdir -p "$work/repo/wide/1"
cat > "$work/repo/wide/config.json" <<'JSON'
{"backend": "sim", "max_batch_size": 1,
 "inputs": [{"name": "INPUT0", "datatype": "FP32", "dims": [-1]}],
 "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "dims": [-1]}]}
JSON
start_server "$work/repo"
timeout $((secs + 120)) "$PYTHON" - "$url" "$mb" "$secs" <<'PY'
import json, sys, threading, time
import requests
url, mb, secs = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
n = int(mb * 1e6 / 5)  # "1.5, " is 5 bytes
body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, n],
                               "data": [1.5] * n}]}).encode()
stop = time.monotonic() + secs
codes = []
def send():
    s = requests.Session()
    while time.monotonic() < stop:
        codes.append(s.post(url + "/v2/models/wide/infer", data=body, timeout=120,
                            headers={"Content-Type": "application/json"}).status_code)
ts = [threading.Thread(target=send) for _ in range(2)]
for t in ts:
    t.start()
lat, s = [], requests.Session()
while time.monotonic() < stop:
    t0 = time.monotonic()
    s.get(url + "/v2/health/live", timeout=120)
    lat.append(time.monotonic() - t0)
    time.sleep(0.01)
for t in ts:
    t.join()
lat.sort()
pct = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))] * 1e3
print("body %.1f MB; infers %s; health checks %d, p50 %.1f ms, p99 %.1f ms, max %.1f ms"
      % (len(body) / 1e6, {c: codes.count(c) for c in set(codes)}, len(lat), pct(0.5),
         pct(0.99), lat[-1] * 1e3))
PY
echo "server peak RSS: $(grep VmHWM /proc/$srv/status | awk '{print $2, $3}')"
