"""HTTP/1.1 persistent connections and pipelining."""
import http.client
import json
import socket

import pytest
import requests

from conftest import HTTP_TIMEOUT_S, raw_exchange, tensor


@pytest.fixture(scope="module")
def client(start_server):
    repo = start_server.repo()
    repo.add_sim("ka", [("INPUT0", "INT32", [3])], max_batch_size=8)
    return start_server(repo)


def test_hundred_requests_on_one_session(client):
    s = requests.Session()
    url = client.url(client.infer_path("ka"))
    for i in range(100):
        x = [i, -i, i * i]
        r = s.post(url, json={"inputs": [tensor("INPUT0", "INT32", [1, 3], x)]},
                   timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == x
        assert r.headers.get("Connection", "").lower() != "close"


def test_one_connection_serves_many_requests(client):
    """http.client reconnects silently when the server closes; the socket's local port shows
    whether one TCP connection carried all requests."""
    conn = http.client.HTTPConnection("127.0.0.1", client.server.port, timeout=HTTP_TIMEOUT_S)
    ports = set()
    try:
        for i in range(100):
            body = json.dumps({"inputs": [tensor("INPUT0", "INT32", [1, 3], [i, i, i])]})
            if i % 2:
                conn.request("POST", "/v2/models/ka/infer", body=body,
                             headers={"Content-Type": "application/json"})
            else:
                conn.request("GET", "/v2/health/ready")
            ports.add(conn.sock.getsockname()[1])
            resp = conn.getresponse()
            data = resp.read()
            assert resp.status == 200, data
            if i % 2:
                assert json.loads(data)["outputs"][0]["data"] == [i, i, i]
    finally:
        conn.close()
    assert len(ports) == 1, "server closed the keep-alive connection %d times" % (len(ports) - 1)


def _read_responses(sock, n):
    """Read n HTTP/1.1 responses (Content-Length framed) from sock."""
    buf = b""
    out = []
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, "connection closed after %d of %d responses" % (len(out), n)
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = {}
        for ln in lines[1:]:
            k, v = ln.split(b":", 1)
            headers[k.strip().lower()] = v.strip()
        assert b"content-length" in headers, "response without Content-Length: %r" % head
        clen = int(headers[b"content-length"])
        while len(rest) < clen:
            chunk = sock.recv(65536)
            assert chunk, "connection closed in a body"
            rest += chunk
        out.append((status, headers, rest[:clen]))
        buf = rest[clen:]
    return out


def test_pipelined_requests_on_raw_socket(client):
    body0 = json.dumps({"id": "first",
                        "inputs": [tensor("INPUT0", "INT32", [1, 3], [1, 2, 3])]}).encode()
    body1 = json.dumps({"id": "second",
                        "inputs": [tensor("INPUT0", "INT32", [1, 3], [4, 5, 6])]}).encode()
    req = b""
    for b in (body0, body1):
        req += (b"POST /v2/models/ka/infer HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b))
    req += b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with socket.create_connection(("127.0.0.1", client.server.port), timeout=10) as s:
        s.sendall(req)
        resps = _read_responses(s, 3)
        # The connection is still open for a fourth request.
        s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: localhost\r\n\r\n")
        resps += _read_responses(s, 1)
    assert [st for st, _, _ in resps] == [200, 200, 200, 200]
    # Replies come back in request order.
    assert json.loads(resps[0][2])["id"] == "first"
    assert json.loads(resps[0][2])["outputs"][0]["data"] == [1, 2, 3]
    assert json.loads(resps[1][2])["id"] == "second"
    assert json.loads(resps[1][2])["outputs"][0]["data"] == [4, 5, 6]


def test_error_reply_keeps_connection(client):
    with socket.create_connection(("127.0.0.1", client.server.port), timeout=10) as s:
        bad = b"{not json"
        s.sendall(b"POST /v2/models/ka/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(bad), bad))
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        resps = _read_responses(s, 2)
    assert resps[0][0] == 400
    assert "error" in json.loads(resps[0][2])
    assert resps[1][0] == 200


def test_connection_close_is_honoured(client):
    data = raw_exchange(client.server.port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200")


def test_requests_pipelined_by_a_client_that_left_are_dropped(start_server_fn):
    """Clients pipeline megabytes of requests without reading the replies, then close: what the
    server had already read is not answered one by one to dead sockets (h2o 2.2.5 goes on to
    the next buffered request after a failed write, in the same loop turn), so a new client
    is answered at once and SIGTERM ends the server within its drain bound."""
    import time
    repo = start_server_fn.repo()
    repo.add_sim("ka", [("INPUT0", "INT32", [3])], max_batch_size=8)
    client = start_server_fn(repo)
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    chunk = head * (65536 // len(head))
    socks = [socket.create_connection(("127.0.0.1", client.server.port)) for _ in range(20)]
    for s in socks:
        s.setblocking(False)
    # Megabytes the server reads ahead: how fast the kernel takes them follows how fast the
    # server reads (receive-buffer autotuning), so a slow build takes longer to get there.
    sent, deadline = 0, time.monotonic() + 15.0
    while time.monotonic() < deadline and sent <= 4 << 20:
        for s in socks:
            try:
                sent += s.send(chunk)
            except BlockingIOError:
                pass
        time.sleep(0.001)
    for s in socks:
        s.close()
    assert sent > 4 << 20, sent  # megabytes the server read ahead and would have answered
    t0 = time.monotonic()
    r = requests.get(client.url("/v2/health/live"), timeout=30)
    took = time.monotonic() - t0
    assert r.status_code == 200
    assert took < 3.0, "the loop answered dead clients first: %.1f s" % took
    t0 = time.monotonic()
    client.server.stop()
    assert time.monotonic() - t0 < 8.0
