#!/usr/bin/env python3
"""Write a KServe v2 infer body using Triton's binary tensor extension.

usage: make_body.py OUT_FILE INPUT_NAME DIMS OUTPUT_NAME
  DIMS like 1,64 or 1,3,224,224 (the first is the batch). Prints the JSON header length.
FP32 input filled with a fixed pseudo-random pattern; the output is asked for in binary.
"""
import json
import struct
import sys


def main():
    out, name, dims, out_name = sys.argv[1:5]
    shape = [int(d) for d in dims.split(",")]
    count = 1
    for d in shape:
        count *= d
    data = struct.pack("<%df" % count, *[((i * 37) % 101) / 101.0 for i in range(count)])
    header = json.dumps({
        "inputs": [{"name": name, "datatype": "FP32", "shape": shape,
                    "parameters": {"binary_data_size": len(data)}}],
        "outputs": [{"name": out_name, "parameters": {"binary_data": True}}],
    }, separators=(",", ":")).encode()
    with open(out, "wb") as f:
        f.write(header + data)
    print(len(header))


if __name__ == "__main__":
    main()
