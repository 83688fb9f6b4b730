#!/usr/bin/python3
"""Build the demo model repository that `make run` serves.

Three models, over both backends:

  digits/    an ONNX classifier for scikit-learn's 8x8 handwritten digits (load_digits ships with
             python3-sklearn, so no network is needed). A small MLP is trained with a fixed seed
             and exported by hand with onnx.helper (skl2onnx is not packaged in Debian):
               input  pixels         FP32 [-1, 64]  pixel values 0..16, as sklearn gives them
               output probabilities  FP32 [-1, 10]  softmax over the ten digits
               output label          INT64 [-1]     argmax of probabilities
             There is no config.json: the server reads inputs and outputs from the model.
             example.json is a KServe v2 infer request for one held-out digit and
             example.expected holds that digit's true label.
  digits_image/
             the same classifier taking a PNG (or JPEG) of a handwritten digit at any size: the
             server's image preprocessing (config.json "preprocess": GRAY, stretched to 8x8,
             pixel * 16/255, so 0..255 becomes the 0..16 the model was trained on) feeds a
             variant of the graph whose input is FP32 [-1, 1, 8, 8] (a Reshape to [-1, 64] in
             front of the same weights) and one output, probabilities. labels.txt holds 0..9. sample_<d>.png are held-out
             digits (white ink on black, as sklearn's 0..16 values scaled to 0..255) upscaled
             to 64x64 with Pillow; samples.txt lists each file with its true digit. Only
             samples the model classifies right after the same preprocessing (Pillow's
             bilinear resize to 8x8, as the server does) are shipped.
  sim_echo/  a `sim` backend model (config.json only): output OUTPUT0 is a copy of INPUT0,
             FP32 [4], with a synthetic latency.

The exported graph is checked by evaluating it node by node in numpy against sklearn's
predict_proba on the held-out split, and, when libonnxruntime.so.1 is available (the setup
script puts it in third_party/onnxruntime/), by running it in ONNX Runtime through ctypes.

Run with /usr/bin/python3 (Debian's numpy, sklearn and onnx):
    /usr/bin/python3 tools/make_demo.py --out models-demo
"""

import argparse
import ctypes
import json
import os
import shutil
import sys
import tempfile
import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

SEED = 0
HIDDEN = 32
PIXEL_MAX = 16.0
IR_VERSION = 8
OPSET = 13
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ORT = os.path.join(ROOT, "third_party", "onnxruntime", "libonnxruntime.so.1")

SIM_ECHO_CONFIG = {
    "backend": "sim",
    "max_batch_size": 32,
    "dynamic_batching": {"max_queue_delay_us": 500, "max_queue_size": 1024},
    "instances": 1,
    "inputs": [{"name": "INPUT0", "datatype": "FP32", "dims": [4]}],
    "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "dims": [4]}],
    "sim": {"latency_us": 1000, "per_item_us": 50},
}

# The digits classifier behind the server's image preprocessing: a gray image of any size,
# stretched to 8x8, pixel * 16/255 (0..255 -> the 0..16 range the model was trained on).
DIGITS_IMAGE_CONFIG = {
    "backend": "onnxruntime",
    "max_batch_size": 32,
    "dynamic_batching": {"max_queue_delay_us": 500},
    "preprocess": {"input": "image",
                   "image": {"size": [8, 8], "resize": "stretch", "color": "GRAY",
                             "layout": "NCHW", "scale": PIXEL_MAX / 255.0, "mean": [0.0],
                             "std": [1.0]}},
}


def train():
    """Train the classifier; returns (model, x_test, y_test) with x in raw 0..16 pixels."""
    digits = load_digits()
    x = digits.data.astype(np.float64)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=SEED, stratify=y)
    clf = MLPClassifier(hidden_layer_sizes=(HIDDEN,), activation="relu", alpha=1e-4,
                        max_iter=400, random_state=SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train / PIXEL_MAX, y_train)
    if list(clf.classes_) != list(range(10)) or clf.out_activation_ != "softmax":
        raise SystemExit("make_demo: unexpected classifier layout: classes %s, output %s"
                         % (list(clf.classes_), clf.out_activation_))
    return clf, x_test, y_test


def export(clf):
    """Write the MLP as an ONNX graph: pixels/16 -> Gemm -> Relu -> Gemm -> Softmax -> ArgMax."""
    w1, w2 = clf.coefs_  # (64, H), (H, 10)
    b1, b2 = clf.intercepts_
    inits = [
        numpy_helper.from_array(np.array([1.0 / PIXEL_MAX], dtype=np.float32), "scale"),
        numpy_helper.from_array(w1.astype(np.float32), "w1"),
        numpy_helper.from_array(b1.astype(np.float32), "b1"),
        numpy_helper.from_array(w2.astype(np.float32), "w2"),
        numpy_helper.from_array(b2.astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Mul", ["pixels", "scale"], ["scaled"], name="scale_pixels"),
        helper.make_node("Gemm", ["scaled", "w1", "b1"], ["hidden_pre"], name="dense1"),
        helper.make_node("Relu", ["hidden_pre"], ["hidden"], name="relu1"),
        helper.make_node("Gemm", ["hidden", "w2", "b2"], ["logits"], name="dense2"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], name="argmax", axis=1,
                         keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "digits",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
         helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])],
        initializer=inits)
    model = helper.make_model(
        graph, producer_name="batchd-make_demo", producer_version="1",
        opset_imports=[helper.make_opsetid("", OPSET)],
        doc_string="MLP (64-%d-10) trained on sklearn's 8x8 digits; pixels are 0..16." % HIDDEN)
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def export_image(clf):
    """The digits graph with an image input FP32 [batch, 1, 8, 8] reshaped to [batch, 64] and
    only the probabilities output (`?classification=K` asks every output for classes)."""
    base = export(clf)
    graph = base.graph
    shape = numpy_helper.from_array(np.array([-1, 64], dtype=np.int64), "flat_shape")
    reshape = helper.make_node("Reshape", ["image", "flat_shape"], ["pixels"], name="flatten")
    image_graph = helper.make_graph(
        [reshape] + [n for n in graph.node if n.op_type != "ArgMax"], "digits_image",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [o for o in graph.output if o.name == "probabilities"],
        initializer=list(graph.initializer) + [shape])
    model = helper.make_model(
        image_graph, producer_name="batchd-make_demo", producer_version="1",
        opset_imports=[helper.make_opsetid("", OPSET)],
        doc_string="MLP (64-%d-10) trained on sklearn's 8x8 digits, image input [1,8,8] with "
                   "pixels 0..16." % HIDDEN)
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def sample_images(model, x_test, y_test, size=64):
    """One upscaled PNG-ready image per digit 0..9 (the first held-out one the model gets right
    after the server's preprocessing, reproduced with Pillow). Returns [(digit, PIL image)]."""
    from PIL import Image
    out = []
    for digit in range(10):
        for idx in np.nonzero(y_test == digit)[0]:
            small = np.round(x_test[idx].reshape(8, 8) * 255.0 / PIXEL_MAX).astype(np.uint8)
            img = Image.fromarray(small, mode="L").resize((size, size), Image.NEAREST)
            back = np.asarray(img.resize((8, 8), Image.BILINEAR), dtype=np.float32)
            x = (back * np.float32(PIXEL_MAX / 255.0)).reshape(1, 1, 8, 8).astype(np.float32)
            got = run_numpy(model, {"image": x})
            if int(np.argmax(got["probabilities"][0])) == digit:
                out.append((digit, img))
                break
    return out


def run_numpy(model, feeds):
    """Evaluate the exported graph node by node; only the ops export() emits are supported."""
    env = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    env.update(feeds)
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        args = [env[name] for name in node.input]
        if node.op_type == "Reshape":
            out = args[0].reshape(args[1])
        elif node.op_type == "Mul":
            out = args[0] * args[1]
        elif node.op_type == "Gemm":
            if attrs.get("transA", 0) or attrs.get("transB", 0):
                raise ValueError("Gemm with transposes is not supported here")
            out = args[0] @ args[1] + args[2]
        elif node.op_type == "Relu":
            out = np.maximum(args[0], 0)
        elif node.op_type == "Softmax":
            shifted = args[0] - args[0].max(axis=attrs["axis"], keepdims=True)
            e = np.exp(shifted)
            out = e / e.sum(axis=attrs["axis"], keepdims=True)
        elif node.op_type == "ArgMax":
            out = np.argmax(args[0], axis=attrs["axis"])  # keepdims=0, first maximum wins
        else:
            raise ValueError("no numpy kernel for op %s" % node.op_type)
        # Keep ONNX's types: float32 stays float32 (numpy would not widen here anyway), and
        # ArgMax gives int64.
        env[node.output[0]] = out.astype(np.int64 if node.op_type == "ArgMax" else np.float32)

    return {o.name: env[o.name] for o in model.graph.output}


class OrtError(Exception):
    pass


class Ort:
    """Just enough of the ONNX Runtime C API (by slot number, see
    ../shared/onnxruntime/ortapi-slots.tsv) to load a model and run it on CPU."""

    API_VERSION = 30
    SLOTS = {"GetErrorMessage": 2, "CreateEnv": 3, "CreateSession": 7, "Run": 9,
             "CreateSessionOptions": 10, "SetIntraOpNumThreads": 24,
             "CreateTensorWithDataAsOrtValue": 49, "GetTensorMutableData": 51,
             "CreateCpuMemoryInfo": 69, "ReleaseEnv": 92, "ReleaseStatus": 93,
             "ReleaseMemoryInfo": 94, "ReleaseSession": 95, "ReleaseValue": 96,
             "ReleaseSessionOptions": 100}
    P = ctypes.c_void_p
    PP = ctypes.POINTER(ctypes.c_void_p)
    SIGS = {
        "GetErrorMessage": (ctypes.c_char_p, [P]),
        "CreateEnv": (P, [ctypes.c_int, ctypes.c_char_p, PP]),
        "CreateSession": (P, [P, ctypes.c_char_p, P, PP]),
        "Run": (P, [P, P, ctypes.POINTER(ctypes.c_char_p), PP, ctypes.c_size_t,
                    ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t, PP]),
        "CreateSessionOptions": (P, [PP]),
        "SetIntraOpNumThreads": (P, [P, ctypes.c_int]),
        "CreateTensorWithDataAsOrtValue": (P, [P, P, ctypes.c_size_t,
                                               ctypes.POINTER(ctypes.c_int64), ctypes.c_size_t,
                                               ctypes.c_int, PP]),
        "GetTensorMutableData": (P, [P, PP]),
        "CreateCpuMemoryInfo": (P, [ctypes.c_int, ctypes.c_int, PP]),
        "ReleaseEnv": (None, [P]), "ReleaseStatus": (None, [P]),
        "ReleaseMemoryInfo": (None, [P]), "ReleaseSession": (None, [P]),
        "ReleaseValue": (None, [P]), "ReleaseSessionOptions": (None, [P]),
    }
    FLOAT, INT64 = 1, 7

    def __init__(self, path):
        # As batchd does: ONNX Runtime 1.30 would otherwise record and send usage telemetry
        # (docs/SECURITY.md).
        if not os.environ.get("ORT_DISABLE_TELEMETRY"):
            os.environ["ORT_DISABLE_TELEMETRY"] = "1"
        self.lib = ctypes.CDLL(path)
        get_base = self.lib.OrtGetApiBase
        get_base.restype = ctypes.POINTER(ctypes.c_void_p * 2)
        base = get_base().contents
        get_api = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint32)(base[0])
        self.version = ctypes.CFUNCTYPE(ctypes.c_char_p)(base[1])().decode()
        table = get_api(self.API_VERSION)
        if not table:
            raise OrtError("library %s does not support ORT API version %d"
                           % (path, self.API_VERSION))
        slots = ctypes.cast(table, ctypes.POINTER(ctypes.c_void_p))
        for name, slot in self.SLOTS.items():
            restype, argtypes = self.SIGS[name]
            setattr(self, name, ctypes.CFUNCTYPE(restype, *argtypes)(slots[slot]))
        self.env = self._out("CreateEnv", 3, b"make_demo")  # 3 = ORT_LOGGING_LEVEL_ERROR
        self.mem = self._out("CreateCpuMemoryInfo", 1, 0)  # OrtArenaAllocator, default mem

    def _check(self, status, what):
        if status:
            msg = self.GetErrorMessage(status).decode(errors="replace")
            self.ReleaseStatus(status)
            raise OrtError("%s failed: %s" % (what, msg))

    def _out(self, name, *args):
        out = ctypes.c_void_p()
        self._check(getattr(self, name)(*args, ctypes.byref(out)), name)
        return out

    def run(self, model_path, feeds, output_names, output_dtypes):
        """feeds: name -> float32 array. Returns name -> array (copied out of ORT)."""
        opts = self._out("CreateSessionOptions")
        values, outs = [], (ctypes.c_void_p * len(output_names))()
        sess = None
        try:
            self._check(self.SetIntraOpNumThreads(opts, 1), "SetIntraOpNumThreads")
            sess = self._out("CreateSession", self.env, model_path.encode(), opts)
            arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in feeds.values()]
            for a in arrays:
                shape = (ctypes.c_int64 * a.ndim)(*a.shape)
                values.append(self._out("CreateTensorWithDataAsOrtValue", self.mem,
                                        a.ctypes.data, a.nbytes, shape, a.ndim, self.FLOAT))
            in_names = (ctypes.c_char_p * len(feeds))(*[n.encode() for n in feeds])
            out_names = (ctypes.c_char_p * len(output_names))(
                *[n.encode() for n in output_names])
            in_vals = (ctypes.c_void_p * len(values))(*[v.value for v in values])
            self._check(self.Run(sess, None, in_names, in_vals, len(values), out_names,
                                 len(output_names), outs), "Run")
            result = {}
            for i, (name, (dtype, shape)) in enumerate(zip(output_names, output_dtypes)):
                data = self._out("GetTensorMutableData", outs[i])
                count = int(np.prod(shape))
                buf = (ctypes.c_char * (count * np.dtype(dtype).itemsize)).from_address(
                    data.value)
                result[name] = np.frombuffer(bytes(buf), dtype=dtype).reshape(shape)
            return result
        finally:
            for o in outs:
                if o:
                    self.ReleaseValue(o)
            for v in values:
                self.ReleaseValue(v)
            if sess is not None:
                self.ReleaseSession(sess)
            self.ReleaseSessionOptions(opts)

    def close(self):
        self.ReleaseMemoryInfo(self.mem)
        self.ReleaseEnv(self.env)


def write_json(path, obj, indent=None):
    with open(path, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="model repository folder to (re)write")
    ap.add_argument("--onnxruntime-lib", default=DEFAULT_ORT,
                    help="libonnxruntime.so.1 to check the model with (default: %(default)s; "
                         "skipped when the file does not exist)")
    ap.add_argument("--no-ort-check", action="store_true",
                    help="do not check the model with ONNX Runtime")
    args = ap.parse_args()

    clf, x_test, y_test = train()
    model = export(clf)

    # The exported graph's math must equal sklearn's, up to float32 rounding.
    x32 = x_test.astype(np.float32)
    want = clf.predict_proba(x_test / PIXEL_MAX)
    got = run_numpy(model, {"pixels": x32})
    diff = float(np.max(np.abs(got["probabilities"].astype(np.float64) - want)))
    if diff > 1e-5:
        raise SystemExit("make_demo: exported graph disagrees with predict_proba: max |diff| %g"
                         % diff)
    if not np.array_equal(got["label"], np.argmax(want, axis=1)):
        raise SystemExit("make_demo: exported graph's labels differ from sklearn's argmax")
    accuracy = float(np.mean(got["label"] == y_test))
    print("make_demo: digits MLP 64-%d-10, held-out accuracy %.4f (%d test digits), "
          "graph vs predict_proba max |diff| %.2g" % (HIDDEN, accuracy, len(y_test), diff))

    # The example: the first held-out digit the model gets right, so the demo's answer is true.
    idx = int(np.nonzero(got["label"] == y_test)[0][0])
    example_pixels = x_test[idx]
    example_label = int(y_test[idx])

    # Write into a temporary folder next to the target, then swap the model folders in, so an
    # interrupted run never leaves half a model behind.
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=".make_demo.", dir=out)
    try:
        digits_dir = os.path.join(stage, "digits")
        os.makedirs(os.path.join(digits_dir, "1"))
        model_path = os.path.join(digits_dir, "1", "model.onnx")
        onnx.save(model, model_path)
        onnx.checker.check_model(model_path, full_check=True)
        with open(os.path.join(digits_dir, "labels.txt"), "w") as f:
            f.write("".join("%d\n" % c for c in range(10)))
        request = {"id": "demo-digit",
                   "inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32",
                               "data": [float(v) for v in example_pixels]}]}
        write_json(os.path.join(digits_dir, "example.json"), request)
        with open(os.path.join(digits_dir, "example.expected"), "w") as f:
            f.write("%d\n" % example_label)

        image_model = export_image(clf)
        got_image = run_numpy(image_model, {"image": x32.reshape(-1, 1, 8, 8)})
        if not np.array_equal(got_image["probabilities"], got["probabilities"]):
            raise SystemExit("make_demo: the image variant of the graph disagrees with digits")
        image_dir = os.path.join(stage, "digits_image")
        os.makedirs(os.path.join(image_dir, "1"))
        onnx.save(image_model, os.path.join(image_dir, "1", "model.onnx"))
        write_json(os.path.join(image_dir, "config.json"), DIGITS_IMAGE_CONFIG, indent=2)
        with open(os.path.join(image_dir, "labels.txt"), "w") as f:
            f.write("".join("%d\n" % c for c in range(10)))
        samples = sample_images(image_model, x_test, y_test)
        with open(os.path.join(image_dir, "samples.txt"), "w") as f:
            for digit, img in samples:
                img.save(os.path.join(image_dir, "sample_%d.png" % digit))
                f.write("sample_%d.png %d\n" % (digit, digit))

        sim_dir = os.path.join(stage, "sim_echo")
        os.makedirs(os.path.join(sim_dir, "1"))
        write_json(os.path.join(sim_dir, "config.json"), SIM_ECHO_CONFIG, indent=2)
        write_json(os.path.join(sim_dir, "example.json"),
                   {"id": "demo-echo", "inputs": [{"name": "INPUT0", "shape": [1, 4],
                                                   "datatype": "FP32",
                                                   "data": [1.0, 2.5, -3.0, 4.25]}]})

        if not args.no_ort_check and os.path.exists(args.onnxruntime_lib):
            ort = Ort(args.onnxruntime_lib)
            res = ort.run(model_path, {"pixels": x32}, ["probabilities", "label"],
                          [(np.float32, (len(x32), 10)), (np.int64, (len(x32),))])
            ort.close()
            odiff = float(np.max(np.abs(res["probabilities"].astype(np.float64) - want)))
            if odiff > 1e-5 or not np.array_equal(res["label"], got["label"]):
                raise SystemExit("make_demo: ONNX Runtime %s disagrees with sklearn: max |diff| "
                                 "%g, labels equal: %s" % (ort.version, odiff,
                                                           np.array_equal(res["label"],
                                                                          got["label"])))
            print("make_demo: ONNX Runtime %s runs the model; max |diff| vs predict_proba %.2g"
                  % (ort.version, odiff))
        elif not args.no_ort_check:
            print("make_demo: %s not found; skipped the ONNX Runtime check (run "
                  "scripts/setup.sh)" % args.onnxruntime_lib)

        for name in ("digits", "digits_image", "sim_echo"):
            final = os.path.join(out, name)
            if os.path.isdir(final):
                shutil.rmtree(final)
            os.rename(os.path.join(stage, name), final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)

    print("make_demo: wrote %s/digits (example: digit %d), %s/digits_image (%d sample PNGs) "
          "and %s/sim_echo" % (args.out, example_label, args.out, len(samples), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
