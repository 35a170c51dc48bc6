//! Softmax and the fused normalisations (layer norm, RMS norm) over
//! trailing axes. group/instance/batch norm and l2_normalize are composed
//! from these and elementwise ops in the builder.

use super::{expect_float, Cost, EvalCtx, OpDef, View};
use crate::error::{Error, Result};
use crate::fact::{fmt_shape, norm_axis, Fact};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Softmax {
    pub axis: usize,
    pub log: bool,
}

impl OpDef for Softmax {
    fn name(&self) -> String {
        if self.log { "log_softmax" } else { "softmax" }.into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        let op = self.name();
        super::expect_inputs(&op, inputs, 1)?;
        expect_float(&op, inputs[0], "x")?;
        norm_axis(&op, self.axis as i64, inputs[0].rank())?;
        Ok(inputs[0].clone())
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &mut [f32], ctx: &EvalCtx) {
        let x = ins[0];
        let n = x.shape[self.axis];
        let inner: usize = x.shape[self.axis + 1..].iter().product();
        let log = self.log;
        let body = |(o, xs): (&mut [f32], &[f32])| rounded(o, ctx, |o| softmax_slice(xs, o, n, inner, log));
        rows_in_parallel(out, x.data, n * inner, body);
    }
    fn rounds_output(&self) -> bool {
        true
    }
    fn cost(&self, _: &[&Fact], out: &Fact) -> Cost {
        Cost { flops: out.numel() as f64 * 5.0 }
    }
}

/// Softmax of one slice: `n` positions along the axis by `inner` after it.
fn softmax_slice(xs: &[f32], o: &mut [f32], n: usize, inner: usize, log: bool) {
    if inner == 1 {
        return softmax_row(xs, o, log);
    }
    for j in 0..inner {
        let mut m = f32::NEG_INFINITY;
        for i in 0..n {
            m = m.max(xs[i * inner + j]);
        }
        let mut s = 0.0f32;
        for i in 0..n {
            let e = crate::numerics::exp(xs[i * inner + j] - m);
            o[i * inner + j] = e;
            s += e;
        }
        for i in 0..n {
            o[i * inner + j] = if log { xs[i * inner + j] - m - s.ln() } else { o[i * inner + j] / s };
        }
    }
}

/// `f(out)`, then `out` rounded to fp16 when the program stores fp16: a
/// row op rounds its rows while they are in L1, rather than leaving the
/// sim a pass of its own over the output.
fn rounded(out: &mut [f32], ctx: &EvalCtx, f: impl FnOnce(&mut [f32])) {
    f(out);
    if ctx.fp16 {
        crate::numerics::round_f16_slice_serial(out);
    }
}

/// `body` over each row (`len` elements) of `out` and `x`, one block of
/// rows per thread (see [`crate::parallel`]): a task per row of a
/// [197, 768] layer norm spent more time in rayon's splitting and wake-ups
/// than in the rows. Below one task's worth it runs on the calling thread.
fn rows_in_parallel(out: &mut [f32], x: &[f32], len: usize, body: impl Fn((&mut [f32], &[f32])) + Sync) {
    if x.len() < ROWS_TASK_WORK {
        return out.chunks_mut(len).zip(x.chunks(len)).for_each(body);
    }
    let rows = crate::parallel::per_thread(x.len() / len.max(1));
    out.par_chunks_mut(len * rows).zip(x.par_chunks(len * rows)).for_each(|(o, xs)| o.chunks_mut(len).zip(xs.chunks(len)).for_each(&body));
}

/// Elements from which the row-wise normalisations split across threads.
const ROWS_TASK_WORK: usize = 1 << 14;

fn softmax_row(xs: &[f32], o: &mut [f32], log: bool) {
    use crate::numerics::{exp, max_f32, sum_f32};
    let m = max_f32(xs);
    // Two vectors per step give exp's long chain of dependent operations a
    // second chain to overlap with; the sum rides along in 32 lanes (one
    // accumulator per lane carries no dependency across lanes, so the loop
    // still vectorises) instead of a pass of its own over the row.
    let mut oc = o.chunks_exact_mut(32);
    let mut xc = xs.chunks_exact(32);
    let mut acc = [0.0f32; 32];
    for (ov, xv) in (&mut oc).zip(&mut xc) {
        for k in 0..32 {
            let e = exp(xv[k] - m);
            ov[k] = e;
            acc[k] += e;
        }
    }
    let mut s = 0.0;
    for (o, &v) in oc.into_remainder().iter_mut().zip(xc.remainder()) {
        *o = exp(v - m);
        s += *o;
    }
    let s = s + sum_f32(&acc);
    if log {
        let ls = m + s.ln();
        for (o, &v) in o.iter_mut().zip(xs) {
            *o = v - ls;
        }
    } else {
        let inv = 1.0 / s;
        for o in o.iter_mut() {
            *o *= inv;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// (x - mean) / sqrt(var + eps)
    Layer,
    /// x / sqrt(mean(x²) + eps)
    Rms,
}

/// Normalisation over the last `naxes` axes, with optional gamma/beta of the
/// normalised shape as extra inputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Norm {
    pub kind: NormKind,
    pub naxes: usize,
    pub eps: f32,
    pub gamma: bool,
    pub beta: bool,
}

impl OpDef for Norm {
    fn name(&self) -> String {
        match self.kind {
            NormKind::Layer => "layer_norm",
            NormKind::Rms => "rms_norm",
        }
        .into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        let op = self.name();
        super::expect_inputs(&op, inputs, 1 + self.gamma as usize + self.beta as usize)?;
        let x = inputs[0];
        expect_float(&op, x, "x")?;
        if self.naxes == 0 || self.naxes > x.rank() {
            return Err(Error::shape(&op, format!("cannot normalise over the last {} axes of {}", self.naxes, fmt_shape(&x.shape))));
        }
        if self.kind == NormKind::Rms && self.beta {
            return Err(Error::value(&op, "rms_norm has no beta"));
        }
        if !(self.eps >= 0.0) {
            return Err(Error::value(&op, format!("eps must be >= 0, got {}", self.eps)));
        }
        let norm_shape = &x.shape[x.rank() - self.naxes..];
        for (k, f) in inputs[1..].iter().enumerate() {
            let what = if k == 0 && self.gamma { "gamma" } else { "beta" };
            let numel: usize = norm_shape.iter().product();
            if f.numel() != numel || f.rank() > self.naxes {
                return Err(Error::shape(
                    &op,
                    format!("{what} has shape {} but the normalised axes of x {} are {}", fmt_shape(&f.shape), fmt_shape(&x.shape), fmt_shape(norm_shape)),
                ));
            }
        }
        Ok(x.clone())
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &mut [f32], ctx: &EvalCtx) {
        let x = ins[0];
        let n: usize = x.shape[x.shape.len() - self.naxes..].iter().product();
        let gamma = if self.gamma { Some(ins[1].data) } else { None };
        let beta = if self.beta { Some(ins[1 + self.gamma as usize].data) } else { None };
        let (kind, eps) = (self.kind, self.eps);
        let body = |(o, xs): (&mut [f32], &[f32])| rounded(o, ctx, |o| {
            let inv_n = 1.0 / n as f32;
            use crate::numerics::sum_f32;
            // Two passes (mean, then centred squares) avoid the cancellation of E[x²] − E[x]².
            let mean = if kind == NormKind::Layer { sum_f32(xs) * inv_n } else { 0.0 };
            for (o, &v) in o.iter_mut().zip(xs) {
                *o = (v - mean) * (v - mean);
            }
            let var = sum_f32(o) * inv_n;
            let r = 1.0 / (var + eps).sqrt();
            // One loop per gamma/beta combination: a test per element kept
            // this loop scalar (it was most of the op's time).
            let norm = |v: f32| (v - mean) * r;
            match (gamma, beta) {
                (Some(g), Some(b)) => {
                    for (((o, &v), &g), &b) in o.iter_mut().zip(xs).zip(&g[..n]).zip(&b[..n]) {
                        *o = norm(v) * g + b;
                    }
                }
                (Some(g), None) => {
                    for ((o, &v), &g) in o.iter_mut().zip(xs).zip(&g[..n]) {
                        *o = norm(v) * g;
                    }
                }
                (None, Some(b)) => {
                    for ((o, &v), &b) in o.iter_mut().zip(xs).zip(&b[..n]) {
                        *o = norm(v) + b;
                    }
                }
                (None, None) => {
                    for (o, &v) in o.iter_mut().zip(xs) {
                        *o = norm(v);
                    }
                }
            }
        });
        rows_in_parallel(out, x.data, n, body);
    }
    fn rounds_output(&self) -> bool {
        true
    }
    fn cost(&self, _: &[&Fact], out: &Fact) -> Cost {
        Cost { flops: out.numel() as f64 * 8.0 }
    }
}

// ---- MIL lowering (driver and conventions: backend/mil) ----

use crate::backend::mil::{safe_eps, LowerMil, MilCtx, Val};
use aneforge_mil::Argument;

impl LowerMil for Softmax {
    /// `softmax` over the last axis. Over another axis whose length is not
    /// a power of two the engine's compiler rejects softmax (reported for
    /// the channel axis), so the axis is transposed last and back. The log
    /// form is `x − max − reduce_log_sum_exp(x − max)`, stable without a
    /// separate log of a probability.
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let d = ins[0].mil_dtype();
        let r = cx.result();
        let shape = &out.shape;
        let rank = shape.len();
        let n = shape[self.axis];
        let move_last = self.axis + 1 != rank && !n.is_power_of_two();
        let mut x = ins[0].name.clone();
        let mut s = shape.clone();
        let mut perm: Vec<usize> = (0..rank).collect();
        if move_last {
            perm.remove(self.axis);
            perm.push(self.axis);
            s = perm.iter().map(|&p| shape[p]).collect();
            let pa = cx.ints("perm", &perm.iter().map(|&p| p as i64).collect::<Vec<_>>())?;
            x = cx.tmp("transpose", vec![("perm", pa), ("x", Argument::name(x))], d, &s);
            cx.note(format!("softmax over axis {} of length {n} (not a power of two) runs on the last axis between transposes", self.axis));
        }
        let axis = if move_last { rank - 1 } else { self.axis } as i64;
        let name = if move_last { cx.fresh("softmax") } else { r.clone() };
        let y = if self.log {
            let ax = cx.ints("axes", &[axis])?;
            let kd = cx.boolean("keep_dims", true)?;
            let mut red = s.clone();
            red[axis as usize] = 1;
            let m = cx.tmp("reduce_max", vec![("axes", ax.clone()), ("keep_dims", kd.clone()), ("x", Argument::name(&x))], d, &red);
            let c = cx.tmp("sub", vec![("x", Argument::name(&x)), ("y", Argument::name(m))], d, &s);
            let l = cx.tmp("reduce_log_sum_exp", vec![("axes", ax), ("keep_dims", kd), ("x", Argument::name(&c))], d, &red);
            cx.op("sub", vec![("x", Argument::name(c)), ("y", Argument::name(l))], &name, d, &s)
        } else {
            let ax = cx.int("axis", axis)?;
            cx.op("softmax", vec![("axis", ax), ("x", Argument::name(x))], &name, d, &s)
        };
        if !move_last {
            return Ok(y);
        }
        let mut inv = vec![0; rank];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i as i64;
        }
        let pa = cx.ints("perm", &inv)?;
        Ok(cx.op("transpose", vec![("perm", pa), ("x", Argument::name(y))], &r, d, shape))
    }
}

impl LowerMil for Norm {
    /// Layer norm: `layer_norm` over the trailing axes with gamma/beta
    /// reshaped to the normalised shape (runtime gamma/beta: `mul`/`add`
    /// after). RMS norm, which MIL lacks: x·rsqrt(Σ(x/√n)² + eps), the
    /// 1/√n applied before squaring so the fp16 sum cannot overflow, and
    /// rsqrt's own epsilon argument carrying eps.
    ///
    /// Epsilon: below fp16's normal range (1e-5, 1e-6, 1e-12) the engine
    /// flushes it to zero. Both norms are scale invariant, so x is scaled by
    /// a power of two k ≤ 16 and eps by k² (exact, same result); an eps too
    /// small even for that is clamped to 2⁻¹⁴ and noted ([`safe_eps`]).
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let d = ins[0].mil_dtype();
        let r = cx.result();
        let shape = &out.shape;
        let rank = shape.len();
        let norm_shape = shape[rank - self.naxes..].to_vec();
        let n: usize = norm_shape.iter().product();
        let (k, eps, clamped) = safe_eps(self.eps);
        if clamped {
            cx.note(format!("{} eps {} is below fp16's normal range and too small to rescale; clamped to 2^-14", self.name(), self.eps));
        } else if k != 1.0 {
            cx.note(format!("{} eps {} rescaled: x·{k}, eps·{} (fp16 flushes subnormal eps)", self.name(), self.eps, k * k));
        }
        let gamma = if self.gamma { Some(&ins[1]) } else { None };
        let beta = if self.beta { Some(&ins[1 + self.gamma as usize]) } else { None };
        let const_affine = gamma.is_none_or(|g| g.konst.is_some()) && beta.is_none_or(|b| b.konst.is_some());
        let x = cx.scale(&ins[0].name, d, shape, k)?;
        let axes: Vec<i64> = (0..self.naxes as i64).map(|i| i - self.naxes as i64).collect();
        let needs_after = !const_affine || self.kind == NormKind::Rms && (gamma.is_some() || beta.is_some());
        let core = if needs_after { cx.fresh(&self.name()) } else { r.clone() };
        let y = match self.kind {
            NormKind::Layer => {
                let mut args = vec![
                    ("axes", cx.ints("axes", &axes)?),
                    ("epsilon", cx.scalar("epsilon", d, eps)?),
                    ("x", Argument::name(&x)),
                ];
                if const_affine {
                    if let Some(c) = gamma.and_then(|g| g.konst) {
                        args.push(("gamma", cx.tensor("gamma", d, &norm_shape, c)?));
                    }
                    if let Some(c) = beta.and_then(|b| b.konst) {
                        args.push(("beta", cx.tensor("beta", d, &norm_shape, c)?));
                    }
                }
                cx.op("layer_norm", args, &core, d, shape)
            }
            NormKind::Rms => {
                let sx = cx.scale(&ins[0].name, d, shape, k / (n as f32).sqrt())?;
                let sq = cx.tmp("mul", vec![("x", Argument::name(&sx)), ("y", Argument::name(&sx))], d, shape);
                let mut red = shape.clone();
                for a in rank - self.naxes..rank {
                    red[a] = 1;
                }
                let ax = cx.ints("axes", &axes)?;
                let kd = cx.boolean("keep_dims", true)?;
                let ss = cx.tmp("reduce_sum", vec![("axes", ax), ("keep_dims", kd), ("x", Argument::name(sq))], d, &red);
                let e = cx.scalar("epsilon", d, eps)?;
                let rs = cx.tmp("rsqrt", vec![("epsilon", e), ("x", Argument::name(ss))], d, &red);
                cx.op("mul", vec![("x", Argument::name(&x)), ("y", Argument::name(rs))], &core, d, shape)
            }
        };
        if !needs_after {
            return Ok(y);
        }
        // Affine parameters as broadcasting operands of the normalised shape.
        let affine = |cx: &mut MilCtx, v: &Val| -> Result<Argument> {
            match v.konst {
                Some(c) => cx.tensor("affine", d, &norm_shape, c),
                None if v.fact.shape == norm_shape => Ok(Argument::name(&v.name)),
                None => {
                    let s = cx.ints("shape", &norm_shape.iter().map(|&x| x as i64).collect::<Vec<_>>())?;
                    Ok(Argument::name(cx.tmp("reshape", vec![("shape", s), ("x", Argument::name(&v.name))], d, &norm_shape)))
                }
            }
        };
        let mut y = y;
        if let Some(g) = gamma {
            let ga = affine(cx, g)?;
            let name = if beta.is_some() { cx.fresh("mul") } else { r.clone() };
            y = cx.op("mul", vec![("x", Argument::name(y)), ("y", ga)], &name, d, shape);
        }
        if let Some(b) = beta {
            let ba = affine(cx, b)?;
            y = cx.op("add", vec![("x", Argument::name(y)), ("y", ba)], &r, d, shape);
        }
        Ok(y)
    }
}
