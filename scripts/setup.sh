#!/usr/bin/env bash
# Installs everything batchd needs to build, test and run: Debian packages (apt-get, only the
# missing ones) and ONNX Runtime 1.30.0's libonnxruntime.so.1, taken from the npm package
# onnxruntime-node (the official Microsoft CPU build) and checked against pinned sha256 sums.
# Idempotent: when everything is present it only checks (about a second) and changes nothing.
#
# Environment:
#   BD_ORT_DIR        where libonnxruntime.so.1 goes (default: <repo>/third_party/onnxruntime)
#   BD_SKIP_APT=1     do not check or install Debian packages (e.g. in a prepared container)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ORT_DIR="${BD_ORT_DIR:-$ROOT/third_party/onnxruntime}"

ORT_VERSION="1.30.0"
ORT_NPM_PACKAGE="onnxruntime-node@$ORT_VERSION"
ORT_TARBALL_SHA256="6e3390d6b783e7be946fad629292799da28d0b42f84856e50d2c1b0383291e75"
ORT_MEMBER="package/bin/napi-v6/linux/x64/libonnxruntime.so.1"
ORT_LIB_SHA256="ffb75a925ba05e47b235bb66e3e3911714a80b328a9c9425539feb204aa32a23"

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

    local tmp
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/batchd-ort.XXXXXX")"
    # shellcheck disable=SC2064 # expand $tmp now: it is local and gone when the trap runs
    trap "rm -rf '$tmp'" EXIT

    # `npm pack` only downloads the tarball (npm checks the registry's integrity hash); it runs
    # no install scripts, unlike `npm install onnxruntime-node`.
    (cd "$tmp" && npm pack --silent --loglevel=error "$ORT_NPM_PACKAGE" >pack.out) ||
        die "npm pack $ORT_NPM_PACKAGE failed (is the npm registry reachable?)"
    local tarball
    tarball="$tmp/$(tail -n 1 "$tmp/pack.out")"
    [ -f "$tarball" ] || die "npm pack did not produce the expected tarball (got '$(cat "$tmp/pack.out")')"

    local got
    got="$(sha256_of "$tarball")"
    [ "$got" = "$ORT_TARBALL_SHA256" ] ||
        die "$ORT_NPM_PACKAGE tarball has sha256 $got, expected $ORT_TARBALL_SHA256; refusing to use it"
    say "tarball sha256 ok ($(du -h "$tarball" | cut -f1))"

    tar -xzf "$tarball" -C "$tmp" "$ORT_MEMBER" ||
        die "the tarball does not contain $ORT_MEMBER"
    got="$(sha256_of "$tmp/$ORT_MEMBER")"
    [ "$got" = "$ORT_LIB_SHA256" ] ||
        die "extracted libonnxruntime.so.1 has sha256 $got, expected $ORT_LIB_SHA256; refusing to use it"

    mkdir -p "$ORT_DIR"
    # Copy then rename, so an interrupted run never leaves a half-written library behind.
    cp "$tmp/$ORT_MEMBER" "$ORT_DIR/.libonnxruntime.so.1.partial"
    chmod 0644 "$ORT_DIR/.libonnxruntime.so.1.partial"
    mv -f "$ORT_DIR/.libonnxruntime.so.1.partial" "$lib"
    rm -rf "$tmp"
    trap - EXIT
    say "ONNX Runtime $ORT_VERSION installed at $lib (sha256 ok)"
}

say "repository $ROOT"
install_packages
install_onnxruntime
say "done"
