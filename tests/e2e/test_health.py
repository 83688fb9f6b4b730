"""Health, server and model metadata, routing errors (KServe v2 / Open Inference Protocol)."""
import re

import pytest

from conftest import error_message, raw_exchange


@pytest.fixture(scope="module")
def client(start_server):
    repo = start_server.repo()
    repo.add_sim("sim_batched", [("INPUT0", "FP32", [16])], max_batch_size=8)
    repo.add_sim("sim_nobatch", [("INPUT0", "INT32", [2, 3])], max_batch_size=0)
    repo.add_sim("sim_two", [("INPUT0", "FP32", [4]), ("INPUT1", "INT64", [2])], max_batch_size=4)
    return start_server(repo)


def test_live_and_ready(client):
    for path in ("/v2/health/live", "/v2/health/ready"):
        r = client.get(path)
        assert r.status_code == 200, path


def test_empty_health_replies_on_one_connection(client):
    """GET and HEAD of the health endpoints, pipelined on one connection: each reply is a 200
    head with Content-Length 0, no Content-Type (there is no body to have a type: a client that
    parses a reply typed application/json would fail on it) and nothing after it, and the
    connection serves the next."""
    paths = ["/v2/health/live", "/v2/health/ready", "/v2/health/live", "/v2/health/live"]
    methods = ["GET", "HEAD", "HEAD", "GET"]
    req = b"".join(b"%s %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (
        m.encode(), p.encode(), b"Connection: close\r\n" if i == 3 else b"")
        for i, (m, p) in enumerate(zip(methods, paths)))
    data = raw_exchange(client.server.port, req)
    heads = data.split(b"\r\n\r\n")
    assert heads[-1] == b"", data  # nothing after the last head: no body bytes anywhere
    assert len(heads) == 5, data
    for head in heads[:4]:
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 200 OK", head
        assert b"content-length: 0" in [ln.lower() for ln in lines[1:]], head
        assert not [ln for ln in lines[1:] if ln.lower().startswith(b"content-type:")], head


def test_server_metadata(client):
    r = client.get("/v2")
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "batchd"
    assert isinstance(body["version"], str) and re.match(r"^\d+\.\d+", body["version"])
    assert isinstance(body["extensions"], list)
    assert all(isinstance(e, str) and e for e in body["extensions"])


@pytest.mark.parametrize("path", ["/v2/models/sim_batched", "/v2/models/sim_batched/versions/1"])
def test_model_metadata_batched(client, path):
    r = client.get(path)
    assert r.status_code == 200
    md = r.json()
    assert md["name"] == "sim_batched"
    assert md["versions"] == ["1"]
    assert isinstance(md["platform"], str) and md["platform"]
    assert md["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 16]}]
    assert md["outputs"] == [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 16]}]


def test_model_metadata_without_batching(client):
    r = client.get("/v2/models/sim_nobatch")
    assert r.status_code == 200
    md = r.json()
    assert md["name"] == "sim_nobatch"
    assert md["versions"] == ["1"]
    assert md["inputs"] == [{"name": "INPUT0", "datatype": "INT32", "shape": [2, 3]}]
    assert md["outputs"] == [{"name": "OUTPUT0", "datatype": "INT32", "shape": [2, 3]}]


def test_model_metadata_two_inputs_in_order(client):
    md = client.get("/v2/models/sim_two").json()
    assert [(t["name"], t["datatype"], t["shape"]) for t in md["inputs"]] == [
        ("INPUT0", "FP32", [-1, 4]), ("INPUT1", "INT64", [-1, 2])]
    assert [(t["name"], t["datatype"], t["shape"]) for t in md["outputs"]] == [
        ("OUTPUT0", "FP32", [-1, 4]), ("OUTPUT1", "INT64", [-1, 2])]


@pytest.mark.parametrize("path", ["/v2/models/sim_batched/ready",
                                  "/v2/models/sim_nobatch/versions/1/ready"])
def test_model_ready(client, path):
    assert client.get(path).status_code == 200


def test_unknown_model_ready_is_400(client):
    msg = error_message(client.get("/v2/models/no_such_model/ready"), 400)
    assert "no_such_model" in msg


def test_unknown_version_ready_is_400(client):
    msg = error_message(client.get("/v2/models/sim_batched/versions/7/ready"), 400)
    assert "7" in msg


def test_unknown_model_metadata(client):
    r = client.get("/v2/models/no_such_model")
    assert r.status_code in (400, 404)
    msg = error_message(r, r.status_code)
    assert "no_such_model" in msg


def test_unknown_version_metadata(client):
    r = client.get("/v2/models/sim_batched/versions/9")
    assert r.status_code in (400, 404)
    error_message(r, r.status_code)


@pytest.mark.parametrize("path", ["/nope", "/v2/nope", "/v2/health/dead", "/v3/health/live",
                                  "/v2/models/sim_batched/infer/extra"])
def test_unknown_path_is_404(client, path):
    error_message(client.get(path), 404)


def test_get_on_infer_is_405(client):
    error_message(client.get("/v2/models/sim_batched/infer"), 405)


def test_post_on_live_is_405(client):
    error_message(client.post("/v2/health/live", data=b"{}"), 405)


def test_post_on_ready_is_405(client):
    error_message(client.post("/v2/health/ready", data=b"{}"), 405)


def test_http10_and_head_do_not_break_server(client):
    """A bare HTTP/1.0 request on a raw socket gets an answer and the connection closes."""
    data = raw_exchange(client.server.port, b"GET /v2/health/live HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1."), data[:100]
    assert data.split(b" ", 2)[1] == b"200"
    client.assert_healthy()
