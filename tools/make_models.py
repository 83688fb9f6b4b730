#!/usr/bin/python3
"""Write a model repository of small ONNX test models whose outputs are known exactly.

Run with Debian's interpreter (it has onnx and numpy; the pyenv python3 on PATH does not):

    /usr/bin/python3 tools/make_models.py --out build/test-models [--bad-out DIR]

Layout: <out>/<name>/1/model.onnx plus <out>/<name>/meta.json (inputs, outputs, what the
model computes). All models use ir_version 8 and opset 13 so ONNX Runtime 1.30 loads them,
and a symbolic batch dim "N" where they batch. Names and io match ../shared/models where the
two overlap (identity, simple).

  identity     FP32  INPUT0 [N,16] -> OUTPUT0 = INPUT0
  simple       INT32 INPUT0, INPUT1 [N,16] -> OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1
  mlp_small    FP32  input [N,8] -> output [N,4] = input @ W + B (Gemm), with W[i][j] =
               ((4*i + j) % 7 - 3) / 2 and B[j] = j/4 - 1/2: multiples of 1/4, so integer
               inputs give sums that float32 holds exactly, whatever the summation order
  fixed_shape  FP32  INPUT0 [2,3] -> OUTPUT0 = INPUT0 (no batch dim: max_batch_size 0)
  int64_ident  INT64 INPUT0 [N,4] -> OUTPUT0 = INPUT0
  bool_not     BOOL  INPUT0 [N,4] -> OUTPUT0 = not INPUT0
  reshape3     FP32  INPUT0 [N,L] -> OUTPUT0 [N,3,L/3] (Reshape to [0,3,-1]): ONNX Runtime
               fails the run when L is not a multiple of 3 (a backend error at run time)

--bad-out DIR also writes models batchd must refuse to load (kept out of the main
repository so a server started on it has only loadable models):

  fp16_ident   FP16  INPUT0 [N,4] -> OUTPUT0 = INPUT0 (element type batchd cannot carry)
  inputs70     FP32  in0 .. in69 [N,1] -> OUTPUT0 = their sum (more inputs than the 64 batchd
               serves)
"""
import argparse
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8


def mlp_small_weights():
    w = np.array([[((4 * i + j) % 7 - 3) / 2.0 for j in range(4)] for i in range(8)],
                 dtype=np.float32)
    b = np.array([j / 4.0 - 0.5 for j in range(4)], dtype=np.float32)
    return w, b


def save(out_dir, name, nodes, inputs, outputs, initializers, what):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="batchd tools/make_models.py")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    folder = os.path.join(out_dir, name)
    os.makedirs(os.path.join(folder, "1"), exist_ok=True)
    onnx.save(model, os.path.join(folder, "1", "model.onnx"))

    def desc(vi):
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return {"name": vi.name, "dtype": onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[t.elem_type].name,
                "shape": dims}

    meta = {"name": name, "opset": OPSET, "ir_version": IR_VERSION,
            "inputs": [desc(v) for v in inputs], "outputs": [desc(v) for v in outputs],
            "computes": what, "generated_by": "batchd tools/make_models.py"}
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


def tensor(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def unary(out_dir, name, op, elem, shape, what):
    save(out_dir, name, [helper.make_node(op, ["INPUT0"], ["OUTPUT0"], name=op.lower())],
         [tensor("INPUT0", elem, shape)], [tensor("OUTPUT0", elem, shape)], [], what)


def make_all(out_dir):
    unary(out_dir, "identity", "Identity", TensorProto.FLOAT, ["N", 16], "OUTPUT0 = INPUT0")
    save(out_dir, "simple",
         [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"], name="add"),
          helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"], name="sub")],
         [tensor("INPUT0", TensorProto.INT32, ["N", 16]),
          tensor("INPUT1", TensorProto.INT32, ["N", 16])],
         [tensor("OUTPUT0", TensorProto.INT32, ["N", 16]),
          tensor("OUTPUT1", TensorProto.INT32, ["N", 16])],
         [], "OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (like Triton's simple)")
    w, b = mlp_small_weights()
    save(out_dir, "mlp_small",
         [helper.make_node("Gemm", ["input", "W", "B"], ["output"], name="gemm")],
         [tensor("input", TensorProto.FLOAT, ["N", 8])],
         [tensor("output", TensorProto.FLOAT, ["N", 4])],
         [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
         "output = input @ W + B with W[i][j] = ((4*i + j) % 7 - 3) / 2, B[j] = j/4 - 1/2")
    unary(out_dir, "fixed_shape", "Identity", TensorProto.FLOAT, [2, 3],
          "OUTPUT0 = INPUT0; no batch dim")
    unary(out_dir, "int64_ident", "Identity", TensorProto.INT64, ["N", 4], "OUTPUT0 = INPUT0")
    unary(out_dir, "bool_not", "Not", TensorProto.BOOL, ["N", 4], "OUTPUT0 = not INPUT0")
    save(out_dir, "reshape3",
         [helper.make_node("Reshape", ["INPUT0", "SHAPE"], ["OUTPUT0"], name="reshape")],
         [tensor("INPUT0", TensorProto.FLOAT, ["N", "L"])],
         [tensor("OUTPUT0", TensorProto.FLOAT, ["N", 3, "M"])],
         [numpy_helper.from_array(np.array([0, 3, -1], dtype=np.int64), "SHAPE")],
         "OUTPUT0 = INPUT0 reshaped to [N, 3, L/3]; the run fails unless 3 divides L")
    save(out_dir, "gather",
         [helper.make_node("Gather", ["TABLE", "INPUT0"], ["OUTPUT0"], name="gather", axis=0)],
         [tensor("INPUT0", TensorProto.INT64, ["N", 2])],
         [tensor("OUTPUT0", TensorProto.FLOAT, ["N", 2, 4])],
         [numpy_helper.from_array(np.arange(40, dtype=np.float32).reshape(10, 4), "TABLE")],
         "OUTPUT0[n, k] = TABLE[INPUT0[n, k]] with TABLE[i][j] = 4*i + j, i in -10..9 (an "
         "embedding lookup); ONNX Runtime refuses an index outside that range")


def make_bad(out_dir):
    unary(out_dir, "fp16_ident", "Identity", TensorProto.FLOAT16, ["N", 4],
          "OUTPUT0 = INPUT0 (FP16: batchd cannot carry it)")
    names = ["in%d" % i for i in range(70)]
    save(out_dir, "inputs70", [helper.make_node("Sum", names, ["OUTPUT0"], name="sum")],
         [tensor(n, TensorProto.FLOAT, ["N", 1]) for n in names],
         [tensor("OUTPUT0", TensorProto.FLOAT, ["N", 1])], [],
         "OUTPUT0 = in0 + ... + in69 (70 inputs: more than batchd serves)")


def self_check(out_dir):
    """Evaluate mlp_small with numpy to confirm the exactness claim above."""
    w, b = mlp_small_weights()
    x = np.arange(24, dtype=np.float32).reshape(3, 8) - 5
    y32 = x @ w + b
    y64 = x.astype(np.float64) @ w.astype(np.float64) + b.astype(np.float64)
    if not np.array_equal(y32.astype(np.float64), y64):
        sys.exit("make_models.py: mlp_small is not exact in float32")
    model = onnx.load(os.path.join(out_dir, "mlp_small", "1", "model.onnx"))
    got = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    if not (np.array_equal(got["W"], w) and np.array_equal(got["B"], b)):
        sys.exit("make_models.py: mlp_small weights did not round-trip")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="model repository folder to write")
    ap.add_argument("--bad-out", help="folder for models batchd must refuse")
    args = ap.parse_args()
    make_all(args.out)
    self_check(args.out)
    if args.bad_out:
        make_bad(args.bad_out)
    print("make_models.py: wrote %s%s" % (args.out,
                                          " and " + args.bad_out if args.bad_out else ""))


if __name__ == "__main__":
    main()
