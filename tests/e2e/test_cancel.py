"""Client hang-ups on HTTP/1.1: a request whose client closed its connection while the
request was queued leaves the queue and is never executed (outcome "cancelled"); a request
whose batch was already running finishes and its answer is dropped without harm; clients
that stay connected are not affected."""
import json
import socket
import threading
import time

import pytest
import requests

from conftest import HTTP_TIMEOUT_S, tensor, wait_for

LATENCY_US = 2000000  # one batch takes 2 s on the only instance (room for a slow build)


@pytest.fixture
def slow(start_server_fn):
    repo = start_server_fn.repo("cancel")
    repo.add_sim("slow1", [("INPUT0", "FP32", [2])], max_batch_size=4, instances=1,
                 latency_us=LATENCY_US)
    client = start_server_fn(repo)
    client.port = int(client.base.rsplit(":", 1)[1])
    return client


def body(i):
    return {"inputs": [tensor("INPUT0", "FP32", [1, 2], [float(i), float(i + 1)])]}


def raw_request(i):
    payload = json.dumps(body(i)).encode()
    head = ("POST /v2/models/slow1/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(payload))
    return head.encode() + payload


def counter(client, name, **labels):
    return int(client.metric(name, model="slow1", version="1", **labels) or 0)


def start_blocker(client):
    """One request that occupies the only instance for LATENCY_US; returns its thread and
    a list that receives its status code."""
    out = []

    def run():
        r = requests.post(client.url("/v2/models/slow1/infer"), json=body(0),
                          timeout=HTTP_TIMEOUT_S)
        out.append(r.status_code)

    t = threading.Thread(target=run)
    t.start()
    wait_running(client)
    return t, out


def wait_running(client):
    """Until one request runs on the idle instance (in flight, none queued)."""
    wait_for(lambda: counter(client, "batchd_inference_inflight") == 1
             and counter(client, "batchd_queue_depth") == 0, 10, "one request running")


def send_and_keep(client, n, first):
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", client.port), timeout=HTTP_TIMEOUT_S)
        s.sendall(raw_request(first + i))
        socks.append(s)
    return socks


def test_queued_requests_of_disconnected_clients_never_run(slow):
    t, status = start_blocker(slow)
    socks = send_and_keep(slow, 100, 1)
    wait_for(lambda: counter(slow, "batchd_queue_depth") == 100, 5, "100 requests queued")
    for s in socks:
        s.close()
    wait_for(lambda: counter(slow, "batchd_inference_requests_total", outcome="cancelled")
             == 100, 5, "100 cancellations")
    # Every cancellation landed while the blocker still ran: nothing else could execute.
    assert counter(slow, "batchd_inference_executions_total") == 0
    assert counter(slow, "batchd_queue_depth") == 0
    t.join(HTTP_TIMEOUT_S)
    assert status == [200]
    time.sleep(0.3)
    assert counter(slow, "batchd_inference_items_total") == 1
    assert counter(slow, "batchd_inference_executions_total") == 1
    assert counter(slow, "batchd_inference_requests_total", outcome="success") == 1
    # The server is fine and serves again.
    r = slow.infer("slow1", body(7))
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [7.0, 8.0]
    assert counter(slow, "batchd_inference_items_total") == 2


def test_only_the_clients_that_left_are_cancelled(slow):
    t, status = start_blocker(slow)
    stay = send_and_keep(slow, 5, 100)
    leave = send_and_keep(slow, 5, 200)
    wait_for(lambda: counter(slow, "batchd_queue_depth") == 10, 5, "10 requests queued")
    for s in leave:
        s.close()
    wait_for(lambda: counter(slow, "batchd_inference_requests_total", outcome="cancelled")
             == 5, 5, "5 cancellations")
    for i, s in enumerate(stay):
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + int(
                data.split(b"Content-Length: ")[1].split(b"\r\n")[0] if b"Content-Length: "
                in data else 0):
            chunk = s.recv(65536)
            assert chunk, "connection closed before the reply"
            data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
        reply = json.loads(data.split(b"\r\n\r\n", 1)[1])
        assert reply["outputs"][0]["data"] == [float(100 + i), float(101 + i)]
        s.close()
    t.join(HTTP_TIMEOUT_S)
    assert status == [200]
    assert counter(slow, "batchd_inference_items_total") == 6


def test_a_client_that_pipelined_and_left_has_its_queued_request_cancelled(slow):
    """A request pipelined behind a queued one, unread, hid the client's leaving from the
    hang-up check (it peeked a byte, not the end of the data), so the request ran for
    nobody."""
    t, status = start_blocker(slow)
    s = socket.create_connection(("127.0.0.1", slow.port), timeout=HTTP_TIMEOUT_S)
    s.sendall(raw_request(1))
    wait_for(lambda: counter(slow, "batchd_queue_depth") == 1, 5, "the first request queued")
    # The next request comes after the server stopped reading: it stays in the socket, ahead
    # of the end of the client's data.
    s.sendall(raw_request(2))
    time.sleep(0.1)
    s.close()
    # The second request may have been read and queued too (then it is cancelled as well).
    wait_for(lambda: counter(slow, "batchd_inference_requests_total", outcome="cancelled")
             >= 1, 5, "its cancellation")
    assert counter(slow, "batchd_inference_executions_total") == 0
    t.join(HTTP_TIMEOUT_S)
    assert status == [200]
    time.sleep(0.3)
    assert counter(slow, "batchd_inference_items_total") == 1  # the blocker alone ran
    assert counter(slow, "batchd_inference_requests_total", outcome="success") == 1
    assert counter(slow, "batchd_inference_requests_total", outcome="cancelled") in (1, 2)
    slow.assert_healthy()


def test_running_request_of_a_gone_client_is_dropped(slow):
    s = socket.create_connection(("127.0.0.1", slow.port), timeout=HTTP_TIMEOUT_S)
    s.sendall(raw_request(1))
    wait_running(slow)
    assert counter(slow, "batchd_inference_executions_total") == 0
    s.close()
    # Its batch runs to the end (it cannot be stopped); the answer goes nowhere.
    wait_for(lambda: counter(slow, "batchd_inference_executions_total") == 1, 5,
             "the running batch to finish")
    assert counter(slow, "batchd_inference_requests_total", outcome="cancelled") == 0
    r = slow.infer("slow1", body(3))
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [3.0, 4.0]
    slow.assert_healthy()


def read_reply(s):
    """One HTTP/1.1 reply (Content-Length framed) from s: status, body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = int([h.split(b":", 1)[1] for h in head.split(b"\r\n")
                  if h.lower().startswith(b"content-length:")][0])
    while len(rest) < length:
        chunk = s.recv(65536)
        assert chunk, rest
        rest += chunk
    return int(head.split(b" ", 2)[1]), json.loads(rest[:length])


def test_a_client_that_only_shut_its_sending_half_reads_its_answer(slow):
    """shutdown(SHUT_WR) after a request (nc -N) ends the client's data, which is all the
    server sees of a client that left: a request that was already running is answered with
    its result (it was answered 503 although it ran and counted as a success), and one still
    queued is cancelled and answered 503, which this client reads."""
    running = socket.create_connection(("127.0.0.1", slow.port), timeout=HTTP_TIMEOUT_S)
    running.sendall(raw_request(1))
    wait_running(slow)
    queued = socket.create_connection(("127.0.0.1", slow.port), timeout=HTTP_TIMEOUT_S)
    queued.sendall(raw_request(5))
    wait_for(lambda: counter(slow, "batchd_queue_depth") == 1, 5, "the second request queued")
    running.shutdown(socket.SHUT_WR)
    queued.shutdown(socket.SHUT_WR)
    status, reply = read_reply(running)
    assert status == 200, reply
    assert reply["outputs"][0]["data"] == [1.0, 2.0]
    status, reply = read_reply(queued)
    assert (status, reply) == (503, {"error": "the client closed the connection"})
    running.close()
    queued.close()
    assert counter(slow, "batchd_inference_requests_total", outcome="cancelled") == 1
    assert counter(slow, "batchd_inference_requests_total", outcome="success") == 1
    slow.assert_healthy()
