"""The graph → MIL lowering checked against coremltools 9.0.

Every row of the op conformance suite (tests/test_ops.py CASES: every
native op of OPS.md, on the shapes and attributes it is tested with) is
compiled, lowered and written as an .mlpackage, in both dialects: the
default iOS18 program and the iOS16 one compiled for H13 (M1). Then:

(a) coremltools' MIL loader rebuilds every op (argument names, required
    arguments, const-ness, dtype domains) and the output type we declare for
    every op equals the one it infers;
(c) where coremltools can evaluate the program in numpy (value inference),
    its result agrees with the sim's within fp16 tolerance; where it cannot,
    the op it stopped at is one coremltools has no value inference for;
(b) the weight file our lowering writes is byte-identical to coremltools'
    own blob writer for the same arrays.

Also the API around it: net.mil(), net.save_mlpackage(), af.export(),
net.io_plan(), and backend="ane" off a Mac. The MIL text snapshots (d) are
Rust tests (crates/aneforge/src/backend/mil/tests.rs).

The oracle lives in its own venv (scripts/oracle-venv.sh); without it these
tests skip, unless ANEFORGE_REQUIRE_ORACLE=1 makes that a failure.
"""

import json
import re
import subprocess

import numpy as np
import pytest

import aneforge as af
from test_mil_oracle import ORACLE, oracle_python  # noqa: F401  (fixture)
from test_ops import CASES

# coremltools 9.0 ops without numpy value inference (mil-oracle.md §2e):
# a program containing one cannot be evaluated, only validated.
NO_VALUE_INFERENCE = {"conv", "conv_transpose", "max_pool", "avg_pool", "resize_bilinear",
                      "resize_nearest_neighbor", "upsample_nearest_neighbor", "silu",
                      "batch_norm", "instance_norm", "local_response_norm"}

FP16_CASES = [c for c in CASES if "fp16" in c.modes]
IDS = [c.id for c in FP16_CASES]
DIALECTS = {"ios18": None, "ios16": "h13"}


def build(case):
    """The case's graph: (outputs, sim feeds)."""
    xs = case.data()
    if isinstance(case.build, tuple):  # image_input builds its own port
        _, shape, kw = case.build
        return [af.image_input(shape, **kw)], xs
    operands, feeds = [], []
    for a, x in zip(case.args, xs):
        if a.const:
            operands.append(x)
        else:
            operands.append(af.input(x.shape, dtype=a.dtype))
            feeds.append(x)
    y = case.build(*operands)
    return (list(y) if isinstance(y, (list, tuple)) else [y]), feeds


def run_many(python, jobs, tmp):
    path = tmp / "jobs.json"
    path.write_text(json.dumps(jobs))
    res = subprocess.run([python, str(ORACLE / "mil_check_many.py"), str(path)],
                         capture_output=True, text=True)
    try:
        return json.loads(res.stdout)
    except json.JSONDecodeError:
        pytest.fail("mil_check_many.py crashed:\n" + res.stderr[-4000:])


@pytest.fixture(scope="module")
def lowered(oracle_python, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("mil_lowering")
    results, jobs, where = {}, [], []
    for ci, case in enumerate(FP16_CASES):
        for dialect, target in DIALECTS.items():
            key = (case.id, dialect)
            try:
                outs, feeds = build(case)
                try:
                    net = af.compile(outs, target=target, precision="fp16", numerics=case.numerics)
                except af.TargetError as e:  # the op is not on that family
                    results[key] = {"skip": "not available on %s: %s" % (target, str(e).splitlines()[0])}
                    continue
                got = net(*feeds)
                got = list(got) if isinstance(got, tuple) else [got]
                plan = net.io_plan()
                pkg = tmp / ("%03d_%s.%s.mlpackage" % (ci, re.sub(r"\W", "_", case.id), dialect))
                net.save_mlpackage(str(pkg), with_text=False)
            except Exception as e:  # a lowering error is this case's failure
                results[key] = {"error": "%s: %s" % (type(e).__name__, e)}
                continue
            names = [p["name"] for p in net.inputs]
            mil_of = {p["name"]: p["mil_name"] for p in plan["inputs"]}
            inp = pkg.with_suffix(".in.npz")
            # Every port is fp16: integer inputs travel as integer-valued fp16.
            np.savez(inp, **{mil_of[n]: np.asarray(f).astype(np.float16) for n, f in zip(names, feeds)})
            out = inp.with_suffix(".out.npz")
            results[key] = {"net": net, "sim": got, "plan": plan, "out": out, "text_ok": net.mil()}
            jobs.append({"package": str(pkg), "inputs": str(inp), "outputs": str(out)})
            where.append(key)
    for key, rep in zip(where, run_many(oracle_python, jobs, tmp)):
        results[key]["report"] = rep
    return results


def get(lowered, cid, dialect):
    r = lowered[(cid, dialect)]
    if "skip" in r:
        pytest.skip(r["skip"])
    assert "error" not in r, r.get("error")
    return r


@pytest.mark.parametrize("dialect", list(DIALECTS))
@pytest.mark.parametrize("cid", IDS)
def test_package_loads_with_declared_types_equal_to_inferred(cid, dialect, lowered):
    r = get(lowered, cid, dialect)
    rep = r["report"]
    assert rep["valid"], rep["errors"]
    assert rep["specification_version"] == (9 if dialect == "ios18" else 7)
    # Every port of the program is fp16, named as the plan says.
    outs = {o["name"]: o["type"] for o in rep["outputs"]}
    assert sorted(outs) == sorted(p["mil_name"] for p in r["plan"]["outputs"])
    assert all(t.startswith("tensor<fp16,") or t == "fp16" for t in outs.values()), outs


def ulp16(x):
    x = np.abs(np.asarray(x, np.float64))
    e = np.floor(np.log2(np.maximum(x, 2.0**-14)))
    return 2.0 ** (e - 10)


@pytest.mark.parametrize("dialect", list(DIALECTS))
@pytest.mark.parametrize("cid", IDS)
def test_coremltools_evaluation_agrees_with_the_sim(cid, dialect, lowered):
    r = get(lowered, cid, dialect)
    rep = r["report"]
    assert rep["valid"], rep["errors"]
    if rep.get("eval_crash"):
        # coremltools 9.0's cumsum value inference breaks on exclusive=True
        # (np.zeros(shape, data)); the program itself loaded and validated.
        assert "cumsum" in rep["eval_crash"], rep["eval_crash"]
        pytest.skip("coremltools' own evaluation crashed: " + rep["eval_crash"])
    if not rep.get("evaluated"):
        op = (rep.get("eval_error") or "").split(" ")[0]
        assert op in NO_VALUE_INFERENCE, rep.get("eval_error")
        pytest.skip("coremltools cannot evaluate %s (no value inference); validated only" % op)
    theirs = dict(np.load(r["out"]))
    by_name = {o["name"]: s for o, s in zip(r["net"].outputs, r["sim"])}
    for p in r["plan"]["outputs"]:
        sim = np.asarray(by_name[p["name"]]).astype(np.float64)
        got = np.asarray(theirs[p["mil_name"]]).astype(np.float64)
        assert got.shape == sim.shape, (p["name"], got.shape, sim.shape)
        finite = np.isfinite(sim)
        assert np.array_equal(np.isnan(got), np.isnan(sim)) or not finite.all(), p["name"]
        # fp16 storage between ops on both sides, different association of
        # sums and different transcendental kernels: a few ulps of the value
        # plus 1% of the output's scale (sums accumulate in fp16 in the sim,
        # in float32/64 in numpy).
        scale = max(1.0, float(np.max(np.abs(sim[finite]), initial=0.0)))
        bound = 8 * ulp16(sim) + 1e-2 * scale
        err = np.abs(got - sim)
        bad = finite & ~(err <= bound)
        assert not bad.any(), "%s: worst |coremltools - sim| = %g at %s (bound %g)" % (
            p["name"], float(err[bad].max()), np.argwhere(bad)[0].tolist(), float(bound[bad].max()))


def test_every_case_lowers(lowered):
    """No op of the suite fails to lower (listed together, for a quick read)."""
    errors = {k: v["error"] for k, v in lowered.items() if "error" in v}
    assert not errors, errors


def test_weight_file_is_byte_identical_to_coremltools_writer(oracle_python, tmp_path):  # noqa: F811
    rng = np.random.default_rng(3)
    W = rng.standard_normal((16, 32)).astype(np.float16)
    b = rng.standard_normal(16).astype(np.float16)
    x = af.input((2, 32), name="x")
    y = af.linear(x, W, b)
    pkg = tmp_path / "lin.mlpackage"
    af.export(y, str(pkg))
    ours = (pkg / "Data/com.apple.CoreML/weights/weight.bin").read_bytes()
    # linear's weight is [out, in] = W, then the bias: the two blobs, in order.
    (tmp_path / "w.raw").write_bytes(W.view(np.uint16).tobytes())
    (tmp_path / "b.raw").write_bytes(b.view(np.uint16).tobytes())
    spec = {"blobs": [{"dtype": "fp16", "shape": [16, 32], "data": "w.raw"},
                      {"dtype": "fp16", "shape": [16], "data": "b.raw"}]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    res = subprocess.run([oracle_python, str(ORACLE / "blob_write.py"), "spec.json", "theirs.bin"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert ours == (tmp_path / "theirs.bin").read_bytes()
    # The text's one-file-per-blob weights beside the package hold the same data.
    w0 = (tmp_path / "lin.weights" / "w0.bin").read_bytes()
    assert w0[128:128 + W.nbytes] == W.view(np.uint8).tobytes()
    assert (tmp_path / "lin.mil").read_text().startswith("program(1.3)")


# ---- the API ----

def small_net(**kw):
    x = af.input((1, 8, 16), name="x")
    W = np.arange(16 * 4, dtype=np.float32).reshape(4, 16) / 64
    y = af.gelu(af.linear(x, W), mode="tanh")
    return af.compile(y, **kw)


def test_mil_text_dialect_follows_the_target():
    assert small_net().mil().startswith("program(1.3)")
    t = small_net(target="h13").mil()
    assert t.startswith("program(1.0)") and "func main<ios16>" in t
    assert 'tensor<string, []>("TANH_APPROXIMATION")' in t
    assert "func main<ios18>" in small_net(target="h16g").mil()


def test_io_plan_follows_the_engine_rules():
    a = af.input((1, 3, 5), name="zeta")
    b = af.input((1, 256, 1, 200), name="alpha")
    y = af.sum(a, axes=(-1,)) * 2.0
    z = b * 2.0
    plan = af.compile([y, z]).io_plan()
    ins = plan["inputs"]
    assert [p["mil_name"] for p in ins] == ["alpha", "zeta"]
    assert [p["binding"] for p in ins] == [0, 1]
    assert all(p["port_dtype"] == "fp16" and p["row_stride"] % 64 == 0 for p in ins + plan["outputs"])
    assert plan["input_surface_bytes"] == max(49152, max(p["bytes"] for p in ins))
    assert plan["output_surface_bytes"] >= 49152
    alpha = ins[0]
    assert (alpha["row_stride"], alpha["rows"]) == (448, 256)


def test_export_writes_package_text_and_weights(tmp_path):
    x = af.input((1, 4, 8, 8), name="image")
    W = np.ones((8, 4, 3, 3), np.float16) / 36
    y = af.relu(af.conv(x, W, pad=1))
    plan = af.export(y, str(tmp_path / "m.mlpackage"), target="h14")
    assert (tmp_path / "m.mlpackage" / "Manifest.json").is_file()
    assert (tmp_path / "m.mil").read_text().startswith("program(1.0)")
    assert (tmp_path / "m.weights" / "w0.bin").is_file()
    assert plan["opset"] == "ios16" and plan["inputs"][0]["name"] == "image"
    net = af.compile(y)
    net.save_mlpackage(str(tmp_path / "n.mlpackage"))
    assert (tmp_path / "n.mil").read_text() == net.mil()


def test_export_refuses_a_path_that_is_not_a_package_and_writes_nothing(tmp_path):
    """A file where the package would go is not overwritten, and neither
    the text nor the weights beside it are written (or replaced)."""
    (tmp_path / "m.mlpackage").write_text("mine")
    (tmp_path / "m.weights").mkdir()
    (tmp_path / "m.weights" / "keep.txt").write_text("mine too")
    y = af.relu(af.conv(af.input((1, 4, 8, 8)), np.ones((8, 4, 3, 3), np.float16) / 36, pad=1))
    with pytest.raises(af.AneForgeError, match="refusing to overwrite"):
        af.export(y, str(tmp_path / "m.mlpackage"), target="h14")
    assert (tmp_path / "m.mlpackage").read_text() == "mine"
    assert (tmp_path / "m.weights" / "keep.txt").read_text() == "mine too"
    assert not (tmp_path / "m.mil").exists()


def test_patch_conv_rewritten_for_a_target_exports_and_validates(oracle_python, tmp_path):  # noqa: F811
    """ViT's 16x16/s16 stem is wider than h16's kernel limit: the target's
    export carries the rewrite (space-to-depth + a 1x1 conv), and
    coremltools accepts every op of it with the types we declare."""
    rng = np.random.default_rng(4)
    x = af.input((1, 3, 32, 48), name="x")
    w = (rng.standard_normal((8, 3, 16, 16)) / 28).astype(np.float16)
    net = af.compile(af.conv(x, w, np.ones(8, np.float16), stride=16), target="h16")
    text = net.mil()
    assert "func main<ios18>" in text and "transpose(" in text
    assert "tensor<fp16, [8, 768, 1, 1]> weight" in text and "16, 16]> weight" not in text
    pkg = tmp_path / "patch.mlpackage"
    net.save_mlpackage(str(pkg), with_text=False)
    np.savez(tmp_path / "in.npz", x=rng.standard_normal((1, 3, 32, 48)).astype(np.float16))
    rep = run_many(oracle_python, [{"package": str(pkg), "inputs": str(tmp_path / "in.npz"),
                                    "outputs": str(tmp_path / "out.npz")}], tmp_path)[0]
    assert rep["valid"], rep["errors"]
    # conv has no value inference in coremltools 9.0: validated, not evaluated
    assert rep.get("evaluated") or rep.get("eval_error", "").split(" ")[0] in NO_VALUE_INFERENCE, rep


def test_lowering_notes_report_quirk_rewrites():
    x = af.input((2, 16), name="x")
    y = af.layer_norm(x, eps=1e-12)
    plan = af.compile(y).io_plan()
    assert any("clamped" in n for n in plan["notes"]), plan["notes"]


def test_ane_backend_off_a_mac_is_a_clear_error():
    x = af.input((2, 2))
    with pytest.raises(af.BackendUnavailableError, match="macOS"):
        af.compile(x * 2.0, backend="ane")
    assert af.compile(x * 2.0).backend == "sim"


# ---- training graphs: the backward ops ----

GRAD_ACTS = ["relu", "relu6", "sigmoid", "tanh", "silu", "softplus", "exp", "sqrt", "abs",
             "leaky_relu", "elu", "gelu", "gelu_tanh", "square", "log", "reciprocal", "clip"]


def grad_graph(act):
    """d/dp sum(act(x * p)): the UnaryGrad of `act` in an exported program."""
    x = af.input((4, 8), name="x")
    p = af.parameter(np.random.default_rng(0).uniform(0.5, 1.5, (4, 8)).astype(np.float32))
    z = x * p
    if act == "clip":
        y = af.clip(z, -0.5, 0.5)
    elif act == "gelu_tanh":
        y = af.gelu(z, mode="tanh")
    else:
        y = getattr(af, act)(z) if hasattr(af, act) else getattr(z, act)()
    return af.grad(af.sum(y), [p])[0]


@pytest.mark.parametrize("act", GRAD_ACTS)
def test_activation_gradients_lower_and_evaluate_like_the_sim(act, oracle_python, tmp_path):  # noqa: F811
    net = af.compile(grad_graph(act))
    pkg = tmp_path / "g.mlpackage"
    net.save_mlpackage(str(pkg), with_text=False)
    x = np.random.default_rng(1).uniform(0.2, 2.0, (4, 8)).astype(np.float16)
    x[0, :4] *= -1  # both sides of the kinks (positive-only ops stay positive below)
    if act in ("sqrt", "log", "reciprocal"):
        x = np.abs(x)
    np.savez(tmp_path / "in.npz", x=x)
    rep = run_many(oracle_python, [{"package": str(pkg), "inputs": str(tmp_path / "in.npz"),
                                    "outputs": str(tmp_path / "out.npz")}], tmp_path)[0]
    assert rep["valid"], rep["errors"]
    if not rep.get("evaluated"):
        assert rep.get("eval_error", "").split(" ")[0] in NO_VALUE_INFERENCE, rep.get("eval_error")
        pytest.skip("coremltools cannot evaluate " + rep["eval_error"])
    sim = np.asarray(net(x)).astype(np.float64)
    got = np.asarray(dict(np.load(tmp_path / "out.npz"))["output0"]).astype(np.float64)
    bound = 8 * ulp16(sim) + 1e-2 * max(1.0, float(np.abs(sim).max()))
    assert np.all(np.abs(got - sim) <= bound), (act, float(np.abs(got - sim).max()))


def test_gather_gradient_scatter_add_lowers_and_evaluates_like_the_sim(oracle_python, tmp_path):  # noqa: F811
    """The embedding backward (ScatterAdd, repeated indices) as a one-hot
    matmul, against the sim through coremltools."""
    x = af.input((2, 3, 4), name="x")
    table = af.parameter(np.random.default_rng(2).standard_normal((6, 4)).astype(np.float32))
    e = af.gather(table, [[1, 3, 1], [5, 0, 1]], axis=0)  # [2, 3, 4], index 1 three times
    g = af.grad(af.sum(e * x), [table])[0]
    net = af.compile(g)
    pkg = tmp_path / "s.mlpackage"
    net.save_mlpackage(str(pkg), with_text=False)
    assert "matmul" in net.mil()
    xv = np.random.default_rng(3).standard_normal((2, 3, 4)).astype(np.float16)
    np.savez(tmp_path / "in.npz", x=xv)
    rep = run_many(oracle_python, [{"package": str(pkg), "inputs": str(tmp_path / "in.npz"),
                                    "outputs": str(tmp_path / "out.npz")}], tmp_path)[0]
    assert rep["valid"] and rep.get("evaluated"), (rep["errors"], rep.get("eval_error"))
    sim = np.asarray(net(xv)).astype(np.float64)
    got = np.asarray(dict(np.load(tmp_path / "out.npz"))["output0"]).astype(np.float64)
    assert got.shape == sim.shape == (6, 4)
    assert np.allclose(got, sim, atol=8 * ulp16(sim).max())
