"""Triton's statistics extension: GET /v2/models/stats, /v2/models/{m}/stats and
/v2/models/{m}/versions/{v}/stats, in Triton's JSON shape, with values equal to the
Prometheus counters after known traffic."""
import time

import pytest

from conftest import error_message, tensor

FAIL_OUTCOMES = ("error", "timeout", "cancelled", "rejected", "invalid")
DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


def sim_model(repo, name, max_batch_size=8, latency_us=1000, extra=None):
    return repo.add_sim(name, [("INPUT0", "FP32", [2])], max_batch_size=max_batch_size,
                        latency_us=latency_us, extra=extra)


def rows_body(rows):
    return {"inputs": [tensor("INPUT0", "FP32", [rows, 2], [float(i) for i in range(2 * rows)])]}


@pytest.fixture(scope="module")
def client(start_server):
    repo = start_server.repo("stats")
    sim_model(repo, "st")
    sim_model(repo, "idle")
    sim_model(repo, "broken", extra={"sim": {"latency_us": 0, "per_item_us": 0,
                                              "fail_rate": 1.0}})
    sim_model(repo, "picky")
    c = start_server(repo)
    # Known traffic, one request at a time so each forms its own batch:
    # st: 5 batches of 1 row and 2 of 3 rows; broken: 3 failed batches.
    for _ in range(5):
        assert c.infer("st", rows_body(1)).status_code == 200
    for _ in range(2):
        assert c.infer("st", rows_body(3)).status_code == 200
    for _ in range(3):
        assert c.infer("broken", rows_body(1)).status_code == 500
    # picky: two requests refused for their inputs (400), which Triton counts as failed.
    wrong_count = {"inputs": [tensor("INPUT0", "FP32", [1, 2], [1.0, 2.0, 3.0])]}
    wrong_name = {"inputs": [tensor("INPUT9", "FP32", [1, 2], [1.0, 2.0])]}
    for body in (wrong_count, wrong_name):
        assert c.infer("picky", body).status_code == 400
    return c


def check_shape(ms):
    assert set(ms) >= {"name", "version", "last_inference", "inference_count",
                       "execution_count", "inference_stats", "batch_stats"}, ms
    for key in DURATIONS:
        d = ms["inference_stats"][key]
        assert set(d) == {"count", "ns"} and all(isinstance(v, int) and v >= 0
                                                 for v in d.values()), (key, d)
    for b in ms["batch_stats"]:
        assert set(b) == {"batch_size", "compute_input", "compute_infer", "compute_output"}, b


def one(client, path):
    r = client.get(path)
    assert r.status_code == 200, r.text
    stats = r.json()["model_stats"]
    assert len(stats) == 1, stats
    check_shape(stats[0])
    return stats[0]


def test_model_stats_match_prometheus(client):
    ms = one(client, "/v2/models/st/stats")
    samples = client.metrics()

    def prom(name, **labels):
        v = samples.get((name, frozenset(dict(model="st", version="1", **labels).items())))
        assert v is not None, (name, labels)
        return int(v)

    assert (ms["name"], ms["version"]) == ("st", "1")
    assert ms["inference_count"] == 11 == prom("batchd_inference_items_total")
    assert ms["execution_count"] == 7 == prom("batchd_inference_executions_total")
    st = ms["inference_stats"]
    assert st["success"]["count"] == 7 == prom("batchd_inference_requests_total",
                                               protocol="http", outcome="success")
    assert st["fail"]["count"] == 0 == sum(
        prom("batchd_inference_requests_total", protocol="http", outcome=o) for o in FAIL_OUTCOMES)
    assert prom("batchd_batch_size_count") == ms["execution_count"]
    assert prom("batchd_batch_size_sum") == ms["inference_count"]
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert st[key]["count"] == 7, (key, st[key])
    # Each batch sleeps latency_us = 1 ms in the sim backend.
    assert st["compute_infer"]["ns"] >= 7 * 1000000, st["compute_infer"]
    assert st["success"]["ns"] >= st["compute_infer"]["ns"], st
    now_ms = time.time() * 1000
    assert now_ms - 120000 < ms["last_inference"] <= now_ms + 1000, ms["last_inference"]


def test_duration_histograms_match_the_stats(client):
    """The histograms observe successful requests, as the statistics' success, queue and
    compute_* do: the same counts, and the same sums (each side reads its own clock, a few
    instructions apart: 5 ms of slack covers a preemption between them)."""
    st = one(client, "/v2/models/st/stats")["inference_stats"]
    samples = client.metrics()

    def prom(name, model="st"):
        return samples[(name, frozenset(dict(model=model, version="1").items()))]

    compute_ns = sum(st[k]["ns"] for k in ("compute_input", "compute_infer", "compute_output"))
    for hist, ns in (("batchd_request_duration_seconds", st["success"]["ns"]),
                     ("batchd_queue_duration_seconds", st["queue"]["ns"]),
                     ("batchd_compute_duration_seconds", compute_ns)):
        assert prom(hist + "_count") == 7, hist
        assert abs(prom(hist + "_sum") * 1e9 - ns) <= 5e6, (hist, prom(hist + "_sum"), ns)
    # The failed requests are in the statistics' fail, not in the histograms.
    for hist in ("batchd_request_duration_seconds", "batchd_compute_duration_seconds"):
        assert prom(hist + "_count", model="broken") == 0, hist


def test_batch_stats_by_batch_size(client):
    ms = one(client, "/v2/models/st/stats")
    by_size = {b["batch_size"]: b for b in ms["batch_stats"]}
    assert sorted(by_size) == [1, 3], ms["batch_stats"]
    assert by_size[1]["compute_infer"]["count"] == 5
    assert by_size[3]["compute_infer"]["count"] == 2
    for size, n in ((1, 5), (3, 2)):
        b = by_size[size]
        assert b["compute_input"]["count"] == n and b["compute_output"]["count"] == n, b
        assert b["compute_infer"]["ns"] >= n * 1000000, b


def test_batch_stats_keep_every_size_after_a_reload_lowers_max_batch_size(start_server_fn):
    """The counters outlive a reload, and so do the batch sizes that ran: a reload down to
    max_batch_size 2 still reports the batches of 3, 4 and 5 rows, as /metrics does."""
    repo = start_server_fn.repo("stats-reload")
    sim_model(repo, "rl", latency_us=0)
    c = start_server_fn(repo, ["--model-control", "explicit"])
    assert c.post("/v2/repository/models/rl/load").status_code == 200
    for rows in range(1, 6):
        assert c.infer("rl", rows_body(rows)).status_code == 200
    sim_model(repo, "rl", max_batch_size=2, latency_us=0)
    assert c.post("/v2/repository/models/rl/load").status_code == 200
    assert c.get("/v2/models/rl").json()["max_batch_size"] == 2
    sizes = {b["batch_size"]: b["compute_infer"]["count"]
             for b in one(c, "/v2/models/rl/stats")["batch_stats"]}
    assert sizes == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}, sizes


def test_failures_count_as_fail(client):
    ms = one(client, "/v2/models/broken/stats")
    samples = client.metrics()
    fails = sum(int(samples.get(("batchd_inference_requests_total",
                                 frozenset(dict(model="broken", version="1",
                                                protocol="http", outcome=o).items())), 0))
                for o in FAIL_OUTCOMES)
    assert ms["inference_stats"]["fail"]["count"] == 3 == fails
    assert ms["inference_stats"]["success"]["count"] == 0


def test_requests_refused_for_their_inputs_count_as_fail(client):
    ms = one(client, "/v2/models/picky/stats")
    invalid = client.metrics().get(("batchd_inference_requests_total",
                                    frozenset(dict(model="picky", version="1", protocol="http",
                                                   outcome="invalid").items())))
    st = ms["inference_stats"]
    assert st["fail"]["count"] == 2 == int(invalid), (st, invalid)
    assert st["success"]["count"] == 0 and ms["execution_count"] == 0, ms


def test_version_and_all_models_endpoints(client):
    by_version = one(client, "/v2/models/st/versions/1/stats")
    assert by_version == one(client, "/v2/models/st/stats")
    r = client.get("/v2/models/stats")
    assert r.status_code == 200
    stats = r.json()["model_stats"]
    for ms in stats:
        check_shape(ms)
    names = [(ms["name"], ms["version"]) for ms in stats]
    assert names == [("broken", "1"), ("idle", "1"), ("picky", "1"), ("st", "1")], names
    idle = [ms for ms in stats if ms["name"] == "idle"][0]
    assert idle["inference_count"] == 0 and idle["last_inference"] == 0
    assert idle["batch_stats"] == []


def test_stats_errors(client):
    assert "nope" in error_message(client.get("/v2/models/nope/stats"), 400)
    assert "7" in error_message(client.get("/v2/models/st/versions/7/stats"), 400)
    error_message(client.post("/v2/models/st/stats"), 405)
    error_message(client.post("/v2/models/stats"), 405)
