"""`batchd infer` and `batchd inspect` (issue 10, third slice): one request from the command
line, the reply printed readably; a model's inputs and outputs from a server or a model file.

Exact outputs are checked against models whose answers are known: sim models (output = a copy
of the input), a sim image model with 2x2 gray preprocessing (the output is the pixels), and
an ONNX Identity model made here with python3-onnx. Errors must exit non-zero and print the
server's own sentence, which the tests read from the server with requests."""
import io
import os
import subprocess

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import (BATCHD_BIN, ORT_LIB, ROOT, SANITIZER_MARKERS, ort_available, read_head,
                      sanitizer_env)

DEMO_IMAGE = os.path.join(ROOT, "models-demo", "digits_image")
PIXELS = [[10, 200], [30, 40]]  # the 2x2 gray test image
PIXELS_B = [[90, 5], [250, 60]]


def run(*args, timeout=60):
    if not os.path.isfile(BATCHD_BIN):
        pytest.skip("batchd binary not found at %s" % BATCHD_BIN)
    r = subprocess.run([BATCHD_BIN] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, env=sanitizer_env())
    for marker in SANITIZER_MARKERS:
        assert marker not in r.stderr, r.stderr
    return r


def png(pixels, mode="L"):
    img = Image.fromarray(np.array(pixels, dtype=np.uint8), "L")
    if mode != "L":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def make_identity(path):
    """An ONNX Identity model: x FP32 [batch, 3] -> y."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(model, path)


@pytest.fixture(scope="module")
def env(start_server, tmp_path_factory):
    repo = start_server.repo()
    repo.add_sim("echo", [("INPUT0", "FP32", [4])])
    with open(os.path.join(repo.path, "echo", "labels.txt"), "w") as f:
        f.write("zero\none\ntwo\nthree\n")
    repo.add_sim("two_in", [("A", "INT32", [2]), ("B", "FP64", [1])])
    repo.add_sim("words", [("INPUT0", "BYTES", [4])])
    repo.add_sim("types", [("U", "UINT64", [3]), ("D", "FP64", [3]), ("F", "FP32", [3]),
                           ("B", "BOOL", [2])])
    image = {"size": [2, 2], "resize": "stretch", "color": "GRAY", "layout": "NCHW",
             "scale": 1.0, "mean": [0.0], "std": [1.0]}
    repo.add_sim("img", [("image", "FP32", [1, 2, 2])], [("out", "FP32", [1, 2, 2])],
                 extra={"preprocess": {"input": "image", "image": image}})
    with open(os.path.join(repo.path, "img", "labels.txt"), "w") as f:
        f.write("p0\np1\np2\np3\n")
    onnx_path = os.path.join(repo.path, "ident", "1", "model.onnx")
    have_onnx = False
    try:
        make_identity(onnx_path)
        have_onnx = ort_available()
    except pytest.skip.Exception:
        pass
    if not have_onnx and os.path.isdir(os.path.join(repo.path, "ident")):
        import shutil
        shutil.rmtree(os.path.join(repo.path, "ident"))
    client = start_server(repo)
    files = tmp_path_factory.mktemp("cli_files")
    paths = {
        "a.png": png(PIXELS),
        "b.png": png(PIXELS_B, "RGB"),
        "bad.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 20,
        "notimg.txt": b"hello, not an image\n",
    }
    out = {}
    for name, data in paths.items():
        (files / name).write_bytes(data)
        out[name] = str(files / name)
    jpg = io.BytesIO()
    Image.fromarray(np.full((16, 16), 128, np.uint8), "L").save(jpg, "JPEG", quality=95)
    (files / "c.jpg").write_bytes(jpg.getvalue())
    out["c.jpg"] = str(files / "c.jpg")
    (files / "echo.bin").write_bytes(np.array([0.5, 3, -2, 1], "<f4").tobytes())
    out["echo.bin"] = str(files / "echo.bin")
    (files / "short.bin").write_bytes(b"\x00" * 6)
    out["short.bin"] = str(files / "short.bin")
    (files / "long.bin").write_bytes(b"\x00" * 32)  # two rows for a one-row request
    out["long.bin"] = str(files / "long.bin")
    (files / "a.bin").write_bytes(np.array([7, -8], "<i4").tobytes())
    out["a.bin"] = str(files / "a.bin")
    (files / "b.bin").write_bytes(np.array([2.5], "<f8").tobytes())
    out["b.bin"] = str(files / "b.bin")
    typed = {"U": np.array([2**64 - 1, 2**63, 5], "<u8"),
             "D": np.array([1 / 3, -0.0, 1e300], "<f8"),
             "F": np.array([-0.0, 0.1, 2], "<f4"), "B": np.array([1, 0], "u1"),
             "nan": np.array([1, float("nan"), float("-inf")], "<f8"),
             "bool2": np.array([1, 2], "u1")}
    for name, a in typed.items():
        (files / (name + ".bin")).write_bytes(a.tobytes())
        out[name + ".bin"] = str(files / (name + ".bin"))
    (files / "req.json").write_text(
        '{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}')
    out["req.json"] = str(files / "req.json")
    return {"url": client.base, "files": out, "onnx": onnx_path if have_onnx else None,
            "client": client}


def server_error(env, path, **kw):
    """The server's own error sentence for a request."""
    r = requests.post(env["url"] + path, timeout=30, **kw)
    assert r.status_code >= 400, r.text
    return r.json()["error"]


def table(name, k, rows, row=None):
    head = "output %s%s: top %d classes\n" % (name, "" if row is None else " row %d" % row, k)
    head += "rank  score       index  label\n"
    for i, (score, index, label) in enumerate(rows):
        head += "%-4d  %-10s  %-5s  %s\n" % (i + 1, score, index, label)
    return head


# ---- infer --------------------------------------------------------------------------------

def test_infer_input_json_and_binary(env):
    for extra in ([], ["--binary"]):
        r = run("infer", "--url", env["url"], "--model", "echo", "--input",
                "INPUT0=" + env["files"]["echo.bin"], *extra)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "model echo version 1\noutput OUTPUT0 FP32 [1,4]: 0.5 3 -2 1\n"


def test_infer_two_inputs(env):
    r = run("infer", "--url", env["url"], "--model", "two_in", "--input",
            "A=" + env["files"]["a.bin"], "--input", "B=" + env["files"]["b.bin"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("model two_in version 1\noutput OUTPUT0 INT32 [1,2]: 7 -8\n"
                        "output OUTPUT1 FP64 [1,1]: 2.5\n")


def test_infer_prints_every_value_exactly_json_or_binary(env):
    """A JSON reply prints as the binary one does: UINT64 past int64 (which jansson alone
    refuses), FP64 to 17 digits, a negative zero with its sign."""
    f = env["files"]
    want = ("model types version 1\n"
            "output OUTPUT0 UINT64 [1,3]: 18446744073709551615 9223372036854775808 5\n"
            "output OUTPUT1 FP64 [1,3]: 0.33333333333333331 -0 1.0000000000000001e+300\n"
            "output OUTPUT2 FP32 [1,3]: -0 0.100000001 2\n"
            "output OUTPUT3 BOOL [1,2]: true false\n")
    for extra in ([], ["--binary"]):
        r = run("infer", "--url", env["url"], "--model", "types", "--input", "U=" + f["U.bin"],
                "--input", "D=" + f["D.bin"], "--input", "F=" + f["F.bin"], "--input",
                "B=" + f["B.bin"], *extra)
        assert (r.returncode, r.stdout) == (0, want), r.stderr


def test_infer_json_reply_with_digits_after_an_escaped_quote(env, tmp_path):
    """Only numbers outside strings are big integers: an id echoed as "a\\"999..." stays a
    string, so the reply still parses."""
    req = tmp_path / "req.json"
    req.write_text('{"id":"a\\"99999999999999999999","inputs":[{"name":"INPUT0",'
                   '"datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}')
    r = run("infer", "--url", env["url"], "--model", "echo", "--json", str(req))
    assert (r.returncode, r.stdout) == (0, "model echo version 1\n"
                                           "output OUTPUT0 FP32 [1,4]: 1 2 3 4\n"), r.stderr


def test_infer_prints_a_servers_bytes_escaped(env, tmp_path):
    """BYTES elements holding a NUL (\\u0000 in JSON, which the server takes and echoes), a
    newline, a terminal escape sequence or a space: the reply is read (it used to be refused
    over the NUL) and each element printed as one word, quoted and escaped as the server's
    log does, so that no server's bytes move the terminal's cursor or split the line."""
    req = tmp_path / "req.json"
    req.write_text('{"inputs":[{"name":"INPUT0","datatype":"BYTES","shape":[1,4],'
                   '"data":["a\\u0000b","line1\\nline2","\\u001b[31mred","plain"]}]}')
    want = ('model words version 1\n'
            'output OUTPUT0 BYTES [1,4]: "a\\x00b" "line1\\x0aline2" "\\x1b[31mred" plain\n')
    for extra in ([], ["--binary"]):
        r = run("infer", "--url", env["url"], "--model", "words", "--json", str(req), *extra)
        assert (r.returncode, r.stdout) == (0, want), (extra, r.stderr)


def test_infer_refuses_what_json_cannot_carry(env):
    """NaN and infinities have no JSON form, and a BOOL byte is 0 or 1: refused before
    anything is sent (not sent as 0 or true), with --binary named for the first."""
    f = env["files"]
    args = ["infer", "--url", env["url"], "--model", "types", "--input", "U=" + f["U.bin"],
            "--input", "F=" + f["F.bin"]]
    r = run(*args, "--input", "D=" + f["nan.bin"], "--input", "B=" + f["B.bin"])
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == ("batchd infer: input 'D': element 1 is NaN, which JSON cannot carry; "
                        "send the request with --binary\n")
    r = run(*args, "--input", "D=" + f["D.bin"], "--input", "B=" + f["bool2.bin"])
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == "batchd infer: input 'B': element 1 is byte 2; a BOOL element is 0 or 1\n"
    # In binary the bytes go as they are, and the server judges them.
    r = run(*args, "--input", "D=" + f["nan.bin"], "--input", "B=" + f["B.bin"], "--binary")
    assert r.returncode == 0, r.stderr
    assert "output OUTPUT1 FP64 [1,3]: 1 nan -inf\n" in r.stdout


def test_infer_input_classification(env):
    want = "model echo version 1\n" + table(
        "OUTPUT0", 2, [("3.000000", "1", "one"), ("1.000000", "3", "three")])
    for extra in ([], ["--binary"]):
        r = run("infer", "--url", env["url"], "--model", "echo", "--input",
                "INPUT0=" + env["files"]["echo.bin"], "--classification", "2", *extra)
        assert r.returncode == 0, r.stderr
        assert r.stdout == want


def test_infer_json_file(env):
    r = run("infer", "--url", env["url"], "--model", "echo", "--json", env["files"]["req.json"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == "model echo version 1\noutput OUTPUT0 FP32 [1,4]: 1 2 3 4\n"


def test_infer_one_image(env):
    r = run("infer", "--url", env["url"], "--model", "img", "--image", env["files"]["a.png"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == "model img version 1\noutput out FP32 [1,1,2,2]: 10 200 30 40\n"
    r = run("infer", "--url", env["url"], "--model", "img", "--image", env["files"]["a.png"],
            "--classification", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "model img version 1\n" + table(
        "out", 3, [("200.000000", "1", "p1"), ("40.000000", "3", "p3"),
                   ("30.000000", "2", "p2")])


def test_infer_jpeg_image(env):
    r = run("infer", "--url", env["url"], "--model", "img", "--image", env["files"]["c.jpg"],
            "--classification", "1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:3] == ["model img version 1", "output out: top 1 classes",
                         "rank  score       index  label"]
    score = float(lines[3].split()[1])
    assert abs(score - 128) <= 2, r.stdout


def test_infer_several_images(env):
    want = "model img version 1\n" + table(
        "out", 2, [("200.000000", "1", "p1"), ("40.000000", "3", "p3")], row=0) + table(
        "out", 2, [("250.000000", "2", "p2"), ("90.000000", "0", "p0")], row=1)
    for extra in ([], ["--binary"]):
        r = run("infer", "--url", env["url"], "--model", "img", "--image",
                env["files"]["a.png"], "--image", env["files"]["b.png"], "--classification",
                "2", *extra)
        assert r.returncode == 0, r.stderr
        assert r.stdout == want
    r = run("infer", "--url", env["url"], "--model", "img", "--image", env["files"]["a.png"],
            "--image", env["files"]["b.png"], "--binary")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("model img version 1\n"
                        "output out FP32 [2,1,2,2]: 10 200 30 40 90 5 250 60\n")


def test_infer_unknown_model(env):
    sentence = server_error(env, "/v2/models/nope/infer", data=b"{}")
    assert "nope" in sentence
    for args in (["--json", env["files"]["req.json"]],
                 ["--image", env["files"]["a.png"]],
                 ["--input", "INPUT0=" + env["files"]["echo.bin"]],
                 ["--image", env["files"]["a.png"], "--image", env["files"]["a.png"]]):
        r = run("infer", "--url", env["url"], "--model", "nope", *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert r.stdout == ""
        assert r.stderr == "batchd infer: %s\n" % sentence, args


def test_infer_bad_image(env):
    with open(env["files"]["bad.png"], "rb") as f:
        bad = f.read()
    sentence = server_error(env, "/v2/models/img/infer", data=bad,
                            headers={"Content-Type": "image/png"})
    r = run("infer", "--url", env["url"], "--model", "img", "--image", env["files"]["bad.png"])
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr == "batchd infer: %s\n" % sentence
    # In a JSON request the sentence names the image's row.
    r = run("infer", "--url", env["url"], "--model", "img", "--image", env["files"]["a.png"],
            "--image", env["files"]["bad.png"])
    assert r.returncode == 1
    assert r.stderr.startswith("batchd infer: input 'image': image 1"), r.stderr
    env["client"].assert_healthy()


def test_infer_image_to_model_without_preprocess(env):
    with open(env["files"]["a.png"], "rb") as f:
        data = f.read()
    sentence = server_error(env, "/v2/models/echo/infer", data=data,
                            headers={"Content-Type": "image/png"})
    r = run("infer", "--url", env["url"], "--model", "echo", "--image", env["files"]["a.png"])
    assert r.returncode == 1
    assert r.stderr == "batchd infer: %s\n" % sentence


def test_infer_client_side_errors(env):
    u = env["url"]
    cases = [
        (["--model", "img", "--image", env["files"]["notimg.txt"]], 2,
         "batchd infer: %s is not a JPEG or PNG file\n" % env["files"]["notimg.txt"]),
        (["--model", "echo", "--input", "INPUT0=" + env["files"]["short.bin"]], 1,
         "batchd infer: --input %s has 6 bytes; input 'INPUT0' needs 16\n"
         % env["files"]["short.bin"]),
        (["--model", "echo", "--input", "INPUT0=" + env["files"]["long.bin"]], 1,
         "batchd infer: --input %s has 32 bytes; input 'INPUT0' needs 16\n"
         % env["files"]["long.bin"]),
        # A file that cannot be read is a bad flag: exit 2, as bench's --data-file (it was 1).
        (["--model", "echo", "--input", "INPUT0=/nonexistent/a.bin"], 2,
         "batchd infer: cannot open '/nonexistent/a.bin': No such file or directory\n"),
        (["--model", "img", "--image", "/nonexistent/a.png"], 2,
         "batchd infer: cannot open '/nonexistent/a.png': No such file or directory\n"),
        (["--model", "echo", "--json", "/nonexistent/r.json"], 2,
         "batchd infer: cannot open '/nonexistent/r.json': No such file or directory\n"),
        # A directory is not taken for a file of its st_size (it was "has 4096 bytes").
        (["--model", "echo", "--input", "INPUT0=" + os.path.dirname(env["files"]["a.bin"])], 2,
         "batchd infer: '%s' is not a regular file\n" % os.path.dirname(env["files"]["a.bin"])),
        (["--model", "two_in", "--input", "A=" + env["files"]["a.bin"]], 1,
         "batchd infer: model 'two_in' needs input 'B' (--input B=FILE)\n"),
        (["--model", "echo", "--input", "INPUT0"], 2,
         "batchd infer: --input must be NAME=FILE, got 'INPUT0'\n"),
        (["--model", "two_in", "--input", "A=" + env["files"]["a.bin"], "--input",
          "AB=" + env["files"]["a.bin"], "--input", "A=" + env["files"]["short.bin"]], 2,
         "batchd infer: --input A is given twice; give each input once\n"),
        # Checked against the model's metadata, like its other inputs: exit 1.
        (["--model", "echo", "--input", "INPUT0=" + env["files"]["a.bin"], "--input",
          "NOPE=" + env["files"]["a.bin"]], 1,
         "batchd infer: --input names input 'NOPE', which model 'echo' does not have\n"),
        (["--model", "echo"], 2,
         "batchd infer: give one of --image, --input or --json (see --help)\n"),
        (["--model", "echo", "--json", env["files"]["req.json"], "--classification", "2"], 2,
         None),
        (["--model", "echo", "--json", env["files"]["req.json"], "--bogus"], 2,
         "batchd infer: unknown flag '--bogus' (see --help)\n"),
        (["--model", "echo", "--json", env["files"]["req.json"], "--timeout", "0"], 2,
         "batchd infer: --timeout must be a duration like 10s, 500ms or 2m from 0.001s to "
         "86400s, got '0'\n"),
    ]
    for args, code, err in cases:
        r = run("infer", "--url", u, *args)
        assert r.returncode == code, (args, r.stderr)
        if err is not None:
            assert r.stderr == err, args
    r = run("infer", "--model", "echo", "--json", env["files"]["req.json"])
    assert r.returncode == 2
    assert r.stderr == "batchd infer: --url and --model are required (see --help)\n"


def test_names_are_sent_percent_encoded(start_server_fn, tmp_path):
    """A model folder may be named with a space, '?', '#', '%' or '+': infer, inspect and bench
    send it as one encoded path segment (RFC 3986), so they reach the model a curl of
    /v2/models/a%20b%3F... reaches. An empty --model, and a --url with a query, are refused."""
    name = "a b?c#d%e+f"
    repo = start_server_fn.repo()
    repo.add_sim(name, [("INPUT0", "FP32", [2])])
    client = start_server_fn(repo)
    u = client.base
    data = tmp_path / "in.bin"
    data.write_bytes(np.array([1.5, -2], "<f4").tobytes())
    r = run("infer", "--url", u, "--model", name, "--model-version", "1", "--input",
            "INPUT0=%s" % data)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "model %s version 1\noutput OUTPUT0 FP32 [1,2]: 1.5 -2\n" % name
    r = run("inspect", "--url", u, "--model", name)
    assert r.returncode == 0 and r.stdout.startswith("model: %s\n" % name), r.stderr
    r = run("bench", "--url", u, "--model", name, "--concurrency", "1", "--requests", "5",
            "--warmup", "0")
    assert r.returncode == 0, r.stderr
    stats = requests.get(u + "/v2/models/a%20b%3Fc%23d%25e%2Bf/stats", timeout=30).json()
    assert stats["model_stats"][0]["inference_stats"]["success"]["count"] == 6
    for cmd, extra in (("infer", ["--input", "INPUT0=%s" % data]), ("inspect", []),
                       ("bench", [])):
        r = run(cmd, "--url", u, "--model", "", *extra)
        assert r.returncode == 2, (cmd, r.stderr)
        assert r.stderr == "batchd %s: --model needs a name; it was given an empty one\n" % cmd
    for url in (u + "/?q=1", u + "#top", u.replace("127.0.0.1", "user@127.0.0.1")):
        r = run("infer", "--url", url, "--model", name, "--input", "INPUT0=%s" % data)
        assert r.returncode == 2, (url, r.stderr)
        assert r.stderr == ("batchd infer: --url '%s' may hold a host, a port and a path, "
                            "without a query, fragment, user name, space or control character\n"
                            % url), r.stderr


def test_infer_input_with_variable_dims_takes_shape(start_server_fn, tmp_path):
    """An input with variable dims needs its dims from --shape, as the error says."""
    repo = start_server_fn.repo()
    repo.add_sim("var", [("INPUT0", "FP32", [-1, 2])], max_batch_size=4)
    client = start_server_fn(repo)
    u = client.base
    data = tmp_path / "in.bin"
    data.write_bytes(np.array([1, 2, 3, 4, 5, 6], "<f4").tobytes())
    r = run("infer", "--url", u, "--model", "var", "--input", "INPUT0=%s" % data)
    assert r.returncode == 1
    assert r.stderr == ("batchd infer: input 'INPUT0' has variable dims [-1,2] (batch dim "
                        "excluded); give them with --shape INPUT0:D1,D2,...\n")
    for shape in ("INPUT0:3,2", "3,2"):
        for extra in ([], ["--binary"]):
            r = run("infer", "--url", u, "--model", "var", "--input", "INPUT0=%s" % data,
                    "--shape", shape, *extra)
            assert r.returncode == 0, r.stderr
            assert r.stdout == "model var version 1\noutput OUTPUT0 FP32 [1,3,2]: 1 2 3 4 5 6\n"
    r = run("infer", "--url", u, "--model", "var", "--input", "INPUT0=%s" % data,
            "--shape", "INPUT0:2,2")
    assert r.returncode == 1
    assert r.stderr == "batchd infer: --input %s has 24 bytes; input 'INPUT0' needs 16\n" % data
    for args, err in ((["--shape", "INPUT0:x"], "--shape must be [NAME:]D1,D2,... with dims >= "
                       "0, got 'INPUT0:x'"),
                      (["--shape", "INPUT0:-1,2"], "--shape must be [NAME:]D1,D2,... with dims "
                       ">= 0, got 'INPUT0:-1,2'")):
        r = run("infer", "--url", u, "--model", "var", "--input", "INPUT0=%s" % data, *args)
        assert (r.returncode, r.stderr) == (2, "batchd infer: %s\n" % err)
    r = run("infer", "--url", u, "--model", "var", "--json", str(data), "--shape", "3,2")
    assert r.returncode == 2 and r.stderr.startswith("batchd infer: --shape goes with --input")


def test_infer_connection_refused(env):
    s = __import__("socket").socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = run("infer", "--url", "http://127.0.0.1:%d" % port, "--model", "echo", "--json",
            env["files"]["req.json"])
    assert r.returncode == 1
    assert r.stderr.startswith("batchd infer: cannot connect to 127.0.0.1:%d" % port)


def test_infer_onnx_model(env):
    if not env["onnx"]:
        pytest.skip("python3-onnx or ONNX Runtime (%s) missing" % ORT_LIB)
    path = os.path.join(os.path.dirname(env["files"]["echo.bin"]), "x.bin")
    with open(path, "wb") as f:
        f.write(np.array([1.5, -2, 4], "<f4").tobytes())
    r = run("infer", "--url", env["url"], "--model", "ident", "--input", "x=" + path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "model ident version 1\noutput y FP32 [1,3]: 1.5 -2 4\n"


# ---- inspect ------------------------------------------------------------------------------

def test_inspect_url(env):
    r = run("inspect", "--url", env["url"], "--model", "echo")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        "model: echo\nplatform: batchd_sim\nversions: 1\n"
        "batch dimension: the first dim (-1) of every input and output, up to 8 rows\n"
        "inputs:\n  INPUT0               FP32   [-1,4]\n"
        "outputs:\n  OUTPUT0              FP32   [-1,4]\n")
    r = run("inspect", "--url", env["url"], "--model", "img")
    assert r.returncode == 0, r.stderr
    assert "inputs:\n  image                BYTES  [-1]\n" in r.stdout
    assert "outputs:\n  out                  FP32   [-1,1,2,2]\n" in r.stdout


def test_inspect_unknown_model(env):
    r = requests.get(env["url"] + "/v2/models/nope", timeout=30)
    sentence = r.json()["error"]
    r = run("inspect", "--url", env["url"], "--model", "nope")
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr == "batchd inspect: %s\n" % sentence


def test_inspect_model_file(env):
    if not env["onnx"]:
        pytest.skip("python3-onnx or ONNX Runtime (%s) missing" % ORT_LIB)
    for args in ([env["onnx"]], [env["onnx"], "--onnxruntime-lib", ORT_LIB]):
        r = run("inspect", *args)
        assert r.returncode == 0, r.stderr
        assert r.stdout == (
            "model file: %s\nplatform: onnxruntime_onnx\n"
            "batch dimension: the first dim (-1) of every input and output is dynamic (served "
            "with max_batch_size 64 unless config.json says otherwise)\n"
            "inputs:\n  x                    FP32   [-1,3]\n"
            "outputs:\n  y                    FP32   [-1,3]\n" % env["onnx"])
    r = run("inspect", env["files"]["notimg.txt"])
    assert r.returncode == 1
    assert r.stderr.startswith("batchd inspect: cannot load model"), r.stderr


def test_inspect_usage_errors():
    r = run("inspect")
    assert r.returncode == 2
    assert r.stderr == "batchd inspect: give --url and --model, or a model file (see --help)\n"


def test_help_lists_infer_and_inspect():
    r = run("--help")
    assert r.returncode == 0
    assert "\n  infer " in r.stdout and "\n  inspect " in r.stdout
    for cmd in ("infer", "inspect"):
        r = run(cmd, "--help")
        assert r.returncode == 0
        assert r.stdout.startswith("usage: batchd %s" % cmd)


# ---- the demo's image model -----------------------------------------------------------------

def test_demo_digits_image_samples(start_server):
    """Every sample PNG that make_demo.py ships is classified as its digit."""
    samples = os.path.join(DEMO_IMAGE, "samples.txt")
    if not os.path.isfile(samples):
        pytest.skip("the demo is not built (make demo writes %s)" % samples)
    if not ort_available():
        pytest.skip("ONNX Runtime library not found at %s" % ORT_LIB)
    client = start_server(os.path.dirname(DEMO_IMAGE))
    with open(samples) as f:
        rows = [line.split() for line in f if line.strip()]
    assert len(rows) >= 5
    for name, digit in rows:
        path = os.path.join(DEMO_IMAGE, name)
        r = run("infer", "--url", client.base, "--model", "digits_image", "--image", path,
                "--classification", "3")
        assert r.returncode == 0, r.stderr
        first = r.stdout.splitlines()[3].split()
        assert first[0] == "1" and first[2] == digit and first[3] == digit, (name, r.stdout)
        with open(path, "rb") as f:
            reply = requests.post(client.base + "/v2/models/digits_image/infer?classification=1",
                                  data=f.read(), headers={"Content-Type": "image/png"},
                                  timeout=30).json()
        assert reply["outputs"][0]["data"][0].split(":")[1:] == [digit, digit], (name, reply)


def fake_server(body, status=b"200 OK"):
    """A server answering every request with this status and JSON body: (port, close)."""
    import socket
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                c.settimeout(5)
                read_head(c)
                c.sendall(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\nConnection: close\r\n\r\n"
                          % (status, len(body)) + body)
    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], srv.close


def run_against_fake_server(body, *args, status=b"200 OK"):
    port, close = fake_server(body, status)
    try:
        return run(args[0], "--url", "http://127.0.0.1:%d" % port, "--model", "m", *args[1:],
                   timeout=20)
    finally:
        close()


def test_infer_prints_a_servers_names_and_sentences_escaped(env):
    """The model name, version, output names and datatypes of a reply, and a server's error
    sentence or non-JSON body, reach the terminal escaped when they hold control bytes (a
    broken or hostile server's escape sequences or line breaks); plain ones as they are."""
    import json
    req = env["files"]["req.json"]
    body = json.dumps({"model_name": "m\u001b[2J", "model_version": "1\n2",
                       "outputs": [{"name": "o\u001b]0;x\u0007", "datatype": "FP32",
                                    "shape": [1, 2], "data": [1, 2]},
                                   {"name": "caf\u00e9", "datatype": "INT32", "shape": [1],
                                    "data": [7]}]}).encode()
    r = run_against_fake_server(body, "infer", "--json", req)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ('model "m\\x1b[2J" version "1\\x0a2"\n'
                        'output "o\\x1b]0;x\\x07" FP32 [1,2]: 1 2\n'
                        'output caf\u00e9 INT32 [1]: 7\n'), r.stdout
    bad = json.dumps({"error": "no\u001b[31m such\ninput"}).encode()
    r = run_against_fake_server(bad, "infer", "--json", req, status=b"400 Bad Request")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == 'batchd infer: "no\\x1b[31m such\\x0ainput"\n', r.stderr
    r = run_against_fake_server(b"\x1b[2Joops", "infer", "--json", req, status=b"502 Bad Gateway")
    assert r.stderr == 'batchd infer: the server answered 502: "\\x1b[2Joops"\n', r.stderr


def test_bench_shows_a_servers_refusal_escaped():
    r = run_against_fake_server(b"\x1b[2Jgone\n", "bench", "--requests", "1",
                                status=b"404 Not Found")
    assert r.returncode == 1
    assert '/v2/models/m answered 404: "\\x1b[2Jgone\\x0a"' in r.stderr, r.stderr
    assert "\x1b" not in r.stderr, r.stderr


def test_inspect_prints_a_servers_metadata_escaped():
    import json
    meta = json.dumps({"name": "m\u001b[2J", "platform": "onnx\r", "versions": ["1", "\u009b2"],
                       "max_batch_size": 4,
                       "inputs": [{"name": "in\u0008", "datatype": "FP\u001b32", "shape": [-1, 2]}],
                       "outputs": [{"name": "out", "datatype": "FP32", "shape": [-1, 2]}]}).encode()
    r = run_against_fake_server(meta, "inspect")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:3] == ['model: "m\\x1b[2J"', 'platform: "onnx\\x0d"',
                         'versions: 1 "\\xc2\\x9b2"'], r.stdout
    assert '"in\\x08"' in r.stdout and '"FP\\x1b32"' in r.stdout, r.stdout
    assert "\x1b" not in r.stdout and "\r" not in r.stdout, r.stdout


@pytest.mark.parametrize("shape,data,held", [([1, 1000000000000], [1, 2], "2 values"),
                                             ([-1, 2], [1, 2], "2 values"),
                                             ([2, 2], [1, 2, 3, 4, 5], "5 values"),
                                             ([2], "xyz", "1 value")])
def test_infer_reply_whose_values_do_not_fill_its_shape(env, shape, data, held):
    """A broken server's output whose values are not what its shape counts is an error naming
    both (it was printed as if it were right, exit 0)."""
    import json
    body = json.dumps({"model_name": "m", "outputs": [{"name": "o", "datatype": "FP32",
                                                       "shape": shape, "data": data}]}).encode()
    port, close = fake_server(body)
    try:
        r = run("infer", "--url", "http://127.0.0.1:%d" % port, "--model", "m", "--json",
                env["files"]["req.json"], timeout=20)
    finally:
        close()
    assert (r.returncode, r.stdout) == (1, "model m\n"), r.stderr
    assert r.stderr == ("batchd infer: output 'o' holds %s, but its shape is [%s]\n"
                        % (held, ",".join(str(d) for d in shape))), r.stderr


def classify_with_fake_server(tmp_path, shape, data):
    """`batchd infer --image ... --classification 3` against a server whose reply's one output
    is BYTES of this shape and data."""
    import json
    body = json.dumps({"model_name": "m", "outputs": [{"name": "o", "datatype": "BYTES",
                                                       "shape": shape, "data": data}]}).encode()
    port, close = fake_server(body)
    img = tmp_path / "x.png"
    img.write_bytes(png(PIXELS))
    try:
        return run("infer", "--url", "http://127.0.0.1:%d" % port, "--model", "m", "--image",
                   img, "--classification", "3", timeout=20)
    finally:
        close()


def test_infer_classification_labels_in_utf8_are_printed_and_escapes_are_not(tmp_path):
    """A label in UTF-8 is printed as it is; a class string with a control byte or a C1
    control (a terminal escape from a broken or hostile server) is printed escaped, whole."""
    data = ["0.500000:1:caf\u00e9", "0.250000:0:\u001b[2Jx", "0.125000:2:a\u009bb"]
    r = classify_with_fake_server(tmp_path, [1, 3], data)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[3:] == ["1     0.500000    1      caf\u00e9",
                                         '2     "0.250000:0:\\x1b[2Jx"',
                                         '3     "0.125000:2:a\\xc2\\x9bb"'], r.stdout


@pytest.mark.parametrize("shape,data", [([4611686018427387904, 3], []),
                                        ([2, 3], ["0.5:1:a", "0.25:0:b"]),
                                        ([1, 0], [])])
def test_infer_classification_reply_that_disagrees_with_its_shape(tmp_path, shape, data):
    """A broken server's classification reply whose shape does not match the classes it holds
    (here 2^62 rows of 3 and none) is an error naming both, not rows printed without end."""
    r = classify_with_fake_server(tmp_path, shape, data)
    assert r.returncode == 1, (r.returncode, r.stdout[:300])
    have = len(data)
    assert r.stderr == ("batchd infer: output 'o' holds %d classes, but its shape says %d rows "
                        "of %d\n" % (have, shape[0], shape[1])), r.stderr
