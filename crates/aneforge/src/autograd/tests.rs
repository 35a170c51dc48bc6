//! Each rule against central finite differences of the forward, in f32.
//! (The Python suite covers every op; these keep the core honest alone.)

use crate::builder as b;
use crate::{compile, CompileOptions, DType, Precision, Tensor};

fn run(outs: &[Tensor], x: &[f32]) -> Vec<Vec<f32>> {
    let opts = CompileOptions { precision: Precision::Fp32, ..Default::default() };
    let c = compile(outs, opts).unwrap();
    let mut st = c.program.new_state();
    c.program.input_mut(&mut st, 0).copy_from_slice(x);
    c.program.run(&mut st);
    (0..outs.len()).map(|k| c.program.output(&st, k).to_vec()).collect()
}

/// d sum(f(x) * w) / dx by autograd vs central differences.
fn check(shape: &[usize], f: impl Fn(&Tensor) -> Tensor) {
    let n: usize = shape.iter().product();
    let x0: Vec<f32> = (0..n).map(|i| ((i * 7919 % 17) as f32 / 17.0 - 0.45) * 1.7).collect();
    let x = b::input(shape, DType::F16, None).unwrap();
    let y = f(&x);
    let m: usize = y.shape().iter().product();
    let w = b::constant((0..m).map(|i| ((i * 31 % 11) as f32 - 5.0) / 7.0).collect(), y.shape().to_vec(), DType::F16).unwrap();
    let loss = b::reduce(&b::mul(&y, &w).unwrap(), crate::ops::ReduceKind::Sum, None, false).unwrap();
    let g = crate::grad(&loss, std::slice::from_ref(&x)).unwrap().remove(0);
    let r = run(&[loss.clone(), g], &x0);
    let eps = 1e-2f32;
    for i in 0..n {
        let mut xp = x0.clone();
        xp[i] += eps;
        let mut xm = x0.clone();
        xm[i] -= eps;
        let fd = (run(std::slice::from_ref(&loss), &xp)[0][0] - run(std::slice::from_ref(&loss), &xm)[0][0]) / (2.0 * eps);
        assert!((fd - r[1][i]).abs() <= 2e-2 * (1.0 + fd.abs()), "element {i}: fd {fd} vs autograd {}", r[1][i]);
    }
}

#[test]
fn matmul_broadcast_grad_matches_finite_differences() {
    let w = b::constant((0..12).map(|i| i as f32 / 10.0 - 0.5).collect(), vec![4, 3], DType::F16).unwrap();
    check(&[2, 2, 4], |x| b::matmul(x, &w).unwrap());
}

#[test]
fn strided_grouped_conv_grad_matches_finite_differences() {
    use crate::builder::{ConvArgs, PadSpec};
    let w = b::parameter((0..36).map(|i| (i as f32 * 0.37).sin()).collect(), vec![4, 1, 3, 3], None).unwrap();
    let args = ConvArgs { stride: [2, 2], pad: PadSpec::Explicit([1, 1, 0, 0]), dilation: [1, 1], groups: 2 };
    check(&[1, 2, 5, 6], |x| b::conv(x, &w, None, &args).unwrap());
}

#[test]
fn overlapping_max_pool_grad_matches_finite_differences() {
    check(&[1, 1, 5, 5], |x| b::max_pool(x, [3, 3], Some([2, 2]), &crate::builder::PadSpec::Explicit([1; 4]), false).unwrap());
}

#[test]
fn layer_norm_and_softmax_grads_match_finite_differences() {
    check(&[3, 5], |x| b::softmax(&b::layer_norm(x, &[-1], None, None, 1e-5).unwrap(), -1).unwrap());
}
