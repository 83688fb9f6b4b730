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
    with socket.create_connection(("127.0.0.1", client.server.port), timeout=5) as s:
        s.sendall(b"\x01\x02 garbage\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 400 ")
    client.assert_healthy()
    log = client.server.log()
    lines = [l for l in log.splitlines() if "closing a connection" in l]
    assert len(lines) - before <= int(took) + 3, lines[-10:]
    assert re.search(r"more since the last such line\)$", lines[-1]), lines[-1]
