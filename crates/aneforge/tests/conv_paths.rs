//! Every GEMM path of the sim's conv against a naive f64 convolution, at
//! f32 precision (so only summation order differs): the transposed GEMM of
//! small output maps, the im2col panel source at strides 1 and 2 with
//! padding on some sides, the unfolded input written out whole (strided
//! 1x1 convs and patch embeddings, on both the plain and the transposed
//! GEMM), and the 1x1 path. The pytest op suite checks the
//! same op against numpy, but at shapes too small to reach most of these.

use aneforge::builder::{self as b, ConvArgs, PadSpec};
use aneforge::{compile, CompileOptions, DType, Precision};

#[allow(clippy::too_many_arguments)]
fn naive(x: &[f32], [c, h, w]: [usize; 3], wt: &[f32], o: usize, [kh, kw]: [usize; 2], bias: &[f32], s: usize, pad: [usize; 4]) -> (Vec<f32>, [usize; 2]) {
    let oh = (h + pad[0] + pad[2] - kh) / s + 1;
    let ow = (w + pad[1] + pad[3] - kw) / s + 1;
    let mut out = vec![0.0; o * oh * ow];
    for co in 0..o {
        for y in 0..oh {
            for xx in 0..ow {
                let mut acc = bias[co] as f64;
                for ci in 0..c {
                    for i in 0..kh {
                        for j in 0..kw {
                            let (iy, ix) = ((y * s + i) as isize - pad[0] as isize, (xx * s + j) as isize - pad[1] as isize);
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                acc += x[(ci * h + iy as usize) * w + ix as usize] as f64 * wt[((co * c + ci) * kh + i) * kw + j] as f64;
                            }
                        }
                    }
                }
                out[(co * oh + y) * ow + xx] = acc.max(0.0) as f32;
            }
        }
    }
    (out, [oh, ow])
}

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| (((i * 7919 + seed * 104729) % 2003) as f32 / 1001.5 - 1.0) * 0.5).collect()
}

#[test]
fn conv_matches_a_naive_convolution_on_every_gemm_path() {
    // (c, o, h, w, k, stride, pad): 7x7 maps take the transposed GEMM
    // (64 and 96 channels), the others the im2col panel source; then
    // strided 1x1 convs to a 7x7 map (transposed) and to 14x14, and a 4x4
    // stride-4 patch embedding, which unfold their input whole; the last
    // is a 1x1 conv over a strided-by-nothing input.
    let cases = [
        (32, 64, 7, 7, 3, 1, [1, 1, 1, 1]),
        (16, 96, 14, 14, 3, 2, [1, 1, 1, 1]),
        (24, 64, 9, 8, 3, 1, [0, 1, 1, 0]),
        (8, 40, 30, 29, 5, 2, [2, 2, 2, 2]),
        (3, 16, 40, 40, 7, 2, [3, 3, 3, 3]),
        (48, 64, 14, 14, 1, 2, [0, 0, 0, 0]),
        (16, 32, 28, 28, 1, 2, [0, 0, 0, 0]),
        (3, 32, 32, 32, 4, 4, [0, 0, 0, 0]),
        (48, 64, 12, 12, 1, 1, [0, 0, 0, 0]),
    ];
    for (c, o, h, w, k, s, pad) in cases {
        let x = b::input(&[1, c, h, w], DType::F16, Some("x")).unwrap();
        let wt = values(o * c * k * k, 1);
        let bias = values(o, 2);
        let wc = b::constant(wt.clone(), vec![o, c, k, k], DType::F16).unwrap();
        let bc = b::constant(bias.clone(), vec![o], DType::F16).unwrap();
        let args = ConvArgs { stride: [s, s], pad: PadSpec::Explicit(pad), ..ConvArgs::default() };
        let y = b::relu(&b::conv(&x, &wc, Some(&bc), &args).unwrap()).unwrap();
        let net = compile(&[y], CompileOptions { precision: Precision::Fp32, ..CompileOptions::default() }).unwrap();
        let p = &net.program;
        let mut st = p.new_state();
        let xv = values(c * h * w, 3);
        p.input_mut(&mut st, 0).copy_from_slice(&xv);
        p.run(&mut st);
        let (want, [oh, ow]) = naive(&xv, [c, h, w], &wt, o, [k, k], &bias, s, pad);
        let got = p.output(&st, 0);
        assert_eq!(got.len(), o * oh * ow);
        for (i, (&g, &e)) in got.iter().zip(&want).enumerate() {
            assert!((g - e).abs() <= 1e-4 * (1.0 + e.abs()), "c{c} o{o} {h}x{w} k{k} s{s}: element {i}: {g} vs {e}");
        }
    }
}
