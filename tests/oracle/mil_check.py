#!/usr/bin/env python3
"""Check an .mlpackage written by ANEForge against coremltools 9.0.

Run with the oracle venv's python (scripts/oracle-venv.sh prints its path):

    mil_check.py PKG.mlpackage [--inputs IN.npz --outputs OUT.npz]

Prints one JSON object on stdout:

    valid            true when every check below passed
    errors           what failed, one message each
    ops              every op of `main` in order: type, name, and the output
                     types coremltools *infers* ({"name", "type"}), spelled
                     "tensor<fp16,[1,2]>" or a bare dtype for scalars
    outputs          main's outputs with inferred types
    blob_refs        every BlobFileValue: op, param, file, offset
    evaluated        (with --inputs) true if every op could be evaluated

Checks, in order:
  * Manifest.json names a root model that parses as a Core ML Model;
  * it is an ML Program, Program.version is 1, each function's opset string
    is the one its specificationVersion implies and has a block for it;
  * SSA names in main are unique (coremltools' loader would silently keep
    the last one);
  * the model description lists exactly main's inputs and outputs, with
    matching dtypes and shapes;
  * coremltools' milproto loader rebuilds every op through the MIL Builder
    (argument names, required arguments, const-ness, dtype domains, type
    inference) and asserts the declared output types equal the inferred
    ones; then Program.validate().

With --inputs, main is also evaluated in numpy through coremltools' per-op
value inference (what it uses for constant folding), and the outputs are
saved to --outputs (state inputs take their initial value from --inputs;
read_state / write_state act on it). Ops without value inference (conv, pooling, ...) make
"evaluated" false and name the op in "eval_error".
"""

import argparse
import contextlib
import json
import logging
import os
import sys

# coremltools logs a warning per missing macOS runtime library at import, and
# some loader paths print to stdout; keep stdout for our JSON only.
logging.getLogger("coremltools").setLevel(logging.ERROR)
with contextlib.redirect_stdout(sys.stderr):
    import numpy as np
    import coremltools as ct  # noqa: F401  (registers the op sets)
    from coremltools.converters.mil.frontend.milproto.load import load as load_milproto
    from coremltools.converters.mil.mil import types
    from coremltools.proto import FeatureTypes_pb2, MIL_pb2, Model_pb2

# specificationVersion -> the opset string a function must carry.
OPSET_OF_SPEC = {6: "CoreML5", 7: "CoreML6", 8: "CoreML7", 9: "CoreML8", 10: "CoreML9"}

# Model description array dtypes -> MIL dtypes.
IO_DTYPES = {
    FeatureTypes_pb2.ArrayFeatureType.FLOAT16: MIL_pb2.FLOAT16,
    FeatureTypes_pb2.ArrayFeatureType.FLOAT32: MIL_pb2.FLOAT32,
    FeatureTypes_pb2.ArrayFeatureType.INT32: MIL_pb2.INT32,
}


def type_name(t):
    """coremltools' builtin type as 'tensor<fp16,[1,2]>' / 'fp16'."""
    if types.is_state(t):
        return "state<%s>" % type_name(t.wrapped_type())
    if types.is_tensor(t):
        dims = ",".join(str(d) for d in t.get_shape())
        return "tensor<%s,[%s]>" % (types.builtin_to_string(t.get_primitive()), dims)
    return types.builtin_to_string(t)


def read_model(pkg):
    with open(os.path.join(pkg, "Manifest.json")) as f:
        manifest = json.load(f)
    root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    model_path = os.path.join(pkg, "Data", root["path"])
    spec = Model_pb2.Model()
    with open(model_path, "rb") as f:
        spec.ParseFromString(f.read())
    return spec, os.path.join(os.path.dirname(model_path), "weights")


def structural_errors(spec):
    errs = []
    if spec.WhichOneof("Type") != "mlProgram":
        return ["model is %r, not an ML Program" % spec.WhichOneof("Type")]
    prog = spec.mlProgram
    if prog.version != 1:
        errs.append("Program.version is %d, expected 1" % prog.version)
    want = OPSET_OF_SPEC.get(spec.specificationVersion)
    for name, fn in prog.functions.items():
        if fn.opset != want:
            errs.append("function %s: opset %r, specificationVersion %d needs %r"
                        % (name, fn.opset, spec.specificationVersion, want))
        if fn.opset not in fn.block_specializations:
            errs.append("function %s: no block for opset %r" % (name, fn.opset))
    main = prog.functions.get("main")
    if main is None:
        return errs + ["no main function"]
    block = main.block_specializations.get(main.opset)
    seen = {i.name for i in main.inputs}
    for op in (block.operations if block else []):
        for o in op.outputs:
            if o.name in seen:
                errs.append("SSA name %r defined twice (again by %s)" % (o.name, op.type))
            seen.add(o.name)
    errs += description_errors(spec.description, main, block)
    return errs


def _proto_sig(vt):
    if vt.WhichOneof("type") == "stateType":
        vt = vt.stateType.wrappedType
    tt = vt.tensorType
    return tt.dataType, [d.constant.size for d in tt.dimensions]


def description_errors(desc, main, block):
    """The description (or, for a multifunction model, main's
    FunctionDescription) must list main's ports with matching types."""
    if desc.functions:
        if desc.defaultFunctionName != "main":
            return ["defaultFunctionName is %r, expected 'main'" % desc.defaultFunctionName]
        found = [f for f in desc.functions if f.name == "main"]
        if not found:
            return ["no FunctionDescription for main"]
        desc = found[0]
    errs = []
    sigs = {i.name: _proto_sig(i.type) for i in main.inputs}
    if block is not None:
        for op in block.operations:
            for o in op.outputs:
                sigs[o.name] = _proto_sig(o.type)
    states = [i.name for i in main.inputs if i.type.WhichOneof("type") == "stateType"]
    inputs = [i.name for i in main.inputs if i.type.WhichOneof("type") != "stateType"]
    declared = [("input", inputs, desc.input),
                ("state", states, desc.state),
                ("output", list(block.outputs) if block else [], desc.output)]
    for kind, names, feats in declared:
        if [f.name for f in feats] != names:
            errs.append("description %ss %s != main's %s"
                        % (kind, [f.name for f in feats], names))
            continue
        for f in feats:
            arr = f.type.stateType.arrayType if kind == "state" else f.type.multiArrayType
            dt, dims = sigs[f.name]
            want_dims = dims if dims else [1]
            if IO_DTYPES.get(arr.dataType) != dt or list(arr.shape) != want_dims:
                errs.append("description %s %r is %s%s but main has %s%s"
                            % (kind, f.name, arr.dataType, list(arr.shape), dt, dims))
    return errs


def blob_refs(spec):
    refs = []
    main = spec.mlProgram.functions["main"]
    for op in main.block_specializations[main.opset].operations:
        vals = [(k, v) for k, v in op.attributes.items()]
        for k, arg in op.inputs.items():
            vals += [(k, b.value) for b in arg.arguments if b.WhichOneof("binding") == "value"]
        for k, v in vals:
            if v.WhichOneof("value") == "blobFileValue":
                refs.append({"op": op.attributes["name"].immediateValue.tensor.strings.values[0],
                             "param": k, "file": v.blobFileValue.fileName,
                             "offset": v.blobFileValue.offset})
    return refs


def evaluate(fn, feeds):
    """Replays `fn` on constant inputs so that every op's numpy value
    inference runs; returns {output name: array}."""
    from coremltools.converters.mil.mil import Builder as mb, Function

    vals = {}
    with Function({}, opset_version=fn.opset_version):
        for name in fn.inputs:
            vals[name] = mb.const(val=feeds[name], name=name + "_in")
        for op in fn.operations:
            if op.op_type == "read_state":
                vals[op.outputs[0].name] = vals[op.input.name]
                continue
            if op.op_type == "coreml_update_state":
                # pymil's form of write_state: store, and pass the value on.
                vals[op.state.name] = vals[op.value.name]
                vals[op.outputs[0].name] = vals[op.value.name]
                continue
            if op.op_type == "const" or op.op_type.startswith("constexpr_"):
                out = op.outputs[0]
                v = out.val if out.val is not None else op.materialized_val_inference()
                vals[out.name] = mb.const(val=v, name=out.name)
                continue
            kwargs = {}
            for k, v in op.inputs.items():
                kwargs[k] = [vals[x.name] for x in v] if isinstance(v, (list, tuple)) else vals[v.name]
            res = getattr(mb, op.op_type)(name=op.name, **kwargs)
            res = list(res) if isinstance(res, (list, tuple)) else [res]
            for src, new in zip(op.outputs, res):
                if new.val is None:
                    raise NotImplementedError("%s (%s) has no value inference" % (op.op_type, op.name))
                vals[src.name] = new
    return {o.name: np.asarray(vals[o.name].val) for o in fn.outputs}


def check(pkg, inputs=None, outputs=None):
    report = {"package": pkg, "valid": False, "errors": [], "ops": [], "outputs": [],
              "blob_refs": []}
    try:
        spec, weights_dir = read_model(pkg)
    except Exception as e:  # unreadable package: report, don't crash
        report["errors"].append("cannot read package: %s: %s" % (type(e).__name__, e))
        return report
    report["specification_version"] = spec.specificationVersion
    report["errors"] += structural_errors(spec)
    if spec.WhichOneof("Type") != "mlProgram":
        return report
    report["blob_refs"] = blob_refs(spec)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            prog = load_milproto(spec, specification_version=spec.specificationVersion,
                                 file_weights_dir=weights_dir)
            prog.validate()
    except Exception as e:
        report["errors"].append("coremltools rejected the program: %s: %s" % (type(e).__name__, e))
        return report
    fn = prog.functions["main"]
    report["ops"] = [{"type": op.op_type, "name": op.name,
                      "outputs": [{"name": o.name, "type": type_name(o.sym_type)} for o in op.outputs]}
                     for op in fn.operations]
    report["outputs"] = [{"name": o.name, "type": type_name(o.sym_type)} for o in fn.outputs]
    report["valid"] = not report["errors"]
    if inputs and report["valid"]:
        feeds = dict(np.load(inputs))
        try:
            with contextlib.redirect_stdout(sys.stderr):
                results = evaluate(fn, feeds)
            report["evaluated"] = True
            if outputs:
                np.savez(outputs, **results)
        except NotImplementedError as e:
            report["evaluated"] = False
            report["eval_error"] = str(e)
    return report


def main(argv=None):
    ap = argparse.ArgumentParser(description="check an .mlpackage with coremltools")
    ap.add_argument("package")
    ap.add_argument("--inputs", help=".npz of main's inputs: also evaluate")
    ap.add_argument("--outputs", help="with --inputs: save the outputs to this .npz")
    args = ap.parse_args(argv)
    report = check(args.package, args.inputs, args.outputs)
    print(json.dumps(report, indent=1))
    return 0 if report["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
