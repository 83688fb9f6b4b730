"""Compressed request and response bodies (issue 12, part 2).

Triton's Python HTTP client sends request bodies with `Content-Encoding: gzip` or `deflate`
(its request_compression_algorithm; deflate being the zlib format, RFC 1950) and asks for
compressed replies with `Accept-Encoding` (response_compression_algorithm). Bodies here are
built with Python's gzip and zlib modules as RFC 1952 / 1950 / 1951 describe them; replies are
read with http.client, which neither asks for nor decodes a coding by itself, so every byte
and header is the server's, and compressed replies are decompressed here and compared byte
for byte with the identity reply to the same request.

Limits: --max-body-bytes applies to the inflated body (413 with the JSON error); a corrupt or
truncated stream is 400; a coding the server does not take is 415 with Accept-Encoding saying
which it does. Replies over 1 KiB are compressed with Content-Encoding; smaller ones, and
clients without Accept-Encoding, get identity. Every reply over 1 KiB says Vary:
Accept-Encoding, compressed or not (RFC 9110 §12.5.5: its representation depends on that
header).

Work on the event loop is bounded by the input too: bodies of many empty gzip members or empty
stored deflate blocks, which inflate to nothing, must not hold up other clients' requests."""
import gzip
import http.client
import json
import os
import re
import threading
import time
import zlib

import numpy as np
import pytest

from conftest import HTTP_TIMEOUT_S, error_message, vm_kib

MAX_BODY = 4_000_000  # --max-body-bytes: the zip bombs below pass it only once inflated


# ---- helpers ------------------------------------------------------------------------------

def raw_deflate(data):
    """RFC 1951 deflate without the zlib wrapper (what some old clients send as deflate)."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


CODERS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,  # the zlib format, as Triton's client sends deflate
}


class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case names -> value (last wins)
        self.header_list = [(k.lower(), v) for k, v in headers.items()]
        self.body = body

    def header(self, name):
        return self.headers.get(name.lower())

    def json(self):
        return json.loads(self.body)


def exchange(client, method, path, body=None, headers=None):
    """One request on a fresh connection; nothing is added or decoded for us (no
    Accept-Encoding unless `headers` has one)."""
    conn = http.client.HTTPConnection("127.0.0.1", client.server.port, timeout=HTTP_TIMEOUT_S)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if body:
            conn.send(body)
        r = conn.getresponse()
        data = r.read()
        headers = {k.lower(): v for k, v in r.getheaders()}
        assert int(headers.get("content-length", len(data))) == len(data)
        return Reply(r.status, headers, data)
    finally:
        conn.close()


def post(client, path, body, **headers):
    return exchange(client, "POST", path, body, headers)


def infer_path(model):
    return "/v2/models/%s/infer" % model


def json_body(n, seed=0, binary_output=False):
    data = (np.arange(n, dtype=np.float32) * 0.25 + seed).tolist()
    req = {"id": "c%d" % n, "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, n],
                                         "data": data}]}
    if binary_output:
        req["outputs"] = [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]
    return json.dumps(req).encode()


def binary_body(n, binary_output=True):
    arr = np.arange(n, dtype="<f4") * 0.5 - 3
    header = {"id": "b%d" % n,
              "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, n],
                          "parameters": {"binary_data_size": arr.nbytes}}]}
    if binary_output:
        header["outputs"] = [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]
    head = json.dumps(header).encode()
    return head + arr.tobytes(), len(head), arr


def decompress(coding, data):
    if coding == "gzip":
        return gzip.decompress(data)
    assert coding == "deflate"
    return zlib.decompress(data)  # the zlib format (RFC 1950), as HTTP's deflate means


def counter(client, name, **labels):
    return int(client.metric(name, **labels) or 0)


_BOMB = {}


def zip_bomb(coding):
    """100 MB of zeros compressed to about 100 KB: far over --max-body-bytes inflated."""
    if coding not in _BOMB:
        _BOMB[coding] = CODERS[coding](bytes(100_000_000))
    return _BOMB[coding]


# ---- fixtures -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(start_server):
    repo = start_server.repo()
    repo.add_sim("ident", [("INPUT0", "FP32", [-1])], max_batch_size=8)
    return start_server(repo, ["--max-body-bytes", str(MAX_BODY)])


@pytest.fixture(scope="module")
def explicit(start_server):
    repo = start_server.repo("explicit")
    repo.add_sim("ident", [("INPUT0", "FP32", [-1])], max_batch_size=8)
    return start_server(repo, ["--model-control", "explicit", "--max-body-bytes",
                               str(MAX_BODY)])


# ---- compressed requests ------------------------------------------------------------------

# 16 floats inflate on the loop; 120000 (~1 MB of JSON) past 256 KiB go on inflating off it.
@pytest.mark.parametrize("n", [16, 120_000])
def test_compressed_json_requests_answer_like_identity(client, n):
    body = json_body(n)
    want = post(client, infer_path("ident"), body, **{"Content-Type": "application/json"})
    assert want.status == 200, want.body[:300]
    out = want.json()["outputs"][0]
    assert out["shape"] == [1, n]
    assert out["data"][:3] == [0.0, 0.25, 0.5]
    for name, coded in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body)),
                        ("deflate", raw_deflate(body)), ("x-gzip", gzip.compress(body)),
                        ("identity", body)):
        r = post(client, infer_path("ident"), coded,
                 **{"Content-Type": "application/json", "Content-Encoding": name})
        assert r.status == 200, (name, r.body[:300])
        assert r.header("content-encoding") is None
        assert r.body == want.body, name


@pytest.mark.parametrize("n", [64, 500_000])
def test_compressed_binary_requests_answer_like_identity(client, n):
    """Inference-Header-Content-Length is the JSON header's length in the inflated body: Triton's
    client compresses the whole body after building it."""
    body, hlen, arr = binary_body(n)
    hdrs = {"Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(hlen)}
    want = post(client, infer_path("ident"), body, **hdrs)
    assert want.status == 200, want.body[:300]
    rh = int(want.header("inference-header-content-length"))
    head = json.loads(want.body[:rh])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == arr.nbytes
    assert np.array_equal(np.frombuffer(want.body[rh:], "<f4"), arr)
    for name in ("gzip", "deflate"):
        r = post(client, infer_path("ident"), CODERS[name](body),
                 **dict(hdrs, **{"Content-Encoding": name}))
        assert r.status == 200, (name, r.body[:300])
        assert r.header("inference-header-content-length") == str(rh)
        assert r.body == want.body, name


def test_binary_header_length_counts_in_the_inflated_body(client):
    body, hlen, _ = binary_body(64)
    hdrs = {"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"}
    # The compressed body is shorter than the header length: fine, it counts once inflated.
    small = gzip.compress(body)
    r = post(client, infer_path("ident"), small,
             **dict(hdrs, **{"Inference-Header-Content-Length": str(hlen)}))
    assert r.status == 200, r.body
    # Past the inflated body: refused naming the inflated length.
    r = post(client, infer_path("ident"), small,
             **dict(hdrs, **{"Inference-Header-Content-Length": str(len(body) + 1)}))
    msg = error_message(_as_requests(r), 400)
    assert msg == ("Inference-Header-Content-Length is %d but the body has only %d bytes"
                   % (len(body) + 1, len(body)))


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_zip_bomb_is_413_and_the_server_stays_healthy(start_server_fn, coding):
    repo = start_server_fn.repo()
    repo.add_sim("ident", [("INPUT0", "FP32", [-1])], max_batch_size=8)
    c = start_server_fn(repo, ["--max-body-bytes", str(MAX_BODY)])
    bomb = zip_bomb(coding)
    assert len(bomb) < MAX_BODY  # h2o takes it: only the inflated size is over the limit
    pid = c.server.proc.pid
    base_hwm = vm_kib(pid, "VmHWM")
    invalid0 = counter(c, "batchd_inference_requests_total", model="ident", outcome="invalid")
    for _ in range(5):
        r = post(c, infer_path("ident"), bomb,
                 **{"Content-Type": "application/json", "Content-Encoding": coding})
        msg = error_message(_as_requests(r), 413)
        assert msg == ("the %s request body inflates to more than %d bytes, the limit for "
                       "request bodies (--max-body-bytes)" % (coding, MAX_BODY))
    # Inflating stopped at the limit: 100 MB never existed in the server (measured: a few MB
    # over the idle peak, which holds the compressed body and at most the limit inflated).
    # Under ASan freed memory sits in its quarantine, so the peak says nothing there.
    grown_mb = (vm_kib(pid, "VmHWM") - base_hwm) / 1024
    if "ASAN_OPTIONS" not in os.environ:
        assert grown_mb < 40, "peak RSS grew by %.0f MB for 5 zip bombs" % grown_mb
    assert counter(c, "batchd_inference_requests_total", model="ident",
                   outcome="invalid") == invalid0 + 5
    assert c.get("/v2/health/live").status_code == 200
    r = post(c, infer_path("ident"), gzip.compress(json_body(8)),
             **{"Content-Encoding": "gzip"})
    assert r.status == 200 and r.json()["outputs"][0]["data"][:2] == [0.0, 0.25]


def test_inflated_body_exactly_at_the_limit_is_taken(start_server_fn):
    repo = start_server_fn.repo()
    repo.add_sim("ident", [("INPUT0", "FP32", [-1])], max_batch_size=8)
    c = start_server_fn(repo, ["--max-body-bytes", "400000"])
    body = json_body(40_000)
    assert 300_000 < len(body) < 400_000
    body = body + b" " * (400_000 - len(body))  # JSON may end in whitespace
    r = post(c, infer_path("ident"), gzip.compress(body), **{"Content-Encoding": "gzip"})
    assert r.status == 200, r.body[:300]
    r = post(c, infer_path("ident"), gzip.compress(body + b" "),
             **{"Content-Encoding": "gzip"})
    assert error_message(_as_requests(r), 413) == (
        "the gzip request body inflates to more than 400000 bytes, the limit for request "
        "bodies (--max-body-bytes)")


def test_inflating_counts_against_max_decode_bytes(start_server_fn):
    """With --max-decode-bytes equal to --max-body-bytes, a compressed body whose compressed
    bytes and inflated ones together pass it cannot be decoded even on an idle server: 413
    (not a 503 with Retry-After, which would have the client retry it for ever)."""
    repo = start_server_fn.repo()
    repo.add_sim("ident", [("INPUT0", "FP32", [-1])], max_batch_size=8)
    c = start_server_fn(repo, ["--max-body-bytes", "3000000", "--max-decode-bytes", "3000000"])
    body = json_body(500_000)[:2_900_000]  # about 2.9 MB of text, inflated off the loop
    r = post(c, infer_path("ident"), gzip.compress(body), **{"Content-Encoding": "gzip"})
    # The compressed bytes are counted too: 2.9 MB inflated plus them passes 3 MB.
    msg = error_message(_as_requests(r), 413)
    assert "retry-after" not in {k.lower() for k in r.headers}
    assert re.fullmatch(r"the request body needs \d+ bytes to decode \(compressed and inflated "
                        r"together\), more than the server decodes at once "
                        r"\(--max-decode-bytes 3000000\)", msg), msg
    assert counter(c, "batchd_inference_requests_total", model="ident",
                   outcome="invalid") == 1
    assert c.get("/v2/health/live").status_code == 200


def test_inflating_uses_the_room_left_under_max_decode_bytes(start_server_fn):
    """A body that fits under --max-decode-bytes with its compressed bytes inflates to its end,
    though the last whole MiB step would not fit (1.4 MB inflated under 2 MiB limits)."""
    repo = start_server_fn.repo()
    repo.add_sim("ident", [("INPUT0", "FP32", [-1])], max_batch_size=8)
    c = start_server_fn(repo, ["--max-body-bytes", "2097152", "--max-decode-bytes", "2097152"])
    body = json_body(140_000)
    body = body + b" " * (1_400_000 - len(body))
    packed = gzip.compress(body)
    assert len(packed) + len(body) < 2097152 - 65536
    r = post(c, infer_path("ident"), packed, **{"Content-Encoding": "gzip"})
    assert r.status == 200, r.body[:300]


def _corruptions():
    body = json_body(2000)
    big = json_body(200_000)
    g, d = gzip.compress(body), zlib.compress(body)
    flipped = bytearray(g)
    flipped[len(g) // 2] ^= 0x55
    crc = bytearray(g)
    crc[-6] ^= 0xFF
    return [
        ("gzip", bytes(flipped), "the gzip request body is corrupt ("),
        ("gzip", bytes(crc), "the gzip request body is corrupt (incorrect data check)"),
        ("gzip", g[: len(g) // 2], "the gzip request body is truncated"),
        ("gzip", g[:5], "the gzip request body is truncated"),
        ("gzip", b"this is not gzip at all", "the gzip request body is corrupt ("),
        ("gzip", g + b"trailing", "the gzip request body has 8 bytes after the end"),
        ("deflate", d[:-3], "the deflate request body is truncated"),
        ("deflate", b"\xff\xff\xff\xff not deflate", "the deflate request body is corrupt ("),
        # Truncated past the first 256 KiB inflated: the error comes from the decode thread.
        ("gzip", gzip.compress(big)[:-20], "the gzip request body is truncated"),
        ("deflate", zlib.compress(big)[:-20], "the deflate request body is truncated"),
    ]


@pytest.mark.parametrize("coding,data,prefix", _corruptions())
def test_corrupt_or_truncated_bodies_are_400(client, coding, data, prefix):
    r = post(client, infer_path("ident"), data,
             **{"Content-Type": "application/json", "Content-Encoding": coding})
    msg = error_message(_as_requests(r), 400)
    assert msg.startswith(prefix), msg
    assert client.get("/v2/health/live").status_code == 200


def test_empty_inflated_body_is_400(client):
    r = post(client, infer_path("ident"), gzip.compress(b""), **{"Content-Encoding": "gzip"})
    assert error_message(_as_requests(r), 400) == (
        "the request body is empty once inflated; expected a JSON infer request")
    # A megabyte of empty stored blocks inflates to nothing on the decode thread: the same.
    empty_blocks = b"\x78\x9c" + b"\x00\x00\x00\xff\xff" * 200000 + \
        b"\x01\x00\x00\xff\xff" + b"\x00\x00\x00\x01"
    assert zlib.decompress(empty_blocks) == b""
    r = post(client, infer_path("ident"), empty_blocks, **{"Content-Encoding": "deflate"})
    assert error_message(_as_requests(r), 400) == (
        "the request body is empty once inflated; expected a JSON infer request")


@pytest.mark.parametrize("value,named", [("br", "br"), ("compress", "compress"),
                                         ("zstd", "zstd")])
def test_unknown_content_encoding_is_415(client, value, named):
    body = json_body(8)
    r = post(client, infer_path("ident"), body, **{"Content-Encoding": value})
    msg = error_message(_as_requests(r), 415)
    assert msg == ("Content-Encoding '%s' is not supported; the server accepts request bodies "
                   "as gzip, deflate or identity" % named)
    assert r.header("accept-encoding") == "gzip, deflate"


def test_two_codings_in_a_row_are_415(client):
    body = gzip.compress(gzip.compress(json_body(8)))
    r = post(client, infer_path("ident"), body, **{"Content-Encoding": "gzip, gzip"})
    msg = error_message(_as_requests(r), 415)
    assert msg.startswith("Content-Encoding 'gzip, gzip' applies more than one coding"), msg


def test_identity_content_encoding_is_fine(client):
    for value in ("identity", "Identity", ""):
        r = post(client, infer_path("ident"), json_body(8), **{"Content-Encoding": value})
        assert r.status == 200, (value, r.body)


def test_compressed_plain_image_body_is_415(client):
    r = post(client, infer_path("ident"), gzip.compress(b"\x89PNG\r\n\x1a\n" + bytes(100)),
             **{"Content-Type": "image/png", "Content-Encoding": "gzip"})
    msg = error_message(_as_requests(r), 415)
    assert "taken only uncompressed" in msg, msg
    assert r.header("accept-encoding") == "identity"


# ---- the repository endpoints -------------------------------------------------------------

def test_repository_bodies_may_be_compressed(explicit):
    index = post(explicit, "/v2/repository/index", gzip.compress(b'{"ready": true}'),
                 **{"Content-Encoding": "gzip"})
    assert index.status == 200, index.body
    assert [m["name"] for m in index.json()] == ["ident"]
    r = post(explicit, "/v2/repository/models/ident/load",
             zlib.compress(b'{"parameters": {}}'), **{"Content-Encoding": "deflate"})
    assert r.status == 200, r.body
    # The parameters are read once inflated: a config override is refused by name.
    r = post(explicit, "/v2/repository/models/ident/load",
             gzip.compress(b'{"parameters": {"config": "{}"}}'), **{"Content-Encoding": "gzip"})
    assert "override is not supported" in error_message(_as_requests(r), 400)
    r = post(explicit, "/v2/repository/index", gzip.compress(b'{"ready": 3}'),
             **{"Content-Encoding": "gzip"})
    assert error_message(_as_requests(r), 400) == "'ready' must be true or false"


def test_repository_body_errors(explicit):
    r = post(explicit, "/v2/repository/index", b"{}", **{"Content-Encoding": "br"})
    assert error_message(_as_requests(r), 415).startswith("Content-Encoding 'br'")
    r = post(explicit, "/v2/repository/index", gzip.compress(b'{"ready": true}')[:-4],
             **{"Content-Encoding": "gzip"})
    assert error_message(_as_requests(r), 400).startswith("the gzip request body is truncated")
    # 10 MB of zeros: ~10 KB compressed, under the 64 KiB these endpoints take compressed.
    r = post(explicit, "/v2/repository/models/ident/load", gzip.compress(bytes(10_000_000)),
             **{"Content-Encoding": "gzip"})
    assert error_message(_as_requests(r), 413) == (
        "the gzip request body inflates to more than 262144 bytes, the limit for this "
        "endpoint's bodies")
    # 100 MB of zeros: ~100 KB compressed, refused before inflating.
    bomb = zip_bomb("gzip")
    assert len(bomb) > 65536
    r = post(explicit, "/v2/repository/models/ident/load", bomb, **{"Content-Encoding": "gzip"})
    assert error_message(_as_requests(r), 413) == (
        "the gzip request body is %d bytes compressed; this endpoint takes compressed bodies "
        "of at most 65536 bytes" % len(bomb))
    # Uncompressed, the same bound: these bodies are parsed on the loop (a 16 MB one held it
    # for a second and took ~20x its size in memory).
    big = b'{"parameters": {"x": [' + b"0," * 150000 + b'0]}}'
    r = post(explicit, "/v2/repository/index", big)
    assert error_message(_as_requests(r), 413) == (
        "the request body is %d bytes; this endpoint takes bodies of at most 262144 bytes"
        % len(big))
    edge = b'{"ready": true}'.ljust(262144)
    r = post(explicit, "/v2/repository/index", edge)
    assert r.status == 200, r.body[:300]
    assert explicit.get("/v2/health/live").status_code == 200


# ---- compressed replies -------------------------------------------------------------------

def identity_reply(client, body, **headers):
    r = post(client, infer_path("ident"), body, **headers)
    assert r.status == 200, r.body[:300]
    assert r.header("content-encoding") is None
    # Over 1 KiB the reply could have been compressed: it varies with Accept-Encoding.
    assert r.header("vary") == ("Accept-Encoding" if len(r.body) > 1024 else None)
    return r


# 1000 floats: a ~10 KB reply encoded (and compressed) on the loop; 200000: ~2 MB encoded and
# compressed on the decode thread.
@pytest.mark.parametrize("n", [1000, 200_000])
@pytest.mark.parametrize("accept,coding", [
    ("gzip", "gzip"),
    ("deflate", "deflate"),
    ("gzip, deflate", "gzip"),
    ("deflate, gzip", "gzip"),
    ("gzip;q=0, deflate", "deflate"),
    ("deflate;q=0.9, gzip;q=0.5", "deflate"),
    ("*", "gzip"),
    ("gzip;q=0, *", "deflate"),
    ("identity", None),
    ("gzip;q=0", None),
    ("*;q=0", None),
    ("br", None),
    ("identity;q=1, gzip;q=0.5", None),
])
def test_json_replies_follow_accept_encoding(client, n, accept, coding):
    body = json_body(n)
    want = identity_reply(client, body)
    assert len(want.body) > 1024
    r = post(client, infer_path("ident"), body, **{"Accept-Encoding": accept})
    assert r.status == 200
    assert r.header("content-type") == "application/json"
    if coding is None:
        assert r.header("content-encoding") is None
        assert r.header("vary") == "Accept-Encoding"
        assert r.body == want.body
        return
    assert r.header("content-encoding") == coding
    assert r.header("vary") == "Accept-Encoding"
    assert len(r.body) < len(want.body)
    assert decompress(coding, r.body) == want.body


def test_small_replies_stay_identity(client):
    body = json_body(4)
    want = identity_reply(client, body)
    assert len(want.body) <= 1024
    r = post(client, infer_path("ident"), body, **{"Accept-Encoding": "gzip"})
    assert r.status == 200
    assert r.header("content-encoding") is None and r.header("vary") is None
    assert r.body == want.body
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/ident"):
        r = exchange(client, "GET", path, headers={"Accept-Encoding": "gzip"})
        assert r.status == 200
        assert r.header("content-encoding") is None, path


def test_no_accept_encoding_gets_identity_as_before(client):
    body = json_body(1000)
    r = post(client, infer_path("ident"), body)
    assert r.status == 200
    assert "content-encoding" not in r.headers
    assert r.header("vary") == "Accept-Encoding"  # a client that asks would get it compressed
    assert json.loads(r.body)["outputs"][0]["data"][:2] == [0.0, 0.25]


@pytest.mark.parametrize("n", [1000, 500_000])
@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_binary_replies_compressed(client, n, coding):
    """The whole binary reply is compressed; Inference-Header-Content-Length stays the JSON
    header's length in the decompressed body (what Triton's client reads after inflating)."""
    body, hlen, arr = binary_body(n)
    hdrs = {"Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(hlen)}
    want = identity_reply(client, body, **hdrs)
    rh = int(want.header("inference-header-content-length"))
    r = post(client, infer_path("ident"), body, **dict(hdrs, **{"Accept-Encoding": coding}))
    assert r.status == 200
    assert r.header("content-type") == "application/octet-stream"
    assert r.header("content-encoding") == coding
    assert r.header("vary") == "Accept-Encoding"
    assert r.header("inference-header-content-length") == str(rh)
    plain = decompress(coding, r.body)
    assert plain == want.body
    head = json.loads(plain[:rh])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == arr.nbytes
    assert np.array_equal(np.frombuffer(plain[rh:], "<f4"), arr)


def test_compressed_request_and_reply_together(client):
    """What Triton's client does with both algorithms set."""
    body, hlen, arr = binary_body(300_000)
    want = identity_reply(client, body, **{"Inference-Header-Content-Length": str(hlen)})
    r = post(client, infer_path("ident"), zlib.compress(body),
             **{"Content-Encoding": "deflate", "Accept-Encoding": "gzip",
                "Inference-Header-Content-Length": str(hlen)})
    assert r.status == 200 and r.header("content-encoding") == "gzip"
    assert gzip.decompress(r.body) == want.body


def test_other_replies_compressed(client):
    """Everything over 1 KiB follows Accept-Encoding: /metrics, statistics."""
    for path in ("/metrics", "/v2/models/stats"):
        want = exchange(client, "GET", path)
        assert want.status == 200
        assert want.header("content-encoding") is None
        if len(want.body) <= 1024:
            continue
        assert want.header("vary") == "Accept-Encoding", path
        r = exchange(client, "GET", path, headers={"Accept-Encoding": "gzip"})
        assert r.status == 200
        assert r.header("content-encoding") == "gzip", path
        assert r.header("vary") == "Accept-Encoding"
        assert r.header("content-type") == want.header("content-type")
        # Counters move between the two requests; the shape of the text does not.
        text = gzip.decompress(r.body).decode()
        assert text.splitlines()[0] == want.body.decode().splitlines()[0]
    r = exchange(client, "GET", "/metrics", headers={"Accept-Encoding": "deflate"})
    assert r.header("content-encoding") == "deflate"
    assert b"batchd_inference_requests_total" in zlib.decompress(r.body)


def test_requests_library_round_trip(client):
    """requests (urllib3) offers gzip and deflate by default and inflates what comes back."""
    body = json_body(5000)
    r = client.post(infer_path("ident"), data=gzip.compress(body),
                    headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert r.status_code == 200
    assert r.headers["Content-Encoding"] == "gzip"
    assert r.json()["outputs"][0]["data"][:3] == [0.0, 0.25, 0.5]


def test_replies_over_1_mib_encoded_on_the_loop_go_out_identity(start_server):
    """The loop compresses at most 1 MiB per reply: a longer deflate would hold it (infer's
    large replies are compressed on the decode thread instead). /metrics with ~170 models
    passes 1 MiB; it goes out identity, still with Vary (a smaller one would be compressed)."""
    repo = start_server.repo("many")
    for i in range(170):
        repo.add_sim("m%03d" % i, [("INPUT0", "FP32", [-1])], max_batch_size=8)
    many = start_server(repo, [])
    r = exchange(many, "GET", "/metrics", headers={"Accept-Encoding": "gzip"})
    assert r.status == 200
    assert len(r.body) > 1 << 20
    assert r.header("content-encoding") is None
    assert r.header("vary") == "Accept-Encoding"
    assert b'batchd_inference_requests_total{model="m169"' in r.body
    # Under 1 MiB it is compressed as before.
    r = exchange(many, "GET", "/v2/models/stats", headers={"Accept-Encoding": "gzip"})
    assert r.status == 200 and r.header("content-encoding") == "gzip"
    assert len(json.loads(gzip.decompress(r.body))["model_stats"]) == 170


# ---- bodies that inflate to nothing do not hold up the loop ------------------------------

# Empty gzip members (RFC 1952 §2.2: a body may be several members) and empty stored deflate
# blocks (RFC 1951 §3.2.4) inflate to nothing, so a limit on the inflated size alone does not
# bound the work: 60 MiB of them took ~0.3 s of zlib's time on the event loop.
STALL_BODY = 60 << 20
EMPTY_MEMBER = gzip.compress(b"", mtime=0)  # 20 bytes
EMPTY_STORED = b"\x00\x00\x00\xff\xff"  # BFINAL 0, BTYPE 00, padding; LEN 0, NLEN 0xffff


def gzip_with_empty_members(data, size):
    """About `size` bytes: empty gzip members, then one member holding `data`."""
    return EMPTY_MEMBER * (size // len(EMPTY_MEMBER)) + gzip.compress(data)


def deflate_with_empty_blocks(data, size):
    """About `size` bytes of a zlib stream (RFC 1950): empty stored blocks, then a final
    stored block holding `data` (under 64 KiB), then the Adler-32 of `data`. zlib never
    writes this itself; it is valid deflate all the same."""
    n = len(data)
    final = b"\x01" + n.to_bytes(2, "little") + (n ^ 0xffff).to_bytes(2, "little") + data
    return (b"\x78\x01" + EMPTY_STORED * (size // len(EMPTY_STORED)) + final
            + zlib.adler32(data).to_bytes(4, "big"))


def post_while_watching_health(client, path, body, coding):
    """POST `body` while another thread asks /v2/health/live every 10 ms on its own
    connection; returns (reply, [(status, seconds)] of the health checks made meanwhile)."""
    done = threading.Event()
    health = []

    def watch():
        conn = http.client.HTTPConnection("127.0.0.1", client.server.port,
                                          timeout=HTTP_TIMEOUT_S)
        try:
            while not done.is_set():
                t0 = time.monotonic()
                conn.request("GET", "/v2/health/live")
                r = conn.getresponse()
                r.read()
                health.append((r.status, time.monotonic() - t0))
                time.sleep(0.01)
        finally:
            conn.close()

    t = threading.Thread(target=watch)
    t.start()
    try:
        time.sleep(0.05)  # the watch is running before the body goes out
        r = exchange(client, "POST", path, body,
                     {"Content-Encoding": coding, "Content-Type": "application/json"})
        time.sleep(0.05)
    finally:
        done.set()
        t.join()
    return r, health


def assert_health_kept_answering(health):
    assert len(health) >= 5, health
    assert [s for s, _ in health] == [200] * len(health)
    slowest = max(d for _, d in health)
    assert slowest < 1.0, "a health check waited %.3f s while the body was inflated" % slowest


@pytest.fixture(scope="module")
def roomy(start_server):
    """Default limits: --max-body-bytes 64 MiB, so a 60 MiB compressed body is taken."""
    repo = start_server.repo("roomy")
    repo.add_sim("ident", [("INPUT0", "FP32", [-1])], max_batch_size=8)
    return start_server(repo, [])


def test_many_empty_gzip_members_are_400_and_the_loop_stays_free(roomy):
    body = gzip_with_empty_members(json_body(4), STALL_BODY)
    r, health = post_while_watching_health(roomy, infer_path("ident"), body, "gzip")
    assert error_message(_as_requests(r), 400) == (
        "the gzip request body has more than 64 members; the server takes at most 64 (a gzip "
        "client sends one)")
    assert_health_kept_answering(health)


def test_a_few_gzip_members_are_fine(roomy):
    """What `cat a.gz b.gz` makes: several members, read as one body (up to 64)."""
    body = json_body(16)
    half = len(body) // 2
    for members in ([body[:half], body[half:]], [b""] * 62 + [body[:half], body[half:]]):
        r = post(roomy, infer_path("ident"), b"".join(gzip.compress(m) for m in members),
                 **{"Content-Encoding": "gzip"})
        assert r.status == 200, r.body
        assert r.json()["outputs"][0]["data"] == json.loads(body)["inputs"][0]["data"]


def test_many_empty_stored_blocks_are_inflated_off_the_loop(roomy):
    body = json_body(16)
    z = deflate_with_empty_blocks(body, STALL_BODY)
    assert zlib.decompress(z) == body  # valid deflate, as zlib itself reads it
    r, health = post_while_watching_health(roomy, infer_path("ident"), z, "deflate")
    assert r.status == 200, r.body[:300]
    assert r.json()["outputs"][0]["data"] == json.loads(body)["inputs"][0]["data"]
    assert_health_kept_answering(health)


def test_repository_refuses_large_compressed_bodies_and_the_loop_stays_free(roomy):
    z = deflate_with_empty_blocks(b'{"ready": true}', STALL_BODY)
    r, health = post_while_watching_health(roomy, "/v2/repository/index", z, "deflate")
    assert error_message(_as_requests(r), 413) == (
        "the deflate request body is %d bytes compressed; this endpoint takes compressed "
        "bodies of at most 65536 bytes" % len(z))
    assert_health_kept_answering(health)
    # Many empty gzip members within 64 KiB: the member cap answers.
    g = gzip_with_empty_members(b'{"ready": true}', 60_000)
    r = post(roomy, "/v2/repository/index", g, **{"Content-Encoding": "gzip"})
    assert error_message(_as_requests(r), 400) == (
        "the gzip request body has more than 64 members; the server takes at most 64 (a gzip "
        "client sends one)")
    # Empty stored blocks within 64 KiB inflate on the loop and are read.
    z = deflate_with_empty_blocks(b'{"ready": true}', 60_000)
    r = post(roomy, "/v2/repository/index", z, **{"Content-Encoding": "deflate"})
    assert r.status == 200, r.body
    assert [m["name"] for m in r.json()] == ["ident"]


# ---- plumbing -----------------------------------------------------------------------------

class _AsRequests:
    """Just enough of a requests.Response for conftest.error_message."""

    def __init__(self, r):
        self.status_code = r.status
        self.headers = {"Content-Type": r.header("content-type") or ""}
        self.content = r.body

    def json(self):
        return json.loads(self.content)


def _as_requests(r):
    return _AsRequests(r)
