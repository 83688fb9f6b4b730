"""TLS on the HTTP/WebSocket port (`--tls-cert FILE --tls-key FILE`, or BATCHD_TLS_CERT and
BATCHD_TLS_KEY): HTTPS and WSS with a self-signed certificate made here with the `openssl`
command. Checked from outside with independent clients (requests, http.client, Python's ssl
over raw sockets, websockets): every KServe endpoint and both tensor encodings answer exactly
as over plain HTTP; keep-alive reuses one TLS connection; a client that does not trust the
certificate refuses it; TLS 1.2 is the oldest version accepted (1.1 is refused) and ALPN offers
only http/1.1 (HTTP/2 stays off); a plain-HTTP request, garbage or a stalled handshake on the
TLS port costs only that connection (a stalled one is closed after --http-timeout-secs); the
server's own 431/408 answers for unfinished heads arrive through TLS; a client that leaves
(with or without a TLS close_notify) has its queued request cancelled; WSS streams infer
requests; SIGTERM drains TLS connections and exits 0; unreadable, invalid, encrypted or
mismatched certificate and key files, or one without the other, fail the start with a clear
sentence and exit code 2, before any model loads. A request that comes in the same write as the
end of the handshake gets the same JSON 400/431 checks as any other head; the server's own
WebSocket closes over WSS end with a close_notify, not a bare TCP FIN. The `http listening host=... port=N` line ends with
tls=on or tls=off.
"""
import asyncio
import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import warnings

import numpy as np
import pytest
import requests
import websockets

from ws_util import run
from conftest import (BATCHD_BIN, HTTP_TIMEOUT_S, SANITIZER_MARKERS, Server, binary_body,
                      check_drain_replies, decode_outputs, metric_value, parse_infer_reply,
                      parse_metrics, read_all, sanitizer_env,
                      tensor, wait_for)

TIMEOUT_SECS = 2          # --http-timeout-secs of the main server: heads and handshakes
SLOW_US = 3000000         # the slow model holds its only instance this long
STEP_S = 15.0


# ---- certificates ---------------------------------------------------------------------------

def _openssl(*args):
    r = subprocess.run(["openssl"] + list(args), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, "openssl %s failed: %s" % (" ".join(args), r.stderr)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """cert/key: the server's pair (CN=localhost, SAN IP:127.0.0.1 and DNS:localhost);
    other_cert/other_key: an unrelated pair (for 'untrusted' and 'mismatched');
    encrypted_key: the server's key under a passphrase; garbage: not PEM at all."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (apt-get install openssl)")
    d = tmp_path_factory.mktemp("certs")
    p = {k: str(d / (k + ".pem")) for k in
         ("cert", "key", "other_cert", "other_key", "encrypted_key", "garbage")}
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p["key"], "-out",
             p["cert"], "-subj", "/CN=localhost",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-days", "2")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p["other_key"],
             "-out", p["other_cert"], "-subj", "/CN=localhost",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-days", "2")
    _openssl("pkey", "-in", p["key"], "-aes256", "-passout", "pass:secret", "-out",
             p["encrypted_key"])
    with open(p["garbage"], "w") as f:
        f.write("this is not a certificate\n")
    return p


def client_ctx(certs, **kw):
    """An ssl context that trusts the server's certificate (and checks its name)."""
    ctx = ssl.create_default_context(cafile=certs["cert"])
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


# ---- servers --------------------------------------------------------------------------------

class TLSClient:
    """A requests Session over HTTPS that trusts the server's certificate. `verify` goes with
    each request: requests prefers REQUESTS_CA_BUNDLE from the environment to Session.verify."""

    def __init__(self, client, certs):
        self.server = client.server
        self.port = client.server.port
        self.certs = certs
        self.base = "https://127.0.0.1:%d" % self.port
        self.s = requests.Session()

    def url(self, path):
        return self.base + path

    def get(self, path, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT_S)
        kw.setdefault("verify", self.certs["cert"])
        return self.s.get(self.url(path), **kw)

    def post(self, path, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT_S)
        kw.setdefault("verify", self.certs["cert"])
        return self.s.post(self.url(path), **kw)

    def metrics(self):
        r = requests.get(self.url("/metrics"), verify=self.certs["cert"], timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200
        return parse_metrics(r.text)

    def counter(self, name, model, **labels):
        return int(metric_value(self.metrics(), name, model=model, version="1", **labels) or 0)


def add_models(repo):
    repo.add_sim("echo", [("INPUT0", "FP32", [4])], max_batch_size=8)
    repo.add_sim("bin", [("INPUT0", "FP32", [3]), ("INPUT1", "INT64", [2])], max_batch_size=8)
    repo.add_sim("slow", [("INPUT0", "FP32", [2])], max_batch_size=4, instances=1,
                 dynamic_batching={"max_queue_size": 64}, latency_us=SLOW_US)
    repo.add_sim("wide", [("INPUT0", "FP32", [-1])], max_batch_size=1)


def tls_args(certs):
    return ["--tls-cert", certs["cert"], "--tls-key", certs["key"]]


@pytest.fixture(scope="module")
def tls(start_server, certs):
    repo = start_server.repo("tls")
    add_models(repo)
    client = start_server(repo, tls_args(certs) + ["--http-timeout-secs", str(TIMEOUT_SECS)],
                          name="batchd-tls")
    return TLSClient(client, certs)


def assert_serves(tls):
    r = requests.get(tls.url("/v2/health/live"), verify=tls.certs["cert"], timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, "the server no longer answers over HTTPS"


def echo_body(x, rid="r1"):
    return {"id": rid, "inputs": [tensor("INPUT0", "FP32", [1, 4], x)]}


# ---- HTTPS: the API as over HTTP ------------------------------------------------------------

def test_listening_line_says_tls_on(tls):
    line = tls.server.wait_log(r"http listening host=127\.0\.0\.1 port=\d+")
    assert line and line.rstrip().endswith("tls=on"), line


def test_health_and_metadata_over_https(tls):
    assert tls.get("/v2/health/live").status_code == 200
    assert tls.get("/v2/health/ready").status_code == 200
    r = tls.get("/v2")
    assert r.status_code == 200
    meta = r.json()
    assert meta["name"] == "batchd" and "binary_tensor_data" in meta["extensions"]
    r = tls.get("/v2/models/echo")
    assert r.status_code == 200
    m = r.json()
    assert m["name"] == "echo" and m["versions"] == ["1"] and m["platform"] == "batchd_sim"
    assert m["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]}]
    assert m["outputs"] == [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 4]}]
    assert tls.get("/v2/models/echo/ready").status_code == 200
    r = tls.get("/v2/nope")
    assert r.status_code == 404 and r.json()["error"]


def test_json_infer_over_https(tls):
    r = tls.post("/v2/models/echo/infer", json=echo_body([1.5, -2.0, 3.25, 0.0], "j1"))
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {"model_name": "echo", "model_version": "1", "id": "j1", "outputs": [
        {"name": "OUTPUT0", "datatype": "FP32", "shape": [1, 4],
         "data": [1.5, -2.0, 3.25, 0.0]}]}
    # An error is the same JSON sentence as over HTTP.
    r = tls.post("/v2/models/echo/infer",
                 json={"inputs": [tensor("INPUT0", "FP32", [1, 4], [1, 2, 3])]})
    assert r.status_code == 400 and "expected 4 values" in r.json()["error"]


def test_binary_infer_over_https(tls):
    a = np.array([[1.0, 2.5, -3.0], [4.0, 5.0, 6.0]], dtype="<f4")
    b = np.array([[2**40, -7], [0, 1]], dtype="<i8")
    header = {"id": "b1", "parameters": {"binary_data_output": True},
              "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2, 3],
                          "parameters": {"binary_data_size": a.nbytes}},
                         {"name": "INPUT1", "datatype": "INT64", "shape": [2, 2],
                          "parameters": {"binary_data_size": b.nbytes}}]}
    body, hl = binary_body(header, [a.tobytes(), b.tobytes()])
    r = tls.post("/v2/models/bin/infer", data=body,
                 headers={"Content-Type": "application/octet-stream",
                          "Inference-Header-Content-Length": str(hl)})
    assert r.status_code == 200, r.content[:300]
    head, outs = parse_infer_reply(r)
    assert head["id"] == "b1"
    assert [o["name"] for o in head["outputs"]] == ["OUTPUT0", "OUTPUT1"]
    np.testing.assert_array_equal(outs["OUTPUT0"], a)
    np.testing.assert_array_equal(outs["OUTPUT1"], b)
    assert outs["OUTPUT1"].dtype == np.dtype("<i8")


def test_keepalive_reuses_one_tls_connection(tls):
    s = requests.Session()
    for i in range(6):
        r = s.post(tls.url("/v2/models/echo/infer"), verify=tls.certs["cert"],
                   json=echo_body([float(i), 1.0, 2.0, 3.0], "k%d" % i), timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200
        assert r.json()["outputs"][0]["data"] == [float(i), 1.0, 2.0, 3.0]
        assert r.headers.get("Connection", "keep-alive").lower() == "keep-alive"
    pool = s.get_adapter(tls.base).poolmanager.connection_from_url(tls.base)
    assert pool.num_connections == 1, "requests opened %d connections" % pool.num_connections
    assert pool.num_requests == 6
    # http.client on one connection object: the same socket carries every request.
    conn = http.client.HTTPSConnection("127.0.0.1", tls.port, timeout=HTTP_TIMEOUT_S,
                                       context=client_ctx(tls.certs))
    conn.request("GET", "/v2/health/live")
    conn.getresponse().read()
    first = conn.sock
    for _ in range(4):
        conn.request("GET", "/v2/models/echo")
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["name"] == "echo"
        assert conn.sock is first, "the connection was not kept alive"
    conn.close()


def test_large_bodies_on_one_tls_connection(tls):
    """Bodies of a few hundred KB, one after another on one TLS connection, and again after it
    idled long enough for the room kept for the next body to be given back: byte-exact."""
    s = requests.Session()

    def post(n, seed):
        x = np.random.default_rng(seed).random((1, n), dtype=np.float32)
        header = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, n],
                              "parameters": {"binary_data_size": x.nbytes}}],
                  "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}
        body, hl = binary_body(header, [x.tobytes()])
        r = s.post(tls.url("/v2/models/wide/infer"), data=body, verify=tls.certs["cert"],
                   headers={"Content-Type": "application/octet-stream",
                            "Inference-Header-Content-Length": str(hl)},
                   timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, r.content[:300]
        np.testing.assert_array_equal(parse_infer_reply(r)[1]["OUTPUT0"], x)

    for seed in range(3):
        post(150_528, seed)
    post(300_000, 3)
    time.sleep(0.35)
    post(150_528, 4)
    pool = s.get_adapter(tls.base).poolmanager.connection_from_url(tls.base)
    assert pool.num_connections == 1


def test_body_over_the_limit_is_answered_413_through_tls(start_server_fn, certs):
    """As over plain HTTP (test_framing): a body announced past --max-body-bytes gets its 413
    through TLS while the client is still sending it; the rest is read and dropped. So does a
    chunked one (requests sends a generator's pieces as chunks), refused once past the limit."""
    repo = start_server_fn.repo("tls413")
    add_models(repo)
    client = start_server_fn(repo, tls_args(certs) + ["--max-body-bytes", "1048576"],
                             name="batchd-tls413")
    url = "https://127.0.0.1:%d/v2/models/wide/infer" % client.server.port
    for data in [b" " * (3 << 20)] * 5 + [(b" " * (1 << 20) for _ in range(3)) for _ in range(3)]:
        r = requests.post(url, data=data, verify=certs["cert"], timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 413
        assert r.json() == {"error": "the request body is larger than the server's limit of "
                                     "1048576 bytes (--max-body-bytes)"}
    r = requests.get("https://127.0.0.1:%d/v2/health/live" % client.server.port,
                     verify=certs["cert"], timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200


# ---- trust, versions, ALPN --------------------------------------------------------------------

def test_client_that_does_not_trust_the_certificate_refuses_it(tls):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(tls.url("/v2/health/live"), timeout=HTTP_TIMEOUT_S)  # system CAs only
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(tls.url("/v2/health/live"), verify=tls.certs["other_cert"],
                     timeout=HTTP_TIMEOUT_S)
    ctx = ssl.create_default_context()  # no CA for this certificate
    with socket.create_connection(("127.0.0.1", tls.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ctx.wrap_socket(raw, server_hostname="localhost")
    assert_serves(tls)


def test_tls12_accepted_tls11_refused(tls):
    ctx = client_ctx(tls.certs, maximum_version=ssl.TLSVersion.TLSv1_2)
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls.port), timeout=10),
                         server_hostname="localhost") as s:
        assert s.version() == "TLSv1.2"
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_all(s).startswith(b"HTTP/1.1 200 OK\r\n")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(tls.certs["cert"])
        try:
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
            old.set_ciphers("DEFAULT:@SECLEVEL=0")
        except (ValueError, ssl.SSLError) as e:
            pytest.skip("the local OpenSSL cannot be set to offer TLS 1.1: %s" % e)
        # Can this OpenSSL offer TLS 1.1 at all? Try it against a Python server that takes it.
        if not _local_tls11_works(tls.certs, old):
            pytest.skip("the local OpenSSL cannot offer TLS 1.1 (even to a server that takes it)")
    with socket.create_connection(("127.0.0.1", tls.port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            old.wrap_socket(raw, server_hostname="localhost")
    assert_serves(tls)


def _local_tls11_works(certs, client):
    srv = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        srv.minimum_version = ssl.TLSVersion.TLSv1
        srv.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        return False
    srv.load_cert_chain(certs["cert"], certs["key"])
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    ls.settimeout(10)

    def serve():
        try:
            c, _ = ls.accept()
            c.settimeout(10)
            with srv.wrap_socket(c, server_side=True):
                pass
        except (OSError, ssl.SSLError):
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with client.wrap_socket(socket.create_connection(ls.getsockname(), timeout=10),
                                server_hostname="localhost") as s:
            return s.version() == "TLSv1.1"
    except (OSError, ssl.SSLError):
        return False
    finally:
        t.join(10)
        ls.close()


def test_alpn_offers_only_http11(tls):
    for offer, want in ((["h2", "http/1.1"], "http/1.1"), (["h2"], None)):
        ctx = client_ctx(tls.certs)
        ctx.set_alpn_protocols(offer)
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls.port), timeout=10),
                             server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() == want, offer
            s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_all(s).startswith(b"HTTP/1.1 200 OK\r\n"), offer


# ---- what is not TLS costs only its own connection ---------------------------------------------

def test_plain_http_on_the_tls_port_gets_a_plain_400_and_the_server_keeps_serving(tls):
    r = requests.get("http://127.0.0.1:%d/v2/health/live" % tls.port, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["Connection"].lower() == "close"
    assert r.json() == {"error": "this port speaks HTTPS (TLS) only: use https:// or wss://"}
    with socket.create_connection(("127.0.0.1", tls.port), timeout=10) as s:
        s.sendall(b"POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        data = read_all(s)
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n"), data[:200]
    assert data.endswith(b'{"error":"this port speaks HTTPS (TLS) only: use https:// or wss://"}')
    assert_serves(tls)


def test_plain_head_on_the_tls_port_gets_the_400_without_a_body(tls):
    """RFC 9110 9.3.2: the answer to HEAD has no content, this one included; its head is the
    GET's, Content-Length too. Also when "HEAD " comes in pieces."""
    with socket.create_connection(("127.0.0.1", tls.port), timeout=10) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        get = read_all(s)
    head_of_get = get[:get.index(b"\r\n\r\n") + 4]
    for pieces in ([b"HEAD /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"],
                   [b"HE", b"AD /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"]):
        with socket.create_connection(("127.0.0.1", tls.port), timeout=10) as s:
            for piece in pieces:
                s.sendall(piece)
                time.sleep(0.1)
            data = read_all(s)
        assert undated(data) == undated(head_of_get), data
    assert_serves(tls)


def test_garbage_on_the_tls_port_is_closed_without_disturbing_others(tls):
    keep = http.client.HTTPSConnection("127.0.0.1", tls.port, timeout=HTTP_TIMEOUT_S,
                                       context=client_ctx(tls.certs))
    keep.request("GET", "/v2/health/live")
    assert keep.getresponse().read() == b""
    for junk in (b"\x16\x03\x01\x00\x05hello, not a handshake" * 4,
                 b"\x00" * 100, os.urandom(3000), b"\x16\x03\x03\xff\xff" + b"A" * 600):
        with socket.create_connection(("127.0.0.1", tls.port), timeout=10) as s:
            s.sendall(junk)
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            data = read_all(s)
        assert not data.startswith(b"HTTP/"), data[:100]
    # The connection opened before still works, and new ones too.
    keep.request("GET", "/v2/models/echo/ready")
    r = keep.getresponse()
    assert r.status == 200 and r.read() == b""
    keep.close()
    assert_serves(tls)


def test_stalled_handshake_is_closed_after_the_timeout(tls):
    stalled = socket.create_connection(("127.0.0.1", tls.port), timeout=10)
    half = socket.create_connection(("127.0.0.1", tls.port), timeout=10)
    half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello, cut short
    t0 = time.monotonic()
    # Others are served meanwhile.
    for _ in range(3):
        assert_serves(tls)
    for s in (stalled, half):
        assert read_all(s, timeout=TIMEOUT_SECS + 8) == b""
        s.close()
    took = time.monotonic() - t0
    assert TIMEOUT_SECS - 0.5 <= took <= TIMEOUT_SECS + 3, "closed after %.1f s" % took
    assert_serves(tls)


# ---- the server's own answers and hang-up detection under TLS ----------------------------------

def tls_connect(tls):
    s = client_ctx(tls.certs).wrap_socket(
        socket.create_connection(("127.0.0.1", tls.port), timeout=10), server_hostname="localhost")
    return s


def undated(data):
    """The server's own answer without its Date line, which must be there (RFC 9110 6.6.1),
    and without the Server line that follows it, as on every other reply."""
    m = re.search(rb"\r\nDate: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT\r\n"
                  rb"Server: batchd\r\n", data)
    assert m, data[:300]
    return data[:m.start()] + b"\r\n" + data[m.end():]


def test_unfinished_head_gets_431_and_408_through_tls(tls):
    s = tls_connect(tls)
    s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000)
    data = read_all(s)
    s.close()
    body = (b'{"error":"the request line and headers pass 16384 bytes without ending; at most '
            b'16384 are accepted (--max-header-bytes)"}')
    assert undated(data) == (b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: "
                             b"application/json\r\nConnection: close\r\nContent-Length: %d\r\n"
                             b"\r\n" % len(body) + body), data[:300]

    s = tls_connect(tls)
    t0 = time.monotonic()
    s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
    data = read_all(s, timeout=TIMEOUT_SECS + 8)
    took = time.monotonic() - t0
    s.close()
    body = (b'{"error":"the request head did not arrive in full within %d s '
            b'(--http-timeout-secs)"}' % TIMEOUT_SECS)
    assert undated(data) == (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                             b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body), data
    assert TIMEOUT_SECS - 0.5 <= took <= TIMEOUT_SECS + 3
    assert_serves(tls)


def raw_infer(x):
    payload = json.dumps({"inputs": [tensor("INPUT0", "FP32", [1, 2], x)]}).encode()
    return (b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(payload)
            + payload)


class NotifyingClient:
    """A TLS client over a memory BIO, so that it can end the way curl does: a close_notify
    alert, then the TCP FIN (Python's SSLSocket.close() sends no close_notify). `first`: bytes
    sent in the same TCP write as the end of the handshake (over TLS 1.3 the client's Finished),
    so that they reach the server together with it; `ctx`: the client's ssl context."""

    def __init__(self, tls, first=None, ctx=None):
        self.raw = socket.create_connection(("127.0.0.1", tls.port), timeout=10)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = (ctx or client_ctx(tls.certs)).wrap_bio(self.inc, self.out,
                                                           server_hostname="localhost")
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.raw.sendall(self.out.read())
                data = self.raw.recv(65536)
                assert data, "the server closed during the handshake"
                self.inc.write(data)
        if first:
            self.obj.write(first)
        self.raw.sendall(self.out.read())

    def send(self, data):
        self.obj.write(data)
        self.raw.sendall(self.out.read())

    def recv_until(self, done, timeout=10):
        """Plaintext until done(data) holds or the connection ends; (data, end) where end is
        None (done held), "close_notify" (a clean TLS close), "eof" (a TCP FIN without a
        close_notify: a truncated TLS stream) or "reset"."""
        data = b""
        self.raw.settimeout(timeout)
        while True:
            try:
                while True:
                    chunk = self.obj.read(65536)
                    if not chunk:  # the peer's close_notify (Python returns b"" for it)
                        return data, "close_notify"
                    data += chunk
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                return data, "close_notify"
            except ssl.SSLEOFError:
                return data, "eof"
            if done(data):
                return data, None
            try:
                chunk = self.raw.recv(65536)
            except ConnectionResetError:
                return data, "reset"
            if chunk:
                self.inc.write(chunk)
            else:
                self.inc.write_eof()

    def close(self):
        self.raw.close()

    def close_notify(self):
        # Take what the server sent (TLS 1.3 session tickets), so that the close is a FIN and
        # not a reset, then send the alert and close.
        self.raw.setblocking(False)
        try:
            while self.raw.recv(65536):
                pass
        except BlockingIOError:
            pass
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        self.raw.setblocking(True)
        self.raw.sendall(self.out.read())
        self.raw.close()


def test_clients_that_leave_have_their_queued_requests_cancelled(tls):
    cancelled0 = tls.counter("batchd_inference_requests_total", "slow", outcome="cancelled")
    items0 = tls.counter("batchd_inference_items_total", "slow")
    execs0 = tls.counter("batchd_inference_executions_total", "slow")
    blocker = []
    t = threading.Thread(target=lambda: blocker.append(requests.post(
        tls.url("/v2/models/slow/infer"), verify=tls.certs["cert"], timeout=HTTP_TIMEOUT_S,
        json={"inputs": [tensor("INPUT0", "FP32", [1, 2], [1.0, 2.0])]})))
    t.start()
    wait_for(lambda: tls.counter("batchd_inference_inflight", "slow") == 1, 5,
             "the blocker to run")
    time.sleep(0.1)
    plain = []  # closed without a close_notify
    for i in range(3):
        s = tls_connect(tls)
        s.sendall(raw_infer([float(i), 0.0]))
        plain.append(s)
    notifying = []
    for i in range(3):
        c = NotifyingClient(tls)
        c.send(raw_infer([float(10 + i), 0.0]))
        notifying.append(c)
    stay = tls_connect(tls)
    stay.sendall(raw_infer([7.0, 8.0]))
    wait_for(lambda: tls.counter("batchd_queue_depth", "slow") == 7, 5, "7 requests queued")
    for s in plain:
        s.close()
    for c in notifying:
        c.close_notify()
    wait_for(lambda: tls.counter("batchd_inference_requests_total", "slow",
                                 outcome="cancelled") - cancelled0 == 6, 5, "6 cancellations")
    # All while the blocker still ran: nothing else could have started.
    assert tls.counter("batchd_inference_executions_total", "slow") - execs0 == 0
    t.join(HTTP_TIMEOUT_S)
    assert blocker and blocker[0].status_code == 200
    data = b""
    stay.settimeout(10)
    while not data.endswith(b"}]}"):
        chunk = stay.recv(65536)
        assert chunk, data
        data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data[:200]
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["outputs"][0]["data"] == [7.0, 8.0]
    stay.close()
    # Only the blocker and the client that stayed ran.
    assert tls.counter("batchd_inference_items_total", "slow") - items0 == 2


def tls13_ctx(certs):
    """TLS 1.3 only: the client's Finished is its last handshake message, so a request written
    right after the handshake goes out in the same TCP write as the Finished."""
    return client_ctx(certs, minimum_version=ssl.TLSVersion.TLSv1_3)


def many_fields_head(n):
    return (b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-F%d: v\r\n" % i for i in range(n - 1)) + b"\r\n")


def json_reply(status, reason, msg):
    body = json.dumps({"error": msg}, separators=(",", ":")).encode()
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % (status, reason, len(body)) + body)


NOT_HTTP = ("the request head is not HTTP/1.x: expected a request line (METHOD TARGET "
            "HTTP/1.1) and header fields (RFC 9112)")


def test_head_that_comes_with_the_handshake_is_checked(tls):
    # A client may write its first request together with the end of its handshake; h2o then
    # has the request at once. It gets the same JSON 431/400 as a head that comes later, then a
    # clean TLS close.
    cases = [
        (many_fields_head(150), json_reply(
            431, b"Request Header Fields Too Large",
            "the request has 150 header fields; at most 64 are accepted")),
        (b"hello there, this is not HTTP\r\n\r\n", json_reply(400, b"Bad Request", NOT_HTTP)),
    ]
    for head, want in cases:
        c = NotifyingClient(tls, first=head, ctx=tls13_ctx(tls.certs))
        try:
            assert c.obj.version() == "TLSv1.3"
            data, end = c.recv_until(lambda d: False)
        finally:
            c.close()
        assert undated(data) == want, data[:300]
        assert end == "close_notify", end
    # A good request in the same write is served, and the connection kept alive.
    c = NotifyingClient(tls, first=b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n",
                        ctx=tls13_ctx(tls.certs))
    try:
        data, end = c.recv_until(lambda d: d.endswith(b"\r\n\r\n"))
        assert end is None and data.startswith(b"HTTP/1.1 200 OK\r\n"), (data, end)
        assert b"connection: close" not in data.lower()
        # The next head on it is checked as well.
        c.send(many_fields_head(70))
        data, end = c.recv_until(lambda d: False)
        assert undated(data) == json_reply(
            431, b"Request Header Fields Too Large",
            "the request has 70 header fields; at most 64 are accepted")
    finally:
        c.close()
    assert_serves(tls)


def test_a_pipelined_head_h2o_cannot_parse_gets_json_through_tls(tls):
    """Behind a request in the same write, a head h2o's parser rejects gets the JSON answer
    (not h2o's canned plain-text 400) after the first reply, then a clean TLS close."""
    for head, want in [
        (b"hello there, this is not HTTP\r\n\r\n", json_reply(400, b"Bad Request", NOT_HTTP)),
        (many_fields_head(120), json_reply(
            431, b"Request Header Fields Too Large",
            "the request has 120 header fields; at most 64 are accepted")),
    ]:
        s = tls_connect(tls)
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n" + head)
        data = read_all(s)
        s.close()
        first, sep, rest = data.partition(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 200 OK\r\n") and sep, data[:300]
        assert undated(rest) == want, data[:600]
    assert_serves(tls)


def test_first_connection_bringing_its_request_with_the_handshake(start_server_fn, certs):
    # The very first connection of a fresh server sends a good request with its handshake; the
    # heads of later connections are still checked (JSON 431 and 400, not h2o's own 400).
    repo = start_server_fn.repo("tlsfirst")
    repo.add_sim("echo", [("INPUT0", "FP32", [4])], max_batch_size=8)
    client = start_server_fn(repo, tls_args(certs), name="batchd-tls-first")
    tls = TLSClient(client, certs)
    c = NotifyingClient(tls, first=b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n",
                        ctx=tls13_ctx(certs))
    try:
        data, end = c.recv_until(lambda d: d.endswith(b"\r\n\r\n"))
        assert end is None and data.startswith(b"HTTP/1.1 200 OK\r\n"), (data, end)
    finally:
        c.close()
    for head, want in ((many_fields_head(150), json_reply(
            431, b"Request Header Fields Too Large",
            "the request has 150 header fields; at most 64 are accepted")),
            (b"hello there, this is not HTTP\r\n\r\n", json_reply(400, b"Bad Request",
                                                                    NOT_HTTP))):
        s = tls_connect(tls)
        time.sleep(0.2)  # the handshake is over on both sides: the head comes on its own
        s.sendall(head)
        data = read_all(s)
        s.close()
        assert undated(data) == want, data[:300]
    assert_serves(tls)


# ---- WSS --------------------------------------------------------------------------------------

def wss(tls, path="/v2/stream", **kw):
    kw.setdefault("ping_interval", None)
    kw.setdefault("open_timeout", STEP_S)
    kw.setdefault("close_timeout", STEP_S)
    return websockets.connect("wss://localhost:%d%s" % (tls.port, path),
                              ssl=client_ctx(tls.certs), **kw)


def test_wss_streams_infer_requests(tls):
    async def main():
        async with wss(tls) as ws:
            await ws.send(json.dumps({"model_name": "echo", **echo_body([1.0, 2.0, 3.0, 4.0],
                                                                         "w1")}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), STEP_S))
            assert reply == {"model_name": "echo", "model_version": "1", "id": "w1", "outputs": [
                {"name": "OUTPUT0", "datatype": "FP32", "shape": [1, 4],
                 "data": [1.0, 2.0, 3.0, 4.0]}]}
        return None

    async def by_path():
        async with wss(tls, "/v2/models/echo/stream") as ws:
            for i in range(20):
                await ws.send(json.dumps(echo_body([float(i), 0.0, 0.0, 1.0], "p%d" % i)))
            got = {}
            for _ in range(20):
                r = json.loads(await asyncio.wait_for(ws.recv(), STEP_S))
                got[r["id"]] = r["outputs"][0]["data"]
            assert got == {"p%d" % i: [float(i), 0.0, 0.0, 1.0] for i in range(20)}

    async def binary():
        # A binary frame: length-prefixed header, raw tensor bytes, the same layout back.
        async with wss(tls, "/v2/models/echo/stream") as ws:
            x = np.arange(8, dtype="<f4").reshape(2, 4)
            head = json.dumps({"id": "w2", "parameters": {"binary_data_output": True},
                               "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2, 4],
                                           "parameters": {"binary_data_size": x.nbytes}}]})
            head = head.encode()
            await ws.send(len(head).to_bytes(4, "little") + head + x.tobytes())
            frame = await asyncio.wait_for(ws.recv(), STEP_S)
            assert isinstance(frame, bytes)
            n = int.from_bytes(frame[:4], "little")
            reply = json.loads(frame[4:4 + n])
            assert reply["id"] == "w2"
            outs = decode_outputs(reply, frame[4 + n:])
            np.testing.assert_array_equal(outs["OUTPUT0"], x)

    run(main())
    run(by_path())
    run(binary())
    assert_serves(tls)


WSS_MAX_BODY = 65536


@pytest.fixture(scope="module")
def wss_tight(start_server, certs):
    """TLS with --ws-idle-timeout-secs 1 and --max-body-bytes 65536, logging at debug."""
    repo = start_server.repo("wsstight")
    repo.add_sim("echo", [("INPUT0", "FP32", [4])], max_batch_size=8)
    client = start_server(repo, tls_args(certs) + [
        "--ws-idle-timeout-secs", "1", "--max-body-bytes", str(WSS_MAX_BODY),
        "--log-level", "debug"], name="batchd-wss-tight")
    return TLSClient(client, certs)


def assert_no_tls_errors(srv):
    bad = [ln for ln in srv.log().splitlines()
           if ("tls" in ln.lower() or "ssl" in ln.lower())
           and any(w in ln.lower() for w in ("error", "fail", "truncat", "eof"))]
    assert not bad, bad


def test_wss_server_close_is_a_clean_close(wss_tight):
    # The server's own closes (idle: 1000, an oversized message: 1009) reach a WSS client as a
    # complete closing handshake, and the TLS stream ends with a close_notify.
    tls = wss_tight

    async def idle():
        async with wss(tls) as ws:
            t0 = time.monotonic()
            with pytest.raises(websockets.exceptions.ConnectionClosedOK) as e:
                await asyncio.wait_for(ws.recv(), 10)
            took = time.monotonic() - t0
            assert e.value.rcvd.code == 1000 and e.value.rcvd.reason == "idle timeout"
            assert e.value.sent.code == 1000 and e.value.rcvd_then_sent
            assert ws.close_code == 1000 and ws.close_reason == "idle timeout"
            assert 0.7 <= took <= 5, "closed after %.2f s" % took

    async def too_big():
        async with wss(tls, max_size=None) as ws:
            await ws.send("x" * (WSS_MAX_BODY + 1))
            # 1009 is not one of the "OK" codes to websockets, but the closing handshake is
            # complete: the server's close came, and the client's answer went out.
            with pytest.raises(websockets.exceptions.ConnectionClosed) as e:
                await asyncio.wait_for(ws.recv(), 10)
            assert e.value.rcvd.code == 1009 and e.value.sent.code == 1009
            assert e.value.rcvd_then_sent
            assert ws.close_code == 1009

    run(idle())
    run(too_big())
    assert_no_tls_errors(tls.server)
    assert_serves(tls)


def ws_upgrade(port):
    key = base64.b64encode(os.urandom(16)).decode()
    return ("GET /v2/stream HTTP/1.1\r\nHost: localhost:%d\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (port, key)).encode()


def close_frame_of(data):
    """The close frame (code, reason) at the start of `data`, or None while incomplete."""
    if len(data) < 2:
        return None
    assert data[0] == 0x88, data[:20]
    n = data[1] & 0x7F
    if len(data) < 2 + n:
        return None
    return struct.unpack("!H", data[2:4])[0], data[4:2 + n].decode()


def test_wss_close_ends_the_tls_stream_with_close_notify(wss_tight):
    # RFC 8446 6.1: a TLS stream ends with a close_notify; a bare TCP FIN after the close frame
    # is a truncation the client must treat as an error. Whether or not the client answers the
    # close frame, the server's close arrives as close frame, then close_notify, then the end.
    tls = wss_tight
    for answer in (True, False):
        c = NotifyingClient(tls)
        try:
            c.send(ws_upgrade(tls.port))
            data, end = c.recv_until(lambda d: b"\r\n\r\n" in d)
            assert end is None and data.startswith(b"HTTP/1.1 101 "), (data, end)
            frames = data.split(b"\r\n\r\n", 1)[1]
            data, end = c.recv_until(lambda d: close_frame_of(frames + d) is not None)
            frames += data
            assert end is None, (frames, end)
            assert close_frame_of(frames) == (1000, "idle timeout")
            if answer:
                mask = os.urandom(4)
                payload = struct.pack("!H", 1000)
                c.send(bytes([0x88, 0x80 | len(payload)]) + mask
                       + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
            t0 = time.monotonic()
            data, end = c.recv_until(lambda d: False)
            took = time.monotonic() - t0
        finally:
            c.close()
        assert data == b"", data
        assert end == "close_notify", "the TLS stream ended with %s (answer=%s)" % (end, answer)
        if answer:
            assert took < 1.0, "closed %.2f s after the client's close frame" % took
        else:
            assert 1.5 <= took <= 4, "closed %.2f s after the close frame, not ~2 s" % took
    assert_no_tls_errors(tls.server)
    assert_serves(tls)


def test_ws_without_tls_is_refused_on_the_tls_port(tls):
    async def main():
        with pytest.raises(Exception):
            async with websockets.connect("ws://127.0.0.1:%d/v2/stream" % tls.port,
                                          open_timeout=STEP_S):
                pass
    run(main())
    assert_serves(tls)


# ---- the drain --------------------------------------------------------------------------------

def test_sigterm_drains_tls_connections_and_exits_zero(start_server_fn, certs):
    repo = start_server_fn.repo("tlsdrain")
    repo.add_sim("slow", [("INPUT0", "INT32", [2])], max_batch_size=1, instances=1,
                 latency_us=800000)
    client = start_server_fn(repo, tls_args(certs), name="batchd-tls-drain")
    tls = TLSClient(client, certs)
    srv = client.server
    ctx = client_ctx(certs)
    busy = http.client.HTTPSConnection("127.0.0.1", tls.port, timeout=HTTP_TIMEOUT_S, context=ctx)
    idle = http.client.HTTPSConnection("127.0.0.1", tls.port, timeout=HTTP_TIMEOUT_S, context=ctx)
    idle.request("GET", "/v2/health/live")
    r = idle.getresponse()
    r.read()
    assert r.status == 200 and r.getheader("Connection", "").lower() == "keep-alive"
    stalled = socket.create_connection(("127.0.0.1", tls.port), timeout=10)  # no handshake

    async def open_stream():
        ws = await wss(tls)
        await ws.send(json.dumps({"id": "s1", "model_name": "slow",
                                  "inputs": [tensor("INPUT0", "INT32", [1, 2], [6, 7])]}))
        return ws

    loop = asyncio.new_event_loop()
    try:
        ws = loop.run_until_complete(open_stream())
        busy.request("POST", "/v2/models/slow/infer",
                     body=json.dumps({"inputs": [tensor("INPUT0", "INT32", [1, 2], [4, 5])]}),
                     headers={"Content-Type": "application/json"})
        wait_for(lambda: tls.counter("batchd_inference_inflight", "slow") == 2, 5,
                 "2 requests in flight")
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        assert srv.wait_log(r"shutdown signal") is not None
        check_drain_replies(idle, busy)

        async def stream_end():
            reply = json.loads(await asyncio.wait_for(ws.recv(), STEP_S))
            assert reply["id"] == "s1" and reply["outputs"][0]["data"] == [6, 7]
            await asyncio.wait_for(ws.wait_closed(), STEP_S)
            return ws.close_code

        assert loop.run_until_complete(stream_end()) == 1001
    finally:
        loop.close()
    busy.close()
    idle.close()
    rc = srv.wait_exit()
    took = time.monotonic() - t0
    assert read_all(stalled) == b""
    stalled.close()
    srv.stop(send_signal=False)  # exit code 0, a log without sanitizer reports
    assert rc == 0
    # The connection that never began its handshake did not hold the drain (5 s at most).
    assert took < 4, "the drain took %.1f s" % took


# ---- configuration ----------------------------------------------------------------------------

def start_fails(repo_path, args, env_extra=None, code=None):
    env = sanitizer_env()
    env.pop("BATCHD_TLS_CERT", None)
    env.pop("BATCHD_TLS_KEY", None)
    env.update(env_extra or {})
    if not os.path.isfile(BATCHD_BIN):
        pytest.skip("batchd binary not found at %s" % BATCHD_BIN)
    r = subprocess.run([BATCHD_BIN, "serve", "--model-repository", repo_path, "--http-port", "0",
                        "--host", "127.0.0.1"] + args, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60, env=env)
    out = r.stdout + r.stderr
    assert r.returncode != 0, "batchd started: %s" % out
    if code is not None:
        assert r.returncode == code, "exit code %d, not %d: %s" % (r.returncode, code, out)
    assert "http listening" not in out, out
    assert "Sanitizer" not in out, out
    return out


@pytest.fixture(scope="module")
def small_repo(start_server):
    repo = start_server.repo("tlsconf")
    repo.add_sim("echo", [("INPUT0", "FP32", [4])], max_batch_size=8)
    return repo.path


def test_bad_files_fail_the_start_with_one_clear_sentence(small_repo, certs, tmp_path):
    c = certs
    missing = str(tmp_path / "missing.pem")
    empty = str(tmp_path / "empty.pem")
    open(empty, "w").close()
    bad_block = str(tmp_path / "bad_block.pem")
    with open(bad_block, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    cases = [
        (["--tls-cert", missing, "--tls-key", c["key"]],
         "cannot read the TLS certificate file '%s' (--tls-cert): No such file or directory"
         % missing),
        (["--tls-cert", c["cert"], "--tls-key", missing],
         "cannot read the TLS key file '%s' (--tls-key): No such file or directory" % missing),
        (["--tls-cert", c["cert"], "--tls-key", c["other_key"]],
         "the TLS key '%s' (--tls-key) does not belong to the certificate '%s' (--tls-cert)"
         % (c["other_key"], c["cert"])),
        # What the file holds when that says why (OpenSSL said "no start line" or
        # "unsupported").
        (["--tls-cert", c["garbage"], "--tls-key", c["key"]],
         "the TLS certificate '%s' (--tls-cert) holds no PEM block; expected a PEM certificate"
         % c["garbage"]),
        (["--tls-cert", c["key"], "--tls-key", c["key"]],
         "the TLS certificate '%s' (--tls-cert) holds a private key; expected a PEM certificate"
         % c["key"]),
        (["--tls-cert", c["cert"], "--tls-key", c["cert"]],
         "the TLS key '%s' (--tls-key) holds a certificate; expected a PEM private key"
         % c["cert"]),
        (["--tls-cert", empty, "--tls-key", c["key"]],
         "the TLS certificate '%s' (--tls-cert) is empty; expected a PEM certificate" % empty),
        (["--tls-cert", c["cert"], "--tls-key", empty],
         "the TLS key '%s' (--tls-key) is empty; expected a PEM private key" % empty),
        # A PEM block OpenSSL cannot use keeps its reason.
        (["--tls-cert", bad_block, "--tls-key", c["key"]],
         "the TLS certificate '%s' (--tls-cert) is not a PEM certificate OpenSSL can use ("
         % bad_block),
        (["--tls-cert", c["cert"], "--tls-key", c["encrypted_key"]],
         "the TLS key '%s' (--tls-key) is encrypted, and batchd needs it unencrypted"
         % c["encrypted_key"]),
        (["--tls-cert", str(tmp_path), "--tls-key", c["key"]],
         "the TLS certificate '%s' (--tls-cert) is a folder, not a PEM file" % tmp_path),
    ]
    for args, want in cases:
        # A setup error like the others (exit code 2), found before any model loads.
        out = start_fails(small_repo, args, code=2)
        lines = [ln for ln in out.splitlines() if want in ln]
        assert lines, "expected %r in:\n%s" % (want, out)
        assert lines[0].startswith("batchd serve: " + want), lines[0]
        assert "model=echo" not in out and "state=ready" not in out, out
        # Given by environment variables, the sentence names them instead.
        env = {"BATCHD_TLS_CERT": args[1], "BATCHD_TLS_KEY": args[3]}
        want = want.replace("(--tls-cert)", "(BATCHD_TLS_CERT)").replace("(--tls-key)",
                                                                         "(BATCHD_TLS_KEY)")
        out = start_fails(small_repo, [], env, code=2)
        assert "batchd serve: " + want in out, "expected %r in:\n%s" % (want, out)


def test_cert_without_key_or_key_without_cert_fails_the_start(small_repo, certs):
    """The sentence names what was given, flag or environment variable, and what is missing."""
    want = ("batchd serve: %s is given without %s: they go together; give both for HTTPS, or "
            "neither for plain HTTP")
    for args, env, given, missing in (
            (["--tls-cert", certs["cert"]], None, "--tls-cert", "--tls-key"),
            (["--tls-key", certs["key"]], None, "--tls-key", "--tls-cert"),
            ([], {"BATCHD_TLS_KEY": certs["key"]}, "BATCHD_TLS_KEY", "--tls-cert"),
            ([], {"BATCHD_TLS_CERT": certs["cert"]}, "BATCHD_TLS_CERT", "--tls-key"),
            (["--tls-key", certs["key"]], {"BATCHD_TLS_CERT": ""}, "--tls-key", "--tls-cert")):
        out = start_fails(small_repo, args, env, code=2)
        assert want % (given, missing) in out, out


def test_an_empty_file_name_fails_the_start(small_repo, certs):
    """`--tls-cert "$CERT" --tls-key "$KEY"` with both variables unset must not serve plain
    HTTP: an empty name given as a flag is refused (an empty environment variable is unset)."""
    for args, flag in ((["--tls-cert", "", "--tls-key", ""], "--tls-cert"),
                       (["--tls-cert", certs["cert"], "--tls-key="], "--tls-key")):
        out = start_fails(small_repo, args, None, code=2)
        assert "batchd serve: %s needs a file; it was given an empty name" % flag in out, out
        assert "listening" not in out, out


def test_environment_variables_turn_tls_on(start_server_fn, certs, monkeypatch):
    monkeypatch.setenv("BATCHD_TLS_CERT", certs["cert"])
    monkeypatch.setenv("BATCHD_TLS_KEY", certs["key"])
    repo = start_server_fn.repo("tlsenv")
    repo.add_sim("echo", [("INPUT0", "FP32", [4])], max_batch_size=8)
    client = start_server_fn(repo, name="batchd-tls-env")
    line = client.server.wait_log(r"http listening host=127\.0\.0\.1 port=\d+")
    assert line.rstrip().endswith("tls=on"), line
    tls = TLSClient(client, certs)
    r = tls.post("/v2/models/echo/infer", json=echo_body([4.0, 3.0, 2.0, 1.0], "e1"))
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [4.0, 3.0, 2.0, 1.0]


def test_a_sighup_while_the_certificate_is_read_does_not_end_the_start(small_repo, certs,
                                                                        monkeypatch):
    """SIGHUP reloads the key file once batchd serves; one that comes while it still starts
    (here: reading its certificate from a pipe nobody has written yet) waits for the loop
    instead of ending the process, which then starts and serves."""
    monkeypatch.delenv("BATCHD_TLS_CERT", raising=False)
    monkeypatch.delenv("BATCHD_TLS_KEY", raising=False)
    r_fd, w_fd = os.pipe()
    srv = Server(small_repo, ["--tls-cert", "/dev/fd/%d" % r_fd, "--tls-key", certs["key"]],
                 name="batchd-tls-hup")
    srv.pass_fds = (r_fd,)
    started = threading.Thread(target=srv.start, daemon=True)
    try:
        started.start()
        wait_for(lambda: srv.proc is not None, 10, "batchd spawned")
        os.close(r_fd)
        r_fd = -1

        def reading_the_pipe():
            with open("/proc/%d/wchan" % srv.proc.pid) as f:
                return "pipe_read" in f.read()

        wait_for(reading_the_pipe, 30, "batchd reading its certificate from the pipe")
        srv.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        assert srv.proc.poll() is None, "SIGHUP ended the start (exit code %s):\n%s" % (
            srv.proc.poll(), srv.log())
        with open(certs["cert"], "rb") as f:
            os.write(w_fd, f.read())
        os.close(w_fd)
        w_fd = -1
        started.join(60)
        assert srv.port is not None, srv.log()
        r = requests.get("https://127.0.0.1:%d/v2/health/live" % srv.port,
                         verify=certs["cert"], timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200
    finally:
        for fd in (r_fd, w_fd):
            if fd >= 0:
                os.close(fd)
        started.join(60)
    srv.stop()  # SIGTERM: exit code 0 and a log without sanitizer reports


def test_plain_server_says_tls_off(start_server, monkeypatch):
    monkeypatch.delenv("BATCHD_TLS_CERT", raising=False)
    monkeypatch.delenv("BATCHD_TLS_KEY", raising=False)
    repo = start_server.repo("plain")
    repo.add_sim("echo", [("INPUT0", "FP32", [4])], max_batch_size=8)
    client = start_server(repo, name="batchd-plain")
    line = client.server.wait_log(r"http listening host=127\.0\.0\.1 port=\d+")
    assert line.rstrip().endswith("tls=off"), line
    assert client.get("/v2/health/live").status_code == 200


# ---- batchd infer and inspect over https:// ------------------------------------------------

def run_cli(*args):
    if not os.path.isfile(BATCHD_BIN):
        pytest.skip("batchd binary not found at %s" % BATCHD_BIN)
    r = subprocess.run([BATCHD_BIN] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=60, env=sanitizer_env())
    for marker in SANITIZER_MARKERS:
        assert marker not in r.stderr, r.stderr
    return r


@pytest.fixture(scope="module")
def req_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("clireq") / "req.json"
    path.write_text(json.dumps(echo_body([1.5, -2.0, 3.0, 4.0], "cli")))
    return str(path)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_cli_infer_and_inspect_over_https(tls, certs, req_file, host):
    url = "https://%s:%d" % (host, tls.port)
    r = run_cli("infer", "--url", url, "--model", "echo", "--json", req_file,
                "--cacert", certs["cert"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == "model echo version 1\noutput OUTPUT0 FP32 [1,4]: 1.5 -2 3 4\n"
    r = run_cli("inspect", "--url", url, "--model", "echo", "--cacert", certs["cert"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("model: echo\nplatform: batchd_sim\nversions: 1\n"), r.stdout


def test_cli_refuses_a_certificate_it_does_not_trust(tls, certs, req_file):
    url = "https://127.0.0.1:%d" % tls.port
    for extra in ([], ["--cacert", certs["other_cert"]]):
        r = run_cli("infer", "--url", url, "--model", "echo", "--json", req_file, *extra)
        assert r.returncode == 1, r.stdout
        assert r.stderr.startswith("batchd infer: the certificate of 127.0.0.1:%d is not "
                                   "trusted: " % tls.port), r.stderr
        assert r.stderr.endswith("; give the CA that signed it (or the certificate itself) "
                                 "with --cacert FILE\n"), r.stderr
    # A --cacert that holds no certificate, or cannot be read, is a bad flag: exit 2 before
    # anything is sent.
    for cmd, extra in (("inspect", []), ("infer", ["--json", req_file]),
                       ("bench", ["--duration", "200ms"])):
        r = run_cli(cmd, "--url", url, "--model", "echo", *extra, "--cacert", certs["garbage"])
        assert r.returncode == 2, (cmd, r.stderr)
        assert r.stderr.startswith("batchd %s: no CA certificate could be read from %s: "
                                   % (cmd, certs["garbage"])), r.stderr
    for cmd, extra in (("inspect", []), ("infer", ["--json", req_file]),
                       ("bench", ["--duration", "200ms"])):
        r = run_cli(cmd, "--url", url, "--model", "echo", *extra, "--cacert", "/nonexistent/ca.pem")
        assert r.returncode == 2, (cmd, r.stderr)
        assert r.stderr == ("batchd %s: cannot read --cacert '/nonexistent/ca.pem': No such "
                            "file or directory\n" % cmd), r.stderr
    r = run_cli("inspect", "--url", url, "--model", "echo", "--cacert", os.path.dirname(req_file))
    assert r.returncode == 2
    assert r.stderr.endswith("': it is not a file\n"), r.stderr
    # Plain HTTP to the TLS port: the server's own plain-text 400 is printed.
    r = run_cli("infer", "--url", "http://127.0.0.1:%d" % tls.port, "--model", "echo",
                "--json", req_file)
    assert r.returncode == 1
    assert "this port speaks HTTPS (TLS) only" in r.stderr, r.stderr
    # bench checks the certificate with its first request (the model's metadata).
    r = run_cli("bench", "--url", url, "--model", "echo", "--duration", "200ms")
    assert r.returncode != 0
    assert r.stderr.startswith("batchd bench: cannot read model 'echo' metadata: the certificate "
                               "of 127.0.0.1:%d is not trusted: " % tls.port), r.stderr


@pytest.mark.parametrize("mode", [["--concurrency", "1,4"], ["--rate", "200"]])
def test_cli_bench_over_https(tls, certs, tmp_path, mode):
    """The load generator over TLS, closed and open loop, JSON and binary tensors: every
    request answered 200 (each connection's handshake is part of its first request)."""
    out = tmp_path / "bench.json"
    r = run_cli("bench", "--url", "https://127.0.0.1:%d" % tls.port, "--model", "echo",
                "--cacert", certs["cert"], *mode, "--duration", "400ms", "--warmup", "100ms",
                "--binary", "--quiet", "--json", out)
    assert r.returncode == 0, r.stderr
    levels = json.loads(out.read_text())["levels"]
    assert len(levels) == (2 if mode[0] == "--concurrency" else 1)
    for level in levels:
        assert level["success_rate"] == 1 and set(level["status_counts"]) == {"200"}, level
        assert level["status_counts"]["200"] > 0 and not any(level["errors"].values()), level


def test_cli_refuses_a_certificate_for_another_name(start_server, tmp_path_factory, req_file):
    d = tmp_path_factory.mktemp("othername")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
             "-subj", "/CN=other.example", "-addext", "subjectAltName=DNS:other.example",
             "-days", "2")
    repo = start_server.repo("othername")
    repo.add_sim("echo", [("INPUT0", "FP32", [4])], max_batch_size=8)
    client = start_server(repo, ["--tls-cert", cert, "--tls-key", key], name="batchd-othername")
    for host, what in (("127.0.0.1", "IP address mismatch"), ("localhost", "hostname mismatch")):
        r = run_cli("infer", "--url", "https://%s:%d" % (host, client.server.port), "--model",
                    "echo", "--json", req_file, "--cacert", cert)
        assert r.returncode == 1, r.stdout
        assert r.stderr == ("batchd infer: the certificate of %s:%d is for another name (%s); "
                            "use a URL with a name or address the certificate lists\n"
                            % (host, client.server.port, what)), r.stderr
