#!/bin/sh
# Build the libFuzzer target for the infer request decoder against the sources directly, then
# run it for N seconds (default 30) on tests/fuzz/corpus.
#   tests/fuzz/build.sh [seconds]
# Needs clang with its fuzzer runtime (Debian: clang, libclang-rt-14-dev) and libjansson-dev.
# Output goes to build-tensor/fuzz/: the binary, the growing corpus (seeds are only read) and
# any crash-*/leak-*/timeout-* artifacts. A crash found becomes a seed file and a unit test.
set -eu
secs=${1:-30}
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/build-tensor/fuzz"
mkdir -p "$out/corpus"
clang -std=c11 -g -O1 -D_GNU_SOURCE -DBD_VERSION='"fuzz"' \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla \
    -I"$root/src" \
    "$root/tests/fuzz/fuzz_decode.c" "$root/src/tensor/codec.c" "$root/src/tensor/tensor.c" \
    "$root/src/core/core.c" \
    $(pkg-config --cflags --libs jansson) -lm -lpthread \
    -o "$out/fuzz_decode"
# Tokens of the request format help the fuzzer past the JSON structure.
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
echo "fuzz: built $out/fuzz_decode; running for ${secs}s"
cd "$out"
exec ./fuzz_decode -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -dict="$out/decode.dict" -artifact_prefix="$out/" \
    "$out/corpus" "$root/tests/fuzz/corpus"
