//! Reductions over axes, and cumulative sums.
//!
//! Numerics: the engine's reduce unit accumulates in fp16, so under the
//! default `ane` numerics sum-like reductions round their accumulator after
//! every addition (integer sums stop being exact past 2048, as measured on
//! hardware). `numerics="ieee"` and fp32 precision accumulate in f32.

use super::{expect_float, Cost, EvalCtx, OpDef, View};
use crate::error::Result;
use crate::fact::{fmt_shape, norm_axes, norm_axis, strides_of, Fact};
use crate::numerics::round_f16;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1Norm,
    L2Norm,
    SumSquare,
    LogSum,
    LogSumExp,
}

impl ReduceKind {
    pub fn parse(s: &str) -> Option<ReduceKind> {
        use ReduceKind::*;
        Some(match s {
            "sum" => Sum,
            "mean" => Mean,
            "max" => Max,
            "min" => Min,
            "prod" => Prod,
            "l1_norm" => L1Norm,
            "l2_norm" => L2Norm,
            "sum_square" => SumSquare,
            "log_sum" => LogSum,
            "log_sum_exp" => LogSumExp,
            _ => return None,
        })
    }
    pub fn op_name(&self) -> &'static str {
        use ReduceKind::*;
        match self {
            Sum => "sum",
            Mean => "mean",
            Max => "max",
            Min => "min",
            Prod => "prod",
            L1Norm => "l1_norm",
            L2Norm => "l2_norm",
            SumSquare => "sum_square",
            LogSum => "log_sum",
            LogSumExp => "log_sum_exp",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Reduce {
    pub kind: ReduceKind,
    /// Normalised, sorted axes.
    pub axes: Vec<usize>,
    pub keepdims: bool,
}

impl Reduce {
    /// Builds a reduction, normalising `axes` (None = all axes) against `rank`.
    pub fn new(kind: ReduceKind, axes: Option<&[i64]>, keepdims: bool, rank: usize) -> Result<Reduce> {
        let axes = match axes {
            None => (0..rank).collect(),
            Some(a) => norm_axes(kind.op_name(), a, rank)?,
        };
        Ok(Reduce { kind, axes, keepdims })
    }
}

/// Visits `data[base + Σ i_k * strides[k]]` for every multi-index over `dims`.
#[inline]
fn visit(data: &[f32], base: usize, dims: &[usize], strides: &[usize], mut f: impl FnMut(f32)) {
    let r = dims.len();
    if r == 0 {
        f(data[base]);
        return;
    }
    let (inner, inner_s) = (dims[r - 1], strides[r - 1]);
    let outer: usize = dims[..r - 1].iter().product();
    let mut idx = [0usize; 8];
    for _ in 0..outer {
        let mut off = base;
        for k in 0..r - 1 {
            off += idx[k] * strides[k];
        }
        if inner_s == 1 {
            data[off..off + inner].iter().for_each(|&v| f(v));
        } else {
            for j in 0..inner {
                f(data[off + j * inner_s]);
            }
        }
        for k in (0..r - 1).rev() {
            idx[k] += 1;
            if idx[k] < dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

impl OpDef for Reduce {
    fn name(&self) -> String {
        self.kind.op_name().into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        let op = self.kind.op_name();
        super::expect_inputs(op, inputs, 1)?;
        let x = inputs[0];
        expect_float(op, x, "x")?;
        if x.rank() > 8 {
            crate::bail_shape!(op, "rank {} is above the supported 8 for {}", x.rank(), fmt_shape(&x.shape));
        }
        for &a in &self.axes {
            norm_axis(op, a as i64, x.rank())?;
        }
        let mut shape = Vec::new();
        for (i, &d) in x.shape.iter().enumerate() {
            if self.axes.contains(&i) {
                if self.keepdims {
                    shape.push(1);
                }
            } else {
                shape.push(d);
            }
        }
        Ok(Fact::new(shape, x.dtype))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &mut Vec<f32>, ctx: &EvalCtx) {
        let x = ins[0];
        let st = strides_of(x.shape);
        let (mut kdims, mut kstr, mut rdims, mut rstr) = (vec![], vec![], vec![], vec![]);
        for (i, &d) in x.shape.iter().enumerate() {
            if self.axes.contains(&i) {
                rdims.push(d);
                rstr.push(st[i]);
            } else {
                kdims.push(d);
                kstr.push(st[i]);
            }
        }
        let n: usize = rdims.iter().product();
        let acc16 = ctx.fp16_accumulate();
        let add = move |a: f32, b: f32| if acc16 { round_f16(a + b) } else { a + b };
        let kind = self.kind;
        let ieee = ctx.ieee;
        let one = |o: usize| -> f32 {
            let mut base = 0;
            let mut rem = o;
            for k in (0..kdims.len()).rev() {
                base += (rem % kdims[k]) * kstr[k];
                rem /= kdims[k];
            }
            let data = x.data;
            let fold = |init: f32, g: &dyn Fn(f32, f32) -> f32| {
                let mut acc = init;
                visit(data, base, &rdims, &rstr, |v| acc = g(acc, v));
                acc
            };
            use ReduceKind::*;
            match kind {
                Sum => fold(0.0, &|a, v| add(a, v)),
                Mean => fold(0.0, &|a, v| add(a, v)) / n as f32,
                Max => fold(f32::NEG_INFINITY, &|a, v| if v > a || (ieee && v.is_nan()) { v } else { a }),
                Min => fold(f32::INFINITY, &|a, v| if v < a || (ieee && v.is_nan()) { v } else { a }),
                Prod => fold(1.0, &|a, v| a * v),
                L1Norm => fold(0.0, &|a, v| add(a, v.abs())),
                L2Norm => fold(0.0, &|a, v| add(a, v * v)).sqrt(),
                SumSquare => fold(0.0, &|a, v| add(a, v * v)),
                LogSum => fold(0.0, &|a, v| add(a, v)).ln(),
                LogSumExp => {
                    let m = fold(f32::NEG_INFINITY, &|a, v| a.max(v));
                    if m.is_infinite() {
                        return m;
                    }
                    m + fold(0.0, &|a, v| add(a, (v - m).exp())).ln()
                }
            }
        };
        if out.len() >= 64 && x.data.len() >= 1 << 15 {
            out.par_iter_mut().enumerate().for_each(|(o, d)| *d = one(o));
        } else {
            out.iter_mut().enumerate().for_each(|(o, d)| *d = one(o));
        }
    }
    fn cost(&self, ins: &[&Fact], _: &Fact) -> Cost {
        Cost { flops: ins[0].numel() as f64 }
    }
}

impl Reduce {
    pub fn is_exact(&self) -> bool {
        matches!(self.kind, ReduceKind::Max | ReduceKind::Min)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CumSum {
    pub axis: usize,
    pub exclusive: bool,
    pub reverse: bool,
}

impl OpDef for CumSum {
    fn name(&self) -> String {
        "cumsum".into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        super::expect_inputs("cumsum", inputs, 1)?;
        expect_float("cumsum", inputs[0], "x")?;
        norm_axis("cumsum", self.axis as i64, inputs[0].rank())?;
        Ok(inputs[0].clone())
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &mut Vec<f32>, ctx: &EvalCtx) {
        let x = ins[0];
        let n = x.shape[self.axis];
        let inner: usize = x.shape[self.axis + 1..].iter().product();
        let acc16 = ctx.fp16_accumulate();
        let (excl, rev) = (self.exclusive, self.reverse);
        out.par_chunks_mut(n * inner).zip(x.data.par_chunks(n * inner)).for_each(|(o, xs)| {
            for j in 0..inner {
                let mut acc = 0.0f32;
                for step in 0..n {
                    let i = if rev { n - 1 - step } else { step };
                    let v = xs[i * inner + j];
                    if excl {
                        o[i * inner + j] = acc;
                    }
                    acc = if acc16 { round_f16(acc + v) } else { acc + v };
                    if !excl {
                        o[i * inner + j] = acc;
                    }
                }
            }
        });
    }
}
