"""Dynamic batching seen from outside: concurrent requests share executions, every reply is
its own input, requests with different non-batch shapes are never mixed, batches never
exceed max_batch_size."""
import numpy as np
import pytest
import requests

from conftest import HTTP_TIMEOUT_S, run_threads, tensor


@pytest.fixture(scope="module")
def client(start_server):
    repo = start_server.repo()
    repo.add_sim("batcher", [("INPUT0", "FP32", [4])], max_batch_size=8,
                 dynamic_batching={"max_queue_delay_us": 20000}, latency_us=50000)
    repo.add_sim("varlen", [("INPUT0", "FP32", [-1])], max_batch_size=8,
                 dynamic_batching={"max_queue_delay_us": 20000}, latency_us=20000)
    repo.add_sim("var2d", [("INPUT0", "INT32", [-1, 2]), ("INPUT1", "INT64", [-1])],
                 max_batch_size=8, dynamic_batching={"max_queue_delay_us": 20000},
                 latency_us=20000)
    repo.add_sim("rows3", [("INPUT0", "INT32", [2])], max_batch_size=8,
                 dynamic_batching={"max_queue_delay_us": 20000}, latency_us=30000)
    repo.add_sim("unbatched", [("INPUT0", "FP32", [2])], max_batch_size=8,
                 dynamic_batching=False, latency_us=20000)
    return start_server(repo)


def _post(client, model, body):
    r = requests.post(client.url(client.infer_path(model)), json=body, timeout=HTTP_TIMEOUT_S)
    return r.status_code, r.json()


def _labels(model):
    return {"model": model, "version": "1"}


def test_sixteen_concurrent_requests_share_executions(client):
    inputs = [[i * 10.0 + k + 0.5 for k in range(4)] for i in range(16)]
    bodies = [{"id": "r%d" % i, "inputs": [tensor("INPUT0", "FP32", [1, 4], x)]}
              for i, x in enumerate(inputs)]
    results = run_threads(lambda b: _post(client, "batcher", b), [(b,) for b in bodies])
    for i, (status, body) in enumerate(results):
        assert status == 200, body
        assert body["id"] == "r%d" % i
        out = body["outputs"][0]
        assert out["shape"] == [1, 4]
        assert out["data"] == inputs[i]
    m = client.metrics()
    lab = _labels("batcher")
    execs = m[("batchd_inference_executions_total", frozenset(lab.items()))]
    items = m[("batchd_inference_items_total", frozenset(lab.items()))]
    assert items == 16
    assert execs < 16, "16 concurrent requests ran in %d executions: no batching" % execs
    assert execs >= 2  # max_batch_size 8
    succ = m[("batchd_inference_requests_total",
              frozenset(dict(lab, protocol="http", outcome="success").items()))]
    assert succ == 16
    assert m[("batchd_batch_size_count", frozenset(lab.items()))] == execs
    assert m[("batchd_batch_size_sum", frozenset(lab.items()))] == 16
    assert m[("batchd_batch_size_bucket", frozenset(dict(lab, le="8").items()))] == execs


def test_different_shapes_never_mixed(client):
    lengths = [3, 5, 7, 3, 5, 7, 1, 8, 3, 5, 7, 2]
    bodies = []
    for i, n in enumerate(lengths):
        x = [float(i * 100 + k) for k in range(n)]
        bodies.append({"inputs": [tensor("INPUT0", "FP32", [1, n], x)]})
    results = run_threads(lambda b: _post(client, "varlen", b), [(b,) for b in bodies])
    for b, (status, body) in zip(bodies, results):
        assert status == 200, body
        out = body["outputs"][0]
        assert out["shape"] == b["inputs"][0]["shape"]
        assert out["data"] == b["inputs"][0]["data"]
    m = client.metrics()
    lab = frozenset(_labels("varlen").items())
    assert m[("batchd_inference_items_total", lab)] == len(lengths)


def test_different_shapes_two_inputs(client):
    bodies = []
    for i in range(10):
        a = 1 + i % 3
        b = 2 + i % 2
        x0 = np.arange(a * 2, dtype=np.int32).reshape(1, a, 2) + i * 1000
        x1 = np.arange(b, dtype=np.int64).reshape(1, b) - i * (2 ** 40)
        bodies.append({"inputs": [tensor("INPUT0", "INT32", [1, a, 2], x0.reshape(-1).tolist()),
                                  tensor("INPUT1", "INT64", [1, b], x1.reshape(-1).tolist())]})
    results = run_threads(lambda b: _post(client, "var2d", b), [(b,) for b in bodies])
    for b, (status, body) in zip(bodies, results):
        assert status == 200, body
        outs = {o["name"]: o for o in body["outputs"]}
        for k in (0, 1):
            assert outs["OUTPUT%d" % k]["shape"] == b["inputs"][k]["shape"]
            assert outs["OUTPUT%d" % k]["data"] == b["inputs"][k]["data"]


def test_multi_row_requests_respect_max_batch_size(client):
    bodies = []
    for i in range(8):
        x = [[i * 10 + r * 2, i * 10 + r * 2 + 1] for r in range(3)]
        bodies.append({"inputs": [tensor("INPUT0", "INT32", [3, 2], x)]})
    results = run_threads(lambda b: _post(client, "rows3", b), [(b,) for b in bodies])
    for b, (status, body) in zip(bodies, results):
        assert status == 200, body
        out = body["outputs"][0]
        assert out["shape"] == [3, 2]
        assert out["data"] == [v for row in b["inputs"][0]["data"] for v in row]
    m = client.metrics()
    lab = _labels("rows3")
    execs = m[("batchd_inference_executions_total", frozenset(lab.items()))]
    assert m[("batchd_inference_items_total", frozenset(lab.items()))] == 24
    assert execs >= 4  # at most 2 requests (6 rows) fit in a batch of 8
    assert execs < 8, "8 concurrent requests ran in %d executions: no batching" % execs
    # Every batch had at most 8 rows.
    assert m[("batchd_batch_size_bucket", frozenset(dict(lab, le="8").items()))] == execs
    assert m[("batchd_batch_size_bucket", frozenset(dict(lab, le="4").items()))] < execs


def test_dynamic_batching_off_runs_each_alone(client):
    bodies = [{"inputs": [tensor("INPUT0", "FP32", [1, 2], [float(i), -float(i)])]}
              for i in range(6)]
    results = run_threads(lambda b: _post(client, "unbatched", b), [(b,) for b in bodies])
    for b, (status, body) in zip(bodies, results):
        assert status == 200, body
        assert body["outputs"][0]["data"] == b["inputs"][0]["data"]
    m = client.metrics()
    lab = frozenset(_labels("unbatched").items())
    assert m[("batchd_inference_executions_total", lab)] == 6
    assert m[("batchd_inference_items_total", lab)] == 6
