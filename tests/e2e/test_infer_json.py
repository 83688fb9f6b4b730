"""Infer with JSON tensors: ONNX identity/simple, sim models of every supported datatype,
output selection, id echo, batches."""
import json

import numpy as np
import pytest

from conftest import NP_DTYPES, error_message, ort_available, tensor

DTYPES = ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
          "FP32", "FP64"]

# Values per datatype, 6 each, including the extremes of the type.
VALUES = {
    "BOOL": [True, False, False, True, True, False],
    "INT8": [-128, 127, 0, -1, 1, 42],
    "INT16": [-32768, 32767, 0, -1, 1, 1234],
    "INT32": [-2147483648, 2147483647, 0, -1, 1, 123456],
    "INT64": [-9223372036854775808, 9223372036854775807, 0, -1, 1, 9007199254740993],
    "UINT8": [0, 255, 1, 128, 7, 200],
    "UINT16": [0, 65535, 1, 32768, 7, 40000],
    "UINT32": [0, 4294967295, 1, 2147483648, 7, 3000000000],
    "UINT64": [0, 18446744073709551615, 1, 9223372036854775808, 7, 18446744073709551614],
    "FP32": [0.5, -1.25, 3.4028234663852886e38, -3.4028234663852886e38, 1.401298464324817e-45,
             0.1],
    "FP64": [0.5, -1.25, 1.7976931348623157e308, -1.7976931348623157e308, 5e-324, 0.1],
}


@pytest.fixture(scope="module")
def client(start_server):
    repo = start_server.repo()
    for dt in DTYPES:
        repo.add_sim("dt_" + dt.lower(), [("INPUT0", dt, [3])], max_batch_size=4)
    repo.add_sim("sim_fp32", [("INPUT0", "FP32", [16])], max_batch_size=8)
    repo.add_sim("sim_pair", [("INPUT0", "INT32", [4]), ("INPUT1", "FP64", [2])],
                 max_batch_size=8)
    repo.add_sim("sim_matrix", [("INPUT0", "FP32", [2, 3])], max_batch_size=0)
    if ort_available():
        repo.try_add_onnx("identity")
        repo.try_add_onnx("simple")
    return start_server(repo)


def _need_model(client, name):
    if client.get("/v2/models/%s" % name).status_code != 200:
        pytest.skip("ONNX model %r unavailable (no model file or no ONNX Runtime)" % name)


# ---- ONNX identity / simple -----------------------------------------------------------

def test_identity_fp32_flat(client):
    _need_model(client, "identity")
    data = [i * 0.25 - 2.0 for i in range(16)]
    r = client.infer("identity", {"inputs": [tensor("INPUT0", "FP32", [1, 16], data)]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "identity"
    assert body["model_version"] == "1"
    assert len(body["outputs"]) == 1
    out = body["outputs"][0]
    assert out["name"] == "OUTPUT0"
    assert out["datatype"] == "FP32"
    assert out["shape"] == [1, 16]
    assert out["data"] == data


def test_identity_fp32_nested(client):
    _need_model(client, "identity")
    rows = [[float(r * 16 + c) / 8 for c in range(16)] for r in range(2)]
    r = client.infer("identity", {"inputs": [tensor("INPUT0", "FP32", [2, 16], rows)]})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["shape"] == [2, 16]
    # Replies are flat (row-major) per KServe v2.
    assert np.array(out["data"], dtype=np.float32).reshape(2, 16).tolist() == rows


def test_identity_fp32_arbitrary_values_roundtrip_as_float32(client):
    _need_model(client, "identity")
    rng = np.random.RandomState(7)
    x = (rng.standard_normal(16) * 1e3).astype(np.float32)
    r = client.infer("identity", {"inputs": [tensor("INPUT0", "FP32", [1, 16],
                                                    [float(v) for v in x])]})
    assert r.status_code == 200, r.text
    got = np.array(r.json()["outputs"][0]["data"], dtype=np.float64).astype(np.float32)
    assert np.array_equal(got, x)


def test_simple_int32_sum_and_difference(client):
    _need_model(client, "simple")
    a = list(range(16))
    b = [3 * i - 20 for i in range(16)]
    r = client.infer("simple", {"inputs": [tensor("INPUT0", "INT32", [1, 16], a),
                                           tensor("INPUT1", "INT32", [1, 16], b)]})
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert set(outs) == {"OUTPUT0", "OUTPUT1"}
    assert outs["OUTPUT0"]["data"] == [x + y for x, y in zip(a, b)]
    assert outs["OUTPUT1"]["data"] == [x - y for x, y in zip(a, b)]
    assert outs["OUTPUT0"]["datatype"] == "INT32"
    assert outs["OUTPUT1"]["shape"] == [1, 16]


def test_simple_batch_of_three(client):
    _need_model(client, "simple")
    a = np.arange(48, dtype=np.int32).reshape(3, 16)
    b = (np.arange(48, dtype=np.int32).reshape(3, 16) * 7) % 11
    r = client.infer("simple", {"inputs": [tensor("INPUT0", "INT32", [3, 16], a.tolist()),
                                           tensor("INPUT1", "INT32", [3, 16], b.tolist())]})
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert outs["OUTPUT0"]["shape"] == [3, 16]
    assert outs["OUTPUT0"]["data"] == (a + b).reshape(-1).tolist()
    assert outs["OUTPUT1"]["data"] == (a - b).reshape(-1).tolist()


def test_simple_select_one_output(client):
    _need_model(client, "simple")
    a = [5] * 16
    b = [2] * 16
    r = client.infer("simple", {"inputs": [tensor("INPUT0", "INT32", [1, 16], a),
                                           tensor("INPUT1", "INT32", [1, 16], b)],
                                "outputs": [{"name": "OUTPUT1"}]})
    assert r.status_code == 200, r.text
    outs = r.json()["outputs"]
    assert [o["name"] for o in outs] == ["OUTPUT1"]
    assert outs[0]["data"] == [3] * 16


def test_simple_int32_overflow_wraps_or_is_exact(client):
    """INT32 Add at the extremes: ONNX Runtime wraps (two's complement)."""
    _need_model(client, "simple")
    a = [2147483647] * 16
    b = [1] * 16
    r = client.infer("simple", {"inputs": [tensor("INPUT0", "INT32", [1, 16], a),
                                           tensor("INPUT1", "INT32", [1, 16], b)]})
    assert r.status_code == 200, r.text
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert outs["OUTPUT0"] == [-2147483648] * 16
    assert outs["OUTPUT1"] == [2147483646] * 16


# ---- sim models: every datatype ------------------------------------------------------

@pytest.mark.parametrize("dt", DTYPES)
def test_datatype_roundtrip(client, dt):
    vals = VALUES[dt]
    model = "dt_" + dt.lower()
    r = client.infer(model, {"inputs": [tensor("INPUT0", dt, [2, 3], vals)]})
    assert r.status_code == 200, r.text
    body = r.json()
    out = body["outputs"][0]
    assert out["name"] == "OUTPUT0"
    assert out["datatype"] == dt
    assert out["shape"] == [2, 3]
    got = out["data"]
    assert len(got) == 6
    if dt == "FP32":
        assert np.array_equal(np.array(got, dtype=np.float64).astype(np.float32),
                              np.array(vals, dtype=np.float32))
    elif dt == "FP64":
        assert got == vals
        assert all(type(v) is float for v in got)
    elif dt == "BOOL":
        assert got == vals
        assert all(type(v) is bool for v in got)
    else:
        assert got == vals
        assert all(type(v) is int for v in got)


@pytest.mark.parametrize("dt", ["FP32", "FP64"])
def test_negative_zero_keeps_its_sign_through_python_json(client, dt):
    """-0.0 comes back as `-0.0`: Python's json (like jansson) reads `-0` as the integer 0."""
    r = client.infer("dt_" + dt.lower(), {"inputs": [tensor("INPUT0", dt, [1, 3],
                                                            [-0.0, 0.0, -2.0])]})
    assert r.status_code == 200, r.text
    assert '"data":[-0.0,0,-2]' in r.text
    got = r.json()["outputs"][0]["data"]
    assert [np.signbit(v) for v in got] == [True, False, True]


@pytest.mark.parametrize("dt,bad", [("INT8", 128), ("INT8", -129), ("UINT8", -1), ("UINT8", 256),
                                    ("INT16", 32768), ("UINT16", 65536),
                                    ("INT32", 2147483648), ("UINT32", -1),
                                    ("UINT32", 4294967296), ("INT64", 9223372036854775808),
                                    ("UINT64", -1), ("UINT64", 18446744073709551616),
                                    ("INT32", 1.5), ("BOOL", 2), ("INT32", "7"),
                                    ("FP32", "x"), ("FP64", [1.0])])
def test_datatype_out_of_range_is_400(client, dt, bad):
    vals = list(VALUES[dt][:2]) + [bad]
    r = client.infer("dt_" + dt.lower(), {"inputs": [tensor("INPUT0", dt, [1, 3], vals)]})
    msg = error_message(r, 400)
    assert "INPUT0" in msg
    client.assert_healthy()


def test_fp32_value_too_large_for_fp32_is_400_or_inf(client):
    """1e39 does not fit FP32: either rejected or turned into +Inf (written back as null)."""
    r = client.infer("dt_fp32", {"inputs": [tensor("INPUT0", "FP32", [1, 3], [1e39, 0.0, 1.0])]})
    assert r.status_code in (200, 400)
    if r.status_code == 400:
        error_message(r, 400)
    client.assert_healthy()


def test_id_echoed_and_model_named(client):
    data = [float(i) for i in range(16)]
    r = client.infer("sim_fp32", {"id": "req-42 \u00e9\"x",
                                  "inputs": [tensor("INPUT0", "FP32", [1, 16], data)]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "req-42 \u00e9\"x"
    assert body["model_name"] == "sim_fp32"
    assert body["model_version"] == "1"
    assert body["outputs"][0]["data"] == data


def test_no_id_means_no_id_or_empty(client):
    r = client.infer("sim_fp32", {"inputs": [tensor("INPUT0", "FP32", [1, 16], [0.0] * 16)]})
    assert r.status_code == 200
    assert r.json().get("id", "") == ""


def test_explicit_version_path(client):
    data = [float(-i) for i in range(16)]
    r = client.infer("sim_fp32", {"inputs": [tensor("INPUT0", "FP32", [1, 16], data)]},
                     version="1")
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == "1"
    assert r.json()["outputs"][0]["data"] == data


def test_batch_of_three_rows_sim(client):
    x = np.arange(48, dtype=np.float32).reshape(3, 16) / 4
    r = client.infer("sim_fp32", {"inputs": [tensor("INPUT0", "FP32", [3, 16], x.tolist())]})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["shape"] == [3, 16]
    assert np.array_equal(np.array(out["data"], dtype=np.float32), x.reshape(-1))


def test_two_inputs_select_each_output(client):
    i0 = [1, -2, 3, -4]
    i1 = [0.25, -8.5]
    base = {"inputs": [tensor("INPUT0", "INT32", [1, 4], i0), tensor("INPUT1", "FP64", [1, 2], i1)]}
    r = client.infer("sim_pair", base)
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert outs["OUTPUT0"]["data"] == i0 and outs["OUTPUT0"]["datatype"] == "INT32"
    assert outs["OUTPUT1"]["data"] == i1 and outs["OUTPUT1"]["datatype"] == "FP64"
    for name, want in (("OUTPUT0", i0), ("OUTPUT1", i1)):
        r = client.infer("sim_pair", dict(base, outputs=[{"name": name}]))
        assert r.status_code == 200, r.text
        outs = r.json()["outputs"]
        assert [o["name"] for o in outs] == [name]
        assert outs[0]["data"] == want


def test_inputs_in_any_order(client):
    i0 = [9, 8, 7, 6]
    i1 = [1.5, 2.5]
    r = client.infer("sim_pair", {"inputs": [tensor("INPUT1", "FP64", [1, 2], i1),
                                             tensor("INPUT0", "INT32", [1, 4], i0)]})
    assert r.status_code == 200, r.text
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert outs == {"OUTPUT0": i0, "OUTPUT1": i1}


def test_unknown_output_name_is_400(client):
    r = client.infer("sim_fp32", {"inputs": [tensor("INPUT0", "FP32", [1, 16], [0.0] * 16)],
                                  "outputs": [{"name": "NOPE"}]})
    msg = error_message(r, 400)
    assert "NOPE" in msg


def test_model_without_batch_dim(client):
    x = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]]
    r = client.infer("sim_matrix", {"inputs": [tensor("INPUT0", "FP32", [2, 3], x)]})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["shape"] == [2, 3]
    assert out["data"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.5]


def test_extra_parameters_are_accepted(client):
    data = [1.0] * 16
    r = client.infer("sim_fp32", {"parameters": {"foo": "bar", "n": 3},
                                  "inputs": [tensor("INPUT0", "FP32", [1, 16], data,
                                                    some_param=True)]})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == data


def test_nested_data_shape_mismatch_is_400(client):
    # 2 rows of 8 where the shape says [1,16]: the nesting must match the shape.
    rows = [[0.0] * 8, [1.0] * 8]
    r = client.infer("sim_fp32", {"inputs": [tensor("INPUT0", "FP32", [1, 16], rows)]})
    msg = error_message(r, 400)
    assert "INPUT0" in msg
    client.assert_healthy()


def test_numpy_dtypes_cover_all(client):
    assert set(NP_DTYPES) == set(DTYPES)


def test_a_byte_order_mark_before_the_json_is_named(client):
    """The parser would show a BOM as an invisible character near which it expected '{'."""
    body = b"\xef\xbb\xbf" + json.dumps({"inputs": []}).encode()
    r = client.post("/v2/models/sim_fp32/infer", data=body,
                    headers={"Content-Type": "application/json"})
    assert error_message(r, 400) == ("request body is not valid JSON: a UTF-8 byte order mark "
                                     "(EF BB BF) is not allowed before the JSON (line 1, "
                                     "column 1)")
