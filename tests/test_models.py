"""af.models: the natively built torchvision zoo against ONNX Runtime.

The reference models in ``shared/models`` are PyTorch-exporter output with
fixed random weights. Their initializers are turned back into a torchvision
state dict (safetensors), the native model is built from that file, and its
logits are compared with ONNX Runtime running the ONNX model on the same
inputs: the oracle is ORT, not the native graph. Where ``af.load_onnx``
exists, the native and ONNX-imported programs are compared too.

Turning the ONNX weights back into torchvision names:

* ResNet: the exporter folded each BatchNorm into its conv (``X.weight`` and
  ``X.weight_bias``), so the state dict gets the folded conv weight and a
  BatchNorm with unit scale, zero mean and the folded bias; the loader's
  fold then reproduces the exporter's conv exactly (up to f32 rounding).
* ViT: ``in_proj_weight`` and the MLP weights were stored transposed as
  anonymous MatMul initializers (three per layer, in graph order); the class
  token is ``expand``. The exporter dropped the conv_proj, out_proj and head
  biases (their graph adds none), so they are zeros here.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import aneforge as af
from onnx_models import cosine, materialized, onnx_models_dir, ort_reference, top1  # noqa: F401 (fixtures)


def write_safetensors(path, tensors: dict) -> None:
    """A minimal safetensors writer (float32 only), so the test needs no extra package."""
    header, blobs, offset = {}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a, dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a.tobytes())
        offset += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def onnx_initializers(path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return model.graph, {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def resnet_state_dict(path) -> dict:
    _, inits = onnx_initializers(path)
    sd = {}
    for name, a in inits.items():
        if name.endswith(".weight") and a.ndim == 4:
            conv = name[: -len(".weight")]
            if conv.endswith("downsample.0"):
                bn = conv[:-1] + "1"
            else:
                head, _, last = conv.rpartition("conv")
                bn = head + "bn" + last
            bias = inits[name + "_bias"]
            sd[name] = a
            sd[bn + ".weight"] = np.ones_like(bias)
            sd[bn + ".bias"] = bias
            sd[bn + ".running_mean"] = np.zeros_like(bias)
            sd[bn + ".running_var"] = np.full_like(bias, 1.0 - 1e-5)
    sd["fc.weight"], sd["fc.bias"] = inits["fc.weight"], inits["fc.bias"]
    return sd


def vit_state_dict(path) -> dict:
    graph, inits = onnx_initializers(path)
    sd = {k: v for k, v in inits.items() if k.startswith(("conv_proj", "encoder.", "heads."))}
    sd["class_token"] = inits["expand"]
    matmul_weights = [n.input[1] for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    assert len(matmul_weights) == 36, len(matmul_weights)
    for layer in range(12):
        pre = f"encoder.layers.encoder_layer_{layer}"
        qkv, fc1, fc2 = (inits[n].T for n in matmul_weights[3 * layer : 3 * layer + 3])
        sd[f"{pre}.self_attention.in_proj_weight"] = qkv
        sd[f"{pre}.mlp.0.weight"] = fc1
        sd[f"{pre}.mlp.3.weight"] = fc2
        sd.setdefault(f"{pre}.self_attention.out_proj.bias", np.zeros(768, np.float32))
    sd.setdefault("conv_proj.bias", np.zeros(768, np.float32))
    sd.setdefault("heads.head.bias", np.zeros(1000, np.float32))
    return sd


CASES = {"resnet18": (af.models.resnet18, resnet_state_dict), "vit_b_16": (af.models.vit_b_16, vit_state_dict)}


@pytest.mark.parametrize("name", ["resnet18", "vit_b_16"])
def test_native_model_matches_onnxruntime(name, materialized, ort_reference, tmp_path):
    builder, to_state_dict = CASES[name]
    onnx_path = materialized(name)
    weights = tmp_path / f"{name}.safetensors"
    write_safetensors(weights, to_state_dict(onnx_path))
    net = builder(weights)
    feeds, expected = ort_reference(name, count=2)
    for feed, (ref,) in zip(feeds, expected):
        ours = np.asarray(net(feed["input"]), np.float32)
        c = cosine(ours, ref)
        print(f"{name}: cosine to ONNX Runtime {c:.6f}, top-1 {top1(ours)} vs {top1(ref)}")
        assert c >= 0.9999
        assert (top1(ours) == top1(ref)).all()
    if hasattr(af, "load_onnx"):
        imported = af.load_onnx(str(onnx_path))
        x = feeds[0]["input"]
        c = cosine(np.asarray(net(x), np.float32), np.asarray(imported(x), np.float32))
        print(f"{name}: cosine native vs af.load_onnx {c:.6f}")
        assert c >= 0.9999


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "vit_b_16"])
def test_random_weights_are_seeded_and_finite(name):
    build = getattr(af.models, name)
    y = build(seed=3, compile=False)
    assert tuple(y.shape) == (1, 1000)
    if name in ("resnet18", "resnet50"):
        x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
        a, b = af.compile(y)(x), build(seed=3)(x)
        assert np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, build(seed=4)(x))


def test_batch_is_a_build_argument():
    net = af.models.resnet18(batch=2)
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    y = net(x)
    assert y.shape == (2, 1000)
    one = af.models.resnet18()(x[1:])
    assert cosine(y[1], one[0]) >= 0.9999


def test_weight_file_errors_name_the_file_and_tensor(tmp_path):
    with pytest.raises(af.FileFormatError, match="nope.safetensors"):
        af.models.resnet18(tmp_path / "nope.safetensors")
    partial = tmp_path / "partial.safetensors"
    write_safetensors(partial, {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)})
    with pytest.raises(af.FileFormatError, match=r"partial\.safetensors.*bn1\.weight"):
        af.models.resnet18(partial)
    wrong = tmp_path / "wrong.safetensors"
    write_safetensors(wrong, {"conv1.weight": np.zeros((64, 3, 3, 3), np.float32)})
    with pytest.raises(af.FileFormatError, match=r"conv1\.weight.*\[64, 3, 7, 7\]"):
        af.models.resnet18(wrong)
    with pytest.raises(ValueError, match="resnet18"):
        af._aneforge._vision_model("resnet19")
