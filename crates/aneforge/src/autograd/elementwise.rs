//! Gradients of elementwise ops: unary maps, broadcasting binaries, where, cast.

use super::{unbroadcast, zero_like, Grads, Vjp};
use crate::builder as b;
use crate::error::Result;
use crate::graph::Tensor;
use crate::ops::{Binary, Op, Unary, UnaryGrad};

/// `dy * f'(x)` in one kernel; piecewise-constant maps pass nothing back.
pub(super) fn unary(v: &Vjp, u: Unary) -> Result<Grads> {
    if u.is_piecewise_constant() {
        return Ok(vec![None]);
    }
    let dx = match u {
        Unary::Neg => b::neg(v.g)?,
        _ => Tensor::build(Op::UnaryGrad(UnaryGrad { of: u }), vec![v.x[0].clone(), v.g.clone()])?,
    };
    Ok(vec![Some(dx)])
}

pub(super) fn binary(v: &Vjp, op: Binary) -> Result<Grads> {
    let (a, bb, g, y) = (&v.x[0], &v.x[1], v.g, v.y);
    let (ga, gb): (Option<Tensor>, Option<Tensor>) = match op {
        Binary::Add => (Some(g.clone()), Some(g.clone())),
        Binary::Sub => (Some(g.clone()), if v.want(1) { Some(b::neg(g)?) } else { None }),
        Binary::Mul => (
            if v.want(0) { Some(b::mul(g, bb)?) } else { None },
            if v.want(1) { Some(b::mul(g, a)?) } else { None },
        ),
        Binary::Div => {
            // d(a/b)/db = -(a/b)/b = -y/b
            let ga = b::div(g, bb)?;
            let gb = if v.want(1) { Some(b::neg(&b::mul(&ga, y)?)?) } else { None };
            (Some(ga), gb)
        }
        Binary::Pow => {
            let ga = if v.want(0) {
                // b * a^(b-1), written as b * y / a would divide by zero at a = 0.
                let bm1 = b::sub(bb, &b::scalar_like(1.0, bb)?)?;
                Some(b::mul(g, &b::mul(bb, &b::pow(a, &bm1)?)?)?)
            } else {
                None
            };
            let gb = if v.want(1) { Some(b::mul(g, &b::mul(y, &b::log(a)?)?)?) } else { None };
            (ga, gb)
        }
        Binary::Maximum | Binary::Minimum => {
            // Ties go to `a`, as in `where(a >= b, a, b)`.
            let mask = if op == Binary::Maximum { b::greater_equal(a, bb)? } else { b::less_equal(a, bb)? };
            let z = zero_like(g)?;
            (
                if v.want(0) { Some(b::where_(&mask, g, &z)?) } else { None },
                if v.want(1) { Some(b::where_(&mask, &z, g)?) } else { None },
            )
        }
        _ => (None, None), // comparisons: piecewise constant
    };
    Ok(vec![
        match ga {
            Some(t) if v.want(0) => Some(unbroadcast(&t, a.shape())?),
            _ => None,
        },
        match gb {
            Some(t) if v.want(1) => Some(unbroadcast(&t, bb.shape())?),
            _ => None,
        },
    ])
}

pub(super) fn where_(v: &Vjp) -> Result<Grads> {
    let (c, g) = (&v.x[0], v.g);
    let z = zero_like(g)?;
    let ga = if v.want(1) { Some(unbroadcast(&b::where_(c, g, &z)?, v.x[1].shape())?) } else { None };
    let gb = if v.want(2) { Some(unbroadcast(&b::where_(c, &z, g)?, v.x[2].shape())?) } else { None };
    Ok(vec![None, ga, gb])
}

pub(super) fn cast(v: &Vjp) -> Result<Grads> {
    let x = &v.x[0];
    if !x.dtype().is_float() {
        return Ok(vec![None]);
    }
    Ok(vec![Some(b::cast(v.g, x.dtype())?)])
}
