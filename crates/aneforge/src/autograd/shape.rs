//! Gradients of the movement ops: each moves the gradient back where the
//! forward took the value from.

use super::{unbroadcast, Grads, Vjp};
use crate::builder as b;
use crate::error::{Error, Result};
use crate::graph::Tensor;
use crate::ops::{Concat, Gather, Op, Pad, PadMode, ReduceKind, ScatterAdd, Slice, Tile, Transpose};
use std::sync::Arc;

pub(super) fn reshape(v: &Vjp) -> Result<Grads> {
    Ok(vec![Some(b::reshape(v.g, v.x[0].shape())?)])
}

pub(super) fn transpose(v: &Vjp, t: &Transpose) -> Result<Grads> {
    let mut inv = vec![0; t.perm.len()];
    for (i, &p) in t.perm.iter().enumerate() {
        inv[p] = i;
    }
    Ok(vec![Some(b::transpose(v.g, &inv)?)])
}

pub(super) fn concat(v: &Vjp, c: &Concat) -> Result<Grads> {
    let mut off = 0;
    let mut out = vec![];
    for (k, x) in v.x.iter().enumerate() {
        let len = x.shape()[c.axis];
        out.push(if v.want(k) { Some(b::slice_axis(v.g, c.axis, off, len)?) } else { None });
        off += len;
    }
    Ok(out)
}

/// Puts the slice back: zero padding on unit-stride axes, a scatter-add of
/// the taken indices on strided (or reversed) ones.
pub(super) fn slice(v: &Vjp, s: &Slice) -> Result<Grads> {
    let x = &v.x[0];
    let mut cur = v.g.clone();
    for ax in 0..x.rank() {
        let (d, begin, len, st) = (x.shape()[ax], s.begin[ax], s.len[ax], s.stride[ax]);
        if st == 1 {
            if begin == 0 && len == d {
                continue;
            }
            let mut pads = vec![(0, 0); x.rank()];
            pads[ax] = (begin, d - begin - len);
            cur = b::pad(&cur, &pads, PadMode::Constant(0.0))?;
        } else {
            let idx: Vec<usize> = (0..len).map(|k| (begin as isize + k as isize * st) as usize).collect();
            let op = ScatterAdd { axis: ax, indices: Arc::new(idx), indices_shape: vec![len], size: d };
            cur = Tensor::build(Op::ScatterAdd(op), vec![cur])?;
        }
    }
    Ok(vec![Some(cur)])
}

/// Tiling repeats whole blocks: view g as [r0, d0, r1, d1, …] and sum the r's.
pub(super) fn tile(v: &Vjp, t: &Tile) -> Result<Grads> {
    let x = &v.x[0];
    let r = x.rank();
    let reps = &t.reps[t.reps.len().saturating_sub(r)..];
    let lead = v.g.rank() - r;
    let mut split = v.g.shape()[..lead].to_vec();
    for ax in 0..r {
        split.push(reps.get(ax).copied().unwrap_or(1));
        split.push(x.shape()[ax]);
    }
    let g = b::reshape(v.g, &split)?;
    let mut axes: Vec<i64> = (0..lead as i64).collect();
    axes.extend((0..r).map(|ax| (lead + 2 * ax) as i64));
    let g = b::reduce(&g, ReduceKind::Sum, Some(&axes), false)?;
    Ok(vec![Some(b::reshape(&g, x.shape())?)])
}

pub(super) fn expand(v: &Vjp) -> Result<Grads> {
    Ok(vec![Some(unbroadcast(v.g, v.x[0].shape())?)])
}

pub(super) fn pad(v: &Vjp, p: &Pad) -> Result<Grads> {
    if !matches!(p.mode, PadMode::Constant(_)) {
        return Err(Error::unsupported("grad", "pad: only constant padding has a gradient rule (reflect/replicate do not yet)"));
    }
    let x = &v.x[0];
    let s = Slice { begin: p.pads.iter().map(|&(a, _)| a).collect(), len: x.shape().to_vec(), stride: vec![1; x.rank()] };
    Ok(vec![Some(Tensor::build(Op::Slice(s), vec![v.g.clone()])?)])
}

pub(super) fn gather(v: &Vjp, g: &Gather) -> Result<Grads> {
    let op = ScatterAdd { axis: g.axis, indices: g.indices.clone(), indices_shape: g.indices_shape.clone(), size: v.x[0].shape()[g.axis] };
    Ok(vec![Some(Tensor::build(Op::ScatterAdd(op), vec![v.g.clone()])?)])
}
