"""Helpers for the table-driven op conformance suite (tests/test_ops.py).

A :class:`Case` is one op on one set of shapes: how to build it with
aneforge, a numpy reference (float64, computed from the same fp16-rounded
inputs), and a :class:`Tol` that states how far the sim may be from that
reference. Nothing here runs aneforge against itself.

The error bound of one output element ``y`` against the float64 reference
``r`` is, under ``precision="fp16"``::

    ulp  * ulp16(r)                      # final fp16 rounding (0.5 is exact rounding)
  + lin  * 2^-11 * ref(|inputs|)         # multilinear ops (matmul, conv, pools): the
                                         #   same reference on absolute values bounds
                                         #   every partial sum
  + acc  * 2^-11 * sum_i |S_i|           # fp16-accumulating reductions (numerics="ane"):
                                         #   each add of partial sum S_i rounds once
  + rel  * 2^-11 * max|r|                # composites whose fp16 intermediates round
                                         #   (stated per op, in fp16 units of the output scale)

and under ``precision="fp32"``: ``f32 * 2^-23 * (|r| + scale) + tiny`` with
``scale`` the linear / accumulation / max|r| scale above.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

U16 = 2.0**-11  # fp16 unit roundoff
U32 = 2.0**-24


def ulp16(r):
    a = np.abs(np.asarray(r, dtype=np.float64))
    e = np.floor(np.log2(np.maximum(a, 2.0**-14)))
    return 2.0 ** (e - 10)


def ulp32(r):
    a = np.abs(np.asarray(r, dtype=np.float64))
    e = np.floor(np.log2(np.maximum(a, 2.0**-126)))
    return 2.0 ** (e - 23)


@dataclass(frozen=True)
class Tol:
    """The stated tolerance of one op (see the module docstring)."""

    ulp: float = 1.0
    lin: float = 0.0
    acc: float = 0.0
    rel: float = 0.0
    f32: float = 8.0
    exact: bool = False
    atol32: float = 0.0  # absolute term under fp32 (ops whose f32 kernel is an approximation)

    def describe(self) -> str:
        if self.exact:
            return "exact"
        parts = [f"{self.ulp:g} ulp16(r)"]
        if self.lin:
            parts.append(f"{self.lin:g}*2^-11*ref(|x|)")
        if self.acc:
            parts.append(f"{self.acc:g}*2^-11*sum|S_i|")
        if self.rel:
            parts.append(f"{self.rel:g}*2^-11*max|r|")
        return " + ".join(parts) + f"; fp32: {self.f32:g}*2^-23*(|r|+scale)" + (f" + {self.atol32:.2g}" if self.atol32 else "")


EXACT = Tol(ulp=0.0, exact=True, f32=0.0)
ULP1 = Tol(ulp=1.0)


@dataclass
class Arg:
    """One operand: a graph input (default) or a numpy constant baked in."""

    shape: tuple
    gen: Callable[[np.random.Generator, tuple], np.ndarray]
    const: bool = False
    dtype: str = "fp16"


def normal(scale=1.0, shift=0.0):
    return lambda rng, s: rng.standard_normal(s) * scale + shift


def uniform(lo, hi):
    return lambda rng, s: rng.uniform(lo, hi, s)


def away_from_zero(lo=0.5, hi=2.0):
    return lambda rng, s: rng.uniform(lo, hi, s) * rng.choice([-1.0, 1.0], s)


def ints(lo, hi):
    """Small integers (as floats): ties for comparisons, exact sums."""
    return lambda rng, s: rng.integers(lo, hi + 1, s).astype(np.float64)


def arg(shape, gen=None, const=False, dtype="fp16"):
    return Arg(tuple(shape), gen or normal(), const, dtype)


def w(shape, gen=None):
    """A constant (numpy weight) operand."""
    return Arg(tuple(shape), gen or normal(0.5), True)


NP_DTYPE = {"fp16": np.float16, "uint8": np.uint8, "int8": np.int8, "int16": np.int16, "uint16": np.uint16}


@dataclass
class Case:
    id: str
    build: Callable  # (*operands) -> af.Tensor; inputs are Tensors, consts numpy fp16 arrays
    ref: Callable  # (*float64 arrays) -> array
    args: Sequence[Arg]
    tol: Tol = ULP1
    # extra fp16 bound term: (*float64 arrays) -> array (e.g. accumulation partial sums)
    acc_bound: Callable | None = None
    # the reference is multilinear: ref(|x|...) bounds the partial sums
    linear: bool = False
    modes: tuple = ("fp16", "fp32")
    numerics: str = "ane"
    marks: tuple = field(default_factory=tuple)

    def data(self):
        rng = np.random.default_rng(zlib.crc32(self.id.encode()))
        out = []
        for a in self.args:
            v = a.gen(rng, a.shape)
            out.append(np.asarray(v).astype(NP_DTYPE[a.dtype]))
        return out


def acc_terms(x, axes=None, keepdims=False, f=lambda v: v):
    """sum_i |S_i| of the partial sums of f(x) over `axes`, row-major order,
    shaped like the reduction's output (the fp16-accumulation bound)."""
    x = np.asarray(x, dtype=np.float64)
    r = x.ndim
    if axes is None:
        axes = tuple(range(r))
    axes = tuple(sorted(a % r for a in np.atleast_1d(axes)))
    keep = [a for a in range(r) if a not in axes]
    t = np.transpose(f(x), keep + list(axes))
    kshape = [x.shape[a] for a in keep]
    t = t.reshape(kshape + [-1])
    s = np.abs(np.cumsum(t, axis=-1)).sum(axis=-1)
    if keepdims:
        s = s.reshape([1 if a in axes else x.shape[a] for a in range(r)])
    return s


def check(y, r, tol: Tol, mode: str, lin_scale=None, acc=None, what=""):
    """Asserts |y - r| within the bound; reports the worst element."""
    r = np.asarray(r)
    y = np.asarray(y)
    assert y.shape == r.shape, f"{what}: shape {y.shape} != reference {r.shape}"
    if r.dtype == bool or tol.exact and r.dtype.kind in "biu":
        assert y.dtype == r.dtype, f"{what}: dtype {y.dtype} != {r.dtype}"
        np.testing.assert_array_equal(y, r, err_msg=what)
        return
    yf = y.astype(np.float64)
    rf = r.astype(np.float64)
    if tol.exact:
        # exact ops move fp16 values around: equal after rounding the reference.
        want = rf.astype(np.float16).astype(np.float64) if mode == "fp16" else rf.astype(np.float32).astype(np.float64)
        np.testing.assert_array_equal(yf, want, err_msg=what)
        return
    both_nan = np.isnan(yf) & np.isnan(rf)
    same_inf = np.isinf(rf) & (yf == rf)
    err = np.abs(yf - rf)
    maxr = float(np.max(np.abs(rf[np.isfinite(rf)]), initial=0.0))
    if mode == "fp16":
        bound = tol.ulp * ulp16(rf) + 2.0**-24
        if tol.lin and lin_scale is not None:
            bound = bound + tol.lin * U16 * np.abs(lin_scale)
        if tol.acc and acc is not None:
            bound = bound + tol.acc * U16 * acc
        if tol.rel:
            bound = bound + tol.rel * U16 * maxr
        # fp16 saturates: a reference beyond 65504 is +-inf on the engine
        over = np.abs(rf) > 65504
        ok = (err <= bound) | both_nan | same_inf | (over & (np.sign(yf) == np.sign(rf)) & np.isinf(yf))
    else:
        scale = np.abs(rf)
        if lin_scale is not None:
            scale = scale + np.abs(lin_scale)
        if acc is not None:
            scale = scale + acc
        if tol.rel:
            scale = scale + maxr
        bound = tol.f32 * 2.0**-23 * scale + 1e-30 + (tol.ulp * ulp32(rf)) + tol.atol32
        ok = (err <= bound) | both_nan | same_inf
    if not np.all(ok):
        idx = np.unravel_index(np.argmax(np.where(ok, 0, err / np.maximum(bound, 1e-300))), err.shape)
        raise AssertionError(
            f"{what}: {np.count_nonzero(~ok)}/{ok.size} elements outside the stated bound ({tol.describe()}); "
            f"worst at {idx}: got {yf[idx]!r}, reference {rf[idx]!r}, |err| {err[idx]:.3g} > bound {np.broadcast_to(bound, err.shape)[idx]:.3g}"
        )


# ---------------------------------------------------------------- references


def erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _pads4(pad, kh, kw, H, W, stride=(1, 1), dilation=(1, 1)):
    if pad == "same":
        out = []
        for k, n, s, d in ((kh, H, stride[0], dilation[0]), (kw, W, stride[1], dilation[1])):
            o = -(-n // s)
            total = max((o - 1) * s + d * (k - 1) + 1 - n, 0)
            out.append((total // 2, total - total // 2))
        return out[0][0], out[1][0], out[0][1], out[1][1]
    if isinstance(pad, int):
        return pad, pad, pad, pad
    if len(pad) == 2:
        return pad[0], pad[1], pad[0], pad[1]
    return tuple(pad)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv_ref(x, W, b=None, stride=1, pad=0, dilation=1, groups=1):
    one_d = x.ndim == 3
    if one_d:
        x = x[:, :, None, :]
        W = W[:, :, None, :]
        stride, dilation = (1, _pair(stride)[-1]), (1, _pair(dilation)[-1])
        if pad != "same":
            p = pad if isinstance(pad, int) else pad[0]
            pad = (0, p)
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    N, C, H, Wd = x.shape
    O, Cg, kh, kw = W.shape
    t, l, bo, r = _pads4(pad, kh, kw, H, Wd, (sh, sw), (dh, dw))
    if one_d:
        t = bo = 0
    xp = np.pad(x, ((0, 0), (0, 0), (t, bo), (l, r)))
    Ho = (H + t + bo - dh * (kh - 1) - 1) // sh + 1
    Wo = (Wd + l + r - dw * (kw - 1) - 1) // sw + 1
    Og = O // groups
    out = np.zeros((N, O, Ho, Wo))
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * Cg:(g + 1) * Cg, i * dh: i * dh + sh * (Ho - 1) + 1: sh, j * dw: j * dw + sw * (Wo - 1) + 1: sw]
                out[:, g * Og:(g + 1) * Og] += np.einsum("nchw,oc->nohw", patch, W[g * Og:(g + 1) * Og, :, i, j])
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out[:, :, 0, :] if one_d else out


def conv_transpose_ref(x, W, b=None, stride=1, pad=0, output_pad=0, groups=1, dilation=1):
    """PyTorch ConvTranspose2d semantics; W [C, O/groups, kh, kw]."""
    one_d = x.ndim == 3
    if one_d:
        x = x[:, :, None, :]
        W = W[:, :, None, :]
        stride = (1, _pair(stride)[-1])
        p = pad if isinstance(pad, int) else pad[0]
        pad = (0, p)
        output_pad = (0, _pair(output_pad)[-1])
        dilation = (1, _pair(dilation)[-1])
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    oph, opw = _pair(output_pad)
    N, C, H, Wd = x.shape
    _, Og, kh, kw = W.shape
    t, l, bo, r = _pads4(pad, kh, kw, H, Wd)
    Cg = C // groups
    FH = (H - 1) * sh + dh * (kh - 1) + 1 + oph
    FW = (Wd - 1) * sw + dw * (kw - 1) + 1 + opw
    full = np.zeros((N, Og * groups, FH, FW))
    for g in range(groups):
        xs = x[:, g * Cg:(g + 1) * Cg]
        ws = W[g * Cg:(g + 1) * Cg]
        for i in range(kh):
            for j in range(kw):
                contrib = np.einsum("nchw,co->nohw", xs, ws[:, :, i, j])
                full[:, g * Og:(g + 1) * Og, i * dh: i * dh + sh * (H - 1) + 1: sh, j * dw: j * dw + sw * (Wd - 1) + 1: sw] += contrib
    Ho = FH - t - bo
    Wo = FW - l - r
    out = full[:, :, t: t + Ho, l: l + Wo]
    if b is not None:
        out = out + b.reshape(1, -1, 1, 1)
    return out[:, :, 0, :] if one_d else out


def pool_ref(x, kernel, stride=None, pad=0, ceil_mode=False, kind="max", count_include_pad=False):
    """PyTorch pooling semantics (the last window must start inside the
    input or its left padding)."""
    one_d = x.ndim == 3
    if one_d:
        x = x[:, :, None, :]
        kernel = (1, _pair(kernel)[-1])
        stride = None if stride is None else (1, _pair(stride)[-1])
        pad = (0, pad if isinstance(pad, int) else pad[0])
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride) if stride is not None else (kh, kw)
    N, C, H, Wd = x.shape
    t, l, bo, r = _pads4(pad, kh, kw, H, Wd, (sh, sw))

    def osize(n, k, s, p0, p1):
        span = n + p0 + p1 - k
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= n + p0:
            o -= 1
        return o

    Ho, Wo = osize(H, kh, sh, t, bo), osize(Wd, kw, sw, l, r)
    out = np.zeros((N, C, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            h0, w0 = i * sh - t, j * sw - l
            h1, w1 = h0 + kh, w0 + kw
            hs, ws_ = max(h0, 0), max(w0, 0)
            he, we = min(h1, H), min(w1, Wd)
            win = x[:, :, hs:he, ws_:we]
            if kind == "max":
                out[:, :, i, j] = win.max(axis=(2, 3))
            else:
                if count_include_pad:
                    cnt = (min(h1, H + bo) - h0) * (min(w1, Wd + r) - w0)
                else:
                    cnt = (he - hs) * (we - ws_)
                out[:, :, i, j] = win.sum(axis=(2, 3)) / cnt
    return out[:, :, 0, :] if one_d else out


def resize_bilinear_ref(x, size, align_corners):
    N, C, H, W = x.shape
    oh, ow = size

    def coords(o, n):
        d = np.arange(o, dtype=np.float64)
        if align_corners:
            src = d * (n - 1) / (o - 1) if o > 1 else np.zeros(o)
        else:
            src = np.maximum((d + 0.5) * n / o - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n - 1)
        i1 = np.minimum(i0 + 1, n - 1)
        return i0, i1, src - i0

    h0, h1, fh = coords(oh, H)
    w0, w1, fw = coords(ow, W)
    top = x[:, :, h0][:, :, :, w0] * (1 - fw) + x[:, :, h0][:, :, :, w1] * fw
    bot = x[:, :, h1][:, :, :, w0] * (1 - fw) + x[:, :, h1][:, :, :, w1] * fw
    return top * (1 - fh)[:, None] + bot * fh[:, None]


def layer_norm_ref(x, axes, gamma=None, beta=None, eps=1e-5):
    axes = tuple(np.atleast_1d(axes))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    nshape = [x.shape[a] if (a in axes or a - x.ndim in axes) else 1 for a in range(x.ndim)]
    if gamma is not None:
        y = y * gamma.reshape(nshape)
    if beta is not None:
        y = y + beta.reshape(nshape)
    return y


def rms_norm_ref(x, axes, gamma=None, eps=1e-6):
    axes = tuple(np.atleast_1d(axes))
    y = x / np.sqrt((x**2).mean(axis=axes, keepdims=True) + eps)
    if gamma is not None:
        y = y * gamma.reshape([x.shape[a] if (a in axes or a - x.ndim in axes) else 1 for a in range(x.ndim)])
    return y


def group_norm_ref(x, groups, gamma=None, beta=None, eps=1e-5):
    N, C = x.shape[:2]
    g = x.reshape(N, groups, -1)
    mu = g.mean(-1, keepdims=True)
    var = ((g - mu) ** 2).mean(-1, keepdims=True)
    y = ((g - mu) / np.sqrt(var + eps)).reshape(x.shape)
    cs = [C] + [1] * (x.ndim - 2)
    if gamma is not None:
        y = y * gamma.reshape(cs)
    if beta is not None:
        y = y + beta.reshape(cs)
    return y


def softmax_ref(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def lrn_ref(x, size, alpha=1e-4, beta=0.75, k=1.0):
    C = x.shape[1]
    sq = x**2
    s = np.zeros_like(x)
    lo, hi = (size - 1) // 2, size // 2
    for c in range(C):
        s[:, c] = sq[:, max(0, c - lo): min(C, c + hi + 1)].sum(axis=1)
    return x / (k + alpha / size * s) ** beta


def cumsum_ref(x, axis, exclusive=False, reverse=False):
    if reverse:
        x = np.flip(x, axis)
    y = np.cumsum(x, axis=axis)
    if exclusive:
        y = y - x
    if reverse:
        y = np.flip(y, axis)
    return y


def pad_ref(x, pads, mode="constant", value=0.0):
    full = [(0, 0)] * (x.ndim - len(pads)) + list(pads)
    if mode == "constant":
        return np.pad(x, full, constant_values=value)
    return np.pad(x, full, mode={"reflect": "reflect", "replicate": "edge"}[mode])


def pixel_shuffle_ref(x, r):
    N, C, H, W = x.shape
    c = C // (r * r)
    return x.reshape(N, c, r, r, H, W).transpose(0, 1, 4, 2, 5, 3).reshape(N, c, H * r, W * r)


def pixel_unshuffle_ref(x, r):
    N, C, H, W = x.shape
    return x.reshape(N, C, H // r, r, W // r, r).transpose(0, 1, 3, 5, 2, 4).reshape(N, C * r * r, H // r, W // r)


def space_to_depth_ref(x, b):
    """TensorFlow / ONNX SpaceToDepth (channel index = (bh*b + bw)*C + c)."""
    N, C, H, W = x.shape
    return x.reshape(N, C, H // b, b, W // b, b).transpose(0, 3, 5, 1, 2, 4).reshape(N, C * b * b, H // b, W // b)


def depth_to_space_ref(x, b):
    """ONNX DepthToSpace, DCR mode."""
    N, C, H, W = x.shape
    c = C // (b * b)
    return x.reshape(N, b, b, c, H, W).transpose(0, 3, 4, 1, 5, 2).reshape(N, c, H * b, W * b)
