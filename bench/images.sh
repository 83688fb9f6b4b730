#!/usr/bin/env bash
# bench/images.sh [MODELS_DIR] [SECONDS]: mobilenet_v2 fed 640x480 JPEGs (issue 10).
#  1. image_prep: what preprocessing costs per image on one thread (JPEG decode apart from
#     resize + normalize), for four 640x480 JPEGs made here with Pillow;
#  2. ort_inproc: mobilenet_v2 in-process on ready tensors at batch 1, 8 and 32 with the
#     threads batchd uses (the cores), the model's own compute per image;
#  3. the server: plain JPEG bodies (Content-Type: image/jpeg) posted by CONC threads
#     (1, 2, 4, 8, 16) for SECONDS each, images/s and p50/p99.
#   BATCHD_BIN=build/batchd bench/images.sh ../shared/models 8
# IMAGES_SPINNING=on: the model's config.json sets "intra_op_spinning": true, and ort_inproc
# runs with --intra-op-spinning on (default off, as the server's).
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${1:-../shared/models}
secs=${2:-8}
SPIN=${IMAGES_SPINNING:-off}
case $SPIN in on | off) ;; *) echo "bench: IMAGES_SPINNING must be on or off" >&2; exit 2 ;; esac
BIN=${BATCHD_BIN:-build/batchd}
DIR=$(dirname "$BIN")
PYTHON=${PYTHON:-/usr/bin/python3}
[ -f "$MODELS/mobilenet_v2/1/model.onnx" ] || { echo "bench: no $MODELS/mobilenet_v2" >&2; exit 1; }
. bench/lib.sh
bench_temp
"$PYTHON" - "$work" <<'PY'
import sys
import numpy as np
from PIL import Image, ImageDraw, ImageFilter
rng = np.random.default_rng(1)
for i in range(4):
    y, x = np.mgrid[0:480, 0:640]
    base = np.stack([(x * (i + 1)) % 256, (y * 2 + i * 40) % 256, ((x + y) // 3) % 256],
                    -1).astype(np.float32) + rng.normal(0, 12, (480, 640, 3))
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, 600)), int(rng.integers(0, 440))
        d.ellipse([x0, y0, x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 200))],
                  fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    im.filter(ImageFilter.GaussianBlur(1.2)).save("%s/photo%d.jpg" % (sys.argv[1], i), quality=90)
PY
echo "## preprocessing per image, one thread (image_prep 224x224, RGB, NCHW, stretch)"
"$DIR/image_prep" 224 224 2 "$work"/photo*.jpg
echo "## mobilenet_v2 in-process, $(nproc) threads"
for b in 1 8 32; do
  "$DIR/ort_inproc" "$MODELS/mobilenet_v2/1/model.onnx" "$(nproc)" "$b" 4 --intra-op-spinning "$SPIN"
done
mkdir -p "$work/repo/mobilenet_v2/1"
ln -s "$(cd "$MODELS/mobilenet_v2/1" && pwd)/model.onnx" "$work/repo/mobilenet_v2/1/model.onnx"
cat > "$work/repo/mobilenet_v2/config.json" <<'JSON'
{"max_batch_size": 32,
 "preprocess": {"input": "input", "image": {"size": [224, 224], "resize": "stretch",
   "color": "RGB", "layout": "NCHW", "scale": 0.00392156862745098,
   "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}}
JSON
if [ "$SPIN" = on ]; then
  sed -i '1s/^{/{"intra_op_spinning": true, /' "$work/repo/mobilenet_v2/config.json"
fi
start_server "$work/repo"
echo "## the server, plain JPEG bodies ($url), intra_op_spinning $SPIN"
"$PYTHON" - "$url" "$secs" "$work" <<'PY'
import sys, threading, time
import requests
url, secs, work = sys.argv[1], float(sys.argv[2]), sys.argv[3]
imgs = [open("%s/photo%d.jpg" % (work, i), "rb").read() for i in range(4)]
for conc in (1, 2, 4, 8, 16):
    lat, stop, errs = [], time.monotonic() + secs, []
    def run(k):
        s = requests.Session()
        i = k
        while time.monotonic() < stop:
            t0 = time.monotonic()
            r = s.post(url + "/v2/models/mobilenet_v2/infer", data=imgs[i % 4],
                       headers={"Content-Type": "image/jpeg"}, timeout=60)
            if r.status_code != 200:
                errs.append(r.status_code)
            lat.append(time.monotonic() - t0)
            i += 1
    ts = [threading.Thread(target=run, args=(k,)) for k in range(conc)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    took = time.monotonic() - t0
    lat.sort()
    print("concurrency %2d: %6.1f images/s, p50 %6.1f ms, p99 %6.1f ms, errors %d"
          % (conc, len(lat) / took, lat[len(lat) // 2] * 1e3,
             lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3, len(errs)))
PY
