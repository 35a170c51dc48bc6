//! A residual add (and the activation after it) folded into the conv that
//! feeds it gives the same bits as the three ops run apart, on every conv
//! path, at fp16 (the conv's result and the sum each rounded, as stored)
//! and f32 precision, and with IEEE numerics (where relu is not a clamp,
//! so it runs after the kernel). The unfused program is the same graph
//! compiled without the rewrite passes; numpy checks the op itself in
//! tests/test_ops.py (the `fused-conv_residual_relu` cases).

mod common;

use aneforge::builder as b;
use aneforge::{compile, CompileOptions, DType, Numerics, Precision, Tensor};
use common::{conv, values};

/// Output of `act(conv(x) + skip)` and the program's step count.
fn run(x_shape: &[usize], conv: &dyn Fn(&Tensor) -> Tensor, act: Option<&str>, opts: CompileOptions) -> (Vec<f32>, usize) {
    let x = b::input(x_shape, DType::F16, Some("x")).unwrap();
    let y = conv(&x);
    let skip = b::input(y.shape(), DType::F16, Some("skip")).unwrap();
    let sum = b::add(&y, &skip).unwrap();
    let out = match act {
        Some("relu") => b::relu(&sum).unwrap(),
        Some("relu6") => b::relu6(&sum).unwrap(),
        _ => sum,
    };
    let net = compile(&[out], opts).unwrap();
    let p = &net.program;
    let mut st = p.new_state();
    let xv = values(x_shape.iter().product(), 9);
    p.input_mut(&mut st, 0).copy_from_slice(&xv);
    // A skip of the conv's size: large enough to flip signs under relu.
    let sv: Vec<f32> = values(y.shape().iter().product(), 11).iter().map(|v| v * 3.0).collect();
    p.input_mut(&mut st, 1).copy_from_slice(&sv);
    p.run(&mut st);
    (p.output(&st, 0).to_vec(), p.num_steps())
}

fn check(what: &str, x_shape: &[usize], conv: impl Fn(&Tensor) -> Tensor) {
    for precision in [Precision::Fp16, Precision::Fp32] {
        for numerics in [Numerics::Ane, Numerics::Ieee] {
            for act in [None, Some("relu"), Some("relu6")] {
                let opts = |optimize| CompileOptions { precision, numerics, optimize, ..CompileOptions::default() };
                let (fused, n_fused) = run(x_shape, &conv, act, opts(true));
                let (apart, n_apart) = run(x_shape, &conv, act, opts(false));
                let case = format!("{what}, {precision:?}, {numerics:?}, {act:?}");
                assert!(n_fused < n_apart, "{case}: the add was not fused ({n_fused} steps vs {n_apart})");
                assert_eq!(fused.len(), apart.len());
                for (i, (a, e)) in fused.iter().zip(&apart).enumerate() {
                    assert_eq!(a.to_bits(), e.to_bits(), "{case}: element {i}: fused {a} vs apart {e}");
                }
            }
        }
    }
}

#[test]
fn a_fused_residual_matches_the_ops_apart_on_every_conv_path() {
    // The GEMM (residual in the kernel's epilogue), threaded or not; a
    // batch of two; grouped.
    check("conv 3x3 s2", &[1, 8, 15, 15], |x| conv(x, 8, 24, 3, 2, 1));
    check("conv 1x1, threaded", &[2, 64, 20, 20], |x| conv(x, 64, 96, 1, 1, 1));
    check("grouped conv", &[1, 16, 9, 9], |x| conv(x, 16, 32, 3, 1, 4));
    // 7x7 maps: the transposed GEMM, the residual after the transpose.
    check("conv 3x3 on a 7x7 map", &[1, 32, 7, 7], |x| conv(x, 32, 64, 3, 1, 1));
    // Winograd, in bands and split by step.
    check("winograd conv, bands", &[1, 16, 40, 40], |x| conv(x, 16, 16, 3, 1, 1));
    check("winograd conv, by step", &[2, 64, 24, 24], |x| conv(x, 64, 64, 3, 1, 1));
    check("depthwise conv", &[1, 16, 12, 12], |x| conv(x, 16, 16, 3, 1, 16));
}
