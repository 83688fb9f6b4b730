#!/usr/bin/env bash
# Installs everything batchd needs to build, test and run: Debian packages (apt-get, only the
# missing ones) and ONNX Runtime 1.30.0's libonnxruntime.so.1, taken from the npm package
# onnxruntime-node (the official Microsoft CPU build) and checked against pinned sha256 sums.
# Idempotent: when everything is present it only checks (about a second) and changes nothing.
#
#   scripts/setup.sh [--gpu]     (make setup [GPU=1])
#
# --gpu also installs a GPU build of ONNX Runtime 1.29.0 beside the CPU one (for models with
# "device": "cuda:N"; start batchd with --onnxruntime-lib <that folder>/libonnxruntime.so.1):
# libonnxruntime.so.1 from the npm package com.github.asus4.onnxruntime@0.4.9 and
# libonnxruntime_providers_cuda.so + libonnxruntime_providers_shared.so from
# com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9, each tarball and each file checked against
# pinned sha256 sums (../shared/onnxruntime/GPU.md). About 330 MB to download; the folder is
# 260 MB. Running models on a GPU also needs the NVIDIA driver, CUDA 13 and cuDNN 9, which
# this script does not install.
#
# Environment:
#   BD_ORT_DIR        where libonnxruntime.so.1 goes (default: <repo>/third_party/onnxruntime)
#   BD_ORT_GPU_DIR    where the GPU build goes (default: <repo>/third_party/onnxruntime-gpu)
#   BD_SKIP_APT=1     do not check or install Debian packages (e.g. in a prepared container)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ORT_DIR="${BD_ORT_DIR:-$ROOT/third_party/onnxruntime}"
ORT_GPU_DIR="${BD_ORT_GPU_DIR:-$ROOT/third_party/onnxruntime-gpu}"

GPU=0
for arg in "$@"; do
    case "$arg" in
        --gpu) GPU=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) printf 'setup: error: unknown argument %s (expected --gpu)\n' "$arg" >&2; exit 2 ;;
    esac
done

ORT_VERSION="1.30.0"
ORT_NPM_PACKAGE="onnxruntime-node@$ORT_VERSION"
ORT_TARBALL_SHA256="6e3390d6b783e7be946fad629292799da28d0b42f84856e50d2c1b0383291e75"
ORT_MEMBER="package/bin/napi-v6/linux/x64/libonnxruntime.so.1"
ORT_LIB_SHA256="ffb75a925ba05e47b235bb66e3e3911714a80b328a9c9425539feb204aa32a23"

# The GPU build (--gpu). bench/gpu.sh reads these sums too, to check a copy it reassembles.
ORT_GPU_VERSION="1.29.0"
ORT_GPU_CORE_PACKAGE="com.github.asus4.onnxruntime@0.4.9"
ORT_GPU_CORE_TARBALL_SHA256="e59788788818fdde1b2e522e766a21ba0f7d8391de55737abf81e32cc801785d"
ORT_GPU_CORE_MEMBER="package/Plugins/Linux/x64/libonnxruntime.so"
ORT_GPU_CORE_SHA256="5715f06d8992ca8eeeddcce43df3a7d38f97d537052126f558e912cb312460ca"
ORT_GPU_CUDA_PACKAGE="com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9"
ORT_GPU_CUDA_TARBALL_SHA256="2b459e0c17f340c92970c10ed86de4f37a3009f93c14053e6ad4334cbb6be412"
ORT_GPU_CUDA_MEMBER="package/Plugins/Linux/x64/libonnxruntime_providers_cuda.so"
ORT_GPU_CUDA_SHA256="56cf3254b118ad837ccc4ed8f6d1b23504bbf7ef91b34cbc0b289cb7f10b3037"
# The provider bridge that ships with the CUDA provider (the core package has its own build
# of it, with another sum; this one is the CUDA provider's match).
ORT_GPU_SHARED_MEMBER="package/Plugins/Linux/x64/libonnxruntime_providers_shared.so"
ORT_GPU_SHARED_SHA256="c6a12593396095f5670160e284c35d1700b7708cf3037b7042e2a5200ccae772"

# Why each package is here (checked on bookworm):
#   build-essential cmake pkg-config     the C build
#   libh2o-evloop-dev                    HTTP/WebSocket front end; its headers include
#   libssl-dev libwslay-dev                <openssl/ssl.h> and <wslay/wslay.h>, which its -dev
#                                          package does not pull in. (libuv1-dev is not needed:
#                                          src/http builds with H2O_USE_LIBUV=0.)
#   libjansson-dev libcmocka-dev         JSON; unit tests
#   python3 python3-pytest python3-requests   end-to-end tests (run with /usr/bin/python3)
#   python3-websockets                   WebSocket end-to-end tests (an independent client)
#   python3-numpy python3-sklearn python3-onnx making the demo and test models
#   clang libclang-rt-14-dev             libFuzzer targets (clang's fuzzer and sanitizer runtimes)
#   clang-format                         the formatting check in make test (Debian 14.x)
#   valgrind wrk nginx-light             leak checks; HTTP benchmarks (nginx: the `return 200` yardstick)
#   redis-server                         Redis Streams ingest: the e2e tests and bench/redis.sh start their own
#   libhiredis-dev                       the Redis client (async API on the h2o loop) src/ingest builds on
#   python3-redis                        producer and checker in the Redis e2e tests and bench/redis.sh
#   libturbojpeg0-dev                    JPEG decoding for image models (libjpeg-turbo: accurate DCT, SIMD)
#   libspng-dev                          PNG decoding for image models (small, fast, decodes from memory)
#   zlib1g-dev                           gzip/deflate request and reply bodies (src/zip)
#   python3-pil                          the Pillow reference the image e2e tests compare against
#   npm (only when no `npm` command exists) fetching onnxruntime-node below
PACKAGES=(
    build-essential cmake pkg-config
    libh2o-evloop-dev libssl-dev libwslay-dev
    libjansson-dev libcmocka-dev
    python3 python3-pytest python3-requests python3-websockets python3-numpy python3-sklearn python3-onnx
    clang libclang-rt-14-dev clang-format
    valgrind wrk nginx-light
    redis-server libhiredis-dev python3-redis
    libturbojpeg0-dev libspng-dev python3-pil
    zlib1g-dev
)

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run '$*' and sudo is not installed; run this script as root"
    fi
}

install_packages() {
    if [ "${BD_SKIP_APT:-0}" = "1" ]; then
        say "skipping Debian packages (BD_SKIP_APT=1)"
        return
    fi
    command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found; this script expects Debian bookworm (or a derivative)"

    local missing=() pkg status
    for pkg in "${PACKAGES[@]}"; do
        status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
        if [ "$status" != "installed" ]; then
            missing+=("$pkg")
        fi
    done
    # nodesource's nodejs ships npm itself and conflicts with Debian's npm package, so ask for
    # Debian's only when there is no npm at all.
    if ! command -v npm >/dev/null 2>&1; then
        missing+=(npm)
    fi

    if [ "${#missing[@]}" -eq 0 ]; then
        say "Debian packages: all ${#PACKAGES[@]} present"
        return
    fi
    say "Debian packages missing: ${missing[*]}"
    say "running apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    say "installing: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}"
    say "Debian packages installed"
}

# npm_pack PACKAGE SHA256 DIR: download PACKAGE's tarball into DIR and check its sha256; prints
# the tarball's path. `npm pack` only downloads the tarball (npm checks the registry's integrity
# hash); it runs no install scripts, unlike `npm install`. Its cache goes in DIR too, which the
# caller removes: npm's default, ~/.npm, would keep a copy of every tarball (330 MB for GPU=1).
npm_pack() {
    local package=$1 want=$2 dir=$3 tarball got
    (cd "$dir" && npm pack --silent --loglevel=error --cache "$dir/npm-cache" "$package" >pack.out) ||
        die "npm pack $package failed (is the npm registry reachable?)"
    tarball="$dir/$(tail -n 1 "$dir/pack.out")"
    [ -f "$tarball" ] || die "npm pack $package did not produce the expected tarball (got '$(cat "$dir/pack.out")')"
    got="$(sha256_of "$tarball")"
    [ "$got" = "$want" ] ||
        die "$package tarball has sha256 $got, expected $want; refusing to use it"
    say "$package: tarball sha256 ok ($(du -h "$tarball" | cut -f1))" >&2
    printf '%s\n' "$tarball"
}

# extract TARBALL MEMBER SHA256 DEST: one file out of a tarball, checked, to DEST (extracted
# beside it and renamed in, so an interrupted run never leaves a half-written library behind).
extract_checked() {
    local tarball=$1 member=$2 want=$3 dest=$4 dir got
    dir="$(dirname "$dest")/x.$$"
    mkdir -p "$dir"
    tar --no-same-owner -xzf "$tarball" -C "$dir" "$member" || die "$(basename "$tarball") does not contain $member"
    got="$(sha256_of "$dir/$member")"
    [ "$got" = "$want" ] ||
        die "$(basename "$member") from $(basename "$tarball") has sha256 $got, expected $want; refusing to use it"
    mv -f "$dir/$member" "$dest"
    chmod 0644 "$dest"
    rm -rf "$dir"
}

install_onnxruntime() {
    local lib="$ORT_DIR/libonnxruntime.so.1"
    if [ -f "$lib" ] && [ "$(sha256_of "$lib")" = "$ORT_LIB_SHA256" ]; then
        say "ONNX Runtime $ORT_VERSION: present at $lib (sha256 ok)"
        return
    fi
    if [ -e "$lib" ]; then
        say "ONNX Runtime: $lib has the wrong sha256; fetching it again"
    else
        say "ONNX Runtime: $lib is missing; fetching $ORT_NPM_PACKAGE with npm pack"
    fi
    command -v npm >/dev/null 2>&1 || die "npm is not installed; install nodejs/npm or run without BD_SKIP_APT"

    local tmp tarball
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/batchd-ort.XXXXXX")"
    # shellcheck disable=SC2064 # expand $tmp now: it is local and gone when the trap runs
    trap "rm -rf '$tmp'" EXIT
    mkdir -p "$ORT_DIR"
    tarball="$(npm_pack "$ORT_NPM_PACKAGE" "$ORT_TARBALL_SHA256" "$tmp")"
    extract_checked "$tarball" "$ORT_MEMBER" "$ORT_LIB_SHA256" "$lib"
    rm -rf "$tmp"
    trap - EXIT
    say "ONNX Runtime $ORT_VERSION installed at $lib (sha256 ok)"
}

gpu_present() {
    [ -f "$ORT_GPU_DIR/libonnxruntime.so.1" ] &&
        [ "$(sha256_of "$ORT_GPU_DIR/libonnxruntime.so.1")" = "$ORT_GPU_CORE_SHA256" ] &&
        [ -f "$ORT_GPU_DIR/libonnxruntime_providers_shared.so" ] &&
        [ "$(sha256_of "$ORT_GPU_DIR/libonnxruntime_providers_shared.so")" = "$ORT_GPU_SHARED_SHA256" ] &&
        [ -f "$ORT_GPU_DIR/libonnxruntime_providers_cuda.so" ] &&
        [ "$(sha256_of "$ORT_GPU_DIR/libonnxruntime_providers_cuda.so")" = "$ORT_GPU_CUDA_SHA256" ]
}

# The GPU build goes into a staging folder beside ORT_GPU_DIR, is checked there, and replaces
# ORT_GPU_DIR with renames, so an interrupted run never leaves a partial folder in its place.
install_onnxruntime_gpu() {
    if gpu_present; then
        say "ONNX Runtime $ORT_GPU_VERSION (GPU build): present at $ORT_GPU_DIR (sha256 ok)"
        return
    fi
    say "ONNX Runtime $ORT_GPU_VERSION (GPU build): fetching $ORT_GPU_CORE_PACKAGE and $ORT_GPU_CUDA_PACKAGE with npm pack (about 330 MB)"
    command -v npm >/dev/null 2>&1 || die "npm is not installed; install nodejs/npm or run without BD_SKIP_APT"

    local parent tmp stage started core cuda
    started=$(date +%s)
    parent="$(dirname "$ORT_GPU_DIR")"
    mkdir -p "$parent"
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/batchd-ort-gpu.XXXXXX")"
    stage="$(mktemp -d "$parent/.onnxruntime-gpu.partial.XXXXXX")"
    # shellcheck disable=SC2064 # expand now: both are local and gone when the trap runs
    trap "rm -rf '$tmp' '$stage'" EXIT

    core="$(npm_pack "$ORT_GPU_CORE_PACKAGE" "$ORT_GPU_CORE_TARBALL_SHA256" "$tmp")"
    extract_checked "$core" "$ORT_GPU_CORE_MEMBER" "$ORT_GPU_CORE_SHA256" "$stage/libonnxruntime.so.1"
    rm -f "$core"
    cuda="$(npm_pack "$ORT_GPU_CUDA_PACKAGE" "$ORT_GPU_CUDA_TARBALL_SHA256" "$tmp")"
    extract_checked "$cuda" "$ORT_GPU_SHARED_MEMBER" "$ORT_GPU_SHARED_SHA256" "$stage/libonnxruntime_providers_shared.so"
    extract_checked "$cuda" "$ORT_GPU_CUDA_MEMBER" "$ORT_GPU_CUDA_SHA256" "$stage/libonnxruntime_providers_cuda.so"
    rm -f "$cuda"
    chmod 0755 "$stage"

    if [ -e "$ORT_GPU_DIR" ]; then
        mv "$ORT_GPU_DIR" "$stage.old"
    fi
    mv "$stage" "$ORT_GPU_DIR"
    rm -rf "$stage.old" "$tmp"
    trap - EXIT
    say "ONNX Runtime $ORT_GPU_VERSION (GPU build) installed at $ORT_GPU_DIR in $(( $(date +%s) - started )) s (sha256 ok)"
    say "serve GPU models with: batchd serve --onnxruntime-lib $ORT_GPU_DIR/libonnxruntime.so.1 ..."
}

say "repository $ROOT"
install_packages
install_onnxruntime
if [ "$GPU" = "1" ]; then
    install_onnxruntime_gpu
fi
say "done"
