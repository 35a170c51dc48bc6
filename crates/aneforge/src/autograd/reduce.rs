//! Gradients of reductions (any axes, keepdims or not) and cumsum.

use super::{Grads, Vjp};
use crate::builder as b;
use crate::error::Result;
use crate::graph::Tensor;
use crate::ops::{CumSum, Reduce, ReduceKind};

pub(super) fn reduce(v: &Vjp, r: &Reduce) -> Result<Grads> {
    let (x, y) = (&v.x[0], v.y);
    let mut kshape = x.shape().to_vec();
    for &a in &r.axes {
        kshape[a] = 1;
    }
    // The gradient and the result with the reduced axes kept as size 1.
    let gk = b::reshape(v.g, &kshape)?;
    let yk = || b::reshape(y, &kshape);
    let count: usize = r.axes.iter().map(|&a| x.shape()[a]).product();
    let spread = |t: &Tensor| b::broadcast_to(t, x.shape());
    let dx = match r.kind {
        ReduceKind::Sum => spread(&gk)?,
        ReduceKind::Mean => spread(&b::mul_scalar(&gk, 1.0 / count as f32)?)?,
        ReduceKind::Max | ReduceKind::Min => {
            // Ties share the gradient equally.
            let m = b::cast(&b::equal(x, &yk()?)?, x.dtype())?;
            let ax: Vec<i64> = r.axes.iter().map(|&a| a as i64).collect();
            let n = b::reduce(&m, ReduceKind::Sum, Some(&ax), true)?;
            b::mul(&m, &b::div(&gk, &n)?)?
        }
        ReduceKind::Prod => b::div(&b::mul(&gk, &yk()?)?, x)?,
        ReduceKind::L1Norm => b::mul(&b::sign(x)?, &gk)?,
        ReduceKind::L2Norm => b::mul(x, &b::div(&gk, &yk()?)?)?,
        ReduceKind::SumSquare => b::mul(&b::mul_scalar(x, 2.0)?, &gk)?,
        ReduceKind::LogSum => spread(&b::div(&gk, &b::exp(&yk()?)?)?)?,
        ReduceKind::LogSumExp => b::mul(&b::exp(&b::sub(x, &yk()?)?)?, &gk)?,
    };
    Ok(vec![Some(dx)])
}

/// The adjoint of a running sum is the running sum in the other direction.
pub(super) fn cumsum(v: &Vjp, c: &CumSum) -> Result<Grads> {
    Ok(vec![Some(b::cumsum(v.g, c.axis as i64, c.exclusive, !c.reverse)?)])
}
