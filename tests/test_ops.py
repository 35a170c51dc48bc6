"""Op conformance: every native op of OPS.md against a numpy reference.

Each row of CASES is one op on one set of shapes. The sim output under
precision="fp16" (engine numerics) and precision="fp32" (f32 storage) is
compared with a float64 numpy reference computed from the same fp16 inputs,
within the row's stated tolerance (tests/op_cases.py defines the bound):

| op family                                   | fp16 bound                                   |
|---------------------------------------------|----------------------------------------------|
| shape / data movement, relu, abs, max, ...  | exact                                        |
| single elementwise op (f32 math inside)     | 1 ulp16 of the reference (observed: 0.5)     |
| two chained elementwise ops (x.exp().sqrt(), |y|**3) | 2 ulp16                             |
| matmul, einsum, conv, conv_transpose, avg_pool, resize_bilinear | 1 ulp16 + 2^-14*ref(|inputs|) (f32 accumulation, one rounding) |
| linear with bias                            | 2 ulp16 + 2^-14*ref(|inputs|)                |
| sum-like reductions, numerics="ane"         | 1 ulp16 + 2^-11*sum_i |S_i| (fp16 accumulation, S_i partial sums), |
|   (sum, mean, l1/l2_norm, sum_square, log_sum, log_sum_exp, cumsum, global_avg_pool) | propagated through sqrt/log/divide |
| sum-like reductions, numerics="ieee"        | 1 ulp16 + 2^-19*ref(|x|)                     |
| softmax, log_softmax, layer_norm, rms_norm  | 1 ulp16 + 2^-15*max|r| (f32 inside the op)   |
| group_norm, instance_norm (affine)          | 2 ulp16 + 2^-11*max|r|                       |
| batch_norm (sub, rsqrt, mul, add in fp16)   | 2 ulp16 + 1.5*2^-11*max|r|                   |
| l2_normalize                                | 2 ulp16 + the fp16 sum-of-squares bound      |
| local_response_norm (six fp16 ops)          | 3 ulp16                                      |
| image_input (x*scale rounds, then + bias)   | 1 ulp16 + 2*2^-11*max|r|                     |
| fp32 precision                              | 8*2^-23*(|r| + scale) (~1e-6 relative); erf/gelu add 1.2e-7/4e-7 absolute (the f32 erf kernel is a 1.2e-7 fit) |
"""

from __future__ import annotations

import numpy as np
import pytest

import aneforge as af
from op_cases import (
    EXACT,
    ULP1,
    Case,
    Tol,
    acc_terms,
    arg,
    away_from_zero,
    check,
    conv_ref,
    conv_transpose_ref,
    cumsum_ref,
    depth_to_space_ref,
    erf,
    group_norm_ref,
    ints,
    layer_norm_ref,
    lrn_ref,
    normal,
    pad_ref,
    pixel_shuffle_ref,
    pixel_unshuffle_ref,
    pool_ref,
    resize_bilinear_ref,
    rms_norm_ref,
    sigmoid,
    softmax_ref,
    space_to_depth_ref,
    uniform,
    w,
)

CASES: list[Case] = []


def add(id, build, ref, *args, **kw):
    CASES.append(Case(id, build, ref, list(args), **kw))


def sid(shape):
    return "x".join(map(str, shape)) if shape else "scalar"


ULP2 = Tol(ulp=2.0)
LIN = Tol(ulp=1.0, lin=0.125)  # f32 accumulation: K*2^-24 << 2^-14 for the K used here
LIN2 = Tol(ulp=2.0, lin=0.125)  # linear with bias: the matmul rounds, then the add
ACC = Tol(ulp=1.0, acc=1.0)
NORM = Tol(ulp=1.0, rel=2.0**-4)  # f32 inside the op, one final rounding

# ------------------------------------------------------------ unary
# the f32 erf kernel is a fit with |error| < 1.2e-7: invisible in fp16, stated for fp32
ERF_TOL = Tol(ulp=1, atol32=1.2e-7)
# gelu = 0.5 x (1 + erf|tanh): the f32 kernel's absolute error is scaled by |x| (|x| < 4 here)
GELU_TOL = Tol(ulp=1, atol32=4e-7)
UNARY_SHAPES = [(7,), (3, 5), (2, 1, 3, 5, 2)]

UNARY = {
    # name: (aneforge builder, numpy reference, input generator, tolerance)
    "relu": (af.relu, lambda x: np.maximum(x, 0), normal(2), EXACT),
    "relu6": (af.relu6, lambda x: np.clip(x, 0, 6), normal(4), EXACT),
    "leaky_relu": (af.leaky_relu, lambda x: np.where(x > 0, x, 0.01 * x), normal(2), ULP1),
    "leaky_relu-alpha0.2": (lambda x: af.leaky_relu(x, alpha=0.2), lambda x: np.where(x > 0, x, 0.2 * x), normal(2), ULP1),
    "elu": (af.elu, lambda x: np.where(x > 0, x, np.expm1(x)), normal(2), ULP1),
    "elu-alpha0.5": (lambda x: af.elu(x, 0.5), lambda x: np.where(x > 0, x, 0.5 * np.expm1(x)), normal(2), ULP1),
    "silu": (af.silu, lambda x: x * sigmoid(x), normal(3), ULP1),
    "sigmoid": (af.sigmoid, sigmoid, normal(3), ULP1),
    "hard_sigmoid": (af.hard_sigmoid, lambda x: np.clip(0.2 * x + 0.5, 0, 1), normal(3), ULP1),
    "hard_sigmoid-a1_6-b0_5": (lambda x: af.hard_sigmoid(x, alpha=1 / 6, beta=0.5), lambda x: np.clip(x / 6 + 0.5, 0, 1), normal(4), ULP1),
    "hard_swish": (af.hard_swish, lambda x: x * np.clip(x + 3, 0, 6) / 6, normal(3), ULP1),
    "gelu-exact": (af.gelu, lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2))), normal(2), GELU_TOL),
    "gelu-tanh": (
        lambda x: af.gelu(x, mode="tanh"),
        lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
        normal(2),
        GELU_TOL,  # 1 + tanh(z) cancels in f32 for x << 0
    ),
    "softplus": (af.softplus, lambda x: np.logaddexp(0, x), normal(4), ULP1),
    "softsign": (af.softsign, lambda x: x / (1 + np.abs(x)), normal(3), ULP1),
    "tanh": (af.tanh, np.tanh, normal(2), ULP1),
    "scaled_tanh": (lambda x: af.scaled_tanh(x, alpha=1.7, beta=0.66), lambda x: 1.7 * np.tanh(0.66 * x), normal(2), ULP1),
    "threshold": (lambda x: af.threshold(x, alpha=0.25), lambda x: np.maximum(x, 0.25), normal(1), EXACT),
    "clip": (lambda x: af.clip(x, -0.5, 1.25), lambda x: np.clip(x, -0.5, 1.25), normal(1), EXACT),
    "exp": (af.exp, np.exp, normal(2), ULP1),
    "exp2": (af.exp2, np.exp2, normal(3), ULP1),
    "log": (af.log, np.log, uniform(0.01, 50), ULP1),
    "sqrt": (af.sqrt, np.sqrt, uniform(0, 50), ULP1),
    "rsqrt": (af.rsqrt, lambda x: 1 / np.sqrt(x), uniform(0.01, 50), ULP1),
    "reciprocal": (af.reciprocal, lambda x: 1 / x, away_from_zero(0.05, 20), ULP1),
    "square": (af.square, np.square, normal(4), ULP1),
    "abs": (af.abs, np.abs, normal(2), EXACT),
    "sign": (af.sign, np.sign, ints(-2, 2), EXACT),
    "neg": (af.neg, np.negative, normal(2), EXACT),
    "sin": (af.sin, np.sin, normal(4), ULP1),
    "cos": (af.cos, np.cos, normal(4), ULP1),
    "atan": (af.atan, np.arctan, normal(4), ULP1),
    "erf": (af.erf, erf, normal(1.5), ERF_TOL),
    "floor": (af.floor, np.floor, normal(4), EXACT),
    "ceil": (af.ceil, np.ceil, normal(4), EXACT),
    # halves included: round-half-to-even like numpy
    "round": (af.round, np.round, lambda rng, s: rng.integers(-12, 12, s) / 2 + rng.choice([0, 0.25], s), EXACT),
}

for name, (fn, ref, gen, tol) in UNARY.items():
    for shape in UNARY_SHAPES:
        add(f"{name}-{sid(shape)}", fn, ref, arg(shape, gen), tol=tol)

# method spellings and the operator forms
add("method-relu", lambda x: x.relu(), lambda x: np.maximum(x, 0), arg((4, 6)), tol=EXACT)
add("method-gelu-tanh", lambda x: x.gelu("tanh"), lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))), arg((4, 6)))
add("method-leaky_relu", lambda x: x.leaky_relu(0.1), lambda x: np.where(x > 0, x, 0.1 * x), arg((4, 6)))
add("method-clip", lambda x: x.clip(-1, 1), lambda x: np.clip(x, -1, 1), arg((4, 6)), tol=EXACT)
add("op-neg", lambda x: -x, lambda x: -x, arg((4, 6)), tol=EXACT)
add("op-abs", lambda x: abs(x), np.abs, arg((4, 6)), tol=EXACT)
add("op-square", lambda x: x**2, np.square, arg((4, 6)))
add("method-exp-sqrt", lambda x: x.exp().sqrt(), lambda x: np.exp(x / 2), arg((4, 6)), tol=ULP2)

# prelu: a scalar slope, a per-channel slope (axis 1), a full-shape slope tensor
add("prelu-scalar_slope", lambda x: af.prelu(x, 0.25), lambda x: np.where(x > 0, x, 0.25 * x), arg((2, 3, 4)))
add(
    "prelu-per_channel",
    lambda x, s: af.prelu(x, s),
    lambda x, s: np.where(x > 0, x, s.reshape(1, -1, 1, 1) * x),
    arg((2, 3, 4, 5)),
    w((3,), uniform(0, 0.5)),
)
add("prelu-tensor_slope", lambda x, s: af.prelu(x, s), lambda x, s: np.where(x > 0, x, s * x), arg((3, 5)), arg((3, 5), uniform(0, 1)))

# ------------------------------------------------------------ binary
BIN_SHAPES = [((3, 4), (3, 4)), ((2, 1, 4), (3, 1)), ((5,), (2, 3, 5)), ((1,), (2, 3)), ((2, 1, 3, 1, 4), (5, 3, 1, 1))]

BINARY = {
    "add": (af.add, np.add, normal(2), normal(2), ULP1),
    "sub": (af.sub, np.subtract, normal(2), normal(2), ULP1),
    "mul": (af.mul, np.multiply, normal(2), normal(2), ULP1),
    "div": (af.div, np.divide, normal(2), away_from_zero(0.25, 4), ULP1),
    "pow": (af.pow, np.power, uniform(0.1, 4), uniform(-2, 3), ULP1),
    "maximum": (af.maximum, np.maximum, ints(-3, 3), ints(-3, 3), EXACT),
    "minimum": (af.minimum, np.minimum, ints(-3, 3), ints(-3, 3), EXACT),
    "equal": (af.equal, np.equal, ints(-2, 2), ints(-2, 2), EXACT),
    "not_equal": (af.not_equal, np.not_equal, ints(-2, 2), ints(-2, 2), EXACT),
    "less": (af.less, np.less, ints(-2, 2), ints(-2, 2), EXACT),
    "less_equal": (af.less_equal, np.less_equal, ints(-2, 2), ints(-2, 2), EXACT),
    "greater": (af.greater, np.greater, ints(-2, 2), ints(-2, 2), EXACT),
    "greater_equal": (af.greater_equal, np.greater_equal, ints(-2, 2), ints(-2, 2), EXACT),
}

for name, (fn, ref, ga, gb, tol) in BINARY.items():
    for sa, sb in BIN_SHAPES:
        add(f"{name}-{sid(sa)}-{sid(sb)}", fn, ref, arg(sa, ga), arg(sb, gb), tol=tol)
    # a numpy constant operand and Python scalars on either side
    add(f"{name}-const_rhs", fn, lambda a, b, ref=ref: ref(a, b), arg((2, 3), ga), w((3,), gb), tol=tol)
    add(f"{name}-scalar_rhs", lambda a, fn=fn: fn(a, 2), lambda a, ref=ref: ref(a, 2.0), arg((2, 3), ga), tol=tol)
    add(f"{name}-scalar_lhs", lambda b, fn=fn: fn(-1.5 if fn is not af.pow else 1.5, b), lambda b, ref=ref: ref(-1.5 if ref is not np.power else 1.5, b), arg((2, 3), gb), tol=tol)

# Python operators, scalars on either side
OPERATORS = {
    "x+y": (lambda x, y: x + y, np.add),
    "x-y": (lambda x, y: x - y, np.subtract),
    "x*y": (lambda x, y: x * y, np.multiply),
    "x/y": (lambda x, y: x / y, np.divide),
    "x+1": (lambda x, y: x + 1, lambda x, y: x + 1),
    "1-x": (lambda x, y: 1 - x, lambda x, y: 1 - x),
    "0.5*x": (lambda x, y: 0.5 * x, lambda x, y: 0.5 * x),
    "x/4": (lambda x, y: x / 4, lambda x, y: x / 4),
    "2/y": (lambda x, y: 2 / y, lambda x, y: 2 / y),
    "y**3": (lambda x, y: abs(y) ** 3, lambda x, y: np.abs(y) ** 3),
    "2**x": (lambda x, y: 2**x, lambda x, y: 2.0**x),
}
for name, (fn, ref) in OPERATORS.items():
    tol = ULP2 if name == "y**3" else ULP1  # abs then pow: two roundings
    if "x" in name and "y" in name:
        add(f"operator-{name}", fn, ref, arg((2, 3, 4)), arg((3, 4), away_from_zero(0.25, 2)), tol=tol)
    elif "x" in name:
        add(f"operator-{name}", lambda x, fn=fn: fn(x, None), lambda x, ref=ref: ref(x, None), arg((2, 3, 4)), tol=tol)
    else:
        add(f"operator-{name}", lambda y, fn=fn: fn(None, y), lambda y, ref=ref: ref(None, y), arg((3, 4), away_from_zero(0.25, 2)), tol=tol)
add("operator-ndarray*x", lambda x, c: c * x, lambda x, c: c * x, arg((2, 3)), w((3,)))
add("operator-ndarray@x", lambda x, c: c @ x, lambda x, c: c @ x, arg((2, 3, 4)), w((5, 3)), tol=LIN, linear=True)
add("operator-ndarray-x", lambda x, c: c - x, lambda x, c: c - x, arg((2, 3)), w((2, 1)))
add("operator-x<y", lambda x, y: x < y, np.less, arg((3, 4), ints(-2, 2)), arg((4,), ints(-2, 2)), tol=EXACT)
add("operator-x>=0", lambda x: x >= 0, lambda x: x >= 0, arg((3, 4), ints(-2, 2)), tol=EXACT)
add("operator-~(x>0)", lambda x: ~(x > 0), lambda x: ~(x > 0), arg((3, 4), ints(-2, 2)), tol=EXACT)

# ------------------------------------------------------------ logic / where
add("logical_not-bool", lambda x: af.logical_not(x > 0), lambda x: ~(x > 0), arg((3, 4), ints(-2, 2)), tol=EXACT)
add("logical_not-fp16", af.logical_not, lambda x: x == 0, arg((3, 4), ints(-1, 1)), tol=EXACT)
add("where-same_shape", lambda c, a, b: af.where(c > 0, a, b), lambda c, a, b: np.where(c > 0, a, b), arg((3, 4)), arg((3, 4)), arg((3, 4)), tol=EXACT)
add(
    "where-broadcast",
    lambda c, a, b: af.where(c > 0, a, b),
    lambda c, a, b: np.where(c > 0, a, b),
    arg((2, 1, 4)),
    arg((3, 1)),
    arg((4,)),
    tol=EXACT,
)
add("where-scalar_branches", lambda c: af.where(c > 0, 1.0, -2.0), lambda c: np.where(c > 0, 1.0, -2.0), arg((2, 5)), tol=EXACT)
add("where-scalar_else", lambda c, a: af.where(c < 0, a, 0), lambda c, a: np.where(c < 0, a, 0.0), arg((2, 5)), arg((2, 5)), tol=EXACT)

# ------------------------------------------------------------ linear algebra
MATMUL = [
    ((3, 5), (5, 4)),
    ((2, 3, 37), (37, 4)),
    ((2, 1, 3, 5), (4, 5, 6)),  # broadcast batch dims
    ((1, 2, 2, 3, 5), (2, 1, 5, 3)),  # rank 5
    ((5,), (5, 4)),  # 1-D lhs
    ((2, 3, 5), (5,)),  # 1-D rhs
    ((7,), (7,)),  # dot → 0-d
]
for sa, sb in MATMUL:
    add(f"matmul-{sid(sa)}@{sid(sb)}", af.matmul, np.matmul, arg(sa), arg(sb), tol=LIN, linear=True)
add("matmul-operator@", lambda a, b: a @ b, np.matmul, arg((4, 6)), arg((6, 3)), tol=LIN, linear=True)
add("matmul-const_rhs", lambda a, b: a @ b, np.matmul, arg((2, 4, 6)), w((6, 3)), tol=LIN, linear=True)
add("matmul-const_lhs", lambda a, b: a @ b, np.matmul, w((3, 4)), arg((2, 4, 6)), tol=LIN, linear=True)
add("matmul-transpose_a", lambda a, b: af.matmul(a, b, transpose_a=True), lambda a, b: np.swapaxes(a, -1, -2) @ b, arg((2, 5, 3)), arg((2, 5, 4)), tol=LIN, linear=True)
add("matmul-transpose_b", lambda a, b: af.matmul(a, b, transpose_b=True), lambda a, b: a @ np.swapaxes(b, -1, -2), arg((2, 3, 5)), arg((4, 5)), tol=LIN, linear=True)
add("matmul-transpose_ab", lambda a, b: af.matmul(a, b, True, True), lambda a, b: np.swapaxes(a, -1, -2) @ np.swapaxes(b, -1, -2), arg((5, 3)), arg((2, 4, 5)), tol=LIN, linear=True)
add("matmul-large_K", af.matmul, np.matmul, arg((4, 300), normal(1)), arg((300, 3), normal(1)), tol=LIN, linear=True)

add("linear-bias", lambda x, W, b: af.linear(x, W, b), lambda x, W, b: x @ W.T + b, arg((2, 3, 6)), w((5, 6)), w((5,)), tol=LIN2, linear=True)
add("linear-no_bias", lambda x, W: af.linear(x, W), lambda x, W: x @ W.T, arg((4, 7)), w((3, 7)), tol=LIN, linear=True)
add("linear-1d_x", lambda x, W, b: af.linear(x, W, b), lambda x, W, b: x @ W.T + b, arg((6,)), w((5, 6)), w((5,)), tol=LIN2, linear=True)
add("linear-tensor_weights", lambda x, W: af.linear(x, W), lambda x, W: x @ W.T, arg((3, 4)), arg((2, 4)), tol=LIN, linear=True)

EINSUM = [
    ("ij,jk->ik", [(3, 5), (5, 4)]),
    ("bij,bjk->bik", [(2, 3, 5), (2, 5, 4)]),
    ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
    ("ij,j->i", [(3, 5), (5,)]),
    ("bi,bj->bij", [(2, 3), (2, 4)]),
    ("ij->ji", [(3, 5)]),
    ("ijk,jl->lik", [(2, 3, 4), (3, 5)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("ij,ij->i", [(3, 5), (3, 5)]),
    ("i,i->", [(6,), (6,)]),
    ("ij,kj", [(3, 4), (2, 4)]),  # implicit output
]
for eq, shapes in EINSUM:
    add(
        f"einsum-{eq.replace('->', '→')}",
        lambda *xs, eq=eq: af.einsum(eq, *xs),
        lambda *xs, eq=eq: np.einsum(eq, *xs),
        *[arg(s) for s in shapes],
        tol=Tol(ulp=2, lin=2),
        linear=True,
    )
add("einsum-ij->i_sum", lambda x: af.einsum("ij->i", x), lambda x: x.sum(1), arg((3, 6)), tol=ACC, acc_bound=lambda x: acc_terms(x, 1))

# ------------------------------------------------------------ convolution
CONV = [
    # id, x shape, W shape, kwargs, bias
    ("2d-3x3", (1, 3, 8, 8), (4, 3, 3, 3), {}, False),
    ("2d-pad1-bias", (2, 3, 7, 9), (5, 3, 3, 3), {"pad": 1}, True),
    ("2d-pad_tuple", (1, 2, 6, 7), (3, 2, 3, 5), {"pad": (1, 2)}, False),
    ("2d-pad4", (1, 2, 6, 7), (3, 2, 3, 3), {"pad": (0, 1, 2, 1)}, False),
    ("2d-same", (1, 3, 7, 8), (4, 3, 3, 3), {"pad": "same"}, True),
    ("2d-same_stride2", (1, 3, 7, 8), (4, 3, 3, 3), {"pad": "same", "stride": 2}, False),
    ("2d-same_even_kernel", (1, 2, 6, 6), (2, 2, 4, 2), {"pad": "same"}, False),
    ("2d-stride2", (1, 3, 9, 9), (4, 3, 3, 3), {"stride": 2, "pad": 1}, True),
    ("2d-stride_tuple", (1, 3, 9, 10), (4, 3, 3, 2), {"stride": (2, 3)}, False),
    ("2d-dilation2", (1, 2, 9, 9), (3, 2, 3, 3), {"dilation": 2, "pad": 2}, False),
    ("2d-groups2", (2, 4, 6, 6), (6, 2, 3, 3), {"groups": 2, "pad": 1}, True),
    ("2d-depthwise", (1, 5, 7, 7), (5, 1, 3, 3), {"groups": 5, "pad": 1}, True),
    ("2d-depthwise_mult2", (1, 3, 6, 5), (6, 1, 3, 3), {"groups": 3}, False),
    ("2d-1x1", (2, 16, 5, 5), (8, 16, 1, 1), {}, True),
    ("2d-large_C", (1, 64, 6, 6), (8, 64, 3, 3), {"pad": 1}, False),
    ("1d-k3", (2, 3, 10), (4, 3, 3), {}, True),
    ("1d-pad_stride", (1, 3, 11), (2, 3, 5), {"pad": 2, "stride": 2}, False),
    ("1d-same_dilation", (1, 2, 9), (3, 2, 3), {"pad": "same", "dilation": 2}, False),
    ("1d-groups", (1, 4, 8), (4, 2, 3), {"groups": 2}, True),
]
for cid, xs, ws, kw, bias in CONV:
    if bias:
        add(
            f"conv-{cid}",
            lambda x, W, b, kw=kw: af.conv(x, W, b, **kw),
            lambda x, W, b, kw=kw: conv_ref(x, W, b, **kw),
            arg(xs), w(ws), w((ws[0],)),
            tol=LIN, linear=True,
        )
    else:
        add(f"conv-{cid}", lambda x, W, kw=kw: af.conv(x, W, **kw), lambda x, W, kw=kw: conv_ref(x, W, **kw), arg(xs), w(ws), tol=LIN, linear=True)
add("conv-tensor_weights", lambda x, W: af.conv(x, W, pad=1), lambda x, W: conv_ref(x, W, pad=1), arg((1, 2, 5, 5)), arg((3, 2, 3, 3)), tol=LIN, linear=True)

CONV_T = [
    ("2d-s1", (1, 3, 4, 4), (3, 2, 3, 3), {}, False),
    ("2d-s2", (1, 3, 4, 5), (3, 4, 3, 3), {"stride": 2}, True),
    ("2d-s2_pad1", (2, 2, 4, 4), (2, 3, 3, 3), {"stride": 2, "pad": 1}, False),
    ("2d-s2_pad1_outpad1", (1, 2, 4, 4), (2, 3, 3, 3), {"stride": 2, "pad": 1, "output_pad": 1}, True),
    ("2d-k4s2p1", (1, 4, 3, 3), (4, 2, 4, 4), {"stride": 2, "pad": 1}, False),
    ("2d-stride_tuple", (1, 2, 3, 4), (2, 2, 3, 2), {"stride": (2, 3), "pad": (1, 0)}, False),
    ("2d-groups2", (1, 4, 3, 3), (4, 3, 3, 3), {"stride": 2, "groups": 2}, True),
    ("1d-s2", (1, 3, 6), (3, 2, 4), {"stride": 2, "pad": 1}, True),
    ("1d-outpad", (2, 2, 5), (2, 3, 3), {"stride": 3, "output_pad": 2}, False),
    ("2d-dilation2", (1, 2, 4, 4), (2, 2, 3, 3), {"stride": 2, "pad": 1, "dilation": 2}, False),
    ("2d-pad4", (1, 2, 3, 4), (2, 2, 3, 3), {"stride": 2, "pad": (0, 1, 1, 2)}, False),
]
for cid, xs, ws, kw, bias in CONV_T:
    oc = ws[1] * kw.get("groups", 1)
    if bias:
        add(
            f"conv_transpose-{cid}",
            lambda x, W, b, kw=kw: af.conv_transpose(x, W, b, **kw),
            lambda x, W, b, kw=kw: conv_transpose_ref(x, W, b, **kw),
            arg(xs), w(ws), w((oc,)),
            tol=LIN, linear=True,
        )
    else:
        add(
            f"conv_transpose-{cid}",
            lambda x, W, kw=kw: af.conv_transpose(x, W, **kw),
            lambda x, W, kw=kw: conv_transpose_ref(x, W, **kw),
            arg(xs), w(ws),
            tol=LIN, linear=True,
        )

# epilogue fusion (conv/matmul + bias + activation become one kernel): same answer either way
FUSED = Tol(ulp=2.0, lin=0.125)
add("fused-conv_bias_relu", lambda x, W, b: af.conv(x, W, b, pad=1).relu(), lambda x, W, b: np.maximum(conv_ref(x, W, b, pad=1), 0), arg((1, 3, 6, 6)), w((4, 3, 3, 3)), w((4,)), tol=FUSED, linear=True)
add("fused-conv_add_channel_bias_relu6", lambda x, W, b: af.relu6(af.conv(x, W) + b.reshape(1, -1, 1, 1)), lambda x, W, b: np.clip(conv_ref(x, W) + b.reshape(1, -1, 1, 1), 0, 6), arg((2, 3, 5, 5)), w((4, 3, 3, 3)), w((4,)), tol=FUSED, linear=True)
add("fused-conv_tensor_bias", lambda x, W, b: af.conv(x, W, b), lambda x, W, b: conv_ref(x, W, b), arg((1, 2, 4, 4)), w((3, 2, 1, 1)), arg((3,)), tol=FUSED, linear=True)
# a residual add (and its relu) fused into the conv, on each conv path: GEMM, 1x1, transposed (7x7 maps), Winograd
# (F(4x4) on larger maps, F(2x2) on 14x14 ones, or a cropped odd map), depthwise.
# Winograd's f32 transforms cost ~1e-5 relative (see ops/winograd), which fp32 mode shows.
WINOGRAD = Tol(ulp=2.0, lin=0.125, f32=512.0)
for rid, xs, ws, kw, tol in [
    ("gemm_s2", (1, 8, 9, 9), (16, 8, 3, 3), dict(stride=2, pad=1), FUSED),
    ("1x1", (2, 32, 6, 6), (24, 32, 1, 1), {}, FUSED),
    ("7x7_map", (1, 32, 7, 7), (40, 32, 3, 3), dict(pad=1), FUSED),
    ("winograd", (1, 16, 24, 24), (16, 16, 3, 3), dict(pad=1), WINOGRAD),
    ("winograd_small", (1, 64, 14, 14), (64, 64, 3, 3), dict(pad=1), WINOGRAD),
    ("winograd_small_odd", (1, 64, 11, 9), (80, 64, 3, 3), {}, WINOGRAD),
    ("depthwise", (1, 8, 10, 10), (8, 1, 3, 3), dict(pad=1, groups=8), FUSED),
]:
    out = conv_ref(np.zeros(xs), np.zeros(ws), **kw).shape
    add(
        f"fused-conv_residual_relu-{rid}",
        lambda x, W, b, r, kw=kw: af.relu(af.conv(x, W, b, **kw) + r),
        lambda x, W, b, r, kw=kw: np.maximum(conv_ref(x, W, b, **kw) + r, 0),
        arg(xs), w(ws), w((ws[0],)), arg(out), tol=tol, linear=True,
    )
add("fused-matmul_bias_gelu", lambda x, W, b: (x @ W + b).gelu(), lambda x, W, b: (lambda z: 0.5 * z * (1 + erf(z / np.sqrt(2))))(x @ W + b), arg((2, 3, 8)), w((8, 5)), w((5,)), tol=Tol(ulp=3, rel=0.5, atol32=4e-7))
add("fused-linear_silu", lambda x, W, b: af.linear(x, W, b).silu(), lambda x, W, b: (lambda z: z * sigmoid(z))(x @ W.T + b), arg((4, 6)), w((3, 6)), w((3,)), tol=Tol(ulp=3, rel=0.5))

# ------------------------------------------------------------ pooling / resize
POOL = [
    ("k2", (1, 2, 6, 6), {"kernel": 2}),
    ("k3s2", (2, 3, 7, 7), {"kernel": 3, "stride": 2}),
    ("k3s1p1", (1, 2, 5, 6), {"kernel": 3, "stride": 1, "pad": 1}),
    ("k3s2_ceil", (1, 2, 8, 8), {"kernel": 3, "stride": 2, "ceil_mode": True}),
    ("k2s2_ceil_odd", (1, 1, 5, 7), {"kernel": 2, "stride": 2, "ceil_mode": True}),
    ("k3s2p1_ceil", (1, 2, 6, 6), {"kernel": 3, "stride": 2, "pad": 1, "ceil_mode": True}),
    ("k_tuple", (1, 2, 6, 9), {"kernel": (2, 3), "stride": (2, 3)}),
    ("same", (1, 2, 7, 7), {"kernel": 3, "stride": 2, "pad": "same"}),
    ("1d", (2, 3, 9), {"kernel": 3, "stride": 2}),
    ("1d_pad", (1, 2, 8), {"kernel": 3, "stride": 1, "pad": 1}),
    ("stride_gt_kernel", (1, 2, 9, 9), {"kernel": 2, "stride": 3}),
    ("1d_ceil", (1, 2, 8), {"kernel": 3, "stride": 2, "ceil_mode": True}),
]
for pid, xs, kw in POOL:
    add(f"max_pool-{pid}", lambda x, kw=kw: af.max_pool(x, **kw), lambda x, kw=kw: pool_ref(x, kind="max", **kw), arg(xs), tol=EXACT)
    add(f"avg_pool-{pid}", lambda x, kw=kw: af.avg_pool(x, **kw), lambda x, kw=kw: pool_ref(x, kind="avg", **kw), arg(xs), tol=LIN, linear=True)
    if "pad" in kw and kw["pad"] != "same" or "ceil_mode" in kw:
        kw2 = dict(kw, count_include_pad=True)
        add(
            f"avg_pool-{pid}-count_include_pad",
            lambda x, kw=kw2: af.avg_pool(x, **kw),
            lambda x, kw=kw2: pool_ref(x, kind="avg", **kw),
            arg(xs),
            tol=LIN,
            linear=True,
        )

# Sizes that split across threads: elementwise passes from 32K values (one
# part per thread, like the port conversions around them), pools over
# large planes by bands of output rows (ResNet's max pool over 112x112).
SPLIT = (1, 256, 14, 14)
add("split-relu", af.relu, lambda x: np.maximum(x, 0), arg(SPLIT), tol=EXACT)
# (Within +-3: below -3.5, 1 + erf cancels and fp16 results can be 2 ulp off.)
add("split-gelu", af.gelu, lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2))), arg(SPLIT, uniform(-3, 3)), tol=GELU_TOL)
add("split-add_broadcast", lambda x, y: x + y, np.add, arg(SPLIT), arg((256, 1, 1)), tol=ULP1)
for pid, xs, kw in [("stem", (1, 8, 112, 112), {"kernel": 3, "stride": 2, "pad": 1}), ("ceil_odd", (1, 4, 91, 97), {"kernel": 3, "stride": 2, "ceil_mode": True})]:
    add(f"split-max_pool-{pid}", lambda x, kw=kw: af.max_pool(x, **kw), lambda x, kw=kw: pool_ref(x, kind="max", **kw), arg(xs), tol=EXACT)
    add(f"split-avg_pool-{pid}", lambda x, kw=kw: af.avg_pool(x, **kw), lambda x, kw=kw: pool_ref(x, kind="avg", **kw), arg(xs), tol=LIN, linear=True)

for xs in [(1, 3, 5, 7), (2, 4, 3, 3), (2, 3, 6)]:
    add(
        f"global_avg_pool-{sid(xs)}",
        af.global_avg_pool,
        lambda x: x.mean(axis=tuple(range(2, x.ndim)), keepdims=True),
        arg(xs),
        tol=ACC,
        acc_bound=lambda x: acc_terms(x, tuple(range(2, x.ndim)), True) / np.prod(x.shape[2:]),
    )

for xs, scale in [((1, 2, 3, 4), 2), ((2, 3, 2, 3), (3, 2)), ((1, 1, 3, 3), 1)]:
    sh, sw = (scale, scale) if isinstance(scale, int) else scale
    add(
        f"upsample_nearest-{sid(xs)}-x{sh}x{sw}",
        lambda x, s=scale: af.upsample_nearest(x, s),
        lambda x, sh=sh, sw=sw: x.repeat(sh, axis=2).repeat(sw, axis=3),
        arg(xs),
        tol=EXACT,
    )
add("upsample_nearest-default", af.upsample_nearest, lambda x: x.repeat(2, 2).repeat(2, 3), arg((1, 2, 3, 3)), tol=EXACT)

for xs, size in [((1, 2, 4, 5), (8, 10)), ((2, 3, 5, 5), (3, 7)), ((1, 1, 3, 4), (3, 4)), ((1, 2, 6, 6), (4, 4)), ((1, 1, 1, 3), (2, 5))]:
    for ac in (False, True):
        add(
            f"resize_bilinear-{sid(xs)}-to{sid(size)}-align_corners={ac}",
            lambda x, s=size, ac=ac: af.resize_bilinear(x, s, align_corners=ac),
            lambda x, s=size, ac=ac: resize_bilinear_ref(x, s, ac),
            arg(xs),
            tol=LIN,
            linear=True,
        )

add("crop-2d", lambda x: af.crop(x, [(1, 1), (2, 0)]), lambda x: x[:, :, 1:-1, 2:], arg((1, 2, 5, 6)), tol=EXACT)
add("crop-last_axis", lambda x: af.crop(x, [(0, 3)]), lambda x: x[..., :-3], arg((2, 7)), tol=EXACT)

# ------------------------------------------------------------ reductions
RED_SHAPES = [((7,), None, False), ((3, 5), 1, False), ((3, 5), 0, True), ((2, 3, 4), (0, 2), False), ((2, 3, 4), -1, True), ((2, 1, 3, 4, 5), (1, 3), True), ((2, 3, 4), None, True)]


def _np_axes(a):
    return None if a is None else (a if isinstance(a, int) else tuple(a))


REDUCE = {
    # name: (numpy reference, generator, accumulation term f(x) or None, tolerance, post-scale)
    "sum": (np.sum, normal(1), lambda v: v, ACC),
    "mean": (np.mean, normal(1), lambda v: v, ACC),
    "max": (np.max, normal(1), None, EXACT),
    "min": (np.min, normal(1), None, EXACT),
    "prod": (np.prod, uniform(0.8, 1.25), None, Tol(ulp=1, rel=0, f32=8)),
    "l1_norm": (lambda x, axis, keepdims: np.abs(x).sum(axis=axis, keepdims=keepdims), normal(1), np.abs, ACC),
    "l2_norm": (lambda x, axis, keepdims: np.sqrt((x**2).sum(axis=axis, keepdims=keepdims)), normal(1), np.square, ACC),
    "sum_square": (lambda x, axis, keepdims: (x**2).sum(axis=axis, keepdims=keepdims), normal(1), np.square, ACC),
    "log_sum": (lambda x, axis, keepdims: np.log(x.sum(axis=axis, keepdims=keepdims)), uniform(0.1, 2), lambda v: v, ACC),
    "log_sum_exp": (
        lambda x, axis, keepdims: np.log(np.exp(x).sum(axis=axis, keepdims=keepdims)),
        normal(1),
        np.exp,
        ACC,
    ),
}


def _red_acc(name, f, axes, keepdims):
    n_of = lambda x: x.size if axes is None else int(np.prod([x.shape[a] for a in np.atleast_1d(axes)]))

    def bound(x):
        s = acc_terms(x, _np_axes(axes), keepdims, f)
        if name == "mean":
            return s / n_of(x)
        if name == "l2_norm":  # d sqrt(S) = dS / (2 sqrt(S))
            return s / (2 * np.sqrt((x**2).sum(axis=_np_axes(axes), keepdims=keepdims)))
        if name in ("log_sum", "log_sum_exp"):  # d log(S) = dS / S
            return s / np.abs(f(x).sum(axis=_np_axes(axes), keepdims=keepdims))
        return s

    return bound


for name, (ref, gen, f, tol) in REDUCE.items():
    for shape, axes, keepdims in RED_SHAPES:
        if name == "prod" and np.prod(shape) > 30 and axes is None:
            continue
        rid = f"{name}-{sid(shape)}-axes{axes}-keep{int(keepdims)}".replace(" ", "")
        add(
            rid,
            lambda x, name=name, axes=axes, kd=keepdims: getattr(af, name)(x, axes=axes, keepdims=kd),
            lambda x, ref=ref, axes=axes, kd=keepdims: np.asarray(ref(x, axis=_np_axes(axes), keepdims=kd)),
            arg(shape, gen),
            tol=tol,
            acc_bound=_red_acc(name, f, axes, keepdims) if f is not None else None,
        )
        if f is not None and name in ("sum", "mean", "sum_square") and shape == (2, 3, 4):
            # IEEE numerics: f32 accumulation, so just the final rounding (+ cancellation scale)
            add(
                rid + "-ieee",
                lambda x, name=name, axes=axes, kd=keepdims: getattr(af, name)(x, axes=axes, keepdims=kd),
                lambda x, ref=ref, axes=axes, kd=keepdims: np.asarray(ref(x, axis=_np_axes(axes), keepdims=kd)),
                arg(shape, gen),
                tol=Tol(ulp=1, lin=2.0**-8),
                linear=True,
                numerics="ieee",
                modes=("fp16",),
            )

add("method-mean", lambda x: x.mean((2, 3)), lambda x: x.mean((2, 3)), arg((1, 3, 4, 4)), tol=ACC, acc_bound=lambda x: acc_terms(x, (2, 3)) / 16)
# Row reductions split across threads from 8K values: a ResNet's global average pool.
add("split-mean-gap", lambda x: x.mean((2, 3)), lambda x: x.mean((2, 3)), arg((1, 512, 7, 7)), tol=ACC, acc_bound=lambda x: acc_terms(x, (2, 3)) / 49)
add("split-max-gap", lambda x: af.max(x, axes=(2, 3)), lambda x: x.max(axis=(2, 3)), arg((1, 512, 7, 7)), tol=EXACT)
add("method-max-keepdims", lambda x: x.max(-1, keepdims=True), lambda x: x.max(-1, keepdims=True), arg((3, 5)), tol=EXACT)
add("sum-long_row", lambda x: af.sum(x, -1), lambda x: x.sum(-1), arg((2, 257), uniform(0, 1)), tol=ACC, acc_bound=lambda x: acc_terms(x, -1))

for shape, axis in [((6,), 0), ((3, 5), 1), ((3, 5), 0), ((2, 3, 4), 1), ((2, 1, 3, 2, 4), -2)]:
    for excl in (False, True):
        for rev in (False, True):
            add(
                f"cumsum-{sid(shape)}-axis{axis}-excl{int(excl)}-rev{int(rev)}",
                lambda x, a=axis, e=excl, r=rev: af.cumsum(x, axis=a, exclusive=e, reverse=r),
                lambda x, a=axis, e=excl, r=rev: cumsum_ref(x, a, e, r),
                arg(shape),
                tol=ACC,
                # every output is itself a partial sum: bound by the running sum of |partials|
                acc_bound=lambda x, a=axis, r=rev: cumsum_ref(np.abs(cumsum_ref(x, a, False, r)), a, False, r),
            )
add("cumsum-method", lambda x: x.cumsum(1), lambda x: np.cumsum(x, 1), arg((2, 4)), tol=ACC, acc_bound=lambda x: np.cumsum(np.abs(np.cumsum(x, 1)), 1))

# ------------------------------------------------------------ normalisation
for shape, axis in [((7,), -1), ((3, 5), -1), ((3, 5), 0), ((2, 3, 4), 1), ((2, 1, 3, 2, 5), -1), ((3, 1), -1)]:
    add(f"softmax-{sid(shape)}-axis{axis}", lambda x, a=axis: af.softmax(x, axis=a), lambda x, a=axis: softmax_ref(x, a), arg(shape, normal(3)), tol=NORM)
    add(
        f"log_softmax-{sid(shape)}-axis{axis}",
        lambda x, a=axis: af.log_softmax(x, axis=a),
        lambda x, a=axis: np.log(softmax_ref(x, a)),
        arg(shape, normal(3)),
        tol=NORM,
    )
add("softmax-method", lambda x: x.softmax(), lambda x: softmax_ref(x, -1), arg((4, 9)), tol=NORM)
add("softmax-large_logits", lambda x: af.softmax(x), lambda x: softmax_ref(x, -1), arg((3, 16), normal(30)), tol=NORM)

LN = [
    ((4, 8), (-1,), False),
    ((2, 3, 8), (-1,), True),
    ((2, 3, 4, 5), (-2, -1), True),
    ((2, 5, 3), (1,), True),  # non-trailing axis
    ((2, 3, 4, 5), (1, 2), True),  # non-trailing block
    ((2, 3, 4, 5), (1, 3), False),  # non-contiguous axes
    ((1, 2, 3, 2, 6), (-1,), True),
    ((9,), (0,), True),
]
for shape, axes, affine in LN:
    nshape = tuple(shape[a] for a in axes)
    tag = f"{sid(shape)}-axes{''.join(str(a) for a in axes)}" + ("-affine" if affine else "")
    if affine:
        add(
            f"layer_norm-{tag}",
            lambda x, g, b, axes=axes: af.layer_norm(x, axes=axes, gamma=g, beta=b),
            lambda x, g, b, axes=axes: layer_norm_ref(x, axes, g, b),
            arg(shape, normal(2, 1)), w(nshape, uniform(0.5, 1.5)), w(nshape),
            tol=NORM,
        )
        add(
            f"rms_norm-{tag}",
            lambda x, g, axes=axes: af.rms_norm(x, axes=axes, gamma=g),
            lambda x, g, axes=axes: rms_norm_ref(x, axes, g),
            arg(shape, normal(2, 1)), w(nshape, uniform(0.5, 1.5)),
            tol=NORM,
        )
    else:
        add(f"layer_norm-{tag}", lambda x, axes=axes: af.layer_norm(x, axes=axes), lambda x, axes=axes: layer_norm_ref(x, axes), arg(shape, normal(2, 1)), tol=NORM)
        add(f"rms_norm-{tag}", lambda x, axes=axes: af.rms_norm(x, axes=axes), lambda x, axes=axes: rms_norm_ref(x, axes), arg(shape, normal(2, 1)), tol=NORM)
add("layer_norm-default_axes", af.layer_norm, lambda x: layer_norm_ref(x, (-1,)), arg((3, 10), normal(3, 2)), tol=NORM)
add("layer_norm-int_axis", lambda x: af.layer_norm(x, axes=-1, eps=1e-3), lambda x: layer_norm_ref(x, (-1,), eps=1e-3), arg((3, 10)), tol=NORM)

# group norm: an fp16 normalised tensor, then an fp16 scale and an fp16 shift → a few ulps
GN_TOL = Tol(ulp=2, rel=1)
for shape, groups in [((2, 6, 4, 4), 3), ((1, 4, 5), 2), ((2, 4, 3, 3), 1), ((1, 6, 2, 2, 2), 6)]:
    C = shape[1]
    add(
        f"group_norm-{sid(shape)}-g{groups}",
        lambda x, g, b, groups=groups: af.group_norm(x, groups, gamma=g, beta=b),
        lambda x, g, b, groups=groups: group_norm_ref(x, groups, g, b),
        arg(shape, normal(2, 1)), w((C,), uniform(0.5, 1.5)), w((C,)),
        tol=GN_TOL,
    )
add("group_norm-no_affine", lambda x: af.group_norm(x, 2), lambda x: group_norm_ref(x, 2), arg((2, 4, 3, 3)), tol=GN_TOL)
for shape in [(2, 3, 4, 5), (1, 4, 7)]:
    C = shape[1]
    add(f"instance_norm-{sid(shape)}", af.instance_norm, lambda x: group_norm_ref(x, x.shape[1]), arg(shape, normal(2, 1)), tol=NORM)
    add(
        f"instance_norm-{sid(shape)}-affine",
        lambda x, g, b: af.instance_norm(x, g, b),
        lambda x, g, b: group_norm_ref(x, x.shape[1], g, b),
        arg(shape, normal(2, 1)), w((C,), uniform(0.5, 1.5)), w((C,)),
        tol=GN_TOL,
    )

# batch norm: (x - mean) and 1/sqrt(var + eps) * gamma each round to fp16 before the product and shift
BN_TOL = Tol(ulp=2, rel=1.5)


def bn_ref(x, m, v, g=None, b=None, eps=1e-5):
    cs = [1, -1] + [1] * (x.ndim - 2)
    y = (x - m.reshape(cs)) / np.sqrt(v.reshape(cs) + eps)
    if g is not None:
        y = y * g.reshape(cs)
    if b is not None:
        y = y + b.reshape(cs)
    return y


for shape in [(2, 3, 4, 4), (2, 5), (1, 3, 6), (1, 2, 2, 3, 2)]:
    C = shape[1]
    add(
        f"batch_norm-{sid(shape)}",
        lambda x, m, v, g, b: af.batch_norm(x, m, v, g, b),
        bn_ref,
        arg(shape, normal(2, 1)), w((C,)), w((C,), uniform(0.2, 3)), w((C,), uniform(0.5, 1.5)), w((C,)),
        tol=BN_TOL,
    )
add("batch_norm-stats_only", lambda x, m, v: af.batch_norm(x, m, v, eps=1e-3), lambda x, m, v: bn_ref(x, m, v, eps=1e-3), arg((2, 3, 5)), w((3,)), w((3,), uniform(0.2, 3)), tol=BN_TOL)

# l2_normalize: a sum of squares accumulated in fp16, a sqrt and a divide
for shape, axes in [((3, 8), -1), ((2, 4, 5), (1, 2)), ((2, 6, 3), 1), ((7,), 0)]:
    ax = (axes,) if isinstance(axes, int) else axes

    def l2_bound(x, ax=ax):
        ss = (x**2).sum(axis=ax, keepdims=True)
        return acc_terms(x, ax, True, np.square) / (2 * ss) * np.abs(x / np.sqrt(ss))

    add(
        f"l2_normalize-{sid(shape)}-axes{ax}".replace(" ", ""),
        lambda x, axes=axes: af.l2_normalize(x, axes=axes),
        lambda x, ax=ax: x / np.sqrt(np.maximum((x**2).sum(axis=ax, keepdims=True), 1e-12)),
        arg(shape),
        tol=Tol(ulp=2, acc=1),
        acc_bound=l2_bound,
    )

# LRN: x², a banded 1x1 conv, scale, shift, pow, divide — six fp16 roundings
for shape, size in [((1, 5, 3, 3), 3), ((2, 8, 2, 3), 5), ((1, 4, 2, 2), 2)]:
    add(
        f"local_response_norm-{sid(shape)}-size{size}",
        lambda x, s=size: af.local_response_norm(x, s, alpha=0.5, beta=0.75, k=2.0),
        lambda x, s=size: lrn_ref(x, s, 0.5, 0.75, 2.0),
        arg(shape, normal(2)),
        tol=Tol(ulp=3),
    )

# ------------------------------------------------------------ shape ops
SHAPE_OPS = [
    ("reshape-minus1", lambda x: af.reshape(x, (3, -1)), lambda x: x.reshape(3, -1), (2, 3, 4)),
    ("reshape-method_varargs", lambda x: x.reshape(4, 6), lambda x: x.reshape(4, 6), (2, 3, 4)),
    ("reshape-to_rank5", lambda x: x.reshape((1, 2, 3, 2, 2)), lambda x: x.reshape(1, 2, 3, 2, 2), (2, 3, 4)),
    ("reshape-to_rank1", lambda x: x.reshape(-1), lambda x: x.reshape(-1), (2, 3, 4)),
    ("transpose-perm", lambda x: af.transpose(x, (2, 0, 1)), lambda x: x.transpose(2, 0, 1), (2, 3, 4)),
    ("transpose-negative_axes", lambda x: x.transpose(0, -1, 1), lambda x: x.transpose(0, 2, 1), (2, 3, 4)),
    ("transpose-default_reverses", lambda x: x.transpose(), lambda x: x.T, (2, 3, 4)),
    ("transpose-T", lambda x: x.T, lambda x: x.T, (3, 5)),
    ("transpose-rank5", lambda x: x.transpose((4, 2, 0, 3, 1)), lambda x: x.transpose(4, 2, 0, 3, 1), (2, 3, 1, 4, 5)),
    ("flatten-default", af.flatten, lambda x: x.reshape(-1), (2, 3, 4)),
    ("flatten-start1", lambda x: af.flatten(x, 1), lambda x: x.reshape(2, -1), (2, 3, 4)),
    ("flatten-1to2", lambda x: x.flatten(1, 2), lambda x: x.reshape(2, 12, 5), (2, 3, 4, 5)),
    ("squeeze-all", af.squeeze, np.squeeze, (1, 3, 1, 4)),
    ("squeeze-axis", lambda x: af.squeeze(x, 2), lambda x: x.squeeze(2), (1, 3, 1, 4)),
    ("squeeze-axes_method", lambda x: x.squeeze((0, -2)), lambda x: x.squeeze((0, 2)), (1, 3, 1, 4)),
    ("expand_dims-0", lambda x: af.expand_dims(x, 0), lambda x: x[None], (3, 4)),
    ("expand_dims-neg", lambda x: x.expand_dims(-1), lambda x: x[..., None], (3, 4)),
    ("expand_dims-mid", lambda x: x.expand_dims(1), lambda x: x[:, None], (3, 4)),
    ("reverse-axis", lambda x: af.reverse(x, 1), lambda x: x[:, ::-1], (3, 4)),
    ("reverse-axes", lambda x: af.reverse(x, (0, 2)), lambda x: x[::-1, :, ::-1], (2, 3, 4)),
    ("tile-2d", lambda x: af.tile(x, (2, 3)), lambda x: np.tile(x, (2, 3)), (2, 3)),
    ("tile-method_3d", lambda x: x.tile((1, 2, 1)), lambda x: np.tile(x, (1, 2, 1)), (2, 3, 2)),
    ("broadcast_to-leading", lambda x: af.broadcast_to(x, (2, 3, 4)), lambda x: np.broadcast_to(x, (2, 3, 4)), (3, 1)),
    ("broadcast_to-method", lambda x: x.broadcast_to((2, 5)), lambda x: np.broadcast_to(x, (2, 5)), (5,)),
    ("pad-constant", lambda x: af.pad(x, [(1, 2), (0, 3)]), lambda x: pad_ref(x, [(1, 2), (0, 3)]), (2, 3, 4)),
    ("pad-constant_value", lambda x: af.pad(x, [(2, 1)], value=-1.5), lambda x: pad_ref(x, [(2, 1)], value=-1.5), (3, 4)),
    ("pad-reflect", lambda x: af.pad(x, [(1, 2), (2, 1)], mode="reflect"), lambda x: pad_ref(x, [(1, 2), (2, 1)], "reflect"), (1, 2, 4, 5)),
    ("pad-replicate", lambda x: af.pad(x, [(2, 1), (0, 3)], mode="replicate"), lambda x: pad_ref(x, [(2, 1), (0, 3)], "replicate"), (1, 2, 3, 4)),
    ("pad-rank1", lambda x: af.pad(x, [(3, 1)], mode="reflect"), lambda x: pad_ref(x, [(3, 1)], "reflect"), (5,)),
    ("pixel_shuffle-r2", lambda x: af.pixel_shuffle(x, 2), lambda x: pixel_shuffle_ref(x, 2), (1, 8, 2, 3)),
    ("pixel_shuffle-r3", lambda x: af.pixel_shuffle(x, 3), lambda x: pixel_shuffle_ref(x, 3), (2, 9, 2, 2)),
    ("pixel_unshuffle-r2", lambda x: af.pixel_unshuffle(x, 2), lambda x: pixel_unshuffle_ref(x, 2), (1, 3, 4, 6)),
    ("space_to_depth-b2", lambda x: af.space_to_depth(x, 2), lambda x: space_to_depth_ref(x, 2), (2, 3, 4, 6)),
    ("depth_to_space-b2", lambda x: af.depth_to_space(x, 2), lambda x: depth_to_space_ref(x, 2), (1, 12, 2, 3)),
    ("gather-axis0", lambda x: af.gather(x, [2, 0, 2]), lambda x: x[[2, 0, 2]], (4, 3)),
    ("gather-axis1_2d_indices", lambda x: af.gather(x, np.array([[0, 3], [1, 1]]), axis=1), lambda x: np.take(x, [[0, 3], [1, 1]], axis=1), (2, 4, 3)),
    ("gather-negative_index", lambda x: af.gather(x, [-1, 0], axis=-1), lambda x: np.take(x, [-1, 0], axis=-1), (3, 5)),
    ("gather-scalar_index", lambda x: af.gather(x, np.array(1), axis=0), lambda x: x[1], (3, 4)),
    ("slice-steps", lambda x: af.slice(x, [0, 1], [3, None], [2, 2]), lambda x: x[0:3:2, 1::2], (4, 7)),
    ("slice-negative", lambda x: af.slice(x, [-3, None], [-1, None], [1, -1]), lambda x: x[-3:-1, ::-1], (5, 4)),
    ("slice-negative_step_bounds", lambda x: af.slice(x, [None, 5], [None, 0], [1, -2]), lambda x: x[:, 5:0:-2], (2, 7)),
    ("slice-partial_axes", lambda x: af.slice(x, [1], [3]), lambda x: x[1:3], (4, 3, 2)),
    ("slice-clamped", lambda x: af.slice(x, [-10], [10]), lambda x: x[-10:10], (4, 3)),
    ("index-[:,1:3]", lambda x: x[:, 1:3], lambda x: x[:, 1:3], (3, 5)),
    ("index-[...,::2]", lambda x: x[..., ::2], lambda x: x[..., ::2], (2, 3, 5)),
    ("index-[0]", lambda x: x[0], lambda x: x[0], (3, 4)),
    ("index-[-1]", lambda x: x[-1], lambda x: x[-1], (3, 4)),
    ("index-[None]", lambda x: x[None], lambda x: x[None], (3, 4)),
    ("index-[:,None]", lambda x: x[:, None], lambda x: x[:, None], (3, 4)),
    ("index-[1,...,None]", lambda x: x[1, ..., None], lambda x: x[1, ..., None], (2, 3, 4)),
    ("index-[::-1,2]", lambda x: x[::-1, 2], lambda x: x[::-1, 2], (3, 4)),
    ("index-[1:,None,...,2]", lambda x: x[1:, None, ..., 2], lambda x: x[1:, None, ..., 2], (3, 2, 4)),
    ("index-[:,-2:,1:-1:2]", lambda x: x[:, -2:, 1:-1:2], lambda x: x[:, -2:, 1:-1:2], (2, 4, 7)),
    ("index-rank5", lambda x: x[0, :, 1:, ..., ::-2], lambda x: x[0, :, 1:, ..., ::-2], (2, 3, 4, 2, 5)),
]
for sid_, fn, ref, shape in SHAPE_OPS:
    add(sid_, fn, ref, arg(shape), tol=EXACT)

# multi-input shape ops
add("concat-axis0", lambda a, b: af.concat([a, b]), lambda a, b: np.concatenate([a, b]), arg((2, 3)), arg((4, 3)), tol=EXACT)
add("concat-axis_neg", lambda a, b, c: af.concat([a, b, c], axis=-1), lambda a, b, c: np.concatenate([a, b, c], -1), arg((2, 3, 1)), arg((2, 3, 4)), arg((2, 3, 2)), tol=EXACT)
add("concat-with_const", lambda a, b: af.concat([a, b], axis=1), lambda a, b: np.concatenate([a, b], 1), arg((2, 3)), w((2, 2)), tol=EXACT)
add("concat-rank5", lambda a, b: af.concat([a, b], axis=2), lambda a, b: np.concatenate([a, b], 2), arg((1, 2, 3, 2, 2)), arg((1, 2, 1, 2, 2)), tol=EXACT)
add("stack-axis0", lambda a, b: af.stack([a, b]), lambda a, b: np.stack([a, b]), arg((2, 3)), arg((2, 3)), tol=EXACT)
add("stack-axis_last", lambda a, b, c: af.stack([a, b, c], axis=-1), lambda a, b, c: np.stack([a, b, c], -1), arg((4,)), arg((4,)), arg((4,)), tol=EXACT)
add("stack-axis1", lambda a, b: af.stack((a, b), axis=1), lambda a, b: np.stack([a, b], 1), arg((2, 3, 2)), arg((2, 3, 2)), tol=EXACT)


def _split_case(id, fn, ref, shape):
    CASES.append(Case(id, fn, ref, [arg(shape)], tol=EXACT))


_split_case("split-n", lambda x: af.split(x, 3, axis=1), lambda x: tuple(np.split(x, 3, axis=1)), (2, 6))
_split_case("split-sizes", lambda x: af.split(x, [1, 3, 2], axis=-1), lambda x: tuple(np.split(x, [1, 4], axis=-1)), (2, 3, 6))
_split_case("split-default_axis", lambda x: af.split(x, 2), lambda x: tuple(np.split(x, 2)), (4, 3))

# ------------------------------------------------------------ types and I/O
add("cast-fp32_roundtrip", lambda x: (x.cast("fp32") * 3).cast("fp16"), lambda x: 3 * x, arg((3, 4)), tol=ULP1)
add("cast-int8", lambda x: af.cast(x, "int8"), lambda x: np.clip(np.round(x), -128, 127).astype(np.int8), arg((4, 5), normal(80)), tol=EXACT)
add("cast-uint8", lambda x: x.astype("uint8"), lambda x: np.clip(np.round(x), 0, 255).astype(np.uint8), arg((4, 5), normal(150, 100)), tol=EXACT)
add("cast-int16_halves", lambda x: af.cast(x, "int16"), lambda x: np.round(x).astype(np.int16), arg((9,), lambda r, s: np.arange(-4, 5) + 0.5), tol=EXACT)
add("cast-from_uint8_port", lambda x: af.cast(x, "fp16") * 0.5, lambda x: x * 0.5, arg((2, 6), ints(0, 255), dtype="uint8"), tol=ULP1)
add("cast-from_int8_port", lambda x: af.cast(x, "fp16") + 1, lambda x: x + 1, arg((2, 6), ints(-128, 127), dtype="int8"), tol=ULP1)
add("cast-from_int16_port", lambda x: af.cast(x, "fp16"), lambda x: x, arg((7,), ints(-3000, 3000), dtype="int16"), tol=ULP1)
add("cast-from_uint16_port", lambda x: af.cast(x, "fp16"), lambda x: x, arg((7,), ints(0, 60000), dtype="uint16"), tol=ULP1)
add("cast-to_bool", lambda x: af.cast(x, "bool"), lambda x: x != 0, arg((3, 4), ints(-1, 1)), tol=EXACT)


def _image_case(id, shape, kw, ref):
    # image_input is itself the graph input: build ignores the operand tensor
    # x * scale rounds to fp16 before the bias is added: 2 ulp of the output scale
    CASES.append(Case(id, ("image_input", shape, kw), ref, [arg(shape, ints(0, 255), dtype="uint8")], tol=Tol(ulp=1, rel=2)))


_image_case("image_input-default", (1, 3, 4, 5), {}, lambda x: x / 255)
_image_case("image_input-scalar", (2, 3, 2, 2), {"scale": 1 / 127.5, "bias": -1.0}, lambda x: x / 127.5 - 1)
_image_case(
    "image_input-per_channel",
    (1, 3, 4, 4),
    {"scale": [1 / 58.4, 1 / 57.1, 1 / 57.4], "bias": [-2.12, -2.04, -1.80]},
    lambda x: x * np.array([1 / 58.4, 1 / 57.1, 1 / 57.4]).reshape(1, 3, 1, 1) + np.array([-2.12, -2.04, -1.80]).reshape(1, 3, 1, 1),
)

add("constant-plus_input", lambda x: x + af.constant(np.arange(4, dtype=np.float32)), lambda x: x + np.arange(4), arg((3, 4)), tol=ULP1)


# ------------------------------------------------------------ the runner
PARAMS = [pytest.param(c, m, id=f"{c.id}-{m}" + ("-ieee" if c.numerics == "ieee" else "")) for c in CASES for m in c.modes]


@pytest.mark.parametrize("case,mode", PARAMS)
def test_op(case: Case, mode: str):
    xs = case.data()
    if isinstance(case.build, tuple):  # image_input: the port is built by the op itself
        _, shape, kw = case.build
        y = af.image_input(shape, **kw)
        feeds = xs
        # fp16 storage rounds the scale/bias constants; fp32 keeps them
        q = (lambda v: np.asarray(v, np.float16).astype(np.float64)) if mode == "fp16" else (lambda v: np.asarray(v, np.float64))
        kw16 = {k: q(v) for k, v in kw.items()}
        scale = kw16.get("scale", q(1 / 255))
        bias = kw16.get("bias", 0.0)
        cs = [1, -1] + [1] * (len(shape) - 2)
        ref = lambda x: x * np.reshape(scale, cs if np.ndim(scale) else ()) + np.reshape(bias, cs if np.ndim(bias) else ())
        r = ref(xs[0].astype(np.float64))
    else:
        operands, feeds = [], []
        for a, x in zip(case.args, xs):
            if a.const:
                operands.append(x)
            else:
                operands.append(af.input(x.shape, dtype=a.dtype))
                feeds.append(x)
        y = case.build(*operands)
        r = case.ref(*[x.astype(np.float64) for x in xs])
    outs = list(y) if isinstance(y, (list, tuple)) else y
    net = af.compile(outs, precision=mode, numerics=case.numerics)
    got = net(*feeds)
    refs = list(r) if isinstance(r, tuple) else [r]
    gots = list(got) if isinstance(got, tuple) else [got]
    assert len(gots) == len(refs)
    f64 = [x.astype(np.float64) for x in xs]
    for k, (g, rr) in enumerate(zip(gots, refs)):
        rr = np.asarray(rr)
        if rr.dtype.kind not in "biu" or not case.tol.exact:
            want_dt = np.float16 if mode == "fp16" else np.float32
            if rr.dtype != bool and rr.dtype.kind not in "iu":
                assert g.dtype == want_dt, f"output dtype {g.dtype}, expected {want_dt}"
        lin_scale = case.ref(*[np.abs(x) for x in f64]) if case.linear and not isinstance(case.build, tuple) else None
        if isinstance(lin_scale, tuple):
            lin_scale = lin_scale[k]
        acc = case.acc_bound(*f64) if case.acc_bound else None
        check(g, rr, case.tol, mode, lin_scale=lin_scale, acc=acc, what=f"{case.id} [{mode}] output {k}")


def test_every_native_op_is_covered():
    """The table names every native op of OPS.md that the API exposes."""
    native = """relu relu6 leaky_relu prelu elu silu sigmoid hard_sigmoid hard_swish gelu softplus softsign tanh
    scaled_tanh threshold clip exp exp2 log sqrt rsqrt reciprocal square abs sign neg sin cos atan erf floor ceil
    round add sub mul div pow maximum minimum equal not_equal less less_equal greater greater_equal logical_not
    where matmul linear einsum conv conv_transpose max_pool avg_pool global_avg_pool upsample_nearest
    resize_bilinear crop sum mean max min l1_norm l2_norm sum_square log_sum log_sum_exp cumsum softmax
    log_softmax layer_norm rms_norm group_norm batch_norm instance_norm l2_normalize local_response_norm reshape
    transpose flatten squeeze expand_dims concat stack split slice reverse tile broadcast_to pad pixel_shuffle
    pixel_unshuffle space_to_depth depth_to_space gather input image_input cast constant""".split()
    ids = {c.id.split("-")[0] for c in CASES}
    missing = [op for op in native if op not in ids and op != "input"]
    assert not missing, f"ops without a conformance row: {missing}"
    for op in native:
        assert hasattr(af, op), f"af.{op} is missing"


# ------------------------------------------------------------ random shapes (hypothesis)
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402


@st.composite
def broadcast_pair(draw):
    """Two shapes of rank 1-5 that broadcast (each axis equal, or 1 on one side)."""
    out = draw(st.lists(st.integers(1, 5), min_size=1, max_size=5))
    a = [d if draw(st.booleans()) else 1 for d in out]
    b = [d if draw(st.booleans()) else 1 for d in out]
    a = a[draw(st.integers(0, len(a) - 1)):]  # drop leading axes of one side
    return tuple(a), tuple(b)


BIN_RANDOM = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "maximum": np.maximum}


@settings(max_examples=40, deadline=None)
@given(shapes=broadcast_pair(), op=st.sampled_from(sorted(BIN_RANDOM)), seed=st.integers(0, 2**16))
def test_binary_broadcasting_random_shapes(shapes, op, seed):
    """1 ulp16 on any pair of broadcastable rank 1-5 shapes."""
    rng = np.random.default_rng(seed)
    xa, xb = (rng.standard_normal(s).astype(np.float16) for s in shapes)
    a, b = af.input(shapes[0]), af.input(shapes[1])
    got = af.compile(getattr(af, op)(a, b))(xa, xb)
    check(got, BIN_RANDOM[op](xa.astype(np.float64), xb.astype(np.float64)), ULP1, "fp16", what=f"{op}{shapes}")


@st.composite
def shape_and_axes(draw):
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=5)))
    axes = draw(st.one_of(st.none(), st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape), unique=True)))
    return shape, axes


@settings(max_examples=40, deadline=None)
@given(sa=shape_and_axes(), keepdims=st.booleans(), op=st.sampled_from(["sum", "mean", "max", "min"]), seed=st.integers(0, 2**16))
def test_reductions_random_axes(sa, keepdims, op, seed):
    """sum/mean within the fp16-accumulation bound, max/min exact, any axes of rank 1-5."""
    shape, axes = sa
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float16)
    y = getattr(af, op)(af.input(shape), axes=axes, keepdims=keepdims)
    got = af.compile(y)(x)
    ax = None if axes is None else tuple(axes)
    r = np.asarray(getattr(np, op)(x.astype(np.float64), axis=ax, keepdims=keepdims))
    if op in ("max", "min"):
        check(got, r, EXACT, "fp16", what=f"{op}{shape}{axes}")
    else:
        acc = acc_terms(x, ax, keepdims)
        if op == "mean":
            acc = acc / (x.size // max(r.size, 1))
        check(got, r, ACC, "fp16", acc=np.reshape(acc, r.shape), what=f"{op}{shape}{axes}")


@pytest.mark.parametrize("stride", [1, 2])
def test_max_pool_skips_nan(stride):
    """NaN never wins a max pool window, and an all-NaN window gives -inf
    (the engine's max; OPS.md): numpy's max over the input with NaN read
    as -inf. Rows wider than one 16-lane vector, strides 1 and 2."""
    x = np.random.default_rng(7).standard_normal((1, 3, 9, 41)).astype(np.float16)
    x[0, 0, ::3, ::4] = np.nan
    x[0, 1, 2:6, 10:15] = np.nan  # holds whole windows
    net = af.compile(af.max_pool(af.input(x.shape), 3, stride=stride, pad=1))
    want = pool_ref(np.where(np.isnan(x), -np.inf, x).astype(np.float32), kernel=3, stride=stride, pad=1, kind="max")
    got = net(x).astype(np.float32)
    assert np.isneginf(want).any()
    np.testing.assert_array_equal(got, want)
