"""Bad requests: each gets 400 with a one-sentence {"error": ...} naming the problem, and the
server stays healthy afterwards. Also bodies cut short at the TCP level."""
import json
import socket
import time

import numpy as np
import pytest

from conftest import binary_body, error_message, tensor


@pytest.fixture(scope="module")
def client(start_server):
    repo = start_server.repo()
    repo.add_sim("m16", [("INPUT0", "FP32", [16])], max_batch_size=8)
    repo.add_sim("m2in", [("INPUT0", "FP32", [4]), ("INPUT1", "FP32", [4])], max_batch_size=8)
    repo.add_sim("mfixed", [("INPUT0", "INT32", [2, 2])], max_batch_size=0)
    return start_server(repo)


def ok_body(n=16, rows=1):
    return {"inputs": [tensor("INPUT0", "FP32", [rows, n], [0.5] * (n * rows))]}


def post_json_text(client, model, text, headers=None):
    h = {"Content-Type": "application/json"}
    if headers:
        h.update(headers)
    return client.post(client.infer_path(model), data=text, headers=h)


def bad(client, r, *phrases, status=400):
    msg = error_message(r, status)
    for p in phrases:
        assert p.lower() in msg.lower(), "error %r does not mention %r" % (msg, p)
    client.assert_healthy()
    return msg


def test_sanity_good_request(client):
    r = client.infer("m16", ok_body())
    assert r.status_code == 200, r.text


def test_malformed_json(client):
    bad(client, post_json_text(client, "m16", '{"inputs": [{"name": "INPUT0", '))
    bad(client, post_json_text(client, "m16", '{"inputs": [] ,,}'))
    bad(client, post_json_text(client, "m16", "\xff\xfe garbage"))


def test_json_nested_100000_deep_whole_body(client):
    depth = 100000
    bad(client, post_json_text(client, "m16", "[" * depth + "]" * depth))
    bad(client, post_json_text(client, "m16", '{"inputs":' + "[" * depth + "]" * depth + "}"))


def test_json_nested_100000_deep_in_data(client):
    depth = 100000
    text = ('{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,16],"data":'
            + "[" * depth + "1.0" + "]" * depth + "}]}")
    bad(client, post_json_text(client, "m16", text))


def test_json_nested_unclosed_deep(client):
    bad(client, post_json_text(client, "m16", '{"a":' * 50000))


def test_wrong_element_count(client):
    body = {"inputs": [tensor("INPUT0", "FP32", [1, 16], [0.0] * 15)]}
    bad(client, client.infer("m16", body), "expected 16 values", "INPUT0")
    body = {"inputs": [tensor("INPUT0", "FP32", [1, 16], [0.0] * 17)]}
    bad(client, client.infer("m16", body), "expected 16 values", "INPUT0")
    body = {"inputs": [tensor("INPUT0", "FP32", [2, 16], [0.0] * 16)]}
    bad(client, client.infer("m16", body), "expected 32 values", "INPUT0")


def test_unknown_input(client):
    body = {"inputs": [tensor("INPUTX", "FP32", [1, 16], [0.0] * 16)]}
    bad(client, client.infer("m16", body), "INPUTX")


def test_extra_unknown_input(client):
    body = {"inputs": [tensor("INPUT0", "FP32", [1, 16], [0.0] * 16),
                       tensor("BOGUS", "FP32", [1, 16], [0.0] * 16)]}
    bad(client, client.infer("m16", body), "BOGUS")


def test_duplicate_input(client):
    body = {"inputs": [tensor("INPUT0", "FP32", [1, 4], [0.0] * 4),
                       tensor("INPUT0", "FP32", [1, 4], [0.0] * 4)]}
    bad(client, client.infer("m2in", body), "INPUT0")


def test_missing_input(client):
    body = {"inputs": [tensor("INPUT0", "FP32", [1, 4], [0.0] * 4)]}
    bad(client, client.infer("m2in", body), "INPUT1")


def test_unknown_datatype_string(client):
    body = {"inputs": [tensor("INPUT0", "FP33", [1, 16], [0.0] * 16)]}
    bad(client, client.infer("m16", body), "FP33")


def test_datatype_different_from_model(client):
    body = {"inputs": [tensor("INPUT0", "INT32", [1, 16], [0] * 16)]}
    bad(client, client.infer("m16", body), "INPUT0", "FP32", "INT32")


def test_dims_different_from_model(client):
    body = {"inputs": [tensor("INPUT0", "FP32", [1, 8], [0.0] * 8)]}
    bad(client, client.infer("m16", body), "INPUT0", "16")
    body = {"inputs": [tensor("INPUT0", "FP32", [16], [0.0] * 16)]}
    bad(client, client.infer("m16", body), "INPUT0")
    body = {"inputs": [tensor("INPUT0", "INT32", [4], [0] * 4)]}
    bad(client, client.infer("mfixed", body), "INPUT0")


def test_shape_product_overflows_int64(client):
    body = {"inputs": [tensor("INPUT0", "FP32", [4294967296, 4294967296, 16], [0.0])]}
    bad(client, client.infer("m16", body))
    body = {"inputs": [tensor("INPUT0", "FP32", [9223372036854775807, 16], [0.0])]}
    bad(client, client.infer("m16", body))
    body = {"inputs": [tensor("INPUT0", "FP32", [3, 9223372036854775807], [0.0])]}
    bad(client, client.infer("m16", body))


def test_dim_not_an_int64(client):
    body = {"inputs": [tensor("INPUT0", "FP32", [1, 18446744073709551616], [0.0])]}
    bad(client, client.infer("m16", body))
    body = {"inputs": [tensor("INPUT0", "FP32", [1, 16.5], [0.0] * 16)]}
    bad(client, client.infer("m16", body))
    body = {"inputs": [tensor("INPUT0", "FP32", "1,16", [0.0] * 16)]}
    bad(client, client.infer("m16", body))


def test_too_many_dims(client):
    body = {"inputs": [tensor("INPUT0", "FP32", [1] * 40 + [16], [0.0] * 16)]}
    bad(client, client.infer("m16", body))


def test_negative_dims(client):
    body = {"inputs": [tensor("INPUT0", "FP32", [1, -16], [0.0] * 16)]}
    bad(client, client.infer("m16", body), "INPUT0", "negative")
    body = {"inputs": [tensor("INPUT0", "FP32", [-1, 16], [0.0] * 16)]}
    bad(client, client.infer("m16", body), "INPUT0", "negative")


def test_body_shorter_than_header_length(client):
    text = json.dumps(ok_body()).encode()
    r = client.infer_raw("m16", text, len(text) + 100)
    bad(client, r, "Inference-Header-Content-Length")


def test_binary_data_size_disagrees_with_bytes(client):
    x = np.zeros(16, dtype=np.float32)
    header = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                          "parameters": {"binary_data_size": 64}}]}
    body, hl = binary_body(header, [x.tobytes()[:60]])
    bad(client, client.infer_raw("m16", body, hl), "64")
    body, hl = binary_body(header, [x.tobytes() + b"\0" * 4])
    bad(client, client.infer_raw("m16", body, hl))


def test_binary_data_size_disagrees_with_shape(client):
    # 60 bytes present and declared, but the shape needs 64.
    header = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                          "parameters": {"binary_data_size": 60}}]}
    body, hl = binary_body(header, [b"\0" * 60])
    bad(client, client.infer_raw("m16", body, hl), "INPUT0")


def test_binary_data_size_not_a_number(client):
    for v in ("64", -64, 1.5, None, 18446744073709551616):
        header = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                              "parameters": {"binary_data_size": v}}]}
        body, hl = binary_body(header, [b"\0" * 64])
        bad(client, client.infer_raw("m16", body, hl))


@pytest.mark.parametrize("value", ["abc", "-5", "12abc", "", "99999999999999999999999", "0x10",
                                   "1e3", "+"])
def test_header_length_not_a_number(client, value):
    text = json.dumps(ok_body()).encode()
    r = client.infer_raw("m16", text, None, headers={"Inference-Header-Content-Length": value})
    bad(client, r, "Inference-Header-Content-Length")


def test_header_length_zero(client):
    """Inference-Header-Content-Length 0 is Triton's raw binary request (the body one input's
    bytes alone), which batchd does not take: the sentence says so."""
    text = json.dumps(ok_body()).encode()
    r = client.infer_raw("m16", text, 0)
    bad(client, r)
    raw = np.zeros(16, dtype=np.float32).tobytes()
    r = client.infer_raw("m16", raw, 0, headers={"Content-Type": "application/octet-stream"})
    assert error_message(r, 400) == (
        "the JSON header's length is 0 (Inference-Header-Content-Length, or a WebSocket binary "
        "frame's 4-byte prefix): Triton's raw binary request, a body of one input's bytes "
        "alone, is not supported; send the JSON header first, its inputs with "
        "binary_data_size")


def test_batch_larger_than_max_batch_size(client):
    body = {"inputs": [tensor("INPUT0", "FP32", [9, 16], [0.0] * 144)]}
    bad(client, client.infer("m16", body), "8")
    # Exactly max_batch_size is fine.
    r = client.infer("m16", {"inputs": [tensor("INPUT0", "FP32", [8, 16], [0.0] * 128)]})
    assert r.status_code == 200, r.text


def test_batch_of_zero_rows(client):
    body = {"inputs": [tensor("INPUT0", "FP32", [0, 16], [])]}
    r = client.infer("m16", body)
    # An empty batch has nothing to run: either refused or answered with an empty output.
    assert r.status_code in (200, 400), r.text
    if r.status_code == 200:
        out = r.json()["outputs"][0]
        assert out["shape"] == [0, 16] and out["data"] == []
    else:
        error_message(r, 400)
    client.assert_healthy()


def test_unknown_model(client):
    bad(client, client.infer("no_such_model", ok_body()), "no_such_model")


def test_unknown_version(client):
    bad(client, client.infer("m16", ok_body(), version="7"), "7")


@pytest.mark.parametrize("version", ["abc", "-1", "0", "99999999999999999999999"])
def test_bad_version_strings(client, version):
    r = client.infer("m16", ok_body(), version=version)
    assert r.status_code in (400, 404)
    bad(client, r, status=r.status_code)


def test_empty_body(client):
    bad(client, post_json_text(client, "m16", b""))


def test_inputs_not_an_array(client):
    bad(client, post_json_text(client, "m16", '{"inputs": {"name": "INPUT0"}}'), "inputs")
    bad(client, post_json_text(client, "m16", '{"inputs": 5}'), "inputs")
    bad(client, post_json_text(client, "m16", '{"inputs": []}'))
    bad(client, post_json_text(client, "m16", '{"no_inputs": []}'))
    bad(client, post_json_text(client, "m16", '[1, 2, 3]'))
    bad(client, post_json_text(client, "m16", '"inputs"'))


def test_input_fields_wrong_types(client):
    for t in ({"name": 5, "datatype": "FP32", "shape": [1, 16], "data": [0.0] * 16},
              {"name": "INPUT0", "datatype": 5, "shape": [1, 16], "data": [0.0] * 16},
              {"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": "zeros"},
              {"name": "INPUT0", "datatype": "FP32", "shape": [1, 16]},
              {"datatype": "FP32", "shape": [1, 16], "data": [0.0] * 16},
              {"name": "INPUT0", "shape": [1, 16], "data": [0.0] * 16},
              {"name": "INPUT0", "datatype": "FP32", "data": [0.0] * 16},
              "INPUT0"):
        bad(client, client.infer("m16", {"inputs": [t]}))


def test_outputs_not_an_array(client):
    body = dict(ok_body(), outputs={"name": "OUTPUT0"})
    bad(client, client.infer("m16", body), "outputs")


def test_unsupported_datatypes(client):
    for dt in ("BYTES", "FP16", "BF16"):
        body = {"inputs": [tensor("INPUT0", dt, [1, 16], [0] * 16)]}
        bad(client, client.infer("m16", body), dt)


def test_an_image_posted_as_json_says_how_to_send_it(client):
    """A PNG or JPEG body without an image Content-Type (or to a model without image
    preprocessing) is not JSON: the error says what it is and which type to send."""
    for magic, kind, ctype in ((b"\x89PNG\r\n\x1a\n", "PNG", "image/png"),
                               (b"\xff\xd8\xff\xe0", "JPEG", "image/jpeg")):
        r = client.infer_raw("m16", magic + b"\0" * 64, None, headers={"Content-Type": "image/jpg"})
        assert error_message(r, 400) == (
            "request body is not valid JSON: it is a %s image; post an image with "
            "Content-Type: %s to a model that has image preprocessing" % (kind, ctype))


def test_huge_body_is_refused_cleanly(client):
    """A body over --max-body-bytes (64 MiB by default): 413 from its head, and the client,
    which reads only once it has sent it all, gets it (the rest is read and dropped)."""
    n = 64 * 1024 * 1024
    r = client.infer_raw("m16", b"[" + b" " * n + b"]", None)
    assert r.status_code == 413, r.status_code
    client.assert_healthy()


# ---- bodies that end early at the TCP level -------------------------------------------

def _raw(port, data, shutdown_write=True, read=True):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(data)
        if shutdown_write:
            s.shutdown(socket.SHUT_WR)
        out = b""
        if read:
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    out += chunk
            except (ConnectionResetError, socket.timeout):
                pass
        return out
    finally:
        s.close()


def test_body_ends_early_then_client_closes(client):
    port = client.server.port
    body = json.dumps(ok_body()).encode()
    req = (b"POST /v2/models/m16/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % (len(body) + 1000)) + body
    t0 = time.monotonic()
    out = _raw(port, req)
    assert time.monotonic() - t0 < 9, "server held a half-closed connection open"
    # Either nothing or an error status: never a 200 for a truncated body.
    assert not out.startswith(b"HTTP/1.1 200"), out[:200]
    client.assert_healthy()
    # Closing without shutdown, mid-body, several times.
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(req[: len(req) - 50 - i])
        s.close()
    client.assert_healthy()
    r = client.infer("m16", ok_body())
    assert r.status_code == 200


def test_headers_cut_short(client):
    port = client.server.port
    for data in (b"POST /v2/models/m16/infer HTTP/1.1\r\nHost: x\r\nContent-Le",
                 b"GET /v2/health/live HTTP/1.1\r\n",
                 b"\r\n\r\n\r\n",
                 b"BLAH BLAH BLAH\r\n\r\n",
                 b"POST /v2/models/m16/infer HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                 b"POST /v2/models/m16/infer HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n"
                 b"\r\n{}"):
        _raw(port, data)
        client.assert_healthy()


def test_chunked_body_is_accepted(client):
    body = json.dumps(ok_body()).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 50]), body[i:i + 50])
                      for i in range(0, len(body), 50)) + b"0\r\n\r\n"
    req = (b"POST /v2/models/m16/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n") + chunks
    out = _raw(client.server.port, req, shutdown_write=False)
    status = out.split(b" ", 2)[1] if out else b""
    # Chunked uploads are HTTP/1.1; accepting them is expected, refusing cleanly is tolerated.
    assert status in (b"200", b"400", b"411"), out[:300]
    client.assert_healthy()


@pytest.mark.parametrize("method,path", [
    ("GET", "/v2/models/m16%00x"), ("POST", "/v2/models/m16%00x/infer"),
    ("GET", "/v2/models/m16/versions/1%00"), ("GET", "/v2/models/m16%00/ready")])
def test_a_nul_in_the_path_is_refused_as_such(client, method, path):
    """A %00 decodes to a NUL: the answer says so, not 'unknown model' naming a model cut at
    the NUL (which exists)."""
    r = client.request(method, path, json={} if method == "POST" else None)
    assert error_message(r, 400) == "the path must not contain a NUL byte (%00)"


@pytest.mark.parametrize("method,path", [
    ("POST", "/v2/models/m16%2Finfer"), ("POST", "/v2/models/m16/versions/1%2finfer"),
    ("GET", "/v2/models/m16%2Fready"), ("GET", "/v2/health%2Flive")])
def test_an_encoded_slash_is_not_a_separator(client, method, path):
    """%2F is data inside a segment (RFC 3986 2.2), not the '/' that h2o decodes it to: a rule
    in a proxy for /v2/models/*/infer must not be sidestepped by it. No name holds a '/'."""
    r = client.request(method, path, json=ok_body() if method == "POST" else None)
    assert error_message(r, 404) == ("the path holds an encoded '/' (%2F), which no model or "
                                     "version name has")


@pytest.mark.parametrize("method,path", [
    ("POST", "/v2/models//infer"), ("POST", "/v2/models/m16/versions//infer"),
    ("POST", "/v2/models/m16//infer"), ("GET", "/v2//health/live")])
def test_an_empty_segment_names_nothing(client, method, path):
    """'//' is an empty segment, not one '/': a missing model name is not the model 'infer'
    (which answered 405 'takes GET')."""
    r = client.request(method, path, json=ok_body() if method == "POST" else None)
    assert error_message(r, 404) == "unknown path; see docs/API.md for the endpoints"
    # A trailing '/' is still taken.
    assert client.request("GET", "/v2/health/live/").status_code == 200
    assert client.request("GET", "/v2/models/m16/").status_code == 200
