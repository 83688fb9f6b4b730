"""BYTES tensors and Triton's classification extension, end to end.

BYTES travel as JSON strings in "data" or, in the binary extension, as Triton's serialized
layout: each element a 4-byte little-endian length followed by its bytes. The bodies here are
built by hand from that description, not by batchd's code. Classification results are
compared with numpy's top-k of the same outputs (highest first, ties by lower index) and the
labels.txt the test writes beside the model."""
import json
import os
import struct

import numpy as np
import pytest

from conftest import binary_body, error_message, ort_available, parse_infer_reply, tensor

LABELS = ["zero", "one", "two", "three", "four", "five", "six"]  # fewer than 10 classes


def serialize(strings):
    """Triton's BYTES layout for a list of bytes/str."""
    out = b""
    for s in strings:
        b = s.encode("utf-8") if isinstance(s, str) else s
        out += struct.pack("<I", len(b)) + b
    return out


def deserialize(buf):
    out, off = [], 0
    while off < len(buf):
        (n,) = struct.unpack_from("<I", buf, off)
        out.append(buf[off + 4:off + 4 + n])
        off += 4 + n
    assert off == len(buf)
    return out


def binary_reply(r):
    """(header, {name: bytes}) of a reply whose outputs are binary."""
    n = int(r.headers["Inference-Header-Content-Length"])
    header = json.loads(r.content[:n])
    tail, off, outs = r.content[n:], 0, {}
    for o in header["outputs"]:
        size = o["parameters"]["binary_data_size"]
        outs[o["name"]] = tail[off:off + size]
        off += size
    assert off == len(tail)
    return header, outs


def make_string_identity(path):
    """An ONNX Identity model on a string tensor [-1, -1], made with python3-onnx."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("text", TensorProto.STRING, ["N", "M"])
    y = helper.make_tensor_value_info("text_out", TensorProto.STRING, ["N", "M"])
    graph = helper.make_graph([helper.make_node("Identity", ["text"], ["text_out"])],
                              "string_identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(model, path)


@pytest.fixture(scope="module")
def client(start_server):
    repo = start_server.repo()
    repo.add_sim("text", [("INPUT0", "BYTES", [-1])], max_batch_size=8,
                 dynamic_batching={"max_queue_delay_us": 20000}, latency_us=2000)
    repo.add_sim("text_nb", [("INPUT0", "BYTES", [2, 2])], max_batch_size=0)
    repo.add_sim("scores", [("INPUT0", "FP32", [10]), ("INPUT1", "INT32", [10])],
                 max_batch_size=8)
    repo.add_sim("scores_nb", [("INPUT0", "FP64", [10])], max_batch_size=0)
    repo.add_sim("scores_var", [("INPUT0", "FP32", [-1])], max_batch_size=8)
    for m, enc in (("scores", "utf-8"), ("scores_nb", "utf-8-sig")):  # -sig: with a BOM,
        with open(os.path.join(repo.path, m, "labels.txt"), "w", encoding=enc) as f:  # not label 0's
            f.write("\n".join(LABELS) + "\n")
    if ort_available():
        make_string_identity(os.path.join(repo.path, "str_ident", "1", "model.onnx"))
        repo.try_add_onnx("mlp")
        if os.path.isdir(os.path.join(repo.path, "mlp")):
            with open(os.path.join(repo.path, "mlp", "labels.txt"), "w") as f:
                f.write("\n".join("digit %d" % i for i in range(10)) + "\n")
    return start_server(repo)


STRINGS = ["hello", "", "caf\u00e9", "quote \" and \\ back", "emoji \U0001F600", "a\u0000b",
           "tab\tnewline\n"]


# ---- BYTES round trips --------------------------------------------------------------------

def test_bytes_json_round_trip(client):
    body = {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, len(STRINGS)],
                        "data": STRINGS}]}
    r = client.infer("text", body)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["datatype"] == "BYTES" and out["shape"] == [1, len(STRINGS)]
    assert out["data"] == STRINGS


def test_bytes_json_escapes_decoded(client):
    # Written by hand so the escapes (including a surrogate pair) reach the server as such.
    raw = ('{"inputs":[{"name":"INPUT0","datatype":"BYTES","shape":[1,3],'
           '"data":["\\u00e9\\ud83d\\ude00","\\/\\b\\f","\\u0041"]}],'
           '"outputs":[{"name":"OUTPUT0","parameters":{"binary_data":true}}]}').encode()
    r = client.infer_raw("text", raw, None, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    _, outs = binary_reply(r)
    assert deserialize(outs["OUTPUT0"]) == ["\u00e9\U0001F600".encode(), b"/\b\f", b"A"]


def test_bytes_binary_round_trip(client):
    elems = [b"\x00\xff\xfe binary", b"", "caf\u00e9".encode(), b"x" * 1000]
    blob = serialize(elems)
    header = {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [2, 2],
                          "parameters": {"binary_data_size": len(blob)}}],
              "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}
    body, hl = binary_body(header, [blob])
    r = client.infer_raw("text", body, hl)
    assert r.status_code == 200, r.text
    hdr, outs = binary_reply(r)
    o = hdr["outputs"][0]
    assert o["datatype"] == "BYTES" and o["shape"] == [2, 2]
    assert o["parameters"]["binary_data_size"] == len(blob)
    assert outs["OUTPUT0"] == blob


def test_bytes_binary_in_json_out(client):
    blob = serialize(["abc", "d\u00e9f"])
    header = {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 2],
                          "parameters": {"binary_data_size": len(blob)}}]}
    body, hl = binary_body(header, [blob])
    r = client.infer_raw("text", body, hl)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ["abc", "d\u00e9f"]


def _execs(client, model):
    lab = frozenset({"model": model, "version": "1"}.items())
    return client.metrics().get(("batchd_inference_executions_total", lab), 0)


def test_bytes_batched_requests_keep_their_rows(client):
    """Concurrent requests whose strings differ in size share executions (rows of variable
    size gathered into one batch and scattered back); each gets exactly its own rows."""
    from conftest import run_threads

    def one(i):
        rows = [["r%d-%d-%s" % (i, k, "x" * (i * 7 % 23)), "é" * (i % 4)]
                for k in range(1 + i % 2)]
        body = {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [len(rows), 2],
                            "data": rows}]}
        if i % 2:  # half of them binary, both ways
            blob = serialize([s for row in rows for s in row])
            header = {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [len(rows), 2],
                                  "parameters": {"binary_data_size": len(blob)}}],
                      "parameters": {"binary_data_output": True}}
            data, hl = binary_body(header, [blob])
            r = client.infer_raw("text", data, hl)
            assert r.status_code == 200, r.text
            got = [s.decode() for s in deserialize(binary_reply(r)[1]["OUTPUT0"])]
        else:
            r = client.infer("text", body)
            assert r.status_code == 200, r.text
            got = r.json()["outputs"][0]["data"]
        return got, [s for row in rows for s in row]

    before = _execs(client, "text")
    for got, want in run_threads(one, [(i,) for i in range(12)]):
        assert got == want
    assert _execs(client, "text") - before < 12, "12 concurrent BYTES requests never batched"


def test_bytes_without_batching(client):
    body = {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [2, 2],
                        "data": [["a", "b"], ["c", "d"]]}]}
    r = client.infer("text_nb", body)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ["a", "b", "c", "d"]


def test_bytes_errors(client):
    body = {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 3],
                        "data": ["a", "b", 3]}]}
    msg = error_message(client.infer("text", body), 400)
    assert msg == "input 'INPUT0': value at index 2 is a number; BYTES data must be strings", msg

    blob = serialize(["abc"]) + struct.pack("<I", 500) + b"x" * 12
    header = {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 2],
                          "parameters": {"binary_data_size": len(blob)}}]}
    body, hl = binary_body(header, [blob])
    msg = error_message(client.infer_raw("text", body, hl), 400)
    assert msg == "input 'INPUT0': binary BYTES element 1 says 500 bytes but only 12 remain", msg

    # Invalid UTF-8 in a JSON string, as jansson would refuse it.
    raw = (b'{"inputs":[{"name":"INPUT0","datatype":"BYTES","shape":[1,1],'
           b'"data":["\xc0\xaf"]}]}')
    msg = error_message(client.infer_raw("text", raw, None), 400)
    assert "invalid UTF-8" in msg, msg
    # A BYTES input where the model wants FP32, and the other way round.
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
    msg = error_message(client.infer("text", body), 400)
    assert "expected datatype BYTES, got FP32" in msg, msg
    client.assert_healthy()


def test_bytes_onnx_string_identity(client):
    if not ort_available():
        pytest.skip("ONNX Runtime not available")
    strings = [["alpha", "", "caf\u00e9"], ["\U0001F600", "a\u0000b", "z" * 300]]
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2, 3], "data": strings}]}
    r = client.infer("str_ident", body)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["name"] == "text_out" and out["datatype"] == "BYTES" and out["shape"] == [2, 3]
    assert out["data"] == [s for row in strings for s in row]

    elems = [b"\x00\x01\xff", b"", b"plain"] * 2
    blob = serialize(elems)
    header = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2, 3],
                          "parameters": {"binary_data_size": len(blob)}}],
              "parameters": {"binary_data_output": True}}
    body, hl = binary_body(header, [blob])
    r = client.infer_raw("str_ident", body, hl)
    assert r.status_code == 200, r.text
    _, outs = binary_reply(r)
    assert outs["text_out"] == blob
    meta = client.get("/v2/models/str_ident").json()
    assert meta["inputs"][0]["datatype"] == "BYTES"


# ---- classification -----------------------------------------------------------------------

def topk_strings(row, k, labels):
    """Triton's strings for the top k of one row, by numpy: highest first, ties by index."""
    order = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]
    out = []
    for i in order:
        v = row[i]
        score = "%f" % v if isinstance(v, (float, np.floating)) else "%d" % v
        s = "%s:%d" % (score, i)
        if labels and i < len(labels):
            s += ":" + labels[i]
        out.append(s)
    return out


def test_classification_json(client):
    rng = np.random.RandomState(3)
    x = rng.standard_normal((3, 10)).astype(np.float32)
    x[1, 4] = x[1, 7] = 9.0  # a tie: lower index first
    xi = rng.randint(-50, 50, (3, 10)).astype(np.int32)
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [3, 10],
                        "data": x.reshape(-1).tolist()},
                       {"name": "INPUT1", "datatype": "INT32", "shape": [3, 10],
                        "data": xi.reshape(-1).tolist()}],
            "outputs": [{"name": "OUTPUT0", "parameters": {"classification": 3}},
                        {"name": "OUTPUT1", "parameters": {"classification": 10}}]}
    r = client.infer("scores", body)
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    o = outs["OUTPUT0"]
    assert o["datatype"] == "BYTES" and o["shape"] == [3, 3]
    want = [s for row in x for s in topk_strings([float(v) for v in row], 3, LABELS)]
    assert o["data"] == want
    assert o["data"][3].startswith("9.000000:4:four") and o["data"][4] == "9.000000:7"
    o = outs["OUTPUT1"]
    assert o["shape"] == [3, 10]
    assert o["data"] == [s for row in xi for s in topk_strings([int(v) for v in row], 10, LABELS)]


def test_nan_and_infinities(client):
    """Binary FP32 NaN, inf and -inf in (JSON has none): a JSON reply writes them null, a
    binary one carries them exactly, classification writes nan, inf and -inf (NaN last)."""
    x = np.array([[np.nan, np.inf, -np.inf, 1.0, 0, 0, 0, 0, 0, 0]], dtype=np.float32)
    x[0, 0] = np.frombuffer(b"\x00\x00\xc0\xff", dtype="<f4")[0]  # a NaN with its sign set
    xi = np.zeros((1, 10), dtype=np.int32)
    header = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 10],
                          "parameters": {"binary_data_size": 40}},
                         {"name": "INPUT1", "datatype": "INT32", "shape": [1, 10],
                          "data": xi.reshape(-1).tolist()}],
              "outputs": [{"name": "OUTPUT0"}]}
    body, hl = binary_body(header, [x.tobytes()])
    r = client.infer_raw("scores", body, hl)
    assert r.status_code == 200, r.text
    (o,) = r.json()["outputs"]
    assert o["data"][:4] == [None, None, None, 1.0]
    header["outputs"] = [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]
    body, hl = binary_body(header, [x.tobytes()])
    _, outs = parse_infer_reply(client.infer_raw("scores", body, hl))
    np.testing.assert_array_equal(outs["OUTPUT0"], x)
    header["outputs"] = [{"name": "OUTPUT0", "parameters": {"classification": 10}}]
    body, hl = binary_body(header, [x.tobytes()])
    r = client.infer_raw("scores", body, hl)
    data = r.json()["outputs"][0]["data"]
    assert data[0].startswith("inf:1") and data[1].startswith("1.000000:3")
    assert data[-2].startswith("-inf:2") and data[-1].startswith("nan:0"), data


def test_classification_binary(client):
    x = np.random.RandomState(5).standard_normal((2, 10)).astype(np.float32)
    xi = np.arange(20, dtype=np.int32).reshape(2, 10)
    header = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2, 10],
                          "parameters": {"binary_data_size": x.nbytes}},
                         {"name": "INPUT1", "datatype": "INT32", "shape": [2, 10],
                          "parameters": {"binary_data_size": xi.nbytes}}],
              "outputs": [{"name": "OUTPUT0",
                           "parameters": {"classification": 5, "binary_data": True}}]}
    body, hl = binary_body(header, [x.tobytes(), xi.tobytes()])
    r = client.infer_raw("scores", body, hl)
    assert r.status_code == 200, r.text
    hdr, outs = binary_reply(r)
    o = hdr["outputs"][0]
    assert o["datatype"] == "BYTES" and o["shape"] == [2, 5]
    got = [s.decode() for s in deserialize(outs["OUTPUT0"])]
    assert got == [s for row in x for s in topk_strings([float(v) for v in row], 5, LABELS)]
    assert o["parameters"]["binary_data_size"] == len(outs["OUTPUT0"])


def test_classification_without_batching(client):
    x = np.linspace(-1, 1, 10)[::-1].copy()
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP64", "shape": [10],
                        "data": x.tolist()}],
            "outputs": [{"name": "OUTPUT0", "parameters": {"classification": 2}}]}
    r = client.infer("scores_nb", body)
    assert r.status_code == 200, r.text
    o = r.json()["outputs"][0]
    assert o["shape"] == [2]
    assert o["data"] == ["1.000000:0:zero", "0.777778:1:one"]


def test_classification_errors(client):
    x = [0.0] * 10
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 10], "data": x},
                       {"name": "INPUT1", "datatype": "INT32", "shape": [1, 10], "data": [0] * 10}],
            "outputs": [{"name": "OUTPUT0", "parameters": {"classification": 11}}]}
    msg = error_message(client.infer("scores", body), 400)
    assert msg == "output 'OUTPUT0': classification asks for 11 classes but the output has 10", msg
    body["outputs"][0]["parameters"]["classification"] = 0
    msg = error_message(client.infer("scores", body), 400)
    assert "parameters.classification must be a positive integer" in msg, msg
    body = {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 1], "data": ["a"]}],
            "outputs": [{"name": "OUTPUT0", "parameters": {"classification": 1}}]}
    msg = error_message(client.infer("text", body), 400)
    assert msg == "output 'OUTPUT0' is BYTES; classification needs a numeric output", msg
    client.assert_healthy()


def test_classification_past_variable_class_dims_is_an_invalid_request(client):
    """An output whose class dims are variable is checked once it exists: 7 classes asked of
    a row of 6 is a 400 counted as an invalid request, as one refused up front is (it was
    counted a success, in /metrics and in the statistics, whose reply then failed)."""
    def counts():
        st = client.get("/v2/models/scores_var/stats").json()["model_stats"][0]
        return (client.metric("batchd_inference_requests_total", model="scores_var",
                              version="1", protocol="http", outcome="success") or 0,
                client.metric("batchd_inference_requests_total", model="scores_var",
                              version="1", protocol="http", outcome="invalid") or 0,
                st["inference_stats"]["success"]["count"])

    before = counts()
    body = {"inputs": [tensor("INPUT0", "FP32", [1, 6], [1, 2, 3, 4, 5, 6])],
            "outputs": [{"name": "OUTPUT0", "parameters": {"classification": 7}}]}
    msg = error_message(client.infer("scores_var", body), 400)
    assert msg == "output 'OUTPUT0': classification asks for 7 classes but the output has 6", msg
    assert counts() == (before[0], before[1] + 1, before[2])
    body["outputs"][0]["parameters"]["classification"] = 6
    r = client.infer("scores_var", body)
    assert r.status_code == 200 and r.json()["outputs"][0]["data"][0] == "6.000000:5", r.text
    assert counts() == (before[0] + 1, before[1] + 1, before[2] + 1)


def test_classification_onnx_mlp(client):
    if not ort_available() or client.get("/v2/models/mlp/ready").status_code != 200:
        pytest.skip("the mlp ONNX model is not available")
    x = np.random.RandomState(9).standard_normal((4, 64)).astype(np.float32)
    inp = {"name": "input", "datatype": "FP32", "shape": [4, 64], "data": x.reshape(-1).tolist()}
    r = client.infer("mlp", {"inputs": [inp]})
    assert r.status_code == 200, r.text
    probs = np.array(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(4, 10)
    r = client.infer("mlp", {"inputs": [inp],
                             "outputs": [{"name": "probs", "parameters": {"classification": 3}}]})
    assert r.status_code == 200, r.text
    labels = ["digit %d" % i for i in range(10)]
    want = [s for row in probs for s in topk_strings([float(v) for v in row], 3, labels)]
    assert r.json()["outputs"][0]["data"] == want


def test_server_metadata_lists_classification(client):
    assert "classification" in client.get("/v2").json()["extensions"]


def test_a_labels_file_that_is_no_file_fails_its_model_alone(start_server_fn):
    """labels.txt as a FIFO nobody writes to, or as a folder: the model is unavailable with
    the reason, and the server starts, serves the others and stops on SIGTERM (opening the
    FIFO used to wait for a writer for ever)."""
    repo = start_server_fn.repo()
    for name in ("fifo", "folder", "good"):
        repo.add_sim(name, [("INPUT0", "FP32", [10])], max_batch_size=8)
    os.mkfifo(os.path.join(repo.path, "fifo", "labels.txt"))
    os.mkdir(os.path.join(repo.path, "folder", "labels.txt"))
    client = start_server_fn(repo, ["--strict-readiness", "false"])
    rows = {r["name"]: r for r in client.post("/v2/repository/index").json()}
    for name in ("fifo", "folder"):
        assert rows[name]["state"] == "UNAVAILABLE", rows
        assert rows[name]["reason"] == ("labels.txt of model '%s' is not a regular file of at "
                                        "most 67108864 bytes" % name), rows
    assert rows["good"]["state"] == "READY", rows
    client.server.stop()  # exit code 0, within the usual bound
