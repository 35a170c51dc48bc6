"""Bad input gets a clear exception, never a crash.

For each op family: the exception class, and a message that names the op,
the shapes involved and the user's file:line — this file and the line of
the building call (each lambda below sits on the line it builds on, and the
inputs are built elsewhere, so a message pointing at where `x` was created
would fail). Then the Net's call-time checks, NaN in weights, huge shapes,
and a sweep asserting that no Rust panic reaches Python.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import aneforge as af

HERE = os.path.basename(__file__)

X4 = af.input((1, 3, 8, 8))
X3 = af.input((2, 3, 5))
X2 = af.input((3, 4))
U8 = af.input((3,), dtype="uint8")
W3 = np.ones((2, 3, 3, 3), np.float32)

S, D, V, T, U, R = af.ShapeError, af.DTypeError, ValueError, TypeError, af.UnsupportedOpError, af.ResourceError

# id, exception class, the building call (one line), words the message must contain
BUILD_ERRORS = [
    # elementwise
    ("add-broadcast", S, lambda: X2 + af.input((5,)), ["add", "[3, 4]", "[5]"]),
    ("mul-broadcast-fn", S, lambda: af.mul(X3, X2), ["mul", "[2, 3, 5]", "[3, 4]"]),
    ("where-broadcast", S, lambda: af.where(X2 > 0, X2, af.input((5,))), ["where", "[3, 4]", "[5]"]),
    ("exp-uint8", D, lambda: af.exp(U8), ["exp", "uint8[3]"]),
    ("add-mixed_dtypes", D, lambda: U8 + af.input((3,)), ["add", "uint8[3]", "fp16[3]"]),
    ("gelu-mode", V, lambda: af.gelu(X2, "fast"), ["gelu", "fast"]),
    ("add-fractional_scalar_to_uint8", D, lambda: U8 + 0.5, ["0.5", "uint8"]),
    ("mul-out_of_range_scalar_to_uint8", D, lambda: af.mul(U8, 300), ["300", "uint8"]),
    # linear algebra
    ("matmul-inner", S, lambda: X2 @ af.input((5, 2)), ["matmul", "[3, 4]", "[5, 2]"]),
    ("matmul-1d", S, lambda: af.matmul(af.input((3,)), af.input((4,))), ["matmul", "[3]", "[4]"]),
    ("matmul-batch", S, lambda: af.input((2, 3, 4)) @ af.input((3, 4, 2)), ["matmul", "[2, 3, 4]", "[3, 4, 2]"]),
    ("matmul-bool", D, lambda: (X2 > 0) @ X2.T, ["matmul", "bool[3, 4]"]),
    ("linear-features", S, lambda: af.linear(X2, np.ones((2, 5))), ["linear", "[3, 4]", "[2, 5]"]),
    ("linear-rank", S, lambda: af.linear(X2, np.ones((5,))), ["linear", "[5]"]),
    ("einsum-rank", V, lambda: af.einsum("ij,jk->ik", X2, X3), ["einsum", "ij,jk->ik", "rank 3"]),
    ("einsum-sizes", V, lambda: af.einsum("ij,jk->ik", X2, af.input((5, 2))), ["einsum", "'j'", "4", "5"]),
    # convolution
    ("conv-rank", S, lambda: af.conv(X2, W3), ["conv", "[3, 4]"]),
    ("conv-channels", S, lambda: af.conv(X4, np.ones((2, 4, 3, 3))), ["conv", "[1, 3, 8, 8]", "[2, 4, 3, 3]"]),
    ("conv-groups", S, lambda: af.conv(X4, W3, groups=2), ["conv", "groups=2", "3"]),
    ("conv-weight_rank", S, lambda: af.conv(X4, np.ones((2, 3, 3))), ["conv", "[2, 3, 3]"]),
    ("conv-kernel_too_big", S, lambda: af.conv(X4, np.ones((2, 3, 9, 9))), ["conv", "9", "8"]),
    ("conv-bias", S, lambda: af.conv(X4, W3, b=np.ones(3)), ["conv", "bias", "[2]", "[3]"]),
    ("conv-stride0", V, lambda: af.conv(X4, W3, stride=0), ["conv", "stride"]),
    ("conv1d-channels", S, lambda: af.conv(X3, np.ones((4, 2, 3))), ["conv", "[2, 3", "[4, 2"]),
    ("conv_transpose-channels", S, lambda: af.conv_transpose(X4, np.ones((4, 2, 3, 3))), ["conv_transpose", "[1, 3, 8, 8]", "[4, 2, 3, 3]"]),
    ("conv_transpose-same", V, lambda: af.conv_transpose(X4, np.ones((3, 2, 3, 3)), pad="same"), ["conv_transpose", "same"]),
    ("conv_transpose-pad_eats_output", S, lambda: af.conv_transpose(af.input((1, 1, 1, 1)), np.ones((1, 1, 1, 1)), pad=1), ["conv_transpose", "padding"]),
    # pooling / resize
    ("max_pool-rank", S, lambda: af.max_pool(X2, 2), ["max_pool", "[3, 4]"]),
    ("max_pool-kernel_too_big", S, lambda: af.max_pool(X4, 9), ["max_pool", "[9, 9]", "8"]),
    ("max_pool-kernel0", V, lambda: af.max_pool(X4, 0), ["max_pool", "kernel"]),
    ("avg_pool-pad_too_big", V, lambda: af.avg_pool(X4, 2, pad=3), ["avg_pool", "padding", "[2, 2]"]),
    ("global_avg_pool-rank", S, lambda: af.global_avg_pool(X2), ["global_avg_pool", "[3, 4]"]),
    ("upsample_nearest-rank", S, lambda: af.upsample_nearest(X2, 2), ["upsample_nearest", "[3, 4]"]),
    ("upsample_nearest-scale0", S, lambda: af.upsample_nearest(X4, 0), ["upsample_nearest", "[0, 0]"]),
    ("resize_bilinear-rank", S, lambda: af.resize_bilinear(X2, (4, 4)), ["resize_bilinear", "[3, 4]"]),
    ("resize_bilinear-size0", V, lambda: af.resize_bilinear(X4, (0, 4)), ["resize_bilinear", "[0, 4]"]),
    ("crop-everything", S, lambda: af.crop(X4, [(4, 4)]), ["[1, 3, 8, 8]", "empty"]),
    # reductions / softmax
    ("sum-axis_range", S, lambda: af.sum(X2, axes=2), ["sum", "axis 2", "rank 2"]),
    ("mean-axis_twice", S, lambda: X2.mean((1, -1)), ["mean", "twice"]),
    ("cumsum-axis", S, lambda: af.cumsum(X2, 3), ["cumsum", "axis 3", "rank 2"]),
    ("softmax-axis", S, lambda: af.softmax(X2, 2), ["softmax", "axis 2", "rank 2"]),
    # normalisation
    ("layer_norm-gamma", S, lambda: af.layer_norm(X2, gamma=np.ones(3)), ["layer_norm", "gamma", "[3]", "[4]"]),
    ("layer_norm-axes", S, lambda: af.layer_norm(X2, axes=(5,)), ["layer_norm", "axis 5"]),
    ("layer_norm-no_axes", V, lambda: af.layer_norm(X2, axes=()), ["layer_norm", "empty"]),
    ("rms_norm-gamma", S, lambda: af.rms_norm(X3, gamma=np.ones(4)), ["rms_norm", "[4]", "[5]"]),
    ("group_norm-groups", S, lambda: af.group_norm(X4, 2), ["group_norm", "groups=2", "[1, 3, 8, 8]"]),
    ("group_norm-rank", S, lambda: af.group_norm(af.input((4,)), 2), ["group_norm", "[4]"]),
    ("instance_norm-gamma", S, lambda: af.instance_norm(X4, np.ones(4)), ["group_norm", "[4]", "[1, 3, 8, 8]"]),
    ("batch_norm-stats", S, lambda: af.batch_norm(X4, np.zeros(4), np.ones(3)), ["batch_norm", "[4]", "[1, 3, 8, 8]"]),
    ("local_response_norm-rank", S, lambda: af.local_response_norm(X2, 3), ["local_response_norm", "[3, 4]"]),
    # shape ops
    ("reshape-infer", S, lambda: X2.reshape(5, -1), ["reshape", "[5, -1]", "[3, 4]"]),
    ("reshape-count", S, lambda: af.reshape(X2, (5, 3)), ["reshape", "[3, 4]", "[5, 3]"]),
    ("reshape-zero", S, lambda: X2.reshape(0, 12), ["reshape", "[0, 12]"]),
    ("transpose-duplicate", S, lambda: X2.transpose(0, 0), ["transpose", "[0, 0]", "[3, 4]"]),
    ("transpose-length", S, lambda: af.transpose(X2, (0, 1, 2)), ["transpose", "[0, 1, 2]", "rank 2"]),
    ("squeeze-not_one", S, lambda: X2.squeeze(0), ["squeeze", "[3, 4]"]),
    ("expand_dims-axis", S, lambda: X2.expand_dims(5), ["expand_dims", "axis 5"]),
    ("concat-shapes", S, lambda: af.concat([X2, af.input((3, 5))]), ["concat", "[3, 4]", "[3, 5]"]),
    ("concat-ranks", S, lambda: af.concat([X2, X3]), ["concat", "[3, 4]", "[2, 3, 5]"]),
    ("concat-empty", V, lambda: af.concat([]), ["concat"]),
    ("stack-shapes", S, lambda: af.stack([X2, af.input((3, 5))]), ["stack", "[3, 4]", "[3, 5]"]),
    ("split-n", S, lambda: af.split(X2, 5, axis=1), ["split", "[3, 4]", "5"]),
    ("split-sizes", S, lambda: af.split(X2, [1, 2], axis=1), ["split", "[1, 2]", "[3, 4]"]),
    ("slice-step0", V, lambda: af.slice(X2, [0], [2], [0]), ["slice", "step"]),
    ("slice-too_many", S, lambda: af.slice(X2, [0, 0, 0], [1, 1, 1]), ["slice", "[3, 4]"]),
    ("index-empty", S, lambda: X2[2:1], ["slice", "[3, 4]", "empty"]),
    ("tile-reps", S, lambda: af.tile(X2, (2,)), ["tile", "[2]", "[3, 4]"]),
    ("broadcast_to", S, lambda: af.broadcast_to(X2, (3, 5)), ["broadcast_to", "[3, 4]", "[3, 5]"]),
    ("pad-pairs", S, lambda: af.pad(X2, [(1, 1)] * 3), ["pad", "[3, 4]"]),
    ("pad-reflect_too_wide", S, lambda: af.pad(X2, [(5, 5)], mode="reflect"), ["pad", "reflect", "4"]),
    ("pixel_shuffle-channels", S, lambda: af.pixel_shuffle(X4, 2), ["pixel_shuffle", "3"]),
    ("pixel_unshuffle-rank", S, lambda: af.pixel_unshuffle(X2, 2), ["pixel_unshuffle", "[3, 4]"]),
    ("space_to_depth-size", S, lambda: af.space_to_depth(af.input((1, 3, 5, 5)), 2), ["space_to_depth", "[1, 3, 5, 5]"]),
    ("depth_to_space-channels", S, lambda: af.depth_to_space(X4, 2), ["depth_to_space", "3"]),
    ("gather-out_of_range", S, lambda: af.gather(X2, [5]), ["gather", "5", "[3, 4]"]),
    ("gather-axis", S, lambda: af.gather(X2, [0], axis=2), ["gather", "axis"]),
    # types and I/O
    ("cast-unknown", D, lambda: af.cast(X2, "int64"), ["int64"]),
    ("input-fp32_port", D, lambda: af.input((2,), dtype="fp32"), ["input", "fp32"]),
    ("input-negative_dim", S, lambda: af.input((2, -3)), ["input", "[2, -3]"]),
    ("input-zero_dim", S, lambda: af.input((0, 3)), ["input", "[0, 3]"]),
    ("input-no_axes", S, lambda: af.input(()), ["input"]),
    ("input-huge", R, lambda: af.input((1 << 20, 1 << 20)), ["input", "[1048576, 1048576]", "2.0 TiB"]),
    ("matmul-huge_output", R, lambda: af.input((100000, 1)) @ af.input((1, 100000)), ["matmul", "[100000, 100000]", "18.6 GiB"]),
    ("tile-huge", R, lambda: af.tile(X2, (100000, 100000)), ["tile", "GiB"]),
    ("image_input-channels", S, lambda: af.image_input((1, 3, 4, 4), scale=[1, 2]), ["image_input", "2", "3"]),
]


@pytest.mark.parametrize("exc,build,words", [pytest.param(e, b, w, id=i) for i, e, b, w in BUILD_ERRORS])
def test_build_error_names_op_shapes_and_line(exc, build, words):
    with pytest.raises(exc) as info:
        build()
    msg = str(info.value)
    for word in words:
        assert word in msg, f"{word!r} missing from: {msg}"
    line = build.__code__.co_firstlineno
    assert f"{HERE}:{line})" in msg, f"message does not point at {HERE}:{line}: {msg}"
    assert isinstance(info.value, af.AneForgeError) or exc in (ValueError, TypeError)


# Argument errors caught in the binding before the core sees them: class and wording.
ARG_ERRORS = [
    ("conv-negative_pad", V, lambda: af.conv(X4, W3, pad=-1), ["pad", "-1", f"{HERE}:"]),
    ("conv-stride_triple", V, lambda: af.conv(X4, W3, stride=(1, 2, 3)), ["stride", f"{HERE}:"]),
    ("conv-pad_word", V, lambda: af.conv(X4, W3, pad="full"), ["full", "same"]),
    ("conv-string_weights", T, lambda: af.conv(X4, "abc"), ["W", "numeric"]),
    ("conv-object_weights", T, lambda: af.conv(X4, np.array([[object()]])), ["W", "numeric"]),
    ("add-string", T, lambda: X2 + "a", ["numeric"]),
    ("add-None", T, lambda: X2 + None, ["NoneType"]),
    ("input-shape_not_ints", T, lambda: af.input("abc"), ["shape"]),
    ("input-float_dims", T, lambda: af.input((2.5, 3)), ["shape"]),
    ("input-unknown_dtype", D, lambda: af.input((2,), dtype="float64x"), ["float64x"]),
    ("pad-mode", V, lambda: af.pad(X2, [(1, 1)], mode="wrap"), ["pad", "wrap"]),
    ("gather-float_indices", T, lambda: af.gather(X2, [0.5]), ["gather", "integers"]),
    ("gather-tensor_indices", U, lambda: af.gather(X2, X2), ["gather", "constant"]),
    ("index-out_of_bounds", IndexError, lambda: X2[5], ["5", "axis 0", "3"]),
    ("index-too_many", IndexError, lambda: X2[0, 0, 0], ["rank 2"]),
    ("index-tensor", T, lambda: X2[X2], ["gather"]),
    ("tensor-truth_value", T, lambda: bool(X2 > 0), ["truth value"]),
    ("compile-not_tensors", T, lambda: af.compile([1, 2]), ["compile"]),
    ("compile-nothing", V, lambda: af.compile([]), ["compile"]),
    ("compile-precision", V, lambda: af.compile(X2, precision="fp8"), ["fp8"]),
    ("compile-numerics", V, lambda: af.compile(X2, numerics="x"), ["numerics"]),
    ("compile-ane_off_mac", af.BackendUnavailableError, lambda: af.compile(X2, backend="ane"), ["ane", "sim"]),
]


@pytest.mark.parametrize("exc,build,words", [pytest.param(e, b, w, id=i) for i, e, b, w in ARG_ERRORS])
def test_argument_error(exc, build, words):
    with pytest.raises(exc) as info:
        build()
    for word in words:
        assert word in str(info.value), f"{word!r} missing from: {info.value}"


def test_integral_scalars_keep_working_on_integer_tensors():
    out = af.compile(af.add(U8, 2))(np.array([1, 2, 250], np.uint8))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [3, 4, 252])


def test_exception_hierarchy():
    for cls in (af.ShapeError, af.DTypeError, af.UnsupportedOpError, af.TargetError, af.CompileError, af.BackendUnavailableError, af.ResourceError):
        assert issubclass(cls, af.AneForgeError)
    assert issubclass(af.ShapeError, ValueError) and issubclass(af.DTypeError, TypeError)


# ------------------------------------------------------------ the Net at call time


@pytest.fixture
def net2():
    a = af.input((2, 3), name="a")
    b = af.input((3,), dtype="uint8", name="b")
    net = af.compile([a * 2, af.cast(b, "fp16") + 1])
    yield net
    net.release()


A = np.arange(6, dtype=np.float16).reshape(2, 3)
B = np.array([1, 2, 250], np.uint8)


def test_multiple_outputs_return_a_tuple(net2):
    out = net2(A, B)
    assert isinstance(out, tuple) and len(out) == 2
    np.testing.assert_array_equal(out[0], A * 2)
    np.testing.assert_array_equal(out[1], B.astype(np.float16) + 1)
    assert out[0].dtype == np.float16 and out[1].dtype == np.float16


def test_a_one_element_list_returns_a_one_tuple():
    a = af.input((2,))
    out = af.compile([a + 1])(np.ones(2, np.float16))
    assert isinstance(out, tuple) and len(out) == 1
    single = af.compile(a + 1)(np.ones(2, np.float16))
    assert isinstance(single, np.ndarray)


def test_named_inputs_by_keyword(net2):
    out = net2(b=B, a=A)
    np.testing.assert_array_equal(out[0], A * 2)
    out = net2(A, b=B)
    np.testing.assert_array_equal(out[1], B.astype(np.float16) + 1)


def test_ports_describe_name_shape_dtype(net2):
    assert net2.inputs == [{"name": "a", "shape": (2, 3), "dtype": "fp16"}, {"name": "b", "shape": (3,), "dtype": "uint8"}]
    assert [o["shape"] for o in net2.outputs] == [(2, 3), (3,)]
    assert [o["dtype"] for o in net2.outputs] == ["fp16", "fp16"]
    assert len({o["name"] for o in net2.outputs}) == 2


def test_float32_and_float64_are_converted(net2):
    out = net2(A.astype(np.float32) + 16 + np.float32(1e-4), B)  # rounds to the fp16 port
    np.testing.assert_array_equal(out[0], (A + 16) * 2)
    np.testing.assert_array_equal(net2(A.astype(np.float64), B)[0], A * 2)


def test_large_float32_inputs_round_like_float16():
    # Above the size at which the port copy splits across threads, and
    # strided (numpy's path) as well as contiguous (borrowed as is).
    x = np.random.default_rng(3).standard_normal((256, 197)).astype(np.float32) * 100
    net = af.compile(af.relu(af.input(x.shape)))
    want = np.maximum(x.astype(np.float16), 0)
    np.testing.assert_array_equal(net(x), want)
    np.testing.assert_array_equal(net(np.asfortranarray(x)), want)


def test_non_contiguous_arrays_are_accepted(net2):
    np.testing.assert_array_equal(net2(np.ascontiguousarray(A.T).T, B)[0], A * 2)


CALL_ERRORS = [
    ("wrong_shape", af.ShapeError, lambda n: n(A.T, B), ['"a"', "[2, 3]", "[3, 2]"]),
    ("wrong_rank", af.ShapeError, lambda n: n(A.reshape(6), B), ['"a"', "[2, 3]", "[6]"]),
    ("int_array_to_fp16_port", af.DTypeError, lambda n: n(A.astype(np.int32), B), ['"a"', "fp16", "int32"]),
    ("strings_to_fp16_port", TypeError, lambda n: n(np.full((2, 3), "x"), B), ['"a"']),
    ("float_to_uint8_port", af.DTypeError, lambda n: n(A, B.astype(np.float16)), ['"b"', "uint8", "float16"]),
    ("int64_to_uint8_port", af.DTypeError, lambda n: n(A, np.array([300, -1, 2])), ['"b"', "uint8", "int64"]),
    ("missing_input", TypeError, lambda n: n(A), ['"b"']),
    ("unknown_name", TypeError, lambda n: n(A, c=B), ['"c"', "a, b"]),
    ("given_twice", TypeError, lambda n: n(A, B, a=A), ['"a"', "twice"]),
    ("too_many", TypeError, lambda n: n(A, B, B), ["2 input(s)", "3"]),
]


@pytest.mark.parametrize("exc,call,words", [pytest.param(e, c, w, id=i) for i, e, c, w in CALL_ERRORS])
def test_call_time_errors(net2, exc, call, words):
    with pytest.raises(exc) as info:
        call(net2)
    for word in words:
        assert word in str(info.value), f"{word!r} missing from: {info.value}"
    # the Net still works afterwards
    np.testing.assert_array_equal(net2(A, B)[0], A * 2)


def test_released_net_raises():
    x = af.input((2,))
    net = af.compile(x * 3)
    assert not net.released
    net.release()
    assert net.released
    with pytest.raises(af.AneForgeError, match="released"):
        net(np.ones(2, np.float16))
    with pytest.raises(af.AneForgeError, match="released"):
        net.inputs
    net.release()  # idempotent
    assert "released" in repr(net)


def test_net_is_a_context_manager():
    x = af.input((2,))
    with af.compile(x + 1) as net:
        np.testing.assert_array_equal(net(np.ones(2, np.float16)), [2, 2])
    assert net.released
    with pytest.raises(af.AneForgeError):
        net(np.ones(2, np.float16))


def test_context_manager_releases_on_exception():
    x = af.input((2,))
    with pytest.raises(KeyError):
        with af.compile(x + 1) as net:
            raise KeyError("boom")
    assert net.released


# ------------------------------------------------------------ NaN and inf


def _nan_conv(numerics):
    x = af.input((1, 2, 4, 4))
    W = np.ones((2, 2, 3, 3), np.float32)
    W[1, 0, 0, 0] = np.nan  # allowed: weights are data, NaN is baked as is
    y = af.conv(x, W, pad=1)
    net = af.compile([y, y.relu(), af.maximum(y, 0.0), af.max_pool(y, 2), y.max((2, 3))], numerics=numerics)
    return net(np.ones((1, 2, 4, 4), np.float16))


def test_nan_in_weights_propagates_through_the_conv():
    for numerics in ("ane", "ieee"):
        conv = _nan_conv(numerics)[0]
        assert np.isfinite(conv[0, 0]).all(), "a channel without the NaN weight stays finite"
        assert np.isnan(conv[0, 1]).all(), "every output of the NaN weight's channel is NaN (x * NaN = NaN, the sum keeps it)"


def test_nan_in_max_like_ops_follows_the_numerics_mode():
    # numerics="ane": relu / maximum / max-pool / max-reduce drop NaN like the
    # engine's max (the non-NaN operand wins); numerics="ieee" propagates it.
    ane = _nan_conv("ane")[1:]
    ieee = _nan_conv("ieee")[1:]
    for k, (a, i) in enumerate(zip(ane, ieee)):
        assert not np.isnan(a[0, 1]).any(), f"ane output {k} should not carry NaN"
        assert np.isnan(i[0, 1]).all(), f"ieee output {k} should be NaN"
    np.testing.assert_array_equal(ane[0][0, 1], 0.0)  # relu(NaN) = max(NaN, 0) = 0


def test_fp16_overflow_saturates_to_inf():
    x = af.input((3,))
    out = af.compile(x * x)(np.array([300.0, -300.0, 2.0], np.float16))
    assert out[0] == np.inf and out[1] == np.inf and out[2] == 4


def test_fp16_accumulation_is_documented_and_ieee_is_exact():
    # numerics="ane" accumulates sums in fp16: adding 1.0 to 2048 is lost.
    x = af.input((3000,))
    ones = np.ones(3000, np.float16)
    assert af.compile(x.sum())(ones) == 2048
    assert af.compile(x.sum(), numerics="ieee")(ones) == 3000  # 3000 is exact in fp16
    assert af.compile(x.sum(), precision="fp32")(ones) == 3000


# ------------------------------------------------------------ no panic reaches Python


def _panic_type():
    try:
        from pyo3_runtime import PanicException  # type: ignore

        return PanicException
    except ImportError:
        return None


WEIRD_CALLS = [
    lambda: af.conv(af.input((1, 1, 1, 1)), np.ones((1, 1, 1, 1)), stride=(1 << 40)),
    lambda: af.conv(af.input((1, 1, 2, 2)), np.ones((1, 1, 1, 1)), dilation=(1 << 40)),
    lambda: af.conv(af.input((1, 1, 2, 2)), np.ones((1, 1, 1, 1)), pad=(1 << 62)),
    lambda: af.max_pool(af.input((1, 1, 2, 2)), 1, stride=(1 << 62)),
    lambda: af.avg_pool(af.input((1, 1, 2, 2)), (1 << 62)),
    lambda: af.resize_bilinear(af.input((1, 1, 2, 2)), (1 << 40, 1 << 40)),
    lambda: af.upsample_nearest(af.input((1, 1, 2, 2)), 1 << 62),
    lambda: af.tile(af.input((2,)), [1 << 62]),
    lambda: af.broadcast_to(af.input((1,)), [1 << 62]),
    lambda: af.pad(af.input((2,)), [(1 << 62, 1 << 62)]),
    lambda: af.pixel_shuffle(af.input((1, 4, 2, 2)), 1 << 32),
    lambda: af.pixel_shuffle(af.input((1, 4, 2, 2)), 0),
    lambda: af.space_to_depth(af.input((1, 4, 2, 2)), 0),
    lambda: af.gather(af.input((3,)), [-(1 << 62)]),
    lambda: af.gather(af.input((3,)), np.array([], np.int64)),
    lambda: af.slice(af.input((3,)), [-(1 << 62)], [1 << 62], [-(1 << 62)]),
    lambda: af.split(af.input((3,)), 0),
    lambda: af.split(af.input((3,)), []),
    lambda: af.cumsum(af.input((3,)), -(1 << 62)),
    lambda: af.sum(af.input((3,)), axes=[-(1 << 62)]),
    lambda: af.expand_dims(af.input((3,)), 1 << 62),
    lambda: af.squeeze(af.input((1,)), 0),
    lambda: af.reshape(af.input((3,)), [-1, -1]),
    lambda: af.reshape(af.input((4,)), [1 << 40, -1]),
    lambda: af.group_norm(af.input((1, 4)), 1 << 40),
    lambda: af.local_response_norm(af.input((1, 3, 2, 2)), 0),
    lambda: af.local_response_norm(af.input((1, 3, 2, 2)), 1 << 40),
    lambda: af.conv_transpose(af.input((1, 1, 2, 2)), np.ones((1, 1, 3, 3)), stride=2, output_pad=5),
    lambda: af.conv_transpose(af.input((1, 2, 2, 2)), np.ones((2, 1, 3, 3)), groups=0),
    lambda: af.conv(af.input((1, 2, 2, 2)), np.ones((2, 1, 1, 1)), groups=0),
    lambda: af.einsum("", af.input((3,))),
    lambda: af.einsum("->", af.input((3,))),
    lambda: af.einsum("i,i->i,i", af.input((3,)), af.input((3,))),
    lambda: af.einsum("i->j", af.input((3,))),
    lambda: af.einsum("ii->i", af.input((3, 3))),
    lambda: af.einsum("ij"),
    lambda: af.linear(af.input((3,)), np.ones((2, 3)), np.ones(5)),
    lambda: af.matmul(af.input((3,)), af.input((3,)), transpose_a=True),
    lambda: af.image_input((3,), scale=[1, 2, 3]),
    lambda: af.image_input((1, 3, 2, 2), scale=np.ones((3, 1))),
    lambda: af.constant(np.ones((0, 3))),
    lambda: af.constant(np.float16(1.0)) + af.input((2,)),
    lambda: af.crop(af.input((3,)), [(2, 2)]),
    lambda: af.crop(af.input((3,)), [(1, 1), (1, 1)]),
    lambda: af.prelu(af.input((1, 3, 2)), np.ones(5)),
    lambda: af.compile(af.constant(np.ones(3)))(),
    lambda: af.compile(af.input((2,)))(np.ones(2, np.float16)),
    lambda: af.compile(af.input((2,)) + 1)(np.ones((2,), np.float16)[::2]),
]


@pytest.mark.parametrize("call", WEIRD_CALLS, ids=[f"weird{i}" for i in range(len(WEIRD_CALLS))])
def test_no_panic_reaches_python(call):
    panic = _panic_type()
    try:
        call()
    except BaseException as e:  # noqa: BLE001 — a PanicException derives from BaseException
        if panic is not None and isinstance(e, panic) or type(e).__name__ == "PanicException":
            pytest.fail(f"a Rust panic reached Python: {e}")
        assert isinstance(e, (af.AneForgeError, ValueError, TypeError, IndexError, MemoryError, OverflowError)), f"unexpected {type(e)}: {e}"


def test_duplicate_input_names_are_refused_at_compile():
    a, b = af.input((2,), name="dup"), af.input((2,), name="dup")
    with pytest.raises(ValueError, match='"dup"'):
        af.compile(a + b)


def test_outputs_may_repeat_or_be_inputs_and_do_not_alias_across_calls():
    a = af.input((2,), name="a")
    y = a * 2
    net = af.compile([y, y, a])
    first = net(np.array([1, 2], np.float16))
    second = net(np.array([5, 6], np.float16))
    np.testing.assert_array_equal(first[0], [2, 4])  # not overwritten by the second call
    np.testing.assert_array_equal(first[1], [2, 4])
    np.testing.assert_array_equal(first[2], [1, 2])
    np.testing.assert_array_equal(second[0], [10, 12])
    first[0][0] = 99  # returned arrays are the caller's
    np.testing.assert_array_equal(net(np.array([5, 6], np.float16))[0], [10, 12])


def run_script(script: str, timeout: float) -> str:
    """Runs `script` (dedented) in a fresh Python, so that a hang fails on
    the timeout instead of hanging the suite; returns its stdout."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_a_net_can_be_queried_from_another_thread_while_it_runs():
    # A run holds the Net's lock with the GIL released; a thread that
    # waited for the lock while holding the GIL hung both. In a subprocess,
    # so that a regression fails on the timeout instead of hanging the suite.
    out = run_script(
        """
        import threading, time
        import numpy as np, aneforge as af
        w = np.random.default_rng(0).standard_normal((64, 64, 3, 3)).astype(np.float32) * 0.05
        y = af.input((1, 64, 56, 56))
        for _ in range(4):
            y = af.conv(y, w, pad=1).relu()
        net = af.compile(y)
        a = np.random.rand(1, 64, 56, 56).astype(np.float16)
        stop = time.time() + 1.5
        def call():
            while time.time() < stop:
                net(a)
        def query():
            while time.time() < stop:
                net.inputs, net.outputs, net.released, repr(net)
        ts = [threading.Thread(target=call), threading.Thread(target=query)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        print("done")
        """,
        timeout=60,
    )
    assert "done" in out, out


def test_nets_built_and_run_on_other_threads_while_the_importing_thread_waits():
    """The importing thread is worker 0 of the sim's thread pool and runs
    its own calls; nets compiled and called on other threads (while it
    waits for them, or runs a net of its own) must neither wait on it nor
    compute differently."""
    out = run_script(
        """
        import threading
        import numpy as np, aneforge as af
        rng = np.random.default_rng(0)
        w = (rng.standard_normal((256, 256)) / 16).astype(np.float32)
        x = rng.standard_normal((197, 256)).astype(np.float16)
        want = x.astype(np.float32) @ w
        errs = []
        def work():
            net = af.compile(af.input(x.shape) @ af.constant(w))
            for _ in range(20):
                out = net(x)
            errs.append(float(np.abs(out.astype(np.float32) - want).max()))
        ts = [threading.Thread(target=work) for _ in range(3)]
        for t in ts:
            t.start()
        work()
        for t in ts:
            t.join()
        late = threading.Thread(target=work)
        late.start()
        late.join()
        print(len(errs), max(errs))
        """,
        timeout=120,
    )
    count, err = out.split()
    assert int(count) == 5 and float(err) < 2e-2, out


@pytest.mark.skipif(not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2, reason="pinning is Linux-only and needs two CPUs")
def test_no_worker_stays_pinned_to_the_callers_cpu():
    """The pool's workers are pinned one per CPU but the caller floats;
    a worker pinned to the CPU the caller runs on would time-share it
    with the caller for the whole run while another CPU idles."""
    out = run_script(
        """
        import glob, os
        import numpy as np, aneforge as af
        cpus = sorted(os.sched_getaffinity(0))
        net = af.compile(af.relu(af.input((1, 256, 64, 64))))
        os.sched_setaffinity(0, {cpus[1]})  # the caller onto the CPU worker 1 was given
        net(np.zeros((1, 256, 64, 64), np.float16))
        main = os.getpid()
        held = []
        for task in glob.glob("/proc/self/task/*"):
            if int(task.rsplit("/", 1)[1]) != main:
                status = open(task + "/status").read()
                held += [l.split()[1] for l in status.splitlines() if l.startswith("Cpus_allowed_list")]
        print(str(cpus[1]) in held, str(cpus[0]) in held)
        """,
        timeout=120,
    )
    assert out.split() == ["False", "True"], out
