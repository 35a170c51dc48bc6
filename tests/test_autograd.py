"""Every gradient rule against central finite differences (the oracle),
never against itself.

Each case builds ``y = f(*inputs)`` and the scalar ``L = sum(y * R)`` with a
fixed random ``R``; ``af.grad(L, inputs)`` compiled in ``precision="fp32"``
must match central differences of ``L`` (the forward compiled in fp32 too):

    |autograd - fd| <= FD_RTOL * max(1, max|fd|)          (FD_RTOL = 5e-3)

(f32 central differences with step 1e-2 on smooth inputs: truncation and
f32 cancellation are both well below this). Then the same gradient compiled
in the engine's fp16 must match the fp32 one within the case's stated bound

    |g16 - g32| <= FP16_RTOL * max|g32|                    (3e-2 unless stated)

which covers fp16 storage of every forward and backward intermediate.
Inputs are drawn away from kinks (relu at 0, clip bounds, pooling ties).
"""

from __future__ import annotations

import numpy as np
import pytest

import aneforge as af

FD_RTOL = 5e-3
FD_EPS = 1e-2
FP16_RTOL = 3e-2


def normal(lo=-2.0, hi=2.0, away=None):
    def g(rng, shape):
        v = rng.uniform(lo, hi, shape)
        if away is not None:
            for k in np.atleast_1d(away):
                near = np.abs(v - k) < 0.15
                v[near] = k + 0.15 * np.where(v[near] >= k, 1, -1) + 0.05 * np.sign(v[near] - k + 1e-9)
        return v.astype(np.float32)

    return g


POS = normal(0.3, 2.0)


def DISTINCT(rng, shape):
    """Values at least 0.05 apart, so no max/min tie is within the FD step."""
    n = int(np.prod(shape))
    return (rng.permutation(n).reshape(shape) * 0.05 - n * 0.025).astype(np.float32)

ANY = normal(-2.0, 2.0)


class Case:
    def __init__(self, id, fn, shapes, gens=None, fp16_rtol=FP16_RTOL, wrt=None):
        self.id, self.fn, self.shapes = id, fn, shapes
        self.gens = gens or [ANY] * len(shapes)
        if callable(self.gens):
            self.gens = [self.gens] * len(shapes)
        self.fp16_rtol = fp16_rtol
        self.wrt = list(range(len(shapes))) if wrt is None else wrt


CASES: list[Case] = []


def case(*a, **k):
    CASES.append(Case(*a, **k))


# --- elementwise: unary -------------------------------------------------------
UNARY = {
    "relu": (af.relu, normal(away=0)),
    "relu6": (af.relu6, normal(-2, 8, away=[0, 6])),
    "leaky_relu": (lambda x: af.leaky_relu(x, 0.1), normal(away=0)),
    "elu": (lambda x: af.elu(x, 1.0), normal(away=0)),
    "silu": (af.silu, ANY),
    "sigmoid": (af.sigmoid, ANY),
    "hard_sigmoid": (lambda x: af.hard_sigmoid(x, 0.2, 0.5), normal(-2, 2)),
    "hard_swish": (af.hard_swish, normal(-4, 4, away=[-3, 3])),
    "gelu-exact": (lambda x: af.gelu(x, "exact"), ANY),
    "gelu-tanh": (lambda x: af.gelu(x, "tanh"), ANY),
    "softplus": (af.softplus, ANY),
    "softsign": (af.softsign, normal(away=0)),
    "tanh": (af.tanh, ANY),
    "scaled_tanh": (lambda x: af.scaled_tanh(x, 1.5, 0.7), ANY),
    "threshold": (lambda x: af.threshold(x, 0.5), normal(away=0.5)),
    "clip": (lambda x: af.clip(x, -1, 1), normal(away=[-1, 1])),
    "exp": (af.exp, ANY),
    "exp2": (af.exp2, ANY),
    "log": (af.log, POS),
    "sqrt": (af.sqrt, POS),
    "rsqrt": (af.rsqrt, normal(0.5, 2)),
    "reciprocal": (af.reciprocal, normal(0.5, 2)),
    "square": (af.square, ANY),
    "abs": (af.abs, normal(away=0)),
    "neg": (af.neg, ANY),
    "sin": (af.sin, ANY),
    "cos": (af.cos, ANY),
    "atan": (af.atan, ANY),
    "erf": (af.erf, ANY),
}
for name, (fn, gen) in UNARY.items():
    case(f"unary-{name}", fn, [(3, 5)], [gen])

# --- elementwise: binary with broadcasting, where, cast ------------------------
case("add-broadcast", lambda a, b: a + b, [(2, 3, 4), (3, 1)])
case("sub-broadcast", lambda a, b: a - b, [(3, 1), (2, 3, 4)])
case("mul-broadcast", lambda a, b: a * b, [(2, 3, 4), (4,)])
case("div-broadcast", lambda a, b: a / b, [(2, 3, 4), (1, 4)], [ANY, normal(0.5, 2)])
case("pow", lambda a, b: af.pow(a, b), [(3, 4), (3, 4)], [POS, normal(-1.5, 1.5)])
case("maximum", lambda a, b: af.maximum(a, b), [(3, 4), (3, 4)], [DISTINCT, lambda r, s: DISTINCT(r, s) + 0.025])
case("minimum-broadcast", lambda a, b: af.minimum(a, b), [(3, 4), (4,)])
case("scalar-ops", lambda a: (a * 2.0 - 1.0) / 3.0 + 0.5, [(3, 4)])
COND = np.array([[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 0, 1]], np.float32)
case("where-broadcast", lambda a, b: af.where(af.constant(COND) > 0, a, b), [(3, 4), (4,)])
case("cast-fp32-roundtrip", lambda a: af.exp(a.cast("fp32")).cast("fp16"), [(3, 4)])

# --- linear algebra -------------------------------------------------------------
case("matmul-2d", lambda a, b: a @ b, [(3, 4), (4, 5)])
case("matmul-batch-broadcast", lambda a, b: a @ b, [(2, 3, 4), (4, 5)])
case("matmul-broadcast-lhs", lambda a, b: a @ b, [(3, 4), (2, 4, 5)])
case("matmul-batch-1", lambda a, b: a @ b, [(1, 3, 4), (2, 4, 5)])
case("matmul-transpose-flags", lambda a, b: af.matmul(a, b, transpose_a=True, transpose_b=True), [(2, 4, 3), (5, 4)])
case("matmul-vector", lambda a, b: a @ b, [(4,), (4, 3)])
case("linear-bias", lambda x, w, b: af.linear(x, w, b), [(2, 3, 4), (5, 4), (5,)])
case("einsum-bij,bjk", lambda a, b: af.einsum("bij,bjk->bik", a, b), [(2, 3, 4), (2, 4, 2)])

# --- conv / pool / resize -------------------------------------------------------
case("conv-pad1", lambda x, w: af.conv(x, w, pad=1), [(2, 3, 5, 5), (4, 3, 3, 3)], fp16_rtol=4e-2)
case("conv-stride2-dil2-groups2", lambda x, w: af.conv(x, w, stride=2, dilation=2, pad=(1, 2), groups=2), [(1, 4, 7, 8), (6, 2, 3, 2)], fp16_rtol=4e-2)
case("conv-same-stride2-bias", lambda x, w, b: af.conv(x, w, b, stride=2, pad="same"), [(1, 2, 6, 7), (3, 2, 3, 3), (3,)], fp16_rtol=4e-2)
case("conv-depthwise", lambda x, w: af.conv(x, w, pad=1, groups=3), [(1, 3, 5, 5), (3, 1, 3, 3)], fp16_rtol=4e-2)
case("conv-1d", lambda x, w: af.conv(x, w, stride=2, pad=1), [(2, 3, 9), (4, 3, 3)], fp16_rtol=4e-2)
case("conv_transpose-stride2-groups", lambda x, w, b: af.conv_transpose(x, w, b, stride=2, pad=1, output_pad=1, groups=2), [(1, 4, 3, 4), (4, 3, 3, 3), (6,)], fp16_rtol=4e-2)
case("max_pool-overlapping-padded", lambda x: af.max_pool(x, 3, stride=2, pad=1), [(2, 2, 7, 7)], [DISTINCT])
case("max_pool-ceil", lambda x: af.max_pool(x, 2, stride=2, ceil_mode=True), [(1, 2, 5, 5)], [DISTINCT])
case("avg_pool-overlapping", lambda x: af.avg_pool(x, 3, stride=1, pad=1), [(1, 2, 5, 6)])
case("avg_pool-include-pad", lambda x: af.avg_pool(x, 3, stride=2, pad=1, count_include_pad=True), [(1, 2, 5, 5)])
case("global_avg_pool", af.global_avg_pool, [(2, 3, 4, 4)])
case("upsample_nearest", lambda x: af.upsample_nearest(x, (2, 3)), [(1, 2, 3, 2)])

# --- reductions -------------------------------------------------------------------
for kind, gen in [("sum", ANY), ("mean", ANY), ("max", DISTINCT), ("min", DISTINCT), ("prod", normal(0.5, 1.5)), ("l1_norm", normal(away=0)),
                  ("l2_norm", ANY), ("sum_square", ANY), ("log_sum", POS), ("log_sum_exp", ANY)]:
    fn = getattr(af, kind)
    case(f"{kind}-axis1-keep", lambda x, fn=fn: fn(x, 1, True), [(2, 4, 3)], [gen])
    case(f"{kind}-axes02", lambda x, fn=fn: fn(x, (0, 2)), [(2, 4, 3)], [gen])
case("sum-all", lambda x: af.sum(x), [(3, 4)])
case("cumsum", lambda x: af.cumsum(x, 1), [(2, 5)])
case("cumsum-exclusive-reverse", lambda x: af.cumsum(x, 0, exclusive=True, reverse=True), [(4, 3)])

# --- normalisation -------------------------------------------------------------
case("softmax-last", lambda x: af.softmax(x, -1), [(3, 5)])
case("softmax-axis0", lambda x: af.softmax(x, 0), [(4, 3)])
case("log_softmax", lambda x: af.log_softmax(x, -1), [(3, 5)])
case("layer_norm-affine", lambda x, g, b: af.layer_norm(x, -1, g, b), [(3, 6), (6,), (6,)], fp16_rtol=5e-2)
case("layer_norm-two-axes", lambda x: af.layer_norm(x, (1, 2)), [(2, 3, 4)], fp16_rtol=5e-2)
case("rms_norm-gamma", lambda x, g: af.rms_norm(x, -1, g), [(3, 6), (6,)], fp16_rtol=5e-2)
case("group_norm", lambda x, g, b: af.group_norm(x, 2, g, b), [(2, 4, 3, 3), (4,), (4,)], fp16_rtol=5e-2)
case("instance_norm", lambda x: af.instance_norm(x), [(2, 3, 4, 4)], fp16_rtol=5e-2)
case("batch_norm-inference", lambda x, m, v, g, b: af.batch_norm(x, m, v, g, b), [(2, 3, 2, 2), (3,), (3,), (3,), (3,)], [ANY, ANY, POS, ANY, ANY])
case("l2_normalize", lambda x: af.l2_normalize(x, -1), [(3, 5)])

# --- shape ---------------------------------------------------------------------------
case("reshape", lambda x: x.reshape((4, 6)) * af.constant(np.arange(24, dtype=np.float32).reshape(4, 6) / 10), [(2, 3, 4)])
case("transpose", lambda x: x.transpose((2, 0, 1)), [(2, 3, 4)])
case("flatten-squeeze-expand", lambda x: af.flatten(x, 1, 2).expand_dims(0).squeeze(0), [(2, 3, 4)])
case("concat", lambda a, b: af.concat([a, b, a], axis=1), [(2, 3), (2, 2)])
case("stack", lambda a, b: af.stack([a, b], axis=0), [(2, 3), (2, 3)])
case("split", lambda x: af.split(x, [1, 3], axis=1)[1], [(2, 4)])
case("slice-strided-negative", lambda x: x[1:, ::-2, 1:4:2], [(3, 5, 5)])
case("reverse", lambda x: af.reverse(x, (0, 1)), [(3, 4)])
case("tile", lambda x: af.tile(x, (2, 3)), [(2, 3)])
case("broadcast_to", lambda x: af.broadcast_to(x, (2, 3, 4)), [(3, 1)])
case("pad-constant", lambda x: af.pad(x, [(1, 2), (0, 1)]), [(2, 3)])
case("pixel_shuffle", lambda x: af.pixel_shuffle(x, 2), [(1, 8, 2, 3)])
case("gather-repeated", lambda x: af.gather(x, [2, 0, 2, 1], axis=1), [(2, 3, 2)])
case("crop", lambda x: af.crop(x, [(1, 0), (0, 1)]), [(1, 2, 4, 4)])

# --- a small network, end to end ---------------------------------------------------------
case(
    "mlp-cross-entropy",
    lambda x, w1, w2: af.losses.softmax_cross_entropy(af.linear(af.gelu(af.linear(x, w1)), w2), af.constant(np.array([1, 0, 2], np.float32))),
    [(3, 4), (5, 4), (3, 5)],
)


def _setup(c: Case):
    rng = np.random.default_rng(sum(map(ord, c.id)))
    vals = [g(rng, s) for g, s in zip(c.gens, c.shapes)]
    # fp16-representable inputs so both precisions see the same numbers.
    vals = [v.astype(np.float16).astype(np.float32) for v in vals]
    xs = [af.input(s) for s in c.shapes]
    y = c.fn(*xs)
    R = af.constant(rng.uniform(-1, 1, tuple(y.shape)).astype(np.float32))
    L = af.sum(y * R)
    return xs, vals, L


def _grads(c, xs, vals, L, precision):
    wrt = [xs[i] for i in c.wrt]
    gs = af.grad(L, wrt)
    net = af.compile([L] + gs, precision=precision)
    out = net(*vals)
    return [np.asarray(o, np.float64) for o in out[1:]]


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_gradient_matches_finite_differences(c):
    xs, vals, L = _setup(c)
    g32 = _grads(c, xs, vals, L, "fp32")
    f = af.compile(L, precision="fp32")
    for k, i in enumerate(c.wrt):
        fd = np.zeros(vals[i].shape)
        for j in np.ndindex(vals[i].shape):
            vp = [v.copy() for v in vals]
            vm = [v.copy() for v in vals]
            vp[i][j] += FD_EPS
            vm[i][j] -= FD_EPS
            fd[j] = (float(np.asarray(f(*vp)).reshape(-1)[0]) - float(np.asarray(f(*vm)).reshape(-1)[0])) / (2 * FD_EPS)
        err = np.abs(g32[k] - fd).max()
        bound = FD_RTOL * max(1.0, np.abs(fd).max())
        assert err <= bound, f"input {i}: max |autograd - fd| = {err:.3g} > {bound:.3g}\nautograd {g32[k].ravel()[:8]}\nfd       {fd.ravel()[:8]}"


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_fp16_gradient_within_stated_bound(c):
    xs, vals, L = _setup(c)
    g32 = _grads(c, xs, vals, L, "fp32")
    g16 = _grads(c, xs, vals, L, "fp16")
    for k in range(len(g32)):
        scale = max(np.abs(g32[k]).max(), 1e-3)
        err = np.abs(g16[k] - g32[k]).max()
        assert np.isfinite(g16[k]).all()
        assert err <= c.fp16_rtol * scale, f"input {c.wrt[k]}: fp16 error {err:.3g} > {c.fp16_rtol} x {scale:.3g}"


def test_rule_table_covers_every_differentiable_op_family():
    # Each op family of the core appears in at least one case above.
    names = " ".join(c.id for c in CASES)
    for fam in ["unary", "add", "mul", "div", "pow", "maximum", "where", "cast", "matmul", "conv", "conv_transpose",
                "max_pool", "avg_pool", "upsample", "sum", "mean", "max", "prod", "log_sum_exp", "cumsum", "softmax",
                "log_softmax", "layer_norm", "rms_norm", "group_norm", "batch_norm", "reshape", "transpose", "concat",
                "slice", "tile", "broadcast_to", "pad", "gather"]:
        assert fam in names, fam
