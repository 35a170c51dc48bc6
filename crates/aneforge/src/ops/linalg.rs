//! Matrix multiplication on the sim's GEMM (`crate::sgemm`), with an optional fused bias
//! and activation epilogue (set by the `fuse_epilogues` pass).

use super::elementwise::Unary;
use super::{expect_float, Cost, EvalCtx, OpDef, View};
use crate::error::{Error, Result};
use crate::fact::{broadcast_shapes, fmt_shape, Fact};
use crate::numerics::round_f16_slice;
use crate::sgemm::{pack_rhs, packs_constants, sgemm, Epilogue, Mat, Operand, PackedData};
use rayon::prelude::*;

/// Flops below which a GEMM runs on one thread (threading costs more).
const PAR_FLOPS: usize = 1 << 18;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatMul {
    pub transpose_a: bool,
    pub transpose_b: bool,
    /// A third input of shape [N] added to every output row.
    pub bias: bool,
    pub act: Option<Unary>,
}

impl MatMul {
    pub fn plain() -> MatMul {
        MatMul { transpose_a: false, transpose_b: false, bias: false, act: None }
    }

    fn dims(&self, a: &[usize], b: &[usize]) -> (usize, usize, usize, usize) {
        let (ra, rb) = (a.len(), b.len());
        let (m, ka) = if self.transpose_a { (a[ra - 1], a[ra - 2]) } else { (a[ra - 2], a[ra - 1]) };
        let (kb, n) = if self.transpose_b { (b[rb - 1], b[rb - 2]) } else { (b[rb - 2], b[rb - 1]) };
        (m, ka, kb, n)
    }
}

impl OpDef for MatMul {
    fn name(&self) -> String {
        "matmul".into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        let want = 2 + self.bias as usize;
        super::expect_inputs("matmul", inputs, want)?;
        let (a, b) = (inputs[0], inputs[1]);
        expect_float("matmul", a, "a")?;
        expect_float("matmul", b, "b")?;
        if a.rank() < 2 || b.rank() < 2 {
            return Err(Error::shape(
                "matmul",
                format!("operands must have rank >= 2, got {} and {}; reshape vectors to [1, K] or [K, 1]", fmt_shape(&a.shape), fmt_shape(&b.shape)),
            ));
        }
        let (m, ka, kb, n) = self.dims(&a.shape, &b.shape);
        if ka != kb {
            return Err(Error::shape(
                "matmul",
                format!(
                    "inner dimensions differ: a {} has K={ka}, b {} has K={kb}{}; transpose or reshape one operand",
                    fmt_shape(&a.shape),
                    fmt_shape(&b.shape),
                    if self.transpose_a || self.transpose_b { " (after the transpose flags)" } else { "" }
                ),
            ));
        }
        let batch =
            broadcast_shapes("matmul", &a.shape[..a.rank() - 2], &b.shape[..b.rank() - 2]).map_err(|e| {
                // name the operands, not only their batch dims
                Error::shape("matmul", format!("batch dims of {} and {} do not broadcast ({})", fmt_shape(&a.shape), fmt_shape(&b.shape), e.to_string().trim_start_matches("matmul: ")))
            })?;
        let mut shape = batch;
        shape.extend([m, n]);
        if self.bias {
            let bias = inputs[2];
            if bias.shape != [n] {
                return Err(Error::shape("matmul", format!("bias must have shape [{n}], got {}", fmt_shape(&bias.shape))));
            }
        }
        if a.dtype != b.dtype {
            return Err(Error::dtype("matmul", format!("a is {a} and b is {b}; cast one so both match")));
        }
        Ok(Fact::new(shape, a.dtype))
    }

    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &mut [f32], ctx: &EvalCtx) {
        let (a, b) = (ins[0], ins[1]);
        let (m, k, _, n) = self.dims(a.shape, b.shape);
        let r = out_shape.len();
        let mut batch_shape = &out_shape[..r - 2];
        let mut batches: usize = batch_shape.iter().product();
        // One B for every batch (a layer's weight) and a row-major A: the
        // batches are just more rows of one GEMM. PyTorch's attention
        // exports its QKV projection as [197, 1, 768] x [768, 2304]: 197
        // one-row GEMMs otherwise.
        let fold = batches > 1 && !self.transpose_a && b.data.len() == k * n && a.data.len() == batches * m * k;
        let (mut a_batch, mut b_batch) = (&a.shape[..a.shape.len() - 2], &b.shape[..b.shape.len() - 2]);
        let m = if fold {
            (batch_shape, a_batch, b_batch) = (&[], &[], &[]);
            std::mem::replace(&mut batches, 1) * m
        } else {
            m
        };
        let sa = super::elementwise::broadcast_strides(a_batch, batch_shape);
        let sb = super::elementwise::broadcast_strides(b_batch, batch_shape);
        let offset = |bi: usize, strides: &[usize], mat: usize| {
            let mut rem = bi;
            let mut off = 0;
            for ax in (0..batch_shape.len()).rev() {
                off += (rem % batch_shape[ax]) * strides[ax];
                rem /= batch_shape[ax];
            }
            off * mat
        };
        let (a_rs, a_cs) = if self.transpose_a { (1isize, m as isize) } else { (k as isize, 1isize) };
        let (b_rs, b_cs) = if self.transpose_b { (1isize, k as isize) } else { (n as isize, 1isize) };
        // A trailing extra input is B packed at compile time (see `prepare`).
        let packed_b = (ins.len() > 2 + self.bias as usize).then(|| ins[ins.len() - 1].data);
        let (clamp, round) = epilogue_act(self.act, ctx);
        let epi = Epilogue { row_bias: None, col_bias: if self.bias { Some(ins[2].data) } else { None }, residual: None, clamp, round };
        let flops = m * n * k;
        let run = |bi: usize, dst: &mut [f32], parallel: bool| {
            let ao = offset(bi, &sa, m * k);
            let bo = offset(bi, &sb, k * n);
            let lhs = Operand::Strided(Mat { ptr: a.data[ao..].as_ptr(), rs: a_rs, cs: a_cs });
            let rhs = match packed_b {
                Some(p) => Operand::packed_rhs(&PackedData::new(p), n).cached(ctx.weights_cached),
                None => Operand::Strided(Mat { ptr: b.data[bo..].as_ptr(), rs: b_rs, cs: b_cs }),
            };
            // SAFETY: the offsets and strides stay inside `a`, `b` and `dst`
            // by construction of the shapes checked in `infer`.
            unsafe { sgemm(m, n, k, lhs, rhs, dst.as_mut_ptr(), n, false, epi, parallel) };
        };
        // Batches to threads when they are small, or many enough to share
        // out evenly (attention's 12 heads of [197, 64] x [64, 197] ran at
        // half speed as 12 GEMMs each split across the cores).
        if batches > 1 && (flops < PAR_FLOPS * 8 || batches >= 4 * rayon::current_num_threads()) {
            out.par_chunks_mut(m * n).enumerate().for_each(|(bi, dst)| run(bi, dst, false));
        } else {
            for (bi, dst) in out.chunks_mut(m * n).enumerate() {
                run(bi, dst, flops >= PAR_FLOPS);
            }
        }
        after_epilogue(out, self.act, ctx);
    }

    fn rounds_output(&self) -> bool {
        true
    }

    /// A constant B without batch dims (a layer's weight) is packed once.
    fn prepare(&self, ins: &[&Fact], consts: &[Option<&[f32]>], _out: &Fact) -> Option<Vec<f32>> {
        let b = consts.get(1).copied().flatten()?;
        let (_, k, _, n) = self.dims(&ins[0].shape, &ins[1].shape);
        if !packs_constants() || ins[1].numel() != k * n {
            return None;
        }
        let bm = if self.transpose_b { Mat::cols(b, k) } else { Mat::rows(b, n) };
        Some(pack_rhs(bm, k, n, ins[0].numel() / k.max(1)))
    }

    fn cost(&self, ins: &[&Fact], out: &Fact) -> Cost {
        let (_, k, _, _) = self.dims(&ins[0].shape, &ins[1].shape);
        Cost { flops: 2.0 * out.numel() as f64 * k as f64 }
    }
}

/// What a GEMM-based kernel's epilogue takes of an op's activation: the
/// clamp it is (relu, relu6, clip), and whether the epilogue also rounds
/// to fp16, which it does unless another activation must come first.
pub(crate) fn epilogue_act(act: Option<Unary>, ctx: &EvalCtx) -> (Option<(f32, f32)>, bool) {
    let clamp = act.and_then(|u| u.as_clamp(ctx.ieee));
    (clamp, ctx.fp16 && (act.is_none() || clamp.is_some()))
}

/// The rest of [`epilogue_act`]'s activation, over the whole output: one
/// that is not a clamp, then the fp16 rounding the epilogue left to it.
pub(crate) fn after_epilogue(out: &mut [f32], act: Option<Unary>, ctx: &EvalCtx) {
    if let Some(act) = act.filter(|u| u.as_clamp(ctx.ieee).is_none()) {
        act.apply_in_place(out, ctx.ieee);
        if ctx.fp16 {
            round_f16_slice(out);
        }
    }
}

/// Adds a per-channel bias to planes of length `plane` and applies `act`.
pub(crate) fn epilogue_planes(out: &mut [f32], plane: usize, channels: usize, bias: Option<&[f32]>, act: Option<Unary>, ieee: bool) {
    if let Some(b) = bias {
        let body = |(i, p): (usize, &mut [f32])| {
            let bv = b[i % channels];
            p.iter_mut().for_each(|o| *o += bv);
        };
        if out.len() >= 1 << 16 {
            out.par_chunks_mut(plane).enumerate().for_each(body);
        } else {
            out.chunks_mut(plane).enumerate().for_each(body);
        }
    }
    if let Some(f) = act {
        f.apply_in_place(out, ieee);
    }
}

// ---- MIL lowering (driver and conventions: backend/mil) ----

use crate::backend::mil::{LowerMil, MilCtx, Val};
use aneforge_mil::Argument;

impl LowerMil for MatMul {
    /// A constant rank-2 right operand (a layer's weight) becomes `linear`
    /// with the weight laid out [N, K] and the bias fused; anything else is
    /// `matmul` with the transpose flags, plus `add` for a bias. The fused
    /// activation follows as its own op.
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let d = ins[0].mil_dtype();
        let r = cx.result();
        let (a, b) = (&ins[0], &ins[1]);
        let bias = if self.bias { Some(&ins[2]) } else { None };
        let mm_name = if self.act.is_some() { cx.fresh("matmul") } else { r.clone() };
        let linear_ok = !self.transpose_a && b.rank() == 2 && b.konst.is_some() && bias.is_none_or(|v| v.konst.is_some());
        let y = if let (true, Some(w)) = (linear_ok, b.konst) {
            let (k, n) = if self.transpose_b { (b.fact.shape[1], b.fact.shape[0]) } else { (b.fact.shape[0], b.fact.shape[1]) };
            // linear computes x·Wᵀ with W [N, K].
            let wt: Vec<f32> = if self.transpose_b { w.to_vec() } else { (0..n * k).map(|i| w[(i % k) * n + i / k]).collect() };
            let wa = cx.tensor("weight", d, &[n, k], &wt)?;
            let bias_data = bias.and_then(|v| v.konst).map(|c| c.to_vec()).unwrap_or_else(|| vec![0.0; n]);
            let ba = cx.tensor("bias", d, &[n], &bias_data)?;
            cx.op("linear", vec![("bias", ba), ("weight", wa), ("x", Argument::name(&a.name))], &mm_name, d, &out.shape)
        } else {
            let (ta, tb) = (cx.boolean("transpose_x", self.transpose_a)?, cx.boolean("transpose_y", self.transpose_b)?);
            let args = vec![("transpose_x", ta), ("transpose_y", tb), ("x", Argument::name(&a.name)), ("y", Argument::name(&b.name))];
            match bias {
                Some(bv) => {
                    let m = cx.tmp("matmul", args, d, &out.shape);
                    cx.op("add", vec![("x", Argument::name(m)), ("y", Argument::name(&bv.name))], &mm_name, d, &out.shape)
                }
                None => cx.op("matmul", args, &mm_name, d, &out.shape),
            }
        };
        match self.act {
            Some(act) => act.lower_to(cx, &y, d, &out.shape, &r),
            None => Ok(y),
        }
    }
}
