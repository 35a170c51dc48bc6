//! Gradient of matmul (transpose flags, numpy batch broadcasting).

use super::{unbroadcast, Grads, Vjp};
use crate::builder as b;
use crate::error::{Error, Result};
use crate::graph::Tensor;
use crate::ops::MatMul;

fn swap_last2(t: &Tensor) -> Result<Tensor> {
    let r = t.rank();
    let mut perm: Vec<usize> = (0..r).collect();
    perm.swap(r - 2, r - 1);
    b::transpose(t, &perm)
}

/// With A' = op(A), B' = op(B): dA' = g·B'ᵀ, dB' = A'ᵀ·g, transposed back
/// when the flag was set, then summed over the batch axes that broadcast.
pub(super) fn matmul(v: &Vjp, m: &MatMul) -> Result<Grads> {
    if m.bias || m.act.is_some() {
        return Err(Error::unsupported("grad", "a fused matmul epilogue; take gradients before compiling"));
    }
    let (a, bm, g) = (&v.x[0], &v.x[1], v.g);
    let (ta, tb) = (m.transpose_a, m.transpose_b);
    let ga = if v.want(0) {
        let d = b::matmul_t(g, bm, false, !tb)?;
        let d = if ta { swap_last2(&d)? } else { d };
        Some(unbroadcast(&d, a.shape())?)
    } else {
        None
    };
    let gb = if v.want(1) {
        let d = b::matmul_t(a, g, !ta, false)?;
        let d = if tb { swap_last2(&d)? } else { d };
        Some(unbroadcast(&d, bm.shape())?)
    } else {
        None
    };
    Ok(vec![ga, gb])
}
