//! Ops that round their own output (`OpDef::rounds_output`) leave fp16
//! values in the sim's buffers on every path: the sim runs no rounding pass
//! after them, so a path that forgot would leave f32 values for the next op
//! to read. Each program's output buffer is read before the port's fp16
//! conversion (which would hide it), and compared with the same program at
//! f32 precision, which must not be rounded.

mod common;

use aneforge::builder as b;
use aneforge::{compile, CompileOptions, DType, Precision, Tensor};
use common::{conv, konst, values};

/// Runs `y(x)` at fp16 and at f32 precision on the same input; returns both outputs.
fn run(x_shape: &[usize], y: impl Fn(&Tensor) -> Tensor) -> (Vec<f32>, Vec<f32>) {
    let outs: Vec<Vec<f32>> = [Precision::Fp16, Precision::Fp32]
        .into_iter()
        .map(|precision| {
            let x = b::input(x_shape, DType::F16, Some("x")).unwrap();
            let net = compile(&[y(&x)], CompileOptions { precision, ..CompileOptions::default() }).unwrap();
            let p = &net.program;
            let mut st = p.new_state();
            let xv = values(x_shape.iter().product(), 9);
            p.input_mut(&mut st, 0).copy_from_slice(&xv);
            p.run(&mut st);
            p.output(&st, 0).to_vec()
        })
        .collect();
    (outs[0].clone(), outs[1].clone())
}

fn is_f16(v: f32) -> bool {
    half::f16::from_f32(v).to_f32().to_bits() == v.to_bits()
}

fn check(what: &str, x_shape: &[usize], y: impl Fn(&Tensor) -> Tensor) {
    let (h, f) = run(x_shape, y);
    assert_eq!(h.len(), f.len());
    for (i, (&a, &e)) in h.iter().zip(&f).enumerate() {
        assert!(is_f16(a), "{what}: element {i} = {a} is not an fp16 value");
        assert!((a - e).abs() <= 2e-3 * (1.0 + e.abs()), "{what}: element {i}: {a} (fp16) vs {e} (f32)");
    }
    assert!(!f.iter().all(|&v| is_f16(v)), "{what}: the f32 program rounded too");
}

#[test]
fn self_rounding_ops_leave_fp16_values_on_every_path() {
    // GEMM conv with its clamp in the epilogue, and with an activation
    // that is not a clamp (applied after the GEMM, then rounded).
    check("conv 3x3 s2 + relu", &[1, 8, 15, 15], |x| b::relu(&conv(x, 8, 24, 3, 2, 1)).unwrap());
    check("conv 3x3 s2 + gelu", &[1, 8, 15, 15], |x| b::gelu(&conv(x, 8, 24, 3, 2, 1), "tanh").unwrap());
    check("conv 1x1", &[1, 32, 10, 10], |x| conv(x, 32, 40, 1, 1, 1));
    // 7x7 maps: the transposed GEMM; 24x24 at stride 1: Winograd (36 tiles).
    check("conv 3x3 on a 7x7 map", &[1, 32, 7, 7], |x| conv(x, 32, 64, 3, 1, 1));
    check("winograd conv", &[1, 16, 24, 24], |x| conv(x, 16, 16, 3, 1, 1));
    check("depthwise conv", &[1, 16, 12, 12], |x| conv(x, 16, 16, 3, 1, 16));
    check("matmul", &[20, 48], |x| b::matmul(x, &konst(&[48, 36], 3)).unwrap());
    check("batched matmul", &[4, 20, 48], |x| b::matmul(x, &b::transpose(x, &[0, 2, 1]).unwrap()).unwrap());
    check("linear + gelu", &[20, 48], |x| b::gelu(&b::linear(x, &konst(&[36, 48], 4), Some(&konst(&[36], 5))).unwrap(), "exact").unwrap());
    check("softmax, last axis", &[6, 50], |x| b::softmax(x, -1).unwrap());
    check("softmax, inner axis", &[6, 50, 3], |x| b::softmax(x, 1).unwrap());
    check("layer_norm", &[6, 50], |x| b::layer_norm(x, &[-1], Some(&konst(&[50], 6)), Some(&konst(&[50], 7)), 1e-5).unwrap());
}
