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
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &mut Vec<f32>, _: &EvalCtx) {
        let x = ins[0];
        let n = x.shape[self.axis];
        let inner: usize = x.shape[self.axis + 1..].iter().product();
        let log = self.log;
        let body = |(o, xs): (&mut [f32], &[f32])| {
            if inner == 1 {
                softmax_row(xs, o, log);
            } else {
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
        };
        if x.data.len() >= 1 << 14 {
            out.par_chunks_mut(n * inner).zip(x.data.par_chunks(n * inner)).for_each(body);
        } else {
            out.chunks_mut(n * inner).zip(x.data.chunks(n * inner)).for_each(body);
        }
    }
    fn cost(&self, _: &[&Fact], out: &Fact) -> Cost {
        Cost { flops: out.numel() as f64 * 5.0 }
    }
}

fn softmax_row(xs: &[f32], o: &mut [f32], log: bool) {
    use crate::numerics::{exp, max_f32, sum_f32};
    let m = max_f32(xs);
    // Separate passes keep each loop free of a carried dependency, so they vectorise.
    for (o, &v) in o.iter_mut().zip(xs) {
        *o = exp(v - m);
    }
    let s = sum_f32(o);
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
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &mut Vec<f32>, _: &EvalCtx) {
        let x = ins[0];
        let n: usize = x.shape[x.shape.len() - self.naxes..].iter().product();
        let gamma = if self.gamma { Some(ins[1].data) } else { None };
        let beta = if self.beta { Some(ins[1 + self.gamma as usize].data) } else { None };
        let (kind, eps) = (self.kind, self.eps);
        let body = |(o, xs): (&mut [f32], &[f32])| {
            let inv_n = 1.0 / n as f32;
            use crate::numerics::sum_f32;
            // Two passes (mean, then centred squares) avoid the cancellation of E[x²] − E[x]².
            let mean = if kind == NormKind::Layer { sum_f32(xs) * inv_n } else { 0.0 };
            for (o, &v) in o.iter_mut().zip(xs) {
                *o = (v - mean) * (v - mean);
            }
            let var = sum_f32(o) * inv_n;
            let r = 1.0 / (var + eps).sqrt();
            for (i, (o, &v)) in o.iter_mut().zip(xs).enumerate() {
                let mut y = (v - mean) * r;
                if let Some(g) = gamma {
                    y *= g[i];
                }
                if let Some(b) = beta {
                    y += b[i];
                }
                *o = y;
            }
        };
        if x.data.len() >= 1 << 14 {
            out.par_chunks_mut(n).zip(x.data.par_chunks(n)).for_each(body);
        } else {
            out.chunks_mut(n).zip(x.data.chunks(n)).for_each(body);
        }
    }
    fn cost(&self, _: &[&Fact], out: &Fact) -> Cost {
        Cost { flops: out.numel() as f64 * 8.0 }
    }
}
