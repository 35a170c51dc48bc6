"""af.load_onnx / af.onnx_graph / af.onnx_coverage on the reference models,
with ONNX Runtime (fp32) as the reference."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import aneforge as af
from onnx_models import cosine, materialized, onnx_models_dir, ort_reference, top1  # noqa: F401 (fixtures)


@pytest.mark.parametrize("name", ["resnet18", "vit_b_16"])
def test_reference_model_matches_onnxruntime(name, materialized, ort_reference):
    path = materialized(name)
    feeds, expected = ort_reference(name, count=2)
    with af.load_onnx(str(path)) as net:
        for feed, want in zip(feeds, expected):
            got = net(**{k: v.astype(np.float16) for k, v in feed.items()})
            got = got.astype(np.float32)
            assert cosine(got, want[0]) >= 0.9999
            assert (top1(got) == top1(want[0])).all()


def test_vit_compiles_for_a_target_with_its_patch_conv_rewritten(materialized, ort_reference):
    # the 16x16/s16 patch conv is above every target's kernel-width limit
    path = materialized("vit_b_16")
    feeds, expected = ort_reference("vit_b_16", count=2)
    with af.load_onnx(str(path), target="h16") as net:
        assert net.target == "h16" and net.report.ok
        assert len(net.report.warnings) == 1 and "1x1 conv" in net.report.warnings[0]
        got = net(**{k: v.astype(np.float16) for k, v in feeds[0].items()}).astype(np.float32)
        assert cosine(got, expected[0][0]) >= 0.9999


def test_onnx_graph_returns_tensors_for_further_building(materialized):
    ins, outs = af.onnx_graph(str(materialized("resnet18")))
    assert [t.shape for t in ins] == [[1, 3, 224, 224]]
    assert outs[0].shape == [1, 1000]
    probs = af.softmax(outs[0], axis=-1)
    net = af.compile(probs)
    p = net(np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float16))
    assert abs(float(p.astype(np.float32).sum()) - 1.0) < 1e-2


def test_coverage_lists_every_op(onnx_models_dir):
    from onnx_models import models_dir

    c = af.onnx_coverage(str(models_dir() / "vit_b_16.onnx"))
    ops = {row["op"]: row for row in c.ops}
    for op in ("Conv", "MatMul", "Softmax", "LayerNormalization", "Erf", "Gather"):
        assert ops[op]["supported"] and ops[op]["count"] >= 1
    assert c.supported and c.unsupported == []


def unsupported_model(tmp_path):
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("NonMaxSuppression", ["r", "s"], ["n"]),
        helper.make_node("RoiAlign", ["r", "s", "i"], ["q"]),
    ]
    graph = helper.make_graph(
        nodes,
        "gaps",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 1, 4]),
            helper.make_tensor_value_info("i", TensorProto.INT64, [1]),
        ],
        [helper.make_tensor_value_info("n", TensorProto.INT64, [1, 3]), helper.make_tensor_value_info("q", TensorProto.FLOAT, [1])],
    )
    p = tmp_path / "gaps.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), p)
    return p


def test_unsupported_model_raises_one_error_listing_all_gaps(tmp_path):
    p = unsupported_model(tmp_path)
    c = af.onnx_coverage(str(p))
    assert set(c.unsupported) == {"NonMaxSuppression", "RoiAlign"} and not c.supported
    with pytest.raises(af.UnsupportedOpError) as e:
        af.load_onnx(str(p))
    assert "NonMaxSuppression" in str(e.value) and "RoiAlign" in str(e.value)


def test_corrupt_or_missing_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x0a\xff\xff\xff\xff garbage")
    with pytest.raises(af.FileFormatError, match="bad.onnx"):
        af.load_onnx(str(bad))
    with pytest.raises(af.FileFormatError, match="missing.onnx"):
        af.onnx_coverage(str(tmp_path / "missing.onnx"))


def test_compile_options_pass_through(materialized):
    net = af.load_onnx(str(materialized("resnet18")), precision="fp32")
    assert net.precision == "fp32"
    with pytest.raises(af.TargetError):
        af.load_onnx(str(materialized("resnet18")), target="h99")
