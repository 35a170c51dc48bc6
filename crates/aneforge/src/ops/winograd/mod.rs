//! Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions: 36 GEMMs of
//! [O, C] x [C, tiles] over 6x6 input tiles replace one [O, 9C] x [9C, HW]
//! GEMM, 4x fewer multiplies (F(2x2, 3x3) saves 2.25x). The transforms'
//! constants (±1, 2, 4, 5, 8 and G's sixths) cost a few f32 ulps of
//! accuracy against direct convolution: a relative error near 1e-6, three
//! orders below the fp16 rounding that follows.
//!
//! Every transform works a row of tiles at a time: the column pass runs
//! over whole padded rows and the row pass across tiles, so both vectorise.

#[cfg(target_arch = "x86_64")]
mod avx512;
pub(crate) mod small;

use crate::numerics::round_f16_slice_serial;
use crate::parallel::SendPtr;
#[cfg(target_arch = "x86_64")]
use crate::sgemm::has_avx512;
use crate::sgemm::{pack_lhs_each, packed_len, packs_constants, sgemm, Epilogue, Mat, Operand, PackedData, Residual};
use rayon::prelude::*;

/// Input tile edge (output tile 4 + kernel 3 - 1).
const A: usize = 6;
/// Output tile edge.
const R: usize = 4;
/// Elements of a transformed tile: one GEMM each.
const E: usize = A * A;

/// When the Winograd path pays off: enough channels for the GEMMs to
/// dominate the transforms, and at least 36 tiles. ResNet's 14x14 layers
/// have 16: alone they run in 0.46 ms instead of the direct path's 0.64,
/// but their transformed weights (f32, 4x the originals' count: 28 MB for
/// the three) push the model's weights past the last-level cache, and in
/// the model the two paths tie while the Winograd one slows down with the
/// cache whenever a neighbour on the machine uses it. F(2x2) ([`small`])
/// takes them instead.
pub(crate) fn applies(c: usize, o: usize, ho: usize, wo: usize) -> bool {
    c >= 16 && o >= 16 && ho.div_ceil(R) * wo.div_ceil(R) >= 36
}

/// Scratch floats: U [36, O, C] (when the weights are not constant) +
/// V [36, C, T] + M [36, O, T], plus 12 padded rows per parallel part
/// for the input transform.
pub(crate) fn scratch_len(c: usize, o: usize, ho: usize, wo: usize) -> usize {
    let t = ho.div_ceil(R) * wo.div_ceil(R);
    E * (o * c + c * t + o * t) + parts() * 2 * A * row_len(wo)
}

/// Parallel parts a conv is split into (bands of tiles, or ranges of
/// channels): one per thread.
fn parts() -> usize {
    rayon::current_num_threads().max(1)
}

/// Padded input row length covering every tile of an output row (tile tx
/// reads columns 4tx..4tx+5), with slack so the vector transform can read
/// whole 16-tile groups from any starting tile.
fn row_len(wo: usize) -> usize {
    R * (wo.div_ceil(R).next_multiple_of(16) + 16) + R
}

/// What the output transform adds: a bias per output channel, then a
/// residual ([O, Ho, Wo]), then a clamp.
#[derive(Clone, Copy)]
pub(crate) struct Finish<'a> {
    pub bias: Option<&'a [f32]>,
    pub residual: Option<Residual<'a>>,
    pub clamp: Option<(f32, f32)>,
    /// Round the output to fp16 (each piece while it is in cache).
    pub round: bool,
}

/// One image: x [C, H, W] (unpadded), w [O, C, 3, 3], out [O, Ho, Wo].
/// `pad` is (top, left). `prepared` is [`transform_weights`] of constant
/// weights.
///
/// Either each thread takes a band of tiles through all three steps
/// (input transform, the 36 GEMMs, output transform) in chunks of ~32
/// tiles, one parallel region in all, or each step is split its own way;
/// `by_band` chooses.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv3x3(
    x: &[f32],
    c: usize,
    h: usize,
    w: usize,
    wt: &[f32],
    prepared: Option<&[f32]>,
    o: usize,
    pad: [usize; 2],
    out: &mut [f32],
    ho: usize,
    wo: usize,
    finish: Finish,
    scratch: &mut [f32],
) {
    let tw = wo.div_ceil(R);
    let t = ho.div_ceil(R) * tw;
    let (u_buf, rest) = scratch.split_at_mut(E * o * c);
    let (vm, rows_scratch) = rest.split_at_mut(E * (c + o) * t);

    // U = G g Gᵀ, 36 matrices [O, C]: precomputed (and packed) for constant weights.
    let packed_len = packed_len(o, c);
    let (u, packed): (&[f32], Option<PackedData>) = match prepared {
        Some(p) if packs_constants() => (p, Some(PackedData::new(p))),
        Some(p) => (p, None),
        None => {
            transform_weights_plain(wt, o, c, u_buf);
            (u_buf, None)
        }
    };
    let lp = row_len(wo);
    let parts = parts().min(rows_scratch.len() / (2 * A * lp)).max(1);
    let geo = Geometry { c, o, h, w, pad, tw, ho, wo };
    let gemm = |e: usize, v: &[f32], m: &mut [f32], tc: usize| {
        let a = match &packed {
            Some(p) => Operand::packed_lhs(p, o).nth(e, packed_len),
            None => Operand::Strided(Mat::rows(&u[e * o * c..], c)),
        };
        // SAFETY: U_e [O, C], V_e [C, tc], M_e [O, tc], all row-major.
        unsafe { sgemm(o, tc, c, a, Operand::Strided(Mat::rows(v, tc)), m.as_mut_ptr(), tc, false, Epilogue::default(), false) };
    };
    let (vm_ptr, rows_ptr, out_ptr) = (SendPtr(vm.as_mut_ptr()), SendPtr(rows_scratch.as_mut_ptr()), SendPtr(out.as_mut_ptr()));
    // SAFETY (both forms): every parallel task writes only what it owns,
    // as each says; `rows_ptr` has 2·A·lp floats per part.
    let rows_buf = |p: usize| unsafe { std::slice::from_raw_parts_mut(rows_ptr.at(p * 2 * A * lp), 2 * A * lp) };
    if by_band(c, o, t) {
        let bands = parts.min(t);
        (0..bands).into_par_iter().for_each(|b| {
            let band = t * b / bands..t * (b + 1) / bands;
            // Band b owns tiles `band`: V and M's floats for them (at an
            // offset proportional to the first tile) and the output pixels
            // of those tiles in every plane.
            let bm = unsafe { std::slice::from_raw_parts_mut(vm_ptr.at(E * (c + o) * band.start), E * (c + o) * band.len()) };
            let buf = rows_buf(b);
            // Chunks end on tile rows (a partial row costs a whole row's
            // column pass) after ~32 tiles.
            let rows = (32 / tw).max(1);
            let mut next = band.start;
            while next < band.end {
                let tiles = next..band.end.min((next / tw + rows) * tw);
                next = tiles.end;
                let tc = tiles.len();
                let (v, rest) = bm.split_at_mut(E * c * tc);
                let m = &mut rest[..E * o * tc];
                input_transform(x, &geo, 0..c, tiles.clone(), buf, SendPtr(v.as_mut_ptr()));
                for e in 0..E {
                    gemm(e, &v[e * c * tc..], &mut m[e * o * tc..], tc);
                }
                output_transform(m, &geo, 0..o, tiles, out_ptr, finish);
            }
        });
    } else {
        let (v, m) = vm.split_at_mut(E * c * t);
        let vp = SendPtr(v.as_mut_ptr());
        // Part p owns channels `chans` of V, position e its M_e, and
        // output channel range `outs` its planes.
        (0..parts).into_par_iter().for_each(|p| input_transform(x, &geo, c * p / parts..c * (p + 1) / parts, 0..t, rows_buf(p), vp));
        let v = &*v;
        m.par_chunks_mut(o * t).enumerate().for_each(|(e, me)| gemm(e, &v[e * c * t..], me, t));
        let m = &*m;
        (0..parts).into_par_iter().for_each(|p| output_transform(m, &geo, o * p / parts..o * (p + 1) / parts, 0..t, out_ptr, finish));
    }
}

/// Whether each thread takes a band of tiles through all three steps
/// rather than each step being split its own way (input channels, the 36
/// positions, output channels). Split by step, nearly every value of V
/// and M moves from one core to the other, twice per conv: on a VM whose
/// vCPUs sit on different dies (a cache-line round trip of ~1 µs instead
/// of ~0.1 µs) that made ResNet-18's Winograd layers 40-70% slower. In
/// bands V and M stay on their core, and consecutive convs read mostly
/// what the same thread wrote; but every thread reads all of U, once per
/// chunk (one GEMM column tile, so that its V and M stay in L2), which
/// pays while U is small beside V and M: ResNet-18's 64-channel 56x56
/// convs (U 0.6 MB, V and M 3.6 MB) but not its 128-channel 28x28 ones
/// (U 2.4 MB, V and M 1.8 MB). In-process A/B on ResNet-18: this choice
/// ties the step-wise split in fast windows and is 5% faster in slow
/// ones; bands for every Winograd conv are 4% slower in fast windows.
fn by_band(c: usize, o: usize, t: usize) -> bool {
    4 * o * c <= (c + o) * t
}

/// The sizes the transforms share: input [C, H, W] with `pad` (top,
/// left), `tw` tiles per row, output planes [Ho, Wo].
struct Geometry {
    c: usize,
    o: usize,
    h: usize,
    w: usize,
    pad: [usize; 2],
    tw: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    /// The pieces of tile rows that tiles `tiles` (row-major) cover: (tile
    /// row, first tile in it, tiles, offset of the first within `tiles`).
    fn pieces(&self, tiles: std::ops::Range<usize>) -> impl Iterator<Item = (usize, usize, usize, usize)> + '_ {
        let tw = self.tw;
        (tiles.start / tw..tiles.end.div_ceil(tw)).map(move |ty| {
            let (a, b) = (tiles.start.max(ty * tw), tiles.end.min((ty + 1) * tw));
            (ty, a - ty * tw, b - a, a - tiles.start)
        })
    }
}

/// V = Bᵀ d B for tiles `tiles` of channels `chans` into `v`, which
/// addresses V [36, C, tiles] and whose rows for `chans` the caller owns.
/// `buf` holds 12 padded rows.
fn input_transform(x: &[f32], g: &Geometry, chans: std::ops::Range<usize>, tiles: std::ops::Range<usize>, buf: &mut [f32], v: SendPtr) {
    let Geometry { c, h, w, pad, .. } = *g;
    let lp = buf.len() / (2 * A);
    let tc = tiles.len();
    let ct = c * tc;
    #[cfg(target_arch = "x86_64")]
    let simd = has_avx512();
    let (d, tm) = buf.split_at_mut(A * lp);
    for ci in chans {
        let src = &x[ci * h * w..(ci + 1) * h * w];
        for (ty, tx0, n, off) in g.pieces(tiles.clone()) {
            let y0 = (R * ty) as isize - pad[0] as isize;
            for r in 0..A {
                let row = &mut d[r * lp..(r + 1) * lp];
                let yy = y0 + r as isize;
                if yy < 0 || yy >= h as isize {
                    row.fill(0.0);
                    continue;
                }
                let s = &src[yy as usize * w..(yy as usize + 1) * w];
                // Column j of the padded row is input column j - pad_left;
                // only the margins need zeros.
                let lo = pad[1].min(lp);
                let n = w.min(lp - lo);
                row[..lo].fill(0.0);
                row[lo..lo + n].copy_from_slice(&s[..n]);
                row[lo + n..].fill(0.0);
            }
            // The column pass covers the piece's columns; the vector row
            // pass reads (and ignores) up to 16 tiles beyond them.
            let cols = R * tx0..(R * (tx0 + n.next_multiple_of(16)) + R + 2).min(lp);
            let dr: [&[f32]; A] = std::array::from_fn(|r| &d[r * lp + cols.start..r * lp + cols.end]);
            let mut tr: [&mut [f32]; A] = split6(tm, lp).map(|row| &mut row[cols.clone()]);
            input_cols(&dr, &mut tr);
            let base = ci * tc + off;
            for (r, row) in tr.iter().enumerate() {
                // SAFETY: the six rows (r*6 + k; channel ci, this piece's
                // tiles) are disjoint, inside V and the caller's.
                let mut dst: [&mut [f32]; A] = std::array::from_fn(|k| unsafe { std::slice::from_raw_parts_mut(v.at((r * A + k) * ct + base), n) });
                #[cfg(target_arch = "x86_64")]
                if simd {
                    // SAFETY: AVX-512F checked; the slice reaches 16 tiles past the piece (see `row_len`).
                    unsafe { avx512::input_row(row, &mut dst) };
                    continue;
                }
                input_row(row, &mut dst);
            }
        }
    }
}

/// Y = Aᵀ M A for tiles `tiles` (M [36, O, tiles]) into their output
/// pixels of planes `outs`, then bias and clamp, then fp16 rounding of
/// what was written while it is in cache.
fn output_transform(m: &[f32], g: &Geometry, outs: std::ops::Range<usize>, tiles: std::ops::Range<usize>, out: SendPtr, finish: Finish) {
    let (ho, wo) = (g.ho, g.wo);
    let ot = g.o * tiles.len();
    // With a residual the clamp comes after it (`Residual::add_to`).
    let (lo, hi) = finish.clamp.filter(|_| finish.residual.is_none()).unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    // The pixels of `tiles` in one plane: whole rows from the first
    // tile's to the last's.
    let (y0, y1) = (R * (tiles.start / g.tw), (R * tiles.end.div_ceil(g.tw)).min(ho));
    for oi in outs.clone() {
        // This plane's pixels are scattered rows of a few hundred bytes,
        // which the hardware prefetchers do not see coming: fetch the next
        // plane's residual and output lines while this one is transformed.
        if oi + 1 < outs.end {
            let at = ((oi + 1) * ho + y0) * wo;
            if let Some(r) = finish.residual {
                prefetch(&r.data[at..at + (y1 - y0) * wo]);
            }
            // SAFETY: inside the output; a prefetch neither reads nor writes.
            prefetch(unsafe { std::slice::from_raw_parts(out.at(at), (y1 - y0) * wo) });
        }
        let bias = finish.bias.map_or(0.0, |b| b[oi]);
        let mut cols = [[0.0f32; 64]; A];
        for (ty, tx0, n, off) in g.pieces(tiles.clone()) {
            let base = oi * tiles.len() + off;
            let me: [&[f32]; E] = std::array::from_fn(|e| &m[e * ot + base..e * ot + base + n]);
            let (x0, x1) = (R * tx0, (R * (tx0 + n)).min(wo));
            // Up to four output rows, without a per-call allocation.
            let mut rows: [&mut [f32]; R] = Default::default();
            let mut count = 0;
            for (y, slot) in (R * ty..(R * ty + R).min(ho)).zip(rows.iter_mut()) {
                // SAFETY: the caller owns these tiles' pixels of every plane.
                *slot = unsafe { std::slice::from_raw_parts_mut(out.at((oi * ho + y) * wo + x0), x1 - x0) };
                count += 1;
            }
            let rows = &mut rows[..count];
            output_rows(&me, rows, bias, lo, hi, &mut cols);
            if let Some(r) = finish.residual {
                for (k, row) in rows.iter_mut().enumerate() {
                    let at = (oi * ho + R * ty + k) * wo + x0;
                    r.add_to(row, at, finish.clamp);
                }
            }
            if finish.round && finish.residual.is_none() {
                rows.iter_mut().for_each(|r| round_f16_slice_serial(r));
            }
        }
    }
}

/// Asks for every cache line of `xs`, into L1.
#[inline]
fn prefetch(xs: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for i in (0..xs.len()).step_by(16) {
        // SAFETY: a prefetch of an address inside the slice has no effect
        // on memory; SSE is part of x86_64.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(xs.as_ptr().add(i).cast()) };
    }
    // Elsewhere a hint only: nothing to ask for.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = xs;
}

/// Aᵀ M A for one piece of a tile row (`me[e]`: GEMM result e of its
/// tiles) into up to four output rows, plus bias, clamped. `cols` is the
/// scalar path's work space.
fn output_rows(me: &[&[f32]; E], rows: &mut [&mut [f32]], bias: f32, lo: f32, hi: f32, cols: &mut [[f32; 64]; A]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F checked; each row is as wide as the tiles' pixels.
        return unsafe { avx512::output_rows(me, rows, bias, lo, hi) };
    }
    let n = me[0].len();
    for (r, drow) in rows.iter_mut().enumerate() {
        for t0 in (0..n).step_by(64) {
            let k = 64.min(n - t0);
            output_cols(r, me, t0, k, cols);
            output_row(cols, k, &mut drow[R * t0..], bias, lo, hi);
        }
    }
}

fn split6(buf: &mut [f32], lp: usize) -> [&mut [f32]; A] {
    let (t0, rest) = buf.split_at_mut(lp);
    let (t1, rest) = rest.split_at_mut(lp);
    let (t2, rest) = rest.split_at_mut(lp);
    let (t3, rest) = rest.split_at_mut(lp);
    let (t4, t5) = rest.split_at_mut(lp);
    [t0, t1, t2, t3, t4, &mut t5[..lp]]
}

/// Bᵀ·a for one 6-vector a, Bᵀ = [[4,0,-5,0,1,0], [0,-4,-4,1,1,0],
/// [0,4,-4,-1,1,0], [0,-2,-1,2,1,0], [0,2,-1,-2,1,0], [0,4,0,-5,0,1]].
#[inline(always)]
fn bt6([a0, a1, a2, a3, a4, a5]: [f32; A]) -> [f32; A] {
    [
        4.0 * a0 - 5.0 * a2 + a4,
        -4.0 * (a1 + a2) + a3 + a4,
        4.0 * (a1 - a2) - a3 + a4,
        2.0 * (a3 - a1) - a2 + a4,
        2.0 * (a1 - a3) - a2 + a4,
        4.0 * a1 - 5.0 * a3 + a5,
    ]
}

/// Aᵀ·m for one 6-vector m, Aᵀ = [[1,1,1,1,1,0], [0,1,-1,2,-2,0],
/// [0,1,1,4,4,0], [0,1,-1,8,-8,1]].
#[inline(always)]
fn at4([m0, m1, m2, m3, m4, m5]: [f32; A]) -> [f32; R] {
    [m0 + m1 + m2 + m3 + m4, m1 - m2 + 2.0 * (m3 - m4), m1 + m2 + 4.0 * (m3 + m4), m1 - m2 + 8.0 * (m3 - m4) + m5]
}

/// Bᵀ applied down the six input rows of a row of tiles, element by element.
#[inline(never)]
fn input_cols(d: &[&[f32]; A], t: &mut [&mut [f32]; A]) {
    let lp = d[0].len();
    for j in 0..lp {
        let v = bt6(std::array::from_fn(|i| d[i][j]));
        for (row, x) in t.iter_mut().zip(v) {
            row[j] = x;
        }
    }
}

/// Bᵀ applied across each tile of one column-transformed row: tile tx reads
/// columns 4tx..4tx+5 and writes its six values to `v[k][tx]`.
#[inline(never)]
fn input_row(tr: &[f32], v: &mut [&mut [f32]; A]) {
    let tw = v[0].len();
    for tx in 0..tw {
        let out = bt6(std::array::from_fn(|i| tr[R * tx + i]));
        for (row, x) in v.iter_mut().zip(out) {
            row[tx] = x;
        }
    }
}

/// Row `r` of Aᵀ applied down the six GEMM-result rows of tiles t0..t0+n:
/// `cols[s][j]` combines `m[k*6 + s][t0 + j]` over k.
#[inline(never)]
fn output_cols(r: usize, me: &[&[f32]; E], t0: usize, n: usize, cols: &mut [[f32; 64]; A]) {
    for (s, col) in cols.iter_mut().enumerate() {
        let m: [&[f32]; A] = std::array::from_fn(|k| &me[k * A + s][t0..t0 + n]);
        for (j, c) in col[..n].iter_mut().enumerate() {
            *c = at4(std::array::from_fn(|k| m[k][j]))[r];
        }
    }
}

/// Aᵀ across tiles: tile j's four outputs land at columns 4j..4j+3 of
/// `drow` (fewer for the last tile of a short row), plus bias, clamped.
#[inline(never)]
fn output_row(cols: &[[f32; 64]; A], n: usize, drow: &mut [f32], bias: f32, lo: f32, hi: f32) {
    let [c0, c1, c2, c3, c4, c5] = cols;
    let fin = |v: f32| (v + bias).max(lo).min(hi);
    for (j, d) in drow.chunks_mut(R).take(n).enumerate() {
        // The last tile of a short row has fewer than four columns.
        let y = at4([c0[j], c1[j], c2[j], c3[j], c4[j], c5[j]]);
        for (q, d) in d.iter_mut().enumerate() {
            *d = fin(y[q]);
        }
    }
}

/// U = G g Gᵀ for every (o, c) as 36 matrices [O, C], packed for the GEMM
/// when the machine's kernel takes packed operands.
pub(crate) fn transform_weights(wt: &[f32], o: usize, c: usize) -> Vec<f32> {
    let mut u = vec![0.0; E * o * c];
    transform_weights_plain(wt, o, c, &mut u);
    if !packs_constants() {
        return u;
    }
    pack_lhs_each(&u, E, o, c)
}

/// G = [[¼,0,0],[-⅙,-⅙,-⅙],[-⅙,⅙,-⅙],[1/24,1/12,⅙],[1/24,-1/12,⅙],[0,0,1]].
fn weight_col(a: f32, b: f32, c: f32) -> [f32; A] {
    [a / 4.0, -(a + b + c) / 6.0, -(a - b + c) / 6.0, a / 24.0 + b / 12.0 + c / 6.0, a / 24.0 - b / 12.0 + c / 6.0, c]
}

fn transform_weights_plain(wt: &[f32], o: usize, c: usize, u: &mut [f32]) {
    let oc = o * c;
    let u_ptr = SendPtr(u.as_mut_ptr());
    (0..oc).into_par_iter().with_min_len(64).for_each(|i| {
        let g = &wt[i * 9..i * 9 + 9];
        // Columns first: tmp[r][col] = (G g)[r][col].
        let cols: [[f32; A]; 3] = std::array::from_fn(|col| weight_col(g[col], g[3 + col], g[6 + col]));
        for r in 0..A {
            let row = weight_col(cols[0][r], cols[1][r], cols[2][r]);
            for (k, &val) in row.iter().enumerate() {
                // SAFETY: each i writes its own slot of each of the 36 matrices.
                unsafe { *u_ptr.at((r * A + k) * oc + i) = val };
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct convolution, the textbook definition, as the reference.
    pub(super) fn direct(x: &[f32], c: usize, h: usize, w: usize, wt: &[f32], o: usize, pad: [usize; 4]) -> (Vec<f32>, usize, usize) {
        let ho = h + pad[0] + pad[2] - 2;
        let wo = w + pad[1] + pad[3] - 2;
        let mut out = vec![0.0; o * ho * wo];
        for oi in 0..o {
            for y in 0..ho {
                for xx in 0..wo {
                    let mut s = 0.0f64;
                    for ci in 0..c {
                        for i in 0..3 {
                            for j in 0..3 {
                                let iy = y as isize + i as isize - pad[0] as isize;
                                let ix = xx as isize + j as isize - pad[1] as isize;
                                if iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize {
                                    s += x[ci * h * w + iy as usize * w + ix as usize] as f64 * wt[((oi * c + ci) * 3 + i) * 3 + j] as f64;
                                }
                            }
                        }
                    }
                    out[(oi * ho + y) * wo + xx] = s as f32;
                }
            }
        }
        (out, ho, wo)
    }

    #[test]
    fn matches_direct_convolution() {
        // Odd sizes leave partial tiles at the bottom and right edges. The
        // first four cases split the steps by position (see `by_band`), the
        // last two run in bands, the last with several chunks per band.
        let cases = [(16, 16, 9, 7, [1, 1, 1, 1]), (17, 20, 8, 8, [0, 0, 0, 0]), (16, 32, 11, 5, [1, 0, 1, 0]), (20, 13, 14, 15, [1, 1, 1, 1]), (16, 16, 6, 70, [1, 1, 1, 1]), (16, 24, 40, 32, [1, 1, 1, 1])];
        for (i, (c, o, h, w, pad)) in cases.into_iter().enumerate() {
            let x: Vec<f32> = (0..c * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let wt: Vec<f32> = (0..o * c * 9).map(|i| ((i * 53 % 97) as f32 - 48.0) / 200.0).collect();
            let (want, ho, wo) = direct(&x, c, h, w, &wt, o, pad);
            assert_eq!(by_band(c, o, ho.div_ceil(R) * wo.div_ceil(R)), i >= 4, "case {i} no longer covers the form it was chosen for");
            let mut got = vec![0.0; o * ho * wo];
            let mut scratch = vec![0.0; scratch_len(c, o, ho, wo)];
            let finish = Finish { bias: None, residual: None, clamp: None, round: false };
            conv3x3(&x, c, h, w, &wt, None, o, [pad[0], pad[1]], &mut got, ho, wo, finish, &mut scratch);
            let u = transform_weights(&wt, o, c);
            let mut got2 = vec![0.0; o * ho * wo];
            conv3x3(&x, c, h, w, &wt, Some(&u), o, [pad[0], pad[1]], &mut got2, ho, wo, finish, &mut scratch);
            for (a, b) in got.iter().zip(&got2) {
                assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "packed {b} vs plain {a}");
            }
            // F(4,3)'s transform constants cost ~1e-5 relative in f32 (seen:
            // 2e-6..1.2e-5 here), 40x below an fp16 half-ulp.
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 5e-5 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }

    /// The scalar transforms (machines without AVX-512) against the vector
    /// ones, on a row of 37 tiles (two full 16-tile groups and a remainder).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn scalar_and_vector_transforms_agree() {
        if !has_avx512() {
            return;
        }
        let tw = 37;
        let tr: Vec<f32> = (0..row_len(R * tw)).map(|i| ((i * 29 % 83) as f32 - 41.0) / 7.0).collect();
        let (mut a, mut b) = (vec![0.0f32; A * tw], vec![0.0f32; A * tw]);
        {
            let mut va: [&mut [f32]; A] = split6(&mut a, tw);
            input_row(&tr, &mut va);
            let mut vb: [&mut [f32]; A] = split6(&mut b, tw);
            unsafe { avx512::input_row(&tr, &mut vb) };
        }
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()), "{x} vs {y}");
        }

        let m: Vec<f32> = (0..E * tw).map(|i| ((i * 31 % 89) as f32 - 44.0) / 9.0).collect();
        let me: [&[f32]; E] = std::array::from_fn(|e| &m[e * tw..(e + 1) * tw]);
        let wo = R * tw - 2; // a short last tile
        let (mut want, mut got) = (vec![0.0f32; R * wo], vec![0.0f32; R * wo]);
        let mut cols = [[0.0f32; 64]; A];
        for (r, drow) in want.chunks_mut(wo).enumerate() {
            for t0 in (0..tw).step_by(64) {
                let n = 64.min(tw - t0);
                output_cols(r, &me, t0, n, &mut cols);
                output_row(&cols, n, &mut drow[R * t0..], 0.5, -3.0, 3.0);
            }
        }
        let mut rows: Vec<&mut [f32]> = got.chunks_mut(wo).collect();
        unsafe { avx512::output_rows(&me, &mut rows, 0.5, -3.0, 3.0) };
        for (x, y) in want.iter().zip(&got) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()), "{x} vs {y}");
        }
    }
}
