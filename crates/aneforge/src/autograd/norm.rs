//! Gradients of softmax, log_softmax, layer_norm and rms_norm.

use super::{unbroadcast, Grads, Vjp};
use crate::builder as b;
use crate::error::Result;
use crate::graph::Tensor;
use crate::ops::{Norm, NormKind, ReduceKind, Softmax};

fn sum_keep(t: &Tensor, axes: &[i64]) -> Result<Tensor> {
    b::reduce(t, ReduceKind::Sum, Some(axes), true)
}
fn mean_keep(t: &Tensor, axes: &[i64]) -> Result<Tensor> {
    b::reduce(t, ReduceKind::Mean, Some(axes), true)
}

/// softmax: dx = y ⊙ (g − Σ g⊙y); log_softmax: dx = g − exp(y) ⊙ Σ g.
pub(super) fn softmax(v: &Vjp, s: &Softmax) -> Result<Grads> {
    let (y, g) = (v.y, v.g);
    let ax = [s.axis as i64];
    let dx = if s.log {
        b::sub(g, &b::mul(&b::exp(y)?, &sum_keep(g, &ax)?)?)?
    } else {
        b::mul(y, &b::sub(g, &sum_keep(&b::mul(g, y)?, &ax)?)?)?
    };
    Ok(vec![Some(dx)])
}

/// Recomputes x̂ and 1/σ from x (cheaper than keeping them as extra forward
/// outputs), then dx = (1/σ)(ĝ − mean ĝ − x̂ mean(ĝ x̂)) with ĝ = g ⊙ γ; the
/// rms form has no mean terms.
pub(super) fn norm(v: &Vjp, n: &Norm) -> Result<Grads> {
    let (x, g) = (&v.x[0], v.g);
    let r = x.rank();
    let axes: Vec<i64> = (r - n.naxes..r).map(|a| a as i64).collect();
    let norm_shape = x.shape()[r - n.naxes..].to_vec();
    let eps = b::scalar_like(n.eps, x)?;
    let (xc, rstd) = match n.kind {
        NormKind::Layer => {
            let xc = b::sub(x, &mean_keep(x, &axes)?)?;
            let var = mean_keep(&b::mul(&xc, &xc)?, &axes)?;
            (xc, b::rsqrt(&b::add(&var, &eps)?)?)
        }
        NormKind::Rms => {
            let ms = mean_keep(&b::mul(x, x)?, &axes)?;
            (x.clone(), b::rsqrt(&b::add(&ms, &eps)?)?)
        }
    };
    let xhat = b::mul(&xc, &rstd)?;
    let gamma = if n.gamma { Some(b::reshape(&v.x[1], &norm_shape)?) } else { None };
    let mut out = vec![];
    out.push(if v.want(0) {
        let gh = match &gamma {
            Some(gm) => b::mul(g, gm)?,
            None => g.clone(),
        };
        let mut inner = b::sub(&gh, &b::mul(&xhat, &mean_keep(&b::mul(&gh, &xhat)?, &axes)?)?)?;
        if n.kind == NormKind::Layer {
            inner = b::sub(&inner, &mean_keep(&gh, &axes)?)?;
        }
        Some(b::mul(&inner, &rstd)?)
    } else {
        None
    });
    if n.gamma {
        out.push(if v.want(1) {
            let d = unbroadcast(&b::mul(g, &xhat)?, &norm_shape)?;
            Some(b::reshape(&d, v.x[1].shape())?)
        } else {
            None
        });
    }
    if n.beta {
        let k = 1 + n.gamma as usize;
        out.push(if v.want(k) { Some(b::reshape(&unbroadcast(g, &norm_shape)?, v.x[k].shape())?) } else { None });
    }
    Ok(out)
}
