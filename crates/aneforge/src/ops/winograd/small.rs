//! Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions on maps too small
//! for F(4x4, 3x3) (ResNet-18's 14x14 layers): 16 GEMMs over 4x4 input
//! tiles, 2.25x fewer multiplies than the direct path.
//!
//! Why not F(4x4) there: a 14x14 map has 16 of its tiles, so each of its
//! 36 GEMMs is 16 columns wide and reads a [O, C] weight matrix for little
//! work, and its 36 transformed weights (f32) weigh 9.4 MB a layer. Here
//! each GEMM has 49 tiles and the 16 weights weigh 4.2 MB; and the GEMMs
//! run transposed, Mᵀ_e [T, O] = Vᵀ_e [T, C] · Uᵀ_e [C, O]: the tiles take
//! the kernel's 12-row side (49 = 4 tiles and a row, where 32-wide panels
//! would waste a quarter), the transformed input is read in place, and the
//! packed weights are never widened per call.
//!
//! F(2x2)'s transforms only add, subtract and halve, so the result is as
//! accurate as direct convolution's to a few f32 ulps.

use crate::numerics::round_f16_slice_serial;
use crate::parallel::SendPtr;
use crate::sgemm::{pack_rhs_each, packed_rhs_len, packs_constants, sgemm, Epilogue, Mat, Operand, PackedData, NR};
use rayon::prelude::*;

/// Positions of a transformed tile: one GEMM each.
const E: usize = 16;
/// Channels the transforms take at a time (one AVX-512 vector).
const L: usize = 16;

/// Largest transformed weight (f32 values) worth it: beyond a few MB the
/// model's weights leave the last-level cache, and the 2.25x fewer
/// multiplies are paid for in memory traffic (see the module doc).
const U_MAX: usize = 1 << 20;

/// Whether a 3x3 stride-1 conv of `c` -> `o` channels onto [ho, wo] takes
/// this path (it also needs a constant weight, prepared by
/// [`transform_weights`]): where F(4x4) does not apply, with channels
/// enough for the GEMMs to outweigh the transforms.
pub(crate) fn applies(c: usize, o: usize, ho: usize, wo: usize) -> bool {
    packs_constants() && !super::applies(c, o, ho, wo) && c >= 64 && o >= 64 && tiles(ho, wo) >= 16 && E * c * o <= U_MAX
}

fn tiles(ho: usize, wo: usize) -> usize {
    ho.div_ceil(2) * wo.div_ceil(2)
}

/// Scratch floats: the channels-last padded input, V [16, T, C] and
/// M [16, T, O].
pub(crate) fn scratch_len(c: usize, o: usize, ho: usize, wo: usize) -> usize {
    let (th, tw) = (ho.div_ceil(2), wo.div_ceil(2));
    (2 * th + 2) * (2 * tw + 2) * c + E * th * tw * (c + o)
}

/// Uᵀ_e = (G g Gᵀ)_e for every (c, o), as 16 matrices [C, O] packed as
/// the GEMM's right operand.
pub(crate) fn transform_weights(wt: &[f32], o: usize, c: usize) -> Vec<f32> {
    let mut u = vec![0.0; E * c * o];
    for oi in 0..o {
        for ci in 0..c {
            let g = &wt[(oi * c + ci) * 9..(oi * c + ci) * 9 + 9];
            // G = [[1,0,0], [½,½,½], [½,-½,½], [0,0,1]]: columns, then rows.
            let col = |a: f32, b: f32, d: f32| [a, (a + b + d) / 2.0, (a - b + d) / 2.0, d];
            let cols: [[f32; 4]; 3] = std::array::from_fn(|j| col(g[j], g[3 + j], g[6 + j]));
            for r in 0..4 {
                for (k, val) in col(cols[0][r], cols[1][r], cols[2][r]).into_iter().enumerate() {
                    u[((r * 4 + k) * c + ci) * o + oi] = val;
                }
            }
        }
    }
    pack_rhs_each(&u, E, c, o)
}

/// One image: x [C, H, W] (unpadded), `prepared` from
/// [`transform_weights`], out [O, Ho, Wo]; `pad` is (top, left). `epi`
/// finishes each output value as the direct path's GEMM would (its rows
/// are output channels, its row stride a plane).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv3x3(x: &[f32], [c, h, w]: [usize; 3], prepared: &[f32], o: usize, pad: [usize; 2], out: &mut [f32], [ho, wo]: [usize; 2], epi: Epilogue, scratch: &mut [f32]) {
    let (th, tw) = (ho.div_ceil(2), wo.div_ceil(2));
    let t = th * tw;
    let wp = 2 * tw + 2;
    let (xp, rest) = scratch.split_at_mut((2 * th + 2) * wp * c);
    let (v, rest) = rest.split_at_mut(E * t * c);
    let m = &mut rest[..E * t * o];

    // The input channels-last, zero-padded: a pixel's channels are then
    // consecutive, and the transform runs across them as vectors.
    xp.par_chunks_mut(wp * c).enumerate().for_each(|(py, row)| {
        let iy = py as isize - pad[0] as isize;
        row.fill(0.0);
        if iy < 0 || iy >= h as isize {
            return;
        }
        // Input columns 0..w land at padded columns pad_left..: the
        // padded row (two per output tile, plus two) always holds them.
        debug_assert!(pad[1] + w <= wp);
        let src = &x[iy as usize * w..];
        for c0 in (0..c).step_by(L) {
            let n = L.min(c - c0);
            for ix in 0..w {
                let dst = &mut row[(ix + pad[1]) * c + c0..][..n];
                for (l, val) in dst.iter_mut().enumerate() {
                    *val = src[(c0 + l) * h * w + ix];
                }
            }
        }
    });

    // V: each tile's 4x4 patch through Bᵀ d B, channel vectors at a time.
    let vp = SendPtr(v.as_mut_ptr());
    let xp = &*xp;
    (0..t).into_par_iter().with_min_len(4).for_each(|ti| {
        let (ty, tx) = (ti / tw, ti % tw);
        let d: [&[f32]; E] = std::array::from_fn(|k| {
            let at = ((2 * ty + k / 4) * wp + 2 * tx + k % 4) * c;
            &xp[at..at + c]
        });
        // SAFETY: tile ti owns row ti of each of the 16 matrices V_e [T, C].
        let mut dst: [&mut [f32]; E] = std::array::from_fn(|e| unsafe { std::slice::from_raw_parts_mut(vp.at((e * t + ti) * c), c) });
        // SAFETY: `applies` admits only machines with AVX-512F (the GEMM's
        // packed operands need it); the 32 slices are c long.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            input_tile(&d, &mut dst)
        };
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (d, &mut dst);
            unreachable!("F(2x2) runs only beside the AVX-512 GEMM (see `applies`)")
        }
    });

    // The GEMMs and the output transform, a range of output channels per
    // thread: each reads its part of U (the largest operand) and all of V,
    // and transforms back only what it computed.
    let parts = rayon::current_num_threads().clamp(1, o.div_ceil(NR));
    let per = o.div_ceil(parts).next_multiple_of(NR);
    let (mp, op) = (SendPtr(m.as_mut_ptr()), SendPtr(out.as_mut_ptr()));
    let v = &*v;
    let packed = PackedData::new(prepared);
    let len = packed_rhs_len(c, o);
    (0..o.div_ceil(per)).into_par_iter().for_each(|p| {
        #[allow(clippy::redundant_locals)]
        let (mp, op) = (mp, op);
        let (o0, o1) = (p * per, (p * per + per).min(o));
        for e in 0..E {
            let b = Operand::packed_rhs(&packed, o).nth(e, len);
            // SAFETY: V_e [T, C] and M_e [T, O] row-major, columns o0..o1 of
            // M_e (this task's); o0 is a multiple of NR, as a packed
            // operand's column offset must be.
            unsafe { sgemm(t, o1 - o0, c, Operand::Strided(Mat::rows(&v[e * t * c..], c)), b.skip(o0, false), mp.at(e * t * o + o0), o, false, Epilogue::default(), false) };
        }
        // SAFETY: this task owns output planes o0..o1.
        let planes = unsafe { std::slice::from_raw_parts_mut(op.at(o0 * ho * wo), (o1 - o0) * ho * wo) };
        output_tiles(mp, [t, tw, o], o0..o1, planes, [ho, wo], &epi);
    });
}

/// Bᵀ d B for one tile, 16 channels to a vector: `d[4i + j]` is patch
/// pixel (i, j), `v[e]` receives position e.
/// Bᵀ = [[1,0,-1,0], [0,1,1,0], [0,-1,1,0], [0,1,0,-1]].
///
/// # Safety
/// AVX-512F is available; every slice of `d` and `v` holds the same count.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn input_tile(d: &[&[f32]; E], v: &mut [&mut [f32]; E]) {
    use std::arch::x86_64::*;
    let c = d[0].len();
    for c0 in (0..c).step_by(L) {
        let mask = crate::sgemm::lane_mask(c - c0);
        let p: [__m512; E] = std::array::from_fn(|k| _mm512_maskz_loadu_ps(mask, d[k].as_ptr().add(c0)));
        let (add, sub) = (|a, b| _mm512_add_ps(a, b), |a, b| _mm512_sub_ps(a, b));
        // Rows: r[j] = column j of Bᵀ d.
        let r: [[__m512; 4]; 4] = std::array::from_fn(|j| [sub(p[j], p[8 + j]), add(p[4 + j], p[8 + j]), sub(p[8 + j], p[4 + j]), sub(p[4 + j], p[12 + j])]);
        for i in 0..4 {
            let out = [sub(r[0][i], r[2][i]), add(r[1][i], r[2][i]), sub(r[2][i], r[1][i]), sub(r[1][i], r[3][i])];
            for (k, x) in out.into_iter().enumerate() {
                _mm512_mask_storeu_ps(v[4 * i + k].as_mut_ptr().add(c0), mask, x);
            }
        }
    }
}

/// Aᵀ M A for every tile and each output channel in `outs` into `planes`
/// (those channels' [Ho, Wo] planes), finished by `epi` as the F(4x4)
/// path finishes its output: bias and clamp as each value is written,
/// then per plane the residual (which clamps after it) or the rounding.
/// M [16, T, O]; Aᵀ = [[1,1,1,0], [0,1,-1,-1]].
///
/// `m` addresses M, of which only the columns `outs` are read: the ones
/// this thread wrote (the others may be being written by another).
fn output_tiles(m: SendPtr, [t, tw, o]: [usize; 3], outs: std::ops::Range<usize>, planes: &mut [f32], [ho, wo]: [usize; 2], epi: &Epilogue) {
    let plane = ho * wo;
    let n = outs.len();
    let (lo, hi) = epi.clamp.filter(|_| epi.residual.is_none()).unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let bias = epi.row_bias.map(|b| &b[outs.start..outs.end]);
    for ti in 0..t {
        let (ty, tx) = (ti / tw, ti % tw);
        // SAFETY: columns `outs` of row ti of each M_e lie inside M.
        let me: [&[f32]; E] = std::array::from_fn(|e| unsafe { std::slice::from_raw_parts(m.at((e * t + ti) * o + outs.start), n) });
        // The tile's four pixels; those past a short last row or column are dropped.
        let at: [Option<usize>; 4] = std::array::from_fn(|k| {
            let (py, px) = (2 * ty + k / 2, 2 * tx + k % 2);
            (py < ho && px < wo).then_some(py * wo + px)
        });
        // SAFETY: AVX-512F, as for the input transform; `planes` holds n
        // planes, `me` n columns each.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            output_tile(&me, at, bias, (lo, hi), planes, plane)
        };
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (me, at, bias, lo, hi, plane);
            unreachable!("F(2x2) runs only beside the AVX-512 GEMM (see `applies`)")
        }
    }
    for (oi, p) in planes.chunks_exact_mut(plane).enumerate() {
        match epi.residual {
            Some(r) => r.add_to(p, (outs.start + oi) * plane, epi.clamp),
            None if epi.round => round_f16_slice_serial(p),
            None => {}
        }
    }
}

/// One tile of [`output_tiles`], 16 channels to a vector: the four pixels
/// `at` of each channel's plane (`plane` floats apart in `planes`) get
/// Aᵀ M A plus bias, clamped to `lo..hi`.
///
/// # Safety
/// AVX-512F is available; `me` holds 16 slices of the same count n, and
/// `planes` n planes of `plane` floats, each holding the pixels `at`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn output_tile(me: &[&[f32]; E], at: [Option<usize>; 4], bias: Option<&[f32]>, (lo, hi): (f32, f32), planes: &mut [f32], plane: usize) {
    use std::arch::x86_64::*;
    let n = me[0].len();
    let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    let (add, sub) = (|a, b| _mm512_add_ps(a, b), |a, b| _mm512_sub_ps(a, b));
    // Lane l's channel starts l planes further on.
    let step = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(plane as i32));
    for o0 in (0..n).step_by(L) {
        let mask = crate::sgemm::lane_mask(n - o0);
        let q: [__m512; E] = std::array::from_fn(|e| _mm512_maskz_loadu_ps(mask, me[e].as_ptr().add(o0)));
        let b = bias.map_or(_mm512_setzero_ps(), |b| _mm512_maskz_loadu_ps(mask, b.as_ptr().add(o0)));
        // Columns: s[j] = (Aᵀ M)[.][j].
        let s: [[__m512; 2]; 4] = std::array::from_fn(|j| [add(add(q[j], q[4 + j]), q[8 + j]), sub(sub(q[4 + j], q[8 + j]), q[12 + j])]);
        let y = [
            add(add(s[0][0], s[1][0]), s[2][0]),
            sub(sub(s[1][0], s[2][0]), s[3][0]),
            add(add(s[0][1], s[1][1]), s[2][1]),
            sub(sub(s[1][1], s[2][1]), s[3][1]),
        ];
        let base = planes.as_mut_ptr().add(o0 * plane);
        for (yk, spot) in y.into_iter().zip(at) {
            let Some(p) = spot else { continue };
            let val = _mm512_min_ps(_mm512_max_ps(add(yk, b), lo), hi);
            _mm512_mask_i32scatter_ps::<4>(base.add(p).cast(), mask, step, val);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_direct_convolution() {
        if !packs_constants() {
            return;
        }
        // Odd sizes leave half tiles at the bottom and right; the last case
        // splits the output channels over a part that is not a whole panel.
        for (c, o, h, w, pad) in [(64, 64, 14, 14, [1, 1, 1, 1]), (64, 80, 9, 7, [1, 1, 1, 1]), (70, 96, 10, 8, [0, 0, 0, 0]), (64, 64, 7, 9, [1, 0, 1, 0])] {
            let x: Vec<f32> = (0..c * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let wt: Vec<f32> = (0..o * c * 9).map(|i| ((i * 53 % 97) as f32 - 48.0) / 200.0).collect();
            let bias: Vec<f32> = (0..o).map(|i| i as f32 / 10.0 - 3.0).collect();
            let (want, ho, wo) = super::super::tests::direct(&x, c, h, w, &wt, o, pad);
            let u = transform_weights(&wt, o, c);
            let mut got = vec![0.0; o * ho * wo];
            let mut scratch = vec![0.0; scratch_len(c, o, ho, wo)];
            let epi = Epilogue { row_bias: Some(&bias), clamp: Some((0.0, f32::INFINITY)), ..Default::default() };
            conv3x3(&x, [c, h, w], &u, o, [pad[0], pad[1]], &mut got, [ho, wo], epi, &mut scratch);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                let b = (b + bias[i / (ho * wo)]).max(0.0);
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{c}->{o} {h}x{w}: {a} vs {b} at {i}");
            }
            // A fused residual, stored and rounded as separate ops would:
            // rnd(max(rnd(rnd(v + bias) + r), 0)).
            let res: Vec<f32> = (0..want.len()).map(|i| ((i * 29 % 61) as f32 - 30.0) / 8.0).collect();
            let residual = Some(crate::sgemm::Residual { data: &res, round: true });
            conv3x3(&x, [c, h, w], &u, o, [pad[0], pad[1]], &mut got, [ho, wo], Epilogue { residual, round: true, ..epi }, &mut scratch);
            let rnd = |v: f32| half::f16::from_f32(v).to_f32();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                let b = rnd(rnd(rnd(b + bias[i / (ho * wo)]) + res[i]).max(0.0));
                // f32 differences of a few ulps may round to the next fp16 value.
                assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "{c}->{o} {h}x{w} with residual: {a} vs {b} at {i}");
            }
        }
    }
}
