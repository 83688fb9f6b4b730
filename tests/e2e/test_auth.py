"""API keys (batchd issue 12): `--api-keys FILE` (env BATCHD_API_KEYS) holds `<key> <role>`
lines, role `infer` or `admin`, with `#` comments and blank lines. With keys on, every endpoint
needs `Authorization: Bearer <key>` except health (`/v2/health/*`), a model's readiness
(`/v2/models/{m}[/versions/{v}]/ready`) and `/metrics` (which needs a key only with
`--metrics-auth`). No key, a malformed Authorization or an unknown key: 401 with
`WWW-Authenticate: Bearer` (RFC 6750) and the JSON error body. An `infer` key may infer and
read (metadata, readiness, statistics, the repository index, streams); repository load and
unload need `admin` (403 otherwise). A WebSocket upgrade takes the header or `?api_key=`
(browsers cannot set headers there); without a key the handshake is refused with 401. A request
that would get a 401 and announces a body (Content-Length or chunked) is answered as soon as its
head is in, over HTTP and HTTPS: its body is then read and dropped (never buffered) and the
connection closed, so a client that sends it anyway still reads the 401. The file
is reloaded on SIGHUP: new keys work and removed ones get 401 (a WebSocket opened with a
removed key gets a 401 error frame and close 1008); a bad file keeps the old keys. A bad file
at start fails the start with a message naming the file and the line. Keys never appear in
the log or in an error message.

Servers: `keyed` (keys, --model-control explicit, --log-level debug), `metrics_keyed`
(--metrics-auth), and function-scoped ones for SIGHUP and the environment variable; bad files
run the binary directly.
"""
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest
import requests
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatusCode

from ws_util import run, ws_connect, ws_recv
from conftest import (BATCHD_BIN, HTTP_TIMEOUT_S, error_message, non_loopback_address,
                      parse_metrics, raw_exchange, read_all, read_reply, sanitizer_env, tensor,
                      vm_kib)

STEP_S = 15.0
INFER_KEY = "inf-" + secrets.token_hex(16)
ADMIN_KEY = "adm-" + secrets.token_urlsafe(24)
OTHER_INFER = "inf2-" + secrets.token_hex(12)
ALL_KEYS = (INFER_KEY, ADMIN_KEY, OTHER_INFER)

X = [1.5, -2.0]
BODY = {"inputs": [tensor("INPUT0", "FP32", [1, 2], X)]}

# Every endpoint but health, readiness and /metrics needs a key (an unknown path too: nothing
# is told to a client without one).
PROTECTED = [
    ("GET", "/v2"),
    ("GET", "/v2/models/echo"),
    ("GET", "/v2/models/echo/versions/1"),
    ("POST", "/v2/models/echo/infer"),
    ("POST", "/v2/models/echo/versions/1/infer"),
    ("GET", "/v2/models/stats"),
    ("GET", "/v2/models/echo/stats"),
    ("POST", "/v2/repository/index"),
    ("POST", "/v2/repository/models/spare/load"),
    ("POST", "/v2/repository/models/spare/unload"),
    ("GET", "/v2/stream"),
    ("GET", "/v2/nosuch"),
]
OPEN = ["/v2/health/live", "/v2/health/ready", "/v2/models/echo/ready",
        "/v2/models/echo/versions/1/ready", "/metrics"]


def write_keys(path, text):
    """Replace the key file at once (a reload never sees half a file)."""
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, str(path))


def bearer(key):
    return {"Authorization": "Bearer " + key}


def check_401(r, invalid_token=False):
    """401, the JSON error body, and a Bearer challenge (RFC 6750 §3; error="invalid_token"
    when a key was sent but is not valid)."""
    msg = error_message(r, 401)
    www = r.headers.get("WWW-Authenticate")
    assert www is not None, "401 without WWW-Authenticate: %r" % dict(r.headers)
    assert www.split()[0].lower() == "bearer", www
    if invalid_token:
        assert 'error="invalid_token"' in www, www
    for k in ALL_KEYS:
        assert k not in msg
    return msg


def add_models(repo):
    repo.add_sim("echo", [("INPUT0", "FP32", [2])], max_batch_size=8)
    repo.add_sim("spare", [("INPUT0", "INT32", [1])], max_batch_size=1)


def check_echo(r):
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["name"] == "OUTPUT0" and out["shape"] == [1, 2] and out["data"] == X, out


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="module")
def keyed(start_server, keys_dir):
    repo = start_server.repo("auth")
    add_models(repo)
    path = keys_dir / "keys.txt"
    write_keys(path, "# batchd API keys\n\n%s infer\n   %s\tadmin   # the operator\n"
                     "\n# a second client\n%s infer\n" % (INFER_KEY, ADMIN_KEY, OTHER_INFER))
    client = start_server(repo, args=["--api-keys", str(path), "--model-control", "explicit",
                                      "--log-level", "debug"], name="batchd-auth")
    client.port = client.server.port
    return client


@pytest.fixture(scope="module")
def metrics_keyed(start_server, keys_dir):
    repo = start_server.repo("auth-metrics")
    add_models(repo)
    path = keys_dir / "keys-metrics.txt"
    write_keys(path, "%s infer\n" % INFER_KEY)
    return start_server(repo, args=["--api-keys", str(path), "--metrics-auth"],
                        name="batchd-metrics-auth")


# ---- HTTP ---------------------------------------------------------------------------------

def test_start_logs_how_many_keys_never_the_keys(keyed):
    line = keyed.server.wait_log(r"keys=3\b")
    assert line is not None, keyed.server.log_tail()
    assert "infer=2" in line and "admin=1" in line, line


@pytest.mark.parametrize("method,path", PROTECTED)
def test_no_key_is_401(keyed, method, path):
    r = requests.request(method, keyed.url(path), timeout=HTTP_TIMEOUT_S,
                         json=BODY if path.endswith("/infer") else None)
    check_401(r)


@pytest.mark.parametrize("method,path", PROTECTED)
def test_unknown_key_is_401(keyed, method, path):
    for key in ("wrong-key", INFER_KEY[:-1], INFER_KEY + "x", INFER_KEY.upper(),
                ADMIN_KEY + "0"):
        r = requests.request(method, keyed.url(path), headers=bearer(key),
                             timeout=HTTP_TIMEOUT_S)
        check_401(r, invalid_token=True)


@pytest.mark.parametrize("value", [
    "Basic aW5mOnBhc3N3b3Jk",
    "Bearer",
    "Bearer ",
    "Token " + INFER_KEY,
    INFER_KEY,
    "Bearer " + INFER_KEY + " extra",
    "Bearer" + INFER_KEY,
])
def test_malformed_authorization_is_401(keyed, value):
    r = requests.post(keyed.url("/v2/models/echo/infer"), json=BODY, timeout=HTTP_TIMEOUT_S,
                      headers={"Authorization": value})
    check_401(r)


def test_two_authorization_headers_are_401(keyed):
    """Which of two keys would count is ambiguous: neither does."""
    body = json.dumps(BODY).encode()
    raw = ("POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           "Authorization: Bearer %s\r\nAuthorization: Bearer %s\r\n"
           "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
           % (INFER_KEY, INFER_KEY, len(body))).encode() + body
    with socket.create_connection(("127.0.0.1", keyed.port), timeout=10) as s:
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 "), head
    assert b"\r\nwww-authenticate: bearer" in head.lower(), head
    assert "error" in json.loads(payload)


def test_scheme_is_case_insensitive(keyed):
    r = requests.post(keyed.url("/v2/models/echo/infer"), json=BODY, timeout=HTTP_TIMEOUT_S,
                      headers={"Authorization": "bearer " + INFER_KEY})
    check_echo(r)
    r = requests.post(keyed.url("/v2/models/echo/infer"), json=BODY, timeout=HTTP_TIMEOUT_S,
                      headers={"Authorization": "BEARER   " + INFER_KEY})
    check_echo(r)


def test_query_key_is_not_taken_outside_websocket_upgrades(keyed):
    r = requests.post(keyed.url("/v2/models/echo/infer?api_key=" + INFER_KEY), json=BODY,
                      timeout=HTTP_TIMEOUT_S)
    check_401(r)
    r = requests.get(keyed.url("/v2?api_key=" + INFER_KEY), timeout=HTTP_TIMEOUT_S)
    check_401(r)


@pytest.mark.parametrize("path", OPEN)
def test_health_readiness_and_metrics_need_no_key(keyed, path):
    r = requests.get(keyed.url(path), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, (path, r.status_code, r.text)
    r = requests.head(keyed.url(path), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, (path, r.status_code)
    # A wrong key on an open path is not looked at.
    r = requests.get(keyed.url(path), headers=bearer("wrong"), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, (path, r.status_code, r.text)
    if path == "/metrics":
        parse_metrics(r.text)


def test_unknown_model_readiness_is_open_and_honest(keyed):
    r = requests.get(keyed.url("/v2/models/nosuch/ready"), timeout=HTTP_TIMEOUT_S)
    assert r.status_code in (400, 404), r.status_code
    assert r.status_code != 401


def test_infer_key_may_infer_and_read(keyed):
    for key in (INFER_KEY, OTHER_INFER):
        h = bearer(key)
        check_echo(requests.post(keyed.url("/v2/models/echo/infer"), json=BODY, headers=h,
                                 timeout=HTTP_TIMEOUT_S))
        check_echo(requests.post(keyed.url("/v2/models/echo/versions/1/infer"), json=BODY,
                                 headers=h, timeout=HTTP_TIMEOUT_S))
        r = requests.get(keyed.url("/v2"), headers=h, timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200 and r.json()["name"] == "batchd", r.text
        r = requests.get(keyed.url("/v2/models/echo"), headers=h, timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200 and r.json()["name"] == "echo", r.text
        r = requests.get(keyed.url("/v2/models/echo/stats"), headers=h, timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200 and r.json()["model_stats"][0]["name"] == "echo", r.text
        r = requests.post(keyed.url("/v2/repository/index"), headers=h, timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, r.text
        assert {row["name"] for row in r.json()} == {"echo", "spare"}


def test_infer_key_may_not_load_or_unload(keyed):
    for action in ("load", "unload"):
        r = requests.post(keyed.url("/v2/repository/models/spare/%s" % action),
                          headers=bearer(INFER_KEY), timeout=HTTP_TIMEOUT_S)
        msg = error_message(r, 403)
        assert "admin" in msg, msg
        assert INFER_KEY not in msg
        # RFC 6750 3.1: the key is valid but does not reach this endpoint.
        assert r.headers.get("WWW-Authenticate") == \
            'Bearer realm="batchd", error="insufficient_scope"', r.headers
    # Nothing changed: spare still answers.
    r = requests.post(keyed.url("/v2/models/spare/infer"), headers=bearer(INFER_KEY),
                      json={"inputs": [tensor("INPUT0", "INT32", [1, 1], [7])]},
                      timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text


def test_admin_key_may_unload_and_load(keyed):
    h = bearer(ADMIN_KEY)
    spare = {"inputs": [tensor("INPUT0", "INT32", [1, 1], [7])]}
    r = requests.post(keyed.url("/v2/repository/models/spare/unload"), headers=h,
                      timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    r = requests.post(keyed.url("/v2/models/spare/infer"), headers=h, json=spare,
                      timeout=HTTP_TIMEOUT_S)
    error_message(r, 503)
    r = requests.post(keyed.url("/v2/repository/models/spare/load"), headers=h,
                      timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    r = requests.post(keyed.url("/v2/models/spare/infer"), headers=h, json=spare,
                      timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [7], r.text
    # admin may do everything an infer key may.
    check_echo(requests.post(keyed.url("/v2/models/echo/infer"), json=BODY, headers=h,
                             timeout=HTTP_TIMEOUT_S))
    r = requests.get(keyed.url("/v2/models/stats"), headers=h, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text


def test_metrics_open_without_metrics_auth(keyed):
    r = requests.get(keyed.url("/metrics"), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200
    parse_metrics(r.text)


def test_metrics_auth_needs_a_key_for_metrics_only(metrics_keyed):
    r = requests.get(metrics_keyed.url("/metrics"), timeout=HTTP_TIMEOUT_S)
    check_401(r)
    r = requests.get(metrics_keyed.url("/metrics"), headers=bearer("nope"),
                     timeout=HTTP_TIMEOUT_S)
    check_401(r, invalid_token=True)
    r = requests.get(metrics_keyed.url("/metrics"), headers=bearer(INFER_KEY),
                     timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200
    samples = parse_metrics(r.text)
    assert any(name == "batchd_inference_requests_total" for name, _ in samples)
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/echo/ready"):
        r = requests.get(metrics_keyed.url(path), timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, (path, r.status_code)


# ---- batchd's own clients ---------------------------------------------------------------------

def run_cli(*args, env_key=None):
    env = sanitizer_env()
    env.pop("BATCHD_API_KEY", None)
    if env_key is not None:
        env["BATCHD_API_KEY"] = env_key
    return subprocess.run([BATCHD_BIN] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_cli_clients_send_the_api_key(keyed, tmp_path):
    if not os.path.isfile(BATCHD_BIN):
        pytest.skip("batchd binary not found at %s" % BATCHD_BIN)
    req = tmp_path / "req.json"
    req.write_text(json.dumps(BODY))
    url = keyed.url("")
    want = "model echo version 1\noutput OUTPUT0 FP32 [1,2]: 1.5 -2\n"
    r = run_cli("infer", "--url", url, "--model", "echo", "--json", req, "--api-key", INFER_KEY)
    assert (r.returncode, r.stdout) == (0, want), r.stderr
    r = run_cli("infer", "--url", url, "--model", "echo", "--json", req, env_key=INFER_KEY)
    assert (r.returncode, r.stdout) == (0, want), r.stderr
    r = run_cli("inspect", "--url", url, "--model", "echo", env_key=INFER_KEY)
    assert r.returncode == 0 and r.stdout.startswith("model: echo\n"), r.stderr
    r = run_cli("bench", "--url", url, "--model", "echo", "--concurrency", "2", "--duration",
                "300ms", "--warmup", "0", "--quiet", "--json", tmp_path / "b.json",
                env_key=INFER_KEY)
    assert r.returncode == 0, r.stderr
    level = json.loads((tmp_path / "b.json").read_text())["levels"][0]
    assert level["success_rate"] == 1 and set(level["status_counts"]) == {"200"}, level
    assert level["status_counts"]["200"] > 0 and not any(level["errors"].values()), level
    # Without a key, or with a wrong one: the server's sentence, and where a key goes.
    r = run_cli("infer", "--url", url, "--model", "echo", "--json", req)
    assert r.returncode == 1
    assert r.stderr == ("batchd infer: %s\nbatchd infer: a key goes with --api-key or "
                        "BATCHD_API_KEY\n" % NEED_KEY), r.stderr
    r = run_cli("bench", "--url", url, "--model", "echo", "--api-key", "wrong")
    assert r.returncode != 0
    assert "answered 401" in r.stderr and "a key goes with --api-key or BATCHD_API_KEY" in \
        r.stderr, r.stderr
    # A key that cannot go in a header is refused before anything is sent.
    for bad in ("two words", "x" * 257, "line\nbreak"):
        r = run_cli("infer", "--url", url, "--model", "echo", "--json", req, "--api-key", bad)
        assert r.returncode == 2
        assert r.stderr == ("batchd infer: --api-key (or BATCHD_API_KEY) must be 1 to 256 "
                            "visible ASCII characters, without spaces\n"), r.stderr


# ---- keys before bodies ----------------------------------------------------------------------

BIG = 8 << 20


def infer_head(length, auth=None, chunked=False):
    framing = "Transfer-Encoding: chunked" if chunked else "Content-Length: %d" % length
    return ("POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\n%s"
            "Content-Type: application/octet-stream\r\n%s\r\n\r\n"
            % ("Authorization: %s\r\n" % auth if auth else "", framing)).encode()


def check_early_401(sock, auth, message, invalid_token):
    """The head alone gets the 401 (the body has not been sent); then the body goes in full
    without a reset, and the server closes the connection."""
    sock.sendall(infer_head(BIG, auth))
    status, headers, body = read_reply(sock)
    assert status == 401, (status, body)
    assert headers.get("connection") == "close", headers
    assert headers["www-authenticate"].split()[0].lower() == "bearer", headers
    assert ('error="invalid_token"' in headers["www-authenticate"]) == invalid_token, headers
    assert json.loads(body) == {"error": message}, body
    sock.sendall(b"\0" * BIG)  # read and dropped: no reset while it is sent
    assert read_all(sock) == b""


NEED_KEY = "this endpoint needs an API key: send 'Authorization: Bearer <key>'"
EARLY = [
    (None, NEED_KEY, False),
    ("Bearer wrong-key", "the API key is not valid", True),
    ("Basic aW5mOnBhc3N3b3Jk", "the Authorization header must be one 'Bearer <API key>'", False),
]


@pytest.mark.parametrize("auth,message,invalid_token", EARLY)
def test_401_comes_before_the_body(keyed, auth, message, invalid_token):
    with socket.create_connection(("127.0.0.1", keyed.port), timeout=STEP_S) as s:
        check_early_401(s, auth, message, invalid_token)
    r = requests.post(keyed.url("/v2/models/echo/infer"), json=BODY, headers=bearer(INFER_KEY),
                      timeout=HTTP_TIMEOUT_S)
    check_echo(r)


def test_refused_bodies_are_not_buffered(keyed):
    """Four connections without a key each send 16 MiB: the server's peak RSS grows by far
    less than the 64 MiB it would hold had it buffered them."""
    pid = keyed.server.proc.pid
    before = vm_kib(pid, "VmHWM")
    socks = [socket.create_connection(("127.0.0.1", keyed.port), timeout=STEP_S)
             for _ in range(4)]
    try:
        for s in socks:
            s.sendall(infer_head(16 << 20))
            assert read_reply(s)[0] == 401
        for s in socks:
            s.sendall(b"\1" * (16 << 20))
        for s in socks:
            assert read_all(s) == b""
    finally:
        for s in socks:
            s.close()
    if "ASAN_OPTIONS" in os.environ:
        pytest.skip("under ASan freed memory sits in its quarantine, so RSS does not measure "
                    "the server's own use (the bodies were refused and dropped as above)")
    if "TSAN_OPTIONS" in os.environ:
        pytest.skip("under TSan every page the server touches brings its shadow pages, so RSS "
                    "does not measure the server's own use (the bodies were refused and "
                    "dropped as above)")
    grew = vm_kib(pid, "VmHWM") - before
    assert grew < 24 * 1024, "peak RSS grew by %d KiB for 64 MiB of refused bodies" % grew


def test_requests_reads_the_401_for_a_large_body(keyed):
    """An ordinary client that sends the whole body before it reads sees the 401."""
    r = requests.post(keyed.url("/v2/models/echo/infer"), data=b"\0" * (3 << 20),
                      headers=bearer("wrong-key"), timeout=HTTP_TIMEOUT_S)
    check_401(r, invalid_token=True)


def test_chunked_body_is_refused_before_it_comes(keyed):
    with socket.create_connection(("127.0.0.1", keyed.port), timeout=STEP_S) as s:
        s.sendall(infer_head(0, chunked=True))
        status, headers, body = read_reply(s)
        assert status == 401 and json.loads(body) == {"error": NEED_KEY}, (status, body)
        s.sendall(b"100000\r\n" + b"\0" * 0x100000 + b"\r\n0\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        assert read_all(s) == b""


def test_a_valid_key_with_a_body_in_pieces_is_served(keyed):
    """The early check passes a good key: the body may come well after the head."""
    body = json.dumps(BODY).encode()
    head = ("POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (INFER_KEY, len(body))).encode()
    with socket.create_connection(("127.0.0.1", keyed.port), timeout=STEP_S) as s:
        s.sendall(head)
        time.sleep(0.3)
        s.sendall(body[:5])
        time.sleep(0.2)
        s.sendall(body[5:])
        status, _, reply = read_reply(s)
    assert status == 200, reply
    assert json.loads(reply)["outputs"][0]["data"] == X


def test_open_paths_with_a_body_are_not_refused(keyed):
    """Health and readiness need no key, whatever comes with them."""
    r = requests.get(keyed.url("/v2/health/live"), data=b"x" * 100000, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def tls_keyed(start_server, keys_dir):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (apt-get install openssl)")
    cert, key = str(keys_dir / "cert.pem"), str(keys_dir / "key.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        key, "-out", cert, "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=IP:127.0.0.1", "-days", "2"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    repo = start_server.repo("auth-tls")
    add_models(repo)
    path = keys_dir / "keys-tls.txt"
    write_keys(path, "%s infer\n" % INFER_KEY)
    client = start_server(repo, args=["--api-keys", str(path), "--tls-cert", cert,
                                      "--tls-key", key], name="batchd-auth-tls")
    client.cert = cert
    return client


@pytest.mark.parametrize("tls13", [False, True])
def test_401_comes_before_the_body_over_tls(tls_keyed, tls13):
    """As over plain HTTP; with TLS 1.3 the head rides with the end of the handshake."""
    ctx = ssl.create_default_context(cafile=tls_keyed.cert)
    ctx.minimum_version = ctx.maximum_version = (
        ssl.TLSVersion.TLSv1_3 if tls13 else ssl.TLSVersion.TLSv1_2)
    raw = socket.create_connection(("127.0.0.1", tls_keyed.server.port), timeout=STEP_S)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        check_early_401(s, "Bearer wrong-key", "the API key is not valid", True)
    port = tls_keyed.server.port
    r = requests.post("https://127.0.0.1:%d/v2/models/echo/infer" % port, data=b"\0" * (3 << 20),
                      headers=bearer("wrong-key"), verify=tls_keyed.cert, timeout=HTTP_TIMEOUT_S)
    check_401(r, invalid_token=True)
    r = requests.post("https://127.0.0.1:%d/v2/models/echo/infer" % port, json=BODY,
                      headers=bearer(INFER_KEY), verify=tls_keyed.cert, timeout=HTTP_TIMEOUT_S)
    check_echo(r)


# ---- WebSocket upgrades -----------------------------------------------------------------------

def ws_req(rid, model=None):
    body = {"id": rid, "inputs": [tensor("INPUT0", "FP32", [1, 2], X)]}
    if model:
        body["model_name"] = model
    return json.dumps(body)


async def ws_roundtrip(ws, rid, model=None):
    await ws.send(ws_req(rid, model))
    reply = json.loads(await ws_recv(ws))
    assert reply.get("id") == rid, reply
    assert "error" not in reply, reply
    assert reply["outputs"][0]["data"] == X, reply
    return reply


def test_websocket_with_query_key(keyed):
    async def main():
        async with ws_connect(keyed.port, "/v2/stream?api_key=" + INFER_KEY) as ws:
            await ws_roundtrip(ws, "q1", model="echo")
            await ws_roundtrip(ws, "q2", model="echo")
        # A percent-encoded key is the same key; other parameters may come first.
        enc = "".join("%%%02X" % b for b in ADMIN_KEY.encode())
        async with ws_connect(keyed.port, "/v2/models/echo/stream?x=1&api_key=" + enc) as ws:
            await ws_roundtrip(ws, "q3")
        async with ws_connect(keyed.port,
                              "/v2/models/echo/versions/1/stream?api_key=" + OTHER_INFER) as ws:
            await ws_roundtrip(ws, "q4")
    run(main())


def test_websocket_with_authorization_header(keyed):
    async def main():
        async with ws_connect(keyed.port, "/v2/stream", extra_headers=bearer(INFER_KEY)) as ws:
            await ws_roundtrip(ws, "h1", model="echo")
        async with ws_connect(keyed.port, "/v2/models/echo/stream",
                              extra_headers=bearer(ADMIN_KEY)) as ws:
            await ws_roundtrip(ws, "h2")
    run(main())


@pytest.mark.parametrize("path,headers", [
    ("/v2/stream", None),
    ("/v2/models/echo/stream", None),
    ("/v2/stream?api_key=wrong-key", None),
    ("/v2/stream?api_key=", None),
    ("/v2/stream?api_key=%zz", None),
    ("/v2/models/echo/stream?apikey=" + INFER_KEY, None),
    ("/v2/stream", {"Authorization": "Bearer wrong-key"}),
    ("/v2/stream", {"Authorization": "Basic abc"}),
])
def test_websocket_without_a_valid_key_is_refused_401(keyed, path, headers):
    async def main():
        try:
            async with ws_connect(keyed.port, path, extra_headers=headers or {}):
                pass
        except InvalidStatusCode as e:
            return e.status_code
        pytest.fail("the handshake of %s succeeded without a valid key" % path)
    assert run(main()) == 401


def test_websocket_refusal_is_a_json_401_with_a_challenge(keyed):
    raw = ("GET /v2/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with socket.create_connection(("127.0.0.1", keyed.port), timeout=10) as s:
        s.sendall(raw.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int([l.split(b":", 1)[1] for l in head.split(b"\r\n")
                      if l.lower().startswith(b"content-length:")][0])
        while len(rest) < length:
            chunk = s.recv(65536)
            assert chunk
            rest += chunk
    assert head.startswith(b"HTTP/1.1 401 "), head
    assert b"\r\nwww-authenticate: bearer" in head.lower(), head
    assert b"101" not in head.split(b"\r\n")[0]
    assert isinstance(json.loads(rest[:length])["error"], str)


def test_keys_never_reach_the_log(keyed):
    """Every key used above, in headers and in ?api_key=, on good and bad paths, at debug
    level: none is in the log."""
    requests.get(keyed.url("/v2/nosuch?api_key=" + ADMIN_KEY), headers=bearer(INFER_KEY),
                 timeout=HTTP_TIMEOUT_S)
    requests.post(keyed.url("/v2/repository/models/nosuch/load"), headers=bearer(ADMIN_KEY),
                  timeout=HTTP_TIMEOUT_S)
    log = keyed.server.log()
    for key in ALL_KEYS:
        assert key not in log, "a key is in the log"
    assert "keys=3" in log


# ---- SIGHUP ---------------------------------------------------------------------------------

def wait_status(client, key, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        r = requests.post(client.url("/v2/models/echo/infer"), json=BODY, headers=bearer(key),
                          timeout=HTTP_TIMEOUT_S)
        if r.status_code == want or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def test_sighup_reloads_the_key_file(start_server_fn, tmp_path):
    old_key = "old-" + secrets.token_hex(16)
    new_key = "new-" + secrets.token_hex(16)
    repo = start_server_fn.repo("hup")
    add_models(repo)
    path = tmp_path / "keys.txt"
    write_keys(path, "%s infer\n" % old_key)
    client = start_server_fn(repo, args=["--api-keys", str(path)], name="batchd-hup")
    port = client.server.port
    check_echo(wait_status(client, old_key, 200, 0))
    check_401(wait_status(client, new_key, 401, 0), invalid_token=True)

    async def main():
        async with ws_connect(port, "/v2/models/echo/stream", extra_headers=bearer(old_key)) as ws:
            await ws_roundtrip(ws, "before")
            # A bad file keeps the old keys, and says why (naming the line, not the key).
            write_keys(path, "%s admin\nbroken-line-without-a-role\n" % new_key)
            client.server.signal(signal.SIGHUP)
            line = client.server.wait_log(r"reload failed", timeout=10)
            assert line is not None, client.server.log_tail()
            assert "line 2" in line and str(path) in line, line
            await ws_roundtrip(ws, "kept")
            check_echo(wait_status(client, old_key, 200, 0))
            check_401(wait_status(client, new_key, 401, 0), invalid_token=True)

            write_keys(path, "# rotated\n%s admin\n" % new_key)
            client.server.signal(signal.SIGHUP)
            check_echo(wait_status(client, new_key, 200))
            check_401(wait_status(client, old_key, 401), invalid_token=True)
            # The new key has the admin role.
            r = requests.post(client.url("/v2/repository/models/spare/load"),
                              headers=bearer(new_key), timeout=HTTP_TIMEOUT_S)
            assert r.status_code == 400, r.text  # admitted; the repository refuses (mode none)
            # The socket opened with the removed key: 401 for its next requests (each of those
            # sent before the close came; the second one went unanswered), then 1008.
            from websockets.frames import Frame, Opcode
            ws.transport.write(b"".join(  # both in one write: the server reads them together
                Frame(Opcode.TEXT, ws_req(rid).encode()).serialize(mask=True)
                for rid in ("after", "after2")))
            for rid in ("after", "after2"):
                reply = json.loads(await ws_recv(ws))
                assert reply == {"id": rid, "error": reply["error"], "status": 401}, reply
            try:
                extra = await asyncio.wait_for(ws.recv(), STEP_S)
                pytest.fail("a reply after the revocation: %r" % extra)
            except ConnectionClosed:
                pass
            assert ws.close_code == 1008, ws.close_code
        # A socket opened with the new key works.
        async with ws_connect(port, "/v2/stream?api_key=" + new_key) as ws:
            await ws_roundtrip(ws, "new", model="echo")
    run(main())
    log = client.server.log()
    assert client.server.wait_log(r"api keys reloaded .*keys=1") is not None, log
    for key in (old_key, new_key):
        assert key not in log
    client.server.stop()


def test_a_fifo_in_place_of_the_key_file_fails_the_reload_and_blocks_nothing(start_server_fn,
                                                                              tmp_path):
    """A key file swapped for a FIFO nobody writes to: the reload fails at once, saying why
    (it waited for ever, and every later SIGHUP was dropped behind it), the old keys stay, and
    the next good file is taken."""
    a, b = "a-" + secrets.token_hex(16), "b-" + secrets.token_hex(16)
    repo = start_server_fn.repo("hup-fifo")
    add_models(repo)
    path = tmp_path / "keys.txt"
    write_keys(path, "%s infer\n" % a)
    client = start_server_fn(repo, args=["--api-keys", str(path)], name="batchd-hup-fifo")
    check_echo(wait_status(client, a, 200, 0))
    os.unlink(path)
    os.mkfifo(path)
    client.server.signal(signal.SIGHUP)
    line = client.server.wait_log(r"reload failed", timeout=10)
    assert line is not None and "is not a regular file" in line, client.server.log_tail()
    check_echo(wait_status(client, a, 200, 0))
    os.unlink(path)
    write_keys(path, "%s infer\n" % b)
    client.server.signal(signal.SIGHUP)
    check_echo(wait_status(client, b, 200))
    check_401(wait_status(client, a, 401), invalid_token=True)
    client.server.stop()


def test_sighup_burst_ends_with_the_last_file_and_a_clean_stop(start_server_fn, tmp_path):
    """The file is read off the loop, one reload at a time: SIGHUPs sent faster than reloads
    finish still end with the file as last written, and a SIGHUP just before SIGTERM does not
    keep the server from exiting 0."""
    keys = ["k%d-%s" % (i, secrets.token_hex(12)) for i in range(12)]
    repo = start_server_fn.repo("hup-burst")
    add_models(repo)
    path = tmp_path / "keys.txt"
    write_keys(path, "%s infer\n" % keys[0])
    client = start_server_fn(repo, args=["--api-keys", str(path)], name="batchd-hup-burst")
    check_echo(wait_status(client, keys[0], 200, 0))
    for k in keys[1:]:
        write_keys(path, "%s infer\n" % k)
        client.server.signal(signal.SIGHUP)
    check_echo(wait_status(client, keys[-1], 200))
    for k in keys[:-1]:
        check_401(wait_status(client, k, 401, 0), invalid_token=True)
    client.server.signal(signal.SIGHUP)
    client.server.stop()


def test_sighup_during_the_drain_is_ignored(start_server_fn, tmp_path):
    """Once SIGTERM came, a SIGHUP starts no reload (its thread would outlive the drain): it
    is logged as ignored, the request in flight is answered and the exit code is 0."""
    key = "drain-" + secrets.token_hex(16)
    repo = start_server_fn.repo("hup-drain")
    repo.add_sim("slow", [("INPUT0", "FP32", [2])], max_batch_size=1, latency_us=800000)
    path = tmp_path / "keys.txt"
    write_keys(path, "%s infer\n" % key)
    client = start_server_fn(repo, args=["--api-keys", str(path)], name="batchd-hup-drain")
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("r", requests.post(
        client.url("/v2/models/slow/infer"), json=BODY, headers=bearer(key),
        timeout=HTTP_TIMEOUT_S)))
    t.start()
    time.sleep(0.3)
    client.server.signal(signal.SIGTERM)
    assert client.server.wait_log(r"shutdown signal") is not None
    client.server.signal(signal.SIGHUP)
    assert client.server.wait_log(r"reload signal=1 ignored: shutting down") is not None
    client.server.signal(signal.SIGHUP)
    t.join(30)
    assert got["r"].status_code == 200, got["r"].text
    client.server.stop(send_signal=False)
    assert "api keys reload" not in client.server.log()


def test_sighup_without_keys_does_not_stop_the_server(start_server_fn):
    repo = start_server_fn.repo("hup-nokeys")
    add_models(repo)
    client = start_server_fn(repo)
    client.server.signal(signal.SIGHUP)
    assert client.server.wait_log(r"nothing to reload") is not None, client.server.log_tail()
    check_echo(client.post("/v2/models/echo/infer", json=BODY))
    client.server.stop()


def test_environment_variable(start_server_fn, tmp_path, monkeypatch):
    key = "env-" + secrets.token_hex(16)
    path = tmp_path / "env-keys.txt"
    write_keys(path, "%s infer\n" % key)
    monkeypatch.setenv("BATCHD_API_KEYS", str(path))
    monkeypatch.setenv("BATCHD_METRICS_AUTH", "true")
    repo = start_server_fn.repo("env")
    add_models(repo)
    client = start_server_fn(repo)
    check_401(client.post("/v2/models/echo/infer", json=BODY))
    check_401(client.get("/metrics"))
    check_echo(client.post("/v2/models/echo/infer", json=BODY, headers=bearer(key)))


# ---- bad files at start ---------------------------------------------------------------------

def run_serve(repo_path, args):
    """Start the binary expecting it to fail: (exit code, output)."""
    if not os.path.isfile(BATCHD_BIN):
        pytest.skip("batchd binary not found at %s" % BATCHD_BIN)
    cmd = [BATCHD_BIN, "serve", "--model-repository", repo_path, "--http-port", "0",
           "--host", "127.0.0.1"] + list(args)
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                           env=sanitizer_env())
    except subprocess.TimeoutExpired:
        pytest.fail("batchd started (or hung) with %s" % args)
    return r.returncode, (r.stdout + r.stderr).decode("utf-8", "replace")


@pytest.mark.parametrize("text,line,what", [
    ("# keys\n\nsecret-aaaa-1111 infer\nsecret-bbbb-2222 reader\n", 4, "role"),
    ("secret-aaaa-1111 infer\nsecret-bbbb-2222\n", 2, "role"),
    ("secret-aaaa-1111 infer\nsecret-aaaa-1111 admin\n", 2, "repeats"),
    ("secret-aaaa-1111 infer extra\n", 1, "field"),
    ("admin secret-aaaa-1111\n", 1, "role"),
])
def test_bad_key_file_fails_the_start(tmp_path, text, line, what):
    repo = tmp_path / "repo"
    repo.mkdir()
    path = tmp_path / "bad-keys.txt"
    path.write_text(text)
    rc, out = run_serve(str(repo), ["--api-keys", str(path)])
    assert rc != 0, out
    assert str(path) in out and "line %d" % line in out and what in out, out
    assert "secret-" not in out, "a key is in the output: %s" % out
    assert "http listening" not in out


def test_missing_or_empty_key_file_fails_the_start(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    missing = tmp_path / "missing.txt"
    rc, out = run_serve(str(repo), ["--api-keys", str(missing)])
    assert rc != 0 and str(missing) in out, out
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n\n")
    rc, out = run_serve(str(repo), ["--api-keys", str(empty)])
    assert rc != 0 and str(empty) in out and "no keys" in out, out


def test_metrics_auth_needs_keys(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    rc, out = run_serve(str(repo), ["--metrics-auth"])
    assert rc != 0 and "--metrics-auth" in out and "--api-keys" in out, out


# ---- web pages: the Origin check ------------------------------------------------------------

ORIGIN_REFUSED = ("a request from the web page origin '%s' is refused: it is not this server's "
                  "own; start batchd with --allow-origin %s to accept requests from its pages")
NULL_REFUSED = ("a request from a web page without an origin of its own (Origin: null: a local "
                "file or a sandboxed frame) is refused")


def _page_post(client, origin, x=1.0):
    """What a web page can send without a CORS preflight: a text/plain POST."""
    headers = {"Content-Type": "text/plain"}
    if origin is not None:
        headers["Origin"] = origin
    body = json.dumps({"inputs": [tensor("INPUT0", "FP32", [1, 2], [x, 2.0])]})
    return requests.post(client.url("/v2/models/m/infer"), data=body, headers=headers,
                         timeout=HTTP_TIMEOUT_S)


def test_requests_from_other_web_pages_are_refused(start_server_fn):
    """A browser sends Origin with a page's requests: one from another site than the server's
    own is refused (403) before it is routed, so a page a browser on this machine opens cannot
    run inferences, load or unload models, or open a WebSocket on a batchd bound to
    127.0.0.1. Clients that are not browsers send no Origin and are not affected."""
    repo = start_server_fn.repo()
    repo.add_sim("m", [("INPUT0", "FP32", [2])], max_batch_size=4)
    client = start_server_fn(repo, ["--model-control", "explicit"])
    port = client.server.port
    for origin in ("http://evil.example", "http://127.0.0.1:%d" % (port + 1),
                   "https://localhost:%d" % port):
        r = _page_post(client, origin)
        assert error_message(r, 403) == ORIGIN_REFUSED % (origin, origin)
        r = requests.get(client.url("/v2/models/m"), headers={"Origin": origin},
                         timeout=HTTP_TIMEOUT_S)  # no body: judged after h2o parsed it
        assert error_message(r, 403) == ORIGIN_REFUSED % (origin, origin)
    # A local file or a sandboxed frame (any site can make one): nothing to allow.
    assert error_message(_page_post(client, "null"), 403) == NULL_REFUSED
    # Not an origin a browser sends: refused without being shown, in valid JSON, with a body
    # (judged from the head) or without.
    for origin in ('http://a"b.example', "http://" + "x" * 300, "http://a\\b"):
        want = ("a request with an Origin header that is not an origin (scheme://host[:port]) "
                "is refused")
        assert error_message(_page_post(client, origin), 403) == want
        r = requests.get(client.url("/v2/models/m"), headers={"Origin": origin},
                         timeout=HTTP_TIMEOUT_S)
        assert error_message(r, 403) == want
    r = requests.post(client.url("/v2/repository/models/m/unload"), data="",
                      headers={"Origin": "http://evil.example", "Content-Type": "text/plain"},
                      timeout=HTTP_TIMEOUT_S)
    error_message(r, 403)
    assert client.get("/v2/models/m/ready").status_code == 200  # not unloaded
    assert client.metric("batchd_inference_requests_total", model="m", version="1",
                         protocol="http", outcome="success") == 0  # nothing ran
    # No Origin, or the server's own (scheme://Host, any letter case): served.
    for origin in (None, "http://127.0.0.1:%d" % port, "HTTP://127.0.0.1:%d" % port):
        r = _page_post(client, origin, 3.0)
        assert r.status_code == 200, (origin, r.text)
        assert r.json()["outputs"][0]["data"] == [3.0, 2.0]
    # Two Origin fields (RFC 6454 7.3: a browser sends one): refused whichever comes first;
    # only the first was judged.
    # Judged from the head for a request with a body, after h2o parsed it for one without.
    own = "http://127.0.0.1:%d" % port
    body = json.dumps({"inputs": [tensor("INPUT0", "FP32", [1, 2], [1.0, 2.0])]})
    for first, second in ((own, "http://evil.example"), ("http://evil.example", own), (own, own)):
        for start, rest in (("GET /v2/models/m", ""),
                            ("POST /v2/models/m/infer", "Content-Type: text/plain\r\n"
                             "Content-Length: %d\r\n" % len(body))):
            data = raw_exchange(port, ("%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nOrigin: %s\r\n"
                                       "Origin: %s\r\n%sConnection: close\r\n\r\n%s"
                                       % (start, port, first, second, rest,
                                          body if rest else "")).encode())
            head, got = data.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 403 "), (first, second, start, data)
            assert json.loads(got) == {"error": "a request with more than one Origin header is "
                                                "refused (a browser sends one)"}, got
    assert client.metric("batchd_inference_requests_total", model="m", version="1",
                         protocol="http", outcome="success") == 3  # the three served above

    async def ws():
        with pytest.raises(InvalidStatusCode) as e:
            async with ws_connect(port, "/v2/stream", origin="http://evil.example"):
                pass
        assert e.value.status_code == 403
        async with ws_connect(port, "/v2/stream", origin="http://127.0.0.1:%d" % port) as s:
            await s.send(json.dumps({"model_name": "m", "inputs": [
                tensor("INPUT0", "FP32", [1, 2], [5.0, 6.0])]}))
            reply = json.loads(await ws_recv(s))
            assert reply["outputs"][0]["data"] == [5.0, 6.0], reply

    run(ws())


REBOUND = ("a request from the web page origin '%s' is refused: its host is a name, not an "
           "address or localhost, and any site can point a name here (DNS rebinding); start "
           "batchd with --allow-origin %s to accept requests from its pages")


def test_a_page_whose_host_is_a_name_is_not_taken_for_the_servers_own(start_server_fn):
    """DNS rebinding: a site points its own name at 127.0.0.1 while a browser holds its page,
    whose requests then carry Origin and Host with that name, as if the page were the
    server's. A page is taken for the server's own only where Host is an address (IPv4, an
    IPv6 literal) or localhost; under any other name it must be listed in --allow-origin."""
    repo = start_server_fn.repo()
    repo.add_sim("m", [("INPUT0", "FP32", [2])], max_batch_size=4)
    client = start_server_fn(repo, ["--model-control", "explicit"])
    port = client.server.port
    body = json.dumps({"inputs": [tensor("INPUT0", "FP32", [1, 2], [1.0, 2.0])]})

    def page(host, method="POST"):
        headers = {"Host": host, "Origin": "http://" + host, "Content-Type": "text/plain"}
        if method == "POST":  # a body: judged from the head
            return requests.post(client.url("/v2/models/m/infer"), data=body, headers=headers,
                                 timeout=HTTP_TIMEOUT_S)
        return requests.get(client.url("/v2/models/m"), headers=headers, timeout=HTTP_TIMEOUT_S)

    for method in ("POST", "GET"):
        for host in ("rebind.example:%d" % port, "127.0.0.1.nip.io:%d" % port, "evil"):
            origin = "http://" + host
            assert error_message(page(host, method), 403) == REBOUND % (origin, origin), host
        for host in ("localhost:%d" % port, "LocalHost.:%d" % port, "app.localhost:%d" % port,
                     "a" * 200 + ".localhost:%d" % port,
                     "127.0.0.1:%d" % port, "[::1]:%d" % port, "127.0.0.1"):
            r = page(host, method)
            assert r.status_code == 200, (host, r.text)
            assert "Access-Control-Allow-Origin" not in r.headers
    r = requests.post(client.url("/v2/repository/models/m/unload"), data="", timeout=HTTP_TIMEOUT_S,
                      headers={"Host": "rebind.example:%d" % port, "Content-Type": "text/plain",
                               "Origin": "http://rebind.example:%d" % port})
    error_message(r, 403)
    assert client.get("/v2/models/m/ready").status_code == 200  # not unloaded
    # A WebSocket handshake from such a page: 403 too.
    with socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT_S) as s:
        s.sendall(("GET /v2/stream HTTP/1.1\r\nHost: rebind.example:%d\r\n"
                   "Origin: http://rebind.example:%d\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n" % (port, port)).encode())
        assert s.recv(64).startswith(b"HTTP/1.1 403 "), "expected 403"
    # Listed, the name is the operator's choice: served, as the server's own (no CORS).
    listed = start_server_fn(repo, ["--allow-origin", "http://rebind.example:%d" % port])
    host = "rebind.example:%d" % port
    r = requests.post(listed.url("/v2/models/m/infer"), data=body, timeout=HTTP_TIMEOUT_S,
                      headers={"Host": host, "Origin": "http://" + host})
    assert r.status_code == 200, r.text


def test_host_names_are_the_way_in_from_other_machines(start_server_fn):
    """The rebinding check is for requests from this machine (in on loopback, or from the very
    address they reached: a browser here reaching this machine's LAN or docker0 address), the
    way in that a site cannot reach itself. From another machine host names are how clients
    reach the server, and some clients that are not browsers send Origin with the Host they used
    (websocket-client does by default): a page under that name is the server's own there. A
    client bound to 127.0.0.1 that connects to the LAN address stands in for another machine:
    its address is not the one it reached."""
    import http.client
    ip = non_loopback_address()
    if ip is None:
        pytest.skip("this machine has no address but loopback")
    repo = start_server_fn.repo()
    repo.add_sim("m", [("INPUT0", "FP32", [2])], max_batch_size=4)
    client = start_server_fn(repo, ["--host", "0.0.0.0"])
    port = client.server.port
    name = "batchd.example:%d" % port
    origin = "http://" + name
    body = json.dumps({"inputs": [tensor("INPUT0", "FP32", [1, 2], [1.0, 2.0])]})
    headers = {"Host": name, "Origin": origin, "Content-Type": "text/plain"}

    def ask(addr, source):
        """(POST infer status, GET metadata status, the 403's sentence or None)"""
        out, why = [], None
        for method, path, data in (("POST", "/v2/models/m/infer", body),
                                   ("GET", "/v2/models/m", None)):
            conn = http.client.HTTPConnection(addr, port, timeout=HTTP_TIMEOUT_S,
                                              source_address=source)
            conn.request(method, path, body=data, headers=headers)
            r = conn.getresponse()
            text = r.read()
            conn.close()
            out.append(r.status)
            if r.status == 403:
                why = json.loads(text)["error"]
        return out[0], out[1], why

    assert ask(ip, ("127.0.0.1", 0)) == (200, 200, None)  # from "another machine"
    for addr, source in ((ip, None), ("127.0.0.1", None)):  # from this machine
        assert ask(addr, source) == (403, 403, REBOUND % (origin, origin)), addr


def test_allow_origin_lists_the_pages_that_may_call(start_server_fn):
    repo = start_server_fn.repo()
    repo.add_sim("m", [("INPUT0", "FP32", [2])], max_batch_size=4)
    client = start_server_fn(repo, ["--allow-origin",
                                    "http://dash.local:3000, HTTP://Other.Example"])
    for origin in ("http://dash.local:3000", "http://other.example"):
        r = _page_post(client, origin)
        assert r.status_code == 200, (origin, r.text)
    for origin in ("http://dash.local:3001", "http://dash.local"):
        assert error_message(_page_post(client, origin), 403) == ORIGIN_REFUSED % (origin, origin)
    anyone = start_server_fn(repo, ["--allow-origin", "*"])
    assert _page_post(anyone, "http://evil.example").status_code == 200
    # Not even * lets in a page without an origin of its own, or what no browser sends.
    assert error_message(_page_post(anyone, "null"), 403) == NULL_REFUSED
    for origin in ('http://a"b.example', "http://" + "x" * 300):
        r = requests.get(anyone.url("/v2/models/m"), headers={"Origin": origin},
                         timeout=HTTP_TIMEOUT_S)
        assert error_message(r, 403) == ("a request with an Origin header that is not an origin "
                                         "(scheme://host[:port]) is refused")


@pytest.mark.parametrize("value,bad", [("http://dash.local:3000/", "http://dash.local:3000/"),
                                       ("http://a.example,,http://b.example", ""),
                                       ("http://a.example, ", ""), ("http://a.example?x", None),
                                       ("http://u:p@a.example", None), ("null", None),
                                       ("dash.local:3000", None)])
def test_allow_origin_takes_only_origins(tmp_path, value, bad):
    r = subprocess.run([BATCHD_BIN, "serve", "--model-repository", str(tmp_path),
                        "--allow-origin", value], capture_output=True, text=True, timeout=30,
                       env=sanitizer_env())
    assert r.returncode == 2, r.stderr
    bad = value if bad is None else bad
    assert r.stderr == ("batchd serve: --allow-origin: '%s' is not an origin; expected "
                        "scheme://host[:port] (as a browser sends it: no path, no trailing "
                        "'/'), or * for any\n" % bad), r.stderr


def test_a_refused_page_costs_nobody_a_token_or_a_401(start_server_fn, tmp_path):
    """Refused for its Origin from the head, before API keys and rate limits: a page's
    requests take no token from the address it shares with the machine's own clients, and get
    403 whether or not they have a body."""
    repo = start_server_fn.repo()
    repo.add_sim("m", [("INPUT0", "FP32", [2])], max_batch_size=4)
    client = start_server_fn(repo, ["--rate-limit", "0.01:2"])
    for _ in range(3):
        error_message(_page_post(client, "http://evil.example"), 403)
    for _ in range(2):
        assert _page_post(client, None).status_code == 200
    error_message(_page_post(client, None), 429)
    key = "k-" + secrets.token_hex(16)
    path = tmp_path / "keys.txt"
    write_keys(path, "%s admin\n" % key)
    keyed = start_server_fn(repo, ["--api-keys", str(path)])
    want = ORIGIN_REFUSED % ("http://evil.example", "http://evil.example")
    assert error_message(_page_post(keyed, "http://evil.example"), 403) == want
    r = requests.get(keyed.url("/v2/models/m"), headers={"Origin": "http://evil.example"},
                     timeout=HTTP_TIMEOUT_S)
    assert error_message(r, 403) == want


def _listing_server(start_server_fn, tmp_path, origins, *args):
    """A server with the sim model 'm' [2], one admin key (returned) and --allow-origin
    `origins`."""
    key = "k-" + secrets.token_hex(16)
    path = tmp_path / "keys.txt"
    write_keys(path, "%s admin\n" % key)
    repo = start_server_fn.repo()
    repo.add_sim("m", [("INPUT0", "FP32", [2])], max_batch_size=4)
    return start_server_fn(repo, ["--allow-origin", origins, "--api-keys", str(path)] +
                           list(args)), key


def test_a_listed_page_can_read_the_replies(start_server_fn, tmp_path):
    """CORS for the pages --allow-origin lists: the browser's preflight (OPTIONS with
    Access-Control-Request-Method, without the page's key) gets 204 with what the page may
    send, and every reply to the page, errors included, names its origin so that the browser
    hands it over. Requests without Origin, or from the server's own pages, get no CORS
    headers."""
    page = "http://dash.local:3000"
    client, key = _listing_server(start_server_fn, tmp_path, page)
    r = requests.options(client.url("/v2/models/m/infer"), timeout=HTTP_TIMEOUT_S, headers={
        "Origin": page, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status_code == 204, r.text
    assert r.headers["Access-Control-Allow-Origin"] == page
    assert r.headers["Access-Control-Allow-Methods"] == "GET, HEAD, POST"
    assert r.headers["Access-Control-Allow-Headers"] == (
        "Authorization, Content-Type, Content-Encoding, Accept-Encoding, "
        "Inference-Header-Content-Length")
    assert r.headers["Access-Control-Max-Age"] == "600"
    assert r.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Private-Network" not in r.headers
    # Chrome's preflight before a public site's page reaches a private address.
    r = requests.options(client.url("/v2/models/m/infer"), timeout=HTTP_TIMEOUT_S, headers={
        "Origin": page, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Private-Network": "true"})
    assert r.status_code == 204 and r.headers["Access-Control-Allow-Private-Network"] == "true"
    body = {"inputs": [tensor("INPUT0", "FP32", [1, 2], [1.0, 2.0])]}
    auth = {"Authorization": "Bearer " + key, "Origin": page}
    r = requests.post(client.url("/v2/models/m/infer"), json=body, headers=auth,
                      timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    assert r.headers["Access-Control-Allow-Origin"] == page
    assert r.headers["Access-Control-Expose-Headers"] == (
        "Inference-Header-Content-Length, Retry-After, WWW-Authenticate")
    assert "Origin" in r.headers["Vary"]
    r = requests.post(client.url("/v2/models/m/infer"), data="{", headers=auth,
                      timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 400 and r.headers["Access-Control-Allow-Origin"] == page
    r = requests.get(client.url("/v2/models/m"), headers={"Origin": page},
                     timeout=HTTP_TIMEOUT_S)  # no key: 401, readable by the page
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == page
    own = "http://127.0.0.1:%d" % client.server.port
    for headers in ({"Authorization": "Bearer " + key},
                    {"Authorization": "Bearer " + key, "Origin": own}):
        r = requests.post(client.url("/v2/models/m/infer"), json=body, headers=headers,
                          timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, r.text
        assert "Access-Control-Allow-Origin" not in r.headers
        assert r.headers["Vary"] == "Origin"  # what a cache keeps depends on Origin
    # Not a preflight (no Access-Control-Request-Method): as any OPTIONS, here without a key.
    r = requests.options(client.url("/v2/models/m/infer"), headers={"Origin": page},
                         timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 401, r.status_code


def test_a_listed_page_can_read_the_refusals_from_the_head(start_server_fn, tmp_path):
    """A request with a body is refused from its head (401 without a key, 413 past
    --max-body-bytes, 429 past --rate-limit) before h2o routes it: those replies carry the
    same CORS headers as routed ones for a listed page, so that its browser hands the page the
    status and the sentence instead of a network error. Another site's page gets its 403 with
    Vary: Origin and no CORS headers."""
    page = "http://dash.local:3000"
    long_page = "https://" + "l" * 240 + ".example"  # a host name may take 253 bytes
    client, key = _listing_server(start_server_fn, tmp_path, page + "," + long_page,
                                  "--max-body-bytes", "4096", "--rate-limit", "0.01:1")
    body = json.dumps({"inputs": [tensor("INPUT0", "FP32", [1, 2], [1.0, 2.0])]})
    url = client.url("/v2/models/m/infer")

    def post(data, **headers):
        headers.setdefault("Content-Type", "application/json")
        return requests.post(url, data=data, headers=headers, timeout=HTTP_TIMEOUT_S)

    def cors(r, status):
        assert r.status_code == status, (r.status_code, r.text)
        assert r.headers["Access-Control-Allow-Origin"] == page
        assert r.headers["Access-Control-Expose-Headers"] == (
            "Inference-Header-Content-Length, Retry-After, WWW-Authenticate")
        assert r.headers["Vary"] == "Origin"
        assert r.headers["Server"] == "batchd"  # as every other reply
        return r.json()["error"]

    assert cors(post(body, Origin=page), 401) == (
        "this endpoint needs an API key: send 'Authorization: Bearer <key>'")
    assert post(body, Origin=page).headers["WWW-Authenticate"] == 'Bearer realm="batchd"'
    for r in (post(body, Origin=long_page),  # from the head, and routed
              requests.get(client.url("/v2/models/m"), headers={"Origin": long_page},
                           timeout=HTTP_TIMEOUT_S)):
        assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == long_page
    auth = "Bearer " + key
    msg = cors(post(b"x" * 5000, Origin=page, Authorization=auth), 413)
    assert "4096" in msg, msg
    assert post(body, Origin=page, Authorization=auth).status_code == 200
    r = post(body, Origin=page, Authorization=auth)
    cors(r, 429)
    assert int(r.headers["Retry-After"]) >= 1
    r = post(body, Origin="http://evil.example", Authorization=auth)
    assert r.status_code == 403 and r.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Origin" not in r.headers
    r = post(body, Authorization=auth)  # no Origin: no CORS headers, but still Vary
    assert r.status_code == 429 and r.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Origin" not in r.headers
