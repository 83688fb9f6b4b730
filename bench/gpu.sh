#!/usr/bin/env bash
# bench/gpu.sh: batchd on an NVIDIA GPU (issue 13), in one run: find the CUDA 13 libraries,
# run tests/e2e/test_gpu.py against the GPU, then benchmark resnet18 and mobilenet_v2 with
# "device": "cuda:0" through batchd (HTTP, binary tensors, `batchd bench`, one row per
# request) at concurrency 1..64, next to the same models run in-process through ONNX Runtime
# on the same GPU (build/ort_inproc --device cuda:0, one call per batch of that many rows).
# Prints a Markdown table and writes it to bench/results/ (and to $OUT when that is set).
#
#   bench/gpu.sh [--payload DIR] [--ort-dir DIR] [--models DIR] [--secs N] [--no-tests]
#   bench/gpu.sh --pack DIR [--chunk-mib N]     (on the build machine; see below)
#   bench/gpu.sh --find-cuda                    (only find and print the CUDA libraries)
#   bench/gpu.sh --rehearse-on-cpu [--secs 1]   (every step with "device": "cpu", no CUDA
#                                                checks: tries the script on a machine without
#                                                a GPU; its figures are CPU figures)
#
# Where things come from, by default those of a checkout that ran `make setup GPU=1` and
# `make build`: build/batchd and build/ort_inproc (BATCHD_BIN, ORT_INPROC_BIN), the GPU build
# of ONNX Runtime in third_party/onnxruntime-gpu/ (--ort-dir) and the models in
# ../shared/models (--models).
#
# A GPU machine that receives only the working tree plus at most 64 MiB of ignored files per
# call, and has no network, gets all of that as a payload in pieces:
#   here:   make setup GPU=1 && make build && bench/gpu.sh --pack third_party/gpu-payload
#           (the binaries with the shared libraries they need that are not glibc's, the three
#           ONNX Runtime libraries, the models; one tar.gz split into folders p00, p01, ... of
#           --chunk-mib MiB each, default 56, and p00/SHA256SUMS)
#   there:  one call per folder, carrying third_party/gpu-payload/pNN (command: true); ignored
#           files stay between calls on a warm machine. The last call runs
#           bench/gpu.sh --payload third_party/gpu-payload, which joins the pieces, checks the
#           payload's sha256 and each ONNX Runtime library's against the sums pinned in
#           scripts/setup.sh, and unpacks it to a temporary folder.
#
# CUDA 13 (cuBLAS, cuBLASLt, cuRAND, the runtime), cuDNN 9 and the driver's libcuda.so.1 are
# looked up with ldconfig, then under Python's site-packages (pip's nvidia-* wheels), /usr/local,
# /opt and /usr/lib, then everywhere; each library found is printed, or "none found". Their
# folders go on LD_LIBRARY_PATH for batchd and ort_inproc only (through small wrapper scripts,
# so the Python that runs pytest keeps its own libraries). Without libcuda.so.1 or a GPU the
# script stops there and says so. The whole run takes about 5 minutes (--secs 4).
set -euo pipefail
cd "$(dirname "$0")/.."

MODELS=../shared/models
ORT_DIR=third_party/onnxruntime-gpu
PAYLOAD=""
PACK=""
CHUNK_MIB=56
SECS=4
TESTS=1
FIND_ONLY=0
DEVICE=cuda:0
CONC=${BENCH_CONCURRENCY:-"1 2 4 8 16 32 64"}
BENCH_MODELS="resnet18 mobilenet_v2"
BIN=${BATCHD_BIN:-build/batchd}
INPROC=${ORT_INPROC_BIN:-build/ort_inproc}

say() { printf 'gpu.sh: %s\n' "$*" >&2; }
die() { printf 'gpu.sh: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --payload) PAYLOAD=${2:?--payload needs a folder}; shift 2 ;;
        --ort-dir) ORT_DIR=${2:?--ort-dir needs a folder}; shift 2 ;;
        --models) MODELS=${2:?--models needs a folder}; shift 2 ;;
        --secs) SECS=${2:?--secs needs a number}; shift 2 ;;
        --pack) PACK=${2:?--pack needs a folder}; shift 2 ;;
        --chunk-mib) CHUNK_MIB=${2:?--chunk-mib needs a number}; shift 2 ;;
        --no-tests) TESTS=0; shift ;;
        --find-cuda) FIND_ONLY=1; shift ;;
        --rehearse-on-cpu) DEVICE=cpu; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
done
case "$SECS" in ''|*[!0-9]*) die "--secs must be a whole number of seconds, got '$SECS'" ;; esac
case "$CHUNK_MIB" in ''|*[!0-9]*|0) die "--chunk-mib must be a positive whole number, got '$CHUNK_MIB'" ;; esac

# The sums scripts/setup.sh pins for the GPU build (one place for them).
pinned() { sed -n "s/^$1=\"\\([0-9a-f]\\{64\\}\\)\"$/\\1/p" scripts/setup.sh; }
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# check_ort DIR: the three ONNX Runtime libraries are there with their pinned sums.
check_ort() {
    local dir=$1 f var got want
    for f in libonnxruntime.so.1:ORT_GPU_CORE_SHA256 \
             libonnxruntime_providers_shared.so:ORT_GPU_SHARED_SHA256 \
             libonnxruntime_providers_cuda.so:ORT_GPU_CUDA_SHA256; do
        var=${f#*:}; f=${f%%:*}
        want=$(pinned "$var")
        [ -n "$want" ] || die "scripts/setup.sh has no $var"
        [ -f "$dir/$f" ] || die "$dir/$f is missing (make setup GPU=1 installs it, or pass --payload)"
        got=$(sha256_of "$dir/$f")
        [ "$got" = "$want" ] || die "$dir/$f has sha256 $got, expected $want"
    done
    say "ONNX Runtime GPU build in $dir: the three libraries' sha256 ok"
}

# ---- --pack: the payload for a GPU machine ---------------------------------------------------
if [ -n "$PACK" ]; then
    [ -x "$BIN" ] && [ -x "$INPROC" ] || die "build first (make build): $BIN and $INPROC are needed"
    check_ort "$ORT_DIR"
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    mkdir -p "$stage/p/bin" "$stage/p/lib" "$stage/p/ort" "$stage/p/models"
    cp "$BIN" "$INPROC" "$stage/p/bin/"
    # Every shared library the binaries need but glibc's own, which the GPU machine has.
    ldd "$BIN" "$INPROC" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u |
        grep -Ev '/(libc|libm|libpthread|libdl|librt|libresolv|ld-linux[^/]*)\.so' |
        while read -r lib; do cp -L "$lib" "$stage/p/lib/"; done
    cp "$ORT_DIR"/libonnxruntime.so.1 "$ORT_DIR"/libonnxruntime_providers_shared.so \
        "$ORT_DIR"/libonnxruntime_providers_cuda.so "$stage/p/ort/"
    for m in mlp $BENCH_MODELS; do
        [ -f "$MODELS/$m/1/model.onnx" ] || die "$MODELS/$m/1/model.onnx is missing"
        mkdir -p "$stage/p/models/$m/1"
        cp -L "$MODELS/$m/1/model.onnx" "$stage/p/models/$m/1/"
    done
    say "packing $(du -sh "$stage/p" | cut -f1) (binaries, $(find "$stage/p/lib" -type f | wc -l) libraries, ONNX Runtime, models)"
    tar -C "$stage/p" -czf "$stage/payload.tar.gz" .
    rm -rf "$PACK"
    mkdir -p "$PACK"
    (cd "$stage" && split -b "${CHUNK_MIB}M" -d -a 2 payload.tar.gz payload.tar.gz.part-)
    n=0
    for part in "$stage"/payload.tar.gz.part-*; do
        dir=$(printf '%s/p%02d' "$PACK" "$n")
        mkdir -p "$dir"
        mv "$part" "$dir/"
        n=$((n + 1))
    done
    (cd "$stage" && sha256sum payload.tar.gz) > "$PACK/p00/SHA256SUMS"
    say "wrote $n pieces of at most $CHUNK_MIB MiB to $PACK ($(du -sh "$PACK" | cut -f1) in all):"
    for ((i = 0; i < n; i++)); do
        printf '  call %d: carry %s/p%02d\n' $((i + 1)) "$PACK" "$i" >&2
    done
    say "  then, in the last call (or a call after it): bench/gpu.sh --payload $PACK"
    exit 0
fi

# ---- the payload, joined and checked -----------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/batchd-gpu.XXXXXX")
srv=""
cleanup() {
    if [ -n "$srv" ]; then kill "$srv" 2>/dev/null || true; wait "$srv" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

if [ -n "$PAYLOAD" ]; then
    [ -f "$PAYLOAD/p00/SHA256SUMS" ] || die "$PAYLOAD/p00/SHA256SUMS is missing: carry every piece that bench/gpu.sh --pack wrote (p00 first)"
    parts=$(find "$PAYLOAD" -mindepth 2 -maxdepth 2 -name 'payload.tar.gz.part-*' | sort)
    [ -n "$parts" ] || die "no payload.tar.gz.part-* under $PAYLOAD"
    say "joining $(echo "$parts" | wc -l) pieces from $PAYLOAD"
    # shellcheck disable=SC2086 # one path per line, no spaces (written by --pack)
    cat $parts > "$work/payload.tar.gz"
    want=$(cut -d' ' -f1 "$PAYLOAD/p00/SHA256SUMS")
    got=$(sha256_of "$work/payload.tar.gz")
    [ "$got" = "$want" ] || die "the joined payload has sha256 $got, expected $want: a piece is missing or damaged (carry every pNN folder)"
    mkdir -p "$work/p"
    tar -xzf "$work/payload.tar.gz" -C "$work/p"
    rm -f "$work/payload.tar.gz"
    ORT_DIR=$work/p/ort
    MODELS=$work/p/models
    BIN=$work/p/bin/batchd
    INPROC=$work/p/bin/ort_inproc
    BUNDLED_LIBS=$work/p/lib
    say "payload sha256 ok, unpacked to $work/p"
fi
if [ "$FIND_ONLY" = 0 ]; then
    [ -d "$ORT_DIR" ] || die "no ONNX Runtime GPU build at $ORT_DIR (make setup GPU=1, or --payload)"
    ORT_DIR=$(cd "$ORT_DIR" && pwd)
    check_ort "$ORT_DIR"
fi
ORT_LIB=$ORT_DIR/libonnxruntime.so.1

# ---- CUDA 13, cuDNN 9 and the driver -----------------------------------------------------------
# name:required. The provider links the first five; cuDNN 9 (and its parts beside it) it opens
# at run time; nvrtc and nvJitLink some cuDNN and cuBLAS paths open.
CUDA_LIBS="libcublasLt.so.13:1 libcublas.so.13:1 libcurand.so.10:1 libcudart.so.13:1 libcuda.so.1:1
libcudnn.so.9:1 libnvrtc.so.13:0 libnvJitLink.so.13:0"
declare -A found=()
find_cuda() {
    local entry name roots=() py extra=()
    for entry in $CUDA_LIBS; do
        name=${entry%%:*}
        found[$name]=$({ ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true; } |
            awk -v n="$name" '$1 == n && $NF !~ /\/stubs\// {print $NF; exit}')
    done
    py=$(command -v python3 || true)
    if [ -n "$py" ]; then
        mapfile -t extra < <("$py" -c 'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null || true)
        roots+=("${extra[@]}")
    fi
    roots+=(/usr/local/nvidia /usr/local /opt /usr/lib /usr/lib64)
    search() { # search [-xdev] ROOTS...: fill the names still missing, one find for all of them
        local args=() e n opt=()
        if [ "$1" = -xdev ]; then opt=(-xdev); shift; fi
        for e in $CUDA_LIBS; do
            n=${e%%:*}
            [ -z "${found[$n]}" ] && args+=(-o -name "$n*")
        done
        [ ${#args[@]} -eq 0 ] && return 0
        while read -r path; do
            case "$path" in */stubs/*) continue ;; esac # link-time stubs, not libraries
            for e in $CUDA_LIBS; do
                n=${e%%:*}
                case "$(basename "$path")" in
                    "$n"|"$n".*) [ -z "${found[$n]}" ] && found[$n]=$path ;;
                esac
            done
        done < <(find "$@" "${opt[@]}" \( -path /proc -o -path /sys -o -path /dev \) -prune -o \
                      \( -false "${args[@]}" \) \( -type f -o -type l \) -print 2>/dev/null | sort)
    }
    local existing=() r
    for r in "${roots[@]}"; do [ -d "$r" ] && existing+=("$r"); done
    [ ${#existing[@]} -gt 0 ] && search "${existing[@]}"
    search -xdev /
    say "CUDA libraries:"
    for entry in $CUDA_LIBS; do
        name=${entry%%:*}
        printf '  %-20s %s\n' "$name" "${found[$name]:-none found}" >&2
    done
}
find_cuda
missing=""
ld_dirs=""
for entry in $CUDA_LIBS; do
    name=${entry%%:*}
    if [ -n "${found[$name]}" ]; then
        d=$(dirname "${found[$name]}")
        case ":$ld_dirs:" in *":$d:"*) ;; *) ld_dirs=${ld_dirs:+$ld_dirs:}$d ;; esac
    elif [ "${entry#*:}" = 1 ]; then
        missing="$missing $name"
    fi
done
if [ "$FIND_ONLY" = 1 ]; then
    [ -z "$missing" ] || exit 1
    exit 0
fi
gpu_name=""
if [ "$DEVICE" = cpu ]; then
    gpu_name="no GPU (a CPU rehearsal of bench/gpu.sh: \"device\": \"cpu\")"
    say "rehearsal on the CPU: the CUDA checks are skipped and the models run with \"device\": \"cpu\""
else
    if [ -z "${found[libcuda.so.1]}" ]; then
        die "no libcuda.so.1 (the NVIDIA driver's library) on this machine: it has no NVIDIA driver or GPU; run bench/gpu.sh on a machine with one"
    fi
    [ -z "$missing" ] || die "CUDA libraries not found:$missing; install CUDA 13 and cuDNN 9 (or pip's nvidia-*-cu13 wheels)"
    if command -v nvidia-smi >/dev/null; then
        gpu_name=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 || true)
    fi
    [ -n "$gpu_name" ] || die "nvidia-smi reports no GPU on this machine"
    say "GPU: $gpu_name"
fi

# Wrappers: batchd and ort_inproc see the CUDA folders (and the payload's libraries); nothing
# else does.
[ -x "$BIN" ] && [ -x "$INPROC" ] || die "build first (make build): $BIN and $INPROC are needed"
mkdir -p "$work/wrap"
LIBPATH=${BUNDLED_LIBS:+$BUNDLED_LIBS:}$ld_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
for b in "$BIN" "$INPROC"; do
    printf '#!/usr/bin/env bash\nLD_LIBRARY_PATH=%q exec %q "$@"\n' "$LIBPATH" "$(cd "$(dirname "$b")" && pwd)/$(basename "$b")" \
        > "$work/wrap/$(basename "$b")"
    chmod +x "$work/wrap/$(basename "$b")"
done
BIN=$work/wrap/batchd
INPROC=$work/wrap/ort_inproc
"$BIN" version --onnxruntime-lib "$ORT_LIB" 2>/dev/null >&2
# One in-process second on the GPU first: if CUDA cannot start, say why before anything else.
if ! "$INPROC" "$MODELS/mlp/1/model.onnx" 1 8 1 --device "$DEVICE" --onnxruntime-lib "$ORT_LIB" \
        > "$work/probe.json" 2> "$work/probe.log"; then
    grep -v ' INFO ' "$work/probe.log" >&2 || true
    die "ONNX Runtime cannot run on $DEVICE here (the reason is above)"
fi
say "probe: $(cat "$work/probe.json")"

status=0
require=1
[ "$DEVICE" = cpu ] && require=0
# A Python with pytest, requests and numpy (the e2e tests' needs): $PYTHON, python3, Debian's.
PY=""
for p in ${PYTHON:-} python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import pytest, requests, numpy' 2>/dev/null; then
        PY=$p
        break
    fi
done
if [ "$TESTS" = 1 ] && [ -z "$PY" ]; then
    say "tests SKIPPED: no Python with pytest, requests and numpy here (set PYTHON)"
    status=1
elif [ "$TESTS" = 1 ]; then
    say "tests: tests/e2e/test_gpu.py (BD_REQUIRE_GPU=$require)"
    if ! BATCHD_BIN=$BIN BD_GPU_ORT_LIB=$ORT_LIB BD_REQUIRE_GPU=$require BD_SHARED_MODELS=$MODELS \
            "$PY" -m pytest tests/e2e/test_gpu.py -q -p no:cacheprovider -rs >&2; then
        say "tests FAILED (the benchmark runs anyway)"
        status=1
    fi
fi

# ---- benchmark ---------------------------------------------------------------------------------
# shellcheck source=bench/lib.sh
. bench/lib.sh
repo=$work/repo
for m in $BENCH_MODELS; do
    mkdir -p "$repo/$m/1"
    ln -s "$(cd "$MODELS/$m/1" && pwd)/model.onnx" "$repo/$m/1/model.onnx"
    printf '{"device": "%s"}\n' "$DEVICE" > "$repo/$m/config.json"
done
SERVE_FLAGS="--onnxruntime-lib $ORT_LIB" start_server "$repo"
metric() { # metric NAME MODEL: a per-model series' value on /metrics
    python3 - "$url/metrics" "$1" "$2" <<'PY'
import re, sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
for line in text.splitlines():
    if line.startswith(sys.argv[2] + "{") and 'model="%s"' % sys.argv[3] in line:
        print(line.rsplit(" ", 1)[1]); break
else:
    print(0)
PY
}
for m in $BENCH_MODELS; do
    python3 - "$url/v2/models/$m/ready" <<'PY' || { cat "$work/server.log" >&2; die "$m did not load on $DEVICE (the server log is above)"; }
import sys, time, urllib.error, urllib.request
for _ in range(600):
    try:
        if urllib.request.urlopen(sys.argv[1], timeout=10).status == 200:
            sys.exit(0)
    except urllib.error.HTTPError:
        pass
    time.sleep(0.2)
sys.exit(1)
PY
done
grep -E "backend onnxruntime model=|cpu_nodes" "$work/server.log" >&2 || true

: > "$work/rows.tsv"
for m in $BENCH_MODELS; do
    for c in $CONC; do
        e0=$(metric batchd_inference_executions_total "$m"); i0=$(metric batchd_inference_items_total "$m")
        "$BIN" bench --url "$url" --model "$m" --binary --data random --concurrency "$c" \
            --warmup 1s --duration "${SECS}s" --timeout 30s --quiet --csv "$work/b.csv" > /dev/null
        e1=$(metric batchd_inference_executions_total "$m"); i1=$(metric batchd_inference_items_total "$m")
        "$INPROC" "$MODELS/$m/1/model.onnx" 1 "$c" "$SECS" --device "$DEVICE" --onnxruntime-lib "$ORT_LIB" \
            > "$work/i.json" 2> "$work/i.log" || { cat "$work/i.log" >&2; die "ort_inproc failed on $m batch $c"; }
        python3 - "$work/b.csv" "$work/i.json" "$m" "$c" "$e0" "$e1" "$i0" "$i1" >> "$work/rows.tsv" <<'PY'
import csv, json, sys
b = list(csv.DictReader(open(sys.argv[1])))[0]
i = json.load(open(sys.argv[2]))
m, c = sys.argv[3], int(sys.argv[4])
e0, e1, i0, i1 = (float(x) for x in sys.argv[5:9])
batch = (i1 - i0) / (e1 - e0) if e1 > e0 else 0.0
rps = float(b["achieved_rps"])
print("| %s | %d | %s | %.1f | %.2f | %.2f | %.1f%% | %s | %.2f | %.2f |" % (
    m, c, f"{rps:,.0f}", batch, float(b["p50_us"] or "nan") / 1000,
    float(b["p99_us"] or "nan") / 1000,
    100 * float(b["success_rate"]), f"{i['rows_per_s']:,.0f}", i["p50_us"] / 1000,
    rps / i["rows_per_s"] if i["rows_per_s"] else 0.0))
PY
        say "$m c=$c done"
    done
done

mkdir -p bench/results
out=bench/results/gpu-$(date -u +%Y%m%dT%H%M%SZ).md
{
    echo "## $(date -u +%Y-%m-%dT%H:%MZ) on $gpu_name, $(nproc) cores"
    echo
    echo "Command: \`bench/gpu.sh --secs $SECS$([ "$DEVICE" = cpu ] && echo ' --rehearse-on-cpu')\` (batchd: \`batchd bench --binary --data random\`, one"
    echo "row per request, closed loop, \"device\": \"$DEVICE\", server defaults; in-process: build/ort_inproc"
    echo "--device $DEVICE, one call per batch of *concurrency* rows). ONNX Runtime $(sed -n 's/^ORT_GPU_VERSION="\(.*\)"/\1/p' scripts/setup.sh) GPU build."
    echo
    echo "| model | concurrency | batchd req/s (= rows/s) | mean batch | p50 ms | p99 ms | ok | in-process rows/s (batch = concurrency) | in-process p50 ms | batchd / in-process |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    cat "$work/rows.tsv"
} > "$work/table.md"
cp "$work/table.md" "$out"
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
    cp "$work/table.md" "$OUT/gpu-bench.md"
    cp "$work/server.log" "$OUT/gpu-server.log" 2>/dev/null || true
fi
cat "$work/table.md"
say "written to $out"
exit $status
