"""WebSocket streaming (/v2/stream, /v2/models/{m}/stream) with an independent client
(Debian's python3-websockets, asyncio API) and raw sockets for frames no library sends.

Covers: many requests pipelined on one socket, batched, matched by id; JSON and binary
frames; errors that leave the others untouched; backpressure without loss (10,000 requests
sent before reading, server memory bounded); a closed socket's queued requests never run;
close codes 1000 (idle), 1002 (protocol), 1007 (UTF-8), 1009 (size), 1001 (SIGTERM); pings;
fragmented messages; 200 sockets at once; the metrics (protocol label, connections gauge)."""
import asyncio
import base64
import json
import os
import signal
import socket
import struct
import time

import numpy as np
import pytest
import websockets

from conftest import tensor

T = 20.0  # seconds any single await may take before the test fails instead of hanging


@pytest.fixture(scope="module")
def srv(start_server):
    repo = start_server.repo()
    # Batches form: 1 ms fixed cost per run, up to 32 rows, 2 ms delay for stragglers.
    repo.add_sim("echo", [("INPUT0", "FP32", [4])], max_batch_size=32, latency_us=1000,
                 dynamic_batching={"max_queue_delay_us": 2000})
    # One instance, 300 ms per run, batches of one: requests wait in the queue.
    repo.add_sim("slow", [("INPUT0", "INT32", [2])], max_batch_size=1, latency_us=300000)
    repo.add_sim("pair", [("A", "INT32", [2]), ("B", "FP32", [3])], max_batch_size=8)
    return start_server(repo, args=["--max-body-bytes", "65536", "--ws-idle-timeout-secs", "2"])


def url(client, path="/v2/stream"):
    return "ws://127.0.0.1:%d%s" % (client.server.port, path)


def req(i, model="echo", rid=None, **extra):
    body = {"inputs": [tensor("INPUT0", "FP32", [1, 4], [float(i)] * 4)]}
    if model:
        body["model_name"] = model
    if rid is not None:
        body["id"] = rid
    body.update(extra)
    return json.dumps(body)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def recv_json(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), T))


def counter(client, name, **labels):
    return client.metric(name, **labels) or 0


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met within %.1f s" % timeout)


# ---- requests and replies --------------------------------------------------------------------

def test_thousand_pipelined_requests_batched_and_matched_by_id(srv):
    lab = dict(model="echo", version="1")
    execs0 = counter(srv, "batchd_inference_executions_total", **lab)
    ok0 = counter(srv, "batchd_inference_requests_total", protocol="websocket",
                  outcome="success", **lab)

    async def go():
        async with websockets.connect(url(srv)) as ws:
            for i in range(1000):
                await ws.send(req(i, rid="r%d" % i))
            got = {}
            for _ in range(1000):
                r = await recv_json(ws)
                got[r["id"]] = r
            return got

    got = run(go())
    assert sorted(got) == sorted("r%d" % i for i in range(1000))
    for i in range(1000):
        r = got["r%d" % i]
        assert r["model_name"] == "echo" and r["model_version"] == "1"
        assert r["outputs"] == [{"name": "OUTPUT0", "datatype": "FP32", "shape": [1, 4],
                                 "data": [float(i)] * 4}]
    execs = counter(srv, "batchd_inference_executions_total", **lab) - execs0
    assert 1000 / 32 <= execs < 500, "1000 requests ran in %d executions" % execs
    assert counter(srv, "batchd_inference_requests_total", protocol="websocket",
                   outcome="success", **lab) - ok0 == 1000


def test_model_path_and_assigned_ids(srv):
    async def go():
        async with websockets.connect(url(srv, "/v2/models/echo/versions/1/stream")) as ws:
            await ws.send(req(1, model=None))
            await ws.send(req(2, model=None))
            await ws.send(req(3, model="echo", rid="mine"))
            await ws.send(req(4, model="slow", rid="other"))
            return [await recv_json(ws) for _ in range(4)]

    rs = {r.get("id"): r for r in run(go())}
    assert rs["mine"]["outputs"][0]["data"] == [3.0] * 4
    assert rs["other"]["status"] == 400
    assert rs["other"]["error"] == ("\"model_name\" is 'slow' but this stream serves model "
                                    "'echo'")
    assigned = [k for k in rs if k not in ("mine", "other")]
    assert len(assigned) == 2 and all(isinstance(k, str) and k for k in assigned)
    assert sorted(rs[k]["outputs"][0]["data"][0] for k in assigned) == [1.0, 2.0]


def test_binary_frames_in_and_out(srv):
    a = np.array([[7, -8]], dtype="<i4")
    b = np.array([[0.5, 1.5, -2.25]], dtype="<f4")
    header = json.dumps({
        "model_name": "pair", "id": "bin",
        "inputs": [{"name": "A", "datatype": "INT32", "shape": [1, 2],
                    "parameters": {"binary_data_size": a.nbytes}},
                   {"name": "B", "datatype": "FP32", "shape": [1, 3],
                    "parameters": {"binary_data_size": b.nbytes}}],
        "outputs": [{"name": "OUTPUT1", "parameters": {"binary_data": True}},
                    {"name": "OUTPUT0", "parameters": {"binary_data": False}}]}).encode()
    frame = struct.pack("<I", len(header)) + header + a.tobytes() + b.tobytes()

    async def go():
        async with websockets.connect(url(srv)) as ws:
            await ws.send(frame)
            return await asyncio.wait_for(ws.recv(), T)

    reply = run(go())
    assert isinstance(reply, bytes)
    n = struct.unpack("<I", reply[:4])[0]
    head = json.loads(reply[4:4 + n])
    assert head["id"] == "bin"
    assert head["outputs"][0]["name"] == "OUTPUT1"
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 12
    assert head["outputs"][1] == {"name": "OUTPUT0", "datatype": "INT32", "shape": [1, 2],
                                  "data": [7, -8]}
    assert np.array_equal(np.frombuffer(reply[4 + n:], dtype="<f4"), b.ravel())
    assert len(reply) == 4 + n + 12


def test_errors_answer_one_request_and_leave_the_rest(srv):
    bad = [
        ("{not json", 400, None),
        (json.dumps({"model_name": "nope", "id": "e1", "inputs": [
            tensor("INPUT0", "FP32", [1, 4], [1] * 4)]}), 400, "unknown model 'nope'"),
        (json.dumps({"model_name": "echo", "id": "e2", "inputs": [
            tensor("INPUT0", "FP32", [1, 4], [1] * 3)]}), 400,
         "input 'INPUT0': expected 4 values for shape [1,4], got 3"),
        (json.dumps({"id": "e3", "inputs": [tensor("INPUT0", "FP32", [1, 4], [1] * 4)]}), 400,
         None),
    ]

    async def go():
        async with websockets.connect(url(srv)) as ws:
            for i, (b, _, _) in enumerate(bad):
                await ws.send(req(i, rid="ok%d" % i))
                await ws.send(b)
            await ws.send(b"\x05\x00")  # a binary frame too short for its length prefix
            return [await recv_json(ws) for _ in range(2 * len(bad) + 1)]

    rs = run(go())
    ok = {r["id"]: r for r in rs if "outputs" in r}
    errs = [r for r in rs if "error" in r]
    assert sorted(ok) == ["ok0", "ok1", "ok2", "ok3"]
    assert len(errs) == len(bad) + 1
    by_id = {e["id"]: e for e in errs}
    assert by_id["e1"] == {"id": "e1", "error": "unknown model 'nope'", "status": 400}
    assert by_id["e2"]["error"] == "input 'INPUT0': expected 4 values for shape [1,4], got 3"
    assert "model_name" in by_id["e3"]["error"]
    for e in errs:
        assert e["status"] == 400 and isinstance(e["id"], str) and e["id"]
        assert set(e) == {"id", "error", "status"}


def test_fragmented_message_and_ping(srv):
    msg = req(5, rid="frag")

    async def go():
        async with websockets.connect(url(srv)) as ws:
            await ws.send([msg[:7], msg[7:30], msg[30:]])
            r = await recv_json(ws)
            pong = await ws.ping(b"hi")
            await asyncio.wait_for(pong, T)
            return r

    r = run(go())
    assert r["id"] == "frag" and r["outputs"][0]["data"] == [5.0] * 4


def test_non_websocket_get_on_stream_path_is_a_json_400(srv):
    r = srv.get("/v2/stream")
    assert r.status_code == 400
    assert "WebSocket" in r.json()["error"]
    r = srv.get("/v2/models/nope/stream")
    assert r.status_code == 400
    assert r.json()["error"] == "unknown model 'nope'"


# ---- backpressure --------------------------------------------------------------------------

def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.slow
def test_ten_thousand_sent_before_reading_all_answered_memory_bounded(srv):
    pid = srv.server.proc.pid
    before = rss_kb(pid)
    n = 10000

    async def go():
        # max_queue=1: the client library itself stops reading while we do not.
        async with websockets.connect(url(srv, "/v2/models/echo/stream"), max_queue=1) as ws:
            async def send_all():
                for i in range(n):
                    await ws.send(req(i, model=None, rid=str(i)))

            sender = asyncio.create_task(send_all())
            await asyncio.sleep(2.0)  # nobody reads meanwhile
            peak = rss_kb(pid)
            got = set()
            while len(got) < n:
                r = await recv_json(ws)
                assert "outputs" in r, r
                got.add(r["id"])
            await asyncio.wait_for(sender, T)
            return got, max(peak, rss_kb(pid))

    got, peak = run(go())
    assert got == {str(i) for i in range(n)}
    # ASan keeps freed blocks in a quarantine of up to 256 MiB, so its bound is looser.
    with open("/proc/%d/maps" % pid) as f:
        asan = "libasan" in f.read()
    bound = (400 if asan else 100) * 1024
    assert peak - before < bound, "RSS grew by %d KiB" % (peak - before)


def test_inflight_cap_stops_reading(start_server_fn):
    """With --ws-max-inflight 4 and a slow model, the server never holds more than 4 of one
    socket's requests, however many the client sends."""
    repo = start_server_fn.repo()
    repo.add_sim("slow", [("INPUT0", "INT32", [2])], max_batch_size=1, latency_us=50000)
    client = start_server_fn(repo, args=["--ws-max-inflight", "4"])
    lab = dict(model="slow", version="1")
    seen = []

    async def go():
        async with websockets.connect(url(client, "/v2/models/slow/stream")) as ws:
            for i in range(40):
                await ws.send(json.dumps({"id": str(i), "inputs": [
                    tensor("INPUT0", "INT32", [1, 2], [i, i])]}))
            got = set()
            while len(got) < 40:
                seen.append(counter(client, "batchd_inference_inflight", **lab))
                r = await recv_json(ws)
                got.add(r["id"])
            return got

    assert run(go()) == {str(i) for i in range(40)}
    assert max(seen) <= 4, seen


# ---- closing -------------------------------------------------------------------------------

def test_closed_socket_queued_requests_never_run(srv):
    lab = dict(model="slow", version="1")
    ok0 = counter(srv, "batchd_inference_requests_total", outcome="success", **lab)
    canc0 = counter(srv, "batchd_inference_requests_total", protocol="websocket",
                    outcome="cancelled", **lab)
    ex0 = counter(srv, "batchd_inference_executions_total", **lab)

    async def go():
        ws = await websockets.connect(url(srv, "/v2/models/slow/stream"))
        for i in range(100):
            await ws.send(json.dumps({"id": str(i), "inputs": [
                tensor("INPUT0", "INT32", [1, 2], [i, i])]}))
        # Wait until the server took them all, then drop the connection without a word.
        deadline = time.monotonic() + T
        while counter(srv, "batchd_queue_depth", **lab) < 99 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        ws.transport.abort()

    run(go())
    wait_for(lambda: counter(srv, "batchd_inference_requests_total", protocol="websocket",
                             outcome="cancelled", **lab) - canc0 >= 99)
    wait_for(lambda: counter(srv, "batchd_inference_inflight", **lab) == 0)
    ran = counter(srv, "batchd_inference_executions_total", **lab) - ex0
    cancelled = counter(srv, "batchd_inference_requests_total", protocol="websocket",
                        outcome="cancelled", **lab) - canc0
    assert ran + cancelled == 100
    assert ran <= 1, "%d of the dropped socket's requests ran" % ran
    assert counter(srv, "batchd_inference_requests_total", outcome="success", **lab) - ok0 == ran
    wait_for(lambda: counter(srv, "batchd_websocket_connections") == 0)


def test_idle_socket_closed_with_1000(srv):
    async def go():
        async with websockets.connect(url(srv)) as ws:
            t0 = time.monotonic()
            with pytest.raises(websockets.ConnectionClosed) as e:
                await asyncio.wait_for(ws.recv(), 10)
            return e.value, time.monotonic() - t0

    exc, dt = run(go())
    assert exc.rcvd is not None and exc.rcvd.code == 1000
    assert 1.5 <= dt < 6, dt


def test_too_large_message_closed_with_1009(srv):
    async def go():
        async with websockets.connect(url(srv), max_size=None) as ws:
            await ws.send("x" * 70000)  # --max-body-bytes 65536
            with pytest.raises(websockets.ConnectionClosed) as e:
                await asyncio.wait_for(ws.recv(), T)
            return e.value

    assert run(go()).rcvd.code == 1009


def test_invalid_utf8_text_closed_with_1007(srv):
    async def go():
        async with websockets.connect(url(srv)) as ws:
            await ws.write_frame(True, 0x1, b'{"id": "\xff\xfe"}')
            with pytest.raises(websockets.ConnectionClosed) as e:
                await asyncio.wait_for(ws.recv(), T)
            return e.value

    assert run(go()).rcvd.code == 1007


def raw_upgrade(port, path="/v2/stream"):
    s = socket.create_connection(("127.0.0.1", port), timeout=T)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, key))
              .encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    return s, head.split(b"\r\n\r\n", 1)[1]


def read_close_code(s, buf):
    """Read frames until a close frame; return its status code (None: closed without one)."""
    s.settimeout(T)

    def need(k):
        nonlocal buf
        while len(buf) < k:
            chunk = s.recv(4096)
            if not chunk:
                return False
            buf += chunk
        return True

    while True:
        if not need(2):
            return None
        op, n = buf[0] & 0x0F, buf[1] & 0x7F
        hdr = 2
        if n == 126:
            if not need(4):
                return None
            n, hdr = struct.unpack(">H", buf[2:4])[0], 4
        if not need(hdr + n):
            return None
        payload, buf = buf[hdr:hdr + n], buf[hdr + n:]
        if op == 0x8:
            return struct.unpack(">H", payload[:2])[0]


@pytest.mark.parametrize("frame", [
    b"\x81\x02hi",                                     # unmasked client frame
    b"\xc1\x82" + b"\x00\x00\x00\x00" + b"hi",          # RSV1 set, no extension agreed
    b"\x83\x82" + b"\x00\x00\x00\x00" + b"hi",          # reserved opcode 3
    b"\x09\x80" + b"\x00" * 4,                          # a ping without FIN (control frames can't
                                                       # be fragmented)
])
def test_protocol_violation_closed_with_1002(srv, frame):
    s, rest = raw_upgrade(srv.server.port)
    try:
        s.sendall(frame)
        assert read_close_code(s, rest) == 1002
    finally:
        s.close()
    srv.assert_healthy()


# ---- many sockets, metrics, shutdown ---------------------------------------------------------

@pytest.mark.slow
def test_two_hundred_sockets_at_once(srv):
    async def one(k, ready, go):
        async with websockets.connect(url(srv)) as ws:
            ready.append(k)
            await go.wait()
            for i in range(5):
                await ws.send(req(k * 10 + i, rid="%d-%d" % (k, i)))
            return {(await recv_json(ws))["id"] for _ in range(5)}

    # Sockets of earlier tests may still be in their closing handshake.
    wait_for(lambda: counter(srv, "batchd_websocket_connections") == 0)

    async def main():
        ready, go = [], asyncio.Event()
        tasks = [asyncio.create_task(one(k, ready, go)) for k in range(200)]
        while len(ready) < 200:
            await asyncio.sleep(0.05)
        conns = counter(srv, "batchd_websocket_connections")
        go.set()
        return conns, await asyncio.gather(*tasks)

    conns, results = run(main())
    assert conns == 200
    for k, ids in enumerate(results):
        assert ids == {"%d-%d" % (k, i) for i in range(5)}
    wait_for(lambda: counter(srv, "batchd_websocket_connections") == 0)


def test_protocol_label_separates_http_from_websocket(srv):
    lab = dict(model="pair", version="1")
    m0 = srv.metrics()

    def get(m, proto):
        return m.get(("batchd_inference_requests_total", frozenset(
            dict(lab, protocol=proto, outcome="success").items())), 0)

    body = {"inputs": [tensor("A", "INT32", [1, 2], [1, 2]),
                       tensor("B", "FP32", [1, 3], [1, 2, 3])]}
    assert srv.infer("pair", body).status_code == 200

    async def go():
        async with websockets.connect(url(srv, "/v2/models/pair/stream")) as ws:
            for _ in range(2):
                await ws.send(json.dumps(body))
            return [await recv_json(ws) for _ in range(2)]

    assert all("outputs" in r for r in run(go()))
    m1 = srv.metrics()
    assert get(m1, "http") - get(m0, "http") == 1
    assert get(m1, "websocket") - get(m0, "websocket") == 2


def test_sigterm_answers_in_flight_then_closes_1001(start_server_fn):
    repo = start_server_fn.repo()
    repo.add_sim("slow", [("INPUT0", "INT32", [2])], max_batch_size=1, latency_us=200000)
    client = start_server_fn(repo)
    srv_proc = client.server

    async def go():
        async with websockets.connect(url(client, "/v2/models/slow/stream")) as ws:
            for i in range(5):
                await ws.send(json.dumps({"id": str(i), "inputs": [
                    tensor("INPUT0", "INT32", [1, 2], [i, -i])]}))
            await asyncio.sleep(0.1)
            srv_proc.signal(signal.SIGTERM)
            got = {}
            with pytest.raises(websockets.ConnectionClosed) as e:
                while True:
                    r = await recv_json(ws)
                    got[r["id"]] = r
            return got, e.value

    got, exc = run(go())
    assert sorted(got) == [str(i) for i in range(5)]
    for i in range(5):
        assert got[str(i)]["outputs"][0]["data"] == [i, -i]
    assert exc.rcvd is not None and exc.rcvd.code == 1001
    srv_proc.stop(send_signal=False)
