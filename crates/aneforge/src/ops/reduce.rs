//! Reductions over axes, and cumulative sums.
//!
//! Numerics: the engine's reduce unit accumulates in fp16, so under the
//! default `ane` numerics sum-like reductions round their accumulator after
//! every addition (integer sums stop being exact past 2048, as measured on
//! hardware). `numerics="ieee"` and fp32 precision accumulate in f32.

use super::{expect_float, Cost, EvalCtx, OpDef, View};
use crate::error::Result;
use crate::fact::{fmt_shape, norm_axes, norm_axis, strides_small, Dims, Fact};
use crate::numerics::{round_f16, round_f16_fast};
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
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &mut [f32], ctx: &EvalCtx) {
        let x = ins[0];
        let r = x.shape.len();
        let (a0, a1) = (self.axes.first().copied().unwrap_or(0), self.axes.last().map_or(0, |a| a + 1));
        let contiguous = self.axes.len() == a1 - a0;
        let kind = self.kind;
        if contiguous && !self.axes.is_empty() {
            let outer: usize = x.shape[..a0].iter().product();
            let n: usize = x.shape[a0..a1].iter().product();
            let inner: usize = x.shape[a1..r].iter().product();
            if inner == 1 {
                reduce_rows(kind, x.data, out, n, ctx);
            } else {
                reduce_columns(kind, x.data, out, outer, n, inner, ctx);
            }
            return;
        }
        self.eval_general(x, out, ctx);
    }
    fn cost(&self, ins: &[&Fact], _: &Fact) -> Cost {
        Cost { flops: ins[0].numel() as f64 }
    }
}

/// How a reduction kind maps each value, folds, and finishes.
#[derive(Clone, Copy)]
struct Fold {
    init: f32,
    kind: ReduceKind,
    acc16: bool,
    /// numerics="ieee": max/min propagate NaN, as the elementwise
    /// maximum/minimum and max_pool do; the engine's max drops it.
    ieee: bool,
}

impl Fold {
    fn new(kind: ReduceKind, ctx: &EvalCtx) -> Fold {
        let (acc16, ieee) = (ctx.fp16_accumulate(), ctx.ieee);
        use ReduceKind::*;
        let init = match kind {
            Max => f32::NEG_INFINITY,
            Min => f32::INFINITY,
            Prod => 1.0,
            _ => 0.0,
        };
        Fold { init, kind, acc16, ieee }
    }
    /// `shift` is the row maximum for log_sum_exp, 0 otherwise.
    #[inline(always)]
    fn step(&self, acc: f32, v: f32, shift: f32) -> f32 {
        use ReduceKind::*;
        let add = |a: f32, b: f32| if self.acc16 { round_f16_fast(a + b) } else { a + b };
        match self.kind {
            Sum | Mean | LogSum => add(acc, v),
            L1Norm => add(acc, v.abs()),
            L2Norm | SumSquare => add(acc, v * v),
            LogSumExp => add(acc, crate::numerics::exp(v - shift)),
            Max if self.ieee && (acc.is_nan() || v.is_nan()) => f32::NAN,
            Min if self.ieee && (acc.is_nan() || v.is_nan()) => f32::NAN,
            Max => acc.max(v),
            Min => acc.min(v),
            Prod => acc * v,
        }
    }
    #[inline(always)]
    fn finish(&self, acc: f32, n: usize, shift: f32) -> f32 {
        use ReduceKind::*;
        match self.kind {
            Mean => acc / n as f32,
            L2Norm => acc.sqrt(),
            LogSum => acc.ln(),
            LogSumExp => {
                if shift.is_infinite() {
                    shift
                } else {
                    shift + acc.ln()
                }
            }
            _ => acc,
        }
    }
}

/// Rows of length `n` → one value each. fp16 accumulation is a sequential
/// chain per row, so 16 rows advance together, one per SIMD lane.
fn reduce_rows(kind: ReduceKind, x: &[f32], out: &mut [f32], n: usize, ctx: &EvalCtx) {
    let f = Fold::new(kind, ctx);
    let shift_of = |row: &[f32]| if kind == ReduceKind::LogSumExp { crate::numerics::max_f32(row) } else { 0.0 };
    const L: usize = 16;
    let group = |(g, o): (usize, &mut [f32])| {
        let base = g * L * n;
        if o.len() == L {
            let mut shift = [0.0f32; L];
            for l in 0..L {
                shift[l] = shift_of(&x[base + l * n..base + (l + 1) * n]);
            }
            let mut acc = [f.init; L];
            for j in 0..n {
                for l in 0..L {
                    acc[l] = f.step(acc[l], x[base + l * n + j], shift[l]);
                }
            }
            for l in 0..L {
                o[l] = f.finish(acc[l], n, shift[l]);
            }
        } else {
            for (l, o) in o.iter_mut().enumerate() {
                let row = &x[base + l * n..base + (l + 1) * n];
                let shift = shift_of(row);
                let mut acc = f.init;
                for &v in row {
                    acc = f.step(acc, v, shift);
                }
                *o = f.finish(acc, n, shift);
            }
        }
    };
    // From 8K values, not the elementwise passes' 32K: each value costs a
    // strided load and (fp16 accumulation) a rounding, several ns, so a
    // ResNet's global average pool (512 rows of 49) gains from a second
    // thread: 0.117 -> 0.072 ms a call (A/B between builds).
    if x.len() >= 1 << 13 && out.len() > L {
        out.par_chunks_mut(L).enumerate().for_each(group);
    } else {
        out.chunks_mut(L).enumerate().for_each(group);
    }
}

/// [outer, n, inner] → [outer, inner]: accumulate whole rows of `inner`
/// contiguous values (vectorises across the kept axis).
fn reduce_columns(kind: ReduceKind, x: &[f32], out: &mut [f32], outer: usize, n: usize, inner: usize, ctx: &EvalCtx) {
    let f = Fold::new(kind, ctx);
    let lse = kind == ReduceKind::LogSumExp;
    let body = |(o, dst): (usize, &mut [f32])| {
        let block = &x[o * n * inner..(o + 1) * n * inner];
        // For log_sum_exp the output slice first holds the per-column maxima.
        if lse {
            dst.fill(f32::NEG_INFINITY);
            for j in 0..n {
                for (d, &v) in dst.iter_mut().zip(&block[j * inner..(j + 1) * inner]) {
                    *d = d.max(v);
                }
            }
            for c in 0..inner {
                let m = dst[c];
                let mut acc = f.init;
                for j in 0..n {
                    acc = f.step(acc, block[j * inner + c], m);
                }
                dst[c] = f.finish(acc, n, m);
            }
            return;
        }
        dst.fill(f.init);
        for j in 0..n {
            for (d, &v) in dst.iter_mut().zip(&block[j * inner..(j + 1) * inner]) {
                *d = f.step(*d, v, 0.0);
            }
        }
        for d in dst.iter_mut() {
            *d = f.finish(*d, n, 0.0);
        }
    };
    if x.len() >= 1 << 15 && outer > 1 {
        out.par_chunks_mut(inner).enumerate().for_each(body);
    } else {
        out.chunks_mut(inner).enumerate().for_each(body);
    }
}

impl Reduce {
    /// Any axes (non-contiguous sets): walk each output's reduced elements.
    fn eval_general(&self, x: View, out: &mut [f32], ctx: &EvalCtx) {
        let st = strides_small(x.shape);
        let r = x.shape.len();
        let kept = |i: &usize| !self.axes.contains(i);
        let reduced = |i: &usize| self.axes.contains(i);
        let kdims: Dims<usize> = (0..r).filter(kept).map(|i| x.shape[i]).collect();
        let kstr: Dims<usize> = (0..r).filter(kept).map(|i| st[i]).collect();
        let rdims: Dims<usize> = (0..r).filter(reduced).map(|i| x.shape[i]).collect();
        let rstr: Dims<usize> = (0..r).filter(reduced).map(|i| st[i]).collect();
        let n: usize = rdims.iter().product();
        let f = Fold::new(self.kind, ctx);
        let one = |o: usize| -> f32 {
            let mut base = 0;
            let mut rem = o;
            for k in (0..kdims.len()).rev() {
                base += (rem % kdims[k]) * kstr[k];
                rem /= kdims[k];
            }
            let shift = if self.kind == ReduceKind::LogSumExp {
                let mut m = f32::NEG_INFINITY;
                visit(x.data, base, &rdims, &rstr, |v| m = m.max(v));
                m
            } else {
                0.0
            };
            let mut acc = f.init;
            visit(x.data, base, &rdims, &rstr, |v| acc = f.step(acc, v, shift));
            f.finish(acc, n, shift)
        };
        if out.len() >= 64 && x.data.len() >= 1 << 15 {
            out.par_iter_mut().enumerate().for_each(|(o, d)| *d = one(o));
        } else {
            out.iter_mut().enumerate().for_each(|(o, d)| *d = one(o));
        }
    }

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
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &mut [f32], ctx: &EvalCtx) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: ReduceKind, axes: &[i64], shape: &[usize], x: &[f32], ieee: bool) -> Vec<f32> {
        let r = Reduce::new(kind, Some(axes), false, shape.len()).unwrap();
        let out_fact = r.infer(&[&Fact::new(shape.to_vec(), crate::DType::F16)]).unwrap();
        let mut out = vec![0.0; out_fact.numel()];
        let ctx = EvalCtx { fp16: true, ieee, weights_cached: false };
        r.eval(&[View { data: x, shape }], &mut out, &out_fact.shape, &mut vec![], &ctx);
        out
    }

    #[test]
    fn ieee_max_and_min_propagate_nan_on_every_path() {
        // Bug: the vectorised fold used f32::max/min in both modes, so
        // numerics="ieee" dropped NaN in max/min while the elementwise
        // maximum and max_pool propagated it.
        let x: Vec<f32> = (0..8).map(|i| if i == 0 { f32::NAN } else { i as f32 }).collect();
        for kind in [ReduceKind::Max, ReduceKind::Min] {
            // rows, columns, and the general (non-contiguous axes) walk
            for (axes, shape) in [(&[1i64][..], &[2usize, 4][..]), (&[0][..], &[2, 4][..]), (&[0, 2][..], &[2, 2, 2][..])] {
                let ieee = run(kind, axes, shape, &x, true);
                assert!(ieee[0].is_nan(), "{kind:?} {axes:?} ieee: {ieee:?}");
                assert!(ieee[1..].iter().all(|v| !v.is_nan()), "{kind:?} {axes:?} ieee: {ieee:?}");
                let ane = run(kind, axes, shape, &x, false);
                assert!(ane.iter().all(|v| !v.is_nan()), "{kind:?} {axes:?} ane: {ane:?}");
            }
        }
    }
}

// ---- MIL lowering (driver and conventions: backend/mil) ----

use crate::backend::mil::{LowerMil, MilCtx, Val};
use aneforge_mil::Argument;

impl LowerMil for Reduce {
    /// `reduce_<kind>`. Mean is `reduce_sum` then a multiply by 1/n:
    /// `reduce_mean` is reported missing from the engine's MIL, and the
    /// factor is never 0, so this is not the `mul(reduce, 0)` that fails.
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let d = ins[0].mil_dtype();
        let r = cx.result();
        let x = ins[0].fact;
        let axes: Vec<i64> = self.axes.iter().map(|&a| a as i64).collect();
        let op = match self.kind {
            ReduceKind::Sum | ReduceKind::Mean => "reduce_sum",
            ReduceKind::Max => "reduce_max",
            ReduceKind::Min => "reduce_min",
            ReduceKind::Prod => "reduce_prod",
            ReduceKind::L1Norm => "reduce_l1_norm",
            ReduceKind::L2Norm => "reduce_l2_norm",
            ReduceKind::SumSquare => "reduce_sum_square",
            ReduceKind::LogSum => "reduce_log_sum",
            ReduceKind::LogSumExp => "reduce_log_sum_exp",
        };
        let args = vec![("axes", cx.ints("axes", &axes)?), ("keep_dims", cx.boolean("keep_dims", self.keepdims)?), ("x", Argument::name(&ins[0].name))];
        if self.kind != ReduceKind::Mean {
            return Ok(cx.op(op, args, &r, d, &out.shape));
        }
        let n: usize = self.axes.iter().map(|&a| x.shape[a]).product();
        let s = cx.tmp("reduce_sum", args, d, &out.shape);
        let inv = cx.scalar("inv_n", d, 1.0 / n as f32)?;
        Ok(cx.op("mul", vec![("x", Argument::name(s)), ("y", inv)], &r, d, &out.shape))
    }
}

impl LowerMil for CumSum {
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let d = ins[0].mil_dtype();
        let r = cx.result();
        let args = vec![
            ("axis", cx.int("axis", self.axis as i64)?),
            ("exclusive", cx.boolean("exclusive", self.exclusive)?),
            ("reverse", cx.boolean("reverse", self.reverse)?),
            ("x", Argument::name(&ins[0].name)),
        ];
        Ok(cx.op("cumsum", args, &r, d, &out.shape))
    }
}
