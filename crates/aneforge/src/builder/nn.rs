//! Layers: conv, pooling, resize, reductions, softmax and the norms.

use super::{add, constant, div, maximum, mul, reshape, scalar_like, sqrt, sub, transpose};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::fact::{fmt_shape, norm_axes, norm_axis};
use crate::graph::Tensor;
use crate::ops::conv::Window;
use crate::ops::*;

/// Padding of a conv or pool: explicit per side, or "same" (output size =
/// ceil(input / stride), extra padding at the end as in TensorFlow/PyTorch).
#[derive(Clone, Debug, PartialEq)]
pub enum PadSpec {
    /// top, left, bottom, right
    Explicit([usize; 4]),
    Same,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConvArgs {
    pub stride: [usize; 2],
    pub pad: PadSpec,
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Default for ConvArgs {
    fn default() -> Self {
        ConvArgs { stride: [1, 1], pad: PadSpec::Explicit([0; 4]), dilation: [1, 1], groups: 1 }
    }
}

fn resolve_pad(pad: &PadSpec, input: [usize; 2], kernel: [usize; 2], stride: [usize; 2], dilation: [usize; 2]) -> [usize; 4] {
    match pad {
        PadSpec::Explicit(p) => *p,
        PadSpec::Same => {
            let mut p = [0; 4];
            for ax in 0..2 {
                let out = input[ax].div_ceil(stride[ax].max(1));
                let eff = dilation[ax] * (kernel[ax].max(1) - 1) + 1;
                let total = ((out - 1) * stride[ax] + eff).saturating_sub(input[ax]);
                p[ax] = total / 2;
                p[ax + 2] = total - total / 2;
            }
            p
        }
    }
}

/// Lifts a 1-D conv/pool input [N, C, L] to [N, C, 1, L]; returns whether it did.
fn lift_1d(op: &str, x: &Tensor) -> Result<(Tensor, bool)> {
    match x.rank() {
        3 => {
            let s = x.shape();
            Ok((reshape(x, &[s[0], s[1], 1, s[2]])?, true))
        }
        4 => Ok((x.clone(), false)),
        _ => Err(Error::shape(op, format!("expects x [N, C, H, W] (2-D) or [N, C, L] (1-D), got {}", fmt_shape(x.shape())))),
    }
}

/// A 1-D conv weight [A, B, k] becomes [A, B, 1, k]; any weight must end up rank 4.
fn lift_weight_1d(op: &str, w: &Tensor, lifted: bool, layout: &str) -> Result<Tensor> {
    let w = if lifted && w.rank() == 3 {
        let s = w.shape();
        reshape(w, &[s[0], s[1], 1, s[2]])?
    } else {
        w.clone()
    };
    if w.rank() != 4 {
        return Err(Error::shape(op, format!("weight must be {layout}, got {}", fmt_shape(w.shape()))));
    }
    Ok(w)
}

fn drop_1d(y: Tensor, lifted: bool) -> Result<Tensor> {
    if !lifted {
        return Ok(y);
    }
    let s = y.shape().to_vec();
    reshape(&y, &[s[0], s[1], s[3]])
}

/// `conv(x, W, b)`: 2-D (x [N, C, H, W], W [O, C/groups, kh, kw]) or 1-D
/// (x [N, C, L], W [O, C/groups, k]).
pub fn conv(x: &Tensor, w: &Tensor, b: Option<&Tensor>, args: &ConvArgs) -> Result<Tensor> {
    let (x, lifted) = lift_1d("conv", x)?;
    let w = lift_weight_1d("conv", w, lifted, "[O, C/groups, kh, kw]")?;
    let kernel = [w.shape()[2], w.shape()[3]];
    let (mut stride, mut dilation) = (args.stride, args.dilation);
    if lifted {
        stride = [1, args.stride[1]];
        dilation = [1, args.dilation[1]];
    }
    let mut pad = resolve_pad(&args.pad, [x.shape()[2], x.shape()[3]], kernel, stride, dilation);
    if lifted {
        pad = [0, pad[1], 0, pad[3]];
    }
    let window = Window { kernel, stride, pad, dilation };
    let mut inputs = vec![x, w];
    if let Some(b) = b {
        inputs.push(b.clone());
    }
    let y = Tensor::build(Op::Conv(Conv { window, groups: args.groups, bias: b.is_some(), residual: false, act: None }), inputs)?;
    drop_1d(y, lifted)
}

/// Transposed convolution; W is [C, O/groups, kh, kw] (PyTorch layout).
pub fn conv_transpose(x: &Tensor, w: &Tensor, b: Option<&Tensor>, args: &ConvArgs, output_pad: [usize; 2]) -> Result<Tensor> {
    let (x, lifted) = lift_1d("conv_transpose", x)?;
    let w = lift_weight_1d("conv_transpose", w, lifted, "[C, O/groups, kh, kw]")?;
    let mut pad = match args.pad {
        PadSpec::Explicit(p) => p,
        PadSpec::Same => return Err(Error::value("conv_transpose", "pad=\"same\" is not defined for conv_transpose; give explicit padding")),
    };
    let (mut stride, mut dilation, mut output_pad) = (args.stride, args.dilation, output_pad);
    // A lifted 1-D input has a size-1 H axis: the 1-D stride, pad and
    // output_pad apply to W only, as in `conv`.
    if lifted {
        pad = [0, pad[1], 0, pad[3]];
        stride = [1, stride[1]];
        dilation = [1, dilation[1]];
        output_pad = [0, output_pad[1]];
    }
    let window = Window { kernel: [w.shape()[2], w.shape()[3]], stride, pad, dilation };
    let mut inputs = vec![x, w];
    if let Some(b) = b {
        inputs.push(b.clone());
    }
    let op = ConvTranspose { window, output_pad, groups: args.groups, bias: b.is_some() };
    drop_1d(Tensor::build(Op::ConvTranspose(op), inputs)?, lifted)
}

/// Batched matmul with numpy semantics (1-D operands are promoted and the
/// promoted axis dropped again).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_t(a, b, false, false)
}

pub fn matmul_t(a: &Tensor, b: &Tensor, transpose_a: bool, transpose_b: bool) -> Result<Tensor> {
    let a1 = a.rank() == 1;
    let b1 = b.rank() == 1;
    let a2 = if a1 { reshape(a, &[1, a.shape()[0]])? } else { a.clone() };
    let b2 = if b1 { reshape(b, &[b.shape()[0], 1])? } else { b.clone() };
    let op = MatMul { transpose_a, transpose_b, bias: false, act: None };
    // For promoted 1-D operands, name the shapes the user passed (the
    // message is rebuilt, not nested, so "matmul:" and the location appear once).
    let y = Tensor::build(Op::MatMul(op), vec![a2, b2]).map_err(|e| match e {
        Error::Shape { op, msg } if a1 || b1 => {
            Error::shape(op, format!("operands {} and {}: {msg}", fmt_shape(a.shape()), fmt_shape(b.shape())))
        }
        e => e,
    })?;
    if !a1 && !b1 {
        return Ok(y);
    }
    let mut s = y.shape().to_vec();
    let r = s.len();
    if b1 {
        s.remove(r - 1);
    }
    if a1 {
        s.remove(r - 2);
    }
    reshape(&y, &s)
}

/// `x @ W.T + b` with W [out, in] (PyTorch layout).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    if w.rank() != 2 {
        return Err(Error::shape("linear", format!("weight must be [out, in], got {}", fmt_shape(w.shape()))));
    }
    let k = *x.shape().last().unwrap_or(&0);
    if w.shape()[1] != k {
        return Err(Error::shape(
            "linear",
            format!("x {} has {k} features but weight {} expects {}; the weight is [out, in]", fmt_shape(x.shape()), fmt_shape(w.shape()), w.shape()[1]),
        ));
    }
    let y = matmul_t(x, w, false, true)?;
    match b {
        Some(b) => add(&y, b),
        None => Ok(y),
    }
}

pub fn max_pool(x: &Tensor, kernel: [usize; 2], stride: Option<[usize; 2]>, pad: &PadSpec, ceil_mode: bool) -> Result<Tensor> {
    pool(x, PoolKind::Max, kernel, stride, pad, ceil_mode)
}

pub fn avg_pool(x: &Tensor, kernel: [usize; 2], stride: Option<[usize; 2]>, pad: &PadSpec, ceil_mode: bool, count_include_pad: bool) -> Result<Tensor> {
    pool(x, PoolKind::Avg { count_include_pad }, kernel, stride, pad, ceil_mode)
}

fn pool(x: &Tensor, kind: PoolKind, kernel: [usize; 2], stride: Option<[usize; 2]>, pad: &PadSpec, ceil_mode: bool) -> Result<Tensor> {
    let op = if kind == PoolKind::Max { "max_pool" } else { "avg_pool" };
    let (x, lifted) = lift_1d(op, x)?;
    let (kernel, stride) = if lifted {
        ([1, kernel[1]], [1, stride.unwrap_or(kernel)[1]])
    } else {
        (kernel, stride.unwrap_or(kernel))
    };
    let mut p = resolve_pad(pad, [x.shape()[2], x.shape()[3]], kernel, stride, [1, 1]);
    if lifted {
        p = [0, p[1], 0, p[3]];
    }
    let window = Window { kernel, stride, pad: p, dilation: [1, 1] };
    drop_1d(Tensor::build(Op::Pool(Pool { kind, window, ceil_mode }), vec![x])?, lifted)
}

/// Mean over H and W, keeping them as size-1 axes.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    if x.rank() < 3 {
        return Err(Error::shape("global_avg_pool", format!("expects [N, C, ...spatial], got {}", fmt_shape(x.shape()))));
    }
    let axes: Vec<i64> = (2..x.rank() as i64).collect();
    reduce(x, ReduceKind::Mean, Some(&axes), true)
}

pub fn upsample_nearest(x: &Tensor, scale: [usize; 2]) -> Result<Tensor> {
    if x.rank() != 4 || scale.contains(&0) {
        return Err(Error::shape("upsample_nearest", format!("expects x [N, C, H, W] and integer scales >= 1, got {} and {:?}", fmt_shape(x.shape()), scale)));
    }
    let s = x.shape();
    resize(x, [s[2] * scale[0], s[3] * scale[1]], ResizeMode::Nearest)
}

pub fn resize(x: &Tensor, size: [usize; 2], mode: ResizeMode) -> Result<Tensor> {
    Tensor::build(Op::Resize(Resize { mode, size }), vec![x.clone()])
}

pub fn reduce(x: &Tensor, kind: ReduceKind, axes: Option<&[i64]>, keepdims: bool) -> Result<Tensor> {
    let r = Reduce::new(kind, axes, keepdims, x.rank()).map_err(|e| x.err_here(e))?;
    Tensor::build(Op::Reduce(r), vec![x.clone()])
}

pub fn cumsum(x: &Tensor, axis: i64, exclusive: bool, reverse: bool) -> Result<Tensor> {
    let axis = norm_axis("cumsum", axis, x.rank())?;
    Tensor::build(Op::CumSum(CumSum { axis, exclusive, reverse }), vec![x.clone()])
}

pub fn softmax(x: &Tensor, axis: i64) -> Result<Tensor> {
    let axis = norm_axis("softmax", axis, x.rank())?;
    Tensor::build(Op::Softmax(Softmax { axis, log: false }), vec![x.clone()])
}

pub fn log_softmax(x: &Tensor, axis: i64) -> Result<Tensor> {
    let axis = norm_axis("log_softmax", axis, x.rank())?;
    Tensor::build(Op::Softmax(Softmax { axis, log: true }), vec![x.clone()])
}

/// Moves `axes` to the end, applies `f` over the trailing block, moves back.
fn over_trailing(x: &Tensor, op: &str, axes: &[i64], f: impl FnOnce(&Tensor, usize) -> Result<Tensor>) -> Result<Tensor> {
    let axes = norm_axes(op, axes, x.rank())?;
    if axes.is_empty() {
        return Err(Error::value(op, "axes is empty"));
    }
    let r = x.rank();
    let trailing = axes.iter().enumerate().all(|(k, &a)| a == r - axes.len() + k);
    if trailing {
        return f(x, axes.len());
    }
    let mut perm: Vec<usize> = (0..r).filter(|a| !axes.contains(a)).collect();
    perm.extend(&axes);
    let mut inv = vec![0; r];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    let y = f(&transpose(x, &perm)?, axes.len())?;
    transpose(&y, &inv)
}

fn affine_inputs(op: &str, x: &Tensor, naxes: usize, gamma: Option<&Tensor>, beta: Option<&Tensor>) -> Result<Vec<Tensor>> {
    let norm_shape = x.shape()[x.rank() - naxes..].to_vec();
    let mut v = vec![x.clone()];
    for (t, what) in [(gamma, "gamma"), (beta, "beta")] {
        if let Some(t) = t {
            if t.shape().iter().product::<usize>() != norm_shape.iter().product::<usize>() {
                return Err(Error::shape(op, format!("{what} {} does not match the normalised shape {}", fmt_shape(t.shape()), fmt_shape(&norm_shape))));
            }
            v.push(reshape(t, &norm_shape)?);
        }
    }
    Ok(v)
}

pub fn layer_norm(x: &Tensor, axes: &[i64], gamma: Option<&Tensor>, beta: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    // gamma/beta are laid out in the order of the normalised axes; the
    // trailing-axes rewrite keeps that order.
    over_trailing(x, "layer_norm", axes, |x, k| {
        let ins = affine_inputs("layer_norm", x, k, gamma, beta)?;
        Tensor::build(Op::Norm(Norm { kind: NormKind::Layer, naxes: k, eps, gamma: gamma.is_some(), beta: beta.is_some() }), ins)
    })
}

pub fn rms_norm(x: &Tensor, axes: &[i64], gamma: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    over_trailing(x, "rms_norm", axes, |x, k| {
        let ins = affine_inputs("rms_norm", x, k, gamma, None)?;
        Tensor::build(Op::Norm(Norm { kind: NormKind::Rms, naxes: k, eps, gamma: gamma.is_some(), beta: false }), ins)
    })
}

/// Reshapes a per-channel vector to broadcast over [N, C, ...].
fn per_channel(op: &str, v: &Tensor, x: &Tensor) -> Result<Tensor> {
    let c = x.shape()[1];
    if v.shape().iter().product::<usize>() != c {
        return Err(Error::shape(op, format!("per-channel tensor {} must hold {c} values for x {}", fmt_shape(v.shape()), fmt_shape(x.shape()))));
    }
    let mut s = vec![c];
    s.extend(std::iter::repeat_n(1, x.rank() - 2));
    reshape(v, &s)
}

/// Group norm over [N, C, ...]: statistics per (sample, group of channels).
pub fn group_norm(x: &Tensor, groups: usize, gamma: Option<&Tensor>, beta: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    if x.rank() < 2 {
        return Err(Error::shape("group_norm", format!("expects [N, C, ...], got {}", fmt_shape(x.shape()))));
    }
    let (n, c) = (x.shape()[0], x.shape()[1]);
    if groups == 0 || c % groups != 0 {
        return Err(Error::shape("group_norm", format!("groups={groups} must divide the {c} channels of {}", fmt_shape(x.shape()))));
    }
    let rest: usize = x.shape()[1..].iter().product::<usize>() / groups;
    let g = reshape(x, &[n, groups, rest])?;
    let g = Tensor::build(Op::Norm(Norm { kind: NormKind::Layer, naxes: 1, eps, gamma: false, beta: false }), vec![g])?;
    let mut y = reshape(&g, x.shape())?;
    if let Some(gm) = gamma {
        y = mul(&y, &per_channel("group_norm", gm, x)?)?;
    }
    if let Some(b) = beta {
        y = add(&y, &per_channel("group_norm", b, x)?)?;
    }
    Ok(y)
}

pub fn instance_norm(x: &Tensor, gamma: Option<&Tensor>, beta: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    let c = *x.shape().get(1).unwrap_or(&1);
    group_norm(x, c, gamma, beta, eps)
}

/// Inference batch norm over axis 1. With constant statistics this folds
/// into one multiply and one add.
pub fn batch_norm(x: &Tensor, mean: &Tensor, var: &Tensor, gamma: Option<&Tensor>, beta: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    if x.rank() < 2 {
        return Err(Error::shape("batch_norm", format!("expects [N, C, ...], got {}", fmt_shape(x.shape()))));
    }
    let pc = |t: &Tensor| per_channel("batch_norm", t, x);
    let inv = div(&scalar_like(1.0, x)?, &sqrt(&add(&pc(var)?, &scalar_like(eps, x)?)?)?)?;
    let scale = match gamma {
        Some(g) => mul(&inv, &pc(g)?)?,
        None => inv,
    };
    let y = mul(&sub(x, &pc(mean)?)?, &scale)?;
    match beta {
        Some(b) => add(&y, &pc(b)?),
        None => Ok(y),
    }
}

/// `x / sqrt(max(sum(x², axes), eps))`.
pub fn l2_normalize(x: &Tensor, axes: &[i64], eps: f32) -> Result<Tensor> {
    let ss = reduce(x, ReduceKind::SumSquare, Some(axes), true)?;
    div(x, &sqrt(&maximum(&ss, &scalar_like(eps, x)?)?)?)
}

/// Local response norm across channels:
/// `x / (k + alpha/size * Σ_{window} x²)^beta`. The window sum is a 1x1
/// conv with a banded 0/1 matrix, which the engine runs natively.
pub fn local_response_norm(x: &Tensor, size: usize, alpha: f32, beta: f32, k: f32) -> Result<Tensor> {
    if x.rank() != 4 || size == 0 {
        return Err(Error::shape("local_response_norm", format!("expects x [N, C, H, W] and size >= 1, got {} and {size}", fmt_shape(x.shape()))));
    }
    let c = x.shape()[1];
    let (lo, hi) = ((size - 1) / 2, size / 2);
    let mut band = vec![0.0f32; c * c];
    for o in 0..c {
        for i in o.saturating_sub(lo)..=(o + hi).min(c - 1) {
            band[o * c + i] = 1.0;
        }
    }
    let w = constant(band, vec![c, c, 1, 1], x.dtype())?;
    let sq = mul(x, x)?;
    let s = conv(&sq, &w, None, &ConvArgs::default())?;
    let d = add(&mul(&s, &scalar_like(alpha / size as f32, x)?)?, &scalar_like(k, x)?)?;
    div(x, &super::pow(&d, &scalar_like(beta, x)?)?)
}

/// The bias vector of a conv given as numpy data.
pub fn bias_const(values: Vec<f32>) -> Result<Tensor> {
    let n = values.len();
    constant(values, vec![n], DType::F16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{constant, input};

    /// Runs `y` (whose only input is `x`) on the sim with f32 storage.
    fn run(y: &Tensor, x: &[f32]) -> Vec<f32> {
        let opts = crate::CompileOptions { precision: crate::Precision::Fp32, ..Default::default() };
        let c = crate::compile(std::slice::from_ref(y), opts).unwrap();
        let mut st = c.program.new_state();
        c.program.input_mut(&mut st, 0).copy_from_slice(x);
        c.program.run(&mut st);
        c.program.output(&st, 0).to_vec()
    }

    #[test]
    fn conv_transpose_1d_pads_and_strides_only_the_length_axis() {
        // Bug: the 1-D form padded the lifted size-1 H axis too, so any
        // pad >= 1 was refused ("padding removes the whole output").
        let x = input(&[1, 1, 3], DType::F16, None).unwrap();
        let w = constant(vec![1.0, 2.0, 3.0], vec![1, 1, 3], DType::F16).unwrap();
        let args = ConvArgs { stride: [2, 2], pad: PadSpec::Explicit([1; 4]), ..Default::default() };
        let y = conv_transpose(&x, &w, None, &args, [1, 1]).unwrap();
        // (L - 1) * s - 2p + k + output_pad = 4 - 2 + 3 + 1
        assert_eq!(y.shape(), &[1, 1, 6]);
        // full (unpadded) output of [1, 10, 100] is
        // [1, 2, 13, 20, 130, 200, 300, 0]; pad 1 crops one from each end,
        // output_pad keeps one extra at the end.
        assert_eq!(run(&y, &[1.0, 10.0, 100.0]), vec![2.0, 13.0, 20.0, 130.0, 200.0, 300.0]);
    }
}
