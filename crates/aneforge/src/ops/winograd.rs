//! Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions: 16 GEMMs of
//! [O, C] x [C, tiles] replace one [O, 9C] x [9C, HW] GEMM, 2.25x fewer
//! multiplies. The transforms only use ±1 and ½, so the f32 result differs
//! from direct convolution by a few f32 ulps — far below the fp16 rounding
//! that follows.

use gemm::Parallelism;
use rayon::prelude::*;

/// When the Winograd path pays off: enough channels for the GEMMs to
/// dominate the transforms.
pub(crate) fn applies(c: usize, o: usize, ho: usize, wo: usize) -> bool {
    c >= 16 && o >= 16 && ho * wo >= 64
}

/// Scratch floats: U [16, O, C] + V [16, C, T] + M [16, O, T].
pub(crate) fn scratch_len(c: usize, o: usize, ho: usize, wo: usize) -> usize {
    let t = ho.div_ceil(2) * wo.div_ceil(2);
    16 * (o * c + c * t + o * t)
}

/// One image: x [C, H, W] (unpadded), w [O, C, 3, 3], out [O, Ho, Wo].
/// `pad` is (top, left).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv3x3(x: &[f32], c: usize, h: usize, w: usize, wt: &[f32], o: usize, pad: [usize; 2], out: &mut [f32], ho: usize, wo: usize, scratch: &mut [f32]) {
    let (th, tw) = (ho.div_ceil(2), wo.div_ceil(2));
    let t = th * tw;
    let (u, rest) = scratch.split_at_mut(16 * o * c);
    let (v, m) = rest.split_at_mut(16 * c * t);
    let m = &mut m[..16 * o * t];

    // U = G g Gᵀ, G = [[1,0,0],[½,½,½],[½,-½,½],[0,0,1]], laid out [16][O][C].
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
        for r in 0..4 {
            let (a, b, cc) = (tmp[r][0], tmp[r][1], tmp[r][2]);
            let row = [a, 0.5 * (a + b + cc), 0.5 * (a - b + cc), cc];
            for (k, &val) in row.iter().enumerate() {
                // SAFETY: each i writes its own slot of each of the 16 matrices.
                unsafe { *u_ptr.at((r * 4 + k) * oc + i) = val };
            }
        }
    });

    // V = Bᵀ d B per (channel, tile), Bᵀ = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]].
    let ct = c * t;
    let v_ptr = SendPtr(v.as_mut_ptr());
    (0..c).into_par_iter().for_each(|ci| {
        let src = &x[ci * h * w..(ci + 1) * h * w];
        for ty in 0..th {
            for tx in 0..tw {
                let mut d = [[0.0f32; 4]; 4];
                let y0 = (2 * ty) as isize - pad[0] as isize;
                let x0 = (2 * tx) as isize - pad[1] as isize;
                for (r, row) in d.iter_mut().enumerate() {
                    let yy = y0 + r as isize;
                    if yy < 0 || yy >= h as isize {
                        continue;
                    }
                    for (k, val) in row.iter_mut().enumerate() {
                        let xx = x0 + k as isize;
                        if xx >= 0 && xx < w as isize {
                            *val = src[yy as usize * w + xx as usize];
                        }
                    }
                }
                let mut tmp = [[0.0f32; 4]; 4];
                for k in 0..4 {
                    tmp[0][k] = d[0][k] - d[2][k];
                    tmp[1][k] = d[1][k] + d[2][k];
                    tmp[2][k] = d[2][k] - d[1][k];
                    tmp[3][k] = d[1][k] - d[3][k];
                }
                let tile = ty * tw + tx;
                for r in 0..4 {
                    let row = [tmp[r][0] - tmp[r][2], tmp[r][1] + tmp[r][2], tmp[r][2] - tmp[r][1], tmp[r][1] - tmp[r][3]];
                    for (k, &val) in row.iter().enumerate() {
                        // SAFETY: each channel writes its own rows of V.
                        unsafe { *v_ptr.at((r * 4 + k) * ct + ci * t + tile) = val };
                    }
                }
            }
        }
    });

    // M_k = U_k V_k for the 16 positions of the transformed tile.
    let (u, v) = (&*u, &*v);
    m.par_chunks_mut(o * t).enumerate().for_each(|(k, mk)| {
        // SAFETY: U_k [O, C], V_k [C, T], M_k [O, T], all row-major.
        unsafe {
            gemm::gemm(
                o, t, c, mk.as_mut_ptr(), 1, t as isize, false, u[k * oc..].as_ptr(), 1, c as isize, v[k * ct..].as_ptr(), 1,
                t as isize, 0.0, 1.0, false, false, false, Parallelism::None,
            );
        }
    });

    // Y = Aᵀ M A, Aᵀ = [[1,1,1,0],[0,1,-1,-1]].
    let m = &*m;
    let ot = o * t;
    out.par_chunks_mut(ho * wo).enumerate().for_each(|(oi, dst)| {
        for ty in 0..th {
            for tx in 0..tw {
                let tile = ty * tw + tx;
                let at = |r: usize, k: usize| m[(r * 4 + k) * ot + oi * t + tile];
                let mut tmp = [[0.0f32; 4]; 2];
                for k in 0..4 {
                    tmp[0][k] = at(0, k) + at(1, k) + at(2, k);
                    tmp[1][k] = at(1, k) - at(2, k) - at(3, k);
                }
                for r in 0..2 {
                    let y = 2 * ty + r;
                    if y >= ho {
                        continue;
                    }
                    let vals = [tmp[r][0] + tmp[r][1] + tmp[r][2], tmp[r][1] - tmp[r][2] - tmp[r][3]];
                    for (k, &val) in vals.iter().enumerate() {
                        let xx = 2 * tx + k;
                        if xx < wo {
                            dst[y * wo + xx] = val;
                        }
                    }
                }
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
            conv3x3(&x, c, h, w, &wt, o, [pad[0], pad[1]], &mut got, ho, wo, &mut scratch);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }
}
