"""SIGTERM while requests wait: everything queued is answered, new work is refused, exit 0."""
import signal
import threading
import time

import pytest
import requests

from conftest import HTTP_TIMEOUT_S, check_drain_replies, tensor


def _wait_metric(client, name, labels, pred, timeout=10.0):
    key = (name, frozenset(labels.items()))
    deadline = time.monotonic() + timeout
    v = None
    while time.monotonic() < deadline:
        v = client.metrics().get(key)
        if v is not None and pred(v):
            return v
        time.sleep(0.02)
    raise AssertionError("%s%r never satisfied the condition (last %r)" % (name, labels, v))


def test_sigterm_answers_queued_requests(start_server_fn):
    repo = start_server_fn.repo()
    repo.add_sim("slow", [("INPUT0", "INT32", [2])], max_batch_size=1, instances=1,
                 latency_us=500000)
    client = start_server_fn(repo)
    srv = client.server

    results = [None] * 5

    def one(i):
        x = [i, -i]
        try:
            r = requests.post(client.url(client.infer_path("slow")),
                              json={"inputs": [tensor("INPUT0", "INT32", [1, 2], x)]},
                              timeout=HTTP_TIMEOUT_S)
            results[i] = (r.status_code, r.json(), x)
        except Exception as e:  # reported below
            results[i] = (None, repr(e), x)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    # One runs, four wait in the queue.
    lab = {"model": "slow", "version": "1"}
    _wait_metric(client, "batchd_queue_depth", lab, lambda v: v >= 4)
    srv.signal(signal.SIGTERM)
    assert srv.wait_log(r"shutdown signal") is not None

    # New work after the signal: refused at connect, or answered 503.
    try:
        r = requests.post(client.url(client.infer_path("slow")),
                          json={"inputs": [tensor("INPUT0", "INT32", [1, 2], [9, 9])]},
                          timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 503, "request after SIGTERM got %d" % r.status_code
        assert "error" in r.json()
    except requests.ConnectionError:
        pass

    for t in threads:
        t.join(HTTP_TIMEOUT_S)
    for i, (status, body, x) in enumerate(results):
        assert status == 200, "queued request %d: %r" % (i, body)
        assert body["outputs"][0]["data"] == x
    srv.stop(send_signal=False)  # waits for exit code 0 and a log without sanitizer reports


def test_sigint_idle_server_exits_zero(start_server_fn):
    repo = start_server_fn.repo()
    repo.add_sim("idle", [("INPUT0", "FP32", [1])], max_batch_size=1)
    client = start_server_fn(repo)
    assert client.get("/v2/health/ready").status_code == 200
    t0 = time.monotonic()
    client.server.signal(signal.SIGINT)
    client.server.stop(send_signal=False)
    assert time.monotonic() - t0 < 5, "an idle server took long to stop"


def test_drain_closes_keepalive_connections_with_json_503(start_server_fn):
    """After SIGTERM a reply to a request already in flight says Connection: close, and a new
    request on a connection kept alive from before gets 503, the JSON error and close."""
    import http.client
    import json
    repo = start_server_fn.repo()
    repo.add_sim("slow", [("INPUT0", "INT32", [2])], max_batch_size=1, instances=1,
                 latency_us=800000)
    client = start_server_fn(repo)
    srv = client.server
    busy = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=HTTP_TIMEOUT_S)
    idle = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=HTTP_TIMEOUT_S)
    idle.request("GET", "/v2/health/live")
    r = idle.getresponse()
    r.read()
    assert r.status == 200 and r.getheader("Connection", "").lower() == "keep-alive"
    busy.request("POST", "/v2/models/slow/infer",
                 body=json.dumps({"inputs": [tensor("INPUT0", "INT32", [1, 2], [4, 5])]}),
                 headers={"Content-Type": "application/json"})
    _wait_metric(client, "batchd_inference_inflight", {"model": "slow", "version": "1"},
                 lambda v: v >= 1)
    srv.signal(signal.SIGTERM)
    assert srv.wait_log(r"shutdown signal") is not None
    check_drain_replies(idle, busy)
    busy.close()
    idle.close()
    srv.stop(send_signal=False)


def test_request_arriving_at_sigterm_is_answered(start_server_fn):
    """A request whose body is still arriving when SIGTERM comes is read to its end and
    answered 503 with Connection: close, not cut off without a word."""
    import json
    import socket
    from conftest import read_all
    repo = start_server_fn.repo()
    repo.add_sim("m", [("INPUT0", "FP32", [1])], max_batch_size=1)
    client = start_server_fn(repo)
    srv = client.server
    body = json.dumps({"inputs": [tensor("INPUT0", "FP32", [1, 1], [1.0])]}).encode()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=HTTP_TIMEOUT_S)
    s.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
              b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:10])
    time.sleep(0.1)  # the head is in; the body is not
    srv.signal(signal.SIGTERM)
    time.sleep(0.3)  # draining (a body that stops for a second is answered 503 as it is)
    try:
        s.sendall(body[10:])
    except OSError:
        pass  # a very slow machine: the drain gave up on it first, with the same 503
    reply = read_all(s)
    s.close()
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 "), reply
    assert b"\r\nconnection: close" in head.lower(), reply
    assert json.loads(payload) == {"error": "the server is shutting down"}
    srv.stop(send_signal=False)


@pytest.mark.parametrize("sent", [
    b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n",  # a head that stopped
    b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",  # a body
])
def test_a_request_that_stopped_coming_is_answered_at_the_drain(start_server_fn, sent):
    """Draining, a request that has not grown for a second is answered 503 (it would never
    complete), and the server exits 0 at once rather than waiting for it."""
    import json
    import socket
    from conftest import read_all
    repo = start_server_fn.repo()
    repo.add_sim("m", [("INPUT0", "FP32", [1])], max_batch_size=1)
    srv = start_server_fn(repo).server
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=HTTP_TIMEOUT_S)
    s.sendall(sent)
    time.sleep(0.2)
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    reply = read_all(s)
    s.close()
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 "), reply
    assert json.loads(payload) == {"error": "the server is shutting down"}
    srv.stop(send_signal=False)
    assert time.monotonic() - t0 < 4, "the drain waited for a request that stopped coming"


def test_a_body_still_trickling_at_the_end_of_the_drain_is_cut_and_the_server_exits_0(
        start_server_fn):
    """A client that keeps a body coming a byte at a time holds the drain for its 5 s bound,
    no longer; then its connection is closed and the server exits 0."""
    import socket
    repo = start_server_fn.repo()
    repo.add_sim("m", [("INPUT0", "FP32", [1])], max_batch_size=1)
    srv = start_server_fn(repo).server
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=HTTP_TIMEOUT_S)
    s.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    done = threading.Event()

    def trickle():
        while not done.is_set() and time.monotonic() - t0 < 15:
            try:
                s.sendall(b" ")
            except OSError:
                return
            time.sleep(0.3)

    t = threading.Thread(target=trickle)
    t.start()
    try:
        srv.stop(send_signal=False)
    finally:
        done.set()
        t.join()
        s.close()
    assert 4 < time.monotonic() - t0 < 12


def test_sigterm_while_models_load_at_start_exits_without_listening(start_server_fn):
    """SIGTERM while the repository loads (each model warms up for about a second): the model
    version being loaded finishes, the others are not loaded, and the server exits 0 without
    ever listening, instead of loading everything, listening, then draining."""
    import subprocess
    from conftest import BATCHD_BIN, SANITIZER_MARKERS, sanitizer_env
    repo = start_server_fn.repo()
    for name in ("w1", "w2", "w3", "w4"):
        repo.add_sim(name, [("INPUT0", "FP32", [4])], latency_us=50000,
                     extra={"warmup": {"batch_sizes": [1], "count": 20}})
    p = subprocess.Popen([BATCHD_BIN, "serve", "--model-repository", repo.path, "--http-port",
                          "0", "--host", "127.0.0.1"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=sanitizer_env())
    lines = []
    for raw in p.stdout:  # its signals are blocked once it says how many descriptors it has
        lines.append(raw.decode())
        if "descriptors limit=" in lines[-1]:
            break
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    log = "".join(lines) + out.decode()
    assert p.returncode == 0, log
    assert "shutdown during start-up: exiting without listening" in log, log
    assert "http listening" not in log, log
    assert log.count("state=ready") <= 1, log  # at most the one that was loading
    for marker in SANITIZER_MARKERS:
        assert marker not in log, log
