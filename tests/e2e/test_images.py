"""Image preprocessing (issue 10, second slice): the tensor a model receives from JPEG/PNG
inputs matches a Pillow + numpy reference; bad images get 400 and the server stays up.

The models are sim models whose output is a copy of their input, so the reply is the
preprocessed tensor itself."""
import base64
import io
import json
import os
import struct
import threading
import time
import zlib

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import HTTP_TIMEOUT_S, error_message, ort_available, parse_infer_reply, vm_kib

H, W = 12, 16
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
SCALE = 1.0 / 255


def make_image(mode, w, h, seed=1):
    rng = np.random.default_rng(seed)
    # A smooth gradient plus noise: resampling errors show, JPEG stays close.
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1),
                     (xx + yy) * 255 // max(w + h - 2, 1)], axis=-1)
    arr = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode == "L":
        return img.convert("L")
    if mode == "RGBA":
        a = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
        img = img.copy()
        img.putalpha(a)
        return img
    if mode == "LA":
        g = img.convert("L")
        g.putalpha(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L"))
        return g
    if mode == "P":
        return img.convert("P", palette=Image.ADAPTIVE, colors=64)
    return img


def encode(img, fmt):
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=95)
    else:
        img.save(buf, "PNG")
    return buf.getvalue()


def reference(data, size, resize, color, layout):
    h, w = size
    img = Image.open(io.BytesIO(data))
    img = img.convert("L" if color == "GRAY" else "RGB")
    if resize == "stretch":
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
    else:
        iw, ih = img.size
        if h * iw >= w * ih:
            rh, rw = h, max(w, (iw * h * 2 + ih) // (ih * 2))
        else:
            rw, rh = w, max(h, (ih * w * 2 + iw) // (iw * 2))
        if (rw, rh) != (iw, ih):
            img = img.resize((rw, rh), Image.BILINEAR)
        x0, y0 = (rw - w) // 2, (rh - h) // 2
        img = img.crop((x0, y0, x0 + w, y0 + h))
    a = np.asarray(img, dtype=np.float32)
    if color == "GRAY":
        a = a[:, :, None]
        mean, std = np.float32([0.5]), np.float32([0.25])
    else:
        if color == "BGR":
            a = a[:, :, ::-1]
        mean, std = np.float32(MEAN), np.float32(STD)
    a = (a * np.float32(SCALE) - mean) / std
    return a.transpose(2, 0, 1) if layout == "NCHW" else a


def add_image_model(repo, name, resize, color, layout, max_batch_size=8, size=(H, W)):
    c = 1 if color == "GRAY" else 3
    h, w = size
    dims = [c, h, w] if layout == "NCHW" else [h, w, c]
    image = {"size": [h, w], "resize": resize, "color": color, "layout": layout,
             "scale": SCALE}
    if color == "GRAY":
        image.update(mean=[0.5], std=[0.25])
    else:
        image.update(mean=MEAN, std=STD)
    return repo.add_sim(name, [("image", "FP32", dims)], [("out", "FP32", dims)],
                        max_batch_size=max_batch_size,
                        extra={"preprocess": {"input": "image", "image": image}})


CONFIGS = [(r, c, l) for r in ("stretch", "shorter_side_crop") for c in ("RGB", "BGR", "GRAY")
           for l in ("NCHW", "NHWC")]


def model_name(r, c, l):
    return "img_%s_%s_%s" % (r, c, l)


@pytest.fixture(scope="module")
def client(start_server):
    repo = start_server.repo()
    for r, c, l in CONFIGS:
        add_image_model(repo, model_name(r, c, l), r, c, l)
    add_image_model(repo, "img_single", "stretch", "RGB", "NCHW", max_batch_size=0)
    repo.add_sim("plain", [("INPUT0", "FP32", [4])])
    labels_model = add_image_model(repo, "img_cls", "stretch", "RGB", "NCHW")
    # Two decoding threads, and a delay long enough that concurrent requests share one batch.
    repo.add_sim("img_par", [("image", "FP32", [3, H, W])], [("out", "FP32", [3, H, W])],
                 max_batch_size=8,
                 extra={"threads_per_instance": 2,
                        "dynamic_batching": {"max_queue_delay_us": 300000},
                        "preprocess": {"input": "image", "image": {
                            "size": [H, W], "resize": "stretch", "color": "RGB",
                            "layout": "NCHW", "scale": SCALE, "mean": MEAN, "std": STD}}})
    with open("%s/%s/labels.txt" % (repo.path, labels_model), "w") as f:
        f.write("".join("label%d\n" % i for i in range(3 * H * W)))
    return start_server(repo, ["--max-image-pixels", "1000000"])


def json_infer(client, model, images):
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(images)],
                        "data": [base64.b64encode(d).decode() for d in images]}]}
    return client.infer(model, body)


def binary_infer(client, model, images):
    blob = b"".join(struct.pack("<I", len(d)) + d for d in images)
    header = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(images)],
                          "parameters": {"binary_data_size": len(blob)}}],
              "outputs": [{"name": "out", "parameters": {"binary_data": True}}]}
    head = json.dumps(header).encode()
    return client.infer_raw(model, head + blob, header_len=len(head))


def got_tensor(r):
    assert r.status_code == 200, r.text
    header, outs = parse_infer_reply(r)
    shape = [o["shape"] for o in header["outputs"] if o["name"] == "out"][0]
    return np.asarray(outs["out"], dtype=np.float32).reshape(shape)


def test_metadata_offers_bytes(client):
    meta = client.get("/v2/models/img_stretch_RGB_NCHW").json()
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"][0]["datatype"] == "FP32"
    meta = client.get("/v2/models/img_single").json()
    assert meta["inputs"][0]["shape"] == [1]


@pytest.mark.parametrize("r,c,l", CONFIGS)
@pytest.mark.parametrize("fmt,mode", [("PNG", "RGB"), ("PNG", "L"), ("PNG", "RGBA"),
                                      ("PNG", "LA"), ("PNG", "P"), ("JPEG", "RGB"),
                                      ("JPEG", "L")])
@pytest.mark.parametrize("src", [(40, 30), (7, 5), (16, 12), (16, 40)])
def test_tensor_matches_pillow(client, r, c, l, fmt, mode, src):
    data = encode(make_image(mode, *src), fmt)
    want = reference(data, (H, W), r, c, l)
    for send in (json_infer, binary_infer):
        got = got_tensor(send(client, model_name(r, c, l), [data]))
        assert got.shape == (1,) + want.shape
        # Compare in pixel units: the normalization divides by std.
        std = np.float32([0.25] if c == "GRAY" else STD)
        sh = (-1, 1, 1) if l == "NCHW" else (1, 1, -1)
        diff = np.abs(got[0] - want) * std.reshape(sh) / np.float32(SCALE)
        if fmt == "PNG" and src == (W, H):
            assert diff.max() < 1e-3, (diff.max(), r, c, l, mode)
        assert diff.mean() <= 1.0, (diff.mean(), r, c, l, fmt, mode, src)


def test_a_jpeg_with_bytes_between_segments_decodes_as_pillow_does(client):
    """Some cameras pad between marker segments; libjpeg skips the bytes with a warning and
    Pillow decodes the file: so must batchd (its own header walk refused it)."""
    data = encode(make_image("RGB", 40, 30), "JPEG")
    app0_end = 4 + struct.unpack(">H", data[4:6])[0]
    r, c, l = CONFIGS[0]
    want = got_tensor(binary_infer(client, model_name(r, c, l), [data]))
    for pad in (b"\x00\x00\x7f", b"\x12\xff\x00\x34"):  # a stuffed FF 00 is skipped too
        padded = data[:app0_end] + pad + data[app0_end:]
        got = got_tensor(binary_infer(client, model_name(r, c, l), [padded]))
        assert np.array_equal(got, want), pad
        assert np.abs(got[0] - reference(padded, (H, W), r, c, l)).max() <= 1e-5


def test_batch_of_images_and_one_bad_row_fails_alone(client):
    good = [encode(make_image("RGB", 30 + i, 20 + i, seed=i), "PNG") for i in range(3)]
    r = json_infer(client, "img_stretch_RGB_NCHW", good)
    got = got_tensor(r)
    for i, d in enumerate(good):
        want = reference(d, (H, W), "stretch", "RGB", "NCHW")
        assert np.abs(got[i] - want).mean() * 0.229 * 255 <= 1.0
    # A truncated JPEG whose header reads fine fails at decode, alone.
    jpeg = encode(make_image("RGB", 64, 48), "JPEG")
    import concurrent.futures as cf
    with cf.ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(binary_infer, client, "img_stretch_RGB_NCHW",
                          [jpeg[: len(jpeg) // 2]] if i % 2 else [jpeg]) for i in range(8)]
        res = [f.result() for f in futs]
    for i, rr in enumerate(res):
        if i % 2:
            assert "truncated" in error_message(rr, 400)
        else:
            assert rr.status_code == 200


def test_images_decoded_in_parallel_land_in_their_rows(client):
    """img_par decodes a batch's requests on two threads, each at its own rows; requests whose
    image fails leave the batch and the rows after them move up. Five requests in one batch
    (one of three images), two of them truncated: every good request gets exactly its own
    images' tensors, the bad ones 400."""
    line = client.server.wait_log(r"sched started model=img_par .*image_decoders=2")
    assert line is not None, client.server.log_tail()
    jpeg = encode(make_image("RGB", 64, 48, seed=9), "JPEG")
    reqs = [[encode(make_image("RGB", 30, 20, seed=1), "PNG")],
            [jpeg[: len(jpeg) // 2]],
            [encode(make_image("RGB", 20 + i, 40, seed=2 + i), "PNG") for i in range(3)],
            [jpeg[: len(jpeg) // 3]],
            [encode(make_image("RGB", 50, 25, seed=7), "JPEG")]]
    bad = [False, True, False, True, False]
    e0 = client.metric("batchd_inference_executions_total", model="img_par") or 0
    import concurrent.futures as cf
    with cf.ThreadPoolExecutor(len(reqs)) as ex:
        res = list(ex.map(lambda imgs: binary_infer(client, "img_par", imgs), reqs))
    assert (client.metric("batchd_inference_executions_total", model="img_par") or 0) - e0 == 1
    for imgs, r, b in zip(reqs, res, bad):
        if b:
            assert "truncated" in error_message(r, 400)
            continue
        got = got_tensor(r)
        assert got.shape == (len(imgs), 3, H, W)
        for i, d in enumerate(imgs):
            want = reference(d, (H, W), "stretch", "RGB", "NCHW")
            assert np.abs(got[i] - want).mean() * 0.229 * 255 <= 1.0


def png_ihdr(w, h):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk +
            struct.pack(">I", zlib.crc32(chunk)))


def cmyk_jpeg():
    buf = io.BytesIO()
    Image.new("CMYK", (8, 8), (10, 20, 30, 40)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("name,data,words", [
    ("magic", b"GIF89a not an image", "not a JPEG or PNG image"),
    ("empty", b"", "empty"),
    ("huge", png_ihdr(100000, 100000), "100000x100000 pixels, more than the 1000000 allowed"),
    ("zero", png_ihdr(0, 5), "the PNG header says 0x5 pixels; a PNG is 1 to 2147483647 pixels "
     "each way"),
    ("png_truncated", None, "truncated"),
    ("jpeg_truncated", None, "truncated"),
    ("cmyk", None, "CMYK"),
])
def test_bad_images_get_400(client, name, data, words):
    if name == "png_truncated":
        d = encode(make_image("RGB", 40, 30), "PNG")
        data = d[: len(d) - 30]
    elif name == "jpeg_truncated":
        d = encode(make_image("RGB", 40, 30), "JPEG")
        data = d[: len(d) // 2]
    elif name == "cmyk":
        data = cmyk_jpeg()
    for send in (json_infer, binary_infer):
        msg = error_message(send(client, "img_stretch_RGB_NCHW", [data]), 400)
        assert words in msg and msg.startswith("input 'image': "), msg
    ctype = "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"
    msg = error_message(client.post("/v2/models/img_stretch_RGB_NCHW/infer", data=data,
                                    headers={"Content-Type": ctype}), 400)
    assert words in msg, msg
    client.assert_healthy()
    ok = encode(make_image("RGB", 20, 20), "PNG")
    assert binary_infer(client, "img_stretch_RGB_NCHW", [ok]).status_code == 200


def uniform_png(w, h, rgb):
    """A w x h PNG of one colour, written row by row with zlib (Pillow would hold it whole)."""
    row = b"\x00" + bytes(rgb) * w
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(h)) + z.flush()

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", data) + chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [(4000, 2), (2, 4000), (3001, 7)])
def test_extreme_aspect_ratios_match_pillow(client, size):
    """shorter_side_crop of a long thin image resizes it to a far longer one (4000x2 to
    24000x12 here) and keeps the centre: the tensor is still Pillow's."""
    data = encode(make_image("RGB", *size), "PNG")
    for r, c, l in CONFIGS:
        if c == "RGB":
            got = got_tensor(binary_infer(client, model_name(r, c, l), [data]))[0]
            want = reference(data, (H, W), r, c, l)
            assert np.abs(got - want).max() <= 1e-5, (r, l)


def test_a_long_thin_image_costs_memory_for_its_pixels_not_its_resize(start_server_fn):
    """A 10,000,000x4 PNG (120 MB decoded) cropped to 12x16: the full resize would be
    30,000,000 wide, and its coefficients (600 MB) were allocated whole before only the
    centre's were used. Only the window's are computed now."""
    repo = start_server_fn.repo("img-thin")
    add_image_model(repo, "thin", "shorter_side_crop", "RGB", "NCHW", max_batch_size=0)
    client = start_server_fn(repo)
    pid = client.server.proc.pid
    before = vm_kib(pid, "VmHWM")
    rgb = (10, 200, 30)
    r = client.post("/v2/models/thin/infer", data=uniform_png(10_000_000, 4, rgb),
                    headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    got = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(3, H, W)
    for ch in range(3):
        want = (np.float32(rgb[ch]) * np.float32(SCALE) - np.float32(MEAN[ch])) / np.float32(STD[ch])
        assert np.abs(got[ch] - want).max() <= 1e-5, ch
    grew_mb = (vm_kib(pid, "VmHWM") - before) / 1024
    assert grew_mb < 350, "peak memory grew by %.0f MB for a 120 MB image" % grew_mb
    client.server.stop()


def test_a_tall_image_stretched_is_refused_before_its_resize_takes_gigabytes(start_server_fn):
    """Stretching a 16x2,500,000 PNG (356 KB, 40 million pixels: within the default
    --max-image-pixels) to 224x224 resizes every row to 224 wide first: 1.7 GB. Such a resize is
    refused with a 400 that says why; the same image cropped (shorter_side_crop reads only the
    rows it keeps) is served, and neither grows the server by more than the decoded image."""
    repo = start_server_fn.repo("img-tall")
    add_image_model(repo, "tall_stretch", "stretch", "RGB", "NCHW", max_batch_size=0,
                    size=(224, 224))
    add_image_model(repo, "tall_crop", "shorter_side_crop", "RGB", "NCHW", max_batch_size=0,
                    size=(224, 224))
    client = start_server_fn(repo)
    pid = client.server.proc.pid
    before = vm_kib(pid, "VmHWM")
    data = uniform_png(16, 2_500_000, (10, 200, 30))
    r = client.post("/v2/models/tall_stretch/infer", data=data,
                    headers={"Content-Type": "image/png"})
    assert r.status_code == 400, r.text
    assert r.json() == {"error": "input 'image': resizing a 16x2500000 image to 224x224 would "
                                 "take 1700008128 bytes of memory, more than the 120667648 "
                                 "allowed (3 per --max-image-pixels pixel, plus the model's "
                                 "input); send an image closer to the model's proportions"}
    r = client.post("/v2/models/tall_crop/infer", data=data,
                    headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    grew_mb = (vm_kib(pid, "VmHWM") - before) / 1024
    assert grew_mb < 350, "peak memory grew by %.0f MB for a 120 MB image" % grew_mb
    client.server.stop()


def test_a_large_image_after_small_ones_does_not_stall_the_loop(start_server_fn):
    """Batches of small images cost microseconds, and a model whose batches are that cheap
    could run them on the event loop: a large image after them (here a 5,000,000x4 PNG of
    58 KB) would then decode there and stall every other client. Image models always run on
    their worker, so health checks keep answering while it decodes."""
    repo = start_server_fn.repo("img-loop")
    add_image_model(repo, "thin", "stretch", "RGB", "NCHW", max_batch_size=0)
    client = start_server_fn(repo)
    small = uniform_png(2, 2, (1, 2, 3))
    with requests.Session() as sess:
        for _ in range(300):
            r = sess.post(client.url("/v2/models/thin/infer"), data=small,
                          headers={"Content-Type": "image/png"}, timeout=HTTP_TIMEOUT_S)
            assert r.status_code == 200, r.text
    big = uniform_png(5_000_000, 4, (10, 200, 30))
    assert len(big) < 60000  # small enough bytes that only its being an image keeps it off
    took = []

    def post_big():
        t0 = time.monotonic()
        r = requests.post(client.url("/v2/models/thin/infer"), data=big,
                          headers={"Content-Type": "image/png"}, timeout=HTTP_TIMEOUT_S)
        took.append((r.status_code, time.monotonic() - t0))
    t = threading.Thread(target=post_big)
    worst = 0.0
    with requests.Session() as sess:
        sess.get(client.url("/v2/health/live"), timeout=HTTP_TIMEOUT_S)
        t.start()
        while t.is_alive():
            t0 = time.monotonic()
            assert sess.get(client.url("/v2/health/live"), timeout=HTTP_TIMEOUT_S).status_code == 200
            worst = max(worst, time.monotonic() - t0)
            time.sleep(0.005)
    t.join()
    status, big_s = took[0]
    assert status == 200
    if big_s < 0.1:
        pytest.skip("the large image took %.3f s here, too little to tell a stall" % big_s)
    assert worst < big_s / 2, "a health check took %.3f s while the image took %.3f s" % (
        worst, big_s)
    client.server.stop()


def test_bad_base64(client):
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                        "data": ["not base64!"]}]}
    assert "base64" in error_message(client.infer("img_stretch_RGB_NCHW", body), 400)


@pytest.mark.parametrize("cut", ["before_sos", "mid_header"])
def test_a_jpeg_whose_header_fails_does_not_spoil_the_next(client, cut):
    """After a JPEG whose header cannot be read, the next good JPEG on the same model (one
    instance, one decoder) decodes as it should. Cut before its end marker, it is called
    truncated (it was "the JPEG's header cannot be read (missing SOS marker)")."""
    good = encode(make_image("RGB", 33, 21), "JPEG")
    sos = good.index(b"\xff\xda")
    bad = good[:sos] if cut == "before_sos" else good[:sos // 2]
    for _ in range(3):
        r = client.post("/v2/models/img_single/infer", data=bad,
                        headers={"Content-Type": "image/jpeg"})
        assert error_message(r, 400).startswith(
            "input 'image': the JPEG is truncated: it ends without its end marker (")
        r = client.post("/v2/models/img_single/infer", data=good,
                        headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("progressive", [False, True])
def test_every_cut_of_a_jpeg_gets_400_never_an_earlier_image(client, progressive):
    """A JPEG cut anywhere (inside a scan's header too, where libjpeg stops at an error
    after the header's warning) is refused, as Pillow refuses it: no pixel of it was decoded,
    and the tensor would have been the previous image's pixels left in the decoder's buffer."""
    buf = io.BytesIO()
    make_image("RGB", 33, 21).save(buf, "JPEG", quality=90, progressive=progressive)
    good = buf.getvalue()
    victim = encode(make_image("RGB", 33, 21, seed=7), "JPEG")
    plain = {"Content-Type": "image/jpeg"}
    accepted, misnamed = [], []
    with requests.Session() as s:
        url = client.base + "/v2/models/img_single/infer"
        for cut in range(2, len(good)):
            if cut % 64 == 0:  # the buffer holds another image's pixels now and then
                assert s.post(url, data=victim, headers=plain, timeout=HTTP_TIMEOUT_S).ok
            r = s.post(url, data=good[:cut], headers=plain, timeout=HTTP_TIMEOUT_S)
            if r.status_code != 400:
                accepted.append((cut, r.status_code))
            elif cut >= 3 and not r.json()["error"].startswith(
                    "input 'image': the JPEG is truncated"):
                # libjpeg's own words ("Bogus Huffman table definition") were passed on
                misnamed.append((cut, r.json()["error"]))
        assert s.post(url, data=good, headers=plain, timeout=HTTP_TIMEOUT_S).ok
    assert not accepted, "%d of %d cuts were answered: %r" % (len(accepted), len(good) - 2,
                                                              accepted[:10])
    assert not misnamed, "%d of %d cuts: %r" % (len(misnamed), len(good) - 2, misnamed[:5])


def png_chunks(data):
    """(type, offset, length) of each chunk of a PNG."""
    out, off = [], 8
    while off + 8 <= len(data):
        n, t = struct.unpack(">I4s", data[off:off + 8])
        out.append((t, off, n))
        off += 12 + n
    return out


def test_every_cut_of_a_png_and_a_bad_last_crc_get_400(client):
    """A PNG cut anywhere before its IEND chunk's CRC is refused as truncated, inside its last
    IDAT's CRC too, and a wrong CRC there is refused: libspng had decoded the rows and left that
    CRC unread, so both were answered 200."""
    good = encode(make_image("RGB", 33, 21), "PNG")
    chunks = png_chunks(good)
    assert [t for t, _, _ in chunks][-1] == b"IEND", chunks
    iend = chunks[-1][1]
    plain = {"Content-Type": "image/png"}
    wrong = []
    with requests.Session() as s:
        url = client.base + "/v2/models/img_single/infer"
        for cut in range(8, iend + 8):  # from a whole signature on
            r = s.post(url, data=good[:cut], headers=plain, timeout=HTTP_TIMEOUT_S)
            if r.status_code != 400 or "the PNG is truncated" not in r.json()["error"]:
                wrong.append((cut, r.status_code, r.text[:120]))
        _, off, n = [c for c in chunks if c[0] == b"IDAT"][-1]
        bad = bytearray(good)
        bad[off + 8 + n] ^= 0xFF
        r = s.post(url, data=bytes(bad), headers=plain, timeout=HTTP_TIMEOUT_S)
        assert error_message(r, 400) == ("input 'image': the PNG cannot be decoded (invalid "
                                         "chunk checksum)")
        assert s.post(url, data=good, headers=plain, timeout=HTTP_TIMEOUT_S).ok
    assert not wrong, "%d of %d cuts: %r" % (len(wrong), iend, wrong[:5])


def test_plain_image_body(client):
    data = encode(make_image("RGB", 33, 21), "JPEG")
    r = client.post("/v2/models/img_stretch_RGB_NCHW/infer", data=data,
                    headers={"Content-Type": "image/jpeg"})
    got = got_tensor(r)
    want = reference(data, (H, W), "stretch", "RGB", "NCHW")
    assert np.abs(got[0] - want).mean() * 0.229 * 255 <= 1.0
    r = client.post("/v2/models/img_single/infer", data=data,
                    headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text


def test_plain_image_body_classification(client):
    data = encode(make_image("RGB", 50, 40), "PNG")
    r = client.post("/v2/models/img_cls/infer", data=data, headers={"Content-Type": "image/png"})
    full = got_tensor(r).reshape(-1)
    r = client.post("/v2/models/img_cls/infer?classification=5", data=data,
                    headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["datatype"] == "BYTES" and out["shape"] == [1, 5]
    order = sorted(range(len(full)), key=lambda i: (-full[i], i))[:5]
    assert out["data"] == ["%f:%d:label%d" % (full[i], i, i) for i in order]
    # Query names and values are percent-decoded (RFC 3986 2.1), as clients and proxies that
    # encode every character send them.
    for query in ("classification=%35", "classific%61tion=5", "x=%26&classification=5"):
        r = client.post("/v2/models/img_cls/infer?" + query, data=data,
                        headers={"Content-Type": "image/png"})
        assert r.status_code == 200, (query, r.text)
        assert r.json()["outputs"][0]["data"] == ["%f:%d:label%d" % (full[i], i, i)
                                                  for i in order], query


def test_model_without_preprocess_and_bad_query(client):
    data = encode(make_image("RGB", 8, 8), "PNG")
    msg = error_message(client.post("/v2/models/plain/infer", data=data,
                                    headers={"Content-Type": "image/png"}), 400)
    assert msg == ("model 'plain' takes no images (its config.json has no \"preprocess\"); "
                   "send a KServe v2 JSON infer request with its inputs ('INPUT0' FP32 [4])"), msg
    for query in ("classification=x", "classification=", "classification", "classification=0",
                  "classification=65537", "classification=2&classification=3",
                  "classification=%3", "classification=%zz", "classification=%2B2",
                  "classification=2&classific%61tion=3"):
        msg = error_message(client.post("/v2/models/img_cls/infer?" + query, data=data,
                                        headers={"Content-Type": "image/png"}), 400)
        assert msg == ("?classification must be given once, as a number of classes from 1 to "
                       "65536"), (query, msg)
    # Other content types keep the JSON path.
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4],
                        "data": [1, 2, 3, 4]}]}
    r = client.post("/v2/models/plain/infer", data=json.dumps(body),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    # ?classification on such a body is not ignored (a client asking for classes would get
    # raw tensors and no word of it): it names the JSON way to ask.
    for query in ("classification=2", "classification=0", "classification=x"):
        msg = error_message(client.post("/v2/models/plain/infer?" + query,
                                        data=json.dumps(body),
                                        headers={"Content-Type": "application/json"}), 400)
        assert msg == ("?classification is taken with a plain image body (image/jpeg, "
                       "image/png); a JSON or binary request asks an output for its top K "
                       "classes with \"parameters\": {\"classification\": K}"), (query, msg)


def test_bad_preprocess_configs(start_server_fn):
    repo = start_server_fn.repo()
    add_image_model(repo, "ok", "stretch", "RGB", "NCHW")
    bad = {"input": "image", "image": {"size": [H, W], "color": "GRAY", "mean": [1, 2, 3]}}
    repo.add_sim("badmean", [("image", "FP32", [1, H, W])], extra={"preprocess": bad})
    repo.add_sim("badkey", [("image", "FP32", [3, H, W])],
                 extra={"preprocess": {"input": "image", "image": {"size": [H, W], "zoom": 1}}})
    repo.add_sim("baddims", [("image", "FP32", [3, H + 1, W])],
                 extra={"preprocess": {"input": "image", "image": {"size": [H, W]}}})
    repo.add_sim("badname", [("x", "FP32", [3, H, W])],
                 extra={"preprocess": {"input": "image", "image": {"size": [H, W]}}})
    repo.add_sim("floatsize", [("image", "FP32", [3, H, W])],
                 extra={"preprocess": {"input": "image", "image": {"size": [12.0, 16.0]}}})
    repo.add_sim("nosize", [("image", "FP32", [3, H, W])],
                 extra={"preprocess": {"input": "image", "image": {"color": "RGB"}}})
    repo.add_sim("hugestd", [("image", "FP32", [3, H, W])],
                 extra={"preprocess": {"input": "image",
                                       "image": {"size": [H, W], "std": [1e39, 1, 1]}}})
    c = start_server_fn(repo, ["--model-control", "explicit"])
    idx = {m["name"]: m for m in c.post("/v2/repository/index").json()}
    assert idx["ok"]["state"] == "READY"
    assert idx["floatsize"]["reason"] == ("config.json: 'preprocess.image.size' must be [height, "
                                          "width], two integers from 1 to 65535")
    assert idx["nosize"]["reason"] == ("config.json: 'preprocess.image.size' is required: "
                                       "[height, width], two integers from 1 to 65535")
    assert idx["hugestd"]["reason"] == ("config.json: 'preprocess.image.std' values must be "
                                        "positive numbers, of magnitude below 1e30")
    assert "preprocess.image.mean" in idx["badmean"]["reason"]
    assert "preprocess.image.zoom" in idx["badkey"]["reason"]
    assert "dims" in idx["baddims"]["reason"]
    assert "not an input" in idx["badname"]["reason"]


def make_identity(path, dims):
    """An ONNX Identity model FP32 [N, *dims] -> [N, *dims], made with python3-onnx."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N"] + list(dims))
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N"] + list(dims))
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["out"])], "ident",
                              [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(model, path)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_onnx_identity_receives_the_reference(start_server_fn, layout):
    """The real ONNX Runtime backend gets the decoded FP32 batch: an Identity model returns
    it, batched across concurrent requests, each equal to Pillow's."""
    if not ort_available():
        pytest.skip("ONNX Runtime library not found (run the setup script)")
    repo = start_server_fn.repo()
    dims = [3, H, W] if layout == "NCHW" else [H, W, 3]
    make_identity(os.path.join(repo.path, "ident", "1", "model.onnx"), dims)
    cfg = {"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_us": 20000},
           "preprocess": {"input": "image", "image": {
               "size": [H, W], "resize": "shorter_side_crop", "color": "RGB",
               "layout": layout, "scale": SCALE, "mean": MEAN, "std": STD}}}
    with open(os.path.join(repo.path, "ident", "config.json"), "w") as f:
        json.dump(cfg, f)
    c = start_server_fn(repo)
    meta = c.get("/v2/models/ident").json()
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    imgs = [encode(make_image("RGB", 30 + 7 * i, 25 + 3 * i, seed=i), "JPEG" if i % 2 else "PNG")
            for i in range(6)]
    import concurrent.futures as cf
    with cf.ThreadPoolExecutor(6) as ex:
        res = list(ex.map(lambda d: binary_infer(c, "ident", [d]), imgs))
    res.append(json_infer(c, "ident", imgs[:3]))
    for i, r in enumerate(res):
        got = got_tensor(r)
        batch = imgs[:3] if i == len(imgs) else [imgs[i]]
        for j, d in enumerate(batch):
            want = reference(d, (H, W), "shorter_side_crop", "RGB", layout)
            assert np.abs(got[j] - want).mean() * 0.229 / SCALE <= 1.0
