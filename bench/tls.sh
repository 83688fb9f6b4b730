#!/usr/bin/env bash
# bench/tls.sh: the cost of TLS. An identity model (sim, zero latency: the request path and the
# transport are all there is to measure) served twice with the same flags, plain and with
# --tls-cert/--tls-key (a self-signed certificate made here), driven by wrk in one run,
# alternating which goes first each round so the machine's noise hits both alike.
#
#   bench/tls.sh [SECONDS] [ROUNDS]      (defaults: 5, 3)
#
# Environment: TLS_CONCURRENCY (64: wrk connections), TLS_MODES ("keepalive close":
# keep-alive connections, then a new connection per request, which is where the handshake
# shows), TLS_KEY (rsa: an RSA 2048 certificate; ec: ECDSA P-256),
# TLS_DIM (64: FP32 values per request), TLS_IDLE (1000: idle connections for the memory
# measurement; 0 skips it), BATCHD_BIN (build/batchd), PYTHON.
#
# Each request is one binary-tensor infer of TLS_DIM FP32 values with a binary reply
# (bench/make_body.py, bench/wrk_infer.lua). Each measurement is 1 s of warm-up, then SECONDS
# measured; around the measured part the server's utime+stime (/proc/PID/stat) is read, and
# server CPU per request = that CPU / the requests wrk completed. Last, TLS_IDLE connections are
# opened to each server, each makes one request and stays open (keep-alive), and the growth of
# the server's VmRSS gives the memory per idle connection. Markdown on stdout and in
# bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SECS=${1:-5}
ROUNDS=${2:-3}
N=${TLS_CONCURRENCY:-64}
MODES=${TLS_MODES:-"keepalive close"}
DIM=${TLS_DIM:-64}
KEY=${TLS_KEY:-rsa}
IDLE=${TLS_IDLE:-1000}
BIN=${BATCHD_BIN:-build/batchd}
PY=${PYTHON:-/usr/bin/python3}
command -v wrk >/dev/null || { echo "tls: wrk is missing (scripts/setup.sh installs it)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "tls: the openssl command is missing" >&2; exit 1; }
[ -x "$BIN" ] || { echo "tls: build first (make build)" >&2; exit 1; }

top=$(mktemp -d)
pids=""
trap 'for p in $pids; do kill $p 2>/dev/null || true; done; rm -rf "$top"' EXIT
repo=$top/repo
mkdir -p "$repo/identity/1" bench/results
printf '{"backend":"sim","max_batch_size":64,"inputs":[{"name":"INPUT0","datatype":"FP32","dims":[%d]}],"outputs":[{"name":"OUTPUT0","datatype":"FP32","dims":[%d]}],"sim":{"latency_us":0}}\n' \
  "$DIM" "$DIM" > "$repo/identity/config.json"
case $KEY in
  rsa) newkey=(-newkey rsa:2048); keyname="RSA 2048" ;;
  ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1); keyname="ECDSA P-256" ;;
  *) echo "tls: TLS_KEY must be rsa or ec" >&2; exit 1 ;;
esac
openssl req -x509 "${newkey[@]}" -nodes -keyout "$top/key.pem" -out "$top/cert.pem" \
  -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost -days 2 2>/dev/null
hl=$("$PY" bench/make_body.py "$top/body" INPUT0 "1,$DIM" OUTPUT0)

# Two servers, each with its own log (lib.sh's start_server logs to $work/server.log).
declare -A URL PID
for side in plain tls; do
  work=$top/$side
  mkdir -p "$work"
  if [ $side = tls ]; then
    SERVE_FLAGS="--tls-cert $top/cert.pem --tls-key $top/key.pem" start_server "$repo"
    url=https://${url#http://}
  else
    SERVE_FLAGS="" start_server "$repo"
  fi
  URL[$side]=$url
  PID[$side]=$srv
  pids="$pids $srv"
  grep -q "tls=$([ $side = tls ] && echo on || echo off)" "$work/server.log" ||
    { echo "tls: the $side server's listening line does not say so" >&2; exit 1; }
done
work=$top

tck=$(getconf CLK_TCK)
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; } # utime + stime

# measure ROUND MODE SIDE: one measurement, one line appended to $top/raw.tsv
measure() {
  local round=$1 mode=$2 side=$3 c0 c1 hdr=()
  local target=${URL[$side]}/v2/models/identity/infer
  if [ "$mode" = close ]; then hdr=(-H "Connection: close"); fi
  WRK_OUT=$top/warm.json wrk -t1 -c"$N" -d1s "${hdr[@]}" -s bench/wrk_infer.lua "$target" \
    -- "$top/body" "$hl" > /dev/null
  c0=$(cpu_ticks "${PID[$side]}")
  WRK_OUT=$top/r.json wrk -t1 -c"$N" -d"${SECS}s" --timeout 10s "${hdr[@]}" \
    -s bench/wrk_infer.lua "$target" -- "$top/body" "$hl" > "$top/wrk.out"
  c1=$(cpu_ticks "${PID[$side]}")
  "$PY" - "$round" "$mode" "$side" "$top/r.json" "$tck" "$c0" "$c1" >> "$top/raw.tsv" <<'PY'
import json, sys
rnd, mode, side, path, tck, c0, c1 = sys.argv[1:8]
r = json.load(open(path))
n = max(r["requests"], 1)
rps = r["requests"] / (r["duration_us"] / 1e6)
cpu = (int(c1) - int(c0)) / int(tck) * 1e6 / n
print(f"{rnd}\t{mode}\t{side}\t{rps:.1f}\t{r['p50_us'] / 1000:.3f}\t{r['p99_us'] / 1000:.3f}\t"
      f"{cpu:.2f}\t{r['non2xx'] + r['socket_errors']}")
PY
  echo "tls: round $round $mode $side: $(tail -1 "$top/raw.tsv" | cut -f4-)" >&2
}

: > "$top/raw.tsv"
for r in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    if [ $((r % 2)) = 1 ]; then order="plain tls"; else order="tls plain"; fi
    for side in $order; do
      measure "$r" "$mode" "$side"
    done
  done
done

# idle SIDE: VmRSS growth per idle kept-alive connection, in KiB.
idle() {
  local side=$1
  "$PY" - "${URL[$side]#*://}" "$IDLE" "${PID[$side]}" "$top/cert.pem" "$side" <<'PY'
import socket, ssl, sys, time
hostport, n, pid, cert, side = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
host, port = hostport.rsplit(":", 1)

def rss_kib():
    for line in open("/proc/%s/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

ctx = ssl.create_default_context(cafile=cert)
before = rss_kib()
socks = []
for _ in range(n):
    s = socket.create_connection((host, int(port)), timeout=10)
    if side == "tls":
        s = ctx.wrap_socket(s, server_hostname="localhost")
    s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(4096)
    socks.append(s)
time.sleep(0.5)
after = rss_kib()
print(f"{(after - before) / n:.1f}")
for s in socks:
    s.close()
PY
}
if [ "$IDLE" -gt 0 ]; then
  for side in plain tls; do
    echo "$side $(idle $side)" >> "$top/idle.txt"
    echo "tls: idle $side: $(tail -1 "$top/idle.txt" | cut -d' ' -f2) KiB per connection" >&2
    sleep 1
  done
fi

out=bench/results/tls-$(date -u +%Y%m%dT%H%M%SZ).md
{
  echo "## $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo
  echo "Command: \`TLS_KEY=$KEY bench/tls.sh $SECS $ROUNDS\` (wrk 1 thread, $N connections, 1 s warm-up, ${SECS} s measured; identity sim model, $DIM FP32 values in and out as binary tensors; $keyname certificate, $(openssl version | cut -d' ' -f1-2); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
  echo
  "$PY" - "$top/raw.tsv" <<'PY'
import statistics as st, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
mname = {"keepalive": "keep-alive", "close": "new connection per request"}
cols = ["req/s", "p50 ms", "p99 ms", "server CPU µs/req"]
fmt_ = ["{:,.0f}", "{:.2f}", "{:.2f}", "{:.1f}"]
print("| round | connections | transport | " + " | ".join(cols) + " | errors |")
print("|---:|---|---|" + "---:|" * (len(cols) + 1))
for r in rows:
    cells = [f.format(float(v)) for f, v in zip(fmt_, r[3:7])]
    print(f"| {r[0]} | {mname[r[1]]} | {'HTTPS' if r[2] == 'tls' else 'HTTP'} | "
          + " | ".join(cells) + f" | {r[7]} |")
print()
print("Medians of the rounds (min–max in brackets); TLS/plain is the ratio of the medians, then "
      "the range of the per-round ratios:")
print()
print("| connections | metric | HTTP | HTTPS | TLS/plain |")
print("|---|---|---:|---:|---:|")
modes = []
for r in rows:
    if r[1] not in modes:
        modes.append(r[1])
for m in modes:
    for k, (c, ff) in enumerate(zip(cols, fmt_)):
        by = {s: {int(r[0]): float(r[3 + k]) for r in rows if r[1] == m and r[2] == s}
              for s in ("plain", "tls")}
        cell = {s: f"{ff.format(st.median(v.values()))} ({ff.format(min(v.values()))}–"
                   f"{ff.format(max(v.values()))})" for s, v in by.items()}
        ratios = [by["tls"][i] / by["plain"][i] for i in by["tls"]
                  if i in by["plain"] and by["plain"][i]]
        mp = st.median(by["plain"].values())
        ratio = st.median(by["tls"].values()) / mp if mp else float("nan")
        rr = f"{ratio:.2f} ({min(ratios):.2f}–{max(ratios):.2f})" if ratios else "n/a"
        print(f"| {mname[m]} | {c} | {cell['plain']} | {cell['tls']} | {rr} |")
PY
  if [ -s "$top/idle.txt" ]; then
    echo
    echo "Memory: $IDLE idle kept-alive connections (one request each), growth of the server's VmRSS per connection: HTTP $(awk '$1 == "plain" {print $2}' "$top/idle.txt") KiB, HTTPS $(awk '$1 == "tls" {print $2}' "$top/idle.txt") KiB."
  fi
} | tee "$out"
echo "tls: written to $out" >&2
