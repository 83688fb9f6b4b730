"""Rate limits (batchd issue 12): `--rate-limit RPS[:BURST]` (env BATCHD_RATE_LIMIT) gives each
caller (its API key with --api-keys, else its client address) a token bucket of BURST tokens
(default RPS), full at first, refilled at RPS tokens per second. Each infer request, over HTTP
or WebSocket, takes a token; without one it is refused: HTTP 429 with `Retry-After` (whole
seconds, rounded up, at least 1) and the JSON error body; on a WebSocket the protocol's error
frame {"id", "error", "status": 429} and the socket stays open. Refusals are counted in
batchd_rate_limited_total{protocol} (and not in batchd_inference_requests_total: they never
reach a model). Only infer requests are limited. Over HTTP the 429 is decided from the request's
head: it comes before the body, which is then read and dropped, and the connection closes.

Timing: the machine may be a noisy 2-core VM, so no assertion depends on how fast requests
go. A full bucket lets the first BURST requests through whatever the timing; how many pass
after that is bounded by the time taken (at most BURST + RPS x elapsed + 1); "exactly the
6th" is asserted when the six took less than 1/RPS. Exact counts (error frames, the metric)
come from `slow`, whose rate (one token per 100 s) cannot refill during a test.

Servers: `keyed` (--rate-limit 5:5 with API keys), `by_address` (--rate-limit 5:5, no keys),
`slow` (--rate-limit 0.01:3 with API keys).
"""
import asyncio
import http.client
import json
import math
import os
import secrets
import socket
import struct
import subprocess
import time

import pytest
import requests
import websockets

from ws_util import run, ws_connect, ws_recv
from conftest import (BATCHD_BIN, HTTP_TIMEOUT_S, error_message, metric_value, read_all,
                      sanitizer_env, tensor)

STEP_S = 15.0
RPS, BURST = 5, 5
KEY_A = "ka-" + secrets.token_hex(16)
KEY_B = "kb-" + secrets.token_hex(16)
KEY_WS = "kw-" + secrets.token_hex(16)
KEY_SLOW = "ks-" + secrets.token_hex(16)
KEY_SLOW2 = "kt-" + secrets.token_hex(16)

X = [0.25, 4.0]
BODY = {"inputs": [tensor("INPUT0", "FP32", [1, 2], X)]}


def bearer(key):
    return {"Authorization": "Bearer " + key}


def add_models(repo):
    repo.add_sim("echo", [("INPUT0", "FP32", [2])], max_batch_size=8)


def keys_file(tmp_path_factory, keys):
    path = tmp_path_factory.mktemp("rl-keys") / "keys.txt"
    path.write_text("".join("%s infer\n" % k for k in keys))
    return str(path)


@pytest.fixture(scope="module")
def keyed(start_server, tmp_path_factory):
    repo = start_server.repo("rl-keyed")
    add_models(repo)
    path = keys_file(tmp_path_factory, [KEY_A, KEY_B, KEY_WS])
    client = start_server(repo, args=["--api-keys", path, "--rate-limit", "%d:%d" % (RPS, BURST)],
                          name="batchd-rl-keyed")
    client.port = client.server.port
    return client


@pytest.fixture(scope="module")
def by_address(start_server):
    repo = start_server.repo("rl-addr")
    add_models(repo)
    client = start_server(repo, args=["--rate-limit", "%d:%d" % (RPS, BURST)], name="batchd-rl-addr")
    client.port = client.server.port
    return client


@pytest.fixture(scope="module")
def slow(start_server, tmp_path_factory):
    repo = start_server.repo("rl-slow")
    add_models(repo)
    path = keys_file(tmp_path_factory, [KEY_SLOW, KEY_SLOW2])
    client = start_server(repo, args=["--api-keys", path, "--rate-limit", "0.01:3"],
                          name="batchd-rl-slow")
    client.port = client.server.port
    return client


def check_ok(r):
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.json()["outputs"][0]["data"] == X, r.text


def check_429(r, max_retry=None):
    msg = error_message(r, 429)
    ra = r.headers.get("Retry-After")
    assert ra is not None and ra.isdigit(), "Retry-After %r" % ra
    assert int(ra) >= 1, ra
    if max_retry is not None:
        assert int(ra) <= max_retry, ra
    return msg, int(ra)


def wait_full(seconds=BURST / RPS):
    """Long enough for any bucket to refill completely, with a margin."""
    time.sleep(seconds * 1.3 + 0.1)


def until_refused(send, limit=60):
    """Send back to back until the first 429: (responses, seconds from the first send to the
    429's answer)."""
    t0 = time.monotonic()
    out = []
    for _ in range(limit):
        r = send()
        out.append(r)
        if r.status_code == 429:
            break
    return out, time.monotonic() - t0


def check_burst(out, elapsed):
    """The first BURST pass whatever the timing; the run ends with a 429; no more passed than
    the bucket could have refilled in the time taken."""
    codes = [r.status_code for r in out]
    assert codes[-1] == 429, codes
    for r in out[:-1]:
        check_ok(r)
    passed = len(out) - 1
    assert passed >= BURST, codes
    assert passed <= BURST + RPS * elapsed + 1, (codes, elapsed)
    if elapsed < 1.0 / RPS:
        assert passed == BURST, (codes, elapsed)  # exactly the 6th
    return check_429(out[-1], max_retry=math.ceil(1.0 / RPS))


# ---- HTTP ----------------------------------------------------------------------------------

def test_sixth_back_to_back_infer_is_429_with_retry_after(keyed):
    s = requests.Session()
    wait_full()
    out, elapsed = until_refused(lambda: s.post(keyed.url("/v2/models/echo/infer"), json=BODY,
                                                headers=bearer(KEY_A), timeout=HTTP_TIMEOUT_S))
    msg, ra = check_burst(out, elapsed)
    assert ra == 1, ra  # 1/RPS = 0.2 s, rounded up
    assert "rate limit" in msg, msg
    assert KEY_A not in msg


def test_one_more_after_one_refill_interval(keyed):
    s = requests.Session()
    wait_full()
    out, elapsed = until_refused(lambda: s.post(keyed.url("/v2/models/echo/infer"), json=BODY,
                                                headers=bearer(KEY_A), timeout=HTTP_TIMEOUT_S))
    check_burst(out, elapsed)
    time.sleep(1.0 / RPS * 1.5)  # ~1/RPS with a margin: one token back, at most 1.5 + drift
    check_ok(s.post(keyed.url("/v2/models/echo/infer"), json=BODY, headers=bearer(KEY_A),
                    timeout=HTTP_TIMEOUT_S))


def test_separate_keys_have_separate_buckets(keyed):
    s = requests.Session()
    wait_full()
    out, elapsed = until_refused(lambda: s.post(keyed.url("/v2/models/echo/infer"), json=BODY,
                                                headers=bearer(KEY_A), timeout=HTTP_TIMEOUT_S))
    check_burst(out, elapsed)
    # B's bucket is untouched by A's: a whole burst passes at once.
    for _ in range(BURST):
        check_ok(s.post(keyed.url("/v2/models/echo/infer"), json=BODY, headers=bearer(KEY_B),
                        timeout=HTTP_TIMEOUT_S))


def test_only_infer_is_limited(keyed):
    s = requests.Session()
    wait_full()
    out, elapsed = until_refused(lambda: s.post(keyed.url("/v2/models/echo/infer"), json=BODY,
                                                headers=bearer(KEY_A), timeout=HTTP_TIMEOUT_S))
    check_burst(out, elapsed)
    for path in ("/v2", "/v2/models/echo", "/v2/models/echo/ready", "/v2/health/ready",
                 "/v2/models/echo/stats", "/metrics") * 3:
        r = s.get(keyed.url(path), headers=bearer(KEY_A), timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, (path, r.status_code, r.text)


def test_refusals_are_counted_exactly(slow):
    """0.01 tokens per second: nothing refills during the test, so the counts are exact."""
    s = requests.Session()
    before = slow.metrics()
    rl0 = metric_value(before, "batchd_rate_limited_total", protocol="http")
    ok0 = metric_value(before, "batchd_inference_requests_total", model="echo", protocol="http",
                       outcome="success")
    all0 = metric_value(before, "batchd_inference_requests_total", model="echo")
    assert rl0 == 0 and ok0 == 0, (rl0, ok0)
    codes = []
    for _ in range(7):
        r = s.post(slow.url("/v2/models/echo/infer"), json=BODY, headers=bearer(KEY_SLOW),
                   timeout=HTTP_TIMEOUT_S)
        codes.append(r.status_code)
        if r.status_code == 429:
            # (1 - tokens) / 0.01 s, rounded up: 100 s less what refilled (well under 1 s).
            _, ra = check_429(r)
            assert 99 <= ra <= 100, ra
        else:
            check_ok(r)
    assert codes == [200] * 3 + [429] * 4, codes
    after = slow.metrics()
    assert metric_value(after, "batchd_rate_limited_total", protocol="http") == rl0 + 4
    assert metric_value(after, "batchd_rate_limited_total", protocol="websocket") == 0
    assert metric_value(after, "batchd_inference_requests_total", model="echo", protocol="http",
                        outcome="success") == ok0 + 3
    # A refused request never reached the model: no other outcome moved.
    assert metric_value(after, "batchd_inference_requests_total", model="echo") == all0 + 3
    text = slow.metrics_text().text
    assert "# TYPE batchd_rate_limited_total counter" in text


def test_by_client_address_without_keys(by_address):
    s = requests.Session()
    wait_full()
    out, elapsed = until_refused(lambda: s.post(by_address.url("/v2/models/echo/infer"),
                                                json=BODY, timeout=HTTP_TIMEOUT_S))
    msg, _ = check_burst(out, elapsed)
    assert "client address" in msg, msg
    # Another address (127.0.0.2 reaches the 127.0.0.1 listener over loopback) has its own.
    try:
        probe = socket.socket()
        probe.bind(("127.0.0.2", 0))
        probe.close()
    except OSError:
        pytest.skip("cannot bind 127.0.0.2 here")
    body = json.dumps(BODY)
    for _ in range(BURST):
        c = http.client.HTTPConnection("127.0.0.1", by_address.port, timeout=HTTP_TIMEOUT_S,
                                       source_address=("127.0.0.2", 0))
        c.request("POST", "/v2/models/echo/infer", body=body,
                  headers={"Content-Type": "application/json"})
        resp = c.getresponse()
        data = resp.read()
        c.close()
        assert resp.status == 200, (resp.status, data)
        assert json.loads(data)["outputs"][0]["data"] == X


def test_same_address_shares_the_bucket_across_connections(by_address):
    wait_full()
    codes = []
    t0 = time.monotonic()
    for _ in range(BURST + 1):
        r = requests.post(by_address.url("/v2/models/echo/infer"), json=BODY,
                          headers={"Connection": "close"}, timeout=HTTP_TIMEOUT_S)
        codes.append(r.status_code)
    elapsed = time.monotonic() - t0
    assert codes[:BURST] == [200] * BURST, codes
    if elapsed < 1.0 / RPS:
        assert codes[BURST] == 429, (codes, elapsed)


@pytest.fixture(scope="module")
def one_token(start_server):
    """One token per caller address, refilled every 100 s: the second infer is refused."""
    repo = start_server.repo("rl-one")
    add_models(repo)
    client = start_server(repo, args=["--rate-limit", "0.01:1"], name="batchd-rl-one")
    client.port = client.server.port
    return client


def test_429_comes_before_the_body(one_token):
    check_ok(requests.post(one_token.url("/v2/models/echo/infer"), json=BODY,
                           timeout=HTTP_TIMEOUT_S))
    rl0 = metric_value(one_token.metrics(), "batchd_rate_limited_total", protocol="http")
    big = 8 << 20
    with socket.create_connection(("127.0.0.1", one_token.port), timeout=STEP_S) as s:
        s.sendall(b"POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % big)
        s.settimeout(STEP_S)
        data = b""
        while b"}" not in data:  # the head alone gets the whole answer
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        assert lines[0] == "HTTP/1.1 429 Too Many Requests", lines
        hdrs = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        assert hdrs["connection"] == "close", hdrs
        assert 99 <= int(hdrs["retry-after"]) <= 100, hdrs
        assert json.loads(body)["error"].startswith("too many requests"), body
        s.sendall(b"\0" * big)  # read and dropped: no reset while it is sent
        assert read_all(s, STEP_S) == b""
    assert metric_value(one_token.metrics(), "batchd_rate_limited_total",
                        protocol="http") == rl0 + 1
    r = requests.post(one_token.url("/v2/models/echo/infer"), json=BODY, timeout=HTTP_TIMEOUT_S)
    check_429(r)


# ---- WebSocket --------------------------------------------------------------------------------

def ws_req(rid):
    body = {"inputs": [tensor("INPUT0", "FP32", [1, 2], X)]}
    if rid is not None:
        body["id"] = rid
    return json.dumps(body)


def check_ws_ok(reply, rid):
    assert "error" not in reply, reply
    assert reply["id"] == rid, reply
    assert reply["outputs"][0]["data"] == X, reply


def check_ws_429(reply, rid):
    assert set(reply) == {"id", "error", "status"}, reply
    assert reply["status"] == 429, reply
    assert isinstance(reply["error"], str) and reply["error"], reply
    if rid is not None:
        assert reply["id"] == rid, reply
    else:
        assert isinstance(reply["id"], str) and reply["id"], reply


def test_websocket_past_the_limit_gets_429_frames_and_stays_open(keyed):
    wait_full()
    n = 12

    async def main():
        async with ws_connect(keyed.port, "/v2/models/echo/stream?api_key=" + KEY_WS) as ws:
            t0 = time.monotonic()
            for i in range(n):
                await ws.send(ws_req("r%d" % i))
            replies = {}
            for _ in range(n):
                reply = json.loads(await ws_recv(ws))
                assert reply["id"] not in replies, reply
                replies[reply["id"]] = reply
            elapsed = time.monotonic() - t0
            assert set(replies) == {"r%d" % i for i in range(n)}
            ok = [rid for rid, rep in replies.items() if "error" not in rep]
            refused = [rid for rid, rep in replies.items() if "error" in rep]
            for rid in ok:
                check_ws_ok(replies[rid], rid)
            for rid in refused:
                check_ws_429(replies[rid], rid)
            # Requests start in the order sent: the first BURST found the bucket full.
            for i in range(BURST):
                check_ws_ok(replies["r%d" % i], "r%d" % i)
            assert len(ok) <= BURST + RPS * elapsed + 1, (len(ok), elapsed)
            if elapsed < (n - BURST) / RPS:
                assert refused, elapsed
            # The socket is still open, and after ~1/RPS the next request passes.
            await asyncio.sleep(1.0 / RPS * 1.5)
            await ws.send(ws_req("later"))
            check_ws_ok(json.loads(await ws_recv(ws)), "later")
    run(main())


def test_websocket_refusals_exact_ids_and_metric(slow):
    """Bucket of 3, no refill during the test: exactly the first three pass; every refused
    message gets a 429 frame with its own id (text or binary, escaped ids, no id), and the
    metric counts each."""
    rl0 = slow.metric("batchd_rate_limited_total", protocol="websocket")
    http0 = slow.metric("batchd_rate_limited_total", protocol="http")
    odd_id = 'a"b\\c\u00e9\U0001F600'

    async def main():
        async with ws_connect(slow.port, "/v2/models/echo/stream",
                              extra_headers=bearer(KEY_SLOW2)) as ws:
            for i in range(3):
                await ws.send(ws_req("ok%d" % i))
                check_ws_ok(json.loads(await ws_recv(ws)), "ok%d" % i)
            await ws.send(ws_req("no0"))
            check_ws_429(json.loads(await ws_recv(ws)), "no0")
            await ws.send(ws_req(odd_id))
            check_ws_429(json.loads(await ws_recv(ws)), odd_id)
            await ws.send(ws_req(None))
            check_ws_429(json.loads(await ws_recv(ws)), None)
            # A binary request: its id is in the JSON header after the length prefix.
            head = json.dumps({"id": "bin1", "inputs": [
                {"name": "INPUT0", "datatype": "FP32", "shape": [1, 2],
                 "parameters": {"binary_data_size": 8}}]}).encode()
            await ws.send(struct.pack("<I", len(head)) + head + struct.pack("<2f", *X))
            check_ws_429(json.loads(await ws_recv(ws)), "bin1")
            # The id key after other members, with nested values before it.
            await ws.send(json.dumps({"parameters": {"id": "inner", "x": [1, {"id": 2}]},
                                      "inputs": [tensor("INPUT0", "FP32", [1, 2], X)],
                                      "id": "outer"}))
            check_ws_429(json.loads(await ws_recv(ws)), "outer")
            # Ids of any length, and "", are ids too.
            for rid in ("L" * 5000 + "\u20ac", ""):
                await ws.send(ws_req(rid))
                check_ws_429(json.loads(await ws_recv(ws)), rid)
            # Not even JSON: refused before it is read, with an id of the server's.
            await ws.send("not json at all")
            check_ws_429(json.loads(await ws_recv(ws)), None)
            # Still open: a ping is answered.
            pong = await ws.ping()
            await asyncio.wait_for(pong, STEP_S)
    run(main())
    assert slow.metric("batchd_rate_limited_total", protocol="websocket") == rl0 + 8
    assert slow.metric("batchd_rate_limited_total", protocol="http") == http0


def test_websocket_and_http_share_the_key_bucket(slow):
    """KEY_SLOW's three tokens went to HTTP requests (test_refusals_are_counted_exactly, or
    here): its WebSocket is refused at once."""
    s = requests.Session()
    for _ in range(3):
        s.post(slow.url("/v2/models/echo/infer"), json=BODY, headers=bearer(KEY_SLOW),
               timeout=HTTP_TIMEOUT_S)

    async def main():
        async with ws_connect(slow.port, "/v2/stream?api_key=" + KEY_SLOW) as ws:
            body = json.loads(ws_req("shared"))
            body["model_name"] = "echo"
            await ws.send(json.dumps(body))
            check_ws_429(json.loads(await ws_recv(ws)), "shared")
    run(main())


@pytest.mark.parametrize("bad", ["0", "5:0", "abc", "5:5:5", "-1", "5:", "1e3"])
def test_bad_rate_limit_fails_the_start(tmp_path, bad):
    if not os.path.isfile(BATCHD_BIN):
        pytest.skip("batchd binary not found at %s" % BATCHD_BIN)
    cmd = [BATCHD_BIN, "serve", "--model-repository", str(tmp_path), "--http-port", "0",
           "--rate-limit", bad]
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                           env=sanitizer_env())
    except subprocess.TimeoutExpired:
        pytest.fail("batchd started (or hung) with --rate-limit %s" % bad)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert r.returncode != 0 and "--rate-limit" in out and "RPS" in out, out
