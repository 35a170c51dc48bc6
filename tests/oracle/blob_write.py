#!/usr/bin/env python3
"""Write a weight file with coremltools' own C++ blob writer.

Run with the oracle venv's python:

    blob_write.py SPEC.json OUT.bin

SPEC.json is the same spec `mil_fixtures blobs` reads:
{"blobs": [{"dtype": "fp16", "shape": [..], "data": "a.raw"}, ...]} with data
as raw little-endian bytes (one byte per element for sub-byte dtypes), paths
relative to the working directory. Prints {"offsets": [...]}: the metadata
offset coremltools returned for each blob, i.e. what MIL would reference.
"""

import contextlib
import json
import logging
import sys

logging.getLogger("coremltools").setLevel(logging.ERROR)
with contextlib.redirect_stdout(sys.stderr):
    import numpy as np
    from coremltools.libmilstoragepython import _BlobStorageWriter

# dtype name -> (numpy dtype of the raw data, writer method). fp16 goes
# through the uint16 view, as coremltools' exporter does.
WRITERS = {
    "fp16": (np.uint16, "write_fp16_data"),
    "fp32": (np.float32, "write_float_data"),
    "int8": (np.int8, "write_int8_data"),
    "uint8": (np.uint8, "write_uint8_data"),
    "int16": (np.int16, "write_int16_data"),
    "uint16": (np.uint16, "write_uint16_data"),
    "int32": (np.int32, "write_int32_data"),
    "uint32": (np.uint32, "write_uint32_data"),
    "int4": (np.int8, "write_int4_data"),
    "uint1": (np.uint8, "write_uint1_data"),
    "uint2": (np.uint8, "write_uint2_data"),
    "uint3": (np.uint8, "write_uint3_data"),
    "uint4": (np.uint8, "write_uint4_data"),
    "uint6": (np.uint8, "write_uint6_data"),
}


def write(spec, out_path):
    writer = _BlobStorageWriter(out_path)
    offsets = []
    for b in spec["blobs"]:
        np_dtype, method = WRITERS[b["dtype"]]
        with open(b["data"], "rb") as f:
            arr = np.frombuffer(f.read(), dtype=np_dtype)
        offsets.append(int(getattr(writer, method)(np.ascontiguousarray(arr))))
    del writer  # flushes and closes the file
    return offsets


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        spec = json.load(f)
    print(json.dumps({"offsets": write(spec, argv[1])}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
