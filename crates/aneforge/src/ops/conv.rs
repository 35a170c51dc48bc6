//! 2-D convolution and transposed convolution (1-D goes through a height of
//! 1 in the builder). NCHW activations, OIHW weights, im2col + GEMM with a
//! 1x1 fast path that skips im2col and a direct depthwise kernel.

use super::elementwise::Unary;
use super::linalg::{after_epilogue, epilogue_act, epilogue_planes};
use super::{expect_float, Cost, EvalCtx, OpDef, View};
use crate::error::{Error, Result};
use crate::fact::{fmt_shape, Fact};
use super::im2col::{im2col, im2col_serial, Padded, PaddedIm2col};
use crate::numerics::round_f16_slice;
use crate::sgemm::{sgemm, Epilogue, Mat, Operand, PackedData, Residual};
use rayon::prelude::*;

/// Spatial geometry shared by conv, conv_transpose and pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// top, left, bottom, right
    pub pad: [usize; 4],
    pub dilation: [usize; 2],
}

impl Window {
    fn eff(&self, ax: usize) -> usize {
        self.dilation[ax] * (self.kernel[ax] - 1) + 1
    }
    /// Output size of a forward window over `input` (floor mode).
    pub fn out_size(&self, op: &str, h: usize, w: usize) -> Result<[usize; 2]> {
        let mut o = [0; 2];
        for (ax, &n) in [h, w].iter().enumerate() {
            let padded = n + self.pad[ax] + self.pad[ax + 2];
            let e = self.eff(ax);
            if padded < e {
                return Err(Error::shape(
                    op,
                    format!(
                        "the {} kernel (effective size {e}) is larger than the padded input ({padded}); pad more or use a smaller kernel",
                        if ax == 0 { "vertical" } else { "horizontal" }
                    ),
                ));
            }
            o[ax] = (padded - e) / self.stride[ax] + 1;
        }
        Ok(o)
    }
    fn validate(&self, op: &str) -> Result<()> {
        if self.kernel.contains(&0) || self.stride.contains(&0) || self.dilation.contains(&0) {
            return Err(Error::value(op, format!("kernel {:?}, stride {:?} and dilation {:?} must all be >= 1", self.kernel, self.stride, self.dilation)));
        }
        Ok(())
    }
}

/// The checks conv and conv_transpose make first, in this order: input
/// count (x, weight and `optional` more), the window itself, a float x, rank-4 x and weight
/// (`weight_layout` names the weight's axes for the message). Returns
/// (x, weight).
fn conv_operands<'a>(op: &str, window: &Window, inputs: &[&'a Fact], optional: usize, weight_layout: &str) -> Result<(&'a Fact, &'a Fact)> {
    super::expect_inputs(op, inputs, 2 + optional)?;
    window.validate(op)?;
    let (x, w) = (inputs[0], inputs[1]);
    expect_float(op, x, "x")?;
    if x.rank() != 4 || w.rank() != 4 {
        return Err(Error::shape(
            op,
            format!("expects x [N, C, H, W] and weight {weight_layout}, got x {} and weight {}", fmt_shape(&x.shape), fmt_shape(&w.shape)),
        ));
    }
    Ok((x, w))
}

/// The checks conv and conv_transpose make last, once the channel
/// counts are known: the weight's spatial axes are the kernel, and the
/// bias (when there is one) has one value per output channel `o`.
fn check_conv_weight_and_bias(op: &str, window: &Window, w: &Fact, bias: Option<&Fact>, o: usize) -> Result<()> {
    if [w.shape[2], w.shape[3]] != window.kernel {
        return Err(Error::shape(op, format!("weight {} does not match kernel {:?}", fmt_shape(&w.shape), window.kernel)));
    }
    match bias {
        Some(b) if b.shape != [o] => Err(Error::shape(op, format!("bias must have shape [{o}], got {}", fmt_shape(&b.shape)))),
        _ => Ok(()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conv {
    pub window: Window,
    pub groups: usize,
    pub bias: bool,
    /// A tensor of the output's shape, the input after the bias, added
    /// after the bias and before the activation: a residual connection,
    /// fused by `fuse_epilogues` with the rounding of the unfused add.
    pub residual: bool,
    pub act: Option<Unary>,
}

impl OpDef for Conv {
    fn name(&self) -> String {
        "conv".into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        let (x, w) = conv_operands("conv", &self.window, inputs, self.bias as usize + self.residual as usize, "[O, C/groups, kh, kw]")?;
        expect_float("conv", w, "weight")?;
        let g = self.groups;
        let (c, o) = (x.shape[1], w.shape[0]);
        if g == 0 || c % g != 0 || o % g != 0 {
            return Err(Error::shape("conv", format!("groups={g} must divide both the input channels ({c}) and the output channels ({o})")));
        }
        if w.shape[1] * g != c {
            return Err(Error::shape(
                "conv",
                format!(
                    "x {} has {c} channels but weight {} expects {} (= {} x groups {g}); the weight's second axis must be C/groups",
                    fmt_shape(&x.shape),
                    fmt_shape(&w.shape),
                    w.shape[1] * g,
                    w.shape[1]
                ),
            ));
        }
        check_conv_weight_and_bias("conv", &self.window, w, self.bias.then(|| inputs[2]), o)?;
        let [oh, ow] = self.window.out_size("conv", x.shape[2], x.shape[3])?;
        let out = Fact::new(vec![x.shape[0], o, oh, ow], x.dtype);
        if let Some(r) = self.residual.then(|| inputs[2 + self.bias as usize]) {
            if r.shape != out.shape || r.dtype != out.dtype {
                return Err(Error::shape("conv", format!("a fused residual must match the output {} {}, got {} {}", fmt_shape(&out.shape), out.dtype, fmt_shape(&r.shape), r.dtype)));
            }
        }
        Ok(out)
    }

    fn scratch_len(&self, ins: &[&Fact], out: &Fact) -> usize {
        if self.is_winograd(ins[0].shape[1], out) {
            return super::winograd::scratch_len(ins[0].shape[1], out.shape[1], out.shape[2], out.shape[3]);
        }
        let cg = ins[0].shape[1] / self.groups;
        let (_, unfold) = self.unfolding(cg, [ins[0].shape[2], ins[0].shape[3]], [out.shape[2], out.shape[3]]);
        if self.is_small_winograd(ins[0].shape[1], out) {
            // Or the direct path's, for a weight that is not constant.
            return unfold.max(super::winograd::small::scratch_len(ins[0].shape[1], out.shape[1], out.shape[2], out.shape[3]));
        }
        // Room for the transposed GEMM's output, before it is transposed,
        // and for the input it unfolds.
        if self.is_transposed(ins[0].shape[1], out) {
            return out.numel() / out.shape[0] + unfold;
        }
        if self.is_pointwise() || self.is_depthwise(ins[0].shape[1], out.shape[1]) {
            return 0;
        }
        unfold
    }

    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], scratch: &mut [f32], ctx: &EvalCtx) {
        let (x, w) = (ins[0], ins[1]);
        let [n, c, h, wd] = [x.shape[0], x.shape[1], x.shape[2], x.shape[3]];
        let [_, o, oh, ow] = [out_shape[0], out_shape[1], out_shape[2], out_shape[3]];
        let g = self.groups;
        let (cg, og) = (c / g, o / g);
        let [kh, kw] = self.window.kernel;
        let kk = cg * kh * kw;
        let plane = oh * ow;
        // A trailing extra input is the weight transform `prepare` made.
        let given = 2 + self.bias as usize + self.residual as usize;
        let prepared = if ins.len() > given { ins.last().map(|v| v.data) } else { None };
        // Image b's residual, when one is fused.
        let residual = |b: usize| self.residual.then(|| Residual { data: &ins[given - 1].data[b * o * plane..(b + 1) * o * plane], round: ctx.fp16 });
        // Bias, a clamp-like activation and fp16 rounding run inside the
        // kernels below; any other activation runs after them, and the
        // rounding after it.
        let (clamp, round) = epilogue_act(self.act, ctx);
        if self.is_depthwise(c, o) {
            // The depthwise kernel has no epilogue of its own.
            depthwise(x, w.data, out, [oh, ow], &self.window);
            epilogue_planes(out, plane, o, self.bias.then(|| ins[2].data), if self.residual { None } else { self.act }, ctx.ieee);
            for b in 0..n {
                if let Some(r) = residual(b) {
                    r.add_to(&mut out[b * o * plane..(b + 1) * o * plane], 0, clamp);
                }
            }
            if ctx.fp16 && !self.residual {
                round_f16_slice(out);
            }
            if self.residual {
                after_epilogue(out, self.act, ctx);
            }
            return;
        }
        if self.is_winograd_dims(c, o, oh, ow) {
            for b in 0..n {
                let finish = super::winograd::Finish { bias: self.bias.then(|| ins[2].data), residual: residual(b), clamp, round };
                let xin = &x.data[b * c * h * wd..(b + 1) * c * h * wd];
                let dst = &mut out[b * o * plane..(b + 1) * o * plane];
                let pad = [self.window.pad[0], self.window.pad[1]];
                super::winograd::conv3x3(xin, c, h, wd, w.data, prepared, o, pad, dst, oh, ow, finish, scratch);
            }
        } else if let Some(u) = prepared.filter(|_| self.is_small_winograd_dims(c, o, oh, ow)) {
            for b in 0..n {
                let epi = Epilogue { row_bias: self.bias.then(|| ins[2].data), residual: residual(b), clamp, round, ..Default::default() };
                let xin = &x.data[b * c * h * wd..(b + 1) * c * h * wd];
                let dst = &mut out[b * o * plane..(b + 1) * o * plane];
                super::winograd::small::conv3x3(xin, [c, h, wd], u, o, [self.window.pad[0], self.window.pad[1]], dst, [oh, ow], epi, scratch);
            }
        } else if let Some(wt) = prepared.filter(|_| self.is_transposed_dims(c, o, oh, ow)) {
            // Outputᵀ [plane, o] = unfolded inputᵀ · weightᵀ, then transposed
            // into place: the positions take the GEMM's 12-row side. A
            // residual is added after the transpose, and the clamp with it.
            let (ct, xp) = scratch.split_at_mut(plane * o);
            let wt = Operand::packed_rhs(&PackedData::new(wt), o);
            let (padded, _) = self.unfolding(c, [h, wd], [oh, ow]);
            let epi = Epilogue { col_bias: self.bias.then(|| ins[2].data), clamp: clamp.filter(|_| !self.residual), round, ..Default::default() };
            for b in 0..n {
                let xin = &x.data[b * c * h * wd..(b + 1) * c * h * wd];
                let source;
                let cols = if padded {
                    let geo = Padded::new([h, wd], &self.window);
                    geo.fill(xin, [h, wd], &self.window, xp);
                    source = PaddedIm2col::new(xp, geo, [oh, ow], &self.window, ctx.fp16);
                    Operand::source(&source)
                } else {
                    im2col(xin, [h, wd], [oh, ow], &self.window, &mut xp[..kk * plane]);
                    Operand::Strided(Mat::cols(xp, plane))
                };
                // SAFETY: cols is [kk, plane] (so [plane, kk] as A), wt is [kk, o], ct is [plane, o].
                unsafe { sgemm(plane, o, kk, cols, wt, ct.as_mut_ptr(), o, false, epi, true) };
                let dst = &mut out[b * o * plane..(b + 1) * o * plane];
                // Each thread transposes (and finishes) a block of channels:
                // the block its GEMM stripe computed when the GEMM split by
                // channels, so the values stay in that core's cache.
                let per = if o * plane >= PAR_TRANSPOSE_MIN { crate::parallel::per_thread(o) } else { o };
                let ct = &*ct;
                dst.par_chunks_mut(per * plane).enumerate().for_each(|(i, block)| {
                    let c0 = i * per;
                    for (p, row) in ct.chunks_exact(o).enumerate() {
                        for (ci, &v) in row[c0..c0 + block.len() / plane].iter().enumerate() {
                            block[ci * plane + p] = v;
                        }
                    }
                    if let Some(r) = residual(b) {
                        r.add_to(block, c0 * plane, clamp);
                    }
                });
            }
        } else {
            let parallel = og * plane * kk >= 1 << 17;
            let group_len = crate::sgemm::packed_len(og, kk);
            let packed = prepared.map(PackedData::new);
            for b in 0..n {
                for gi in 0..g {
                    let xin = &x.data[(b * c + gi * cg) * h * wd..(b * c + (gi + 1) * cg) * h * wd];
                    // The unfolded input: the input itself for a 1x1 conv,
                    // else made panel by panel as the GEMM packs it, or
                    // written out whole (for the fallback GEMM, or where
                    // that is less to write than a padded copy).
                    let source;
                    let cols = if self.is_pointwise() {
                        Operand::Strided(Mat::rows(xin, plane))
                    } else if self.unfolding(cg, [h, wd], [oh, ow]).0 {
                        let geo = Padded::new([h, wd], &self.window);
                        geo.fill(xin, [h, wd], &self.window, scratch);
                        source = PaddedIm2col::new(scratch, geo, [oh, ow], &self.window, ctx.fp16);
                        Operand::source(&source)
                    } else {
                        let s = &mut scratch[..kk * plane];
                        im2col(xin, [h, wd], [oh, ow], &self.window, s);
                        Operand::Strided(Mat::rows(s, plane))
                    };
                    let wg = match &packed {
                        Some(p) => Operand::packed_lhs(p, og).nth(gi, group_len),
                        None => Operand::Strided(Mat::rows(&w.data[gi * og * kk..], kk)),
                    };
                    let residual = residual(b).map(|r| Residual { data: &r.data[gi * og * plane..], ..r });
                    let epi = Epilogue { row_bias: self.bias.then(|| &ins[2].data[gi * og..]), residual, clamp, round, ..Default::default() };
                    let dst = &mut out[(b * o + gi * og) * plane..(b * o + (gi + 1) * og) * plane];
                    // SAFETY: wg is [og, kk], cols is [kk, plane], dst is [og, plane], all row-major.
                    unsafe { sgemm(og, plane, kk, wg, cols, dst.as_mut_ptr(), plane, false, epi, parallel) };
                }
            }
        }
        after_epilogue(out, self.act, ctx);
    }

    fn rounds_output(&self) -> bool {
        true
    }

    fn cost(&self, ins: &[&Fact], out: &Fact) -> Cost {
        let k = ins[1].shape[1] * ins[1].shape[2] * ins[1].shape[3];
        Cost { flops: 2.0 * out.numel() as f64 * k as f64 }
    }

    /// Constant weights are transformed once, at compile time: the
    /// Winograd transform for 3x3 convs, the GEMM's packed layout (per
    /// group) for the rest.
    fn prepare(&self, ins: &[&Fact], consts: &[Option<&[f32]>], out: &Fact) -> Option<Vec<f32>> {
        let w = consts.get(1).copied().flatten()?;
        let (c, o) = (ins[0].shape[1], out.shape[1]);
        if self.is_winograd(c, out) {
            return Some(super::winograd::transform_weights(w, o, c));
        }
        if self.is_depthwise(c, o) || !crate::sgemm::packs_constants() {
            return None;
        }
        let kk = w.len() / o;
        if self.is_small_winograd(c, out) {
            return Some(super::winograd::small::transform_weights(w, o, c));
        }
        if self.is_transposed(c, out) {
            // One GEMM per image: its positions are the rows each call reuses the weight for.
            let positions = out.shape[2] * out.shape[3];
            return Some(crate::sgemm::pack_rhs(Mat::cols(w, kk), kk, o, positions));
        }
        let og = o / self.groups;
        Some(crate::sgemm::pack_lhs_each(w, self.groups, og, w.len() / o))
    }
}

impl Conv {
    fn is_3x3_s1(&self) -> bool {
        self.window.kernel == [3, 3] && self.window.stride == [1, 1] && self.window.dilation == [1, 1]
    }
    fn is_winograd(&self, c: usize, out: &Fact) -> bool {
        self.is_winograd_dims(c, out.shape[1], out.shape[2], out.shape[3])
    }
    fn is_winograd_dims(&self, c: usize, o: usize, oh: usize, ow: usize) -> bool {
        self.groups == 1 && self.is_3x3_s1() && super::winograd::applies(c, o, oh, ow)
    }
    /// Whether a constant weight takes Winograd F(2x2, 3x3) (see `winograd::small`).
    fn is_small_winograd(&self, c: usize, out: &Fact) -> bool {
        self.is_small_winograd_dims(c, out.shape[1], out.shape[2], out.shape[3])
    }
    fn is_small_winograd_dims(&self, c: usize, o: usize, oh: usize, ow: usize) -> bool {
        self.groups == 1 && self.is_3x3_s1() && super::winograd::small::applies(c, o, oh, ow)
    }
    /// Whether the GEMM runs transposed (see `sgemm::prefers_transposed`):
    /// small output planes, such as ResNet's 7x7 ones. Needs the
    /// AVX-512 GEMM (the unfolded input as a left operand) and, at run
    /// time, a constant weight (packed as the right operand).
    fn is_transposed(&self, c: usize, out: &Fact) -> bool {
        self.is_transposed_dims(c, out.shape[1], out.shape[2], out.shape[3])
    }
    fn is_transposed_dims(&self, c: usize, o: usize, oh: usize, ow: usize) -> bool {
        crate::sgemm::packs_constants()
            && self.groups == 1
            && !self.is_winograd_dims(c, o, oh, ow)
            && !self.is_small_winograd_dims(c, o, oh, ow)
            && !self.is_depthwise(c, o)
            && crate::sgemm::prefers_transposed(o, oh * ow)
    }
    /// How the GEMM gets the unfolded input of `cg` channels, and the
    /// scratch floats that takes: panel by panel from a padded copy (see
    /// `PaddedIm2col`, AVX-512 only) when the copy is the smaller, so that
    /// each value copied is read several times; else written out whole. A
    /// strided 1x1 conv reads a quarter of its input, which written out is
    /// a quarter of the copy's size: copying all of it made ResNet-18's
    /// downsampling 1x1 convs 16-21% slower.
    fn unfolding(&self, cg: usize, hw: [usize; 2], [oh, ow]: [usize; 2]) -> (bool, usize) {
        let whole = cg * self.window.kernel[0] * self.window.kernel[1] * oh * ow;
        let padded = Padded::new(hw, &self.window).len(cg);
        if crate::sgemm::packs_constants() && padded < whole {
            (true, padded)
        } else {
            (false, whole)
        }
    }
    fn is_pointwise(&self) -> bool {
        self.window.kernel == [1, 1] && self.window.stride == [1, 1] && self.window.pad == [0; 4]
    }
    fn is_depthwise(&self, c: usize, o: usize) -> bool {
        self.groups > 1 && self.groups == c && o == c
    }
}

/// Output values from which the transposed path's transpose is split
/// across threads.
const PAR_TRANSPOSE_MIN: usize = 1 << 14;

/// One filter per channel: a direct loop beats im2col + a 1-row GEMM.
fn depthwise(x: View, w: &[f32], out: &mut [f32], [oh, ow]: [usize; 2], win: &Window) {
    let [c, h, wd] = [x.shape[1], x.shape[2], x.shape[3]];
    let [kh, kw] = win.kernel;
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(i, dst)| {
        let ch = i % c;
        let src = &x.data[i * h * wd..(i + 1) * h * wd];
        let k = &w[ch * kh * kw..(ch + 1) * kh * kw];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = 0.0f32;
                for ki in 0..kh {
                    let iy = (oy * win.stride[0] + ki * win.dilation[0]) as isize - win.pad[0] as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kj in 0..kw {
                        let ix = (ox * win.stride[1] + kj * win.dilation[1]) as isize - win.pad[1] as isize;
                        if ix >= 0 && ix < wd as isize {
                            acc += src[iy as usize * wd + ix as usize] * k[ki * kw + kj];
                        }
                    }
                }
                dst[oy * ow + ox] = acc;
            }
        }
    });
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvTranspose {
    pub window: Window,
    pub output_pad: [usize; 2],
    pub groups: usize,
    pub bias: bool,
}

impl ConvTranspose {
    fn out_hw(&self, h: usize, w: usize) -> Result<[usize; 2]> {
        let mut o = [0; 2];
        for (ax, &n) in [h, w].iter().enumerate() {
            let full = (n - 1) * self.window.stride[ax] + self.window.eff(ax) + self.output_pad[ax];
            let crop = self.window.pad[ax] + self.window.pad[ax + 2];
            if full <= crop {
                return Err(Error::shape("conv_transpose", format!("padding {:?} removes the whole output ({full} before cropping)", self.window.pad)));
            }
            if self.output_pad[ax] >= self.window.stride[ax].max(self.window.dilation[ax]) {
                return Err(Error::value("conv_transpose", format!("output_pad {:?} must be smaller than the stride or dilation", self.output_pad)));
            }
            o[ax] = full - crop;
        }
        Ok(o)
    }
}

impl OpDef for ConvTranspose {
    fn name(&self) -> String {
        "conv_transpose".into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        let (x, w) = conv_operands("conv_transpose", &self.window, inputs, self.bias as usize, "[C, O/groups, kh, kw]")?;
        let g = self.groups;
        if g == 0 || x.shape[1] != w.shape[0] || x.shape[1] % g != 0 {
            return Err(Error::shape(
                "conv_transpose",
                format!("x {} has {} channels; weight {} must have that many on axis 0, divisible by groups={g}", fmt_shape(&x.shape), x.shape[1], fmt_shape(&w.shape)),
            ));
        }
        let o = w.shape[1] * g;
        check_conv_weight_and_bias("conv_transpose", &self.window, w, self.bias.then(|| inputs[2]), o)?;
        let [oh, ow] = self.out_hw(x.shape[2], x.shape[3])?;
        Ok(Fact::new(vec![x.shape[0], o, oh, ow], x.dtype))
    }
    fn scratch_len(&self, ins: &[&Fact], _: &Fact) -> usize {
        let (x, w) = (ins[0], ins[1]);
        w.shape[1] * w.shape[2] * w.shape[3] * x.shape[2] * x.shape[3]
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], scratch: &mut [f32], ctx: &EvalCtx) {
        let (x, w) = (ins[0], ins[1]);
        let [n, c, h, wd] = [x.shape[0], x.shape[1], x.shape[2], x.shape[3]];
        let [_, o, oh, ow] = [out_shape[0], out_shape[1], out_shape[2], out_shape[3]];
        let g = self.groups;
        let (cg, og) = (c / g, o / g);
        let [kh, kw] = self.window.kernel;
        let rows = og * kh * kw;
        let hw = h * wd;
        out.fill(0.0);
        for b in 0..n {
            for gi in 0..g {
                let xin = &x.data[(b * c + gi * cg) * hw..(b * c + (gi + 1) * cg) * hw];
                let wg = &w.data[gi * cg * rows..(gi + 1) * cg * rows];
                let cols = &mut scratch[..rows * hw];
                // cols[rows, hw] = wg^T [rows, cg] x xin [cg, hw]
                // SAFETY: wg is [cg, rows] (read transposed), xin [cg, hw], cols [rows, hw].
                unsafe {
                    let (a, b) = (Operand::Strided(Mat::cols(wg, rows)), Operand::Strided(Mat::rows(xin, hw)));
                    sgemm(rows, hw, cg, a, b, cols.as_mut_ptr(), hw, false, Epilogue::default(), true);
                }
                let dst = &mut out[(b * o + gi * og) * oh * ow..(b * o + (gi + 1) * og) * oh * ow];
                let win = self.window;
                let cols = &*cols;
                dst.par_chunks_mut(oh * ow).enumerate().for_each(|(oc, plane)| {
                    for ki in 0..kh {
                        for kj in 0..kw {
                            let src = &cols[((oc * kh + ki) * kw + kj) * hw..][..hw];
                            for iy in 0..h {
                                let y = (iy * win.stride[0] + ki * win.dilation[0]) as isize - win.pad[0] as isize;
                                if y < 0 || y >= oh as isize {
                                    continue;
                                }
                                for ix in 0..wd {
                                    let xx = (ix * win.stride[1] + kj * win.dilation[1]) as isize - win.pad[1] as isize;
                                    if xx >= 0 && xx < ow as isize {
                                        plane[y as usize * ow + xx as usize] += src[iy * wd + ix];
                                    }
                                }
                            }
                        }
                    }
                });
            }
        }
        if self.bias {
            epilogue_planes(out, oh * ow, o, Some(ins[2].data), None, ctx.ieee);
        }
    }
    fn cost(&self, ins: &[&Fact], _: &Fact) -> Cost {
        let (x, w) = (ins[0], ins[1]);
        Cost { flops: 2.0 * x.numel() as f64 * (w.shape[1] * w.shape[2] * w.shape[3]) as f64 }
    }
}

/// The weight gradient of a [`Conv`]: inputs (x [N, C, H, W], dy [N, O, oh,
/// ow]) → dW [O, C/groups, kh, kw] = Σ_n dy_n · im2col(x_n)ᵀ per group. One
/// op (im2col + GEMM, like the forward) for every stride, dilation, padding
/// and grouping; the "conv with swapped roles" trick needs a different
/// rewrite for each of those and breaks on groups. Also serves as the
/// weight gradient of [`ConvTranspose`] with x and dy swapped.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvWeightGrad {
    pub window: Window,
    pub groups: usize,
}

impl OpDef for ConvWeightGrad {
    fn name(&self) -> String {
        "conv_weight_grad".into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        let op = "conv_weight_grad";
        super::expect_inputs(op, inputs, 2)?;
        self.window.validate(op)?;
        let (x, dy) = (inputs[0], inputs[1]);
        if x.rank() != 4 || dy.rank() != 4 || x.shape[0] != dy.shape[0] {
            return Err(Error::shape(op, format!("expects x [N, C, H, W] and dy [N, O, oh, ow], got {} and {}", fmt_shape(&x.shape), fmt_shape(&dy.shape))));
        }
        let g = self.groups;
        let (c, o) = (x.shape[1], dy.shape[1]);
        if g == 0 || c % g != 0 || o % g != 0 {
            return Err(Error::shape(op, format!("groups={g} must divide {c} and {o}")));
        }
        let [oh, ow] = self.window.out_size(op, x.shape[2], x.shape[3])?;
        if [oh, ow] != [dy.shape[2], dy.shape[3]] {
            return Err(Error::shape(op, format!("dy {} does not match the conv output {oh}x{ow} of x {}", fmt_shape(&dy.shape), fmt_shape(&x.shape))));
        }
        Ok(Fact::new(vec![o, c / g, self.window.kernel[0], self.window.kernel[1]], dy.dtype))
    }
    /// Per thread (at most one per sample): a private dW and the unfolded
    /// columns of one sample.
    fn scratch_len(&self, ins: &[&Fact], out: &Fact) -> usize {
        let (n, plane) = (ins[1].shape[0], ins[1].shape[2] * ins[1].shape[3]);
        let (o, kk) = (out.shape[0], out.numel() / out.shape[0]);
        n.min(rayon::current_num_threads().max(1)) * (o * kk + kk * plane)
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], scratch: &mut [f32], _: &EvalCtx) {
        let (x, dy) = (ins[0], ins[1]);
        let [n, c, h, wd] = [x.shape[0], x.shape[1], x.shape[2], x.shape[3]];
        let [o, oh, ow] = [dy.shape[1], dy.shape[2], dy.shape[3]];
        let g = self.groups;
        let (cg, og) = (c / g, o / g);
        let kk = cg * self.window.kernel[0] * self.window.kernel[1];
        let plane = oh * ow;
        let win = self.window;
        // Samples are independent: each thread unfolds its share of the
        // batch and accumulates a private dW with single-threaded GEMMs
        // (per-sample GEMMs are too small to split), then the partial sums
        // are added. The batch is the parallel axis of a weight gradient.
        // The thread count was fixed when the scratch was sized; a pool
        // that has grown since gets no more chunks than the scratch holds.
        let each = o * kk + kk * plane;
        let chunks = n.min(rayon::current_num_threads()).min(scratch.len() / each).max(1);
        let per = n.div_ceil(chunks);
        let partial = &mut scratch[..chunks * each];
        partial
            .par_chunks_mut(each)
            .enumerate()
            .for_each(|(t, buf)| {
                let (acc, cols) = buf.split_at_mut(o * kk);
                acc.fill(0.0);
                for b in t * per..((t + 1) * per).min(n) {
                    for gi in 0..g {
                        let xin = &x.data[(b * c + gi * cg) * h * wd..(b * c + (gi + 1) * cg) * h * wd];
                        im2col_serial(xin, [h, wd], [oh, ow], &win, cols);
                        let gy = &dy.data[(b * o + gi * og) * plane..(b * o + (gi + 1) * og) * plane];
                        let dst = &mut acc[gi * og * kk..(gi + 1) * og * kk];
                        // SAFETY: gy is [og, plane], cols is [kk, plane] (read as
                        // its transpose [plane, kk]), dst is [og, kk]; row-major, in bounds.
                        unsafe {
                            let (a, b) = (Operand::Strided(Mat::rows(gy, plane)), Operand::Strided(Mat::cols(cols, plane)));
                            sgemm(og, kk, plane, a, b, dst.as_mut_ptr(), kk, true, Epilogue::default(), false);
                        }
                    }
                }
            });
        out.fill(0.0);
        for p in partial.chunks(each) {
            for (d, &v) in out.iter_mut().zip(&p[..o * kk]) {
                *d += v;
            }
        }
    }
    fn cost(&self, ins: &[&Fact], out: &Fact) -> Cost {
        let dy = ins[1];
        Cost { flops: 2.0 * out.numel() as f64 * (dy.shape[0] * dy.shape[2] * dy.shape[3]) as f64 }
    }
}

// ---- MIL lowering (driver and conventions: backend/mil) ----

use crate::backend::mil::{i64s, LowerMil, MilCtx, Val};
use aneforge_mil::Argument;

impl Window {
    /// MIL's spatial padding order: [top, bottom, left, right].
    pub(crate) fn mil_pad(&self) -> Vec<i64> {
        let p = self.pad;
        vec![p[0] as i64, p[2] as i64, p[1] as i64, p[3] as i64]
    }
}

/// A weight-like operand: the constant (placed in a blob when large) or
/// the runtime value.
fn operand(cx: &mut MilCtx, v: &Val, base: &str, d: aneforge_mil::DType) -> Result<Argument> {
    match v.konst {
        Some(c) => cx.tensor(base, d, &v.fact.shape, c),
        None => Ok(Argument::name(&v.name)),
    }
}

impl LowerMil for Conv {
    /// `conv` with explicit ("custom") padding; a constant bias is fused
    /// into the conv, a runtime one is an `add` over [1, O, 1, 1]; a fused
    /// residual is an `add`, and the activation epilogue follows as its
    /// own op.
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let d = ins[0].mil_dtype();
        let r = cx.result();
        let w = operand(cx, &ins[1], "weight", d)?;
        let mut args = vec![
            ("dilations", cx.ints("dilations", &i64s(&self.window.dilation))?),
            ("groups", cx.int("groups", self.groups as i64)?),
            ("pad", cx.ints("pad", &self.window.mil_pad())?),
            ("pad_type", cx.string("pad_type", "custom")?),
            ("strides", cx.ints("strides", &i64s(&self.window.stride))?),
            ("weight", w),
            ("x", Argument::name(&ins[0].name)),
        ];
        let runtime_bias = self.bias && ins[2].konst.is_none();
        if self.bias && !runtime_bias {
            args.push(("bias", operand(cx, &ins[2], "bias", d)?));
        }
        let last = !runtime_bias && !self.residual && self.act.is_none();
        let name = if last { r.clone() } else { cx.fresh("conv") };
        let mut y = cx.op("conv", args, &name, d, &out.shape);
        if runtime_bias {
            let o = out.shape[1];
            let shape = cx.ints("shape", &[1, o as i64, 1, 1])?;
            let b = cx.tmp("reshape", vec![("shape", shape), ("x", Argument::name(&ins[2].name))], d, &[1, o, 1, 1]);
            let name = if !self.residual && self.act.is_none() { r.clone() } else { cx.fresh("add") };
            y = cx.op("add", vec![("x", Argument::name(&y)), ("y", Argument::name(b))], &name, d, &out.shape);
        }
        if self.residual {
            let res = &ins[2 + self.bias as usize].name;
            let name = if self.act.is_none() { r.clone() } else { cx.fresh("add") };
            y = cx.op("add", vec![("x", Argument::name(&y)), ("y", Argument::name(res))], &name, d, &out.shape);
        }
        match self.act {
            Some(act) => act.lower_to(cx, &y, d, &out.shape, &r),
            None => Ok(y),
        }
    }
}

impl LowerMil for ConvTranspose {
    /// `conv_transpose` with explicit padding and the output shape stated,
    /// which fixes the ambiguity `output_pad` resolves in the graph.
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let d = ins[0].mil_dtype();
        let r = cx.result();
        let w = operand(cx, &ins[1], "weight", d)?;
        let mut args = vec![
            ("dilations", cx.ints("dilations", &i64s(&self.window.dilation))?),
            ("groups", cx.int("groups", self.groups as i64)?),
            ("output_shape", cx.ints("output_shape", &i64s(&out.shape))?),
            ("pad", cx.ints("pad", &self.window.mil_pad())?),
            ("pad_type", cx.string("pad_type", "custom")?),
            ("strides", cx.ints("strides", &i64s(&self.window.stride))?),
            ("weight", w),
            ("x", Argument::name(&ins[0].name)),
        ];
        let runtime_bias = self.bias && ins[2].konst.is_none();
        if self.bias && !runtime_bias {
            args.push(("bias", operand(cx, &ins[2], "bias", d)?));
        }
        if !runtime_bias {
            return Ok(cx.op("conv_transpose", args, &r, d, &out.shape));
        }
        let y = cx.tmp("conv_transpose", args, d, &out.shape);
        let o = out.shape[1];
        let shape = cx.ints("shape", &[1, o as i64, 1, 1])?;
        let b = cx.tmp("reshape", vec![("shape", shape), ("x", Argument::name(&ins[2].name))], d, &[1, o, 1, 1]);
        Ok(cx.op("add", vec![("x", Argument::name(y)), ("y", Argument::name(b))], &r, d, &out.shape))
    }
}
