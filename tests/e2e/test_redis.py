"""Redis Streams ingest seen from outside (issue 9): `batchd serve --redis redis://HOST:PORT`
joins a consumer group on the streams a model's config.json "redis" section names, answers
every entry with one result entry (raw little-endian output bytes plus `.shape`/`.datatype`,
the metadata copied), acks it only after the result is written, takes over idle entries
(XAUTOCLAIM), dead-letters entries past max_deliveries, survives Redis restarts and drains on
SIGTERM.

Every test starts its own redis-server on a free loopback port (redis_util.RedisServer) and its
own batchd processes (sim models: no ONNX needed). python3-redis is the producer and checker.
Waits are generous and never assert on speed.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import numpy as np
import pytest
import requests

from conftest import (BATCHD_BIN, HTTP_TIMEOUT_S, binary_body, non_loopback_address,
                      ort_available, parse_infer_reply)

redis = pytest.importorskip("redis")
from redis_util import (REDIS_SERVER, TEST_CLIENT, RedisServer, answered,  # noqa: E402
                        count_results, free_port, frame, produce, results)

WAIT_S = 90.0  # bound on waiting for all results (the real time is seconds)
DIM = 16


def sim_model(repo, name, redis_cfg, latency_us=0, max_batch_size=32, extra=None, dim=DIM):
    cfg = {"redis": redis_cfg}
    if extra:
        cfg.update(extra)
    return repo.add_sim(name, [("INPUT0", "FP32", [dim])], max_batch_size=max_batch_size,
                        latency_us=latency_us, extra=cfg)


@pytest.fixture
def rsrv(tmp_path):
    srv = RedisServer(tmp_path / "redis").start()
    yield srv
    srv.stop()


def start_batchd(start_server_fn, repo, rsrv, consumer=None, extra_args=()):
    args = ["--redis", rsrv.url] + list(extra_args)
    if consumer:
        args += ["--redis-consumer", consumer]
    client = start_server_fn(repo, args)
    return client


def wait_for(pred, timeout=WAIT_S, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def wait_results(r, n, pattern="results:*", timeout=WAIT_S):
    return wait_for(lambda: count_results(r, pattern) >= n, timeout)


def group_pending(r, key, group="batchd"):
    for g in r.xinfo_groups(key):
        if g["name"].decode() == group:
            return g["pending"]
    return None


def total_pending(r, pattern="frames:*", group="batchd"):
    return sum(group_pending(r, k, group) or 0
               for k in r.scan_iter(match=pattern, _type="stream"))


def metric(client, name, **labels):
    return client.metric(name, **labels)


def settled(client, name, want, **labels):
    """The metric once it reads `want` (5 s at most): batchd counts a result written or an
    entry acked when Redis's reply comes back, just after a checker can see it in Redis."""
    wait_for(lambda: metric(client, name, **labels) == want, 5)
    return metric(client, name, **labels)


def check_all_answered(sent, res, allow_duplicates=False):
    """Every frame has a result; returns the number of duplicates (reported, not lost)."""
    seen = answered(res)
    lost = [k for k in sent if k not in seen]
    dups = sum(v - 1 for v in seen.values() if v > 1)
    extra = [k for k in seen if k not in sent]
    assert not lost, "%d of %d frames have no result (first: %r)" % (len(lost), len(sent),
                                                                      lost[:3])
    assert not extra, "results for entries never sent: %r" % extra[:3]
    if dups:
        print("duplicates: %d results written twice (at-least-once)" % dups)
    if not allow_duplicates:
        assert dups == 0, "%d duplicate results" % dups
    return dups


# ---- the main path --------------------------------------------------------------------------

def test_10000_frames_100_cameras_exactly_once_byte_exact(start_server_fn, rsrv):
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*"}, extra={
        "dynamic_batching": {"max_queue_size": 4096}})
    r = rsrv.client()
    before = produce(r, "frames:cam", 100, 40)  # written before batchd starts: read from 0
    client = start_batchd(start_server_fn, repo, rsrv)
    after = produce(r, "frames:cam", 100, 60, start=40)
    sent = {**before, **after}
    assert len(sent) == 10000
    assert wait_results(r, 10000), "only %d results" % count_results(r)
    res = results(r)
    check_all_answered(sent, res)
    # Every result: fields exactly as specified, metadata copied, output bytes as over HTTP.
    http_checked = 0
    for key, _eid, f in res:
        src = f["source_stream"].decode()
        assert key == "results:" + src
        cam, seq = sent[(src, f["source_id"].decode())]
        assert f["model_name"] == b"cam" and f["model_version"] == b"1"
        assert f["status"] == b"ok"
        assert f["OUTPUT0.shape"] == b"1,16" and f["OUTPUT0.datatype"] == b"FP32"
        assert f["camera"] == b"cam-%d" % cam and f["seq"] == str(seq).encode()
        assert "ts" in f and "input" not in f
        if (cam + seq) % 97 == 0:  # about 100 frames, against the same input over HTTP
            x = frame(cam, seq)
            body, hl = binary_body({"inputs": [{"name": "INPUT0", "datatype": "FP32",
                                                "shape": [1, DIM],
                                                "parameters": {"binary_data_size": x.nbytes}}],
                                    "outputs": [{"name": "OUTPUT0",
                                                 "parameters": {"binary_data": True}}]},
                                   [x.tobytes()])
            rep = client.infer_raw("cam", body, header_len=hl)
            assert rep.status_code == 200, rep.text
            _h, outs = parse_infer_reply(rep)
            assert outs["OUTPUT0"].astype("<f4").tobytes() == f["OUTPUT0"]
            http_checked += 1
    assert http_checked >= 50
    assert wait_for(lambda: total_pending(r) == 0, 10), "entries left unacked"
    lab = {"model": "cam", "pattern": "frames:*"}
    assert metric(client, "batchd_redis_entries_read_total", **lab) == 10000
    assert settled(client, "batchd_redis_results_written_total", 10000, **lab) == 10000
    assert settled(client, "batchd_redis_acked_total", 10000, **lab) == 10000
    assert settled(client, "batchd_redis_errors_total", 0, **lab) == 0
    assert metric(client, "batchd_redis_streams", **lab) == 100
    assert metric(client, "batchd_inference_requests_total", model="cam", version="1",
                  protocol="redis", outcome="success") == 10000
    assert wait_for(lambda: metric(client, "batchd_redis_pending", **lab) == 0, 10)
    assert metric(client, "batchd_redis_connected") == 1


def test_large_frames_over_many_streams_each_answered_once(start_server_fn, rsrv):
    """1.2 MB frames on 20 streams: a read asks for a few MB of entries at a time (a window of
    the streams, moving round them) rather than one entry from each of the 20, and a frame
    written after every stream went idle is still picked up."""
    dim = 300000
    repo = start_server_fn.repo("redis")
    sim_model(repo, "big", {"streams": "frames:*"}, dim=dim)
    r = rsrv.client()
    client = start_batchd(start_server_fn, repo, rsrv)
    sent = produce(r, "frames:cam", 20, 3, dim=dim, batch=10)
    assert wait_results(r, 60), "only %d results" % count_results(r)
    time.sleep(1.0)  # every window comes back empty: the reads block on all streams again
    late = produce(r, "frames:cam", 1, 1, start=3, dim=dim)
    sent.update(late)
    assert wait_results(r, 61), "a frame written while idle was not read"
    res = results(r)
    check_all_answered(sent, res)
    for _key, _eid, f in res:
        cam, seq = sent[(f["source_stream"].decode(), f["source_id"].decode())]
        assert f["status"] == b"ok"
        assert f["OUTPUT0"] == frame(cam, seq, dim).tobytes()
    assert metric(client, "batchd_redis_entries_read_total", model="big",
                  pattern="frames:*") == 61


def test_new_streams_are_picked_up_while_running(start_server_fn, rsrv):
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*"})
    r = rsrv.client()
    client = start_batchd(start_server_fn, repo, rsrv)
    first = produce(r, "frames:a", 3, 10)
    assert wait_results(r, 30)
    late = produce(r, "frames:late", 2, 10)  # streams that did not exist at start
    assert wait_results(r, 50), "new streams were not picked up (%d results)" % count_results(r)
    check_all_answered({**first, **late}, results(r))
    assert metric(client, "batchd_redis_streams", model="cam", pattern="frames:*") == 5


@pytest.mark.slow
def test_streams_past_the_read_connections_wait_and_http_keeps_serving(start_server_fn, rsrv):
    """Each 64 streams of a model take a read connection, and at most 4096 streams are read
    in all: the connections' descriptors come out of the 256 kept aside from
    --max-connections, so a producer creating streams without end cannot take the ones HTTP
    accepts with (15,000 streams under a limit of 400 descriptors stopped HTTP). The streams
    past 4096 wait, and the log says so."""
    n = 4096 + 40
    r = rsrv.client()
    row = frame(1, 0).tobytes()
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd("frames:c%05d" % i, {"input": row})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*"})
    client = start_batchd(start_server_fn, repo, rsrv)
    assert wait_results(r, 4096), "%d results" % count_results(r)
    assert wait_for(lambda: "batchd reads at most 4096 streams, all models together; run "
                    "another batchd process in the group" in client.server.log(), 10)
    assert metric(client, "batchd_redis_streams", model="cam", pattern="frames:*") == n
    time.sleep(1.0)  # a scan or two: the streams past the 4096 are still not read
    assert count_results(r) == 4096
    fds = len(os.listdir("/proc/%d/fd" % client.server.proc.pid))
    assert fds < 256, "%d descriptors open" % fds
    assert client.get("/v2/health/live").status_code == 200


def test_many_models_with_a_stream_each_are_all_read(start_server_fn, rsrv):
    """70 models reading one stream each: 70 read connections, far under the 4096 streams a
    process reads (a cap counted in connections left the 65th model unread)."""
    r = rsrv.client()
    repo = start_server_fn.repo("redis")
    for i in range(70):
        sim_model(repo, "m%02d" % i, {"streams": "cam%02d" % i, "results": "results:{stream}"})
        r.xadd("cam%02d" % i, {"input": frame(i, 0).tobytes()})
    client = start_batchd(start_server_fn, repo, rsrv)
    assert wait_results(r, 70, timeout=30), "%d results" % count_results(r)
    assert "stream not read" not in client.server.log()


def test_two_models_matching_a_stream_in_one_group_do_not_split_it(start_server_fn, rsrv):
    """A group hands each entry to one consumer, and a process's models are one consumer: two
    models of one group on one stream took half its entries each, wrong ones included. The
    model whose name sorts first reads it alone (so every process of the group picks the same
    one) and the other says so, once; a model with a group of its own reads every entry too."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "wide", {"streams": "frames:*"})
    sim_model(repo, "narrow", {"streams": "frames:cam0"})
    sim_model(repo, "own", {"streams": "frames:*", "group": "g2", "results": "own:{stream}"})
    r = rsrv.client()
    sent = produce(r, "frames:cam", 1, 1)
    client = start_batchd(start_server_fn, repo, rsrv)
    assert wait_results(r, 1)
    time.sleep(2.5)  # a scan more: both models have found the stream
    for i in range(10):
        sent.update(produce(r, "frames:cam", 1, 10, start=1 + 10 * i))
        time.sleep(0.05)
    assert wait_results(r, len(sent)) and wait_results(r, len(sent), pattern="own:*")
    res = results(r)
    check_all_answered(sent, res)
    assert {f["model_name"] for _k, _i, f in res} == {b"narrow"}
    check_all_answered(sent, results(r, "own:*"))
    lines = [line for line in client.server.log().splitlines() if "stream not read" in line]
    assert len(lines) == 1 and "model=wide stream=frames:cam0: model narrow reads it in the " \
        "same group 'batchd'" in lines[0], lines
    assert metric(client, "batchd_redis_entries_read_total", model="wide",
                  pattern="frames:*") == 0


def test_a_model_loaded_later_leaves_a_read_stream_to_its_reader(start_server_fn, rsrv):
    """A model that sorts first but is loaded after another model of its group began reading a
    stream does not take it over (the two would split it); it says so once."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "wide", {"streams": "frames:*"})
    r = rsrv.client()
    client = start_batchd(start_server_fn, repo, rsrv, extra_args=["--model-control", "explicit"])
    sent = produce(r, "frames:cam", 1, 5)
    assert wait_results(r, len(sent))
    sim_model(repo, "narrow", {"streams": "frames:cam0"})
    assert client.post("/v2/repository/models/narrow/load").status_code == 200
    assert client.server.wait_log(r"stream not read model=narrow stream=frames:cam0: model wide", 10)
    for i in range(10):
        sent.update(produce(r, "frames:cam", 1, 10, start=5 + 10 * i))
        time.sleep(0.05)
    assert wait_results(r, len(sent))
    res = results(r)
    check_all_answered(sent, res)
    assert {f["model_name"] for _k, _i, f in res} == {b"wide"}


def test_a_stream_key_with_spaces_is_quoted_in_the_log(start_server_fn, rsrv):
    """A producer chooses the stream keys: one with a space and '=' is answered like any
    other, and the log writes it quoted, so it cannot read as fields of its own."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*"})
    r = rsrv.client()
    key = "frames:x state=gone"
    r.xadd(key, {"input": frame(1, 0).tobytes()})
    client = start_batchd(start_server_fn, repo, rsrv, extra_args=["--log-level", "debug"])
    assert wait_results(r, 1)
    assert r.xlen("results:" + key) == 1
    assert wait_for(lambda: 'stream added model=cam stream="frames:x state=gone" group=batchd' in
                    client.server.log(), 10)


def test_several_rows_and_literal_stream_key(start_server_fn, rsrv):
    repo = start_server_fn.repo("redis")
    sim_model(repo, "one", {"streams": "camera-7", "results": "out-{stream}"})
    r = rsrv.client()
    start_batchd(start_server_fn, repo, rsrv)
    x = np.arange(3 * DIM, dtype="<f4")
    r.xadd("camera-7", {"input": x.tobytes(), "shape": "3,16", "datatype": "FP32", "id": "a"})
    assert wait_results(r, 1, "out-camera-7")
    (_k, _e, f), = results(r, "out-camera-7")
    assert f["status"] == b"ok" and f["OUTPUT0.shape"] == b"3,16"
    assert f["OUTPUT0"] == x.tobytes() and f["id"] == b"a"
    assert "shape" not in f and "datatype" not in f


def test_an_entry_whose_values_the_model_refuses_fails_alone(start_server_fn, rsrv):
    """Eight frames for an embedding lookup (gather: 10 rows), one with an index past the
    table, read and batched together: ONNX Runtime refuses the batch, the frames run again one
    at a time, and only the bad one gets an error result; all are acked at once. Before, the
    whole batch was a model failure: all eight left pending, delivered again with the bad
    frame, and dead-lettered."""
    if not ort_available():
        pytest.skip("no ONNX Runtime")
    repo = start_server_fn.repo("redis")
    repo.add_onnx("gather", config={
        "max_batch_size": 8, "dynamic_batching": {"max_queue_delay_us": 200000},
        "redis": {"streams": "ids:*", "claim_idle_ms": 1000, "max_deliveries": 1}})
    r = rsrv.client()
    sent = {}
    for k in range(8):
        ids = [k, 12] if k == 3 else [k, 9 - k]
        sent[r.xadd("ids:cam", {"input": np.array(ids, "<i8").tobytes(),
                                "seq": str(k)}).decode()] = ids
    client = start_batchd(start_server_fn, repo, rsrv)
    assert wait_results(r, 8)
    table = np.arange(40, dtype="<f4").reshape(10, 4)
    res = {f["source_id"].decode(): f for _k, _e, f in results(r)}
    assert sorted(res) == sorted(sent)
    for eid, ids in sent.items():
        f = res[eid]
        if ids[1] == 12:
            assert f["status"] == b"error", f
            msg = f["error"].decode()
            assert msg.startswith("the model cannot run on this request's input values: ONNX "
                                  "Runtime: "), msg
            assert "idx=12" in msg, msg
            continue
        assert f["status"] == b"ok", f
        assert f["OUTPUT0"] == table[ids].tobytes(), ids
        assert f["OUTPUT0.shape"] == b"1,2,4"
    assert wait_for(lambda: total_pending(r, "ids:*") == 0, 10), "entries left unacked"
    lab = {"model": "gather", "pattern": "ids:*"}
    assert settled(client, "batchd_redis_acked_total", 8, **lab) == 8
    assert settled(client, "batchd_redis_errors_total", 1, **lab) == 1
    assert metric(client, "batchd_redis_dead_lettered_total", **lab) == 0
    assert not r.exists("dead:ids:cam")


def test_bad_entries_get_error_results_and_are_acked(start_server_fn, rsrv):
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*"})
    r = rsrv.client()
    client = start_batchd(start_server_fn, repo, rsrv)
    good = frame(1, 1).tobytes()
    bad = [
        ({"input": good[:-4], "camera": "short"}, r"60 bytes do not fill shape \[1,16\]"),
        ({"input": good, "datatype": "FP99", "camera": "dt"}, r"not a datatype; expected one of BOOL, .*, FP64, BYTES$"),
        ({"camera": "missing"}, r"no 'input' field"),
        ({"input": good, "shape": "1,x", "camera": "shape"}, r"field 'shape' is '1,x'"),
        ({"input": good, "datatype": "INT32", "camera": "mismatch"},
         r"^input 'INPUT0': expected datatype FP32, got INT32$"),
        # Another element size: the datatype is named, not a byte count for FP64's size.
        ({"input": good, "datatype": "FP64", "camera": "wider"},
         r"^input 'INPUT0': expected datatype FP32, got FP64$"),
        ({"input": good, "datatype": b"FP32\x00junk", "camera": "nul"},
         r"^field 'datatype' is 'FP32\\x00junk', which is not a datatype"),
        ({"input": good, "shape": b"1\x00,16" + b"7" * 40, "camera": "nulshape"},
         r"^field 'shape' is '1\\x00,16" + "7" * 27 + r"\.\.\.'; expected comma-separated"),
    ]
    ids = {}
    for fields, _rx in bad:
        ids[r.xadd("frames:bad", fields).decode()] = fields["camera"]
    ok_id = r.xadd("frames:bad", {"input": good, "camera": "fine"}).decode()
    assert wait_results(r, len(bad) + 1)
    res = {f["source_id"].decode(): f for _k, _e, f in results(r)}
    for (fields, rx), (eid, cam) in zip(bad, ids.items()):
        f = res[eid]
        assert f["status"] == b"error", f
        msg = f["error"].decode()
        assert re.search(rx, msg), (cam, msg)
        assert "\n" not in msg and len(msg) < 600
        assert f["camera"] == cam.encode() and "OUTPUT0" not in f
        assert f["model_name"] == b"cam" and f["model_version"] == b"1"
    assert res[ok_id]["status"] == b"ok"  # the stream goes on after bad entries
    assert wait_for(lambda: total_pending(r) == 0, 10), "bad entries were not acked"
    assert settled(client, "batchd_redis_errors_total", 8, model="cam", pattern="frames:*") == 8
    assert settled(client, "batchd_redis_acked_total", 9, model="cam", pattern="frames:*") == 9
    # Every bad entry is an invalid request, whether refused as read or by the infer layer.
    assert metric(client, "batchd_inference_requests_total", model="cam", version="1",
                  protocol="redis", outcome="invalid") == 8


def test_metadata_named_like_a_result_field_is_refused(start_server_fn, rsrv):
    """Copied, a metadata field 'status' (or an output's name) would be a second field of that
    name in the result, and a reader keeping the last one (redis-py's dict) would read the
    producer's value for batchd's: such an entry gets an error result naming the field, which
    carries its other metadata but not that field. `input` and `INPUT0` together name one
    input twice, and the sentence says so."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*"})
    r = rsrv.client()
    start_batchd(start_server_fn, repo, rsrv)
    good = frame(1, 1).tobytes()
    sent = {}
    for name in ("status", "source_id", "error", "reason", "OUTPUT0", "OUTPUT0.shape"):
        eid = r.xadd("frames:meta", {"input": good, "camera": "c", name: "mine"}).decode()
        sent[eid] = name
    both = r.xadd("frames:meta", {"input": good, "INPUT0": good, "camera": "c"}).decode()
    ok = r.xadd("frames:meta", {"input": good, "camera": "c", "Status": "mine"}).decode()
    assert wait_results(r, len(sent) + 2)
    plain = rsrv.client()
    plain.response_callbacks.pop("XRANGE", None)  # its fields as sent, not made a dict
    raw = plain.execute_command("XRANGE", "results:frames:meta", "-", "+")
    by_id = {}
    for _rid, flat in raw:
        names = [k.decode() for k in flat[0::2]]
        assert len(names) == len(set(names)), names  # never two fields of one name
        f = dict(zip(names, flat[1::2]))
        by_id[f["source_id"].decode()] = f
    for eid, name in sent.items():
        f = by_id[eid]
        assert f["status"] == b"error", (name, f)
        assert f["error"].decode() == (
            "the entry has a field '%s', a name the result gives a field of its own "
            "(source_stream, source_id, model_name, model_version, status, error, deliveries, "
            "reason, and each output's NAME, NAME.shape and NAME.datatype); rename it" % name)
        assert f["camera"] == b"c" and f.get(name) != b"mine"
    assert by_id[both]["error"] == (b"the entry has the fields 'input' and 'INPUT0', which "
                                    b"name the same input; give one of them")
    assert by_id[ok]["status"] == b"ok" and by_id[ok]["Status"] == b"mine"
    assert wait_for(lambda: total_pending(r) == 0, 10)


def test_metadata_over_max_body_bytes_is_an_error_without_it(start_server_fn, rsrv):
    """Metadata fields are copied into the result, so they are bounded as the inputs are: over
    --max-body-bytes together, the entry gets an error result that does not carry them."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*"})
    r = rsrv.client()
    client = start_batchd(start_server_fn, repo, rsrv, extra_args=["--max-body-bytes", "4096"])
    good = frame(1, 1).tobytes()
    big = r.xadd("frames:m", {"input": good, "camera": "c", "note": "x" * 5000}).decode()
    ok = r.xadd("frames:m", {"input": good, "camera": "c", "note": "x" * 3000}).decode()
    assert wait_results(r, 2)
    res = {f["source_id"].decode(): f for _k, _e, f in results(r)}
    f = res[big]
    assert f["status"] == b"error", f
    assert f["error"] == (b"the entry's metadata fields are 5011 bytes together, over the "
                          b"limit of 4096 bytes (--max-body-bytes)"), f["error"]
    assert "note" not in f and "camera" not in f
    assert res[ok]["status"] == b"ok" and res[ok]["note"] == b"x" * 3000
    assert wait_for(lambda: total_pending(r) == 0, 10)
    assert settled(client, "batchd_redis_errors_total", 1, model="cam", pattern="frames:*") == 1


def test_several_inputs_per_name_shapes_datatypes_and_templates(start_server_fn, rsrv):
    """A model with two inputs: one field per input name, `NAME.shape` and `NAME.datatype`
    per input (checked against the model's), `{stream}` expanded in custom `results` and
    `dead_letter` keys; every other field (a plain `input` too) is metadata."""
    repo = start_server_fn.repo("redis")
    repo.add_sim("two", [("IMG", "FP32", [4]), ("IDS", "INT64", [2])], max_batch_size=8,
                 extra={"redis": {"streams": "in:*", "results": "out:{stream}:res",
                                  "dead_letter": "dl:{stream}"}})
    r = rsrv.client()
    client = start_batchd(start_server_fn, repo, rsrv)
    img = np.arange(8, dtype="<f4") * 1.5
    ids = np.array([7, -1, 2 ** 40, 3], dtype="<i8")
    ok = r.xadd("in:a", {"IMG": img.tobytes(), "IMG.shape": "2,4", "IDS": ids.tobytes(),
                         "IDS.shape": "2,2", "IDS.datatype": "INT64", "camera": "c1",
                         "input": "not an input here"}).decode()
    bad = {
        r.xadd("in:a", {"IMG": img[:4].tobytes(), "IDS": ids[:2].tobytes(),
                        "IDS.datatype": "FP64", "camera": "c2"}).decode():
            r"^input 'IDS': expected datatype INT64, got FP64$",
        r.xadd("in:a", {"IMG": img[:4].tobytes(), "camera": "c3"}).decode():
            r"no field 'IDS'.*INT64",
        r.xadd("in:a", {"IMG": img[:4].tobytes(), "IDS": ids[:2].tobytes(),
                        "IDS.shape": "1,3", "camera": "c4"}).decode(): r"IDS",
    }
    assert wait_results(r, 1 + len(bad), pattern="out:*")
    res = {f["source_id"].decode(): (k, f) for k, _e, f in results(r, "out:*")}
    assert len(res) == 1 + len(bad)
    key, f = res[ok]
    assert key == "out:in:a:res"
    assert f["status"] == b"ok", f
    assert f["OUTPUT0"] == img.tobytes() and f["OUTPUT0.shape"] == b"2,4"
    assert f["OUTPUT0.datatype"] == b"FP32"
    assert f["OUTPUT1"] == ids.tobytes() and f["OUTPUT1.shape"] == b"2,2"
    assert f["OUTPUT1.datatype"] == b"INT64"
    assert f["camera"] == b"c1" and f["input"] == b"not an input here"
    for name in ("IMG", "IDS", "IMG.shape", "IDS.shape", "IDS.datatype"):
        assert name not in f
    for eid, rx in bad.items():
        key, f = res[eid]
        assert key == "out:in:a:res" and f["status"] == b"error", f
        assert re.search(rx, f["error"].decode()), f["error"]
    assert not r.exists("results:in:a")  # the default key is not used
    assert wait_for(lambda: total_pending(r, "in:*") == 0, 10)
    assert settled(client, "batchd_redis_errors_total", 3, model="two", pattern="in:*") == 3


def test_an_image_model_takes_encoded_images_without_a_datatype(start_server_fn, rsrv):
    """A model with `preprocess` advertises its image input as BYTES [-1]; an entry's `input`
    is then one encoded image (length-prefixed), with no `datatype` or `shape` needed, and its
    result is the tensor the same image gives over HTTP."""
    import io
    from PIL import Image
    repo = start_server_fn.repo("redis")
    image = {"size": [4, 4], "resize": "stretch", "color": "RGB", "layout": "NCHW", "scale": 1}
    repo.add_sim("img", [("image", "FP32", [3, 4, 4])], [("out", "FP32", [3, 4, 4])],
                 max_batch_size=4,
                 extra={"preprocess": {"input": "image", "image": image},
                        "redis": {"streams": "pics:*"}})
    pngs = []
    for seed in range(2):
        buf = io.BytesIO()
        rgb = np.random.default_rng(seed).integers(0, 256, (6, 5, 3), dtype=np.uint8)
        Image.fromarray(rgb, "RGB").save(buf, "PNG")
        pngs.append(buf.getvalue())
    elem = [len(p).to_bytes(4, "little") + p for p in pngs]
    r = rsrv.client()
    client = start_batchd(start_server_fn, repo, rsrv)
    r.xadd("pics:a", {"input": elem[0], "n": "plain"})
    r.xadd("pics:a", {"input": elem[0] + elem[1], "shape": "2", "datatype": "BYTES", "n": "two"})
    r.xadd("pics:a", {"input": pngs[0], "n": "unprefixed"})
    assert wait_results(r, 3)
    got = {f["n"].decode(): f for _k, _e, f in results(r, "results:pics:a")}
    want = []
    for p in pngs:
        h = requests.post(client.url("/v2/models/img/infer"), data=p,
                          headers={"Content-Type": "image/png"}, timeout=HTTP_TIMEOUT_S)
        assert h.status_code == 200, h.text
        want.append(np.array(h.json()["outputs"][0]["data"], dtype="<f4").tobytes())
    assert got["plain"]["status"] == b"ok", got["plain"]
    assert got["plain"]["out.shape"] == b"1,3,4,4" and got["plain"]["out"] == want[0]
    assert got["two"]["status"] == b"ok", got["two"]
    assert got["two"]["out.shape"] == b"2,3,4,4" and got["two"]["out"] == want[0] + want[1]
    assert got["unprefixed"]["status"] == b"error"
    assert b"image" in got["unprefixed"]["error"], got["unprefixed"]


def test_an_entry_delivered_while_the_model_is_unloaded_runs_when_it_is_back(start_server_fn,
                                                                            rsrv):
    """A blocking read out when the model is unloaded delivers what comes meanwhile; the model
    is not there to take it, so it stays in this consumer's pending list. Once the model is
    loaded again that list is read at once, not claim_idle_ms (here 120 s) later."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*", "block_ms": 3000, "claim_idle_ms": 120000})
    r = rsrv.client()
    client = start_batchd(start_server_fn, repo, rsrv, extra_args=["--model-control", "explicit"])
    assert client.post("/v2/repository/models/cam/load").status_code == 200
    good = frame(1, 1).tobytes()
    r.xadd("frames:u", {"input": good, "seq": "0"})
    assert wait_results(r, 1)
    time.sleep(0.3)  # the next blocking read is out
    assert client.post("/v2/repository/models/cam/unload").status_code == 200
    r.xadd("frames:u", {"input": good, "seq": "1"})
    assert wait_for(lambda: group_pending(r, "frames:u") == 1, 5), "not delivered meanwhile"
    time.sleep(0.3)
    assert count_results(r, "results:*") == 1
    assert client.post("/v2/repository/models/cam/load").status_code == 200
    assert wait_results(r, 2, timeout=10), "the entry waited for claim_idle_ms"
    seqs = sorted(f["seq"] for _k, _e, f in results(r))
    assert seqs == [b"0", b"1"]
    assert wait_for(lambda: group_pending(r, "frames:u") == 0, 5)


def test_results_maxlen_trims_the_result_stream(start_server_fn, rsrv):
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*", "results_maxlen": 10})
    r = rsrv.client()
    client = start_batchd(start_server_fn, repo, rsrv)
    sent = produce(r, "frames:cam", 1, 1000)
    lab = {"model": "cam", "pattern": "frames:*"}
    assert wait_for(lambda: metric(client, "batchd_redis_acked_total", **lab) == len(sent))
    n = r.xlen("results:frames:cam0")
    # MAXLEN ~ trims whole stream nodes (100 entries at most each): about 10, never 1000.
    assert 10 <= n <= 110, n
    last = r.xrevrange("results:frames:cam0", count=1)[0][1]
    assert last[b"seq"] == b"999"


def slow_cam(start_server_fn, rsrv):
    """A model slower than the producer, with a small queue, reading frames:*: entries wait
    undelivered in Redis. Returns (redis client, batchd client, its metric labels)."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*", "read_count": 8}, latency_us=50000,
              max_batch_size=8, extra={"dynamic_batching": {"max_queue_size": 16}})
    return (rsrv.client(), start_batchd(start_server_fn, repo, rsrv),
            {"model": "cam", "pattern": "frames:*"})


def test_pending_and_consumer_lag_gauges(start_server_fn, rsrv):
    """The model is slower than the producer and its queue is small: reads stop, entries wait
    undelivered in Redis and batchd_redis_consumer_lag (XINFO GROUPS) shows them; at the end
    both lag and pending are 0."""
    r, client, lab = slow_cam(start_server_fn, rsrv)
    # No stream matched yet: neither lag nor pending is known, so neither is listed (a 0
    # would say that nothing waits).
    assert metric(client, "batchd_redis_consumer_lag", **lab) is None
    assert metric(client, "batchd_redis_pending", **lab) is None
    sent = produce(r, "frames:cam", 1, 800)
    assert wait_for(lambda: (metric(client, "batchd_redis_consumer_lag", **lab) or 0) > 0, 20)
    assert wait_for(lambda: (metric(client, "batchd_redis_pending", **lab) or 0) > 0, 20)
    assert wait_results(r, len(sent))
    check_all_answered(sent, results(r))
    assert wait_for(lambda: metric(client, "batchd_redis_consumer_lag", **lab) == 0 and
                    metric(client, "batchd_redis_pending", **lab) == 0, 20)


def test_consumer_lag_is_not_listed_while_a_stream_has_none(start_server_fn, rsrv):
    """After an XDEL of an undelivered entry Redis reports no lag (nil) for that stream: the
    pattern's total is unknown then, and not listed, rather than the other streams' lag alone
    (which read as half the backlog)."""
    r, client, lab = slow_cam(start_server_fn, rsrv)
    sent = produce(r, "frames:cam", 2, 600)
    assert wait_for(lambda: (metric(client, "batchd_redis_consumer_lag", **lab) or 0) > 200, 20)
    last = r.xrevrange("frames:cam1", count=1)[0][0]
    assert r.xdel("frames:cam1", last) == 1
    assert wait_for(lambda: metric(client, "batchd_redis_consumer_lag", **lab) is None, 10), \
        metric(client, "batchd_redis_consumer_lag", **lab)
    del sent[("frames:cam1", last.decode())]
    assert wait_results(r, len(sent))
    check_all_answered(sent, results(r))


def test_backend_failures_retry_then_dead_letter(start_server_fn, rsrv):
    repo = start_server_fn.repo("redis")
    sim_model(repo, "flaky", {"streams": "in:*", "claim_idle_ms": 300, "max_deliveries": 2},
              extra={"sim": {"fail_rate": 1.0}, "circuit_breaker": {"consecutive_failures": 0}})
    r = rsrv.client()
    client = start_batchd(start_server_fn, repo, rsrv)
    ids = [r.xadd("in:x", {"input": frame(0, i).tobytes(), "camera": "c%d" % i}).decode()
           for i in range(3)]
    assert wait_for(lambda: r.exists("dead:in:x") and r.xlen("dead:in:x") >= 3, 30)
    dead = {f["source_id"].decode(): f for _k, _e, f in results(r, "dead:*")}
    assert sorted(dead) == sorted(ids)
    for i, eid in enumerate(ids):
        f = dead[eid]
        assert f["source_stream"] == b"in:x" and f["camera"] == b"c%d" % i
        assert int(f["deliveries"]) > 2
        assert f["reason"].decode() == (
            "the entry was delivered %d times (max_deliveries 2) and no result was written: "
            "the model failed it (the last time: sim model: injected failure (sim.fail_rate 1))"
            % int(f["deliveries"])), f["reason"]
    assert not r.exists("results:in:x")  # never an ok result for a failing model
    assert wait_for(lambda: total_pending(r, "in:*") == 0, 10)
    lab = {"model": "flaky", "pattern": "in:*"}
    assert settled(client, "batchd_redis_dead_lettered_total", 3, **lab) == 3
    assert metric(client, "batchd_redis_reclaimed_total", **lab) >= 3


def test_a_result_that_cannot_be_written_is_dead_lettered_with_the_write_error(start_server_fn,
                                                                              rsrv):
    """The model answers, but the results key is not a stream (WRONGTYPE on every write): the
    entry stays pending, comes back, and past max_deliveries its dead letter says the writes
    failed and why, not that the model did. Beside it a failing model's dead letter names the
    model, not the other stream's write error."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*", "claim_idle_ms": 200, "max_deliveries": 1})
    sim_model(repo, "flaky", {"streams": "in:*", "claim_idle_ms": 200, "max_deliveries": 1},
              extra={"sim": {"fail_rate": 1.0}, "circuit_breaker": {"consecutive_failures": 0}})
    r = rsrv.client()
    r.set("results:frames:w", "not a stream")
    client = start_batchd(start_server_fn, repo, rsrv)
    eid = r.xadd("frames:w", {"input": frame(1, 1).tobytes()}).decode()
    r.xadd("in:x", {"input": frame(0, 1).tobytes()})
    assert wait_for(lambda: r.exists("dead:frames:w") and r.exists("dead:in:x"), 30)
    f = {k.decode(): v for k, v in r.xrange("dead:frames:w")[0][1].items()}
    assert f["source_id"].decode() == eid
    reason = f["reason"].decode()
    assert "writing its result failed (the last time: WRONGTYPE" in reason, reason
    other = r.xrange("dead:in:x")[0][1][b"reason"].decode()
    assert other.endswith("the model failed it (the last time: sim model: injected failure "
                          "(sim.fail_rate 1))"), other
    assert settled(client, "batchd_redis_dead_lettered_total", 1, model="cam",
                   pattern="frames:*") == 1


def test_entries_trimmed_from_their_stream_while_held_are_still_answered(start_server_fn,
                                                                         rsrv):
    """A producer's MAXLEN trims entries batchd has read and not yet answered; Redis then drops
    them from the pending list when batchd refreshes its claim on them. Their results are
    written all the same (nobody else can answer them), none counted as a duplicate."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*", "claim_idle_ms": 200}, latency_us=100000,
              max_batch_size=4)
    r = rsrv.client()
    client = start_batchd(start_server_fn, repo, rsrv)
    lab = {"model": "cam", "pattern": "frames:*"}
    ids = [r.xadd("frames:t", {"input": frame(1, i).tobytes(), "seq": str(i)}).decode()
           for i in range(40)]
    assert wait_for(lambda: metric(client, "batchd_redis_entries_read_total", **lab) == 40, 10)
    r.xtrim("frames:t", maxlen=0, approximate=False)
    assert wait_results(r, 40, timeout=30)
    res = sorted(f["source_id"].decode() for _k, _e, f in results(r))
    assert res == sorted(ids)
    assert settled(client, "batchd_redis_results_written_total", 40, **lab) == 40
    assert settled(client, "batchd_redis_duplicates_skipped_total", 0, **lab) == 0
    assert wait_for(lambda: total_pending(r) == 0, 10)


def test_a_stream_replaced_by_another_type_does_not_stop_its_shard(start_server_fn, rsrv):
    """Two cameras in one read shard; one key is deleted and set again as a string. Reads of
    the shard fail with WRONGTYPE (Redis does not say which key); the next scan finds the
    stream that is still one, and its frames are answered again."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*", "block_ms": 200})
    r = rsrv.client()
    client = start_batchd(start_server_fn, repo, rsrv)
    for k in ("frames:x0", "frames:s1"):
        r.xadd(k, {"input": frame(1, 1).tobytes(), "cam": k})
    assert wait_results(r, 2)
    r.delete("frames:x0")
    r.set("frames:x0", "now a string")
    time.sleep(1.0)
    r.xadd("frames:s1", {"input": frame(1, 2).tobytes(), "cam": "after"})
    assert wait_for(lambda: any(f.get("cam") == b"after" for _k, _e, f in results(r)), 15), \
        client.server.log_tail()
    assert wait_for(lambda: metric(client, "batchd_redis_streams", model="cam",
                                   pattern="frames:*") == 1, 10)


# ---- many cameras, deleted ones, re-reads ------------------------------------------------------

def test_every_camera_is_read_while_the_others_are_idle(start_server_fn, rsrv):
    """100 cameras are two read shards (64 + 36, in the order the log's `stream added` lines
    give). Frames written only to the second shard's cameras while the first's are idle are
    answered at once: a blocking read on idle cameras never holds the room another shard needs
    (it did: past 47 cameras with the default queue, the first shard's read could take it all
    and the second's cameras waited for traffic on the first; a queue of 64, i.e. 256 entries
    held at most, leaves no doubt)."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*"},
              extra={"dynamic_batching": {"max_queue_size": 64}})
    r = rsrv.client()
    keys = ["frames:%03d" % i for i in range(100)]
    for i, k in enumerate(keys):
        r.xadd(k, {"input": frame(i, 0).tobytes()})
    client = start_batchd(start_server_fn, repo, rsrv, extra_args=["--log-level", "debug"])
    assert wait_results(r, 100)
    added = re.findall(r"stream added model=cam stream=(\S+)", client.server.log())
    assert sorted(added) == keys
    time.sleep(2)  # every read is now a blocking one on idle cameras
    later = added[64:]
    ids = {k: r.xadd(k, {"input": frame(0, 1).tobytes()}) for k in later}
    done = wait_for(lambda: all(r.xlen("results:" + k) >= 2 for k in later), 15)
    missing = [k for k in later if r.xrange("results:" + k)[-1][1][b"source_id"] != ids[k]]
    assert done and not missing, "%d of the second shard's %d cameras not answered" % (
        len(missing), len(later))


def test_claims_reach_every_camera(start_server_fn, rsrv):
    """64 cameras and a dead consumer's entries on the last of them: taken over within a few
    claim periods, although the reads of 64 cameras are in flight all the time."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*", "claim_idle_ms": 500})
    r = rsrv.client()
    for i in range(63):
        r.xadd("frames:%03d" % i, {"input": frame(i, 0).tobytes()})
    r.xgroup_create("frames:063", "batchd", id="0", mkstream=True)
    ids = [r.xadd("frames:063", {"input": frame(63, j).tobytes()}).decode() for j in range(3)]
    r.xreadgroup("batchd", "ghost", {"frames:063": ">"})
    client = start_batchd(start_server_fn, repo, rsrv)
    assert wait_for(lambda: r.exists("results:frames:063") and
                    r.xlen("results:frames:063") >= 3, 30), "the dead consumer's entries"
    assert sorted(f[b"source_id"].decode() for _i, f in r.xrange("results:frames:063")) == ids
    assert settled(client, "batchd_redis_reclaimed_total", 3, model="cam",
                   pattern="frames:*") == 3


def test_a_deleted_camera_is_let_go_and_read_again_when_it_returns(start_server_fn, rsrv):
    """A stream deleted while batchd reads it is not created again (no group re-made with
    MKSTREAM every scan), is forgotten (the streams gauge drops), and its neighbours keep
    flowing; written again by its producer, the next scan finds it and its frames are
    answered."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*"})
    r = rsrv.client()
    r.xadd("frames:gone", {"input": frame(0, 0).tobytes()})
    r.xadd("frames:stays", {"input": frame(1, 0).tobytes()})
    client = start_batchd(start_server_fn, repo, rsrv)
    assert wait_results(r, 2)
    lab = {"model": "cam", "pattern": "frames:*"}
    assert metric(client, "batchd_redis_streams", **lab) == 2
    r.delete("frames:gone")
    time.sleep(5)  # two scans
    assert not r.exists("frames:gone"), "batchd created the deleted stream again"
    assert settled(client, "batchd_redis_streams", 1, **lab) == 1  # forgotten: cameras that come
    # and go do not add up
    t0 = time.monotonic()
    eid = r.xadd("frames:stays", {"input": frame(1, 1).tobytes()})
    assert wait_for(lambda: r.xlen("results:frames:stays") >= 2, 10)
    print("a neighbour's frame after the deletion: %.3f s" % (time.monotonic() - t0))
    assert r.xrange("results:frames:stays")[-1][1][b"source_id"] == eid
    back = r.xadd("frames:gone", {"input": frame(0, 1).tobytes(), "camera": "back"})
    assert wait_for(lambda: any(f[b"source_id"] == back
                                for _i, f in r.xrange("results:frames:gone")), 15)
    assert metric(client, "batchd_redis_streams", **lab) == 2


def test_cameras_that_come_and_go(start_server_fn, rsrv):
    """Three waves of 80 cameras, each answered, then deleted while reads, claims and gauges
    run: every frame answered once, the streams gauge back to the one camera that stays, and a
    wave's cameras take the shards' places of the last (under ASan: nothing freed in use)."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*", "claim_idle_ms": 500})
    r = rsrv.client()
    r.xadd("frames:keep", {"input": frame(0, 0).tobytes()})
    client = start_batchd(start_server_fn, repo, rsrv)
    lab = {"model": "cam", "pattern": "frames:*"}
    sent = 1
    for wave in range(3):
        keys = ["frames:w%d-%02d" % (wave, i) for i in range(80)]
        for i, k in enumerate(keys):
            r.xadd(k, {"input": frame(i, 0).tobytes()})
            r.xadd(k, {"input": frame(i, 1).tobytes()})
        r.xadd("frames:keep", {"input": frame(0, wave + 1).tobytes()})
        sent += 2 * len(keys) + 1
        assert wait_for(lambda: sum(r.xlen("results:" + k) for k in keys) == 2 * len(keys)), wave
        r.delete(*keys)
        r.delete(*["results:" + k for k in keys])
    assert wait_for(lambda: metric(client, "batchd_redis_streams", **lab) == 1, 30)
    assert r.xlen("results:frames:keep") == 4
    assert settled(client, "batchd_redis_acked_total", sent, **lab) == sent
    client.assert_healthy()


def test_restart_rereads_its_pending_entries_and_counts_their_deliveries(start_server_fn, rsrv):
    """An entry pending for this consumer name that was already delivered more than
    max_deliveries times (a frame that crashed the process each time) is dead-lettered when a
    restart re-reads it, not run again; one delivered once runs."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*", "max_deliveries": 3})
    r = rsrv.client()
    poison = r.xadd("frames:p", {"input": frame(0, 0).tobytes(), "camera": "p"})
    fine = r.xadd("frames:p", {"input": frame(0, 1).tobytes(), "camera": "f"})
    r.xgroup_create("frames:p", "batchd", id="0")
    r.xreadgroup("batchd", "stable", {"frames:p": ">"})
    r.xclaim("frames:p", "batchd", "stable", 0, [poison], retrycount=10)
    client = start_batchd(start_server_fn, repo, rsrv, consumer="stable")
    assert wait_for(lambda: r.exists("dead:frames:p") and r.exists("results:frames:p"), 30)
    dead = r.xrange("dead:frames:p")
    assert [f[b"source_id"] for _i, f in dead] == [poison]
    assert int(dead[0][1][b"deliveries"]) > 3 and dead[0][1][b"camera"] == b"p"
    assert [f[b"source_id"] for _i, f in r.xrange("results:frames:p")] == [fine]
    assert wait_for(lambda: total_pending(r) == 0, 10)
    lab = {"model": "cam", "pattern": "frames:*"}
    assert settled(client, "batchd_redis_dead_lettered_total", 1, **lab) == 1
    assert metric(client, "batchd_redis_entries_read_total", **lab) == 2


def test_entries_held_stay_ours_and_keep_their_delivery_count(start_server_fn, rsrv):
    """A slow model (50 ms a frame, a queue of 128) holds read-ahead frames far longer than
    claim_idle_ms: they are claimed again by this consumer without counting a delivery (XCLAIM
    JUSTID), so XAUTOCLAIM leaves them alone and after a kill -9 the restart under the same
    name runs them instead of dead-lettering them (it did: their counts had gone up to 11)."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*", "claim_idle_ms": 500, "max_deliveries": 3},
              latency_us=50000, max_batch_size=1,
              extra={"dynamic_batching": {"max_queue_size": 128}})
    r = rsrv.client()
    for j in range(200):
        r.xadd("frames:a", {"input": frame(0, j).tobytes()})
    client = start_batchd(start_server_fn, repo, rsrv, consumer="w")
    time.sleep(4)
    counts = [p["times_delivered"] for p in r.xpending_range("frames:a", "batchd", "-", "+", 300)]
    assert counts and max(counts) == 1, counts
    client.server.proc.send_signal(signal.SIGKILL)
    client.server.proc.wait(10)
    client.server.stopped = True
    start_batchd(start_server_fn, repo, rsrv, consumer="w")
    assert wait_for(lambda: r.exists("results:frames:a") and
                    r.xlen("results:frames:a") >= 200, WAIT_S)
    assert not r.exists("dead:frames:a")
    check_all_answered({("frames:a", f["source_id"].decode()): 1
                        for _k, _e, f in results(r)}, results(r))


def test_sigterm_waits_for_a_long_queue_then_writes_every_result(start_server_fn, rsrv):
    """SIGTERM with 256 frames queued at 60 ms each (15 s): the writes' deadline starts when
    the queue is done, not when the last frame went into it, so the last results are written
    too (it gave up on them)."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*", "read_count": 64}, latency_us=60000,
              max_batch_size=1, extra={"dynamic_batching": {"max_queue_size": 256}})
    r = rsrv.client()
    for j in range(400):
        r.xadd("frames:a", {"input": frame(0, j).tobytes()})
    client = start_batchd(start_server_fn, repo, rsrv, consumer="d")
    assert wait_for(lambda: metric(client, "batchd_redis_entries_read_total", model="cam",
                                   pattern="frames:*") >= 200, 30)
    client.server.signal(signal.SIGTERM)
    assert client.server.wait_exit(120) == 0
    client.server.stopped = True
    assert "drain gave up" not in client.server.log()
    assert total_pending(r) == 0


def test_stream_keys_with_any_bytes(start_server_fn, rsrv):
    """A stream key holding a NUL byte (Redis keys are binary): its results go to its own
    results key, not to one cut at the NUL."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*"})
    r = rsrv.client()
    key = b"frames:a\x00b"
    eid = r.xadd(key, {"input": frame(0, 0).tobytes()})
    start_batchd(start_server_fn, repo, rsrv)
    assert wait_for(lambda: r.exists(b"results:" + key), 30)
    (_i, f), = r.xrange(b"results:" + key)
    assert f[b"source_stream"] == key and f[b"source_id"] == eid
    assert not r.exists(b"results:frames:a")


# ---- failures of batchd and of Redis ---------------------------------------------------------

def _slow_repo(start_server_fn, claim_idle_ms=60000):
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*", "claim_idle_ms": claim_idle_ms,
                            "read_count": 8},
              latency_us=3000, max_batch_size=8)
    return repo


def test_kill9_then_restart_with_the_same_consumer_name(start_server_fn, rsrv):
    repo = _slow_repo(start_server_fn)
    r = rsrv.client()
    sent = produce(r, "frames:cam", 20, 100)
    c1 = start_batchd(start_server_fn, repo, rsrv, consumer="worker-1")
    assert wait_results(r, 200)
    c1.server.proc.send_signal(signal.SIGKILL)
    c1.server.proc.wait(10)
    c1.server.stopped = True
    done_before = count_results(r)
    assert done_before < len(sent), "the run ended before the kill; nothing to recover"
    start_batchd(start_server_fn, repo, rsrv, consumer="worker-1")
    assert wait_results(r, len(sent)), "%d of %d" % (count_results(r), len(sent))
    check_all_answered(sent, results(r), allow_duplicates=True)
    assert wait_for(lambda: total_pending(r) == 0, 10)


def test_second_consumer_takes_over_a_dead_ones_entries(start_server_fn, rsrv):
    repo = _slow_repo(start_server_fn, claim_idle_ms=1000)
    r = rsrv.client()
    sent = produce(r, "frames:cam", 20, 100)
    a = start_batchd(start_server_fn, repo, rsrv, consumer="dead-one")
    assert wait_results(r, 200)
    a.server.proc.send_signal(signal.SIGKILL)
    a.server.proc.wait(10)
    a.server.stopped = True
    pend = [c for c in r.xinfo_consumers("frames:cam0", "batchd")
            if c["name"] == b"dead-one"]
    b = start_batchd(start_server_fn, repo, rsrv, consumer="taker")
    assert wait_results(r, len(sent)), "%d of %d" % (count_results(r), len(sent))
    check_all_answered(sent, results(r), allow_duplicates=True)
    assert wait_for(lambda: total_pending(r) == 0, 10)
    if pend and pend[0]["pending"] > 0:
        assert metric(b, "batchd_redis_reclaimed_total", model="cam", pattern="frames:*") > 0


def test_a_dead_consumers_idle_entries_are_claimed_at_start(start_server_fn, rsrv):
    """The claim at start is not put off by claim_idle_ms / 2 (30 s here): it used to go out
    before the first scan had found a stream, so a replacement process took a dead one's
    backlog over only half a period later."""
    repo = _slow_repo(start_server_fn, claim_idle_ms=60000)
    r = rsrv.client()
    sent = produce(r, "frames:cam", 3, 20)
    for cam in range(3):
        key = "frames:cam%d" % cam
        r.xgroup_create(key, "batchd", id="0")
        ids = [i for _, ents in r.xreadgroup("batchd", "dead-one", {key: ">"}) for i, _ in ents]
        assert len(ids) == 20
        # Idle for two minutes, as if the dead one had read them that long ago.
        r.xclaim(key, "batchd", "dead-one", 0, ids, idle=120000, justid=True)
    t0 = time.monotonic()
    b = start_batchd(start_server_fn, repo, rsrv, consumer="taker")
    assert wait_results(r, len(sent), timeout=15), "%d of %d after %.1f s" % (
        count_results(r), len(sent), time.monotonic() - t0)
    check_all_answered(sent, results(r))
    assert wait_for(lambda: total_pending(r) == 0, 10)
    assert settled(b, "batchd_redis_reclaimed_total", len(sent), model="cam",
                   pattern="frames:*") == len(sent)


def test_two_processes_share_one_group(start_server_fn, rsrv):
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*", "read_count": 4}, latency_us=2000,
              max_batch_size=8)
    r = rsrv.client()
    for cam in range(40):  # the streams exist before both start
        r.xgroup_create("frames:cam%d" % cam, "batchd", id="0", mkstream=True)
    a = start_batchd(start_server_fn, repo, rsrv, consumer="a")
    b = start_batchd(start_server_fn, repo, rsrv, consumer="b")
    lab = {"model": "cam", "pattern": "frames:*"}
    assert wait_for(lambda: metric(a, "batchd_redis_streams", **lab) == 40 and
                    metric(b, "batchd_redis_streams", **lab) == 40, 20)
    sent = produce(r, "frames:cam", 40, 50)
    assert wait_results(r, len(sent))
    check_all_answered(sent, results(r))
    na = metric(a, "batchd_redis_entries_read_total", **lab)
    nb = metric(b, "batchd_redis_entries_read_total", **lab)
    assert na > 0 and nb > 0, "one process got no work: a=%d b=%d" % (na, nb)
    assert na + nb == len(sent)


def test_redis_restart_mid_run_reconnects_and_finishes(start_server_fn, rsrv):
    repo = _slow_repo(start_server_fn)
    r = rsrv.client()
    sent = produce(r, "frames:cam", 10, 100)
    client = start_batchd(start_server_fn, repo, rsrv)
    assert wait_results(r, 100)
    lab = {"model": "cam", "pattern": "frames:*"}
    assert wait_for(lambda: metric(client, "batchd_redis_pending", **lab) is not None, 10)
    rsrv.stop(save=True)
    # HTTP keeps serving while Redis is away.
    x = frame(0, 0)
    rep = client.infer("cam", {"inputs": [{"name": "INPUT0", "datatype": "FP32",
                                           "shape": [1, DIM], "data": x.tolist()}]})
    assert rep.status_code == 200
    assert client.server.wait_log(r"ingest redis unreachable", 10)
    # What Redis cannot be asked is unknown, not its last figure.
    assert metric(client, "batchd_redis_pending", **lab) is None
    assert metric(client, "batchd_redis_consumer_lag", **lab) is None
    time.sleep(1.0)
    rsrv.start()
    r = rsrv.client()
    more = produce(r, "frames:cam", 10, 20, start=100)
    sent.update(more)
    assert wait_results(r, len(sent)), "%d of %d" % (count_results(r), len(sent))
    check_all_answered(sent, results(r), allow_duplicates=True)
    assert wait_for(lambda: total_pending(r) == 0, 10)
    assert wait_for(lambda: metric(client, "batchd_redis_pending", **lab) == 0, 10)
    log = client.server.log()
    assert len(re.findall(r"ingest redis unreachable", log)) == 1, "logged more than once"
    assert "ingest redis reconnected" in log


def test_frozen_redis_is_detected_and_every_frame_answered_once(start_server_fn, rsrv):
    """A Redis that stops answering without closing its sockets (SIGSTOP) is found by the
    watchdog (a command unanswered for 5 s, 5.3 s on read connections): HTTP keeps serving,
    the loss is logged once, and after SIGCONT every frame has exactly one result. Entries a
    read on a dropped socket took after the thaw sit in this consumer's pending list and come
    back through XAUTOCLAIM (claim_idle_ms 2000)."""
    repo = _slow_repo(start_server_fn, claim_idle_ms=2000)
    r = rsrv.client()
    sent = produce(r, "frames:cam", 10, 300)
    client = start_batchd(start_server_fn, repo, rsrv)
    assert wait_results(r, 200)
    x = frame(0, 0)
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, DIM],
                        "data": x.tolist()}]}
    rsrv.proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        served = 0
        while not re.search(r"ingest redis unreachable", client.server.log()):
            assert time.monotonic() - t0 < 30, "the frozen Redis was not detected"
            rep = client.infer("cam", body)  # HTTP keeps serving meanwhile
            assert rep.status_code == 200
            served += 1
            time.sleep(0.2)
        assert served > 0
        line = client.server.wait_log(r"ingest redis unreachable", 1)
        assert "no reply for" in line, line
        # Frozen on: reconnects reach the kernel but get no answer, and are not logged again.
        time.sleep(7)
        assert client.infer("cam", body).status_code == 200
    finally:
        rsrv.proc.send_signal(signal.SIGCONT)
    more = produce(r, "frames:cam", 10, 20, start=300)
    sent.update(more)
    assert wait_results(r, len(sent)), "%d of %d" % (count_results(r), len(sent))
    check_all_answered(sent, results(r))  # exactly once: no duplicates either
    assert wait_for(lambda: total_pending(r) == 0, 20)
    assert wait_for(lambda: "ingest redis reconnected" in client.server.log(), 20)
    log = client.server.log()
    assert len(re.findall(r"ingest redis unreachable", log)) == 1, "logged more than once"
    # A result write sent on a dropped socket may still run after the thaw; its retry on the
    # new connection then finds the entry answered and counts it as a duplicate skipped.
    lab = {"model": "cam", "pattern": "frames:*"}
    acked = metric(client, "batchd_redis_acked_total", **lab)
    skipped = metric(client, "batchd_redis_duplicates_skipped_total", **lab)
    assert acked + skipped == len(sent), (acked, skipped)
    assert metric(client, "batchd_redis_connected") == 1


def test_sigterm_drains_what_it_read_and_exits_0(start_server_fn, rsrv):
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*", "read_count": 16}, latency_us=20000,
              max_batch_size=8)
    r = rsrv.client()
    sent = produce(r, "frames:cam", 10, 50)
    client = start_batchd(start_server_fn, repo, rsrv, consumer="drainer")
    assert wait_results(r, 20)
    client.server.signal(signal.SIGTERM)
    assert client.server.wait_exit() == 0
    client.server.check_log_clean()
    client.server.stopped = True
    # Everything it read was answered and acked: nothing of it is left pending.
    assert total_pending(r) == 0
    res = results(r)
    seen = answered(res)
    assert all(v == 1 for v in seen.values())
    assert 20 <= len(seen) <= len(sent)


def test_sigterm_drains_a_slow_models_read_ahead_however_long_it_takes(start_server_fn, rsrv):
    """Read ahead of a slow model (about 190 entries held, 40 ms each, one at a time: about 8 s,
    more than the 5 s the drain gives a backlog that stopped moving): SIGTERM answers all of
    it."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*", "read_count": 64}, latency_us=40000,
              max_batch_size=1, extra={"dynamic_batching": {"max_queue_size": 8}})
    r = rsrv.client()
    sent = produce(r, "frames:cam", 4, 100)
    client = start_batchd(start_server_fn, repo, rsrv, consumer="drainer")
    assert wait_results(r, 5)
    assert wait_for(lambda: metric(client, "batchd_redis_entries_read_total", model="cam",
                                   pattern="frames:*") >= 200, 30)
    client.server.signal(signal.SIGTERM)
    assert client.server.wait_exit(60) == 0
    client.server.check_log_clean()
    client.server.stopped = True
    assert total_pending(r) == 0, "entries it read were left pending"
    seen = answered(results(r))
    assert all(v == 1 for v in seen.values())
    assert 200 <= len(seen) <= len(sent)


def test_password_in_the_url(start_server_fn, tmp_path):
    """A Redis with a password (requirepass): `redis://:PASSWORD@HOST:PORT/DB` and
    `redis://default:PASSWORD@...` (ACL user, %XX escapes) connect and serve. Without it, or
    with a wrong one, batchd says so once, in one sentence, reports itself not connected and
    keeps serving HTTP; the password never appears in its log."""
    pw = "s3cret@/:%x"
    rsrv = RedisServer(tmp_path / "redis", password=pw).start()
    try:
        repo = start_server_fn.repo("redis")
        sim_model(repo, "cam", {"streams": "frames:*"})
        r = rsrv.client(db=2)
        esc = pw.replace("%", "%25").replace("@", "%40").replace("/", "%2F").replace(":", "%3A")
        host = "127.0.0.1:%d" % rsrv.port
        for url in ("redis://:%s@%s/2" % (esc, host), "redis://default:%s@%s/2" % (esc, host)):
            client = start_server_fn(repo, ["--redis", url])
            eid = r.xadd("frames:a", {"input": frame(0, 0).tobytes()})
            assert wait_for(lambda: any(f[b"source_id"] == eid
                                        for _i, f in r.xrange("results:frames:a")), 30), url
            assert "auth=" in client.server.wait_log(r"redis ingest host=")
            assert pw not in client.server.log() and esc not in client.server.log()
            client.server.signal(signal.SIGTERM)
            assert client.server.wait_exit() == 0
            client.server.stopped = True
        for url, reason in (("redis://%s" % host, "NOAUTH"),
                            ("redis://:wrong@%s" % host, "WRONGPASS")):
            client = start_server_fn(repo, ["--redis", url])
            line = client.server.wait_log(r"redis refused the connection")
            assert line and reason in line, client.server.log()
            time.sleep(1.5)  # several reconnects with backoff: logged once
            assert client.server.log().count("redis refused the connection") == 1
            assert "redis connected" not in client.server.log()
            assert client.metric("batchd_redis_connected") == 0
            client.assert_healthy()
            client.server.signal(signal.SIGTERM)
            assert client.server.wait_exit() == 0
            client.server.stopped = True
    finally:
        rsrv.stop()


def test_a_redis_on_this_machine_through_its_unix_socket(start_server_fn, tmp_path):
    """`unix://:PASSWORD@/PATH?db=N`: batchd reaches a Redis on the same machine through its
    unix socket (AUTH and SELECT as over TCP), answers entries in that database, names the path
    in its log, says once that the socket is gone when Redis stops, and reconnects when it
    is back."""
    sockdir = tempfile.mkdtemp(prefix="bd-redis-")  # short: sun_path holds 107 bytes
    path = os.path.join(sockdir, "redis.sock")
    rsrv = RedisServer(tmp_path / "redis", password="s3cretPW", unixsocket=path).start()
    try:
        repo = start_server_fn.repo("redis")
        sim_model(repo, "cam", {"streams": "frames:*"})
        r = rsrv.client(db=3)
        client = start_server_fn(repo, ["--redis", "unix://:s3cretPW@%s?db=3" % path])
        assert client.server.wait_log(
            r"redis ingest path=%s db=3 auth=password " % re.escape(path))
        assert client.server.wait_log(r"redis connected path=%s db=3 " % re.escape(path))
        eid = r.xadd("frames:a", {"input": frame(0, 0).tobytes(), "camera": "c0"})
        assert wait_for(lambda: r.xlen("results:frames:a") == 1, 30)
        (_rid, f), = r.xrange("results:frames:a")
        assert f[b"source_id"] == eid and f[b"status"] == b"ok" and f[b"camera"] == b"c0"
        assert np.array_equal(np.frombuffer(f[b"OUTPUT0"], "<f4"), frame(0, 0))
        assert rsrv.client(db=0).dbsize() == 0, "it wrote outside DB 3"
        assert client.metric("batchd_redis_connected") == 1
        # Through the socket, not the server's TCP port: Redis shows such a client as PATH:0.
        addrs = [c["addr"] for c in batchd_client_list(rsrv)]
        assert len(addrs) >= 2 and all(a == path + ":0" for a in addrs), addrs

        rsrv.restart(down_s=2.0)
        assert client.server.wait_log(r"redis reconnected path=%s db=3 " % re.escape(path), 30)
        log = client.server.log()
        assert log.count("redis unreachable path=%s conn=" % path) == 1, log
        eid = r.xadd("frames:b", {"input": frame(1, 1).tobytes()})
        assert wait_for(lambda: any(f[b"source_id"] == eid
                                    for _i, f in r.xrange("results:frames:b")), 30)
        assert "s3cretPW" not in log
        client.assert_healthy()
        client.server.signal(signal.SIGTERM)
        assert client.server.wait_exit() == 0
        client.server.stopped = True

        # Without the password: refused, with advice in the socket's own syntax.
        client = start_server_fn(repo, ["--redis", "unix://%s" % path])
        line = client.server.wait_log(r"redis refused the connection path=%s conn=" % re.escape(path))
        assert line and "NOAUTH" in line and "unix://:PASSWORD@/PATH" in line, client.server.log()
    finally:
        rsrv.stop()
        shutil.rmtree(sockdir, ignore_errors=True)


def test_a_redis_at_maxmemory_is_said_and_reading_resumes_once_it_has_room(start_server_fn,
                                                                            tmp_path):
    """A Redis at its maxmemory (noeviction) refuses XGROUP CREATE with OOM even where the group
    exists. batchd says so in a sentence that names the cause (not only "cannot create
    group"), keeps serving HTTP, and answers the waiting entries once Redis has room again."""
    rsrv = RedisServer(tmp_path / "redis")
    rsrv.extra = ["--maxmemory-policy", "noeviction"]
    rsrv.start()
    try:
        r = rsrv.client()
        r.xgroup_create("frames:a", "batchd", id="0", mkstream=True)
        eid = r.xadd("frames:a", {"input": frame(0, 0).tobytes()})
        for _ in range(16):
            r.append("ballast", b"x" * (256 << 10))
        r.config_set("maxmemory", "2mb")  # now past it: every write command gets OOM
        with pytest.raises(redis.exceptions.ResponseError, match="OOM"):
            r.xgroup_create("frames:a", "batchd", id="0")
        repo = start_server_fn.repo("redis")
        sim_model(repo, "cam", {"streams": "frames:*"})
        client = start_server_fn(repo, ["--redis", rsrv.url])
        line = client.server.wait_log(r"cannot create group stream=frames:a", 30)
        assert line and "OOM" in line and "Redis is past its maxmemory" in line, \
            client.server.log()
        client.assert_healthy()
        assert r.xlen("results:frames:a") == 0
        r.delete("ballast")
        assert wait_for(lambda: any(f[b"source_id"] == eid
                                    for _i, f in r.xrange("results:frames:a")), 30)
        assert total_pending(r) == 0
    finally:
        rsrv.stop()


def test_a_database_the_server_lacks_is_refused_not_db_0(start_server_fn, rsrv):
    """`/16` on a server with 16 databases: SELECT fails, and batchd must not go on in DB 0
    (reading and answering its streams): it says why once and keeps retrying."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*"})
    r = rsrv.client()
    r.xadd("frames:a", {"input": frame(0, 0).tobytes()})
    client = start_server_fn(repo, ["--redis", rsrv.url + "/16"])
    line = client.server.wait_log(r"redis refused the connection")
    assert line and "DB index is out of range" in line and "SELECT" in line, client.server.log()
    time.sleep(1.5)
    assert client.server.log().count("redis refused the connection") == 1
    assert "redis unreachable" not in client.server.log()  # said once, as the refusal
    assert "redis connected" not in client.server.log()
    assert client.metric("batchd_redis_connected") == 0
    assert not r.exists("results:frames:a") and not r.xinfo_groups("frames:a")


def test_http_serves_without_redis_and_ingest_connects_later(start_server_fn, tmp_path):
    rsrv = RedisServer(tmp_path / "late")  # not started yet
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*"})
    client = start_batchd(start_server_fn, repo, rsrv)
    # Unreachable from the start: said once (not only when a connection that was up is lost).
    line = client.server.wait_log(r"redis unreachable")
    assert line and "reconnecting with backoff" in line, client.server.log()
    time.sleep(1)
    assert client.server.log().count("redis unreachable") == 1
    assert requests.get(client.url("/v2/health/ready"), timeout=HTTP_TIMEOUT_S).status_code == 200
    try:
        rsrv.start()
        r = rsrv.client()
        sent = produce(r, "frames:cam", 2, 5)
        assert wait_results(r, 10)
        check_all_answered(sent, results(r))
        assert metric(client, "batchd_redis_connected") == 1
    finally:
        rsrv.stop()


def test_a_host_name_is_looked_up_by_batchd(start_server_fn, rsrv):
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*"})
    client = start_server_fn(repo, ["--redis", "redis://localhost:%d" % rsrv.port])
    r = rsrv.client()
    sent = produce(r, "frames:cam", 2, 5)
    assert wait_results(r, 10)
    check_all_answered(sent, results(r))
    want = r"ingest redis connected host=localhost address=127\.0\.0\.1 port=%d " % rsrv.port
    assert client.server.wait_log(want), client.server.log()


def test_a_name_that_does_not_resolve_yet_is_looked_up_again(start_server_fn, tmp_path):
    # A compose service's name resolves only once its container runs: batchd starts, serves
    # HTTP and keeps looking the name up (RFC 6761's .invalid never resolves).
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*"})
    client = start_server_fn(repo, ["--redis", "redis://no-such-redis.invalid:6379"])
    line = client.server.wait_log(r"redis unreachable", 30)  # a DNS server may be slow to say no
    assert line, client.server.log()
    assert ("host=no-such-redis.invalid port=6379 conn=control reason=\"the name does not "
            "resolve: ") in line, line
    assert "reconnecting with backoff" in line, line
    assert requests.get(client.url("/v2/health/ready"), timeout=HTTP_TIMEOUT_S).status_code == 200
    time.sleep(1.5)  # several lookups (backoff 100, 200, 400, 800 ms): said once
    assert client.server.log().count("redis unreachable") == 1, client.server.log()
    assert client.metric("batchd_redis_connected") == 0
    client.server.stop()  # exit code 0 at once: no lookup holds it


# ---- a name with several addresses, or one that moves ----------------------------------------

@pytest.fixture
def fake_dns(tmp_path):
    """Names this test resolves as it likes: hosts_shim.c, compiled here and loaded into batchd
    with LD_PRELOAD, answers getaddrinfo from a table the test writes (and may rewrite while
    batchd runs); other names go to the system's resolver. Returns (set_table, prefix):
    set_table({"name": ["addr", ...]}), and the command prefix to start batchd under."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build tests/e2e/hosts_shim.c")
    for addr in ("127.0.0.2", "127.0.0.3"):  # the second and third servers' addresses
        try:
            with socket.socket() as s:
                s.bind((addr, 0))
        except OSError as e:
            pytest.skip("cannot bind loopback address %s here (%s)" % (addr, e))
    so = str(tmp_path / "hosts_shim.so")
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", so,
                    os.path.join(os.path.dirname(__file__), "hosts_shim.c"), "-ldl"], check=True)
    table = str(tmp_path / "hosts")

    def set_table(names):
        with open(table + ".new", "w") as f:
            for name, addrs in names.items():
                f.write("%s %s\n" % (name, " ".join(addrs)))
        os.replace(table + ".new", table)  # a lookup reads the old table or the new one

    set_table({})
    # An ASan build wants its runtime first among the loaded libraries; the shim comes first.
    asan = (os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0").lstrip(":")
    return set_table, ["env", "LD_PRELOAD=" + so, "BD_TEST_HOSTS=" + table, "ASAN_OPTIONS=" + asan]


def batchd_client_list(server):
    """The connections batchd holds to a redis-server (CLIENT LIST entries; the tests' own are
    named)."""
    return [c for c in server.client().client_list() if c.get("name") != TEST_CLIENT]


def batchd_clients(server):
    """How many connections batchd holds to a redis-server."""
    return len(batchd_client_list(server))


@pytest.fixture
def two_redis(tmp_path, fake_dns):
    """Two redis-servers on one port, at 127.0.0.2 (x) and 127.0.0.3 (y): what a name with
    two addresses can lead to. Returns (x, y)."""
    port = free_port()
    x = RedisServer(tmp_path / "x", port=port, host="127.0.0.2").start()
    y = RedisServer(tmp_path / "y", port=port, host="127.0.0.3").start()
    yield x, y
    for srv in (x, y):
        srv.proc.send_signal(signal.SIGCONT)  # a test may have frozen it
        srv.stop()


def start_on_name(start_server_fn, fake_dns, table, url):
    """batchd with one sim model reading frames:*, from Redis at `url`, the names in `table`
    resolved as it says."""
    set_table, prefix = fake_dns
    set_table(table)
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*"})
    return start_server_fn(repo, ["--redis", url], prefix=prefix)


def test_a_names_first_address_down_is_passed_over_quietly(start_server_fn, rsrv, fake_dns):
    # Nothing listens on the first address: every connection (control, and two read
    # connections for 70 streams) goes on to the second without backoff and without a word.
    r = rsrv.client()
    sent = produce(r, "frames:cam", 70, 2)
    client = start_on_name(start_server_fn, fake_dns, {"two.test": ["127.0.0.2", "127.0.0.1"]},
                           "redis://two.test:%d" % rsrv.port)
    assert wait_results(r, len(sent)), client.server.log()
    check_all_answered(sent, results(r))
    assert client.server.wait_log(r"ingest redis connected host=two\.test "
                                  r"address=127\.0\.0\.1 port=%d " % rsrv.port)
    assert batchd_clients(rsrv) == 3
    assert "redis unreachable" not in client.server.log(), client.server.log()


def test_when_the_redis_in_use_goes_away_all_connections_move_to_the_next_address(
        start_server_fn, fake_dns, two_redis):
    # The name's two addresses are two servers (round-robin DNS, a replica behind a second
    # record): batchd reads one of them with every connection, then all follow to the other
    # when it goes away, never one connection on each.
    x, y = two_redis
    rx, ry = x.client(), y.client()
    sent_x = produce(rx, "frames:cam", 70, 2)
    sent_y = produce(ry, "frames:cam", 70, 2)
    client = start_on_name(start_server_fn, fake_dns, {"pair.test": ["127.0.0.2", "127.0.0.3"]},
                           "redis://pair.test:%d" % x.port)
    assert wait_results(rx, len(sent_x)), client.server.log()
    check_all_answered(sent_x, results(rx))
    assert (batchd_clients(x), batchd_clients(y)) == (3, 0)
    assert count_results(ry) == 0
    x.stop()
    assert wait_results(ry, len(sent_y)), client.server.log()
    check_all_answered(sent_y, results(ry))
    assert batchd_clients(y) == 3
    assert client.server.wait_log(r"ingest redis reconnected host=pair\.test "
                                  r"address=127\.0\.0\.3 port=%d " % x.port), client.server.log()
    log = client.server.log()
    assert log.count("redis unreachable") == 1, log
    assert settled(client, "batchd_redis_connected", 1) == 1


def test_when_the_redis_in_use_freezes_all_connections_move_to_the_next_address(
        start_server_fn, fake_dns, two_redis):
    # A frozen server (SIGSTOP) keeps its sockets open: batchd finds it by its watchdog, tries
    # it again once (it may only have been busy), then moves every connection to the other.
    x, y = two_redis
    client = start_on_name(start_server_fn, fake_dns, {"pair.test": ["127.0.0.2", "127.0.0.3"]},
                           "redis://pair.test:%d" % x.port)
    sent = produce(x.client(), "frames:cam", 70, 1)
    assert wait_results(x.client(), len(sent)), client.server.log()
    sent = produce(y.client(), "frames:cam", 70, 2)
    x.proc.send_signal(signal.SIGSTOP)
    try:
        assert wait_results(y.client(), len(sent), timeout=60), client.server.log()
    finally:
        x.proc.send_signal(signal.SIGCONT)
    check_all_answered(sent, results(y.client()))
    assert wait_for(lambda: batchd_clients(y) == 3, 10), batchd_clients(y)
    assert wait_for(lambda: batchd_clients(x) == 0, 10), batchd_clients(x)  # let go
    assert client.server.wait_log(r"ingest redis reconnected host=pair\.test "
                                  r"address=127\.0\.0\.3 port=%d " % x.port), client.server.log()


def test_a_connection_lost_while_the_others_are_up_rejoins_them(start_server_fn, fake_dns,
                                                               two_redis):
    # The name now leads to another server while the old one still serves (a record changed
    # before the old container is gone): a connection that drops and reconnects goes back to
    # where the others are, never to the new address alone (its reads and the control
    # connection's claims and writes would reach two different servers).
    x, y = two_redis
    set_table, _ = fake_dns
    client = start_on_name(start_server_fn, fake_dns, {"pair.test": ["127.0.0.2"]},
                           "redis://pair.test:%d" % x.port)
    rx = x.client()
    sent = produce(rx, "frames:cam", 70, 1)
    assert wait_results(rx, len(sent)), client.server.log()
    assert (batchd_clients(x), batchd_clients(y)) == (3, 0)
    set_table({"pair.test": ["127.0.0.3"]})
    ours = batchd_client_list(x)
    rx.client_kill_filter(_id=ours[-1]["id"])  # the newest: a read connection
    assert wait_for(lambda: batchd_clients(x) + batchd_clients(y) == 3, 10)
    time.sleep(2)  # several polls: a connection on the wrong server would show by now
    assert (batchd_clients(x), batchd_clients(y)) == (3, 0), client.server.log()
    sent = produce(rx, "frames:cam", 70, 1, start=1)
    assert wait_results(rx, 140), client.server.log()
    assert count_results(y.client()) == 0


def test_a_name_moved_to_another_address_is_followed(start_server_fn, fake_dns, two_redis):
    # A Redis container recreated elsewhere: the name's record changes while batchd runs, and
    # the old server goes away. batchd looks the name up again and reads the new one.
    old, new = two_redis
    set_table, _ = fake_dns
    client = start_on_name(start_server_fn, fake_dns, {"moving.test": ["127.0.0.2"]},
                           "redis://moving.test:%d" % old.port)
    sent = produce(old.client(), "frames:cam", 3, 2)
    assert wait_results(old.client(), len(sent)), client.server.log()
    set_table({"moving.test": ["127.0.0.3"]})
    old.stop()
    sent = produce(new.client(), "frames:cam", 3, 2)
    assert wait_results(new.client(), len(sent)), client.server.log()
    check_all_answered(sent, results(new.client()))
    assert client.server.wait_log(r"ingest redis reconnected host=moving\.test "
                                  r"address=127\.0\.0\.3 port=%d " % old.port), \
        client.server.log()


def test_a_slow_first_lookup_is_said_then_waited_for(start_server_fn, rsrv, fake_dns):
    # A DNS server that does not answer holds the lookup for its timeouts: batchd says so
    # after 5 s instead of saying nothing, serves HTTP meanwhile, and connects once it answers.
    client = start_on_name(start_server_fn, fake_dns,
                           {"slow.test": ["delay=7000", "127.0.0.1"]},
                           "redis://slow.test:%d" % rsrv.port)
    r = requests.get(client.url("/v2/health/ready"), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200
    line = client.server.wait_log(r"redis name lookup", 15)
    assert line and ("WARN ingest redis name lookup host=slow.test has not finished after "
                     "5 s") in line, client.server.log()
    assert "redis connected" not in client.server.log()
    sent = produce(rsrv.client(), "frames:cam", 2, 2)
    assert wait_results(rsrv.client(), len(sent)), client.server.log()
    log = client.server.log()
    assert log.count("redis name lookup") == 1 and "redis unreachable" not in log, log


def test_a_redis_that_answers_the_first_command_with_an_error_is_refused_once(start_server_fn,
                                                                             tmp_path):
    """A Redis in protected mode (no password, reached from another address than loopback)
    answers the first command with -DENIED and closes. Counted as up, the connection was
    reconnected at once, forever, with two log lines each time; it is a refusal: logged once,
    retried with backoff."""
    ip = non_loopback_address()
    if ip is None:
        pytest.skip("this machine has no address but loopback")
    port = free_port()
    proc = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--protected-mode", "yes",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        repo = start_server_fn.repo("redis")
        sim_model(repo, "cam", {"streams": "frames:*"})
        client = start_server_fn(repo, ["--redis", "redis://%s:%d" % (ip, port)])
        line = client.server.wait_log(r"redis refused the connection", 10)
        assert line and 'reason="DENIED Redis is running in protected mode' in line, \
            client.server.log()
        assert "give Redis a password" in line, line
        time.sleep(2)  # backoff 100, 200, 400, 800 ms: several tries
        log = client.server.log()
        assert log.count("redis refused the connection") == 1, log
        assert "redis connected" not in log and "redis unreachable" not in log, log
        assert client.metric("batchd_redis_connected") == 0
    finally:
        proc.kill()
        proc.wait(10)


def test_a_read_connection_refused_at_maxclients_is_said_once(start_server_fn, rsrv):
    # New cameras past 64 streams need another read connection; a server at maxclients refuses
    # it ("ERR max number of clients reached"). That is one line, the refusal, not a second
    # "unreachable" one for the same event, and the streams are read once the server has room.
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*"})
    r = rsrv.client()
    sent = produce(r, "frames:cam", 64, 1)  # a read connection's worth
    client = start_batchd(start_server_fn, repo, rsrv)
    assert wait_results(r, len(sent)), client.server.log()
    assert client.server.wait_log(r"ingest redis connected ")
    r.config_set("maxclients", r.info("clients")["connected_clients"])
    sent = produce(r, "frames:new", 10, 1)
    line = client.server.wait_log(r"redis refused the connection", 15)
    assert line and "max number of clients reached" in line, client.server.log()
    time.sleep(1.5)  # several retries: said once
    log = client.server.log()
    assert log.count("redis refused the connection") == 1, log
    assert "redis unreachable" not in log, log
    assert count_results(r, "results:frames:new*") == 0
    r.config_set("maxclients", 10000)
    assert wait_results(r, 74), client.server.log()
    check_all_answered(sent, results(r, "results:frames:new*"))


def test_a_redis_loading_its_data_is_refused_until_it_has(start_server_fn, rsrv):
    """A Redis restarted with data to load answers PING with -LOADING for a while (but takes
    SELECT): with a /DB in the URL that SELECT counted as up, and every command failed until
    the data was in. It is a refusal: said once per connection, up again once loaded."""
    repo = start_server_fn.repo("redis")
    sim_model(repo, "cam", {"streams": "frames:*"})
    r = rsrv.client(db=1)
    pipe = r.pipeline(transaction=False)
    for i in range(4000):
        pipe.set("k%d" % i, "v")
    pipe.execute()
    client = start_server_fn(repo, ["--redis", rsrv.url + "/1"])
    sent = produce(r, "frames:cam", 1, 5)
    assert wait_results(r, 5)
    rsrv.stop(save=True)
    # 1 ms per key: about 4 s of LOADING (options of Redis 7's own tests).
    rsrv.extra = ["--key-load-delay", "1000", "--loading-process-events-interval-bytes", "1024"]
    rsrv.start(timeout=30)
    r = rsrv.client(db=1)
    sent.update(produce(r, "frames:cam", 1, 5, start=5))
    assert wait_results(r, 10)
    check_all_answered(sent, results(r))
    assert wait_for(lambda: "redis reconnected" in client.server.log(), 10)
    log = client.server.log()
    refusals = [line for line in log.splitlines() if "redis refused the connection" in line]
    assert refusals and all('reason="LOADING Redis is loading the dataset in memory"' in line
                            for line in refusals), log
    assert len(refusals) == len({re.search(r"conn=\w+", line).group(0) for line in refusals}), \
        "a connection said it more than once: %s" % refusals
    assert log.index(refusals[-1]) < log.index("redis reconnected"), log
    assert "LOADING" not in log.replace(refusals[0], "").replace(refusals[-1], ""), log
    assert log.count("redis reconnected") == 1, log


def test_redis_config_errors_name_the_key(start_server_fn):
    repo = start_server_fn.repo("redis")
    sim_model(repo, "nostreams", {"group": "g"})
    sim_model(repo, "badcount", {"streams": "x:*", "read_count": 0})
    sim_model(repo, "typo", {"streams": "x:*", "blok_ms": 5})
    # Results or dead letters into the input stream itself would never be read.
    sim_model(repo, "selfloop", {"streams": "x:*", "results": "{stream}"})
    sim_model(repo, "selfdead", {"streams": "cam1", "dead_letter": "cam1"})
    # {stream} twice: such keys could not be told from input streams, and were read back.
    sim_model(repo, "twice", {"streams": "id:*", "results": "id:{stream}/{stream}"})
    sim_model(repo, "twicedead", {"streams": "id:*", "dead_letter": "{stream}{stream}"})
    client = start_server_fn(repo)
    for model, key in (("nostreams", "redis.streams"), ("badcount", "redis.read_count"),
                       ("typo", "redis.blok_ms"),
                       ("selfloop", "'redis.results' is '{stream}', the input stream itself"),
                       ("selfdead", "'redis.dead_letter' is 'cam1', the input stream itself"),
                       ("twice", "'redis.results' is 'id:{stream}/{stream}', which holds "
                                 "{stream} more than once; it may hold it once"),
                       ("twicedead", "'redis.dead_letter' is '{stream}{stream}', which holds "
                                     "{stream} more than once")):
        line = client.server.wait_log(r"model=%s .*state=unavailable" % model, 5)
        assert line and key in line, line
        r = client.get("/v2/models/%s/ready" % model)
        assert r.status_code != 200


def test_redis_flag_errors(tmp_path):
    if not os.path.isfile(BATCHD_BIN):
        pytest.skip("batchd binary not found")
    p = subprocess.run([BATCHD_BIN, "serve", "--model-repository", str(tmp_path),
                        "--redis", "http://127.0.0.1:1"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 2 and "redis://HOST[:PORT][/DB]" in p.stderr
    for url in ("redis://hunter2@127.0.0.1:1", "redis://:hunter2%zz@127.0.0.1:1",
                "redis://:@127.0.0.1:1", "redis://u:hunter2@127.0.0.1:x",
                "rediss://:hunter2@127.0.0.1:1", "redis://:hun/ter2@127.0.0.1:x",
                "redis://:hunter2@my redis:1", "redis://:hunter2@[::1 ]:1"):
        p = subprocess.run([BATCHD_BIN, "serve", "--model-repository", str(tmp_path),
                            "--redis", url], capture_output=True, text=True, timeout=30)
        assert p.returncode == 2, url
        assert p.stderr.count("\n") == 1 and "ter2" not in p.stderr, p.stderr
        assert "--redis" in p.stderr, p.stderr
