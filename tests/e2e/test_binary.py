"""Triton's binary tensor extension: Inference-Header-Content-Length, binary_data_size on
inputs, binary outputs via outputs[].parameters.binary_data and parameters.binary_data_output."""
import http.client
import json

import numpy as np
import pytest

from conftest import NP_DTYPES, binary_body, error_message, ort_available, parse_infer_reply


@pytest.fixture(scope="module")
def client(start_server):
    repo = start_server.repo()
    repo.add_sim("bin_fp32", [("INPUT0", "FP32", [16])], max_batch_size=8)
    repo.add_sim("bin_var", [("INPUT0", "FP32", [-1])], max_batch_size=8)
    repo.add_sim("bin_mixed", [("INPUT0", "INT32", [4]), ("INPUT1", "FP64", [3]),
                               ("INPUT2", "BOOL", [2])], max_batch_size=8)
    for dt in NP_DTYPES:
        repo.add_sim("bdt_" + dt.lower(), [("INPUT0", dt, [5])], max_batch_size=4)
    if ort_available():
        repo.try_add_onnx("identity")
        repo.try_add_onnx("simple")
    return start_server(repo)


def _arr(dt, n, seed=0):
    rng = np.random.RandomState(seed)
    npdt = NP_DTYPES[dt]
    if dt == "BOOL":
        return rng.randint(0, 2, n).astype(np.bool_)
    if npdt.kind == "f":
        a = rng.standard_normal(n).astype(npdt) * 1000
        a[0] = np.finfo(npdt).max
        a[1] = np.finfo(npdt).tiny
        return a
    info = np.iinfo(npdt)
    a = rng.randint(0, 100, n).astype(npdt)
    a[0] = info.min
    a[1] = info.max
    return a


def test_binary_input_json_output(client):
    x = np.arange(32, dtype=np.float32).reshape(2, 16) / 3
    header = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2, 16],
                          "parameters": {"binary_data_size": x.nbytes}}]}
    body, hl = binary_body(header, [x.tobytes()])
    r = client.infer_raw("bin_fp32", body, hl)
    assert r.status_code == 200, r.text
    # No binary output was asked for: a plain JSON reply.
    hdr, outs = parse_infer_reply(r)
    assert hdr["model_name"] == "bin_fp32"
    assert hdr["outputs"][0]["shape"] == [2, 16]
    got = np.array(outs["OUTPUT0"], dtype=np.float64).astype(np.float32)
    assert np.array_equal(got, x.reshape(-1))


def test_binary_input_binary_output_per_output(client):
    x = (np.arange(16, dtype=np.float32) - 7.5) * 1.1
    header = {"id": "b1",
              "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                          "parameters": {"binary_data_size": 64}}],
              "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}
    body, hl = binary_body(header, [x.tobytes()])
    r = client.infer_raw("bin_fp32", body, hl)
    assert r.status_code == 200, r.text
    assert "Inference-Header-Content-Length" in r.headers
    n = int(r.headers["Inference-Header-Content-Length"])
    hdr = json.loads(r.content[:n])
    assert hdr["id"] == "b1"
    o = hdr["outputs"][0]
    assert o["name"] == "OUTPUT0" and o["datatype"] == "FP32" and o["shape"] == [1, 16]
    assert o["parameters"]["binary_data_size"] == 64
    assert "data" not in o
    assert len(r.content) == n + 64
    got = np.frombuffer(r.content[n:], dtype="<f4")
    assert got.tobytes() == x.tobytes()


def test_json_input_binary_output_via_binary_data_output(client):
    x = [float(i) * 0.5 for i in range(16)]
    r = client.infer("bin_fp32", {"inputs": [{"name": "INPUT0", "datatype": "FP32",
                                              "shape": [1, 16], "data": x}],
                                  "parameters": {"binary_data_output": True}})
    assert r.status_code == 200, r.text
    hdr, outs = parse_infer_reply(r)
    assert "Inference-Header-Content-Length" in r.headers
    assert hdr["outputs"][0]["parameters"]["binary_data_size"] == 64
    assert outs["OUTPUT0"].tolist() == [x]


def test_binary_data_false_overrides_default(client):
    x = [float(i) for i in range(16)]
    r = client.infer("bin_fp32", {"inputs": [{"name": "INPUT0", "datatype": "FP32",
                                              "shape": [1, 16], "data": x}],
                                  "outputs": [{"name": "OUTPUT0",
                                               "parameters": {"binary_data": False}}],
                                  "parameters": {"binary_data_output": True}})
    assert r.status_code == 200, r.text
    hdr, outs = parse_infer_reply(r)
    assert isinstance(outs["OUTPUT0"], list), \
        "an output's own binary_data false must win over binary_data_output true: %r" % hdr
    assert outs["OUTPUT0"] == x


@pytest.mark.parametrize("dt", list(NP_DTYPES))
def test_binary_roundtrip_every_datatype(client, dt):
    x = _arr(dt, 10, seed=3).reshape(2, 5)
    header = {"inputs": [{"name": "INPUT0", "datatype": dt, "shape": [2, 5],
                          "parameters": {"binary_data_size": x.nbytes}}],
              "parameters": {"binary_data_output": True}}
    body, hl = binary_body(header, [x.tobytes()])
    r = client.infer_raw("bdt_" + dt.lower(), body, hl)
    assert r.status_code == 200, r.text
    hdr, outs = parse_infer_reply(r)
    o = hdr["outputs"][0]
    assert o["datatype"] == dt and o["shape"] == [2, 5]
    assert o["parameters"]["binary_data_size"] == x.nbytes
    assert outs["OUTPUT0"].tobytes() == x.tobytes()


def test_mixed_json_and_binary_inputs(client):
    i0 = [7, -7, 2147483647, -2147483648]
    i1 = np.array([1.5, -2.25, 1e300], dtype="<f8")
    i2 = [True, False]
    header = {"inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 4], "data": i0},
        {"name": "INPUT1", "datatype": "FP64", "shape": [1, 3],
         "parameters": {"binary_data_size": 24}},
        {"name": "INPUT2", "datatype": "BOOL", "shape": [1, 2], "data": i2}],
        "outputs": [{"name": "OUTPUT0"},
                    {"name": "OUTPUT1", "parameters": {"binary_data": True}},
                    {"name": "OUTPUT2", "parameters": {"binary_data": True}}]}
    body, hl = binary_body(header, [i1.tobytes()])
    r = client.infer_raw("bin_mixed", body, hl)
    assert r.status_code == 200, r.text
    hdr, outs = parse_infer_reply(r)
    assert [o["name"] for o in hdr["outputs"]] == ["OUTPUT0", "OUTPUT1", "OUTPUT2"]
    assert outs["OUTPUT0"] == i0
    assert outs["OUTPUT1"].tobytes() == i1.tobytes()
    assert outs["OUTPUT2"].tolist() == [i2]
    assert hdr["outputs"][2]["parameters"]["binary_data_size"] == 2


def test_two_binary_inputs_in_order(client):
    i0 = np.array([[1, 2, 3, 4]], dtype="<i4")
    i1 = np.array([[0.5, 0.25, 0.125]], dtype="<f8")
    i2 = np.array([[False, True]], dtype=np.bool_)
    header = {"inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 4],
         "parameters": {"binary_data_size": 16}},
        {"name": "INPUT1", "datatype": "FP64", "shape": [1, 3],
         "parameters": {"binary_data_size": 24}},
        {"name": "INPUT2", "datatype": "BOOL", "shape": [1, 2],
         "parameters": {"binary_data_size": 2}}],
        "parameters": {"binary_data_output": True}}
    body, hl = binary_body(header, [i0.tobytes(), i1.tobytes(), i2.tobytes()])
    r = client.infer_raw("bin_mixed", body, hl)
    assert r.status_code == 200, r.text
    hdr, outs = parse_infer_reply(r)
    assert outs["OUTPUT0"].tobytes() == i0.tobytes()
    assert outs["OUTPUT1"].tobytes() == i1.tobytes()
    assert outs["OUTPUT2"].tobytes() == i2.tobytes()
    # Bytes follow in output order.
    n = int(r.headers["Inference-Header-Content-Length"])
    assert r.content[n:] == i0.tobytes() + i1.tobytes() + i2.tobytes()


def test_binary_header_only_json_with_header_length_equal_body(client):
    """Inference-Header-Content-Length equal to the body length and no binary inputs."""
    x = [0.0] * 16
    header = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": x}]}
    body, hl = binary_body(header, [])
    r = client.infer_raw("bin_fp32", body, hl)
    assert r.status_code == 200, r.text
    assert parse_infer_reply(r)[1]["OUTPUT0"] == x


def test_identity_onnx_binary(client):
    if client.get("/v2/models/identity").status_code != 200:
        pytest.skip("ONNX model 'identity' unavailable (no model file or no ONNX Runtime)")
    x = np.linspace(-3, 3, 64, dtype=np.float32).reshape(4, 16)
    header = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [4, 16],
                          "parameters": {"binary_data_size": x.nbytes}}],
              "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}
    body, hl = binary_body(header, [x.tobytes()])
    r = client.infer_raw("identity", body, hl)
    assert r.status_code == 200, r.text
    hdr, outs = parse_infer_reply(r)
    assert hdr["outputs"][0]["shape"] == [4, 16]
    assert outs["OUTPUT0"].tobytes() == x.tobytes()


def test_simple_onnx_binary_mixed(client):
    if client.get("/v2/models/simple").status_code != 200:
        pytest.skip("ONNX model 'simple' unavailable (no model file or no ONNX Runtime)")
    a = np.arange(16, dtype="<i4").reshape(1, 16)
    b = np.full((1, 16), -3, dtype="<i4")
    header = {"inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a.reshape(-1).tolist()},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16],
         "parameters": {"binary_data_size": 64}}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}},
                    {"name": "OUTPUT1", "parameters": {"binary_data": False}}]}
    body, hl = binary_body(header, [b.tobytes()])
    r = client.infer_raw("simple", body, hl)
    assert r.status_code == 200, r.text
    hdr, outs = parse_infer_reply(r)
    assert outs["OUTPUT0"].tolist() == (a + b).tolist()
    assert outs["OUTPUT1"] == (a - b).reshape(-1).tolist()


def test_bad_binary_requests(client):
    x = np.zeros(16, dtype=np.float32)
    header = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                          "parameters": {"binary_data_size": 64}}]}
    body, hl = binary_body(header, [x.tobytes()])
    # Binary data but no Inference-Header-Content-Length: the body is not valid JSON.
    r = client.infer_raw("bin_fp32", body, None)
    error_message(r, 400)
    client.assert_healthy()
    # Header length beyond the body.
    r = client.infer_raw("bin_fp32", body, len(body) + 1)
    error_message(r, 400)
    client.assert_healthy()
    # Header length cutting the JSON short.
    r = client.infer_raw("bin_fp32", body, hl - 5)
    error_message(r, 400)
    client.assert_healthy()
    # Trailing bytes that no input claims.
    r = client.infer_raw("bin_fp32", body + b"\0\0\0\0", hl)
    error_message(r, 400)
    client.assert_healthy()


def test_an_empty_binary_output_is_still_a_binary_reply(client):
    """An output asked for in binary that holds no bytes (shape [1, 0]) still makes the reply
    the binary extension's: Inference-Header-Content-Length and binary_data_size 0."""
    header = {"id": "z", "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 0],
                                     "parameters": {"binary_data_size": 0}}],
              "parameters": {"binary_data_output": True}}
    body, hl = binary_body(header, [])
    r = client.infer_raw("bin_var", body, hl)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/octet-stream"
    n = int(r.headers["Inference-Header-Content-Length"])
    assert n == len(r.content)
    out = json.loads(r.content)["outputs"][0]
    assert out["shape"] == [1, 0] and out["parameters"] == {"binary_data_size": 0}, out


@pytest.mark.parametrize("second,status", [("same", 200), ("other", 400)])
def test_inference_header_content_length_given_twice(client, second, status):
    """Given twice, the two values must agree (as Content-Length's must): with another value
    a proxy could split the body elsewhere, so it is a 400 that names both."""
    x = np.arange(16, dtype=np.float32)
    header = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                          "parameters": {"binary_data_size": 64}}]}
    body, hl = binary_body(header, [x.tobytes()])
    conn = http.client.HTTPConnection("127.0.0.1", client.server.port, timeout=30)
    conn.putrequest("POST", "/v2/models/bin_fp32/infer")
    conn.putheader("Content-Length", str(len(body)))
    conn.putheader("Inference-Header-Content-Length", str(hl))
    conn.putheader("Inference-Header-Content-Length", str(hl if second == "same" else hl + 8))
    conn.endheaders(body)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    assert r.status == status, data
    if status == 400:
        assert json.loads(data) == {"error": "Inference-Header-Content-Length is given twice, as "
                                             "'%d' and '%d'; expected one value" % (hl, hl + 8)}


@pytest.mark.parametrize("byte", [2, 0xFF])
def test_bool_bytes_other_than_0_and_1_are_refused(client, byte):
    """A binary BOOL element is one byte, 0 (false) or 1 (true); any other byte would reach the
    model as undefined (ONNX Runtime's Not turns 0x02 into 0x03), so it is a 400."""
    data = bytes([1, 0, byte, 1, 0])
    header = {"inputs": [{"name": "INPUT0", "datatype": "BOOL", "shape": [1, 5],
                          "parameters": {"binary_data_size": 5}}]}
    body, hl = binary_body(header, [data])
    msg = error_message(client.infer_raw("bdt_bool", body, hl), 400)
    assert msg == ("input 'INPUT0': BOOL element 2 is the byte 0x%02x; expected 0 (false) "
                   "or 1 (true)" % byte), msg
    body, hl = binary_body(header, [bytes([1, 0, 1, 1, 0])])
    r = client.infer_raw("bdt_bool", body, hl)
    assert r.status_code == 200, r.text
    assert parse_infer_reply(r)[1]["OUTPUT0"] == [True, False, True, True, False]


def test_extension_listed(client):
    assert "binary_tensor_data" in client.get("/v2").json()["extensions"]
