#!/bin/sh
# Build the libFuzzer targets against the sources directly, then run each for N seconds
# (default 30):
#   decode  bd_infer_decode / bd_infer_encode (fuzz_decode.c; seeds in tests/fuzz/corpus)
#   config  bd_config_parse, a model's config.json (fuzz_config.c; seeds written below)
#   ws      the WebSocket byte checks of src/stream/frames.c (fuzz_ws.c; seeds in corpus-ws)
#   http    the whole server on a loopback port: raw bytes on a connection (fuzz_http.c; seeds
#           in corpus-http); inputs that mention "uthorization" go to a second server with an
#           API key, a rate limit and a listed web page origin
#   image   the JPEG/PNG decoders, resize and base64 of src/image (fuzz_image.c; seeds, tiny
#           images made with Pillow, in corpus-image)
#   gate    the API key file, Authorization and api_key parsers and --rate-limit of src/gate
#           (fuzz_gate.c; seeds written below)
#
# Seconds 0: only replay the seeds and the saved corpus (-runs=0), as `make test` does.
#
#   tests/fuzz/build.sh [seconds] [target ...]      (no target: all of them, in that order)
#
# Needs clang with its fuzzer runtime (Debian: clang, libclang-rt-14-dev) and libjansson-dev.
# Output goes to $BD_FUZZ_OUT (default build-fuzz/): per target the binary, its growing
# corpus in corpus/<target>/ (the checked-in seeds are only read) and any crash-*/leak-*/
# timeout-* artifacts named <target>-crash-... A crash found becomes a seed file and a unit
# test. Exits non-zero when any target failed; every requested target still runs.
set -eu
secs=${1:-30}
case $secs in
'' | *[!0-9]*)
    echo "usage: tests/fuzz/build.sh [seconds] [target ...]   (seconds: a whole number; 0 replays only)" >&2
    exit 2
    ;;
esac
[ $# -gt 0 ] && shift
targets=${*:-decode config ws http image gate}
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${BD_FUZZ_OUT:-$root/build-fuzz}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Compile one target: fuzz_<name>.c plus the sources it needs.
build() {
    name=$1
    shift
    clang -std=c11 -g -O1 -D_GNU_SOURCE -DBD_VERSION='"fuzz"' \
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
        -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla \
        -I"$root/src" \
        "$root/tests/fuzz/fuzz_$name.c" "$@" "$root/src/core/core.c" \
        $(pkg-config --cflags --libs jansson) -lm -lpthread -ldl \
        -o "$out/fuzz_$name"
}

# Tokens of the request format help the fuzzer past the JSON structure.
write_decode_dict() {
    cat > "$out/decode.dict" <<'DICT'
"\"inputs\""
"\"outputs\""
"\"name\""
"\"datatype\""
"\"shape\""
"\"data\""
"\"id\""
"\"parameters\""
"\"binary_data_size\""
"\"binary_data_output\""
"\"binary_data\""
"\"priority\""
"\"timeout\""
"\"sim_fail\""
"\"classification\""
"\"BOOL\""
"\"UINT8\""
"\"UINT16\""
"\"UINT32\""
"\"UINT64\""
"\"INT8\""
"\"INT16\""
"\"INT32\""
"\"INT64\""
"\"FP16\""
"\"FP32\""
"\"FP64\""
"\"BYTES\""
"18446744073709551615"
"9223372036854775808"
"-9223372036854775809"
"1e400"
"\\u0000"
"true"
"false"
"null"
DICT
}

# HTTP/1.1 and WebSocket handshake tokens for the whole-server target.
write_http_dict() {
    cat > "$out/http.dict" <<'DICT'
"\x0d\x0a"
"\x0d\x0a\x0d\x0a"
"Host: x"
"Content-Length: "
"Transfer-Encoding: chunked"
"Connection: close"
"Inference-Header-Content-Length: "
"POST /v2/models/m/infer HTTP/1.1"
"GET /v2/stream HTTP/1.1"
"Upgrade: websocket"
"Connection: Upgrade"
"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
"Sec-WebSocket-Version: 13"
"\"binary_data_size\""
"Authorization: Bearer fuzzkey"
"Origin: http://page.example"
"Origin: http://x"
"Origin: null"
"Host: localhost:1"
"Host: [::1]"
"OPTIONS /v2/models/m/infer HTTP/1.1"
"Access-Control-Request-Method: POST"
"Access-Control-Request-Private-Network: true"
DICT
}

# Every key config.c knows, its enumerated values and boundary numbers.
write_config_dict() {
    cat > "$out/config.dict" <<'DICT'
"\"name\""
"\"backend\""
"\"onnxruntime\""
"\"sim\""
"\"max_batch_size\""
"\"dynamic_batching\""
"\"max_queue_delay_us\""
"\"auto\""
"\"max_queue_size\""
"\"priority_levels\""
"\"default_priority_level\""
"\"default_timeout_us\""
"\"preferred_batch_sizes\""
"\"priority_queue_policy\""
"\"instances\""
"\"threads_per_instance\""
"\"inputs\""
"\"outputs\""
"\"datatype\""
"\"dims\""
"\"latency_us\""
"\"per_item_us\""
"\"fail_rate\""
"\"device\""
"\"cpu\""
"\"cuda:0\""
"\"version_policy\""
"\"latest\""
"\"num_versions\""
"\"all\""
"\"specific\""
"\"versions\""
"\"warmup\""
"\"batch_sizes\""
"\"count\""
"\"circuit_breaker\""
"\"consecutive_failures\""
"\"cooldown_us\""
"\"FP32\""
"\"INT64\""
"\"BOOL\""
"\"FP16\""
"\"m\""
"\"1\""
"\"16\""
"\"17\""
"1073741824"
"1073741825"
"4096"
"60000000"
"3600000000"
"4611686018427387903"
"9223372036854775807"
"-9223372036854775808"
"1e400"
"-1"
"0.5"
"\\u0000"
"true"
"false"
"null"
"{}"
"[]"
DICT
}

# Seeds for config: the documented example, every key at once, and small variants.
write_config_seeds() {
    d="$out/seeds/config"
    mkdir -p "$d"
    cat > "$d/example.json" <<'JSON'
{"backend": "sim", "max_batch_size": 32,
 "dynamic_batching": {"max_queue_delay_us": 500, "max_queue_size": 1024},
 "instances": 1, "threads_per_instance": 1,
 "inputs":  [{"name": "INPUT0", "datatype": "FP32", "dims": [16]}],
 "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "dims": [16]}],
 "sim": {"latency_us": 2000, "per_item_us": 100}}
JSON
    cat > "$d/every_key.json" <<'JSON'
{"name": "m", "backend": "sim", "max_batch_size": 8,
 "dynamic_batching": {"max_queue_delay_us": "auto", "max_queue_size": 7, "priority_levels": 3,
   "default_priority_level": 2, "default_timeout_us": 1000, "preferred_batch_sizes": [2, 4],
   "priority_queue_policy": {"1": {"max_queue_size": 2, "default_timeout_us": 5}}},
 "instances": 2, "threads_per_instance": 0,
 "inputs": [{"name": "A", "datatype": "INT64", "dims": [-1, 2]},
            {"name": "B", "datatype": "BOOL", "dims": []}],
 "outputs": [{"name": "A", "datatype": "INT64", "dims": [-1, 2]},
             {"name": "C", "datatype": "BOOL", "dims": []}],
 "sim": {"latency_us": 0, "per_item_us": 0, "fail_rate": 0.5},
 "device": "cuda:0",
 "version_policy": {"specific": {"versions": [1, 3]}},
 "warmup": {"batch_sizes": [1, 8, 1], "count": 2},
 "circuit_breaker": {"consecutive_failures": 0, "cooldown_us": 1000}}
JSON
    printf '%s' '{"dynamic_batching": false, "version_policy": {"latest": {"num_versions": 2}}}' \
        > "$d/batching_off.json"
    printf '%s' '{"version_policy": {"all": {}}, "backend": "onnxruntime"}' > "$d/all.json"
    printf '%s' '{}' > "$d/empty_object.json"
}

status=0
for t in $targets; do
    case $t in
    decode)
        build decode "$root/src/tensor/codec.c" "$root/src/tensor/tensor.c"
        write_decode_dict
        seeds="$root/tests/fuzz/corpus"
        maxlen=65536
        ;;
    config)
        build config "$root/src/repo/config.c" "$root/src/backend/backend.c" \
            "$root/src/backend/sim.c" "$root/src/backend/ort.c" "$root/src/tensor/tensor.c"
        write_config_dict
        write_config_seeds
        seeds="$out/seeds/config"
        maxlen=16384
        ;;
    http)
        s="$root/src"
        build http -DH2O_USE_LIBUV=0 "$s/core/mailbox.c" "$s/tensor/codec.c" \
            "$s/tensor/tensor.c" "$s/metrics/metrics.c" "$s/gate/gate.c" "$s/backend/backend.c" \
            "$s/backend/sim.c" "$s/backend/ort.c" "$s/sched/sched.c" "$s/sched/autodelay.c" \
            "$s/repo/repo.c" "$s/repo/config.c" "$s/infer/infer.c" "$s/stream/stream.c" \
            "$s/stream/frames.c" "$s/http/http.c" "$s/http/tls.c" "$s/server/server.c" \
            "$s/image/image.c" \
            "$s/zip/zip.c" $(pkg-config --cflags --libs libh2o-evloop libturbojpeg spng zlib) \
            -lssl -lcrypto -lwslay
        write_http_dict
        seeds="$root/tests/fuzz/corpus-http"
        maxlen=8192
        ;;
    image)
        build image "$root/src/image/image.c" $(pkg-config --cflags --libs libturbojpeg spng)
        printf '"\\x89PNG\\x0d\\x0a\\x1a\\x0a"\n"IHDR"\n"IDAT"\n"PLTE"\n"tRNS"\n"IEND"\n"\\xff\\xd8\\xff"\n"\\xff\\xc0"\n"\\xff\\xc2"\n"\\xff\\xc4"\n"\\xff\\xda"\n"\\xff\\xdb"\n"\\xff\\xd9"\n' > "$out/image.dict"
        seeds="$root/tests/fuzz/corpus-image"
        maxlen=65536
        ;;
    ws)
        build ws "$root/src/stream/frames.c"
        printf '"\\x81"\n"\\x88"\n"\\x89"\n"\\x8a"\n"\\xfe"\n"\\xff"\n' > "$out/ws.dict"
        seeds="$root/tests/fuzz/corpus-ws"
        maxlen=4096
        ;;
    gate)
        build gate "$root/src/gate/gate.c" -lcrypto
        mkdir -p "$out/seeds/gate"
        printf '# keys\n\nkey-one-0001 infer\n  key-two-0002\tadmin # ops\r\n' > "$out/seeds/gate/keys"
        printf 'key infer extra\nbad-role reader\n' > "$out/seeds/gate/bad-keys"
        printf 'Bearer abc.def-ghi' > "$out/seeds/gate/bearer"
        printf 'x=1&api_key=ab%%2Fc%%3D' > "$out/seeds/gate/query"
        printf '5:10' > "$out/seeds/gate/rate"
        printf '"infer"\n"admin"\n"#"\n"Bearer "\n"api_key="\n"%%2F"\n":"\n' > "$out/gate.dict"
        seeds="$out/seeds/gate"
        maxlen=4096
        ;;
    *)
        echo "fuzz: unknown target '$t'; expected decode, config, ws, http, image or gate" >&2
        exit 2
        ;;
    esac
    mkdir -p "$out/corpus/$t"
    echo "fuzz: built $out/fuzz_$t; running for ${secs}s (0: replay only)"
    if [ "$secs" = 0 ]; then
        limit="-runs=0"
    else
        limit="-max_total_time=$secs"
    fi
    # sh has no pipefail: the fuzzer's status travels in a file past tee.
    { (cd "$out" && "./fuzz_$t" "$limit" -timeout=10 -rss_limit_mb=2048 \
        -max_len="$maxlen" -print_final_stats=1 -dict="$out/$t.dict" \
        -artifact_prefix="$out/$t-" "$out/corpus/$t" "$seeds"); echo $? > "$out/$t.rc"; } 2>&1 |
        tee "$out/$t.log"
    if [ "$(cat "$out/$t.rc")" = 0 ]; then
        echo "fuzz: $t: no failure in ${secs}s"
    else
        # CI shows a log's tail: repeat the report's first lines, which say what failed where.
        echo "fuzz: $t: FAILED (artifacts: $out/$t-*); the report begins:" >&2
        grep -m1 -A14 -E '^==[0-9]+==|runtime error|^fuzz_' "$out/$t.log" >&2 || true
        status=1
    fi
done
exit $status
