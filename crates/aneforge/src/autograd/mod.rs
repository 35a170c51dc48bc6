//! Reverse-mode autodiff as a graph → graph transform.
//!
//! [`grad`] walks the lazy DAG from the loss back to the parameters and
//! builds the backward pass out of ordinary ops, so forward, backward and an
//! optimizer update written with the builder all compile into one program.
//! Each op family's vector-Jacobian products live in the file of the same
//! name here (mirroring `src/ops/`); [`vjp`] is the one table that routes an
//! op to its rule. Ops whose derivative needs a kernel of its own (unary
//! activations, pooling, conv weights, gather) have a backward op in their
//! family file under `src/ops/` (`UnaryGrad`, `PoolGrad`, `ConvWeightGrad`,
//! `ScatterAdd`).
//!
//! | family | rules |
//! |---|---|
//! | elementwise | every unary activation/math op via `UnaryGrad` (floor/ceil/round/sign/logical_not: no gradient); add, sub, mul, div, pow, maximum, minimum with broadcast axes summed; where; cast; comparisons (no gradient) |
//! | linalg | matmul with transpose flags and batch broadcasting |
//! | conv | conv (stride, dilation, padding, groups; input via conv_transpose, weight via `ConvWeightGrad`, bias), conv_transpose, max/avg pool (overlapping, padded, ceil mode) via `PoolGrad`, nearest upsample by integer factors |
//! | reduce | sum, mean, max, min (ties share), prod, l1/l2 norm, sum_square, log_sum, log_sum_exp (any axes, keepdims or not), cumsum |
//! | norm | softmax, log_softmax, layer_norm, rms_norm (x, gamma, beta); group/instance/batch norm are composites of these |
//! | shape | reshape, transpose, concat, slice (any stride), tile, broadcast_to, pad (constant), gather via `ScatterAdd` |

mod conv;
mod elementwise;
mod linalg;
mod norm;
mod reduce;
mod shape;

use crate::builder as b;
use crate::error::{Error, Result};
use crate::fact::fmt_shape;
use crate::graph::Tensor;
use crate::ops::{Op, ReduceKind};
use std::collections::{HashMap, HashSet};

/// What a rule sees: the forward node, its output gradient and which of its
/// inputs need a gradient (rules skip building the others).
pub(crate) struct Vjp<'a> {
    pub y: &'a Tensor,
    pub x: &'a [Tensor],
    pub g: &'a Tensor,
    pub wants: &'a [bool],
}

impl Vjp<'_> {
    pub fn want(&self, i: usize) -> bool {
        self.wants.get(i).copied().unwrap_or(false)
    }
}

type Grads = Vec<Option<Tensor>>;

/// The table: one rule per op.
fn vjp(v: &Vjp) -> Result<Grads> {
    match v.y.op() {
        Op::Unary(u) => elementwise::unary(v, *u),
        Op::Binary(op) => elementwise::binary(v, *op),
        Op::Where(_) => elementwise::where_(v),
        Op::Cast(_) => elementwise::cast(v),
        Op::MatMul(m) => linalg::matmul(v, m),
        Op::Conv(c) => conv::conv(v, c),
        Op::ConvTranspose(c) => conv::conv_transpose(v, c),
        Op::Pool(p) => conv::pool(v, p),
        Op::Resize(r) => conv::resize(v, r),
        Op::Reduce(r) => reduce::reduce(v, r),
        Op::CumSum(c) => reduce::cumsum(v, c),
        Op::Softmax(s) => norm::softmax(v, s),
        Op::Norm(n) => norm::norm(v, n),
        Op::Reshape(_) => shape::reshape(v),
        Op::Transpose(t) => shape::transpose(v, t),
        Op::Concat(c) => shape::concat(v, c),
        Op::Slice(s) => shape::slice(v, s),
        Op::Tile(t) => shape::tile(v, t),
        Op::Pad(p) => shape::pad(v, p),
        Op::Gather(gth) => shape::gather(v, gth),
        Op::Expand(_) => shape::expand(v),
        Op::Input(_) | Op::Const(_) | Op::Param(_) => Ok(vec![]),
        Op::UnaryGrad(_) | Op::PoolGrad(_) | Op::ConvWeightGrad(_) | Op::ScatterAdd(_) => Err(Error::unsupported(
            "grad",
            format!("{} is itself a backward op; second-order gradients are not supported", v.y.op().name()),
        )),
    }
}

/// Gradients of the scalar `loss` with respect to each of `params` (any
/// tensors of the graph, usually `parameter`s), as new lazy tensors.
pub fn grad(loss: &Tensor, params: &[Tensor]) -> Result<Vec<Tensor>> {
    grad_with_seed(loss, params, None)
}

/// As [`grad`], starting from `seed` (d loss / d loss) instead of 1. The
/// seed can be a graph input, which is how a loss scale for fp16 training
/// is fed per step without recompiling.
pub fn grad_with_seed(loss: &Tensor, params: &[Tensor], seed: Option<&Tensor>) -> Result<Vec<Tensor>> {
    if loss.fact().numel() != 1 {
        return Err(Error::shape(
            "grad",
            format!("the loss must be a scalar (one element) but has shape {}; reduce it first, e.g. with .mean()", fmt_shape(loss.shape())),
        ));
    }
    if !loss.dtype().is_float() {
        return Err(Error::dtype("grad", format!("the loss is {} but must be fp16 or fp32", loss.dtype())));
    }
    if params.is_empty() {
        return Err(Error::value("grad", "no parameters given; pass the tensors to differentiate with respect to"));
    }
    for p in params {
        if !p.dtype().is_float() {
            return Err(Error::dtype("grad", format!("cannot differentiate with respect to {} (not a float tensor)", describe(p))));
        }
    }
    let order = topo(loss);
    let targets: HashSet<usize> = params.iter().map(Tensor::key).collect();
    // needs[k]: the node is, or depends on, one of the targets.
    let mut needs: HashMap<usize, bool> = HashMap::with_capacity(order.len());
    for t in &order {
        let n = targets.contains(&t.key()) || t.inputs().iter().any(|i| needs.get(&i.key()).copied().unwrap_or(false));
        needs.insert(t.key(), n);
    }
    for p in params {
        if !needs.get(&p.key()).copied().unwrap_or(false) {
            return Err(Error::value(
                "grad",
                format!("{} does not reach the loss; remove it from the parameters or use it in the model", describe(p)),
            ));
        }
    }
    let seed = match seed {
        Some(s) => {
            if s.fact().numel() != 1 {
                return Err(Error::shape("grad", format!("the seed must be a scalar, got shape {}", fmt_shape(s.shape()))));
            }
            let s = b::cast(s, loss.dtype())?;
            b::reshape(&s, loss.shape())?
        }
        None => b::constant(vec![1.0], loss.shape().to_vec(), loss.dtype())?,
    };
    let mut grads: HashMap<usize, Tensor> = HashMap::new();
    grads.insert(loss.key(), seed);
    let mut found: HashMap<usize, Tensor> = HashMap::new();
    for t in order.iter().rev() {
        let Some(g) = grads.remove(&t.key()) else { continue };
        if targets.contains(&t.key()) {
            found.insert(t.key(), g.clone());
        }
        let wants: Vec<bool> = t.inputs().iter().map(|i| needs.get(&i.key()).copied().unwrap_or(false)).collect();
        if !wants.iter().any(|&w| w) {
            continue;
        }
        let v = Vjp { y: t, x: t.inputs(), g: &g, wants: &wants };
        let gs = vjp(&v).map_err(|e| match e {
            Error::Shape { op, msg } => Error::Compile(format!("internal: gradient of {} ({op}): {msg}", t.op().name())),
            e => e,
        })?;
        for (k, gi) in gs.into_iter().enumerate() {
            let (Some(gi), true) = (gi, wants.get(k).copied().unwrap_or(false)) else { continue };
            let xi = &t.inputs()[k];
            if gi.shape() != xi.shape() {
                return Err(Error::Compile(format!(
                    "internal: the {} rule gave input {k} a gradient of shape {} for a value of shape {}",
                    t.op().name(),
                    fmt_shape(gi.shape()),
                    fmt_shape(xi.shape())
                )));
            }
            let gi = b::cast(&gi, xi.dtype())?;
            let acc = match grads.remove(&xi.key()) {
                Some(prev) => b::add(&prev, &gi)?,
                None => gi,
            };
            grads.insert(xi.key(), acc);
        }
    }
    params
        .iter()
        .map(|p| found.get(&p.key()).cloned().ok_or_else(|| Error::Compile(format!("internal: no gradient reached {}", describe(p)))))
        .collect()
}

fn describe(p: &Tensor) -> String {
    match p.name() {
        Some(n) => format!("parameter {n:?} {}", fmt_shape(p.shape())),
        None => format!("the {} tensor of shape {}", p.op().name(), fmt_shape(p.shape())),
    }
}

/// Nodes reachable from `root`, inputs before users (iterative: unrolled
/// graphs are deep).
fn topo(root: &Tensor) -> Vec<Tensor> {
    let mut seen: HashSet<usize> = HashSet::new();
    let mut out = vec![];
    let mut stack = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            out.push(t);
            continue;
        }
        if !seen.insert(t.key()) {
            continue;
        }
        stack.push((t.clone(), true));
        for i in t.inputs().iter().rev() {
            if !seen.contains(&i.key()) {
                stack.push((i.clone(), false));
            }
        }
    }
    out
}

/// Sums `g` down to `shape` over the axes numpy broadcasting expanded. A
/// reduction over leading axes only (a bias shared by the batch) runs as a
/// matmul with a ones row, which accumulates in f32; the engine's
/// reduce_sum accumulates in fp16 and loses the small per-sample terms.
pub(crate) fn unbroadcast(g: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if g.shape() == shape {
        return Ok(g.clone());
    }
    let r = g.rank();
    let lead = r.checked_sub(shape.len()).ok_or_else(|| Error::Compile("internal: unbroadcast to a higher rank".into()))?;
    let mut axes: Vec<usize> = (0..lead).collect();
    for (i, &d) in shape.iter().enumerate() {
        if d == 1 && g.shape()[lead + i] != 1 {
            axes.push(lead + i);
        }
    }
    if axes.is_empty() {
        return b::reshape(g, shape);
    }
    let prefix = axes.iter().enumerate().all(|(k, &a)| a == k);
    let s = if prefix {
        sum_leading(g, axes.len())?
    } else {
        let ax: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
        b::reduce(g, ReduceKind::Sum, Some(&ax), true)?
    };
    b::reshape(&s, shape)
}

/// Σ over the first `k` axes, as `ones[1, A] @ g[A, rest]`.
pub(crate) fn sum_leading(g: &Tensor, k: usize) -> Result<Tensor> {
    let a: usize = g.shape()[..k].iter().product();
    let rest: usize = g.shape()[k..].iter().product();
    let g2 = b::reshape(g, &[a, rest])?;
    let ones = b::constant(vec![1.0; a], vec![1, a], g.dtype())?;
    b::matmul(&ones, &g2)
}

pub(crate) fn zero_like(t: &Tensor) -> Result<Tensor> {
    b::scalar_like(0.0, t)
}

#[cfg(test)]
mod tests;
