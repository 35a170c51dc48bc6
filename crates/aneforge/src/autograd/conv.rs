//! Gradients of the spatial ops: conv, conv_transpose, pooling, resize.

use super::{Grads, Vjp};
use crate::builder as b;
use crate::error::{Error, Result};
use crate::graph::Tensor;
use crate::ops::{Conv, ConvTranspose, ConvWeightGrad, Op, Pool, PoolGrad, ReduceKind, Resize, ResizeMode};

fn bias_grad(g: &Tensor) -> Result<Tensor> {
    let s = b::reduce(g, ReduceKind::Sum, Some(&[2, 3]), false)?;
    super::sum_leading(&s, 1).and_then(|t| b::reshape(&t, &[g.shape()[1]]))
}

/// dx = conv_transpose(dy, W) with the same geometry (output_pad recovers
/// the rows a strided conv's floor dropped); dW = `ConvWeightGrad(x, dy)`;
/// db = Σ dy over batch and space.
pub(super) fn conv(v: &Vjp, c: &Conv) -> Result<Grads> {
    if c.act.is_some() || c.residual {
        return Err(Error::unsupported("grad", "a fused conv activation or residual; take gradients before compiling"));
    }
    let (x, w, g) = (&v.x[0], &v.x[1], v.g);
    let win = c.window;
    let dx = if v.want(0) {
        let mut output_pad = [0usize; 2];
        for ax in 0..2 {
            let eff = win.dilation[ax] * (win.kernel[ax] - 1) + 1;
            let full = (g.shape()[2 + ax] - 1) * win.stride[ax] + eff;
            let want = x.shape()[2 + ax] + win.pad[ax] + win.pad[ax + 2];
            output_pad[ax] = want.checked_sub(full).ok_or_else(|| Error::Compile("internal: conv grad geometry".into()))?;
        }
        let op = ConvTranspose { window: win, output_pad, groups: c.groups, bias: false };
        Some(Tensor::build(Op::ConvTranspose(op), vec![g.clone(), w.clone()])?)
    } else {
        None
    };
    let dw = if v.want(1) {
        Some(Tensor::build(Op::ConvWeightGrad(ConvWeightGrad { window: win, groups: c.groups }), vec![x.clone(), g.clone()])?)
    } else {
        None
    };
    let mut out = vec![dx, dw];
    if c.bias {
        out.push(if v.want(2) { Some(bias_grad(g)?) } else { None });
    }
    Ok(out)
}

/// The adjoint pair of `conv`: dx = conv(dy, W), dW = `ConvWeightGrad(dy, x)`.
pub(super) fn conv_transpose(v: &Vjp, c: &ConvTranspose) -> Result<Grads> {
    let (x, w, g) = (&v.x[0], &v.x[1], v.g);
    let dx = if v.want(0) {
        let op = Conv { window: c.window, groups: c.groups, bias: false, residual: false, act: None };
        Some(Tensor::build(Op::Conv(op), vec![g.clone(), w.clone()])?)
    } else {
        None
    };
    let dw = if v.want(1) {
        Some(Tensor::build(Op::ConvWeightGrad(ConvWeightGrad { window: c.window, groups: c.groups }), vec![g.clone(), x.clone()])?)
    } else {
        None
    };
    let mut out = vec![dx, dw];
    if c.bias {
        out.push(if v.want(2) { Some(bias_grad(g)?) } else { None });
    }
    Ok(out)
}

pub(super) fn pool(v: &Vjp, p: &Pool) -> Result<Grads> {
    Ok(vec![Some(Tensor::build(Op::PoolGrad(PoolGrad { pool: *p }), vec![v.x[0].clone(), v.g.clone()])?)])
}

/// Nearest resize by whole factors copies each pixel into a block, so its
/// gradient sums each block.
pub(super) fn resize(v: &Vjp, r: &Resize) -> Result<Grads> {
    let x = &v.x[0];
    let s = x.shape();
    let (h, w) = (s[s.len() - 2], s[s.len() - 1]);
    if r.mode != ResizeMode::Nearest || r.size[0] % h != 0 || r.size[1] % w != 0 {
        return Err(Error::unsupported("grad", "resize: only nearest upsampling by whole factors has a gradient rule"));
    }
    let (f0, f1) = (r.size[0] / h, r.size[1] / w);
    let lead: usize = s[..s.len() - 2].iter().product();
    let g = b::reshape(v.g, &[lead, h, f0, w, f1])?;
    let g = b::reduce(&g, ReduceKind::Sum, Some(&[2, 4]), false)?;
    Ok(vec![Some(b::reshape(&g, s)?)])
}
