"""End-to-end test harness for batchd.

Starts the real binary (env BATCHD_BIN, default build/batchd) on an ephemeral port against a
model repository written into a temporary folder, and talks to it over real sockets with
independent clients (requests, http.client, raw sockets). Nothing here knows how the server
is implemented: expectations come from the KServe v2 / Open Inference Protocol, Triton's
binary tensor extension and the project's issue text.

Pieces:
- Repo: builds a model repository (sim models from a config dict, ONNX models symlinked from
  ../shared/models or build/test-models, broken models with garbage bytes).
- Server: one batchd process; its stdout+stderr are drained by a thread into a log, the port
  is read from the `http listening host=127.0.0.1 port=N` line; stop() sends SIGTERM, waits,
  and checks the exit code and the log for sanitizer reports.
- Client: a base URL plus helpers for JSON/binary infer bodies and /metrics parsing.
- Fixtures: `start_server` (module scope: a few server starts per module keep the suite fast)
  and `start_server_fn` (function scope, for tests that kill or overload their server).
"""
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time

import numpy as np
import pytest
import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BATCHD_BIN = os.environ.get("BATCHD_BIN", os.path.join(ROOT, "build", "batchd"))
# ../shared/models beside the checkout (where CI puts it); BD_SHARED_MODELS overrides.
SHARED_MODELS = os.environ.get("BD_SHARED_MODELS",
                               os.path.abspath(os.path.join(ROOT, "..", "shared", "models")))
BUILD_TEST_MODELS = os.path.join(ROOT, "build", "test-models")
BUILD_BAD_MODELS = BUILD_TEST_MODELS + "-bad"  # models batchd must refuse (make_models --bad-out)
LSAN_SUPP = os.path.join(ROOT, "tests", "lsan.supp")
ORT_LIB = os.path.join(ROOT, "third_party", "onnxruntime", "libonnxruntime.so.1")

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 30.0

LISTEN_RE = re.compile(r"http listening host=(?:127\.0\.0\.1|0\.0\.0\.0) port=(\d+)")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer",
                     "WARNING: ThreadSanitizer")

# KServe v2 datatype -> numpy dtype (little-endian, BOOL as one byte).
NP_DTYPES = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a test that takes seconds (deselect: -m 'not slow')")
    config.addinivalue_line("markers", "onnx: needs ONNX models and ONNX Runtime")


# ---- server log on failure ----------------------------------------------------------------

_LIVE_SERVERS = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for srv in list(_LIVE_SERVERS):
            rep.sections.append(("batchd log (%s)" % srv.name, srv.log_tail()))


# ---- model sources ------------------------------------------------------------------------

_generated_models = {}


def _generate_test_models(tmp_root):
    """Run tools/make_models.py once into a private folder when build/test-models is absent."""
    if "dir" in _generated_models:
        return _generated_models["dir"]
    _generated_models["dir"] = None
    script = os.path.join(ROOT, "tools", "make_models.py")
    if os.path.isfile(script):
        out = os.path.join(tmp_root, "test-models")
        r = subprocess.run(["/usr/bin/python3", script, "--out", out, "--bad-out", out + "-bad"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
        if r.returncode == 0:
            _generated_models["dir"] = out
    return _generated_models["dir"]


def find_onnx_model(name, tmp_root=None):
    """Path of <name>/1/model.onnx from ../shared/models, build/test-models or a freshly
    generated set; None when none has it."""
    for base in (SHARED_MODELS, BUILD_TEST_MODELS, BUILD_BAD_MODELS):
        p = os.path.join(base, name, "1", "model.onnx")
        if os.path.isfile(p):
            return p
    if tmp_root is not None:
        gen = _generate_test_models(tmp_root)
        if gen:
            for base in (gen, gen + "-bad"):
                p = os.path.join(base, name, "1", "model.onnx")
                if os.path.isfile(p):
                    return p
    return None


def sanitizer_env():
    """The environment for batchd: LSan gets the project's suppressions (a leak inside the
    uninstrumented ONNX Runtime) unless the caller set LSAN_OPTIONS already."""
    env = dict(os.environ)
    if "LSAN_OPTIONS" not in env and os.path.isfile(LSAN_SUPP):
        env["LSAN_OPTIONS"] = "suppressions=%s:print_suppressions=0" % LSAN_SUPP
    return env


def non_loopback_address():
    """This machine's address on its default route, or None (only loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # a route lookup: nothing is sent
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip


def ort_available():
    return os.path.isfile(ORT_LIB)


# ---- model repository ---------------------------------------------------------------------

class Repo:
    """A model repository folder being written for one server."""

    def __init__(self, path, tmp_root):
        self.path = str(path)
        self.tmp_root = str(tmp_root)
        os.makedirs(self.path, exist_ok=True)

    def add_sim(self, name, inputs, outputs=None, max_batch_size=8, dynamic_batching=None,
                instances=1, latency_us=0, per_item_us=0, extra=None):
        """inputs: list of (name, datatype, dims). Outputs default to OUTPUT<i> mirroring
        INPUT<i> (sim output i is a copy of input i)."""
        if outputs is None:
            outputs = [("OUTPUT%d" % i, dt, dims) for i, (_, dt, dims) in enumerate(inputs)]
        cfg = {
            "backend": "sim",
            "max_batch_size": max_batch_size,
            "instances": instances,
            "inputs": [{"name": n, "datatype": dt, "dims": list(d)} for n, dt, d in inputs],
            "outputs": [{"name": n, "datatype": dt, "dims": list(d)} for n, dt, d in outputs],
            "sim": {"latency_us": latency_us, "per_item_us": per_item_us},
        }
        if dynamic_batching is not None:
            cfg["dynamic_batching"] = dynamic_batching
        if extra:
            cfg.update(extra)
        mdir = os.path.join(self.path, name)
        os.makedirs(os.path.join(mdir, "1"), exist_ok=True)
        with open(os.path.join(mdir, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        return name

    def add_onnx(self, name, source_name=None, config=None):
        """Symlink an ONNX model's file into the repository; skip the test when no copy of
        it exists anywhere."""
        src = find_onnx_model(source_name or name, self.tmp_root)
        if src is None:
            pytest.skip("ONNX model %r not found in %s or %s (run /usr/bin/python3 "
                        "tools/make_models.py --out build/test-models)"
                        % (source_name or name, SHARED_MODELS, BUILD_TEST_MODELS))
        vdir = os.path.join(self.path, name, "1")
        os.makedirs(vdir, exist_ok=True)
        dst = os.path.join(vdir, "model.onnx")
        if not os.path.exists(dst):
            os.symlink(src, dst)
        if config is not None:
            with open(os.path.join(self.path, name, "config.json"), "w") as f:
                json.dump(config, f, indent=1)
        return name

    def try_add_onnx(self, name, source_name=None):
        """Like add_onnx but returns None instead of skipping."""
        if find_onnx_model(source_name or name, self.tmp_root) is None:
            return None
        return self.add_onnx(name, source_name)

    def add_broken_onnx(self, name):
        vdir = os.path.join(self.path, name, "1")
        os.makedirs(vdir, exist_ok=True)
        with open(os.path.join(vdir, "model.onnx"), "wb") as f:
            f.write(b"\x00garbage, not a protobuf\xff\xfe" * 37)
        return name


# ---- server process -----------------------------------------------------------------------

class Server:
    def __init__(self, repo_path, args=(), name="batchd"):
        self.repo_path = repo_path
        self.args = list(args)
        self.name = name
        self.proc = None
        self.port = None
        self._lines = []
        self._cv = threading.Condition()
        self._reader = None
        self.returncode = None
        self.stopped = False
        self.prefix = []  # a command to run batchd under (e.g. setpriv to drop root)
        self.pass_fds = ()  # descriptors batchd inherits (e.g. a pipe named as /dev/fd/N)

    def start(self):
        if not os.path.isfile(BATCHD_BIN):
            pytest.skip("batchd binary not found at %s (build it: cmake --build build -j2)"
                        % BATCHD_BIN)
        cmd = self.prefix + [BATCHD_BIN, "serve", "--model-repository", self.repo_path,
               "--http-port", "0", "--host", "127.0.0.1"] + self.args
        env = sanitizer_env()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                     pass_fds=self.pass_fds)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        with self._cv:
            while self.port is None:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and self._reader_done):
                    break
                self._cv.wait(min(left, 0.2))
        if self.port is None:
            rc = self.proc.poll()
            if rc is None:
                self.proc.kill()
                self.proc.wait(10)
            self._reader.join(5)
            pytest.fail("batchd did not log 'http listening host=127.0.0.1 port=N' within %.0f s "
                        "(exit code %s); command: %s\n---- server log ----\n%s"
                        % (START_TIMEOUT_S, rc, " ".join(cmd), self.log()), pytrace=False)
        _LIVE_SERVERS.append(self)
        return self

    _reader_done = False

    def _drain(self):
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace")
            with self._cv:
                self._lines.append(line)
                if self.port is None:
                    m = LISTEN_RE.search(line)
                    if m:
                        self.port = int(m.group(1))
                self._cv.notify_all()
        with self._cv:
            self._reader_done = True
            self._cv.notify_all()

    def log(self):
        with self._cv:
            return "".join(self._lines)

    def log_tail(self, n=200):
        with self._cv:
            return "".join(self._lines[-n:])

    def wait_log(self, pattern, timeout=10.0):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for line in self._lines:
                    if rx.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cv.wait(min(left, 0.2))

    @property
    def base(self):
        return "http://127.0.0.1:%d" % self.port

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=STOP_TIMEOUT_S):
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            self._reader.join(5)
            pytest.fail("batchd did not exit within %.0f s of SIGTERM\n---- server log ----\n%s"
                        % (timeout, self.log()), pytrace=False)
        self._reader.join(10)
        return self.returncode

    def check_log_clean(self):
        log = self.log()
        for marker in SANITIZER_MARKERS:
            if marker in log:
                pytest.fail("batchd log contains %r\n---- server log ----\n%s" % (marker, log),
                            pytrace=False)

    def stop(self, send_signal=True):
        """SIGTERM (unless the caller already signalled), wait, require exit code 0 and a log
        without sanitizer reports."""
        try:
            if send_signal and self.proc.poll() is None:
                self.signal(signal.SIGTERM)
            rc = self.wait_exit()
            self.check_log_clean()
            if rc != 0:
                pytest.fail("batchd exited with code %s after SIGTERM (expected 0)\n"
                            "---- server log ----\n%s" % (rc, self.log()), pytrace=False)
        finally:
            self.stopped = True
            if self in _LIVE_SERVERS:
                _LIVE_SERVERS.remove(self)


# ---- client -------------------------------------------------------------------------------

def tensor(name, datatype, shape, data, **params):
    t = {"name": name, "datatype": datatype, "shape": list(shape), "data": data}
    if params:
        t["parameters"] = params
    return t


def binary_body(header, blobs):
    """Triton binary tensor extension: JSON header followed by raw tensor bytes.
    Returns (body_bytes, header_length)."""
    head = json.dumps(header).encode()
    return head + b"".join(blobs), len(head)


def np_data(arr):
    """Flat JSON-able list of a numpy array's values."""
    return arr.reshape(-1).tolist()


class Client:
    def __init__(self, server):
        self.server = server
        self.base = server.base
        self.s = requests.Session()

    def url(self, path):
        return self.base + path

    def get(self, path, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT_S)
        return self.s.get(self.url(path), **kw)

    def post(self, path, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT_S)
        return self.s.post(self.url(path), **kw)

    def request(self, method, path, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT_S)
        return self.s.request(method, self.url(path), **kw)

    def infer_path(self, model, version=None):
        if version is None:
            return "/v2/models/%s/infer" % model
        return "/v2/models/%s/versions/%s/infer" % (model, version)

    def infer(self, model, body, version=None, **kw):
        """POST a JSON infer body (dict) and return the response."""
        return self.post(self.infer_path(model, version), json=body, **kw)

    def infer_raw(self, model, data, header_len=None, version=None, headers=None, **kw):
        h = {"Content-Type": "application/octet-stream"}
        if header_len is not None:
            h["Inference-Header-Content-Length"] = str(header_len)
        if headers:
            h.update(headers)
        return self.post(self.infer_path(model, version), data=data, headers=h, **kw)

    def assert_healthy(self):
        r = requests.get(self.url("/v2/health/live"), timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, "server not live after the previous request"
        return True

    def metrics_text(self):
        r = self.get("/metrics")
        assert r.status_code == 200
        return r

    def metrics(self):
        return parse_metrics(self.metrics_text().text)

    def metric(self, name, **labels):
        return metric_value(self.metrics(), name, **labels)


# ---- reply parsing ------------------------------------------------------------------------

def parse_infer_reply(r):
    """Split an infer reply into (json_header, {output_name: numpy array or list}).
    Binary outputs are decoded with numpy.frombuffer from the bytes after the header,
    in output order, with each output's parameters.binary_data_size."""
    body = r.content
    hl = r.headers.get("Inference-Header-Content-Length")
    if hl is None:
        header = json.loads(body)
        tail = b""
    else:
        n = int(hl)
        assert 0 < n <= len(body), "Inference-Header-Content-Length %d vs body %d" % (n, len(body))
        header = json.loads(body[:n])
        tail = body[n:]
    return header, decode_outputs(header, tail)


def decode_outputs(header, tail):
    """{output_name: numpy array (binary, from `tail` in output order by each output's
    parameters.binary_data_size) or list (JSON data)}; the tail must be used up exactly."""
    outs = {}
    off = 0
    for o in header.get("outputs", []):
        params = o.get("parameters") or {}
        if "binary_data_size" in params:
            size = params["binary_data_size"]
            chunk = tail[off:off + size]
            assert len(chunk) == size, "binary output %s truncated" % o["name"]
            off += size
            outs[o["name"]] = np.frombuffer(chunk, dtype=NP_DTYPES[o["datatype"]]).reshape(
                o["shape"])
        else:
            outs[o["name"]] = o["data"]
    assert off == len(tail), "binary tail has %d bytes, outputs declare %d" % (len(tail), off)
    return outs


def vm_kib(pid, field):
    """A /proc/PID/status figure in KiB (VmRSS, VmHWM, ...)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s in /proc/%d/status" % (field, pid))


def read_head(sock):
    """Bytes from a raw socket up to the end of an HTTP head (request or reply), or all there
    was when the peer closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_all(sock, timeout=10):
    """Everything until the peer closes (or fails) the connection: plain or TLS sockets."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    except (ConnectionResetError, ssl.SSLError):
        return data


def read_reply(sock, timeout=HTTP_TIMEOUT_S):
    """One HTTP/1.1 reply with a Content-Length body from a raw (plain or TLS) socket:
    (status, headers with lower-case names, body)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "closed before a reply head: %r" % data
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    n = int(headers["content-length"])
    while len(rest) < n:
        chunk = sock.recv(65536)
        assert chunk, "closed inside a reply body"
        rest += chunk
    return int(lines[0].split()[1]), headers, rest[:n]


def error_message(r, status):
    """Assert the status and the KServe error shape; return the message."""
    assert r.status_code == status, "expected %d, got %d: %r" % (status, r.status_code,
                                                                   r.content[:500])
    ctype = r.headers.get("Content-Type", "")
    assert "json" in ctype, "error reply Content-Type %r is not JSON" % ctype
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    msg = body["error"]
    assert msg.strip(), "empty error message"
    assert "\n" not in msg, "error message spans lines: %r" % msg
    assert len(msg) < 600, "error message too long: %r" % msg
    return msg


# ---- Prometheus text ----------------------------------------------------------------------

_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*')


def raw_exchange(port, request_bytes, timeout=10):
    """Send raw bytes on a new connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request_bytes)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


def parse_metrics(text):
    """Parse Prometheus text exposition into {(name, frozenset(labels.items())): value} and
    check the format: HELP/TYPE at most once per family, every sample line well formed."""
    samples = {}
    seen_type = set()
    seen_help = set()
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# TYPE "):
            fam = line.split()[2]
            assert fam not in seen_type, "duplicate # TYPE for %s" % fam
            seen_type.add(fam)
            continue
        if line.startswith("# HELP "):
            fam = line.split()[2]
            assert fam not in seen_help, "duplicate # HELP for %s" % fam
            seen_help.add(fam)
            continue
        if line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        assert m, "malformed metrics line: %r" % line
        name, labels_s, value = m.group(1), m.group(3) or "", m.group(4)
        labels = {}
        pos = 0
        while pos < len(labels_s):
            lm = _LABEL_RE.match(labels_s, pos)
            assert lm, "malformed labels in %r" % line
            labels[lm.group(1)] = lm.group(2)
            pos = lm.end()
        if "le" in labels and labels["le"] != "+Inf":
            # "8", "8.0" and "8e0" are the same bucket bound.
            le = float(labels["le"])
            labels["le"] = str(int(le)) if le == int(le) else repr(le)
        key = (name, frozenset(labels.items()))
        assert key not in samples, "duplicate sample %r" % line
        samples[key] = float(value)
    return samples


def metric_value(samples, name, **labels):
    """The value of the sample of `name` whose label set is exactly `labels`; when there is
    none, the sum over the samples whose labels include `labels` (as PromQL's sum() over the
    labels not named, e.g. requests_total over its `protocol` label); None when absent."""
    exact = samples.get((name, frozenset(labels.items())))
    if exact is not None:
        return exact
    want = set(labels.items())
    found = [v for (n, lab), v in samples.items() if n == name and want <= set(lab)]
    return sum(found) if found else None


# ---- fixtures -----------------------------------------------------------------------------

class _Starter:
    def __init__(self, tmp_path_factory):
        self.tmp_path_factory = tmp_path_factory
        self.servers = []

    def repo(self, prefix="repo"):
        return Repo(self.tmp_path_factory.mktemp(prefix), self.tmp_path_factory.getbasetemp())

    def __call__(self, repo, args=(), name="batchd", prefix=()):
        path = repo.path if isinstance(repo, Repo) else str(repo)
        srv = Server(path, args, name=name)
        srv.prefix = list(prefix)
        srv.start()
        self.servers.append(srv)
        return Client(srv)

    def stop_all(self):
        errors = []
        for srv in self.servers:
            if srv.stopped:
                continue
            try:
                srv.stop()
            except BaseException as e:  # keep stopping the others, then report
                errors.append(e)
        self.servers = []
        if errors:
            raise errors[0]


@pytest.fixture(scope="module")
def start_server(tmp_path_factory):
    """Module-scoped factory: `client = start_server(repo, args)`; `start_server.repo()`
    makes a fresh repository. Every server started is stopped with SIGTERM at module end and
    must exit 0 with a clean log."""
    st = _Starter(tmp_path_factory)
    yield st
    st.stop_all()


@pytest.fixture
def start_server_fn(tmp_path_factory):
    """Function-scoped variant of start_server."""
    st = _Starter(tmp_path_factory)
    yield st
    st.stop_all()


def require_onnx(repo, name, source_name=None):
    """Add an ONNX model or skip the test with a clear message."""
    if not ort_available():
        pytest.skip("ONNX Runtime library not found at %s (run the setup script)" % ORT_LIB)
    return repo.add_onnx(name, source_name)


def wait_for(fn, timeout, what, step=0.02):
    """Poll fn() until it returns something true (returned), or fail the test after `timeout`
    seconds naming `what` and fn's last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(step)
    pytest.fail("timed out after %.1f s waiting for %s (last: %r)" % (timeout, what, last))


def check_drain_replies(idle, busy):
    """After SIGTERM: a request on the idle keep-alive connection `idle` gets the drain's 503
    with Connection: close, and the in-flight infer on `busy` (INPUT0 = [4, 5] on an identity
    model) is still answered, with Connection: close."""
    idle.request("GET", "/v2/health/live")
    r = idle.getresponse()
    body = r.read()
    assert r.status == 503
    assert r.getheader("Connection", "").lower() == "close"
    assert json.loads(body) == {"error": "the server is shutting down"}
    r = busy.getresponse()
    body = r.read()
    assert r.status == 200, body
    assert r.getheader("Connection", "").lower() == "close"
    assert json.loads(body)["outputs"][0]["data"] == [4, 5]


def run_threads(fn, args_list):
    """Run fn(*args) for each args in parallel threads; return the results in order."""
    results = [None] * len(args_list)
    errors = [None] * len(args_list)
    barrier = threading.Barrier(len(args_list))

    def work(i, a):
        try:
            barrier.wait(10)
            results[i] = fn(*a)
        except BaseException as e:  # reported below
            errors[i] = e

    ts = [threading.Thread(target=work, args=(i, a)) for i, a in enumerate(args_list)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    for e in errors:
        if e is not None:
            raise e
    return results
