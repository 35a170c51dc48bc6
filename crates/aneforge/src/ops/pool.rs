//! Pooling and resizing over the two trailing (spatial) axes of NCHW.

use super::conv::Window;
use super::{expect_float, Cost, EvalCtx, OpDef, View};
use crate::error::{Error, Result};
use crate::fact::{fmt_shape, Fact};
use crate::parallel::SendPtr;
use rayon::prelude::*;
use std::ops::Range;

/// Elements of work per parallel task in the pooling kernels.
const PLANES_WORK: usize = 1 << 14;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg { count_include_pad: bool },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pool {
    pub kind: PoolKind,
    pub window: Window,
    pub ceil_mode: bool,
}

impl Window {
    /// The pooling window of output position `o` along `axis` (0 rows, 1
    /// columns) over an input of length `len`: its extent in padded
    /// coordinates (start, end), the end clipped to the trailing padding,
    /// and the part inside the input, [a, b).
    fn span(&self, axis: usize, o: usize, len: usize) -> (isize, isize, usize, usize) {
        let start = (o * self.stride[axis]) as isize - self.pad[axis] as isize;
        let end = (start + self.kernel[axis] as isize).min((len + self.pad[axis + 2]) as isize);
        (start, end, start.max(0) as usize, (end.max(0) as usize).min(len))
    }
}

impl Pool {
    /// Output rows `rows` of one plane (`src`, [h, w]) into `dst`, which
    /// holds just those rows of `ow` values.
    fn plane(&self, src: &[f32], [h, w]: [usize; 2], dst: &mut [f32], ow: usize, rows: Range<usize>, ieee: bool) {
        let win = self.window;
        if self.kind == PoolKind::Max && !ieee && ow > 0 && win.pad[1] + w <= MAX_ROW && (ow - 1) * win.stride[1] + win.kernel[1] <= MAX_ROW {
            return max_plane(src, [h, w], dst, ow, rows, &win);
        }
        for (oy, drow) in rows.zip(dst.chunks_mut(ow)) {
            let (y0, y1, ya, yb) = win.span(0, oy, h);
            for (ox, d) in drow.iter_mut().enumerate() {
                let (x0, x1, xa, xb) = win.span(1, ox, w);
                *d = match self.kind {
                    PoolKind::Max => {
                        let mut m = f32::NEG_INFINITY;
                        for yy in ya..yb {
                            for &v in &src[yy * w + xa..yy * w + xb] {
                                if v > m || (ieee && v.is_nan()) {
                                    m = v;
                                }
                            }
                        }
                        m
                    }
                    PoolKind::Avg { count_include_pad } => {
                        let mut s = 0.0f32;
                        for yy in ya..yb {
                            s += src[yy * w + xa..yy * w + xb].iter().sum::<f32>();
                        }
                        let n = if count_include_pad {
                            ((y1 - y0) * (x1 - x0)) as f32
                        } else {
                            ((yb - ya) * (xb - xa)) as f32
                        };
                        s / n
                    }
                };
            }
        }
    }

    fn out_hw(&self, h: usize, w: usize) -> Result<[usize; 2]> {
        let op = self.op_name();
        let win = &self.window;
        let mut o = [0; 2];
        for (ax, &n) in [h, w].iter().enumerate() {
            let (k, s, p0, p1) = (win.kernel[ax], win.stride[ax], win.pad[ax], win.pad[ax + 2]);
            if p0 * 2 > k || p1 * 2 > k {
                return Err(Error::value(
                    op,
                    format!(
                        "padding {:?} must be at most half the kernel {:?}",
                        win.pad, win.kernel
                    ),
                ));
            }
            let padded = n + p0 + p1;
            if padded < k {
                return Err(Error::shape(
                    op,
                    format!(
                        "kernel {:?} is larger than the padded input {}x{}",
                        win.kernel, h, w
                    ),
                ));
            }
            let mut out = if self.ceil_mode {
                (padded - k).div_ceil(s) + 1
            } else {
                (padded - k) / s + 1
            };
            // A window may not start in the right/bottom padding (PyTorch's rule).
            if self.ceil_mode && (out - 1) * s >= n + p0 {
                out -= 1;
            }
            o[ax] = out;
        }
        Ok(o)
    }
    fn op_name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "max_pool",
            PoolKind::Avg { .. } => "avg_pool",
        }
    }
}

impl OpDef for Pool {
    fn name(&self) -> String {
        self.op_name().into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        let op = self.op_name();
        super::expect_inputs(op, inputs, 1)?;
        let x = inputs[0];
        expect_float(op, x, "x")?;
        if x.rank() != 4 {
            return Err(Error::shape(
                op,
                format!("expects x [N, C, H, W], got {}", fmt_shape(&x.shape)),
            ));
        }
        if self.window.kernel.contains(&0) || self.window.stride.contains(&0) {
            return Err(Error::value(
                op,
                format!(
                    "kernel {:?} and stride {:?} must be >= 1",
                    self.window.kernel, self.window.stride
                ),
            ));
        }
        let [oh, ow] = self.out_hw(x.shape[2], x.shape[3])?;
        Ok(Fact::new(vec![x.shape[0], x.shape[1], oh, ow], x.dtype))
    }
    fn eval(
        &self,
        ins: &[View],
        out: &mut [f32],
        out_shape: &[usize],
        _: &mut [f32],
        ctx: &EvalCtx,
    ) {
        let x = ins[0];
        let [h, w] = [x.shape[2], x.shape[3]];
        let [oh, ow] = [out_shape[2], out_shape[3]];
        let one = |p: usize, rows: Range<usize>, dst: &mut [f32]| self.plane(&x.data[p * h * w..(p + 1) * h * w], [h, w], dst, ow, rows, ctx.ieee);
        let planes = out.len() / (oh * ow).max(1);
        let bands = row_bands(planes, [h, w], oh);
        if bands > 1 {
            let out = SendPtr(out.as_mut_ptr());
            (0..bands).into_par_iter().for_each(|b| {
                let rows = oh * b / bands..oh * (b + 1) / bands;
                for p in 0..planes {
                    // SAFETY: band b alone writes rows `rows` of each plane, all inside `out`.
                    let dst = unsafe { std::slice::from_raw_parts_mut(out.at(p * oh * ow + rows.start * ow), rows.len() * ow) };
                    one(p, rows.clone(), dst);
                }
            });
            return;
        }
        let per = (PLANES_WORK / (h * w).max(1)).max(1);
        out.par_chunks_mut(per * oh * ow).enumerate().for_each(|(c, block)| {
            for (q, dst) in block.chunks_mut(oh * ow).enumerate() {
                one(c * per + q, 0..oh, dst);
            }
        });
    }
    fn cost(&self, _: &[&Fact], out: &Fact) -> Cost {
        Cost {
            flops: (out.numel() * self.window.kernel[0] * self.window.kernel[1]) as f64,
        }
    }
}

/// Bands of output rows a pool over `planes` [h, w] planes splits into:
/// one per thread when the planes are large, else 1 (split by planes).
/// Large planes came from a convolution whose GEMM split its columns,
/// which are space, across the threads (a wide, short product does: see
/// `sgemm`), and the Winograd convolution after a pool takes bands of
/// tiles; split by planes instead, each thread reads half its input from
/// the other core's cache. ResNet-18's max pool over [64, 112, 112] (in
/// the model, vCPUs close): 150 us by planes, 119 in bands. With the
/// vCPUs apart no gain showed (0.24 and 0.26 ms, in separate runs).
fn row_bands(planes: usize, [h, w]: [usize; 2], oh: usize) -> usize {
    let threads = rayon::current_num_threads();
    if h * w >= PLANES_WORK / 2 && planes * h * w >= 2 * PLANES_WORK && oh >= 2 * threads {
        threads
    } else {
        1
    }
}

/// Widest (padded) input row the separable max pool stages on the stack;
/// its two row buffers are cleared for every plane, so not much wider.
const MAX_ROW: usize = 1024;

/// The max across each window of a row of column maxima `buf` (padding
/// already -inf in it): output `ox` is the max of `buf[ox·sx..ox·sx + kw]`,
/// for strides 1 and 2. Sixteen outputs at a time, one vector per window
/// column (at stride 2, the even lanes of two loads), so nothing is read
/// at the stride one value at a time: that scalar read was half of
/// ResNet-18's max pool. NaN never wins, as in [`max_plane`].
///
/// # Safety
/// AVX-512F is available; `buf` holds `(dst.len() - 1)·sx + kw + 32` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn window_max_avx512(buf: &[f32], kw: usize, sx: usize, dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let b = buf.as_ptr();
    for ox in (0..dst.len()).step_by(16) {
        let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
        for t in 0..kw {
            let at = b.add(ox * sx + t);
            let v = if sx == 2 { _mm512_permutex2var_ps(_mm512_loadu_ps(at), evens, _mm512_loadu_ps(at.add(16))) } else { _mm512_loadu_ps(at) };
            // max(v, m) is m when v is NaN.
            m = _mm512_max_ps(v, m);
        }
        _mm512_mask_storeu_ps(dst.as_mut_ptr().add(ox), crate::sgemm::lane_mask(dst.len() - ox), m);
    }
}

/// Max pool of one plane, separably: the max down each window's rows is a
/// contiguous, vectorised pass into a row buffer (with the padding as -inf
/// on both sides), then a running max across `kw` neighbours, also
/// vectorised, leaves each window's max at its start, read at the stride.
/// NaN is skipped (f32::max), as the unvectorised path does outside IEEE
/// mode.
fn max_plane(src: &[f32], [h, w]: [usize; 2], dst: &mut [f32], ow: usize, rows: Range<usize>, win: &Window) {
    let (kw, sx, left) = (win.kernel[1], win.stride[1], win.pad[1]);
    // Padded row: the last window ends at (ow - 1)·sx + kw.
    let len = ((ow - 1) * sx + kw).max(left + w);
    let mut buf = [f32::NEG_INFINITY; MAX_ROW];
    let mut run = [f32::NEG_INFINITY; MAX_ROW];
    let starts = (ow - 1) * sx + 1;
    for (oy, drow) in rows.zip(dst.chunks_mut(ow)) {
        let (_, _, ya, yb) = win.span(0, oy, h);
        let rowmax = &mut buf[left..left + w];
        if ya >= yb {
            rowmax.fill(f32::NEG_INFINITY);
        } else {
            rowmax.copy_from_slice(&src[ya * w..(ya + 1) * w]);
            for yy in ya + 1..yb {
                for (a, &b) in rowmax.iter_mut().zip(&src[yy * w..(yy + 1) * w]) {
                    *a = a.max(b);
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if sx <= 2 && (ow - 1) * sx + kw + 32 <= MAX_ROW && crate::sgemm::has_avx512() {
            // SAFETY: AVX-512F was detected; `buf` covers every read (checked above).
            unsafe { window_max_avx512(&buf, kw, sx, drow) };
            continue;
        }
        // From -inf, so an all-NaN window gives -inf as the engine's max
        // does (NaN never wins), not the NaN a copy of its first value would.
        let run = &mut run[..starts];
        run.fill(f32::NEG_INFINITY);
        for t in 0..kw {
            for (a, &b) in run.iter_mut().zip(&buf[t..len]) {
                *a = a.max(b);
            }
        }
        for (d, &m) in drow.iter_mut().zip(run.iter().step_by(sx)) {
            *d = m;
        }
    }
}

impl Pool {
    pub fn is_exact(&self) -> bool {
        self.kind == PoolKind::Max
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeMode {
    /// `src = floor(dst * in / out)` (PyTorch's `nearest`, ONNX asymmetric+floor).
    Nearest,
    /// Bilinear; `align_corners` maps corner pixel centres onto each other,
    /// otherwise half-pixel centres (PyTorch's default).
    Bilinear { align_corners: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resize {
    pub mode: ResizeMode,
    pub size: [usize; 2],
}

impl OpDef for Resize {
    fn name(&self) -> String {
        match self.mode {
            ResizeMode::Nearest => "upsample_nearest".into(),
            ResizeMode::Bilinear { .. } => "resize_bilinear".into(),
        }
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        let op = self.name();
        super::expect_inputs(&op, inputs, 1)?;
        let x = inputs[0];
        expect_float(&op, x, "x")?;
        if x.rank() != 4 {
            return Err(Error::shape(
                op,
                format!("expects x [N, C, H, W], got {}", fmt_shape(&x.shape)),
            ));
        }
        if self.size.contains(&0) {
            return Err(Error::value(
                op,
                format!("output size {:?} must be >= 1", self.size),
            ));
        }
        Ok(Fact::new(
            vec![x.shape[0], x.shape[1], self.size[0], self.size[1]],
            x.dtype,
        ))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &mut [f32], _: &EvalCtx) {
        let x = ins[0];
        let [h, w] = [x.shape[2], x.shape[3]];
        let [oh, ow] = self.size;
        let mode = self.mode;
        let coord = |o: usize, n_in: usize, n_out: usize, align: bool| -> f32 {
            if align {
                if n_out == 1 {
                    0.0
                } else {
                    o as f32 * (n_in - 1) as f32 / (n_out - 1) as f32
                }
            } else {
                ((o as f32 + 0.5) * n_in as f32 / n_out as f32 - 0.5).max(0.0)
            }
        };
        out.par_chunks_mut(oh * ow)
            .enumerate()
            .for_each(|(p, dst)| {
                let src = &x.data[p * h * w..(p + 1) * h * w];
                match mode {
                    ResizeMode::Nearest => {
                        for oy in 0..oh {
                            let iy = (oy * h / oh).min(h - 1);
                            for ox in 0..ow {
                                let ix = (ox * w / ow).min(w - 1);
                                dst[oy * ow + ox] = src[iy * w + ix];
                            }
                        }
                    }
                    ResizeMode::Bilinear { align_corners } => {
                        for oy in 0..oh {
                            let fy = coord(oy, h, oh, align_corners);
                            let y0 = (fy as usize).min(h - 1);
                            let y1 = (y0 + 1).min(h - 1);
                            let dy = fy - y0 as f32;
                            for ox in 0..ow {
                                let fx = coord(ox, w, ow, align_corners);
                                let x0 = (fx as usize).min(w - 1);
                                let x1 = (x0 + 1).min(w - 1);
                                let dx = fx - x0 as f32;
                                let top = src[y0 * w + x0] * (1.0 - dx) + src[y0 * w + x1] * dx;
                                let bot = src[y1 * w + x0] * (1.0 - dx) + src[y1 * w + x1] * dx;
                                dst[oy * ow + ox] = top * (1.0 - dy) + bot * dy;
                            }
                        }
                    }
                }
            });
    }
    fn cost(&self, _: &[&Fact], out: &Fact) -> Cost {
        Cost {
            flops: out.numel() as f64 * 4.0,
        }
    }
}

/// The backward of a [`Pool`]: inputs (x, dy) → dx with x's shape. Max
/// pooling routes each window's gradient to the first position holding the
/// window's maximum (PyTorch's rule), accumulating where windows overlap;
/// average pooling spreads it evenly over the window's counted cells. A
/// dedicated op because the mask formulation (`x == upsample(max)`) is wrong
/// for overlapping windows and for ties.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoolGrad {
    pub pool: Pool,
}

impl OpDef for PoolGrad {
    fn name(&self) -> String {
        format!("{}_grad", self.pool.op_name())
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        let op = self.name();
        super::expect_inputs(&op, inputs, 2)?;
        let y = self.pool.infer(&inputs[..1])?;
        if y.shape != inputs[1].shape {
            return Err(Error::shape(
                &op,
                format!(
                    "dy {} must have the pool's output shape {}",
                    fmt_shape(&inputs[1].shape),
                    fmt_shape(&y.shape)
                ),
            ));
        }
        Ok(inputs[0].clone())
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &mut [f32], ctx: &EvalCtx) {
        let (x, dy) = (ins[0], ins[1]);
        let [h, w] = [x.shape[2], x.shape[3]];
        let [oh, ow] = [dy.shape[2], dy.shape[3]];
        let win = self.pool.window;
        let kind = self.pool.kind;
        let ieee = ctx.ieee;
        // Several planes per task: one plane is too little work to be
        // worth a hand-off between threads.
        let per = (PLANES_WORK / (h * w).max(1)).max(1);
        out.par_chunks_mut(per * h * w)
            .enumerate()
            .for_each(|(c, block)| {
                for (q, dst) in block.chunks_mut(h * w).enumerate() {
                    let p = c * per + q;
                    dst.fill(0.0);
                    let src = &x.data[p * h * w..(p + 1) * h * w];
                    let g = &dy.data[p * oh * ow..(p + 1) * oh * ow];
                    for oy in 0..oh {
                        let (y0, y1, ya, yb) = win.span(0, oy, h);
                        for ox in 0..ow {
                            let (x0, x1, xa, xb) = win.span(1, ox, w);
                            let gv = g[oy * ow + ox];
                            match kind {
                                PoolKind::Max => {
                                    let mut m = f32::NEG_INFINITY;
                                    let mut at = None;
                                    for yy in ya..yb {
                                        for xx in xa..xb {
                                            let v = src[yy * w + xx];
                                            if at.is_none()
                                                || v > m
                                                || (ieee && v.is_nan() && !m.is_nan())
                                            {
                                                m = v;
                                                at = Some(yy * w + xx);
                                            }
                                        }
                                    }
                                    if let Some(i) = at {
                                        dst[i] += gv;
                                    }
                                }
                                PoolKind::Avg { count_include_pad } => {
                                    let n = if count_include_pad {
                                        ((y1 - y0) * (x1 - x0)) as f32
                                    } else {
                                        ((yb - ya) * (xb - xa)) as f32
                                    };
                                    let share = gv / n;
                                    for yy in ya..yb {
                                        for d in &mut dst[yy * w + xa..yy * w + xb] {
                                            *d += share;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            });
    }
    fn cost(&self, ins: &[&Fact], _: &Fact) -> Cost {
        Cost {
            flops: (ins[1].numel() * self.pool.window.kernel[0] * self.pool.window.kernel[1])
                as f64,
        }
    }
}

// ---- MIL lowering (driver and conventions: backend/mil) ----

use crate::backend::mil::{i64s, LowerMil, MilCtx, Val};
use aneforge_mil::Argument;

impl LowerMil for Pool {
    /// `max_pool` / `avg_pool` with explicit padding. ceil_mode: MIL's rule
    /// for dropping a last window that starts in the padding differs from
    /// the graph's (PyTorch's) when padding is asymmetric or zero, so when
    /// the two disagree the lowering states the extra bottom/right padding
    /// outright and turns ceil_mode off. That is exact for max pooling and
    /// for averages that exclude padding.
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let d = ins[0].mil_dtype();
        let r = cx.result();
        let x = ins[0].fact;
        let win = &self.window;
        let mut pad = win.mil_pad();
        let mut ceil = self.ceil_mode;
        if ceil {
            let mut agrees = true;
            for ax in 0..2 {
                let (n, k, s) = (x.shape[2 + ax], win.kernel[ax], win.stride[ax]);
                let p = win.pad[ax] + win.pad[ax + 2];
                let mut o = (n + p - k + s - 1) / s + 1;
                if p > 0 && ((o - 1) * s) as f64 >= n as f64 + p as f64 / 2.0 {
                    o -= 1;
                }
                agrees &= o == out.shape[2 + ax];
            }
            if !agrees {
                ceil = false;
                for ax in 0..2 {
                    let (n, k, s) = (x.shape[2 + ax], win.kernel[ax], win.stride[ax]);
                    let need = (out.shape[2 + ax] - 1) * s + k;
                    let have = n + win.pad[ax] + win.pad[ax + 2];
                    pad[ax * 2 + 1] += need.saturating_sub(have) as i64;
                }
            }
        }
        let mut args = vec![
            ("ceil_mode", cx.boolean("ceil_mode", ceil)?),
            ("kernel_sizes", cx.ints("kernel_sizes", &i64s(&win.kernel))?),
            ("pad", cx.ints("pad", &pad)?),
            ("pad_type", cx.string("pad_type", "custom")?),
            ("strides", cx.ints("strides", &i64s(&win.stride))?),
            ("x", Argument::name(&ins[0].name)),
        ];
        let op = match self.kind {
            PoolKind::Max => "max_pool",
            PoolKind::Avg { count_include_pad } => {
                args.push((
                    "exclude_padding_from_average",
                    cx.boolean("exclude_padding_from_average", !count_include_pad)?,
                ));
                "avg_pool"
            }
        };
        if win.dilation != [1, 1] {
            return Err(Error::unsupported(
                op,
                "MIL pooling has no dilation; use a dilation of 1",
            ));
        }
        Ok(cx.op(op, args, &r, d, &out.shape))
    }
}

impl LowerMil for Resize {
    /// Nearest at integer factors: `upsample_nearest_neighbor` (the graph's
    /// floor(dst·in/out) rule is exactly replication then). Other sizes:
    /// `resize_nearest_neighbor`. Bilinear: `resize_bilinear` with
    /// ALIGN_CORNERS or UNALIGN_CORNERS (half-pixel centres, PyTorch's
    /// align_corners=False).
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let d = ins[0].mil_dtype();
        let r = cx.result();
        let x = ins[0].fact;
        let [h, w] = [x.shape[2], x.shape[3]];
        let [oh, ow] = self.size;
        let xa = Argument::name(&ins[0].name);
        match self.mode {
            ResizeMode::Nearest if oh % h == 0 && ow % w == 0 => {
                let sh = cx.int("scale_factor_height", (oh / h) as i64)?;
                let sw = cx.int("scale_factor_width", (ow / w) as i64)?;
                Ok(cx.op(
                    "upsample_nearest_neighbor",
                    vec![
                        ("scale_factor_height", sh),
                        ("scale_factor_width", sw),
                        ("x", xa),
                    ],
                    &r,
                    d,
                    &out.shape,
                ))
            }
            ResizeMode::Nearest => {
                let th = cx.int("target_size_height", oh as i64)?;
                let tw = cx.int("target_size_width", ow as i64)?;
                Ok(cx.op(
                    "resize_nearest_neighbor",
                    vec![
                        ("target_size_height", th),
                        ("target_size_width", tw),
                        ("x", xa),
                    ],
                    &r,
                    d,
                    &out.shape,
                ))
            }
            ResizeMode::Bilinear { align_corners } => {
                let th = cx.int("target_size_height", oh as i64)?;
                let tw = cx.int("target_size_width", ow as i64)?;
                let mode = cx.string(
                    "sampling_mode",
                    if align_corners {
                        "ALIGN_CORNERS"
                    } else {
                        "UNALIGN_CORNERS"
                    },
                )?;
                Ok(cx.op(
                    "resize_bilinear",
                    vec![
                        ("sampling_mode", mode),
                        ("target_size_height", th),
                        ("target_size_width", tw),
                        ("x", xa),
                    ],
                    &r,
                    d,
                    &out.shape,
                ))
            }
        }
    }
}
