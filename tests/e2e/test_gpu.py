"""`"device": "cuda:0"` in a model's config: on a machine with a GPU and a GPU build of ONNX
Runtime the results match the CPU's; elsewhere the model is unavailable with a clear reason."""
import os
import re
import shutil

import numpy as np
import pytest

from conftest import error_message, require_onnx, tensor


def _has_gpu():
    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


@pytest.fixture(scope="module")
def client(start_server):
    repo = start_server.repo()
    require_onnx(repo, "mlp")
    require_onnx(repo, "mlp_cuda", "mlp")
    import json
    with open(os.path.join(repo.path, "mlp_cuda", "config.json"), "w") as f:
        json.dump({"backend": "onnxruntime", "device": "cuda:0"}, f)
    return start_server(repo)


def test_cuda_device_without_gpu_says_so(client):
    if client.get("/v2/models/mlp_cuda/ready").status_code == 200:
        pytest.skip("a CUDA provider is available here; covered by test_cuda_matches_cpu")
    if _has_gpu():
        # A GPU but a CPU-only ONNX Runtime build: still must say why.
        pass
    r = client.infer("mlp_cuda", {"inputs": [tensor("input", "FP32", [1, 64], [0.0] * 64)]})
    assert r.status_code in (400, 503), r.text
    msg = error_message(r, r.status_code)
    assert re.search(r"cuda|gpu", msg, re.I), msg
    # The CPU model beside it is unaffected.
    assert client.get("/v2/models/mlp/ready").status_code == 200


def test_cuda_matches_cpu(client):
    if not _has_gpu():
        pytest.skip("needs a GPU (no /dev/nvidia0 or nvidia-smi on this machine)")
    if client.get("/v2/models/mlp_cuda/ready").status_code != 200:
        pytest.skip("needs a GPU build of ONNX Runtime with the CUDA execution provider")
    x = np.random.RandomState(5).standard_normal((4, 64)).astype(np.float32)
    body = {"inputs": [tensor("input", "FP32", [4, 64], x.tolist())]}
    cpu = client.infer("mlp", body)
    gpu = client.infer("mlp_cuda", body)
    assert cpu.status_code == 200 and gpu.status_code == 200
    a = np.array(cpu.json()["outputs"][0]["data"])
    b = np.array(gpu.json()["outputs"][0]["data"])
    assert np.allclose(a, b, rtol=1e-4, atol=1e-6)
