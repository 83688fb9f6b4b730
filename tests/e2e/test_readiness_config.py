"""Strict readiness (Triton's --strict-readiness), the model configuration endpoint
(GET /v2/models/{m}[/versions/{v}]/config in Triton's model-config JSON) and the repository
index in every --model-control mode (batchd issue 12).

Readiness: by default GET /v2/health/ready is 200 only when every model the repository holds
(or was asked to load) is READY; otherwise 503 with {"error": "not ready: ...", "models": [the
repository index rows of what is not ready]}. An empty repository is not ready. With
--strict-readiness false (or BATCHD_STRICT_READINESS=false) it is 200 while the server runs.
The drain answers 503 in both modes."""
import http.client
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest
import requests

from conftest import (BATCHD_BIN, HTTP_TIMEOUT_S, error_message, ort_available, tensor,
                      wait_for)

NOT_READY_PREFIX = "not ready: "


def sim_config(max_batch_size=4, latency_us=0, extra=None):
    cfg = {
        "backend": "sim",
        "max_batch_size": max_batch_size,
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "dims": [2]}],
        "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "dims": [2]}],
        "sim": {"latency_us": latency_us},
    }
    if extra:
        cfg.update(extra)
    return cfg


def write_config(model_dir, cfg):
    """Replace config.json in one step (a polling server never sees half a file)."""
    os.makedirs(model_dir, exist_ok=True)
    tmp = os.path.join(model_dir, ".config.json.tmp")
    with open(tmp, "w") as f:
        f.write(cfg if isinstance(cfg, str) else json.dumps(cfg))
    os.replace(tmp, os.path.join(model_dir, "config.json"))


def add_model(root, name, cfg, versions=(1,)):
    mdir = os.path.join(root, name)
    for v in versions:
        os.makedirs(os.path.join(mdir, str(v)), exist_ok=True)
    write_config(mdir, cfg)
    return mdir


def index(client):
    r = client.post("/v2/repository/index")
    assert r.status_code == 200, r.text
    return r.json()


def index_rows(client, name, version=None):
    return [r for r in index(client) if r["name"] == name and r.get("version") == version]


def index_row(client, name, version=None):
    rows = index_rows(client, name, version)
    assert len(rows) == 1, index(client)
    return rows[0]


def ready_ok(client):
    r = client.get("/v2/health/ready")
    assert r.status_code == 200, r.text
    assert r.content == b""
    return r


def not_ready(client):
    """A 503 readiness answer: returns (error message after the prefix, models rows)."""
    r = client.get("/v2/health/ready")
    msg = error_message(r, 503)
    body = r.json()
    assert set(body) == {"error", "models"}, body
    assert msg.startswith(NOT_READY_PREFIX), msg
    assert isinstance(body["models"], list)
    return msg[len(NOT_READY_PREFIX):], body["models"]


def wait_ready_status(client, status, timeout, what):
    """Poll GET /v2/health/ready until it answers `status`; returns that response."""
    got = wait_for(lambda: [r for r in [client.get("/v2/health/ready")]
                            if r.status_code == status], timeout, what)
    return got[0]


def infer_ok(client, model, x=(1.0, 2.0)):
    r = client.infer(model, {"inputs": [tensor("INPUT0", "FP32", [1, 2], list(x))]})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == list(x)


# ---- readiness with a broken model --------------------------------------------------------

def broken_repo(starter):
    repo = starter.repo("broken")
    repo.add_sim("alive", [("INPUT0", "FP32", [2])], max_batch_size=4)
    repo.add_broken_onnx("broken")
    return repo


@pytest.fixture(scope="module")
def strict(start_server):
    return start_server(broken_repo(start_server))


def test_strict_readiness_is_the_default_and_names_the_broken_model(strict):
    why, models = not_ready(strict)
    # The model that failed, with the reason the repository index gives (the index answers in
    # --model-control none too).
    row = index_row(strict, "broken", "1")
    assert row["state"] == "UNAVAILABLE" and row["reason"], row
    assert models == [{"name": "broken", "version": "1", "state": "UNAVAILABLE",
                       "reason": row["reason"]}]
    assert why == "model 'broken' version 1 failed to load: " + row["reason"][:300], why
    # The server is live and the good model serves; only readiness says no.
    assert strict.get("/v2/health/live").status_code == 200
    assert strict.get("/v2/models/alive/ready").status_code == 200
    infer_ok(strict, "alive")
    r = strict.get("/v2/health/ready")
    assert r.status_code == 503 and r.headers["Content-Type"] == "application/json"


def test_relaxed_readiness_with_a_broken_model(start_server):
    client = start_server(broken_repo(start_server), ["--strict-readiness", "false"])
    ready_ok(client)
    # The broken model itself is still not ready.
    assert client.get("/v2/models/broken/ready").status_code == 400


def test_relaxed_readiness_from_the_environment(start_server_fn, monkeypatch):
    monkeypatch.setenv("BATCHD_STRICT_READINESS", "false")
    client = start_server_fn(broken_repo(start_server_fn))
    ready_ok(client)
    # The flag wins over the environment.
    client2 = start_server_fn(broken_repo(start_server_fn), ["--strict-readiness=true"])
    assert not_ready(client2)[0].startswith("model 'broken' version 1 failed to load: ")


def test_bad_config_json_and_several_models_not_ready(start_server):
    repo = start_server.repo("badcfg")
    repo.add_sim("alive", [("INPUT0", "FP32", [2])], max_batch_size=4)
    add_model(repo.path, "a_bad_json", '{"backend": "sim", "max_batch_size": ')
    add_model(repo.path, "b_bad_key", sim_config(extra={"bogus_key": 1}))
    os.makedirs(os.path.join(repo.path, "c_no_version"))
    client = start_server(repo)
    why, models = not_ready(client)
    assert [(m["name"], m.get("version"), m["state"]) for m in models] == [
        ("a_bad_json", "1", "UNAVAILABLE"), ("b_bad_key", "1", "UNAVAILABLE"),
        ("c_no_version", None, "UNAVAILABLE")]
    assert models[0]["reason"].startswith("config.json is not valid JSON"), models
    assert "bogus_key" in models[1]["reason"], models
    assert "no numeric version folder" in models[2]["reason"], models
    assert why == ("model 'a_bad_json' version 1 failed to load: %s (and 2 more not ready)"
                   % models[0]["reason"]), why
    # Each row is what the index says of it.
    for m in models:
        assert m in index(client), m


def test_a_version_that_is_a_file_is_named_as_such(start_server):
    """A model folder whose '1' is a file: the reason says so (it suggested that very path,
    'such as .../1', as the folder to make)."""
    repo = start_server.repo("filever")
    repo.add_sim("alive", [("INPUT0", "FP32", [2])], max_batch_size=4)
    mdir = os.path.join(repo.path, "filever")
    os.makedirs(mdir)
    with open(os.path.join(mdir, "1"), "w") as f:
        f.write("not a folder")
    client = start_server(repo)
    why, models = not_ready(client)
    assert models == [{"name": "filever", "state": "UNAVAILABLE",
                       "reason": "no numeric version folder was found: %s/1 is a file, not a "
                                 "folder" % mdir}], models
    assert why == "model 'filever' is unavailable: %s" % models[0]["reason"], why


def test_empty_repository_is_not_ready_unless_relaxed(start_server):
    empty = start_server.repo("empty")
    client = start_server(empty)
    r = client.get("/v2/health/ready")
    assert r.status_code == 503
    assert r.json() == {"error": "not ready: the repository has no model to serve", "models": []}
    assert client.get("/v2/health/live").status_code == 200
    relaxed = start_server(empty, ["--strict-readiness", "false"])
    ready_ok(relaxed)


def test_all_good_models_ready(start_server):
    repo = start_server.repo("good")
    repo.add_sim("a", [("INPUT0", "FP32", [2])], max_batch_size=4)
    repo.add_sim("b", [("INPUT0", "INT32", [3])], max_batch_size=0)
    ready_ok(start_server(repo))


def test_bad_strict_readiness_value_fails_the_start(tmp_path):
    if not os.path.isfile(BATCHD_BIN):
        pytest.skip("batchd binary not found at %s" % BATCHD_BIN)
    r = subprocess.run([BATCHD_BIN, "serve", "--model-repository", str(tmp_path),
                        "--http-port", "0", "--strict-readiness", "maybe"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r
    assert ("--strict-readiness must be true or false (or yes/no, 1/0), got 'maybe'"
            in r.stderr), r.stderr
    h = subprocess.run([BATCHD_BIN, "serve", "--help"], capture_output=True, text=True,
                       timeout=30)
    assert "--strict-readiness" in h.stdout and "BATCHD_STRICT_READINESS" in h.stdout


def test_open_circuit_breaker_is_not_ready(start_server_fn):
    repo = start_server_fn.repo("breaker")
    repo.add_sim("flaky", [("INPUT0", "FP32", [2])], max_batch_size=4,
                 extra={"circuit_breaker": {"consecutive_failures": 1,
                                            "cooldown_us": 600000000}})
    client = start_server_fn(repo)
    ready_ok(client)
    r = client.infer("flaky", {"parameters": {"sim_fail": True},
                               "inputs": [tensor("INPUT0", "FP32", [1, 2], [1.0, 2.0])]})
    assert r.status_code == 500, r.text
    why, models = not_ready(client)
    assert len(models) == 1, models
    assert models[0]["name"] == "flaky" and models[0]["version"] == "1"
    assert models[0]["state"] == "UNAVAILABLE"
    assert models[0]["reason"].startswith("model 'flaky' version 1 is unavailable for another")
    assert models[0] == index_row(client, "flaky", "1")
    assert why == models[0]["reason"], why


# ---- explicit mode: loads, unloads, reloads ----------------------------------------------

def _post_load(client, name, out):
    out.append(requests.post(client.url("/v2/repository/models/%s/load" % name),
                             timeout=HTTP_TIMEOUT_S))


def test_explicit_mode_loads_flip_readiness(start_server_fn):
    repo = start_server_fn.repo("explicit")
    add_model(repo.path, "ok", sim_config())
    late = add_model(repo.path, "late", '{"backend": "sim", "max_batch_size": ')
    client = start_server_fn(repo, ["--model-control", "explicit"])

    # 1. A model that failed at start: not ready.
    why, models = not_ready(client)
    assert [(m["name"], m["version"], m["state"]) for m in models] == [
        ("late", "1", "UNAVAILABLE")]
    assert why.startswith("model 'late' version 1 failed to load: config.json is not valid"), why

    # 2. Fixed and loaded: ready.
    write_config(late, sim_config())
    assert client.post("/v2/repository/models/late/load").status_code == 200
    ready_ok(client)
    infer_ok(client, "late")

    # 3. Unloaded on purpose: it no longer counts.
    assert client.post("/v2/repository/models/late/unload").status_code == 200
    ready_ok(client)
    wait_for(lambda: [r for r in index_rows(client, "late") if r["state"] == "UNAVAILABLE"], 5,
             "'late' to finish unloading")
    ready_ok(client)

    # 4. Asked to load again, with a warmup that takes a second: not ready (LOADING) until it
    # loaded and warmed up, then ready.
    write_config(late, sim_config(latency_us=1000000,
                                  extra={"warmup": {"batch_sizes": [1], "count": 1}}))
    out = []
    t = threading.Thread(target=_post_load, args=(client, "late", out))
    t.start()
    try:
        seen = wait_ready_status(client, 503, 5, "readiness to say LOADING")
        assert seen.json() == {"error": "not ready: model 'late' is loading",
                               "models": [{"name": "late", "state": "LOADING", "reason": ""}]}
    finally:
        t.join(HTTP_TIMEOUT_S)
    assert out and out[0].status_code == 200, out
    ready_ok(client)

    # 5. A reload that fails keeps the old version serving: still ready.
    write_config(os.path.join(repo.path, "ok"), '{"backend": "sim", "bogus_key": 1}')
    error_message(client.post("/v2/repository/models/ok/load"), 400)
    ready_ok(client)
    row = index_row(client, "ok", "1")
    assert row["state"] == "READY" and "reload failed" in row["reason"], row
    infer_ok(client, "ok")


def test_explicit_mode_load_of_a_new_broken_model_counts(start_server_fn):
    repo = start_server_fn.repo("explicit_new")
    add_model(repo.path, "ok", sim_config())
    client = start_server_fn(repo, ["--model-control", "explicit"])
    ready_ok(client)
    # A folder added after start and asked to load, which fails: not ready.
    add_model(repo.path, "newbie", sim_config(extra={"bogus_key": 1}))
    error_message(client.post("/v2/repository/models/newbie/load"), 400)
    why, models = not_ready(client)
    assert [(m["name"], m["version"]) for m in models] == [("newbie", "1")], models
    # Unloading it takes it out of the count.
    assert client.post("/v2/repository/models/newbie/unload").status_code == 200
    ready_ok(client)


# ---- poll mode ----------------------------------------------------------------------------

def test_poll_mode_readiness_follows_the_folder(start_server_fn, tmp_path):
    repo = start_server_fn.repo("poll")
    add_model(repo.path, "ok", sim_config())
    client = start_server_fn(repo, ["--model-control", "poll", "--repository-poll-secs", "1"])
    ready_ok(client)
    # A broken model appears: not ready once a scan saw it.
    staging = add_model(os.path.join(str(tmp_path), "s1"), "bad",
                        '{"backend": "sim", "bogus_key": 1}')
    os.rename(staging, os.path.join(repo.path, "bad"))
    r = wait_ready_status(client, 503, 6, "the broken model to be seen")
    models = r.json()["models"]
    assert [(m["name"], m["version"], m["state"]) for m in models] == [
        ("bad", "1", "UNAVAILABLE")]
    assert "bogus_key" in models[0]["reason"], models
    # Removed: it no longer counts.
    shutil.rmtree(os.path.join(repo.path, "bad"))
    wait_ready_status(client, 200, 6, "the removal")
    # A good model appears and loads; a broken change to it keeps it serving: still ready.
    staging = add_model(os.path.join(str(tmp_path), "s2"), "later", sim_config())
    os.rename(staging, os.path.join(repo.path, "later"))
    wait_for(lambda: client.get("/v2/models/later/ready").status_code == 200, 6, "'later'")
    ready_ok(client)
    write_config(os.path.join(repo.path, "later"), '{"backend": "sim", "bogus_key": 2}')
    wait_for(lambda: "reload failed" in index_row(client, "later", "1")["reason"], 6,
             "the failed reload")
    ready_ok(client)
    infer_ok(client, "later")


# ---- the drain ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["true", "false"])
def test_draining_is_not_ready_in_both_modes(start_server_fn, mode):
    repo = start_server_fn.repo("drain")
    repo.add_sim("slow", [("INPUT0", "INT32", [2])], max_batch_size=1, instances=1,
                 latency_us=800000)
    client = start_server_fn(repo, ["--strict-readiness", mode])
    srv = client.server
    idle = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=HTTP_TIMEOUT_S)
    busy = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=HTTP_TIMEOUT_S)
    idle.request("GET", "/v2/health/ready")
    r = idle.getresponse()
    r.read()
    assert r.status == 200
    busy.request("POST", "/v2/models/slow/infer",
                 body=json.dumps({"inputs": [tensor("INPUT0", "INT32", [1, 2], [4, 5])]}),
                 headers={"Content-Type": "application/json"})
    wait_for(lambda: client.metric("batchd_inference_inflight", model="slow", version="1") == 1,
             10, "the request in flight")
    srv.signal(signal.SIGTERM)
    assert srv.wait_log(r"shutdown signal") is not None
    idle.request("GET", "/v2/health/ready")
    r = idle.getresponse()
    body = r.read()
    assert r.status == 503
    assert json.loads(body) == {"error": "the server is shutting down"}
    r = busy.getresponse()
    r.read()
    assert r.status == 200
    idle.close()
    busy.close()
    srv.stop(send_signal=False)


# ---- the repository index in every mode ---------------------------------------------------

def test_index_in_none_mode_and_loads_still_refused(strict):
    rows = index(strict)
    assert {(r["name"], r["version"], r["state"]) for r in rows} == {
        ("alive", "1", "READY"), ("broken", "1", "UNAVAILABLE")}
    r = strict.post("/v2/repository/index", json={"ready": True})
    assert r.status_code == 200
    assert r.json() == [{"name": "alive", "version": "1", "state": "READY", "reason": ""}]
    for path in ("/v2/repository/models/alive/load", "/v2/repository/models/alive/unload"):
        msg = error_message(strict.post(path), 400)
        assert msg == ("loading and unloading models needs the server started with "
                       "--model-control explicit (it runs with --model-control none)"), msg
    error_message(strict.get("/v2/repository/index"), 405)
    infer_ok(strict, "alive")


# ---- GET /v2/models/{m}[/versions/{v}]/config ---------------------------------------------

def queue_policy(timeout_us, max_queue_size):
    return {"timeout_action": "REJECT", "default_timeout_microseconds": timeout_us,
            "allow_timeout_override": True, "max_queue_size": max_queue_size}


# What config.json's defaults report: batching on, no delay, one level, a queue of 1024.
DEFAULT_BATCHING = {
    "preferred_batch_size": [],
    "max_queue_delay_microseconds": 0,
    "priority_levels": 1,
    "default_priority_level": 1,
    "default_queue_policy": queue_policy(0, 1024),
    "priority_queue_policy": {},
}


@pytest.fixture(scope="module")
def configs(start_server):
    repo = start_server.repo("configs")
    repo.add_sim("batcher",
                 [("INPUT0", "FP32", [4]), ("IDS", "INT64", [-1]), ("MASK", "BOOL", [2, 3]),
                  ("RAW", "UINT8", [8]), ("TEXT", "BYTES", [1])],
                 max_batch_size=16, instances=3,
                 dynamic_batching={"max_queue_delay_us": 2500, "max_queue_size": 100,
                                   "preferred_batch_sizes": [4, 8], "priority_levels": 3,
                                   "default_priority_level": 2, "default_timeout_us": 50000,
                                   "priority_queue_policy": {
                                       "1": {"max_queue_size": 10, "default_timeout_us": 1000},
                                       "3": {"max_queue_size": 100,
                                             "default_timeout_us": 50000}}})
    repo.add_sim("plain", [("INPUT0", "INT32", [2, 3])], max_batch_size=0,
                 dynamic_batching=False, extra={"version_policy": {"all": {}}})
    os.makedirs(os.path.join(repo.path, "plain", "2"))
    add_model(repo.path, "spec", sim_config(extra={"version_policy": {"specific": [1, 3]}}),
              versions=(1, 2, 3))
    add_model(repo.path, "auto", sim_config(extra={"dynamic_batching": {
        "max_queue_delay_us": "auto"}}))
    add_model(repo.path, "broken", '{"backend": "sim", "max_batch_size": ')
    if ort_available():
        for name in ("mlp", "int64_ident", "bool_not"):
            repo.try_add_onnx(name)
    return start_server(repo, ["--strict-readiness", "false"])


def test_config_of_a_sim_model_with_batching_priorities_and_instances(configs):
    for path in ("/v2/models/batcher/config", "/v2/models/batcher/versions/1/config"):
        r = configs.get(path)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"] == "application/json"
        assert r.json() == {
            "name": "batcher",
            "platform": "batchd_sim",
            "backend": "sim",
            "version_policy": {"latest": {"num_versions": 1}},
            "max_batch_size": 16,
            "input": [
                {"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]},
                {"name": "IDS", "data_type": "TYPE_INT64", "dims": [-1]},
                {"name": "MASK", "data_type": "TYPE_BOOL", "dims": [2, 3]},
                {"name": "RAW", "data_type": "TYPE_UINT8", "dims": [8]},
                {"name": "TEXT", "data_type": "TYPE_STRING", "dims": [1]},
            ],
            "output": [
                {"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]},
                {"name": "OUTPUT1", "data_type": "TYPE_INT64", "dims": [-1]},
                {"name": "OUTPUT2", "data_type": "TYPE_BOOL", "dims": [2, 3]},
                {"name": "OUTPUT3", "data_type": "TYPE_UINT8", "dims": [8]},
                {"name": "OUTPUT4", "data_type": "TYPE_STRING", "dims": [1]},
            ],
            "dynamic_batching": {
                "preferred_batch_size": [4, 8],
                "max_queue_delay_microseconds": 2500,
                "priority_levels": 3,
                "default_priority_level": 2,
                "default_queue_policy": queue_policy(50000, 100),
                # Level 3's policy equals the default one: only level 1 is listed.
                "priority_queue_policy": {"1": queue_policy(1000, 10)},
            },
            "instance_group": [{"count": 3, "kind": "KIND_CPU"}],
        }


def test_config_without_batching_and_of_a_specific_version(configs):
    expected = {
        "name": "plain",
        "platform": "batchd_sim",
        "backend": "sim",
        "version_policy": {"all": {}},
        "max_batch_size": 0,
        "input": [{"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [2, 3]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_INT32", "dims": [2, 3]}],
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
    }
    for v in ("1", "2"):
        r = configs.get("/v2/models/plain/versions/%s/config" % v)
        assert r.status_code == 200, r.text
        assert r.json() == expected
    assert configs.get("/v2/models/plain/config").json() == expected
    md = configs.get("/v2/models/plain").json()
    assert md["versions"] == ["1", "2"]


def test_config_without_batching_has_no_dynamic_batching(start_server):
    """max_batch_size 0 runs no batching whatever dynamic_batching would default to: the
    config says so by leaving the section out (API.md)."""
    repo = start_server.repo()
    repo.add_sim("nb", [("INPUT0", "INT32", [3])], max_batch_size=0)
    client = start_server(repo)
    cfg = client.get("/v2/models/nb/config").json()
    assert cfg["max_batch_size"] == 0 and "dynamic_batching" not in cfg, cfg


def test_config_version_policy_specific_and_default_batching(configs):
    r = configs.get("/v2/models/spec/versions/3/config")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "name": "spec",
        "platform": "batchd_sim",
        "backend": "sim",
        "version_policy": {"specific": {"versions": [1, 3]}},
        "max_batch_size": 4,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [2]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [2]}],
        "dynamic_batching": DEFAULT_BATCHING,
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
    }
    assert configs.get("/v2/models/spec/versions/1/config").status_code == 200


def test_config_with_an_adaptive_delay_leaves_the_delay_out(configs):
    db = configs.get("/v2/models/auto/config").json()["dynamic_batching"]
    assert "max_queue_delay_microseconds" not in db, db
    assert db["priority_levels"] == 1 and db["preferred_batch_size"] == [], db


@pytest.mark.parametrize("path,needle", [
    ("/v2/models/no_such_model/config", "unknown model 'no_such_model'"),
    ("/v2/models/spec/versions/2/config", "no version '2'"),
    ("/v2/models/spec/versions/7/config", "no version '7'"),
    ("/v2/models/batcher/versions/01/config", "no version '01'"),
])
def test_config_of_an_unknown_model_or_version_is_404(configs, path, needle):
    msg = error_message(configs.get(path), 404)
    assert needle in msg, msg


def test_config_of_a_failed_model_answers_like_its_metadata(configs):
    md = configs.get("/v2/models/broken")
    cfg = configs.get("/v2/models/broken/config")
    assert md.status_code == 503
    msg = error_message(cfg, md.status_code)
    assert cfg.json() == md.json()
    assert msg.startswith("model 'broken' is unavailable: config.json is not valid JSON"), msg


def test_config_routing(configs):
    error_message(configs.post("/v2/models/batcher/config", data=b"{}"), 405)
    error_message(configs.get("/v2/models/batcher/config/extra"), 404)
    r = configs.request("HEAD", "/v2/models/batcher/config")
    assert r.status_code == 200


def test_config_of_onnx_models(configs):
    if not ort_available():
        pytest.skip("ONNX Runtime library not found (run the setup script)")
    r = configs.get("/v2/models/mlp/config")
    if r.status_code == 404:
        pytest.skip("ONNX model 'mlp' not found in ../shared/models or build/test-models")
    assert r.status_code == 200, r.text
    # No config.json: inputs and outputs come from the model file, max_batch_size 64 (every
    # first dim is dynamic), batching with config.json's defaults.
    assert r.json() == {
        "name": "mlp",
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": 64,
        "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [64]}],
        "output": [{"name": "probs", "data_type": "TYPE_FP32", "dims": [10]}],
        "dynamic_batching": DEFAULT_BATCHING,
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
    }
    for name, ttype in (("int64_ident", "TYPE_INT64"), ("bool_not", "TYPE_BOOL")):
        r = configs.get("/v2/models/%s/config" % name)
        if r.status_code != 200:
            continue  # not generated here (tools/make_models.py --out build/test-models)
        cfg = r.json()
        assert cfg["max_batch_size"] == 64
        assert cfg["input"] == [{"name": "INPUT0", "data_type": ttype, "dims": [4]}]
        assert cfg["output"] == [{"name": "OUTPUT0", "data_type": ttype, "dims": [4]}]
