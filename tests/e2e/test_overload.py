"""Overload: a bounded queue refuses work with 503 at once instead of queueing forever, and
the refusals are counted."""
import time

import requests

from conftest import HTTP_TIMEOUT_S, error_message, run_threads, tensor


def test_queue_full_gives_fast_503(start_server_fn):
    repo = start_server_fn.repo()
    repo.add_sim("tiny_queue", [("INPUT0", "FP32", [2])], max_batch_size=1,
                 dynamic_batching={"max_queue_delay_us": 0, "max_queue_size": 2},
                 instances=1, latency_us=1000000)
    client = start_server_fn(repo)

    def one(i):
        x = [float(i), float(i) + 0.5]
        t0 = time.monotonic()
        r = requests.post(client.url(client.infer_path("tiny_queue")),
                          json={"inputs": [tensor("INPUT0", "FP32", [1, 2], x)]},
                          timeout=HTTP_TIMEOUT_S)
        return r, time.monotonic() - t0, x

    results = run_threads(one, [(i,) for i in range(10)])
    ok = [(r, dt, x) for r, dt, x in results if r.status_code == 200]
    full = [(r, dt, x) for r, dt, x in results if r.status_code == 503]
    assert len(ok) + len(full) == 10, [r.status_code for r, _, _ in results]
    assert full, "10 concurrent requests into a queue of 2 with one 1 s instance: no 503"
    assert len(ok) >= 2, "the queue of 2 should have taken at least two requests"
    for r, dt, x in ok:
        assert r.json()["outputs"][0]["data"] == x
    for r, dt, _ in full:
        msg = error_message(r, 503)
        assert "queue" in msg.lower() or "overload" in msg.lower() or "full" in msg.lower(), msg
        # Refused at once, not after waiting behind the running batch, with a hint to retry.
        assert dt < 0.8, "a 503 took %.3f s" % dt
        assert r.headers.get("Retry-After") == "1", r.headers
    slowest_ok = max(dt for _, dt, _ in ok)
    # The last success ran after the others, 1 s each (less the threads' start skew).
    assert slowest_ok >= 1.0 * (len(ok) - 1), "successes did not queue behind each other"

    m = client.metrics()
    lab = {"model": "tiny_queue", "version": "1"}

    def req(outcome):
        return m[("batchd_inference_requests_total",
                  frozenset(dict(lab, protocol="http", outcome=outcome).items()))]

    assert req("rejected") == len(full)
    assert req("success") == len(ok)
    assert m[("batchd_queue_depth", frozenset(lab.items()))] == 0
    # The server recovers: the queue has room again.
    r = client.infer("tiny_queue", {"inputs": [tensor("INPUT0", "FP32", [1, 2], [1.0, 2.0])]})
    assert r.status_code == 200, r.text
