//! Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions: 16 GEMMs of
//! [O, C] x [C, tiles] replace one [O, 9C] x [9C, HW] GEMM, 2.25x fewer
//! multiplies. The transforms only use ±1 and ½, so the f32 result differs
//! from direct convolution by a few f32 ulps — far below the fp16 rounding
//! that follows.

use crate::sgemm::{sgemm, Epilogue, Mat, Operand};
use rayon::prelude::*;

/// When the Winograd path pays off: enough channels for the GEMMs to
/// dominate the transforms.
pub(crate) fn applies(c: usize, o: usize, ho: usize, wo: usize) -> bool {
    c >= 16 && o >= 16 && ho * wo >= 64
}

/// Scratch floats: U [16, O, C] + V [16, C, T] + M [16, O, T], plus per
/// channel 8 padded rows for the input transform.
pub(crate) fn scratch_len(c: usize, o: usize, ho: usize, wo: usize) -> usize {
    let t = ho.div_ceil(2) * wo.div_ceil(2);
    16 * (o * c + c * t + o * t) + c * 8 * row_len(wo)
}

/// Padded input row length covering every tile of an output row.
fn row_len(wo: usize) -> usize {
    2 * wo.div_ceil(2) + 2
}

/// One image: x [C, H, W] (unpadded), w [O, C, 3, 3], out [O, Ho, Wo].
/// `pad` is (top, left).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv3x3(x: &[f32], c: usize, h: usize, w: usize, wt: &[f32], prepared: Option<&[f32]>, o: usize, pad: [usize; 2], out: &mut [f32], ho: usize, wo: usize, scratch: &mut [f32]) {
    let (th, tw) = (ho.div_ceil(2), wo.div_ceil(2));
    let t = th * tw;
    let (u, rest) = scratch.split_at_mut(16 * o * c);
    let (v, rest) = rest.split_at_mut(16 * c * t);
    let (m, rows_scratch) = rest.split_at_mut(16 * o * t);

    // U = G g Gᵀ, laid out [16][O][C]: precomputed for constant weights.
    let oc = o * c;
    let u: &[f32] = match prepared {
        Some(p) => p,
        None => {
            transform_weights_into(wt, o, c, u);
            u
        }
    };

    // V = Bᵀ d B per (channel, tile), Bᵀ = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]].
    // Done a row of tiles at a time: the column pass runs over whole padded
    // rows and the row pass across tiles, so both loops vectorise.
    let ct = c * t;
    let lp = row_len(wo);
    let v_ptr = SendPtr(v.as_mut_ptr());
    let rows_all = &mut rows_scratch[..c * 8 * lp];
    rows_all.par_chunks_mut(8 * lp).enumerate().for_each(|(ci, buf)| {
        let src = &x[ci * h * w..(ci + 1) * h * w];
        let (d, tm) = buf.split_at_mut(4 * lp);
        for ty in 0..th {
            let y0 = (2 * ty) as isize - pad[0] as isize;
            for r in 0..4 {
                let row = &mut d[r * lp..(r + 1) * lp];
                row.fill(0.0);
                let yy = y0 + r as isize;
                if yy < 0 || yy >= h as isize {
                    continue;
                }
                let s = &src[yy as usize * w..(yy as usize + 1) * w];
                // Column j of the padded row is input column j - pad_left.
                let lo = pad[1].min(lp);
                let n = w.min(lp - lo);
                row[lo..lo + n].copy_from_slice(&s[..n]);
            }
            let (d0, rest) = d.split_at(lp);
            let (d1, rest) = rest.split_at(lp);
            let (d2, d3) = rest.split_at(lp);
            let (t0, rest) = tm.split_at_mut(lp);
            let (t1, rest) = rest.split_at_mut(lp);
            let (t2, t3) = rest.split_at_mut(lp);
            for j in 0..lp {
                t0[j] = d0[j] - d2[j];
                t1[j] = d1[j] + d2[j];
                t2[j] = d2[j] - d1[j];
                t3[j] = d1[j] - d3[j];
            }
            for (r, tr) in [&*t0, &*t1, &*t2, &*t3].into_iter().enumerate() {
                let base = ci * t + ty * tw;
                // SAFETY: channel ci owns V[k][ci*t .. (ci+1)*t] for every k, so
                // these four rows are disjoint from every other task's writes.
                let mut dst: [&mut [f32]; 4] =
                    std::array::from_fn(|k| unsafe { std::slice::from_raw_parts_mut(v_ptr.at((r * 4 + k) * ct + base), tw) });
                let [v0, v1, v2, v3] = &mut dst;
                input_row(tr, v0, v1, v2, v3);
            }
        }
    });

    // M_k = U_k V_k for the 16 positions of the transformed tile.
    let v = &*v;
    m.par_chunks_mut(o * t).enumerate().for_each(|(k, mk)| {
        // SAFETY: U_k [O, C], V_k [C, T], M_k [O, T], all row-major.
        unsafe {
            let (a, b) = (Operand::Strided(Mat::rows(&u[k * oc..], c)), Operand::Strided(Mat::rows(&v[k * ct..], t)));
            sgemm(o, t, c, a, b, mk.as_mut_ptr(), t, false, Epilogue::default(), false);
        }
    });

    // Y = Aᵀ M A, Aᵀ = [[1,1,1,0],[0,1,-1,-1]], a row of tiles at a time.
    let m = &*m;
    let ot = o * t;
    out.par_chunks_mut(ho * wo).enumerate().for_each(|(oi, dst)| {
        for ty in 0..th {
            let base = oi * t + ty * tw;
            let mk: [&[f32]; 16] = std::array::from_fn(|rk| &m[rk * ot + base..rk * ot + base + tw]);
            for r in 0..2 {
                let y = 2 * ty + r;
                if y < ho {
                    output_row(r, &mk, &mut dst[y * wo..(y + 1) * wo]);
                }
            }
        }
    });
}

/// One transformed row across all tiles: (a, b, c, d) at columns 2tx..2tx+3
/// become (a − c, b + c, c − b, b − d). Separate slices let it vectorise.
#[inline(never)]
fn input_row(tr: &[f32], v0: &mut [f32], v1: &mut [f32], v2: &mut [f32], v3: &mut [f32]) {
    let tw = v0.len();
    for tx in 0..tw {
        let (a, b, c, d) = (tr[2 * tx], tr[2 * tx + 1], tr[2 * tx + 2], tr[2 * tx + 3]);
        v0[tx] = a - c;
        v1[tx] = b + c;
        v2[tx] = c - b;
        v3[tx] = b - d;
    }
}

/// Output row `r` (0 or 1) of every tile in a row of tiles, from the 16
/// GEMM results: Aᵀ M A, staged through stack buffers so loops vectorise.
#[inline(never)]
fn output_row(r: usize, mk: &[&[f32]; 16], drow: &mut [f32]) {
    const B: usize = 64;
    let tw = mk[0].len();
    let wo = drow.len();
    let mut c = [[0.0f32; B]; 4];
    let mut t0 = 0;
    while t0 < tw {
        let n = B.min(tw - t0);
        for (k, ck) in c.iter_mut().enumerate() {
            let (a, b, cc, d) = (&mk[k][t0..t0 + n], &mk[4 + k][t0..t0 + n], &mk[8 + k][t0..t0 + n], &mk[12 + k][t0..t0 + n]);
            if r == 0 {
                for j in 0..n {
                    ck[j] = a[j] + b[j] + cc[j];
                }
            } else {
                for j in 0..n {
                    ck[j] = b[j] - cc[j] - d[j];
                }
            }
        }
        for j in 0..n {
            let x = 2 * (t0 + j);
            if x + 1 < wo {
                drow[x] = c[0][j] + c[1][j] + c[2][j];
                drow[x + 1] = c[1][j] - c[2][j] - c[3][j];
            } else if x < wo {
                drow[x] = c[0][j] + c[1][j] + c[2][j];
            }
        }
        t0 += n;
    }
}

/// U = G g Gᵀ for every (o, c), G = [[1,0,0],[½,½,½],[½,-½,½],[0,0,1]].
pub(crate) fn transform_weights(wt: &[f32], o: usize, c: usize) -> Vec<f32> {
    let mut u = vec![0.0; 16 * o * c];
    transform_weights_into(wt, o, c, &mut u);
    u
}

fn transform_weights_into(wt: &[f32], o: usize, c: usize, u: &mut [f32]) {
    let oc = o * c;
    let u_ptr = SendPtr(u.as_mut_ptr());
    (0..oc).into_par_iter().with_min_len(64).for_each(|i| {
        let g = &wt[i * 9..i * 9 + 9];
        let mut tmp = [[0.0f32; 3]; 4];
        for col in 0..3 {
            let (a, b, cc) = (g[col], g[3 + col], g[6 + col]);
            tmp[0][col] = a;
            tmp[1][col] = 0.5 * (a + b + cc);
            tmp[2][col] = 0.5 * (a - b + cc);
            tmp[3][col] = cc;
        }
        for (r, t) in tmp.iter().enumerate() {
            let (a, b, cc) = (t[0], t[1], t[2]);
            let row = [a, 0.5 * (a + b + cc), 0.5 * (a - b + cc), cc];
            for (k, &val) in row.iter().enumerate() {
                // SAFETY: each i writes its own slot of each of the 16 matrices.
                unsafe { *u_ptr.at((r * 4 + k) * oc + i) = val };
            }
        }
    });
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

impl SendPtr {
    /// # Safety
    /// `i` must be in bounds of the buffer the pointer came from.
    unsafe fn at(self, i: usize) -> *mut f32 {
        self.0.add(i)
    }
}
// SAFETY: used only for disjoint writes from parallel tasks (see call sites).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct convolution, the textbook definition, as the reference.
    fn direct(x: &[f32], c: usize, h: usize, w: usize, wt: &[f32], o: usize, pad: [usize; 4]) -> (Vec<f32>, usize, usize) {
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
        for (c, o, h, w, pad) in [(16, 16, 9, 7, [1, 1, 1, 1]), (17, 20, 8, 8, [0, 0, 0, 0]), (16, 32, 11, 5, [1, 0, 1, 0])] {
            let x: Vec<f32> = (0..c * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let wt: Vec<f32> = (0..o * c * 9).map(|i| ((i * 53 % 97) as f32 - 48.0) / 200.0).collect();
            let (want, ho, wo) = direct(&x, c, h, w, &wt, o, pad);
            let mut got = vec![0.0; o * ho * wo];
            let mut scratch = vec![0.0; scratch_len(c, o, ho, wo)];
            conv3x3(&x, c, h, w, &wt, None, o, [pad[0], pad[1]], &mut got, ho, wo, &mut scratch);
            let u = transform_weights(&wt, o, c);
            let mut got2 = vec![0.0; o * ho * wo];
            conv3x3(&x, c, h, w, &wt, Some(&u), o, [pad[0], pad[1]], &mut got2, ho, wo, &mut scratch);
            assert_eq!(got, got2);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }
}
