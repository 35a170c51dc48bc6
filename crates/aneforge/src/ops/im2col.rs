//! im2col: a convolution's input unfolded into a matrix whose rows are
//! (channel, kernel y, kernel x) and whose columns are output positions, so
//! the convolution is one GEMM with the [O, C·kh·kw] weight. Written out
//! whole ([`im2col`]) for the weight gradient and machines without the
//! AVX-512 GEMM; otherwise made a micro-panel at a time by [`PaddedIm2col`]
//! as the GEMM packs an operand, from a zero-padded copy of the input
//! ([`Padded`]), and never stored.

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
        } else if sx == 2 {
            deinterleave(run, &mut drow[lo..hi], None);
        } else {
            for (d, &v) in drow[lo..hi].iter_mut().zip(run.iter().step_by(sx)) {
                *d = v;
            }
        }
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

/// Floats of zeros before and after a [`Padded`] copy, so that a masked
/// vector load starting up to 15 lanes before a run, or ending 15 after
/// it, still addresses the buffer.
const SLACK: usize = 16;

/// Where a [`Padded`] copy keeps each value: the input with its padding
/// written out as zeros and its columns split by phase (column mod the
/// horizontal stride), so that one output row's inputs for any kernel
/// tap are consecutive floats at every stride.
#[derive(Clone, Copy, Debug)]
pub(super) struct Padded {
    /// Padded rows, and columns per phase.
    hp: usize,
    wq: usize,
    /// Horizontal stride: the number of phases.
    sx: usize,
}

impl Padded {
    pub fn new([h, w]: [usize; 2], win: &Window) -> Padded {
        let sx = win.stride[1];
        Padded { hp: h + win.pad[0] + win.pad[2], wq: (w + win.pad[1] + win.pad[3]).div_ceil(sx), sx }
    }
    /// Floats per channel.
    fn plane(&self) -> usize {
        self.sx * self.hp * self.wq
    }
    /// Floats of the copy of `c` channels.
    pub fn len(&self, c: usize) -> usize {
        c * self.plane() + 2 * SLACK
    }
    /// Where padded row `r`, padded column `col` of channel `ci` lives.
    fn at(&self, ci: usize, r: usize, col: usize) -> usize {
        SLACK + ci * self.plane() + self.in_plane(r, col)
    }
    /// Where padded row `r`, padded column `col` lives within its channel.
    fn in_plane(&self, r: usize, col: usize) -> usize {
        (col % self.sx) * self.hp * self.wq + r * self.wq + col / self.sx
    }

    /// Writes the copy of `x` ([C, H, W]) into `dst` (at least
    /// [`Padded::len`]), a channel per task.
    pub fn fill(&self, x: &[f32], [h, w]: [usize; 2], win: &Window, dst: &mut [f32]) {
        let c = x.len() / (h * w);
        let (head, rest) = dst[..self.len(c)].split_at_mut(SLACK);
        head.fill(0.0);
        let (body, tail) = rest.split_at_mut(c * self.plane());
        tail.fill(0.0);
        let (pt, pl) = (win.pad[0], win.pad[1]);
        let (hp, wq) = (self.hp, self.wq);
        body.par_chunks_mut(self.plane()).zip(x.par_chunks(h * w)).for_each(|(plane, src)| {
            // One fill for the margins: per-row fills of a few floats each
            // were libc calls, most of the copy's time. Zeroing the whole
            // plane, not just its margins, measured faster too: the one
            // large memset takes lines without reading them first, which
            // the row copies that follow would otherwise have to do.
            plane.fill(0.0);
            for (y, srow) in src.chunks_exact(w).enumerate() {
                let at = |col: usize| self.in_plane(y + pt, col);
                match self.sx {
                    1 => plane[at(pl)..at(pl) + w].copy_from_slice(srow),
                    // Padded column 2j + p: input pair i (columns 2i, 2i+1)
                    // lands at j = i + pl/2 of phases (0, 1) when pl is
                    // even, and at phase 1's i + pl/2, phase 0's i + pl/2 + 1
                    // when odd.
                    2 => {
                        let (even, odd) = plane.split_at_mut(hp * wq);
                        let (even, odd) = (&mut even[at(0)..at(0) + wq], &mut odd[at(0)..at(0) + wq]);
                        let m = pl / 2;
                        if pl % 2 == 0 {
                            deinterleave(srow, &mut even[m..], Some(&mut odd[m..]));
                        } else {
                            deinterleave(srow, &mut odd[m..], Some(&mut even[m + 1..]));
                        }
                    }
                    _ => {
                        for (ix, &v) in srow.iter().enumerate() {
                            plane[at(ix + pl)] = v;
                        }
                    }
                }
            }
        });
    }
}

/// `a[i] = src[2i]` and, if `b` is given, `b[i] = src[2i + 1]`. The
/// compiler's loop moved a value at a time (a third of a stride-2 conv's
/// padding time, and a third of a strided 1x1 conv's unfolding).
fn deinterleave(src: &[f32], a: &mut [f32], mut b: Option<&mut [f32]>) {
    let pairs = src.len() / 2;
    assert!(a.len() >= src.len().div_ceil(2) && b.as_ref().is_none_or(|b| b.len() >= pairs), "deinterleave: destination rows too short");
    // SAFETY: AVX-512F was just detected; lengths checked above.
    #[cfg(target_arch = "x86_64")]
    let done = if crate::sgemm::has_avx512() { unsafe { deinterleave_avx512(src, a, b.as_deref_mut()) } } else { 0 };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for i in done..pairs {
        a[i] = src[2 * i];
        if let Some(b) = b.as_deref_mut() {
            b[i] = src[2 * i + 1];
        }
    }
    if src.len() % 2 == 1 {
        a[pairs] = src[src.len() - 1];
    }
}

/// [`deinterleave`] 16 pairs at a time, the last group masked; returns
/// the pairs done (all of them).
///
/// # Safety
/// AVX-512F is available; `a` and `b` hold `src.len() / 2` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn deinterleave_avx512(src: &[f32], a: &mut [f32], mut b: Option<&mut [f32]>) -> usize {
    use std::arch::x86_64::*;
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let pairs = src.len() / 2;
    // The last group masked: rows are short (28 pairs at ResNet's first
    // stride-2 conv), and a scalar tail cost as much as the vector part.
    for g in 0..pairs.div_ceil(16) {
        let n = (pairs - 16 * g).min(16);
        let (m, mlo, mhi) = (crate::sgemm::lane_mask(n), crate::sgemm::lane_mask(2 * n), crate::sgemm::lane_mask((2 * n).saturating_sub(16)));
        let s = src.as_ptr().add(32 * g);
        let (lo, hi) = (_mm512_maskz_loadu_ps(mlo, s), _mm512_maskz_loadu_ps(mhi, s.wrapping_add(16)));
        _mm512_mask_storeu_ps(a.as_mut_ptr().add(16 * g), m, _mm512_permutex2var_ps(lo, evens, hi));
        if let Some(b) = b.as_deref_mut() {
            _mm512_mask_storeu_ps(b.as_mut_ptr().add(16 * g), m, _mm512_permutex2var_ps(lo, odds, hi));
        }
    }
    pairs
}

/// Runs of lanes per 16-lane group beyond which a gather is as cheap.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const MAX_LINES: usize = 4;

/// The unfolded input read from a [`Padded`] copy: each row of a panel is
/// one or two plain vector loads per 16 columns (one per output row the
/// columns cover), with no bounds tests and no gathers. The unpadded
/// source tested every lane against the input's edges and loaded stride-2
/// inputs as two vectors and a shuffle; it was a fifth of a 7x7 stride-2
/// stem conv's time.
pub(super) struct PaddedIm2col<'a> {
    xp: &'a [f32],
    geo: Padded,
    ohw: [usize; 2],
    win: &'a Window,
    fp16: bool,
}

impl<'a> PaddedIm2col<'a> {
    /// `xp` is `geo`'s copy of an input whose output size under `win` is `ohw`.
    pub fn new(xp: &'a [f32], geo: Padded, ohw: [usize; 2], win: &'a Window, fp16: bool) -> PaddedIm2col<'a> {
        PaddedIm2col { xp, geo, ohw, win, fp16 }
    }

    /// Offset of output position `j`'s window corner from its channel's
    /// tap offset (see `tap`).
    fn corner(&self, j: usize) -> usize {
        let (oy, ox) = (j / self.ohw[1], j % self.ohw[1]);
        oy * self.win.stride[0] * self.geo.wq + ox
    }

    /// Offsets of unfolded rows `pc..pc + kc` (channel, kernel y, kernel
    /// x) for the output position whose corner offset is 0, counted up
    /// from the first row with no division per row.
    fn taps(&self, pc: usize, kc: usize) -> impl Iterator<Item = usize> {
        let ([kh, kw], [dy, dx], sx) = (self.win.kernel, self.win.dilation, self.geo.sx);
        let (plane, row, phase) = (self.geo.plane(), self.geo.wq, self.geo.hp * self.geo.wq);
        let (ci, ky, kx) = (pc / (kh * kw), (pc / kw) % kh, pc % kw);
        // Offset of (ci, ky, 0), and kernel x's padded column as phase and
        // column within it.
        let mut base = self.geo.at(ci, ky * dy, 0);
        let (mut ky, mut kx, mut ph, mut q) = (ky, kx, (kx * dx) % sx, (kx * dx) / sx);
        (0..kc).map(move |_| {
            let here = base + ph * phase + q;
            kx += 1;
            if kx == kw {
                (kx, ph, q) = (0, 0, 0);
                ky += 1;
                base += dy * row;
                if ky == kh {
                    ky = 0;
                    base += plane - kh * dy * row;
                }
            } else {
                ph += dx % sx;
                q += dx / sx;
                if ph >= sx {
                    ph -= sx;
                    q += 1;
                }
            }
            here
        })
    }

    /// Plain code, a value at a time: the reference for the vector panel,
    /// and the panel without AVX-512.
    fn panel_scalar(&self, pc: usize, kc: usize, j0: usize, cols: usize, width: usize, dst: &mut [f32]) {
        let mut corners = [0usize; NR];
        for (lane, c) in corners.iter_mut().enumerate().take(cols) {
            *c = self.corner(j0 + lane);
        }
        for (row, at) in dst[..kc * width].chunks_exact_mut(width).zip(self.taps(pc, kc)) {
            for (v, &c) in row[..cols].iter_mut().zip(&corners) {
                *v = self.xp[at + c];
            }
            row[cols..].fill(0.0);
        }
    }

    /// 16 lanes at a time: per group of 16, the runs of lanes that lie on
    /// one output row (up to [`MAX_LINES`]; more, as in a map narrower
    /// than 4, are gathered), each a masked load at the row's tap offset.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn panel_avx512(&self, pc: usize, kc: usize, j0: usize, cols: usize, width: usize, dst: &mut [f32]) {
        use std::arch::x86_64::*;
        let mut corner = [0i32; NR];
        for (lane, c) in corner.iter_mut().enumerate().take(cols) {
            *c = self.corner(j0 + lane) as i32;
        }
        let groups = width.div_ceil(16);
        // Per group: (lanes, offset of lane 0 from the tap) of each run.
        let mut runs = [[(0u16, 0i32); MAX_LINES]; 2];
        let mut count = [0usize; 2];
        for g in 0..groups {
            let (l0, l1) = (16 * g, (16 * g + 16).min(cols));
            let mut l = l0;
            while l < l1 {
                let mut e = l + 1;
                while e < l1 && corner[e] == corner[e - 1] + 1 {
                    e += 1;
                }
                if count[g] == MAX_LINES {
                    count[g] = usize::MAX;
                    break;
                }
                let lanes = (((1u32 << (e - l0)) - 1) & !((1u32 << (l - l0)) - 1)) as u16;
                runs[g][count[g]] = (lanes, corner[l] - (l - l0) as i32);
                count[g] += 1;
                l = e;
            }
        }
        let valid = [crate::sgemm::lane_mask(cols), crate::sgemm::lane_mask(cols.saturating_sub(16))];
        let last = crate::sgemm::lane_mask(width - 16 * (groups - 1));
        let d = dst.as_mut_ptr();
        if count[..groups].contains(&usize::MAX) {
            let offsets = [_mm512_loadu_si512(corner.as_ptr().cast()), _mm512_loadu_si512(corner.as_ptr().add(16).cast())];
            for (kk, tap) in self.taps(pc, kc).enumerate() {
                // In bounds: every lane's value lies inside the copy, and a
                // run's masked-off lanes reach at most 15 floats past either
                // end of it, into the slack.
                let base = self.xp.as_ptr().add(tap);
                for g in 0..groups {
                    let v = if count[g] == usize::MAX {
                        _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), valid[g], offsets[g], base.cast())
                    } else {
                        runs[g][..count[g]].iter().fold(_mm512_setzero_ps(), |v, &(lanes, off)| _mm512_mask_loadu_ps(v, lanes, base.offset(off as isize)))
                    };
                    let at = d.add(kk * width + 16 * g);
                    if g + 1 < groups {
                        _mm512_storeu_ps(at, v);
                    } else {
                        _mm512_mask_storeu_ps(at, last, v);
                    }
                }
            }
            return;
        }
        // Every group makes the same number of masked loads, unused runs
        // with no lanes (which read nothing): no branches per row. A panel
        // that branched on each group's run count per row made a 7x7
        // stride-2 stem conv 3% slower than this (A/B).
        let lines = count[..groups].iter().copied().max().unwrap_or(1);
        match lines {
            1 => self.rows_avx512::<1>(pc, kc, &runs, groups, last, width, d),
            2 => self.rows_avx512::<2>(pc, kc, &runs, groups, last, width, d),
            3 => self.rows_avx512::<3>(pc, kc, &runs, groups, last, width, d),
            _ => self.rows_avx512::<MAX_LINES>(pc, kc, &runs, groups, last, width, d),
        }
    }

    /// The rows of a panel whose groups need at most `L` runs each.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn rows_avx512<const L: usize>(&self, pc: usize, kc: usize, runs: &[[(u16, i32); MAX_LINES]; 2], groups: usize, last: u16, width: usize, d: *mut f32) {
        use std::arch::x86_64::*;
        let load = |base: *const f32, g: usize| runs[g][..L].iter().fold(_mm512_setzero_ps(), |v, &(lanes, off)| _mm512_mask_loadu_ps(v, lanes, base.offset(off as isize)));
        for (kk, tap) in self.taps(pc, kc).enumerate() {
            // In bounds as in `panel_avx512`; a run with no lanes reads nothing.
            let base = self.xp.as_ptr().add(tap);
            let at = d.add(kk * width);
            if groups == 2 {
                _mm512_storeu_ps(at, load(base, 0));
                _mm512_mask_storeu_ps(at.add(16), last, load(base, 1));
            } else {
                _mm512_mask_storeu_ps(at, last, load(base, 0));
            }
        }
    }
}

impl PanelSource for PaddedIm2col<'_> {
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
            // Dilations that cross a phase, or whole columns of one.
            ([2, 9, 20], [2, 4], [2, 3], [1, 2, 0, 1], [1, 2]),
            ([1, 8, 30], [1, 3], [1, 2], [0, 4, 0, 4], [1, 4]),
        ];
        for ([c, h, w], kernel, stride, pad, dilation) in cases {
            let win = Window { kernel, stride, pad, dilation };
            let [oh, ow] = win.out_size("conv", h, w).unwrap();
            let x: Vec<f32> = (0..c * h * w).map(|i| i as f32 + 1.0).collect();
            let (k, n) = (c * kernel[0] * kernel[1], oh * ow);
            let mut full = vec![f32::NAN; k * n];
            im2col(&x, [h, w], [oh, ow], &win, &mut full);
            let geo = Padded::new([h, w], &win);
            let mut xp = vec![f32::NAN; geo.len(c)];
            geo.fill(&x, [h, w], &win, &mut xp);
            let src = PaddedIm2col::new(&xp, geo, [oh, ow], &win, false);
            // Short runs of rows, and runs to the end that cross channels.
            for (pc, kc) in [0, 1, k / 2].into_iter().flat_map(|pc| [(pc, (k - pc).min(5)), (pc, k - pc)]) {
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

    /// The written-out unfolding at stride 2 (its rows read as the even
    /// values of a run, 16 at a time) against the definition, on widths
    /// that leave a partial last group and with and without padding.
    #[test]
    fn strided_unfolding_matches_the_definition() {
        for (w, k, pad) in [(56, 1, 0), (33, 1, 0), (70, 3, 1), (41, 3, 1), (3, 1, 0)] {
            let (c, h) = (2, 5);
            let win = Window { kernel: [k, k], stride: [2, 2], pad: [pad; 4], dilation: [1, 1] };
            let [oh, ow] = win.out_size("conv", h, w).unwrap();
            let x: Vec<f32> = (0..c * h * w).map(|i| i as f32 + 1.0).collect();
            let mut got = vec![f32::NAN; c * k * k * oh * ow];
            im2col(&x, [h, w], [oh, ow], &win, &mut got);
            for ci in 0..c {
                for (ki, kj) in (0..k).flat_map(|ki| (0..k).map(move |kj| (ki, kj))) {
                    for (oy, ox) in (0..oh).flat_map(|oy| (0..ow).map(move |ox| (oy, ox))) {
                        let (iy, ix) = ((oy * 2 + ki) as isize - pad as isize, (ox * 2 + kj) as isize - pad as isize);
                        let inside = (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix);
                        let want = if inside { x[ci * h * w + iy as usize * w + ix as usize] } else { 0.0 };
                        let row = (ci * k + ki) * k + kj;
                        assert_eq!(got[row * oh * ow + oy * ow + ox], want, "w {w} k {k} c {ci} ({ki},{kj}) at ({oy},{ox})");
                    }
                }
            }
        }
    }
}
