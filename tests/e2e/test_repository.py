"""Models while the server runs: version folders and version policies, Triton's model
repository extension (POST /v2/repository/index in every mode, /v2/repository/models/{m}/load
and /unload with --model-control explicit), reloads under traffic that fail no request, failed
reloads that keep the old version serving and say why in the index, an unload with 50
requests in flight, and --model-control poll picking up added, changed and removed models."""
import json
import os
import re
import shutil
import threading
import time

import pytest
import requests

from conftest import (HTTP_TIMEOUT_S, error_message, find_onnx_model, ort_available, tensor,
                      wait_for)


def sim_config(max_batch_size=4, latency_us=0, per_item_us=0, instances=1, extra=None):
    cfg = {
        "backend": "sim",
        "max_batch_size": max_batch_size,
        "instances": instances,
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "dims": [2]}],
        "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "dims": [2]}],
        "sim": {"latency_us": latency_us, "per_item_us": per_item_us},
    }
    if extra:
        cfg.update(extra)
    return cfg


def write_config(model_dir, cfg):
    """Replace config.json in one step (a scan never sees half a file)."""
    tmp = os.path.join(model_dir, ".config.json.tmp")
    with open(tmp, "w") as f:
        f.write(cfg if isinstance(cfg, str) else json.dumps(cfg))
    os.replace(tmp, os.path.join(model_dir, "config.json"))


def add_model(root, name, versions=(1,), cfg=None, staging=None):
    """Write root/name/{versions}/ and config.json; with `staging`, build it there first and
    rename it in, so a polling server sees the model complete or not at all."""
    base = staging if staging else root
    mdir = os.path.join(base, name)
    for v in versions:
        os.makedirs(os.path.join(mdir, str(v)), exist_ok=True)
    write_config(mdir, cfg if cfg is not None else sim_config())
    if staging:
        os.rename(mdir, os.path.join(root, name))
    return os.path.join(root, name)


def body(values, rows=1):
    return {"inputs": [tensor("INPUT0", "FP32", [rows, 2], values)]}


def infer_ok(client, model, values=(1.0, 2.0), version=None):
    r = client.infer(model, body(list(values)), version=version)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["outputs"][0]["data"] == list(values)
    return out


def index(client, ready=None):
    payload = None if ready is None else {"ready": ready}
    r = client.post("/v2/repository/index", json=payload)
    assert r.status_code == 200, r.text
    rows = r.json()
    assert isinstance(rows, list)
    for row in rows:
        assert row["state"] in ("READY", "UNAVAILABLE", "LOADING", "UNLOADING"), row
        assert isinstance(row.get("reason", ""), str)
    return rows


def rows_of(rows, name):
    return [r for r in rows if r["name"] == name]


def states(rows, name):
    return sorted((r.get("version"), r["state"]) for r in rows_of(rows, name))


# ---- version policies (explicit mode: the index is available) ----------------------------

@pytest.fixture(scope="module")
def explicit(start_server):
    repo = start_server.repo("explicit")
    add_model(repo.path, "latest2", (1, 2, 3), sim_config(extra={"version_policy": {"latest": 2}}))
    add_model(repo.path, "spec", (1, 2, 3),
              sim_config(extra={"version_policy": {"specific": [1, 3]}}))
    add_model(repo.path, "allv", (1, 2, 3), sim_config(extra={"version_policy": {"all": {}}}))
    add_model(repo.path, "dflt", (1, 2, 3), sim_config())
    add_model(repo.path, "cyc", (1,), sim_config())
    add_model(repo.path, "fragile", (1,), sim_config())
    add_model(repo.path, "live", (1,), sim_config(latency_us=2000, max_batch_size=4))
    add_model(repo.path, "slow", (1,), sim_config(latency_us=100000, max_batch_size=4))
    client = start_server(repo, ["--model-control", "explicit"])
    client.repo = repo
    return client


@pytest.mark.parametrize("model,loaded", [("latest2", ["2", "3"]), ("spec", ["1", "3"]),
                                          ("allv", ["1", "2", "3"]), ("dflt", ["3"])])
def test_version_policy_loads_the_selected_versions(explicit, model, loaded):
    rows = index(explicit)
    assert states(rows, model) == [(v, "READY") for v in loaded]
    md = explicit.get("/v2/models/%s" % model).json()
    assert md["versions"] == loaded
    # Without a version: the highest loaded one.
    assert infer_ok(explicit, model)["model_version"] == loaded[-1]
    for v in loaded:
        assert infer_ok(explicit, model, version=v)["model_version"] == v
        assert explicit.get("/v2/models/%s/versions/%s/ready" % (model, v)).status_code == 200
    for v in {"1", "2", "3"} - set(loaded):
        msg = error_message(explicit.infer(model, body([1.0, 2.0]), version=v), 400)
        assert "no version '%s'" % v in msg and ", ".join(loaded) in msg, msg


def test_extensions_list_repository_and_statistics(explicit):
    ext = explicit.get("/v2").json()["extensions"]
    assert "binary_tensor_data" in ext and "model_repository" in ext and "statistics" in ext


def test_index_ready_filter(explicit):
    all_rows = index(explicit)
    ready = index(explicit, ready=True)
    assert ready and all(r["state"] == "READY" for r in ready)
    assert len(ready) == len([r for r in all_rows if r["state"] == "READY"])
    r = explicit.post("/v2/repository/index", json={"ready": "yes"})
    assert "ready" in error_message(r, 400)
    r = explicit.post("/v2/repository/index", data=b"[1,2")
    error_message(r, 400)


def test_repository_endpoints_take_post(explicit):
    error_message(explicit.get("/v2/repository/index"), 405)
    error_message(explicit.get("/v2/repository/models/cyc/load"), 405)
    error_message(explicit.post("/v2/repository/models/cyc/reload"), 404)
    error_message(explicit.post("/v2/repository/nothing"), 404)


# ---- explicit load / unload -------------------------------------------------------------

def test_unload_then_load(explicit):
    infer_ok(explicit, "cyc")
    r = explicit.post("/v2/repository/models/cyc/unload")
    assert r.status_code == 200, r.text
    msg = error_message(explicit.infer("cyc", body([1.0, 2.0])), 503)
    assert "cyc" in msg and "not loaded" in msg, msg
    # A URL naming the version gets the same 503 (a client retrying 503s retries it too).
    assert error_message(explicit.post("/v2/models/cyc/versions/1/infer",
                                       json=body([1.0, 2.0])), 503) == msg
    for tail in ("", "/config", "/stats"):
        assert (error_message(explicit.get(f"/v2/models/cyc/versions/1{tail}"), 503)
                == error_message(explicit.get(f"/v2/models/cyc{tail}"), 503)), tail
    assert explicit.get("/v2/models/cyc/ready").status_code in (400, 503)
    rows = rows_of(index(explicit), "cyc")
    assert len(rows) == 1 and rows[0]["state"] == "UNAVAILABLE" and "version" not in rows[0]
    assert "not loaded" in rows[0]["reason"]
    assert "cyc" not in [r["name"] for r in index(explicit, ready=True)]
    r = explicit.post("/v2/repository/models/cyc/load")
    assert r.status_code == 200, r.text
    infer_ok(explicit, "cyc", (5.0, 6.0))
    assert states(index(explicit), "cyc") == [("1", "READY")]


def test_load_a_model_added_after_start(explicit):
    add_model(explicit.repo.path, "newcomer", (1, 4), sim_config())
    assert explicit.get("/v2/models/newcomer/ready").status_code == 400
    r = explicit.post("/v2/repository/models/newcomer/load")
    assert r.status_code == 200, r.text
    assert infer_ok(explicit, "newcomer")["model_version"] == "4"
    assert states(index(explicit), "newcomer") == [("4", "READY")]


def test_a_config_with_a_byte_order_mark_is_told_so(explicit):
    """The parser shows a BOM as an invisible character; the reason names it."""
    add_model(explicit.repo.path, "bomcfg", (1,), "\ufeff" + json.dumps(sim_config()))
    msg = error_message(explicit.post("/v2/repository/models/bomcfg/load"), 400)
    assert msg.endswith("config.json is not valid JSON: a UTF-8 byte order mark (EF BB BF) is "
                        "not allowed before the JSON (line 1)"), msg


def test_load_errors(explicit):
    msg = error_message(explicit.post("/v2/repository/models/no_such_folder/load"), 400)
    assert "no_such_folder" in msg and "folder" in msg, msg
    assert rows_of(index(explicit), "no_such_folder") == []
    msg = error_message(explicit.post("/v2/repository/models/.hidden/load"), 400)
    assert "name" in msg, msg
    msg = error_message(explicit.post("/v2/repository/models/no_such_model/unload"), 400)
    assert "no_such_model" in msg
    r = explicit.post("/v2/repository/models/cyc/load",
                      json={"parameters": {"config": "{\"max_batch_size\": 2}"}})
    assert "config" in error_message(r, 400)
    infer_ok(explicit, "cyc")


@pytest.mark.parametrize("path", ["/v2/repository/index", "/v2/repository/models/cyc/load",
                                  "/v2/repository/models/cyc/unload"])
@pytest.mark.parametrize("params", [5, "x", [], None])
def test_parameters_must_be_an_object(explicit, path, params):
    msg = error_message(explicit.post(path, json={"parameters": params}), 400)
    assert msg == "'parameters' must be a JSON object", msg
    infer_ok(explicit, "cyc")  # nothing was unloaded


@pytest.mark.parametrize("path", ["/v2/repository/index", "/v2/repository/models/cyc/load",
                                  "/v2/repository/models/cyc/unload"])
def test_a_body_that_is_not_json_says_where(explicit, path):
    """A repository endpoint's body that does not parse is told what the parser found, and
    where, as an infer body is (a duplicate key was told it was no JSON object)."""
    for body, found in (('{"ready":true,"ready":false}',
                         "duplicate object key near '\"ready\"' (line 1, column 21)"),
                        ("xx", "'[' or '{' expected near 'xx' (line 1, column 2)"),
                        # The parser's own flag name is not the client's business; a BOM,
                        # which it shows as an invisible character, is named.
                        ('{"parameters":{"a":"b\\u0000"}}',
                         "\\u0000 is not allowed in strings near '\"b\\u0000\"' (line 1, "
                         "column 28)"),
                        ('\ufeff{}', "a UTF-8 byte order mark (EF BB BF) is not allowed before "
                         "the JSON (line 1, column 1)")):
        msg = error_message(explicit.post(path, data=body.encode()), 400)
        assert msg == ("request body is not valid JSON: %s; expected a JSON object (or an "
                       "empty body)" % found), msg
    msg = error_message(explicit.post(path, data="[1]"), 400)
    assert msg == "the request body must be a JSON object (or empty)", msg
    infer_ok(explicit, "cyc")  # nothing was unloaded


def test_unload_dependents_must_be_a_boolean(explicit):
    r = explicit.post("/v2/repository/models/cyc/unload",
                      json={"parameters": {"unload_dependents": "x"}})
    assert error_message(r, 400) == "'unload_dependents' must be true or false"
    infer_ok(explicit, "cyc")
    r = explicit.post("/v2/repository/models/cyc/unload",
                      json={"parameters": {"unload_dependents": False}})
    assert r.status_code == 200, r.text
    assert explicit.post("/v2/repository/models/cyc/load").status_code == 200


def test_load_with_one_version_missing_serves_the_others(explicit):
    """version_policy.specific names 1 and 5, only 1 has a folder: the load answers 400 naming
    version 5, version 1 serves, and the index shows both states."""
    add_model(explicit.repo.path, "partial", (1,),
              sim_config(extra={"version_policy": {"specific": [1, 5]}}))
    msg = error_message(explicit.post("/v2/repository/models/partial/load"), 400)
    assert msg.startswith("failed to load 'partial': version 5:"), msg
    assert infer_ok(explicit, "partial")["model_version"] == "1"
    assert states(index(explicit), "partial") == [("1", "READY"), ("5", "UNAVAILABLE")]
    # A reload while version 1 serves: the folder version 5 never had does not hold the new
    # config back (all or nothing is for versions that fail to load), and 400 still names it.
    write_config(os.path.join(explicit.repo.path, "partial"),
                 sim_config(max_batch_size=16, extra={"version_policy": {"specific": [1, 5]}}))
    msg = error_message(explicit.post("/v2/repository/models/partial/load"), 400)
    assert msg.startswith("failed to load 'partial': version 5:"), msg
    cfg = explicit.get("/v2/models/partial/config").json()
    assert cfg["max_batch_size"] == 16, cfg
    assert states(index(explicit), "partial") == [("1", "READY"), ("5", "UNAVAILABLE")]
    # config.json names only version 2 before its folder is renamed in: nothing built, so
    # version 1 keeps serving; once the folder is there, version 2 goes in.
    mdir = os.path.join(explicit.repo.path, "partial")
    write_config(mdir, sim_config(extra={"version_policy": {"specific": [2]}}))
    msg = error_message(explicit.post("/v2/repository/models/partial/load"), 400)
    assert msg.startswith("failed to load 'partial': version 2:"), msg
    assert infer_ok(explicit, "partial")["model_version"] == "1"
    os.makedirs(os.path.join(mdir, "2"))
    assert explicit.post("/v2/repository/models/partial/load").status_code == 200
    assert infer_ok(explicit, "partial")["model_version"] == "2"
    assert explicit.post("/v2/repository/models/partial/unload").status_code == 200


# ---- reloads ------------------------------------------------------------------------------

def test_reload_under_traffic_fails_no_request(explicit):
    """Clients keep sending while config.json changes and the model reloads three times:
    every request succeeds, and the last config is the one in effect."""
    mdir = os.path.join(explicit.repo.path, "live")
    stop = threading.Event()
    results = []
    lock = threading.Lock()

    def client_loop(k):
        s = requests.Session()
        i = 0
        while not stop.is_set():
            vals = [float(k), float(i)]
            try:
                r = s.post(explicit.url("/v2/models/live/infer"), json=body(vals),
                           timeout=HTTP_TIMEOUT_S)
                ok = r.status_code == 200 and r.json()["outputs"][0]["data"] == vals
                res = (ok, r.status_code, r.text[:200])
            except requests.RequestException as e:
                res = (False, None, repr(e))
            with lock:
                results.append(res)
            i += 1

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        for mbs in (8, 2, 6):
            time.sleep(0.25)
            write_config(mdir, sim_config(latency_us=1000, max_batch_size=mbs))
            r = explicit.post("/v2/repository/models/live/load")
            assert r.status_code == 200, r.text
            assert explicit.get("/v2/models/live").json()["max_batch_size"] == mbs
        time.sleep(0.25)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    failures = [r for r in results if not r[0]]
    assert not failures, "%d of %d requests failed during reloads: %r" % (
        len(failures), len(results), failures[:5])
    assert len(results) > 40, len(results)
    assert states(index(explicit), "live") == [("1", "READY")]


def test_failed_reload_keeps_the_old_version_serving(explicit):
    mdir = os.path.join(explicit.repo.path, "fragile")
    write_config(mdir, '{"backend": "sim", "max_batch_size": ')
    msg = error_message(explicit.post("/v2/repository/models/fragile/load"), 400)
    assert "fragile" in msg and "config.json" in msg, msg
    infer_ok(explicit, "fragile", (3.0, 4.0))
    rows = rows_of(index(explicit), "fragile")
    assert [(r["version"], r["state"]) for r in rows] == [("1", "READY")]
    assert "reload failed" in rows[0]["reason"] and "config.json" in rows[0]["reason"], rows
    # One log line says what happened; none says that the serving version is unavailable.
    assert explicit.server.wait_log(r"model=fragile reload=failed kept=serving reason=\"")
    assert "model=fragile version=1 state=unavailable" not in explicit.server.log()
    # Nor that it was unloaded: the copy the failed load built is discarded without an INFO
    # line (it logged "version=1 state=unloaded" right after "kept=serving").
    time.sleep(0.5)
    assert "model=fragile version=1 state=unloaded" not in explicit.server.log()
    # Fixed: the reload succeeds and the reason is gone.
    write_config(mdir, sim_config(max_batch_size=3))
    assert explicit.post("/v2/repository/models/fragile/load").status_code == 200
    rows = rows_of(index(explicit), "fragile")
    assert rows[0]["state"] == "READY" and rows[0]["reason"] == "", rows
    assert explicit.get("/v2/models/fragile").json()["max_batch_size"] == 3


def test_unload_with_50_requests_in_flight_loses_none(explicit):
    """50 requests on a 100 ms, max_batch_size 4, one-instance model take about 1.3 s; the
    unload arrives while most of them are queued. All 50 complete; later ones get 503."""
    n = 50
    results = [None] * n

    def one(i):
        vals = [float(i), float(-i)]
        try:
            r = requests.post(explicit.url("/v2/models/slow/infer"), json=body(vals),
                              timeout=HTTP_TIMEOUT_S)
            results[i] = (r.status_code, r.status_code == 200 and
                          r.json()["outputs"][0]["data"] == vals, r.text[:200])
        except requests.RequestException as e:
            results[i] = (None, False, repr(e))

    items_before = explicit.metric("batchd_inference_items_total", model="slow", version="1")
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    # Every one of the 50 must have reached the scheduler (queued or running) before the
    # unload: a request that arrives after it rightly gets 503.
    wait_for(lambda: (explicit.metric("batchd_inference_inflight", model="slow", version="1")
                      or 0) + ((explicit.metric("batchd_inference_items_total", model="slow",
                                                version="1") or 0) - (items_before or 0))
             >= n, 10, "all 50 requests accepted on 'slow'")
    r = explicit.post("/v2/repository/models/slow/unload")
    assert r.status_code == 200, r.text
    rows = rows_of(index(explicit), "slow")
    assert [(x.get("version"), x["state"]) for x in rows] == [("1", "UNLOADING")], rows
    msg = error_message(explicit.infer("slow", body([0.0, 0.0])), 503)
    assert "not loaded" in msg, msg
    for t in threads:
        t.join(30)
    bad = [x for x in results if x is None or not x[1]]
    assert not bad, "%d of %d in-flight requests failed: %r" % (len(bad), n, bad[:5])
    items = explicit.metric("batchd_inference_items_total", model="slow", version="1")
    assert items - (items_before or 0) == n
    rows = wait_for(lambda: [x for x in rows_of(index(explicit), "slow")
                             if x["state"] == "UNAVAILABLE"], 5, "'slow' to finish unloading")
    assert "not loaded" in rows[0]["reason"]


def test_failed_onnx_reload_keeps_serving(start_server_fn):
    """A garbage model.onnx on reload: the old session keeps serving and the index says
    why."""
    src = find_onnx_model("identity")
    if src is None or not ort_available():
        pytest.skip("identity model or ONNX Runtime not available")
    repo = start_server_fn.repo("onnx_reload")
    vdir = os.path.join(repo.path, "identity", "1")
    os.makedirs(vdir)
    shutil.copyfile(src, os.path.join(vdir, "model.onnx"))
    client = start_server_fn(repo, ["--model-control", "explicit"])
    x = [float(i) for i in range(16)]
    req = {"inputs": [tensor("INPUT0", "FP32", [1, 16], x)]}
    assert client.infer("identity", req).status_code == 200
    with open(os.path.join(vdir, "model.onnx"), "wb") as f:
        f.write(b"\x00garbage, not a protobuf\xff\xfe" * 37)
    msg = error_message(client.post("/v2/repository/models/identity/load"), 400)
    assert "identity" in msg
    r = client.infer("identity", req)
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == x, r.text
    rows = rows_of(index(client), "identity")
    assert [(x_["version"], x_["state"]) for x_ in rows] == [("1", "READY")]
    assert "reload failed" in rows[0]["reason"], rows


@pytest.mark.parametrize("mode", ["explicit", "poll"])
def test_a_new_version_that_fails_keeps_the_serving_one(start_server_fn, mode):
    """Version 1 serves; a version folder 2 appears without its model.onnx yet (being copied):
    the reload that would serve 2 instead of 1 fails and 1 keeps serving, saying why; once
    the file is in, 2 serves. A reload is all or nothing, as Triton's."""
    src = find_onnx_model("identity")
    if src is None or not ort_available():
        pytest.skip("identity model or ONNX Runtime not available")
    repo = start_server_fn.repo("new_version_" + mode)
    mdir = os.path.join(repo.path, "identity")
    os.makedirs(os.path.join(mdir, "1"))
    shutil.copyfile(src, os.path.join(mdir, "1", "model.onnx"))
    args = ["--model-control", mode] + (["--repository-poll-secs", "1"] if mode == "poll" else [])
    client = start_server_fn(repo, args)
    x = [float(i) for i in range(16)]
    req = {"inputs": [tensor("INPUT0", "FP32", [1, 16], x)]}

    def served_version():
        r = client.infer("identity", req)
        assert r.status_code == 200, r.text
        return r.json()["model_version"]
    assert served_version() == "1"
    os.makedirs(os.path.join(mdir, "2"))
    if mode == "explicit":
        msg = error_message(client.post("/v2/repository/models/identity/load"), 400)
        assert "version 2" in msg and "model.onnx" in msg, msg
    else:
        wait_for(lambda: "reload failed" in rows_of(index(client), "identity")[0]["reason"],
                 10, "the failed reload of version 2 in the index")
    for _ in range(5):
        assert served_version() == "1"
    rows = rows_of(index(client), "identity")
    assert [(r["version"], r["state"]) for r in rows] == [("1", "READY")], rows
    assert "version 2" in rows[0]["reason"], rows
    shutil.copyfile(src, os.path.join(mdir, "2", "model.onnx"))
    if mode == "explicit":
        assert client.post("/v2/repository/models/identity/load").status_code == 200
    wait_for(lambda: served_version() == "2", 10, "version 2 to serve")
    rows = rows_of(index(client), "identity")
    assert [(r["version"], r["state"], r["reason"]) for r in rows] == [("2", "READY", "")], rows


def test_load_then_unload_of_a_missing_folder_leaves_nothing(start_server_fn):
    """A load of a name with no folder, queued behind a slow load and unloaded before it
    runs: answered, and nothing of the name stays (no index row, unknown to requests, not
    counted against the repository's 4096 models)."""
    repo = start_server_fn.repo("phantom")
    add_model(repo.path, "warm", (1,), sim_config(latency_us=1500000, extra={
        "warmup": {"batch_sizes": [1], "count": 1}}))
    client = start_server_fn(repo, ["--model-control", "explicit"])
    slow = threading.Thread(target=client.post, args=("/v2/repository/models/warm/load",))
    slow.start()
    time.sleep(0.2)
    got = {}
    ghost = threading.Thread(target=lambda: got.setdefault(
        "r", client.post("/v2/repository/models/nosuchdir/load")))
    ghost.start()
    time.sleep(0.1)
    assert client.post("/v2/repository/models/nosuchdir/unload").status_code == 200
    ghost.join(30)
    slow.join(30)
    assert got["r"].status_code in (400, 404, 409), got["r"].text
    assert rows_of(index(client), "nosuchdir") == []
    r = client.get("/v2/models/nosuchdir")
    assert r.status_code in (400, 404) and "unknown model" in r.json()["error"], r.text


def test_sigterm_answers_waiting_loads_at_once_and_ends_the_running_one_early(start_server_fn):
    """SIGTERM while a load runs (two versions, each warming up for 1.5 s) and another waits
    behind it: the waiting one is answered 503 at once, not after the running one, and the
    running one stops after the version it is building (also 503), so the drain does not wait
    for the rest of it."""
    import signal
    repo = start_server_fn.repo("termload")
    add_model(repo.path, "warm", (1, 2), sim_config(latency_us=1500000, extra={
        "warmup": {"batch_sizes": [1], "count": 1}, "version_policy": {"all": {}}}))
    add_model(repo.path, "quick", (1,), sim_config())
    client = start_server_fn(repo, ["--model-control", "explicit"])
    ready_at_start = client.server.log().count("model=warm version=2 state=ready")
    got = {}

    def load(name):
        r = client.post("/v2/repository/models/%s/load" % name)
        got[name] = (r, time.monotonic())

    running = threading.Thread(target=load, args=("warm",))
    running.start()
    time.sleep(0.3)  # version 1 of warm is warming up
    waiting = threading.Thread(target=load, args=("quick",))
    waiting.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    client.server.signal(signal.SIGTERM)
    waiting.join(30)
    running.join(30)
    r, t = got["quick"]
    assert error_message(r, 503) == "failed to load 'quick': the server is shutting down"
    assert t - t0 < 1.0, "the waiting load was answered %.1f s after SIGTERM" % (t - t0)
    r, t = got["warm"]
    assert error_message(r, 503) == "failed to load 'warm': the server is shutting down"
    client.server.stop(send_signal=False)  # exit code 0
    # Version 2 of the reload was never built.
    assert client.server.log().count("model=warm version=2 state=ready") == ready_at_start


# ---- without explicit mode ----------------------------------------------------------------

def test_repository_changes_refused_without_explicit_mode(start_server):
    repo = start_server.repo("none_mode")
    add_model(repo.path, "m", (1,), sim_config())
    client = start_server(repo)
    for path in ("/v2/repository/models/m/load", "/v2/repository/models/m/unload"):
        msg = error_message(client.post(path), 400)
        assert "--model-control explicit" in msg, msg
    # The index is readable in every mode.
    assert states(index(client), "m") == [("1", "READY")]
    assert client.get("/v2").json()["extensions"] == [
        "binary_tensor_data",
        "classification",
        "model_configuration",
        "model_repository",
        "schedule_policy",
        "statistics",
    ]
    infer_ok(client, "m")


# ---- poll mode ----------------------------------------------------------------------------

def test_poll_mode_picks_up_added_changed_and_removed_models(start_server_fn, tmp_path):
    repo = start_server_fn.repo("poll")
    add_model(repo.path, "p1", (1,), sim_config())
    client = start_server_fn(repo, ["--model-control", "poll", "--repository-poll-secs", "1"])
    infer_ok(client, "p1")
    # Loads and unloads are explicit mode's; the index is readable.
    assert "explicit" in error_message(client.post("/v2/repository/models/p1/unload"), 400)
    assert states(index(client), "p1") == [("1", "READY")]

    add_model(repo.path, "p2", (1,), sim_config(max_batch_size=4), staging=str(tmp_path))
    wait_for(lambda: client.get("/v2/models/p2/ready").status_code == 200, 6, "p2 to load")
    infer_ok(client, "p2")

    write_config(os.path.join(repo.path, "p2"), sim_config(max_batch_size=2))
    wait_for(lambda: client.get("/v2/models/p2").json().get("max_batch_size") == 2, 6,
             "p2's new config")
    infer_ok(client, "p2")

    # A new version folder: latest 1 moves to it.
    os.makedirs(os.path.join(repo.path, "p2", "2"))
    wait_for(lambda: client.get("/v2/models/p2").json().get("versions") == ["2"], 6,
             "p2 version 2")
    assert infer_ok(client, "p2")["model_version"] == "2"

    # A broken change keeps the old config serving and says why.
    write_config(os.path.join(repo.path, "p2"), '{"backend": "sim", "bogus_key": 1}')
    rows = wait_for(lambda: [r for r in rows_of(index(client), "p2")
                             if "reload failed" in r["reason"]], 6, "p2's failed reload")
    assert rows[0]["state"] == "READY" and "bogus_key" in rows[0]["reason"], rows
    infer_ok(client, "p2")

    shutil.rmtree(os.path.join(repo.path, "p1"))
    wait_for(lambda: client.get("/v2/models/p1/ready").status_code == 400
             and not rows_of(index(client), "p1"), 6, "p1 to be removed")
    assert "unknown model" in error_message(client.infer("p1", body([1.0, 2.0])), 400)


def test_unreadable_model_folders_and_files_say_permission_denied():
    """Run as a user who may not read them (root reads everything, so root drops to nobody): a
    model folder that lists but cannot be entered (mode 644) and a model.onnx of mode 000 are
    unavailable with the errno's words, not "no numeric version folder" or ONNX Runtime's
    "system error number 13"."""
    import tempfile
    from conftest import Client, Server
    cmd = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv to drop to another user")
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    base = tempfile.mkdtemp(prefix="batchd-perm-")
    os.chmod(base, 0o755)
    repo = os.path.join(base, "repo")
    models = {"noexec": "sim", "onnx000": "onnxruntime"}
    for name, backend in models.items():
        os.makedirs(os.path.join(repo, name, "1"))
        cfg = sim_config() if backend == "sim" else {"backend": "onnxruntime"}
        with open(os.path.join(repo, name, "config.json"), "w") as f:
            json.dump(cfg, f)
    src = find_onnx_model("identity")
    if src:
        shutil.copy(src, os.path.join(repo, "onnx000", "1", "model.onnx"))
    for root, dirs, files in os.walk(base):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    os.chmod(os.path.join(repo, "noexec"), 0o644)
    if src:
        os.chmod(os.path.join(repo, "onnx000", "1", "model.onnx"), 0o000)
    server = Server(repo, args=["--strict-readiness", "false"])
    server.prefix = cmd
    try:
        client = Client(server.start())
        r = client.post("/v2/repository/index", json={})
        assert r.status_code == 200
        reasons = {m["name"]: m.get("reason") for m in r.json()}
        assert reasons["noexec"] == ("cannot read the model folder %s/noexec: Permission denied"
                                     % repo), reasons
        if src and ort_available():
            assert reasons["onnx000"] == ("cannot read model file '%s/onnx000/1/model.onnx': "
                                          "Permission denied" % repo), reasons
    finally:
        server.stop()
        os.chmod(os.path.join(repo, "noexec"), 0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_a_symbolic_link_to_no_folder_is_skipped_with_a_warning(start_server_fn):
    """A repository entry that is a dangling or looping symbolic link, or one to a file, is no
    model, as a plain file is not; the log says so at start rather than leaving it unseen."""
    repo = start_server_fn.repo()
    repo.add_sim("real", [("INPUT0", "FP32", [2])])
    os.symlink(os.path.join(repo.path, "nowhere"), os.path.join(repo.path, "dangling"))
    os.symlink(os.path.join(repo.path, "loop"), os.path.join(repo.path, "loop"))
    os.symlink(os.path.join(repo.path, "real", "config.json"), os.path.join(repo.path, "afile"))
    client = start_server_fn(repo)
    assert [m["name"] for m in index(client)] == ["real"]
    log = client.server.log()
    for name, why in (("dangling", "No such file or directory"),
                      ("loop", "Too many levels of symbolic links"), ("afile", "not a folder")):
        assert "model=%s skipped: a symbolic link to no folder (%s)" % (name, why) in log, log


def test_in_poll_mode_a_link_to_no_folder_that_appears_is_warned_about_once(start_server_fn):
    """A link to no folder added while the server polls is logged once (it was skipped without
    a word), again only after it went and came back; one there at start is not repeated."""
    repo = start_server_fn.repo()
    repo.add_sim("real", [("INPUT0", "FP32", [2])])
    os.symlink(os.path.join(repo.path, "nowhere"), os.path.join(repo.path, "early"))
    client = start_server_fn(repo, ["--model-control", "poll", "--repository-poll-secs", "1"])
    warn = "model=%s skipped: a symbolic link to no folder (No such file or directory)"
    late = os.path.join(repo.path, "late")
    os.symlink(os.path.join(repo.path, "nowhere"), late)
    assert client.server.wait_log(re.escape(warn % "late"), timeout=10)
    time.sleep(2.5)  # two more scans or so
    log = client.server.log()
    assert log.count(warn % "late") == 1 and log.count(warn % "early") == 1, log
    os.remove(late)
    time.sleep(2.5)
    os.symlink(os.path.join(repo.path, "nowhere"), late)
    deadline = time.time() + 10
    while client.server.log().count(warn % "late") < 2 and time.time() < deadline:
        time.sleep(0.2)
    assert client.server.log().count(warn % "late") == 2, client.server.log()
    assert [m["name"] for m in index(client)] == ["real"]


def test_a_folder_name_that_is_not_text_is_skipped_with_a_warning(start_server_fn):
    """Names show as they are in replies, metric labels and logs: two folders that differ only
    in invalid UTF-8 bytes would be one name there (duplicate series), and a control character
    would be lost from some of them. Such folders are skipped, each with a warning."""
    repo = start_server_fn.repo()
    repo.add_sim("real", [("INPUT0", "FP32", [2])])
    for name in (b"x\xff", b"x\xfe", b"del\x7f", b"nl\nx"):
        shutil.copytree(os.path.join(repo.path, "real").encode(),
                        os.path.join(repo.path.encode(), name))
    client = start_server_fn(repo)
    assert [m["name"] for m in index(client)] == ["real"]
    metrics = client.get("/metrics").text
    assert 'model="x' not in metrics and 'model="del' not in metrics
    for shown in (r'"x\xff"', r'"x\xfe"', r'"del\x7f"', r'"nl\x0ax"'):
        want = "folder=%s skipped: a model name must be UTF-8 text without control characters"
        assert client.server.wait_log(re.escape(want % shown)), client.server.log()
