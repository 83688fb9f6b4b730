"""Scheduling under pressure (issue 3), against the real server with sim models: deadlines
that fire while the only instance is busy, priority levels, sim_fail and sim.fail_rate fault
injection, the circuit breaker and its probe, and a 4x overload where every admitted request
is answered by its deadline or refused quickly.

Times are generous where a loaded 2-core CI machine (or an ASan build) could be slow; every
bound still separates the right behaviour from the wrong one by a wide margin."""
import os
import re
import threading
import time

import requests

from conftest import BATCHD_BIN, HTTP_TIMEOUT_S, error_message, run_threads, tensor


def body(x, **params):
    b = {"inputs": [tensor("INPUT0", "FP32", [1, 2], x)]}
    if params:
        b["parameters"] = params
    return b


def post(client, model, b, timeout=HTTP_TIMEOUT_S, session=None):
    s = session or requests
    return s.post(client.url(client.infer_path(model)), json=b, timeout=timeout)


def requests_total(client, model, outcome):
    return client.metric("batchd_inference_requests_total", model=model, version="1",
                         outcome=outcome)


def wait_queue_depth(client, model, depth, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if client.metric("batchd_queue_depth", model=model, version="1") >= depth:
            return
        time.sleep(0.01)
    raise AssertionError("queue of %s never reached %d" % (model, depth))


def wait_running(client, model, timeout=10.0):
    """Until one request of `model` runs on its idle instance (in flight, none queued)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (client.metric("batchd_inference_inflight", model=model, version="1") == 1
                and client.metric("batchd_queue_depth", model=model, version="1") == 0):
            return
        time.sleep(0.01)
    raise AssertionError("no request of %s started running" % model)


def test_timeout_fires_while_the_only_instance_is_busy(start_server_fn):
    repo = start_server_fn.repo()
    repo.add_sim("slow", [("INPUT0", "FP32", [2])], max_batch_size=8,
                 dynamic_batching={"max_queue_delay_us": 0}, instances=1, latency_us=3000000)
    client = start_server_fn(repo)
    first = {}

    def run_first():
        first["r"] = post(client, "slow", body([1.0, 2.0]))

    t = threading.Thread(target=run_first)
    t.start()
    # The first request is taken at once (nothing queued, instance idle) and runs for 3 s.
    wait_running(client, "slow")
    t0 = time.monotonic()
    r = post(client, "slow", body([3.0, 4.0], timeout=50000))
    took = time.monotonic() - t0
    msg = error_message(r, 503)
    assert msg == "request timeout expired in queue", msg
    assert took < 1.0, "the 50 ms timeout was answered after %.3f s" % took
    t.join(HTTP_TIMEOUT_S)
    assert first["r"].status_code == 200, first["r"].text
    assert first["r"].json()["outputs"][0]["data"] == [1.0, 2.0]
    assert requests_total(client, "slow", "timeout") == 1
    assert requests_total(client, "slow", "success") == 1
    # Never executed: one batch, one item.
    assert client.metric("batchd_inference_items_total", model="slow", version="1") == 1
    assert client.metric("batchd_inference_executions_total", model="slow", version="1") == 1


def test_high_priority_runs_in_the_next_batch(start_server_fn):
    repo = start_server_fn.repo()
    # Batches of up to 64 taking 3 s each: while the blocker runs, 100 low-priority
    # requests queue, then the high one. In FIFO order the high one would be in the third
    # batch (64 low ones first, then 36 and it); by priority it is in the second.
    repo.add_sim("prio", [("INPUT0", "FP32", [2])], max_batch_size=64,
                 dynamic_batching={"max_queue_delay_us": 0, "max_queue_size": 256,
                                   "priority_levels": 2, "default_priority_level": 2},
                 instances=1, latency_us=3000000)
    client = start_server_fn(repo)
    done = {}
    lock = threading.Lock()

    def send(key, x, **params):
        r = post(client, "prio", body(x, **params))
        with lock:
            done[key] = (time.monotonic(), r)

    blocker = threading.Thread(target=send, args=("blocker", [0.0, 0.0]))
    blocker.start()
    wait_running(client, "prio")  # the blocker runs (3 s); everything below queues behind it
    lows = [threading.Thread(target=send, args=(("low", i), [float(i), 0.0]))
            for i in range(100)]
    for t in lows:
        t.start()
    wait_queue_depth(client, "prio", 100)
    high_x = [7777.0, 1.0]
    send("high", high_x, priority=1)
    for t in lows + [blocker]:
        t.join(HTTP_TIMEOUT_S)
    t_high, r_high = done["high"]
    assert r_high.status_code == 200, r_high.text
    assert r_high.json()["outputs"][0]["data"] == high_x
    lows_done = [done[("low", i)] for i in range(100)]
    assert all(r.status_code == 200 for _, r in lows_done)
    # The high one shares the next batch with 63 low ones; the other 37 come a batch later.
    # Batches end 3 s apart; half of that separates "same batch" from "another batch" even
    # when 64 client threads wake at once on a busy machine.
    before = sum(1 for t, _ in lows_done if t < t_high - 1.5)
    assert before == 0, "%d low-priority requests finished before the high one" % before
    after = sum(1 for t, _ in lows_done if t > t_high + 1.5)
    assert after == 37, "only %d low-priority requests finished after the high one" % after
    assert client.metric("batchd_inference_items_total", model="prio", version="1") == 102


def test_sim_fail_fails_every_request_of_its_batch(start_server_fn):
    repo = start_server_fn.repo()
    repo.add_sim("flaky", [("INPUT0", "FP32", [2])], max_batch_size=8,
                 dynamic_batching={"max_queue_delay_us": 300000}, instances=1,
                 latency_us=10000)
    client = start_server_fn(repo)

    def one(i):
        params = {"sim_fail": True} if i == 2 else {}
        b = body([float(i), 0.0], **params)
        b["id"] = "r%d" % i
        return post(client, "flaky", b)

    results = run_threads(one, [(i,) for i in range(4)])
    for r in results:
        msg = error_message(r, 500)
        assert msg == ("sim model: the batch failed on purpose because request 'r2' set "
                       "parameters.sim_fail"), msg
    r = post(client, "flaky", body([5.0, 6.0]))
    assert r.status_code == 200, r.text
    assert requests_total(client, "flaky", "error") == 4
    assert requests_total(client, "flaky", "success") == 1
    # Anything but a boolean is refused before it is queued, alone.
    for bad in (1, "true", None, [True]):
        msg = error_message(post(client, "flaky", body([1.0, 2.0], sim_fail=bad)), 400)
        assert msg == "parameters.sim_fail must be true or false", msg
    assert requests_total(client, "flaky", "invalid") == 4


def test_fail_rate_trips_the_breaker_then_a_probe(start_server_fn):
    repo = start_server_fn.repo()
    repo.add_sim("broken", [("INPUT0", "FP32", [2])], max_batch_size=8, instances=1,
                 latency_us=1000,
                 extra={"sim": {"latency_us": 1000, "per_item_us": 0, "fail_rate": 1.0},
                        "circuit_breaker": {"consecutive_failures": 3,
                                            "cooldown_us": 3000000}})
    client = start_server_fn(repo)
    s = requests.Session()
    for i in range(3):
        msg = error_message(post(client, "broken", body([1.0, 2.0]), session=s), 500)
        assert msg == "sim model: injected failure (sim.fail_rate 1)", msg
    t0 = time.monotonic()
    r = post(client, "broken", body([1.0, 2.0]), session=s)
    msg = error_message(r, 503)
    assert time.monotonic() - t0 < 1.0, "the open breaker must answer at once"
    # Between 2 and 3 s of cool-down left, in whole seconds rounded up (RFC 9110 §10.2.3).
    assert r.headers["Retry-After"] == "3"
    assert re.match(r"model 'broken' version 1 is unavailable for another [23]\.\d s after",
                    msg), msg
    assert msg.endswith(" s after 3 failed batches in a row; last error: sim model: injected "
                        "failure (sim.fail_rate 1)"), msg
    # The model's ready endpoint gives the breaker's sentence as it is (it names the model).
    ready = error_message(client.get("/v2/models/broken/ready"), 503)
    assert re.match(r"model 'broken' version 1 is unavailable for another [0-3]\.\d s after",
                    ready), ready
    time.sleep(3.1)
    # After the cooldown one probe runs (and fails: the backend is still broken)...
    msg = error_message(post(client, "broken", body([1.0, 2.0]), session=s), 500)
    assert msg == "sim model: injected failure (sim.fail_rate 1)", msg
    # ...which opens the breaker again at once.
    msg = error_message(post(client, "broken", body([1.0, 2.0]), session=s), 503)
    assert "after 4 failed batches in a row" in msg, msg
    assert requests_total(client, "broken", "error") == 4
    assert requests_total(client, "broken", "rejected") == 2
    assert client.metric("batchd_inference_executions_total", model="broken", version="1") == 0


def test_breaker_answers_what_is_queued_when_it_opens(start_server_fn):
    """Ten requests queued one behind the other on a failing model (one row per batch, 300 ms
    each): the breaker opens after 2 failed batches, and the 8 still queued get its 503 at
    once instead of failing one by one over 2.4 s. After the cooldown, one probe runs while
    the others wait behind it; its failure answers them with the 503 too."""
    repo = start_server_fn.repo()
    repo.add_sim("failing", [("INPUT0", "FP32", [2])], max_batch_size=1, instances=1,
                 extra={"sim": {"latency_us": 300000, "per_item_us": 0, "fail_rate": 1.0},
                        "dynamic_batching": {"max_queue_delay_us": 0},
                        "circuit_breaker": {"consecutive_failures": 2,
                                            "cooldown_us": 1500000}})
    client = start_server_fn(repo)

    def burst(n):
        out = [None] * n
        t0 = time.monotonic()

        def one(i):
            r = post(client, "failing", body([1.0, float(i)]))
            out[i] = (r.status_code, time.monotonic() - t0, r.json()["error"],
                      r.headers.get("Retry-After"))

        threads = []
        for i in range(n):
            threads.append(threading.Thread(target=one, args=(i,)))
            threads[-1].start()
            time.sleep(0.02)  # queued in this order
        for t in threads:
            t.join(timeout=30)
        return sorted(out, key=lambda x: x[0])  # the 500s first, then the 503s

    got = burst(10)
    assert [code for code, *_ in got] == [500, 500] + [503] * 8, got
    # The 8 are answered when the second batch fails (~0.6 s), not one by one up to 3 s.
    second_failure = max(t for code, t, *_ in got if code == 500)
    assert max(t for _, t, *_ in got) < second_failure + 0.5, got
    assert all("after 2 failed batches in a row" in e for _, _, e, _ in got[2:]), got
    # The 1.5 s cool-down, in whole seconds rounded up; the backend's 500s carry none.
    assert [retry for *_, retry in got] == [None, None] + ["2"] * 8, got
    assert requests_total(client, "failing", "error") == 2
    assert requests_total(client, "failing", "rejected") == 8
    time.sleep(1.6)
    got = burst(4)
    assert [code for code, *_ in got] == [500, 503, 503, 503], got
    assert all("after 3 failed batches in a row" in e for _, _, e, _ in got[1:]), got
    assert requests_total(client, "failing", "error") == 3
    assert requests_total(client, "failing", "rejected") == 11


def test_a_batch_running_when_the_breaker_opens_does_not_close_it(start_server_fn):
    """Two instances, 1 s batches: a failing one opens the breaker at ~1 s; a good one started
    at 0.5 s succeeds at ~1.5 s. That success says nothing of the cool-down: a request at
    ~1.7 s still gets the breaker's 503 (it closed the breaker before)."""
    repo = start_server_fn.repo()
    repo.add_sim("cb2", [("INPUT0", "FP32", [2])], max_batch_size=1, instances=2,
                 extra={"sim": {"latency_us": 1000000, "per_item_us": 0},
                        "dynamic_batching": {"max_queue_delay_us": 0},
                        "circuit_breaker": {"consecutive_failures": 1,
                                            "cooldown_us": 6000000}})
    client = start_server_fn(repo)
    out = {}

    def send(name, b):
        out[name] = post(client, "cb2", b).status_code

    bad = threading.Thread(target=send, args=("bad", body([1.0, 2.0], sim_fail=True)))
    bad.start()
    time.sleep(0.5)
    good = threading.Thread(target=send, args=("good", body([3.0, 4.0])))
    good.start()
    bad.join(timeout=30)
    good.join(timeout=30)
    assert out == {"bad": 500, "good": 200}, out
    r = post(client, "cb2", body([5.0, 6.0]))
    assert r.status_code == 503, r.text
    assert "after 1 failed batches in a row" in r.json()["error"], r.text


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_overload_4x_capacity_meets_deadlines_or_refuses_fast(start_server_fn):
    # Capacity: batches of 4 every 50 ms = 80 requests/s. Offered: 320/s for 3 s, open loop.
    latency_s = 0.05
    timeout_s = 0.3
    repo = start_server_fn.repo()
    repo.add_sim("busy", [("INPUT0", "FP32", [2])], max_batch_size=4,
                 dynamic_batching={"max_queue_delay_us": 0, "max_queue_size": 32},
                 instances=1, latency_us=int(latency_s * 1e6))
    client = start_server_fn(repo)
    pid = client.server.proc.pid
    rate = 320.0
    duration = 3.0
    n_total = int(rate * duration)
    start = time.monotonic() + 0.2
    lock = threading.Lock()
    next_i = [0]
    results = []

    def worker():
        s = requests.Session()
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= n_total:
                return
            at = start + i / rate
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t0 = time.monotonic()
            r = post(client, "busy", body([float(i), 1.0], timeout=int(timeout_s * 1e6)),
                     session=s)
            dt = time.monotonic() - t0
            with lock:
                results.append((i, r.status_code, dt, r.content))

    rss0 = _rss_kib(pid)
    threads = [threading.Thread(target=worker) for _ in range(128)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == n_total
    ok = [x for x in results if x[1] == 200]
    refused = [x for x in results if x[1] == 503]
    assert len(ok) + len(refused) == n_total, sorted({x[1] for x in results})
    # The instance stayed busy: about capacity * duration successes, far fewer than offered.
    assert 0.5 * 80 * duration <= len(ok) <= 0.6 * n_total, len(ok)
    # Client-side times include 128 Python threads sharing the GIL and 2 cores with the
    # server (a success was once seen at 1.7 s client-side); here they only prove nothing
    # hangs. The server's own histogram below is the exact deadline check, and the median
    # check below keeps the typical case honest.
    slack = 3.0
    for i, _, dt, content in ok:
        # Admitted and started before its deadline, then one batch: never later than that.
        assert dt <= timeout_s + latency_s + slack, "request %d took %.3f s" % (i, dt)
    for i, _, dt, content in refused:
        # Queue full: at once; deadline passed in the queue: at the deadline.
        assert dt <= timeout_s + slack, "a 503 took %.3f s" % dt
    # Typical success, client side: deadline + one batch + 0.5 s of client overhead (measured
    # medians here: 0.2-0.6 s, depending on what else the machine runs).
    ok_fast = sorted(dt for _, _, dt, _ in ok)
    assert ok_fast[len(ok_fast) // 2] <= timeout_s + latency_s + 0.5, ok_fast[len(ok_fast) // 2]
    kinds = {b"queue is full" in c or b"request timeout expired in queue" in c
             for _, _, _, c in refused}
    assert kinds == {True}, "503 for another reason"
    m = client.metrics()
    lab = {"model": "busy", "version": "1"}

    def get(name, **extra):
        return m[(name, frozenset(dict(lab, **extra).items()))]

    assert get("batchd_inference_requests_total", protocol="http", outcome="success") == len(ok)
    assert (get("batchd_inference_requests_total", protocol="http", outcome="rejected") +
            get("batchd_inference_requests_total", protocol="http", outcome="timeout")) == len(refused)
    assert get("batchd_queue_depth") == 0
    # Server side, every success took at most deadline + one batch (0.35 s): all of them are
    # in the 0.5 s bucket of the end-to-end histogram.
    assert get("batchd_request_duration_seconds_bucket", le="0.5") == len(ok)
    # Bounded memory: a few MB at most for this run (the queue holds 32 small requests).
    if "asan" not in os.path.basename(os.path.dirname(os.path.abspath(BATCHD_BIN))):
        assert _rss_kib(pid) - rss0 < 64 * 1024
