"""`"device": "cuda:N"` in a model's config (issue 13).

With the GPU build of ONNX Runtime 1.29 that `make setup GPU=1` installs
(third_party/onnxruntime-gpu/, or BD_GPU_ORT_LIB) and --onnxruntime-lib pointing at it:
- on any machine: the library loads, binds API 29, CPU models give exactly the outputs of the
  1.30 CPU build, metadata and /metrics say where each model runs, and a "cuda:0" model is
  unavailable with one sentence that names what is missing (the CUDA provider library, or the
  first CUDA library the loader cannot find) while the CPU models beside it keep serving;
- on a machine with an NVIDIA GPU and the CUDA 13 libraries on the library path (bench/gpu.sh
  sets that up): the "cuda:0" model loads, says so, and matches the CPU's results.
BD_REQUIRE_GPU=1 (bench/gpu.sh sets it) turns "the cuda:0 model did not load" into a failure
instead of a skip. Expectations come from the issue text and ONNX Runtime's documented
behaviour, not from batchd's code."""
import ctypes
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from conftest import (BATCHD_BIN, ORT_LIB, ROOT, SHARED_MODELS, error_message, find_onnx_model,
                      metric_value, ort_available, sanitizer_env, tensor)

GPU_ORT_LIB = os.environ.get("BD_GPU_ORT_LIB") or os.path.join(
    ROOT, "third_party", "onnxruntime-gpu", "libonnxruntime.so.1")
REQUIRE_GPU = os.environ.get("BD_REQUIRE_GPU") == "1"
INSTALL = "install it with `make setup GPU=1` (or scripts/setup.sh --gpu)"
SETUP_HINT = ("install the GPU build with `make setup GPU=1` and start batchd with "
              "--onnxruntime-lib third_party/onnxruntime-gpu/libonnxruntime.so.1")
# The CUDA provider's direct dependencies in link order (readelf -d; ../shared/onnxruntime/GPU.md).
CUDA_NEEDED = ("libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10", "libcudart.so.13",
               "libcuda.so.1")


def _has_gpu():
    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


def _need_gpu_build():
    if not os.path.isfile(GPU_ORT_LIB):
        pytest.skip("the GPU build of ONNX Runtime is not at %s; %s" % (GPU_ORT_LIB, INSTALL))


def _first_missing_cuda_library():
    """What the dynamic loader will name when ONNX Runtime opens the CUDA provider here. The
    loader maps the provider's direct dependencies first, in order, so the first of them it
    cannot find is named; when it finds them all, the first library one of them needs. None
    when everything loads."""
    transitive = None
    for name in CUDA_NEEDED:
        try:
            ctypes.CDLL(name, mode=os.RTLD_LAZY)
        except OSError as e:
            m = re.search(r"(lib[^\s/:]+\.so[.\d]*): cannot open shared object file", str(e))
            missing = m.group(1) if m else name
            if missing == name:
                return name
            transitive = transitive or missing
    return transitive


def _missing_library_sentence(dev, lib):
    if lib == "libcuda.so.1":
        return ("device %s needs libcuda.so.1, the NVIDIA driver's library, which is not on the "
                "library path: this machine has no NVIDIA driver (or no GPU); install the driver, "
                "or serve the model with \"device\": \"cpu\"" % dev)
    return ("device %s needs %s, which is not on the library path; install CUDA 13 and cuDNN 9 "
            "(or pip's nvidia-*-cu13 wheels) and add their lib folders to LD_LIBRARY_PATH"
            % (dev, lib))


def _no_provider_sentence(dev, lib_path):
    return ("device %s needs ONNX Runtime's CUDA execution provider, but there is no "
            "libonnxruntime_providers_cuda.so beside %s; %s" % (dev, lib_path, SETUP_HINT))


def _repo(start_server, cuda_models=("mlp_cuda",)):
    repo = start_server.repo()
    repo.add_onnx("mlp")
    if find_onnx_model("mobilenet_v2") is not None:
        repo.add_onnx("mobilenet_v2")
    for name in cuda_models:
        dev = "cuda:99" if name.endswith("99") else "cuda:0"
        repo.add_onnx(name, "mlp", config={"backend": "onnxruntime", "device": dev})
    repo.add_sim("sim", [("INPUT0", "FP32", [4])], max_batch_size=4)
    return repo


@pytest.fixture(scope="module")
def gpu_build(start_server):
    """A server on the 1.29 GPU build: mlp, mobilenet_v2 (when ../shared/models has it), the
    same mlp on cuda:0 and on cuda:99, and a sim model."""
    _need_gpu_build()
    return start_server(_repo(start_server, ("mlp_cuda", "mlp_cuda99")),
                        ["--onnxruntime-lib", GPU_ORT_LIB], name="batchd-ort1.29-gpu")


@pytest.fixture(scope="module")
def cpu_build(start_server):
    """The same models on the 1.30 CPU build setup installs by default."""
    if not ort_available():
        pytest.skip("ONNX Runtime library not found at %s (run the setup script)" % ORT_LIB)
    return start_server(_repo(start_server), name="batchd-ort1.30-cpu")


def _cuda_loaded(client, name="mlp_cuda"):
    """True when the cuda:0 model is ready; with BD_REQUIRE_GPU=1 its absence fails."""
    if client.get("/v2/models/%s/ready" % name).status_code == 200:
        return True
    if REQUIRE_GPU:
        r = client.get("/v2/models/%s" % name)
        pytest.fail("BD_REQUIRE_GPU=1 but model %s did not load: %s" % (name, r.text))
    return False


def _index_reason(client, name):
    r = client.post("/v2/repository/index", json={})
    assert r.status_code == 200, r.text
    rows = [m for m in r.json() if m["name"] == name]
    assert len(rows) == 1, r.json()
    return rows[0]["state"], rows[0]["reason"]


def _run_version(*args):
    if not os.path.isfile(BATCHD_BIN):
        pytest.skip("batchd binary not found at %s" % BATCHD_BIN)
    r = subprocess.run([BATCHD_BIN, "version"] + list(args), capture_output=True, text=True,
                       timeout=60, env=sanitizer_env())
    assert r.returncode == 0, r.stderr
    return r.stdout


# ---- any machine ---------------------------------------------------------------------------

def test_ort_api_slots_match_the_table():
    """Every slot ort_api.h declares has the number ortapi-slots.tsv gives it, and exists in
    the oldest API version batchd accepts unless it is marked ORT_SINCE_<name> with its own
    first version (ort.c calls those only when the bound version has them)."""
    tsv = os.path.join(os.path.dirname(SHARED_MODELS), "onnxruntime", "ortapi-slots.tsv")
    if not os.path.isfile(tsv):
        pytest.skip("%s not found" % tsv)
    table = {}
    with open(tsv) as f:
        next(f)
        for line in f:
            slot, name, since = line.rstrip("\n").split("\t")
            table[name] = (int(slot), int(since.split(".")[1]))
    with open(os.path.join(ROOT, "src", "backend", "ort_api.h")) as f:
        header = f.read()
    api_min = int(re.search(r"#define BD_ORT_API_MIN (\d+)", header).group(1))
    since = {n: int(v) for n, v in re.findall(r"#define ORT_SINCE_(\w+) (\d+)", header)}
    slots = re.findall(r"#define ORT_SLOT_(\w+) (\d+)", header)
    assert len(slots) >= 40, slots
    for name, slot in slots:
        assert name in table, "ort_api.h declares %s, which the table does not have" % name
        assert int(slot) == table[name][0], (name, slot, table[name])
        first = table[name][1]
        if first > api_min:
            assert since.get(name) == first, (
                "%s arrived in API %d > BD_ORT_API_MIN %d: ort_api.h must say "
                "ORT_SINCE_%s %d" % (name, first, api_min, name, first))
        else:
            assert name not in since or since[name] == first, (name, since.get(name), first)
    for name in since:
        assert ("ORT_SLOT_%s " % name) in header, name


def test_version_names_the_gpu_build_and_its_api():
    _need_gpu_build()
    out = _run_version("--onnxruntime-lib", GPU_ORT_LIB)
    lines = out.splitlines()
    assert lines[0].startswith("batchd "), out
    assert "onnxruntime 1.29.0" in lines, out
    assert "onnxruntime api: 29" in lines, out
    assert "onnxruntime library: %s" % os.path.abspath(GPU_ORT_LIB) in lines, out
    provider = os.path.join(os.path.dirname(os.path.abspath(GPU_ORT_LIB)),
                            "libonnxruntime_providers_cuda.so")
    assert "onnxruntime cuda provider: %s" % provider in lines, out


def test_version_of_the_cpu_build_has_no_cuda_provider():
    if not ort_available():
        pytest.skip("ONNX Runtime library not found at %s (run the setup script)" % ORT_LIB)
    lines = _run_version().splitlines()
    assert "onnxruntime 1.30.0" in lines, lines
    assert "onnxruntime api: 30" in lines, lines
    assert any(l.startswith("onnxruntime cuda provider: none (") for l in lines), lines


def test_version_of_the_gpu_core_alone(tmp_path):
    """The GPU build's core library without its provider libraries beside it (a symlink: ORT
    looks beside the name it was opened by)."""
    _need_gpu_build()
    lib = tmp_path / "libonnxruntime.so.1"
    os.symlink(os.path.abspath(GPU_ORT_LIB), lib)
    lines = _run_version("--onnxruntime-lib", str(lib)).splitlines()
    assert "onnxruntime 1.29.0" in lines and "onnxruntime api: 29" in lines, lines
    assert "onnxruntime library: %s" % lib in lines, lines
    assert any(l.startswith("onnxruntime cuda provider: none (") for l in lines), lines


def test_cpu_models_give_the_130_builds_outputs(gpu_build, cpu_build):
    x = np.random.RandomState(13).standard_normal((4, 64)).astype(np.float32)
    body = {"inputs": [tensor("input", "FP32", [4, 64], x.reshape(-1).tolist())]}
    a = gpu_build.infer("mlp", body)
    b = cpu_build.infer("mlp", body)
    assert a.status_code == 200 and b.status_code == 200, (a.text, b.text)
    assert a.json()["outputs"] == b.json()["outputs"]


def test_a_conv_model_gives_the_130_builds_outputs(gpu_build, cpu_build):
    if gpu_build.get("/v2/models/mobilenet_v2/ready").status_code != 200:
        pytest.skip("mobilenet_v2 not in %s" % SHARED_MODELS)
    x = np.random.RandomState(7).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    body = {"inputs": [tensor("input", "FP32", [1, 3, 224, 224], x.reshape(-1).tolist())]}
    a = gpu_build.infer("mobilenet_v2", body)
    b = cpu_build.infer("mobilenet_v2", body)
    assert a.status_code == 200 and b.status_code == 200, (a.text[:300], b.text[:300])
    ya = np.array(a.json()["outputs"][0]["data"], dtype=np.float32)
    yb = np.array(b.json()["outputs"][0]["data"], dtype=np.float32)
    assert ya.shape == (1000,) and np.array_equal(ya, yb), np.abs(ya - yb).max()


def test_cuda_model_without_cuda_names_the_missing_library(gpu_build):
    if _cuda_loaded(gpu_build):
        pytest.skip("the cuda:0 model loaded: this machine has a GPU and CUDA 13")
    missing = _first_missing_cuda_library()
    assert missing, "every CUDA library loads here, yet the cuda:0 model did not load"
    want = _missing_library_sentence("cuda:0", missing)
    assert _index_reason(gpu_build, "mlp_cuda") == ("UNAVAILABLE", want)
    # ONNX Runtime's own account of the failure is a batchd log line, without its colours.
    line = gpu_build.server.wait_log(r" ERROR onnxruntime .*Failed to load library", 5)
    assert line, gpu_build.server.log()
    assert re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z ERROR onnxruntime .*%s.* where=\S+"
                    % re.escape(missing), line), line
    assert "\x1b" not in gpu_build.server.log()
    r = gpu_build.infer("mlp_cuda", {"inputs": [tensor("input", "FP32", [1, 64], [0.0] * 64)]})
    assert error_message(r, 503) == "model 'mlp_cuda' is unavailable: " + want
    assert gpu_build.get("/v2/models/mlp_cuda/ready").status_code == 400
    # The CPU models beside it are served as usual.
    assert gpu_build.get("/v2/models/mlp/ready").status_code == 200
    r = gpu_build.infer("mlp", {"inputs": [tensor("input", "FP32", [1, 64], [0.5] * 64)]})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["shape"] == [1, 10]


def test_cpu_build_says_the_cuda_provider_is_missing(cpu_build):
    """onnxruntime-node's CPU build has no CUDA provider library beside it."""
    want = _no_provider_sentence("cuda:0", os.path.abspath(ORT_LIB))
    assert _index_reason(cpu_build, "mlp_cuda") == ("UNAVAILABLE", want)
    r = cpu_build.infer("mlp_cuda", {"inputs": [tensor("input", "FP32", [1, 64], [0.0] * 64)]})
    assert error_message(r, 503) == "model 'mlp_cuda' is unavailable: " + want
    assert cpu_build.get("/v2/models/mlp/ready").status_code == 200


def test_gpu_core_without_its_providers_says_so(start_server_fn, tmp_path):
    """The 1.29 core library alone in a folder: the provider library is absent."""
    _need_gpu_build()
    lib = tmp_path / "ort" / "libonnxruntime.so.1"
    lib.parent.mkdir()
    os.symlink(os.path.abspath(GPU_ORT_LIB), lib)
    repo = start_server_fn.repo()
    repo.add_onnx("mlp")
    repo.add_onnx("mlp_cuda", "mlp", config={"backend": "onnxruntime", "device": "cuda:0"})
    client = start_server_fn(repo, ["--onnxruntime-lib", str(lib)])
    want = _no_provider_sentence("cuda:0", str(lib))
    assert _index_reason(client, "mlp_cuda") == ("UNAVAILABLE", want)
    assert client.get("/v2/models/mlp/ready").status_code == 200


@pytest.mark.parametrize("which", ["gpu_build", "cpu_build"])
def test_metadata_and_metrics_say_cpu_for_cpu_models(request, which):
    client = request.getfixturevalue(which)
    md = client.get("/v2/models/mlp")
    assert md.status_code == 200, md.text
    md = md.json()
    assert md["device"] == "cpu" and md["execution_provider"] == "CPUExecutionProvider", md
    # Both builds report node placement (API 24+): on the CPU provider, every node is on the CPU.
    assert isinstance(md["graph_nodes"], int) and md["graph_nodes"] >= 1, md
    assert md["graph_nodes_on_cpu"] == md["graph_nodes"], md
    sim = client.get("/v2/models/sim").json()
    assert sim["device"] == "cpu" and sim["execution_provider"] == "sim", sim
    assert "graph_nodes" not in sim, sim
    m = client.metrics()
    assert metric_value(m, "batchd_model_info", model="mlp", version="1", device="cpu",
                        execution_provider="CPUExecutionProvider") == 1.0
    assert metric_value(m, "batchd_model_info", model="sim", version="1", device="cpu",
                        execution_provider="sim") == 1.0
    if client.get("/v2/models/mlp_cuda/ready").status_code != 200:
        # Not loaded: it runs nowhere, so it has no info series.
        assert metric_value(m, "batchd_model_info", model="mlp_cuda") is None
    text = client.metrics_text().text
    assert "# TYPE batchd_model_info gauge" in text


# ---- a machine with an NVIDIA GPU and CUDA 13 ----------------------------------------------

def _need_cuda(client):
    if not _cuda_loaded(client):
        pytest.skip("needs an NVIDIA GPU, its driver and CUDA 13 + cuDNN 9 on the library path "
                    "(bench/gpu.sh finds them); the cuda:0 model did not load here")


def test_cuda_model_says_where_it_runs(gpu_build):
    _need_cuda(gpu_build)
    md = gpu_build.get("/v2/models/mlp_cuda").json()
    assert md["device"] == "cuda:0", md
    assert md["execution_provider"] == "CUDAExecutionProvider", md
    assert 0 <= md["graph_nodes_on_cpu"] <= md["graph_nodes"], md
    cfg = gpu_build.get("/v2/models/mlp_cuda/config").json()
    assert cfg["instance_group"] == [{"count": 1, "kind": "KIND_GPU", "gpus": [0]}], cfg
    assert metric_value(gpu_build.metrics(), "batchd_model_info", model="mlp_cuda", version="1",
                        device="cuda:0", execution_provider="CUDAExecutionProvider") == 1.0


def test_cuda_matches_cpu(gpu_build):
    _need_cuda(gpu_build)
    x = np.random.RandomState(5).standard_normal((4, 64)).astype(np.float32)
    body = {"inputs": [tensor("input", "FP32", [4, 64], x.reshape(-1).tolist())]}
    cpu = gpu_build.infer("mlp", body)
    gpu = gpu_build.infer("mlp_cuda", body)
    assert cpu.status_code == 200 and gpu.status_code == 200, (cpu.text, gpu.text)
    a = np.array(cpu.json()["outputs"][0]["data"])
    b = np.array(gpu.json()["outputs"][0]["data"])
    assert a.shape == b.shape == (40,)
    assert np.allclose(a, b, rtol=1e-4, atol=1e-5), np.abs(a - b).max()


def test_cuda_batches_match_cpu_rows(gpu_build):
    """Rows batched together on the GPU give each row's own answer."""
    _need_cuda(gpu_build)
    x = np.random.RandomState(6).standard_normal((32, 64)).astype(np.float32)
    whole = gpu_build.infer("mlp_cuda", {"inputs": [tensor("input", "FP32", [32, 64],
                                                           x.reshape(-1).tolist())]})
    assert whole.status_code == 200, whole.text
    got = np.array(whole.json()["outputs"][0]["data"]).reshape(32, 10)
    for i in (0, 17, 31):
        one = gpu_build.infer("mlp", {"inputs": [tensor("input", "FP32", [1, 64],
                                                        x[i].tolist())]})
        assert np.allclose(got[i], one.json()["outputs"][0]["data"], rtol=1e-4, atol=1e-5)


def test_cuda_device_past_the_last_gpu_says_how_many(gpu_build):
    _need_cuda(gpu_build)
    state, reason = _index_reason(gpu_build, "mlp_cuda99")
    assert state == "UNAVAILABLE", reason
    assert re.fullmatch(r"device cuda:99 does not exist: CUDA (sees \d+ GPUs? here, numbered 0 to "
                        r"\d+; set \"device\" in config.json to one of them|has no GPU 99 here "
                        r"\(see nvidia-smi\); set \"device\" in config.json to one it lists)",
                        reason), reason
