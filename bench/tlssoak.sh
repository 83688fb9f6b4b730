#!/usr/bin/env bash
# bench/tlssoak.sh: the TLS server's memory over a long run. The demo repository (make demo)
# served with a self-signed certificate (made here), and for MINUTES side by side:
# `batchd bench` over https (keep-alive, open loop, binary tensors on digits), and a Python
# client that makes a fresh TLS connection for every infer (python3-requests, one Session per
# request, checking every answer is 200) and, every fifth one, opens a connection that sends
# the start of a ClientHello and closes (a handshake abandoned half way). The server's VmRSS
# and open descriptors are read from /proc every 30 s.
#
#   bench/tlssoak.sh [MINUTES]      (default: 10)
#
# Environment: TLSSOAK_RATE (300: bench's requests/s), BATCHD_BIN (build/batchd), PYTHON.
# Prints the samples, the bench line, the client's counts and the server's exit status as
# Markdown on stdout and in bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
MIN=${1:-10}
RATE=${TLSSOAK_RATE:-300}
BIN=${BATCHD_BIN:-build/batchd}
PY=${PYTHON:-/usr/bin/python3}
command -v openssl >/dev/null || { echo "tlssoak: the openssl command is missing" >&2; exit 1; }
[ -x "$BIN" ] || { echo "tlssoak: build first (make build)" >&2; exit 1; }
[ -f models-demo/digits/example.json ] || { echo "tlssoak: make demo first" >&2; exit 1; }
bench_temp
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" \
  -days 2 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost 2>/dev/null
SERVE_FLAGS="--tls-cert $work/cert.pem --tls-key $work/key.pem" start_server models-demo
url=https://127.0.0.1:$port
SECS=$((MIN * 60))
"$BIN" bench --url "$url" --cacert "$work/cert.pem" --model digits --binary --rate "$RATE" \
  --duration "${SECS}s" --warmup 0 --quiet > "$work/bench.out" 2>&1 &
others=$!
"$PY" - "$url" "$work/cert.pem" "$SECS" > "$work/churn.out" 2>&1 <<'PY' &
import socket, sys, time
import requests
url, cert, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
body = open("models-demo/digits/example.json", "rb").read()
host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
end = time.time() + secs
n = ok = half = 0
while time.time() < end:
    with requests.Session() as s:
        try:
            r = s.post(url + "/v2/models/digits/infer", data=body, verify=cert, timeout=10)
            ok += r.status_code == 200
        except requests.RequestException as e:
            print("error:", e)
    n += 1
    if n % 5 == 0:
        c = socket.create_connection((host, port))
        c.sendall(b"\x16\x03\x01\x00\xff\x01")  # a record header and the first byte of a hello
        c.close()
        half += 1
print("fresh TLS connections: %d infers, %d answered 200; %d handshakes abandoned" % (n, ok, half))
PY
others="$others $!"
out="bench/results/tlssoak-$(date -u +%Y%m%dT%H%M%SZ).md"
mkdir -p bench/results
: > "$out"
emit() { printf '%s\n' "$@" | tee -a "$out"; }
emit "# TLS soak: $MIN minutes ($(date -u +%FT%TZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?'))" \
  "" "| s | VmRSS KiB | open descriptors |" "|---:|---:|---:|"
for i in $(seq 0 $((SECS / 30))); do
  emit "| $((i * 30)) | $(awk '/^VmRSS/{print $2}' /proc/$srv/status) | $(ls /proc/$srv/fd | wc -l) |"
  if [ "$i" -lt $((SECS / 30)) ]; then sleep 30; fi
done
for p in $others; do wait "$p" || true; done
others=""
emit "" "bench over https, keep-alive:" "" '```' "$(cat "$work/bench.out")" '```' "" "$(cat "$work/churn.out")"
kill -TERM "$srv"
rc=0
wait "$srv" || rc=$?
srv=""
emit "" "server exit status after SIGTERM: $rc"
