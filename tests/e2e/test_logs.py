"""What clients send never forges a log line: control characters in anything logged are
written as \\xNN (issue 8: `POST /v2/repository/models/x%0a<text>/load`)."""
import re

import pytest


@pytest.fixture(scope="module")
def client(start_server):
    repo = start_server.repo()
    repo.add_sim("real", [("INPUT0", "FP32", [1])], max_batch_size=1)
    return start_server(repo, args=["--model-control", "explicit"])


def test_encoded_newline_in_a_model_name_stays_on_its_line(client):
    forged = "2026-01-01T00:00:00.000Z ERROR forged line=1"
    r = client.post("/v2/repository/models/x%0a" + forged.replace(" ", "%20") + "/load")
    assert r.status_code == 400, r.text
    r = client.post("/v2/repository/models/y%0d%0a%1bz/unload")
    assert r.status_code == 400, r.text
    client.assert_healthy()
    log = client.server.log()
    assert not any(line.startswith(forged) for line in log.splitlines()), log[-2000:]
    assert "forged" not in log or re.search(r"\\x0a2026-01-01T00:00:00\.000Z ERROR forged", log)
    # Every line the server wrote starts with its own timestamp and level.
    for line in log.splitlines():
        if line.strip():
            assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARN|ERROR) ",
                            line), line


def test_connections_refused_from_their_head_are_logged_once_a_second(client):
    """A client sending garbage on 300 new connections gets 300 answers (400, connection
    closed) but cannot fill the log: such closes are logged at most once a second, saying how
    many went unlogged."""
    import socket
    import time
    before = client.server.log().count("closing a connection")
    t0 = time.monotonic()
    for _ in range(300):
        with socket.create_connection(("127.0.0.1", client.server.port), timeout=5) as s:
            s.sendall(b"\x01\x02 garbage\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 400 ")
    took = time.monotonic() - t0
    time.sleep(1.1)
    burst = client.server.log().count("closing a connection")  # in the log by now
    with socket.create_connection(("127.0.0.1", client.server.port), timeout=5) as s:
        s.sendall(b"\x01\x02 garbage\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 400 ")
    client.assert_healthy()
    from conftest import wait_for  # the log comes through a pipe, a little after the reply

    def refused_lines():
        lines = [l for l in client.server.log().splitlines() if "closing a connection" in l]
        return lines if len(lines) > burst else None

    lines = wait_for(refused_lines, 5, "a line for the close after the burst")
    assert len(lines) - before <= int(took) + 3, lines[-10:]
    assert re.search(r"more since the last such line\)$", lines[-1]), lines[-1]


def test_a_load_request_is_logged_at_debug_with_its_name_quoted(start_server):
    """Any client may ask to load any name (--model-control explicit, no keys): the request is
    a debug line, not one info line per request (300 requests for unknown names were 300 info
    lines), and a name with a space or '=' is quoted so that it cannot read as more fields
    ('x state=ready' logged as model=x state=ready)."""
    repo = start_server.repo()
    repo.add_sim("real", [("INPUT0", "FP32", [1])], max_batch_size=1)
    quiet = start_server(repo, args=["--model-control", "explicit"])
    before = len(quiet.server.log().splitlines())
    for i in range(50):
        assert quiet.post("/v2/repository/models/nosuch%d/load" % i).status_code == 400
    assert quiet.post("/v2/repository/models/real/load").status_code == 200
    new = quiet.server.log().splitlines()[before:]
    assert not [line for line in new if "nosuch" in line], new[:3]
    loud = start_server(repo, args=["--model-control", "explicit", "--log-level", "debug"])
    assert loud.post("/v2/repository/models/x%20state=ready/load").status_code == 400
    from conftest import wait_for  # the log comes through a pipe, a little after the reply
    wait_for(lambda: ' DEBUG repo model="x state=ready" load=requested' in loud.server.log(), 10,
             "the quoted load=requested line")


def test_a_reason_is_one_quoted_field_whatever_it_holds(start_server):
    """A reason quotes text from config.json (an unknown key, as written): its quotes are
    escaped, so the key 'x" state="ready' cannot end the reason and add a field."""
    repo = start_server.repo()
    repo.add_sim("typo", [("INPUT0", "FP32", [1])], extra={'x" state="ready': 1})
    client = start_server(repo)
    line = client.server.wait_log(r"model=typo .*state=unavailable", 10)
    assert line, client.server.log()[-2000:]
    assert line.rstrip("\n").endswith(
        ' reason="config.json: unknown key \'x\\" state=\\"ready\'"'), line
    # Read as logfmt, the line has the fields it was written with, and no more.
    fields = re.findall(r' (\w+)=("(?:[^"\\]|\\.)*"|[^ "]+)', line.split(" repo", 1)[1])
    assert [k for k, _ in fields] == ["model", "version", "state", "reason"], line
    # One line for the one failure (not a second, model-wide one).
    assert client.server.log().count("model=typo ") == 1, client.server.log()


def test_model_run_failures_do_not_flood_the_log(start_server):
    """A client whose inputs make every run fail (reshape3 cannot reshape a row of 4) made
    ONNX Runtime write a ~1 KiB ERROR line per request. Its warnings and errors now pass 20 in
    a burst, then one a second, and the next line written says how many were left out."""
    import time
    from conftest import find_onnx_model, ort_available, tensor, wait_for
    if find_onnx_model("reshape3") is None or not ort_available():
        pytest.skip("reshape3 not found (make test-models) or no ONNX Runtime")
    repo = start_server.repo()
    repo.add_onnx("reshape3")
    c = start_server(repo)
    good = {"inputs": [tensor("INPUT0", "FP32", [1, 3], [0.0, 1, 2])]}
    bad = {"inputs": [tensor("INPUT0", "FP32", [1, 4], [0.0, 1, 2, 3])]}
    before = len(c.server.log().splitlines())
    t0 = time.monotonic()
    for _ in range(200):  # good ones between keep the circuit breaker closed
        assert c.post("/v2/models/reshape3/infer", json=good).status_code == 200
        assert c.post("/v2/models/reshape3/infer", json=bad).status_code == 500
    took = time.monotonic() - t0
    time.sleep(1.1)
    assert c.post("/v2/models/reshape3/infer", json=bad).status_code == 500

    def counted():
        """(lines written, the notes' counts) once every failure is one or the other: the
        server's log reaches the test through a pipe, a little after the reply."""
        lines = [ln for ln in c.server.log().splitlines()[before:] if " onnxruntime " in ln]
        notes = [int(m.group(1)) for m in
                 (re.search(r" \((\d+) more such lines were not logged\)$", ln) for ln in lines)
                 if m]
        return (len(lines), notes) if notes and len(lines) + sum(notes) == 201 else None
    n, notes = wait_for(counted, 10, "every failure written or counted in a later line's note")
    assert n <= 20 + int(took) + 2, (n, took)


def test_the_scheduler_start_line_gives_the_model_wide_queue_size(start_server):
    """Its max_queue_size is the model's (the default levels' one), not that of priority
    level 1 when that level has its own."""
    repo = start_server.repo()
    repo.add_sim("levels", [("INPUT0", "FP32", [1])],
                 dynamic_batching={"max_queue_size": 100, "priority_levels": 2,
                                   "priority_queue_policy": {"1": {"max_queue_size": 10}}})
    client = start_server(repo)
    line = client.server.wait_log(r"sched started model=levels ")
    assert line and " priority_levels=2 max_queue_size=100 " in line, line


def test_a_log_reader_that_stopped_does_not_stop_the_server(start_server_fn):
    """stderr is a 4 KiB pipe nobody reads (a stuck log shipper): once it is full, the
    lines the server logs wait in its own bounded queue instead of blocking the thread that
    logs. Health checks are answered, SIGTERM drains and exits 0, and once the pipe is read
    again every line comes out, the shutdown's last."""
    import fcntl
    import os
    import signal
    import socket
    import subprocess
    import threading
    import time

    import requests

    from conftest import BATCHD_BIN, sanitizer_env
    from redis_util import free_port

    repo = start_server_fn.repo()
    repo.add_sim("m", [("INPUT0", "FP32", [1])], max_batch_size=1)
    port = free_port()
    r, w = os.pipe()
    fcntl.fcntl(w, 1031, 4096)  # F_SETPIPE_SZ: a page
    p = subprocess.Popen([BATCHD_BIN, "serve", "--model-repository", repo.path, "--host",
                          "127.0.0.1", "--http-port", str(port), "--log-level", "debug"],
                         stdin=subprocess.DEVNULL, stdout=w, stderr=w, env=sanitizer_env())
    os.close(w)
    out = []
    try:
        url = "http://127.0.0.1:%d/v2/health/live" % port
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url, timeout=3).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        for _ in range(200):  # each is refused with a debug line: far more than the pipe holds
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"\x01\x02garbage\r\n\r\n")
            s.close()
        t0 = time.monotonic()
        assert requests.get(url, timeout=5).status_code == 200
        assert time.monotonic() - t0 < 2, "health waited on the log"
        p.send_signal(signal.SIGTERM)
        time.sleep(0.5)

        def drain():
            while True:
                chunk = os.read(r, 65536)
                if not chunk:
                    return
                out.append(chunk)
        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        assert p.wait(timeout=15) == 0
        reader.join(10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(r)
    log = b"".join(out).decode(errors="replace")
    assert log.count("closing a connection") >= 190, log[-2000:]
    assert "dropped" not in log, log[-2000:]
    last = [line for line in log.splitlines() if re.match(r"\d{4}-\d\d-\d\dT", line)][-1]
    assert "server drained; exiting" in last, log[-2000:]
    # At debug level each close has its own line: none went unlogged to be counted.
    assert "more connections were closed" not in log, log[-2000:]


def test_a_refused_batch_does_not_hide_a_backend_failure_from_the_log(start_server):
    """A batch whose values the model refused (a client's fault, run again a request at a time)
    and a batch the backend failed each have their WARN line, rate-limited apart: before, one
    refused batch a second kept every backend failure out of the log."""
    import threading
    from conftest import HTTP_TIMEOUT_S, tensor
    import requests
    repo = start_server.repo()
    repo.add_sim("m", [("INPUT0", "FP32", [1])], max_batch_size=2,
                 dynamic_batching={"max_queue_delay_us": 2000000})
    c = start_server(repo)
    url = c.url("/v2/models/m/infer")
    codes = []

    def post(params):
        body = {"inputs": [tensor("INPUT0", "FP32", [1, 1], [1.0])]}
        if params:
            body["parameters"] = params
        codes.append(requests.post(url, json=body, timeout=HTTP_TIMEOUT_S).status_code)

    # Two requests fill a batch of 2 at once (the 2 s delay waits for no more): refused for
    # one's values, the batch runs again a request at a time, and the other fails the backend.
    pair = [threading.Thread(target=post, args=(p,))
            for p in ({"sim_invalid": True}, {"sim_fail": True})]
    for t in pair:
        t.start()
    for t in pair:
        t.join(HTTP_TIMEOUT_S)
    assert sorted(codes) == [400, 500], codes
    assert c.server.wait_log(r"WARN sched batch refused; its requests run again one at a time "
                             r"model=m version=1 requests=2 ")
    assert c.server.wait_log(r"WARN sched batch failed model=m version=1 requests=1 error=\"sim "
                             r"model: the batch failed on purpose"), c.server.log()[-2000:]
