"""Connection limits: at --max-connections the server stops accepting (no busy loop) until a
connection closes, counts the refusal, and then serves the waiting client."""
import os
import socket
import time

import pytest

from conftest import read_head


@pytest.fixture(scope="module")
def client(start_server):
    repo = start_server.repo()
    repo.add_sim("lim", [("INPUT0", "FP32", [1])], max_batch_size=1)
    return start_server(repo, args=["--max-connections", "3"])


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get_live(s):
    s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    data = read_head(s)
    return data.split(b" ", 2)[1] if data else b""


def test_at_the_limit_accepting_waits_without_spinning(client):
    port = client.server.port
    refused0 = client.metric("batchd_connections_refused_total")
    client.s.close()  # the client's kept-alive connection would count as one of the three
    time.sleep(0.3)
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    try:
        for s in held:
            assert get_live(s) == b"200"
        extra = socket.create_connection(("127.0.0.1", port), timeout=5)  # the backlog takes it
        extra.settimeout(0.5)
        extra.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        cpu0 = cpu_seconds(client.server.proc.pid)
        with pytest.raises(socket.timeout):
            extra.recv(4096)  # not accepted while three are open
        time.sleep(1.0)
        assert cpu_seconds(client.server.proc.pid) - cpu0 < 0.3, "the accept loop spins"
        held.pop().close()
        extra.settimeout(5)
        data = extra.recv(4096)
        assert data.split(b" ", 2)[1] == b"200", data
        extra.close()
    finally:
        for s in held:
            s.close()
    # One pause, however many 100 ms retries it took while `extra` waited.
    assert client.metric("batchd_connections_refused_total") == refused0 + 1


def test_out_of_descriptors_pauses_accepting_without_spinning(start_server_fn, tmp_path,
                                                               monkeypatch):
    """Under a hard descriptor limit of 64 (so the server cannot raise it), 80 clients connect:
    the ones past the limit wait in the backlog, the loop does not spin, and once some close
    the waiting ones are served."""
    import conftest
    wrapper = tmp_path / "batchd-ulimit"
    wrapper.write_text("#!/bin/sh\nulimit -n 64\nexec %s \"$@\"\n" % conftest.BATCHD_BIN)
    wrapper.chmod(0o755)
    monkeypatch.setattr(conftest, "BATCHD_BIN", str(wrapper))
    repo = start_server_fn.repo()
    repo.add_sim("lim", [("INPUT0", "FP32", [1])], max_batch_size=1)
    client = start_server_fn(repo, args=["--max-connections", "1000"])
    client.s.close()
    pid = client.server.proc.pid
    port = client.server.port
    conns = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(80)]
    try:
        served = 0
        for s in conns[:40]:
            assert get_live(s) == b"200"
            served += 1
        time.sleep(0.3)
        cpu0 = cpu_seconds(pid)
        time.sleep(1.0)
        assert cpu_seconds(pid) - cpu0 < 0.3, "the accept loop spins out of descriptors"
        for s in conns[:40]:
            s.close()
        for s in conns[40:]:
            assert get_live(s) == b"200"
    finally:
        for s in conns:
            s.close()
    assert "accept paused" in client.server.log()
    assert client.metric("batchd_connections_refused_total") >= 1
