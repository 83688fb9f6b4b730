"""GET /metrics: Prometheus text with exact counter values after known traffic."""
import pytest

from conftest import parse_metrics, tensor

FAMILIES = {
    "batchd_inference_requests_total": "counter",
    "batchd_inference_items_total": "counter",
    "batchd_inference_executions_total": "counter",
    "batchd_batch_size": "histogram",
    "batchd_queue_duration_seconds": "histogram",
    "batchd_compute_duration_seconds": "histogram",
    "batchd_request_duration_seconds": "histogram",
    "batchd_queue_depth": "gauge",
}


@pytest.fixture(scope="module")
def client(start_server):
    repo = start_server.repo()
    repo.add_sim("counted", [("INPUT0", "FP32", [4])], max_batch_size=8, latency_us=1000)
    repo.add_sim("idle", [("INPUT0", "FP32", [4])], max_batch_size=8)
    return start_server(repo)


def key(name, **labels):
    return (name, frozenset(labels.items()))


def test_metrics_content_type_and_format(client):
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    text = r.text
    parse_metrics(text)  # well formed, HELP/TYPE once per family
    for fam, typ in FAMILIES.items():
        assert "# TYPE %s %s" % (fam, typ) in text, fam
        assert "# HELP %s " % fam in text, fam


def test_exact_counts_after_known_traffic(client):
    lab = {"model": "counted", "version": "1"}
    # 4 single-row successes and one of 2 rows, sent one after another.
    for i in range(4):
        r = client.infer("counted", {"inputs": [tensor("INPUT0", "FP32", [1, 4], [float(i)] * 4)]})
        assert r.status_code == 200, r.text
    r = client.infer("counted", {"inputs": [tensor("INPUT0", "FP32", [2, 4], [1.0] * 8)]})
    assert r.status_code == 200, r.text
    # 4 invalid requests for this model (FP16, a datatype batchd does not take, was a 400
    # counted nowhere).
    for body in ({"inputs": [tensor("INPUT0", "FP32", [1, 4], [1.0] * 3)]},
                 {"inputs": [tensor("INPUT9", "FP32", [1, 4], [1.0] * 4)]},
                 {"inputs": [tensor("INPUT0", "INT8", [1, 4], [1] * 4)]},
                 {"inputs": [tensor("INPUT0", "FP16", [1, 4], [1.0] * 4)]}):
        assert client.infer("counted", body).status_code == 400
    m = client.metrics()
    assert m[key("batchd_inference_requests_total", protocol="http", outcome="success", **lab)] == 5
    assert m[key("batchd_inference_requests_total", protocol="http", outcome="invalid", **lab)] == 4
    assert m[key("batchd_inference_requests_total", protocol="http", outcome="rejected", **lab)] == 0
    assert m[key("batchd_inference_items_total", **lab)] == 6
    assert m[key("batchd_inference_executions_total", **lab)] == 5
    assert m[key("batchd_batch_size_count", **lab)] == 5
    assert m[key("batchd_batch_size_sum", **lab)] == 6
    assert m[key("batchd_batch_size_bucket", le="1", **lab)] == 4
    assert m[key("batchd_batch_size_bucket", le="2", **lab)] == 5
    assert m[key("batchd_batch_size_bucket", le="+Inf", **lab)] == 5
    for h in ("batchd_request_duration_seconds", "batchd_queue_duration_seconds",
              "batchd_compute_duration_seconds"):
        assert m[key(h + "_count", **lab)] == 5, h
        assert m[key(h + "_bucket", le="+Inf", **lab)] == 5, h
        assert m[key(h + "_sum", **lab)] >= 0, h
    # Compute took at least the sim's 1 ms latency per execution.
    assert m[key("batchd_compute_duration_seconds_sum", **lab)] >= 0.005 * 0.99
    assert m[key("batchd_request_duration_seconds_sum", **lab)] >= 0.005 * 0.99
    assert m[key("batchd_queue_depth", **lab)] == 0


def test_every_outcome_listed_and_histograms_monotonic(client):
    m = client.metrics()
    for model in ("counted", "idle"):
        lab = {"model": model, "version": "1"}
        outcomes = {dict(ls)["outcome"] for (n, ls) in m
                    if n == "batchd_inference_requests_total" and dict(ls).get("model") == model}
        assert {"success", "rejected", "invalid"} <= outcomes, outcomes
        # Every protocol is listed for every model, whichever front ends run (no --redis
        # here): 3 protocols x 6 outcomes.
        series = [dict(ls) for (n, ls) in m
                  if n == "batchd_inference_requests_total" and dict(ls).get("model") == model]
        assert {s["protocol"] for s in series} == {"http", "websocket", "redis"}, series
        assert len(series) == 18, series
        assert m[key("batchd_queue_depth", **lab)] == 0
        for h in ("batchd_batch_size", "batchd_request_duration_seconds"):
            buckets = sorted(((float(dict(ls)["le"]), v) for (n, ls), v in m.items()
                              if n == h + "_bucket" and dict(ls).get("model") == model),
                             key=lambda t: t[0])
            assert buckets and buckets[-1][0] == float("inf")
            vals = [v for _, v in buckets]
            assert vals == sorted(vals), (h, buckets)
            assert vals[-1] == m[key(h + "_count", **lab)]
    idle = {"model": "idle", "version": "1"}
    assert m[key("batchd_inference_requests_total", protocol="http", outcome="success", **idle)] == 0
    assert m[key("batchd_inference_items_total", **idle)] == 0
    assert m[key("batchd_inference_executions_total", **idle)] == 0


def test_unknown_model_is_not_a_metrics_series(client):
    client.infer("ghost_model", {"inputs": []})
    m = client.metrics()
    assert not any(dict(ls).get("model") == "ghost_model" for (_, ls) in m)


def test_metrics_wrong_method(client):
    assert client.post("/metrics", data=b"").status_code == 405
