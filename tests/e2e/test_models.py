"""Model repository behaviour with real ONNX models and broken ones: a bad model never takes
the others down and says why it is unavailable; without ONNX Runtime, sim models still work."""
import os
import re
import subprocess

import numpy as np
import pytest

from conftest import (BATCHD_BIN, ORT_LIB, binary_body, error_message, find_onnx_model,
                      ort_available, parse_infer_reply, require_onnx, run_threads, sanitizer_env,
                      tensor)


def _reason_words(msg):
    low = msg.lower()
    return any(w in low for w in ("onnx", "load", "pars", "protobuf", "invalid", "fail",
                                  "config", "json", "version"))


@pytest.fixture(scope="module")
def mixed(start_server, tmp_path_factory):
    repo = start_server.repo()
    repo.add_sim("alive", [("INPUT0", "FP32", [3])], max_batch_size=4)
    repo.add_broken_onnx("broken_onnx")
    # A config that is not JSON, and one that names an unknown backend.
    repo.add_sim("bad_config", [("INPUT0", "FP32", [3])])
    with open(repo.path + "/bad_config/config.json", "w") as f:
        f.write('{"backend": "sim", "max_batch_size": ')
    repo.add_sim("bad_backend", [("INPUT0", "FP32", [3])], extra={"backend": "tensorflow"})
    repo.add_sim("bad_preferred", [("INPUT0", "FP32", [3])], max_batch_size=8,
                 extra={"dynamic_batching": {"preferred_batch_sizes": [4, 16]}})
    if ort_available():
        repo.try_add_onnx("identity")
        if repo.try_add_onnx("mlp"):
            # The same model on two intra-op threads that spin while they wait for work.
            repo.add_onnx("mlp_spin", "mlp",
                          {"threads_per_instance": 2, "intra_op_spinning": True})
        for name in ("int64_ident", "bool_not", "fixed_shape", "mlp_small", "fp16_ident",
                     "reshape3", "inputs70"):
            repo.try_add_onnx(name)
    client = start_server(repo)
    return client


def test_good_models_served_next_to_broken_ones(mixed):
    assert mixed.get("/v2/health/live").status_code == 200
    assert mixed.get("/v2/models/alive/ready").status_code == 200
    r = mixed.infer("alive", {"inputs": [tensor("INPUT0", "FP32", [1, 3], [1.0, 2.0, 3.0])]})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("model", ["broken_onnx", "bad_config", "bad_backend",
                                   "bad_preferred"])
def test_broken_model_not_ready_and_says_why(mixed, model):
    r = mixed.get("/v2/models/%s/ready" % model)
    assert r.status_code in (400, 503), r.status_code
    r = mixed.infer(model, {"inputs": [tensor("INPUT0", "FP32", [1, 3], [1.0, 2.0, 3.0])]})
    assert r.status_code in (400, 503), r.text
    msg = error_message(r, r.status_code)
    assert model in msg or _reason_words(msg), msg
    md = mixed.get("/v2/models/%s" % model)
    assert md.status_code in (200, 400, 404, 503)
    if md.status_code != 200:
        error_message(md, md.status_code)
    mixed.assert_healthy()


def test_preferred_size_above_max_batch_size_is_refused(mixed):
    msg = error_message(mixed.infer("bad_preferred", {"inputs": [
        tensor("INPUT0", "FP32", [1, 3], [1.0, 2.0, 3.0])]}), 503)
    assert msg.endswith("config.json: 'dynamic_batching.preferred_batch_sizes' has 16, above "
                        "max_batch_size 8; expected sizes from 1 to 8"), msg


def test_broken_onnx_reason_mentions_the_model_file(mixed):
    if not ort_available():
        pytest.skip("ONNX Runtime library not found at %s" % ORT_LIB)
    r = mixed.infer("broken_onnx", {"inputs": [tensor("INPUT0", "FP32", [1, 3], [0.0] * 3)]})
    msg = error_message(r, r.status_code)
    assert _reason_words(msg), msg


def test_server_not_ready_while_models_are_broken(mixed):
    # Strict readiness (the default, as Triton's --strict-readiness): 503 naming every model
    # version that is not ready, with the repository index's reason.
    r = mixed.get("/v2/health/ready")
    msg = error_message(r, 503)
    assert msg.startswith("not ready: model '"), msg
    names = {m["name"] for m in r.json()["models"]}
    assert {"broken_onnx", "bad_config", "bad_backend"} <= names, r.json()
    assert "alive" not in names
    for m in r.json()["models"]:
        assert m["state"] == "UNAVAILABLE" and m["reason"], m


def _need(client, name):
    if client.get("/v2/models/%s/ready" % name).status_code != 200:
        pytest.skip("ONNX model %r unavailable (no model file or no ONNX Runtime at %s)"
                    % (name, ORT_LIB))
    return client.get("/v2/models/%s" % name).json()


def test_identity_beside_broken(mixed):
    _need(mixed, "identity")
    x = [float(i) for i in range(16)]
    r = mixed.infer("identity", {"inputs": [tensor("INPUT0", "FP32", [1, 16], x)]})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == x


def test_fp16_model_refused_with_reason(mixed):
    """FP16 tensors are not supported: a model with an FP16 input loads as unavailable and
    says so (tools/make_models.py --bad-out makes fp16_ident)."""
    if find_onnx_model("fp16_ident") is None or not ort_available():
        pytest.skip("fp16_ident not found (make test-models) or no ONNX Runtime")
    assert mixed.get("/v2/models/fp16_ident/ready").status_code in (400, 503)
    r = mixed.infer("fp16_ident", {"inputs": [tensor("INPUT0", "FP32", [1, 4], [0.0] * 4)]})
    msg = error_message(r, r.status_code)
    assert r.status_code in (400, 503)
    assert "FP16" in msg or "float16" in msg.lower(), msg
    mixed.assert_healthy()


def test_a_model_with_more_than_64_inputs_is_refused_with_reason(mixed):
    """batchd serves at most 64 inputs a model (config.json cannot list more either): a model
    file with 70 loads as unavailable and says so, and the server serves on."""
    if find_onnx_model("inputs70") is None or not ort_available():
        pytest.skip("inputs70 not found (make test-models) or no ONNX Runtime")
    r = mixed.get("/v2/models/inputs70/ready")
    assert r.status_code in (400, 503), r.text
    r = mixed.infer("inputs70", {"inputs": [tensor("in0", "FP32", [1, 1], [1.0])]})
    msg = error_message(r, r.status_code)
    assert r.status_code in (400, 503)
    assert "70 inputs" in msg and "at most 64" in msg, msg
    mixed.assert_healthy()


def test_a_failed_run_is_a_500_on_one_line_and_the_model_serves_on(mixed):
    """ONNX Runtime fails reshape3's run unless 3 divides the row's length: the answer is
    500 with ONNX Runtime's error on one line, and the next good request is served."""
    if find_onnx_model("reshape3") is None or not ort_available():
        pytest.skip("reshape3 not found (make test-models) or no ONNX Runtime")
    good = {"inputs": [tensor("INPUT0", "FP32", [1, 6], [0.0, 1, 2, 3, 4, 5])]}
    r = mixed.infer("reshape3", good)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["shape"] == [1, 3, 2]
    r = mixed.infer("reshape3", {"inputs": [tensor("INPUT0", "FP32", [1, 4], [0.0, 1, 2, 3])]})
    msg = error_message(r, 500)
    assert msg.startswith("run failed: ") and "Reshape" in msg, msg
    assert "\n" not in msg and "\r" not in msg and msg == msg.strip(), repr(msg)
    assert mixed.infer("reshape3", good).status_code == 200
    mixed.assert_healthy()


def test_an_index_the_model_refuses_fails_its_request_alone(start_server_fn):
    """An embedding lookup (gather: OUTPUT0 = TABLE[INPUT0], 10 rows) given an index past its
    table: ONNX Runtime refuses the run (INVALID_ARGUMENT). The requests that shared the batch
    run again one at a time, so only the one with the bad index fails, with 400 and ONNX
    Runtime's reason: before, all four got 500, and bad indices opened the circuit breaker
    (after one failed batch here) for every client."""
    if not ort_available():
        pytest.skip("no ONNX Runtime")
    repo = start_server_fn.repo()
    repo.add_onnx("gather", config={
        "max_batch_size": 8, "dynamic_batching": {"max_queue_delay_us": 300000},
        "circuit_breaker": {"consecutive_failures": 1, "cooldown_us": 60000000}})
    client = start_server_fn(repo)
    table = np.arange(40, dtype=np.float32).reshape(10, 4)

    def one(ids):
        return client.infer("gather", {"inputs": [tensor("INPUT0", "INT64", [1, 2], ids)]})

    sent = [[0, 9], [1, 8], [2, 10], [3, -1]]
    for ids, r in zip(sent, run_threads(one, [(ids,) for ids in sent])):
        if ids[1] == 10:
            msg = error_message(r, 400)
            assert msg.startswith("the model cannot run on this request's input values: "
                                  "ONNX Runtime: "), msg
            assert "indices element out of data bounds, idx=10" in msg, msg
            continue
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == table[ids].reshape(-1).tolist(), ids
    for bad in ([0, -11], [100, 0], [5, 2 ** 40]):
        error_message(one(bad), 400)
    r = one([4, 5])
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == table[[4, 5]].reshape(-1).tolist()
    lab = {"model": "gather", "version": "1", "protocol": "http"}
    assert client.metric("batchd_inference_requests_total", outcome="invalid", **lab) == 4
    assert client.metric("batchd_inference_requests_total", outcome="success", **lab) == 4
    assert client.metric("batchd_inference_requests_total", outcome="error", **lab) == 0
    client.assert_healthy()


# ---- mlp (shared) -------------------------------------------------------------------------

def _mlp_reference(x):
    """numpy forward pass of the mlp's graph (Gemm, Relu, Softmax) from its initializers."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        return None
    path = find_onnx_model("mlp")
    m = onnx.load(path)
    w = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in m.graph.initializer}
    vals = {m.graph.input[0].name: x.astype(np.float64)}
    for n in m.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Gemm":
            a = vals[n.input[0]]
            b = w[n.input[1]]
            if attrs.get("transA"):
                a = a.T
            if attrs.get("transB"):
                b = b.T
            y = attrs.get("alpha", 1.0) * a @ b
            if len(n.input) > 2:
                y = y + attrs.get("beta", 1.0) * w[n.input[2]]
        elif n.op_type == "Relu":
            y = np.maximum(vals[n.input[0]], 0)
        elif n.op_type == "Softmax":
            z = vals[n.input[0]]
            z = np.exp(z - z.max(axis=-1, keepdims=True))
            y = z / z.sum(axis=-1, keepdims=True)
        else:
            return None
        vals[n.output[0]] = y
    return vals[m.graph.output[0].name]


def test_mlp_rows_sum_to_one_and_batch_equals_single(mixed):
    md = _need(mixed, "mlp")
    assert md["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert md["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}]
    rng = np.random.RandomState(1)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    r = mixed.infer("mlp", {"inputs": [tensor("input", "FP32", [3, 64], x.tolist())]})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["name"] == "probs" and out["shape"] == [3, 10]
    batch = np.array(out["data"], dtype=np.float64).reshape(3, 10)
    assert np.all(np.abs(batch.sum(axis=1) - 1.0) < 1e-5), batch.sum(axis=1)
    assert np.all(batch >= 0)
    for i in range(3):
        r = mixed.infer("mlp", {"inputs": [tensor("input", "FP32", [1, 64], x[i].tolist())]})
        assert r.status_code == 200, r.text
        single = np.array(r.json()["outputs"][0]["data"], dtype=np.float64)
        assert np.allclose(single, batch[i], rtol=1e-5, atol=1e-7), (single, batch[i])
    ref = _mlp_reference(x)
    if ref is not None:
        assert np.allclose(batch, ref, rtol=1e-4, atol=1e-6), (batch, ref)


def test_mlp_with_spinning_threads_gives_the_same_rows(mixed):
    """config.json's intra_op_spinning changes how ONNX Runtime's threads wait, not what the
    model computes: two threads that spin give the rows one sleeping thread gives."""
    _need(mixed, "mlp")
    r = mixed.get("/v2/models/mlp_spin/ready")
    assert r.status_code == 200, mixed.post("/v2/repository/index").text
    md = mixed.get("/v2/models/mlp_spin").json()
    assert md["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    x = np.random.RandomState(3).standard_normal((4, 64)).astype(np.float32)
    got = {}
    for name in ("mlp", "mlp_spin"):
        r = mixed.infer(name, {"inputs": [tensor("input", "FP32", [4, 64], x.tolist())]})
        assert r.status_code == 200, r.text
        got[name] = np.array(r.json()["outputs"][0]["data"], dtype=np.float64).reshape(4, 10)
    assert np.allclose(got["mlp_spin"], got["mlp"], rtol=1e-5, atol=1e-7), got


def test_mlp_binary(mixed):
    _need(mixed, "mlp")
    x = np.random.RandomState(2).standard_normal((5, 64)).astype(np.float32)
    header = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [5, 64],
                          "parameters": {"binary_data_size": x.nbytes}}],
              "parameters": {"binary_data_output": True}}
    body, hl = binary_body(header, [x.tobytes()])
    r = mixed.infer_raw("mlp", body, hl)
    assert r.status_code == 200, r.text
    hdr, outs = parse_infer_reply(r)
    y = outs["probs"]
    assert y.shape == (5, 10)
    assert np.all(np.abs(y.astype(np.float64).sum(axis=1) - 1.0) < 1e-5)
    ref = _mlp_reference(x)
    if ref is not None:
        assert np.allclose(y, ref, rtol=1e-4, atol=1e-6)


# ---- project-made small models (tools/make_models.py) ------------------------------------

def test_int64_ident_extremes(mixed):
    md = _need(mixed, "int64_ident")
    inp, outp = md["inputs"][0], md["outputs"][0]
    assert inp["datatype"] == "INT64" and outp["datatype"] == "INT64"
    shape = [1 if d == -1 else d for d in inp["shape"]]
    n = int(np.prod(shape))
    base = [-9223372036854775808, 9223372036854775807, 0, -1, 1, 2 ** 53 + 1]
    vals = (base * (n // len(base) + 1))[:n]
    r = mixed.infer("int64_ident", {"inputs": [tensor(inp["name"], "INT64", shape, vals)]})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["name"] == outp["name"]
    assert out["data"] == vals


def test_bool_not(mixed):
    md = _need(mixed, "bool_not")
    inp = md["inputs"][0]
    assert inp["datatype"] == "BOOL" and md["outputs"][0]["datatype"] == "BOOL"
    shape = [2 if d == -1 else d for d in inp["shape"]]
    n = int(np.prod(shape))
    vals = [bool(i % 3 == 0) for i in range(n)]
    r = mixed.infer("bool_not", {"inputs": [tensor(inp["name"], "BOOL", shape, vals)]})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [not v for v in vals]


def test_fixed_shape_has_no_batch_dim(mixed):
    md = _need(mixed, "fixed_shape")
    for t in md["inputs"] + md["outputs"]:
        assert -1 not in t["shape"], t
    inp = md["inputs"][0]
    wrong = [inp["shape"][0] + 1] + inp["shape"][1:]
    n = int(np.prod(wrong))
    zero = False if inp["datatype"] == "BOOL" else 0
    r = mixed.infer("fixed_shape", {"inputs": [tensor(inp["name"], inp["datatype"], wrong,
                                                      [zero] * n)]})
    msg = error_message(r, 400)
    assert inp["name"] in msg
    # The exact shape runs, and the model is an identity.
    if inp["datatype"] == "FP32":
        n = int(np.prod(inp["shape"]))
        vals = [i * 0.5 - 1 for i in range(n)]
        r = mixed.infer("fixed_shape", {"inputs": [tensor(inp["name"], "FP32", inp["shape"],
                                                          vals)]})
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        assert out["shape"] == inp["shape"]
        assert out["data"] == vals


def test_mlp_small_exact(mixed):
    """output = input @ W + B with W[i][j] = ((4*i + j) % 7 - 3) / 2, B[j] = j/4 - 1/2
    (tools/make_models.py); small halves keep every float32 result exact."""
    md = _need(mixed, "mlp_small")
    assert md["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 8]}]
    assert md["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 4]}]
    w = np.array([[((4 * i + j) % 7 - 3) / 2 for j in range(4)] for i in range(8)])
    b = np.array([j / 4 - 0.5 for j in range(4)])
    x = np.array([[(r * 8 + c) % 5 - 2 for c in range(8)] for r in range(3)], dtype=np.float64)
    r = mixed.infer("mlp_small", {"inputs": [tensor("input", "FP32", [3, 8], x.tolist())]})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["name"] == "output" and out["shape"] == [3, 4]
    assert out["data"] == (x @ w + b).reshape(-1).tolist()


# ---- without ONNX Runtime -----------------------------------------------------------------

def test_missing_onnxruntime_library(start_server_fn):
    repo = start_server_fn.repo()
    repo.add_sim("still_works", [("INPUT0", "INT16", [2])], max_batch_size=2)
    if repo.try_add_onnx("identity") is None:
        repo.add_broken_onnx("identity")  # a model file of any content: ORT is what is missing
    client = start_server_fn(repo, args=["--onnxruntime-lib", "/nonexistent.so"])
    r = client.infer("still_works", {"inputs": [tensor("INPUT0", "INT16", [1, 2], [-7, 7])]})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [-7, 7]
    assert client.get("/v2/models/identity/ready").status_code in (400, 503)
    r = client.infer("identity", {"inputs": [tensor("INPUT0", "FP32", [1, 16], [0.0] * 16)]})
    msg = error_message(r, r.status_code)
    assert r.status_code in (400, 503)
    assert re.search(r"onnx\s*runtime", msg, re.I), msg


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_onnx_runtime_records_and_sends_no_telemetry(tmp_path, value):
    """ONNX Runtime 1.30's Linux build keeps usage events (model names, a device id) under
    ~/.cache/Microsoft, writes /tmp/mat-debug-<pid>.log and looks up Microsoft's collector to
    send them, unless ORT_DISABLE_TELEMETRY is set: batchd sets it, when it is unset or empty
    (as an env file leaves it; ONNX Runtime takes that as on)."""
    if not ort_available():
        pytest.skip("ONNX Runtime library not found at %s" % ORT_LIB)
    env = sanitizer_env()
    env.pop("ORT_DISABLE_TELEMETRY", None)
    if value is not None:
        env["ORT_DISABLE_TELEMETRY"] = value
    env["HOME"] = str(tmp_path)
    p = subprocess.Popen([BATCHD_BIN, "version"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 0, out
    assert "onnxruntime" in out, out
    assert not os.path.exists(os.path.join(str(tmp_path), ".cache", "Microsoft")), \
        os.listdir(os.path.join(str(tmp_path), ".cache"))
    assert not os.path.exists("/tmp/mat-debug-%d.log" % p.pid)


# ---- mobilenet_v2 (shared, slow) ---------------------------------------------------------

@pytest.mark.slow
@pytest.mark.onnx
def test_mobilenet_v2_binary(start_server_fn):
    repo = start_server_fn.repo()
    require_onnx(repo, "mobilenet_v2")
    client = start_server_fn(repo)
    md = _need(client, "mobilenet_v2")
    assert md["inputs"][0]["shape"] == [-1, 3, 224, 224]
    x = np.random.RandomState(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    header = {"inputs": [{"name": md["inputs"][0]["name"], "datatype": "FP32",
                          "shape": [1, 3, 224, 224], "parameters": {"binary_data_size": x.nbytes}}],
              "outputs": [{"name": md["outputs"][0]["name"], "parameters": {"binary_data": True}}]}
    body, hl = binary_body(header, [x.tobytes()])
    outs = []
    for _ in range(2):
        r = client.infer_raw("mobilenet_v2", body, hl)
        assert r.status_code == 200, r.text
        hdr, o = parse_infer_reply(r)
        assert hdr["outputs"][0]["shape"] == [1, 1000]
        y = o[md["outputs"][0]["name"]]
        assert y.shape == (1, 1000)
        assert np.all(np.isfinite(y))
        outs.append(y.astype(np.float64))
    scale = np.abs(outs[0]).max()
    assert scale > 0
    assert np.abs(outs[0] - outs[1]).max() <= 1e-5 * scale
