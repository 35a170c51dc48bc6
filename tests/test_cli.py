"""The `aneforge` command, end to end on small ONNX models (ONNX Runtime as
the reference for `run`)."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]


def aneforge_bin() -> str:
    for cand in (shutil.which("aneforge"), ROOT / "target" / "release" / "aneforge"):
        if cand and Path(cand).exists():
            return str(cand)
    pytest.fail("the aneforge command is not built; run scripts/install.sh")


def cli(*args, ok=True):
    r = subprocess.run([aneforge_bin(), *map(str, args)], capture_output=True, text=True, timeout=300)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def small_cnn(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((8, 3, 3, 3)) * 0.2).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32) * 0.1
    fc = (rng.standard_normal((10, 8)) * 0.3).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(fc, "fc")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path = tmp_path_factory.mktemp("cli") / "small.onnx"
    onnx.save(model, path)
    return path


def test_targets_lists_all_28():
    out = cli("targets").stdout
    names = [line.split()[0] for line in out.splitlines()[1:] if line.strip()]
    assert len(names) == 28 and "h16s" in names and "u3" in names


@pytest.mark.parametrize("command", ["targets", "info"])
def test_a_closed_pipe_ends_the_command_quietly(command, small_cnn):
    # `aneforge targets | head -1`: the reader is gone before everything is
    # written. Closing the read end before the command starts makes that
    # deterministic (with `head` it depends on who is faster).
    args = [command] + ([small_cnn] if command == "info" else [])
    r, w = os.pipe()
    os.close(r)
    try:
        res = subprocess.run([aneforge_bin(), *map(str, args)], stdout=w, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(w)
    assert "panicked" not in res.stderr, res.stderr
    assert res.returncode == 0, res.stderr


def test_info_lists_ops_with_support(small_cnn):
    out = cli("info", small_cnn).stdout
    for op in ("Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm"):
        assert op in out
    assert "every op is supported" in out


def test_info_names_unsupported_ops(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("NonMaxSuppression", ["x", "y"], ["z"])],
        "nms",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4]), helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4])],
        [helper.make_tensor_value_info("z", TensorProto.INT64, [1, 3])],
    )
    p = tmp_path / "nms.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), p)
    out = cli("info", p).stdout
    assert "NonMaxSuppression" in out and "NO" in out


def test_validate_and_estimate(small_cnn):
    assert "compiles for h16" in cli("validate", small_cnn, "--target", "h16").stdout
    r = cli("validate", small_cnn, "--target", "nope", ok=False)
    assert r.returncode != 0 and "did you mean" in r.stderr.lower() or "valid" in r.stderr.lower()
    out = cli("estimate", small_cnn, "--target", "h17s").stdout
    assert "projection" in out and "total" in out and "conv" in out


def test_validate_rewrites_a_too_wide_patch_conv(tmp_path):
    # ViT's stem (16x16, stride 16) is wider than h16's kernel limit of 15
    w = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32) / 28
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[16, 16], strides=[16, 16])],
        "patch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2, 2])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    p = tmp_path / "patch.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), p)
    out = cli("validate", p, "--target", "h16").stdout
    assert "compiles for h16 (1 rewrite(s))" in out and "1x1 conv" in out


def test_validate_refuses_families_without_mil(small_cnn):
    r = cli("validate", small_cnn, "--target", "h11", ok=False)
    assert r.returncode != 0 and "violation" in r.stdout


def test_compile_writes_mil_weights_and_package(small_cnn, tmp_path):
    out = tmp_path / "out"
    cli("compile", small_cnn, "--target", "h16", "-o", out)
    assert (out / "model.mlpackage" / "Manifest.json").exists()
    text = (out / "model.mil").read_text()
    assert text.startswith("program(1.3)") and "conv(" in text


def test_run_matches_onnxruntime(small_cnn, tmp_path):
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float16)
    np.save(tmp_path / "x.npy", x)
    out = cli("run", small_cnn, "--input", tmp_path / "x.npy", "--repeat", "2", "--save", tmp_path / "res").stdout
    assert "sim latency" in out
    got = np.load(tmp_path / "res" / "logits.npy").astype(np.float32)
    ref = ort.InferenceSession(str(small_cnn), providers=["CPUExecutionProvider"]).run(None, {"x": x.astype(np.float32)})[0]
    cos = float((got * ref).sum() / np.linalg.norm(got) / np.linalg.norm(ref))
    assert cos >= 0.9999, cos


def test_run_refuses_a_wrong_input_shape(small_cnn, tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((1, 3, 8, 8), np.float16))
    r = cli("run", small_cnn, "--input", tmp_path / "bad.npy", ok=False)
    assert r.returncode != 0 and "expects" in r.stderr


def test_a_corrupt_model_is_an_error_not_a_crash(tmp_path):
    p = tmp_path / "corrupt.onnx"
    p.write_bytes(b"\x08\x07garbage" * 10)
    r = cli("info", p, ok=False)
    assert r.returncode == 1 and "panicked" not in r.stderr
