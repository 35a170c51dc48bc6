//! im2col: a convolution's input unfolded into a matrix whose rows are
//! (channel, kernel y, kernel x) and whose columns are output positions, so
//! the convolution is one GEMM with the [O, C·kh·kw] weight. Written out
//! whole ([`im2col`]) for the weight gradient and machines without the
//! AVX-512 GEMM; otherwise made a micro-panel at a time by [`Im2col`] as
//! the GEMM packs its right operand, and never stored.

use super::conv::Window;
use crate::sgemm::{PanelSource, NR};
use rayon::prelude::*;

/// Unfolds [C, H, W] into columns [C*kh*kw, oh*ow] (zeros where padded).
pub(super) fn im2col(x: &[f32], hw: [usize; 2], ohw: [usize; 2], win: &Window, cols: &mut [f32]) {
    cols.par_chunks_mut(ohw[0] * ohw[1]).enumerate().for_each(|(row, dst)| im2col_row(x, hw, ohw, win, row, dst));
}

/// [`im2col`] on the calling thread (for callers that parallelise outside).
pub(super) fn im2col_serial(x: &[f32], hw: [usize; 2], ohw: [usize; 2], win: &Window, cols: &mut [f32]) {
    for (row, dst) in cols.chunks_mut(ohw[0] * ohw[1]).enumerate() {
        im2col_row(x, hw, ohw, win, row, dst);
    }
}

/// Row `row` (channel, kernel y, kernel x) of the unfolded columns. Each
/// output row splits into a zero margin, an in-bounds run read at the
/// stride with no per-element bounds test, and a zero margin.
fn im2col_row(x: &[f32], [h, w]: [usize; 2], [oh, ow]: [usize; 2], win: &Window, row: usize, dst: &mut [f32]) {
    let [kh, kw] = win.kernel;
    let (ci, ki, kj) = (row / (kh * kw), (row / kw) % kh, row % kw);
    let src = &x[ci * h * w..(ci + 1) * h * w];
    let sx = win.stride[1];
    let off = (kj * win.dilation[1]) as isize - win.pad[1] as isize;
    let (lo, hi) = in_bounds(w, ow, win, kj);
    for oy in 0..oh {
        let iy = (oy * win.stride[0] + ki * win.dilation[0]) as isize - win.pad[0] as isize;
        let drow = &mut dst[oy * ow..(oy + 1) * ow];
        if iy < 0 || iy >= h as isize {
            drow.fill(0.0);
            continue;
        }
        let srow = &src[iy as usize * w..(iy as usize + 1) * w];
        drow[..lo].fill(0.0);
        drow[hi..].fill(0.0);
        if lo == hi {
            continue;
        }
        let first = (lo * sx) as isize + off;
        let run = &srow[first as usize..first as usize + (hi - lo - 1) * sx + 1];
        if sx == 1 {
            drow[lo..hi].copy_from_slice(run);
        } else {
            for (d, &v) in drow[lo..hi].iter_mut().zip(run.iter().step_by(sx)) {
                *d = v;
            }
        }
    }
}

/// The unfolded input of one image (and group) as a GEMM [`PanelSource`].
pub(super) struct Im2col<'a> {
    x: &'a [f32],
    hw: [usize; 2],
    ohw: [usize; 2],
    win: &'a Window,
    /// Every value of `x` is an fp16 value (the sim stores fp16).
    fp16: bool,
}

/// The lines one 16-lane group of a panel reads along (see
/// `panel_avx512`): per line, its lanes and the plane offset its lane 0
/// would read, so lane l reads `origin + l·sx`. `count == 0`: gather.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Lines {
    lines: [(u16, i32); MAX_LINES],
    count: usize,
}

/// Lines per group beyond which a gather is as cheap.
const MAX_LINES: usize = 4;

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl Lines {
    /// Splits lanes `l0..l1` (offsets `at`) into runs stepping by `sx`.
    fn of(at: &[i32; NR], l0: usize, l1: usize, sx: usize) -> Lines {
        let mut out = Lines { lines: [(0, 0); MAX_LINES], count: 0 };
        if sx > 2 {
            return out;
        }
        let mut l = l0;
        while l < l1 {
            let mut e = l + 1;
            while e < l1 && at[e] == at[e - 1] + sx as i32 {
                e += 1;
            }
            if out.count == MAX_LINES {
                out.count = 0;
                return out;
            }
            let lanes = (((1u32 << (e - l0)) - 1) & !((1u32 << (l - l0)) - 1)) as u16;
            out.lines[out.count] = (lanes, at[l] - ((l - l0) * sx) as i32);
            out.count += 1;
            l = e;
        }
        out
    }
}

impl<'a> Im2col<'a> {
    /// `x` is [C, H, W]; `ohw` the output size of `win` over it.
    pub fn new(x: &'a [f32], hw: [usize; 2], ohw: [usize; 2], win: &'a Window) -> Im2col<'a> {
        Im2col { x, hw, ohw, win, fp16: false }
    }

    /// The same, declaring that `x` holds fp16 values only.
    pub fn of_fp16(self, fp16: bool) -> Im2col<'a> {
        Im2col { fp16, ..self }
    }
}

/// The output columns `lo..hi` whose input column (kernel column `kj`)
/// lies in `0..w`.
fn in_bounds(w: usize, ow: usize, win: &Window, kj: usize) -> (usize, usize) {
    let sx = win.stride[1];
    let off = (kj * win.dilation[1]) as isize - win.pad[1] as isize;
    let lo = if off >= 0 { 0 } else { ((-off) as usize).div_ceil(sx) }.min(ow);
    let hi = if (w as isize) <= off { 0 } else { ((w as isize - off) as usize).div_ceil(sx) }.clamp(lo, ow);
    (lo, hi)
}

impl PanelSource for Im2col<'_> {
    fn panel(&self, pc: usize, kc: usize, j0: usize, cols: usize, width: usize, dst: &mut [f32]) {
        debug_assert!(cols <= width && width <= NR && dst.len() >= kc * width);
        #[cfg(target_arch = "x86_64")]
        if crate::sgemm::has_avx512() {
            // SAFETY: AVX-512F was just detected.
            return unsafe { self.panel_avx512(pc, kc, j0, cols, width, dst) };
        }
        self.panel_scalar(pc, kc, j0, cols, width, dst)
    }
    fn fp16_exact(&self) -> bool {
        self.fp16
    }
}

impl Im2col<'_> {
    /// (channel, ky, kx) of rows `pc..pc + kc`, counted up rather than
    /// divided out: three divisions per row were a third of a panel's time.
    fn rows(&self, pc: usize, kc: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let [kh, kw] = self.win.kernel;
        let mut at = (pc / (kh * kw), (pc / kw) % kh, pc % kw);
        (0..kc).map(move |_| {
            let here = at;
            at.2 += 1;
            if at.2 == kw {
                at = if at.1 + 1 == kh { (at.0 + 1, 0, 0) } else { (at.0, at.1 + 1, 0) };
            }
            here
        })
    }

    /// 16 values at a time. Each lane keeps the input row and column its
    /// output position's window starts at, so one add and two unsigned
    /// compares give a row's valid lanes for any stride, dilation and
    /// padding. A group's inputs lie along at most a few lines at stride 1
    /// or 2, one per output row it covers (or one for all of them in a
    /// stride-1 "same" conv, whose rows continue each other): each line is
    /// a plain vector load (two and a lane shuffle at stride 2), blended
    /// into its lanes. Other groups, and lines running off the input's
    /// ends, are gathered, which is several times slower.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn panel_avx512(&self, pc: usize, kc: usize, j0: usize, cols: usize, width: usize, dst: &mut [f32]) {
        use std::arch::x86_64::*;
        let ([h, w], [_, ow]) = (self.hw, self.ohw);
        let ([sy, sx], [dy, dx]) = (self.win.stride, self.win.dilation);
        let (py, px) = (self.win.pad[0] as i32, self.win.pad[1] as i32);
        // Per lane: the top-left input row and column of its window, and
        // their offset in the plane.
        let (mut iy0, mut ix0, mut at) = ([i32::MIN / 2; NR], [i32::MIN / 2; NR], [0i32; NR]);
        for lane in 0..cols {
            let (oy, ox) = ((j0 + lane) / ow, (j0 + lane) % ow);
            iy0[lane] = (oy * sy) as i32 - py;
            ix0[lane] = (ox * sx) as i32 - px;
            at[lane] = iy0[lane] * w as i32 + ix0[lane];
        }
        let lines = [0, 1].map(|g| Lines::of(&at, 16 * g, (16 * g + 16).min(cols), sx));
        let load = |v: &[i32; NR], g: usize| _mm512_loadu_si512(v.as_ptr().add(16 * g).cast());
        let (y, x, base) = ([load(&iy0, 0), load(&iy0, 1)], [load(&ix0, 0), load(&ix0, 1)], [load(&at, 0), load(&at, 1)]);
        let (hv, wv) = (_mm512_set1_epi32(h as i32), _mm512_set1_epi32(w as i32));
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let d = dst.as_mut_ptr();
        let groups = width.div_ceil(16);
        let last = crate::sgemm::lane_mask(width - 16 * (groups - 1));
        for (kk, (ci, ki, kj)) in self.rows(pc, kc).enumerate() {
            let plane = self.x.as_ptr().add(ci * h * w);
            let (oy, ox) = ((ki * dy) as i32, (kj * dx) as i32);
            let shift = oy * w as i32 + ox;
            for (g, lines) in lines.iter().enumerate().take(groups) {
                let iy = _mm512_add_epi32(y[g], _mm512_set1_epi32(oy));
                let ix = _mm512_add_epi32(x[g], _mm512_set1_epi32(ox));
                // Unsigned compares: a negative row or column is out of range too.
                let ok = _mm512_cmplt_epu32_mask(iy, hv) & _mm512_cmplt_epu32_mask(ix, wv);
                let mut v = _mm512_setzero_ps();
                let mut gather = ok != 0 && lines.count == 0;
                for &(lanes, origin) in &lines.lines[..lines.count] {
                    if ok & lanes == 0 {
                        continue;
                    }
                    // Lane l of the line reads `first + (l - 16g)·sx`; the
                    // 16·sx values from `first` must lie inside the input
                    // (masked-off lanes then read harmless neighbours).
                    let off = origin + shift;
                    let start = (ci * h * w) as isize + off as isize;
                    if start < 0 || start as usize + 16 * sx > self.x.len() {
                        gather = true;
                        break;
                    }
                    let first = plane.offset(off as isize);
                    let line = if sx == 1 { _mm512_loadu_ps(first) } else { _mm512_permutex2var_ps(_mm512_loadu_ps(first), evens, _mm512_loadu_ps(first.add(16))) };
                    v = _mm512_mask_mov_ps(v, lanes, line);
                }
                let v = if gather {
                    _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), ok, _mm512_add_epi32(base[g], _mm512_set1_epi32(shift)), plane.cast())
                } else {
                    _mm512_maskz_mov_ps(ok, v)
                };
                let at = d.add(kk * width + 16 * g);
                if g + 1 < groups {
                    _mm512_storeu_ps(at, v);
                } else {
                    _mm512_mask_storeu_ps(at, last, v);
                }
            }
        }
    }

    /// The same in plain code, a run of output columns at a time: what the
    /// vector version is tested against, and what `panel` falls back to
    /// without AVX-512 (where convs normally write the unfolded matrix out
    /// whole for the `gemm` crate instead).
    fn panel_scalar(&self, pc: usize, kc: usize, j0: usize, cols: usize, width: usize, dst: &mut [f32]) {
        let ([h, w], [_, ow]) = (self.hw, self.ohw);
        let ([sy, sx], [dy, dx]) = (self.win.stride, self.win.dilation);
        let (py, px) = (self.win.pad[0] as isize, self.win.pad[1] as isize);
        // The panel's columns as runs along output rows: (oy, first ox,
        // first lane, length). At most NR of them (one per column if ow = 1).
        let mut runs = [(0usize, 0usize, 0usize, 0usize); NR];
        let mut nruns = 0;
        let mut lane = 0;
        while lane < cols {
            let (oy, ox) = ((j0 + lane) / ow, (j0 + lane) % ow);
            let len = (ow - ox).min(cols - lane);
            runs[nruns] = (oy, ox, lane, len);
            nruns += 1;
            lane += len;
        }
        for ((ci, ki, kj), row) in self.rows(pc, kc).zip(dst[..kc * width].chunks_exact_mut(width)) {
            row.fill(0.0);
            let plane = &self.x[ci * h * w..(ci + 1) * h * w];
            let (lo, hi) = in_bounds(w, ow, self.win, kj);
            let off = (kj * dx) as isize - px;
            for &(oy, ox0, lane0, len) in &runs[..nruns] {
                let iy = (oy * sy + ki * dy) as isize - py;
                let (a, b) = (lo.max(ox0), hi.min(ox0 + len));
                if iy < 0 || iy >= h as isize || a >= b {
                    continue;
                }
                let src = &plane[iy as usize * w..][((a * sx) as isize + off) as usize..];
                for (d, &v) in row[lane0 + a - ox0..lane0 + b - ox0].iter_mut().zip(src.iter().step_by(sx)) {
                    *d = v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sgemm::MR;

    /// Every panel of the source (the AVX-512 and the scalar one), at every
    /// block offset, matches the written-out im2col (itself checked against numpy through the conv
    /// op tests): strides, dilation, asymmetric padding, 1-wide outputs.
    #[test]
    fn panels_match_the_unfolded_matrix() {
        let cases = [
            ([3, 9, 11], [3, 3], [1, 1], [1, 1, 1, 1], [1, 1]),
            ([2, 12, 12], [7, 7], [2, 2], [3, 3, 3, 3], [1, 1]),
            ([4, 7, 7], [3, 3], [2, 2], [0, 1, 1, 0], [1, 1]),
            ([2, 10, 9], [3, 2], [1, 3], [2, 0, 1, 2], [2, 1]),
            ([3, 5, 1], [3, 1], [1, 1], [1, 0, 1, 0], [1, 1]),
            ([1, 6, 40], [1, 17], [1, 1], [0, 8, 0, 8], [1, 1]),
            // Vector-load paths: stride 2 along one output row, and a
            // dilated stride-1 "same" conv whose rows continue each other.
            ([2, 5, 70], [7, 7], [2, 2], [3, 3, 3, 3], [1, 1]),
            ([2, 6, 20], [3, 3], [1, 1], [2, 2, 2, 2], [2, 2]),
            // Groups over two or three output rows: one line per row.
            ([2, 20, 20], [3, 3], [2, 2], [1, 1, 1, 1], [1, 1]),
            ([2, 9, 12], [3, 3], [1, 1], [0, 0, 0, 0], [1, 1]),
        ];
        for ([c, h, w], kernel, stride, pad, dilation) in cases {
            let win = Window { kernel, stride, pad, dilation };
            let [oh, ow] = win.out_size("conv", h, w).unwrap();
            let x: Vec<f32> = (0..c * h * w).map(|i| i as f32 + 1.0).collect();
            let (k, n) = (c * kernel[0] * kernel[1], oh * ow);
            let mut full = vec![f32::NAN; k * n];
            im2col(&x, [h, w], [oh, ow], &win, &mut full);
            let src = Im2col::new(&x, [h, w], [oh, ow], &win);
            for pc in [0, 1, k / 2] {
                let kc = (k - pc).min(5);
                for (width, j0) in [NR, MR].into_iter().flat_map(|wd| (0..n).step_by(wd).chain([1, n.saturating_sub(3)]).map(move |j0| (wd, j0))) {
                    let cols = width.min(n - j0);
                    let mut panels = vec![vec![f32::NAN; kc * width]; 2];
                    src.panel(pc, kc, j0, cols, width, &mut panels[0]);
                    src.panel_scalar(pc, kc, j0, cols, width, &mut panels[1]);
                    for panel in &panels {
                        for kk in 0..kc {
                            for j in 0..width {
                                let want = if j < cols { full[(pc + kk) * n + j0 + j] } else { 0.0 };
                                assert_eq!(panel[kk * width + j], want, "{kernel:?}/{stride:?} width {width} pc {pc} kk {kk} j0 {j0} j {j}");
                            }
                        }
                    }
                }
            }
        }
    }
}
