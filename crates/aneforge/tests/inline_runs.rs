//! Small programs run on the caller's thread; large ones go to the pool.
//! Both give the product a naive f64 reference gives (at f32 precision, so
//! only summation order differs).

use aneforge::builder as b;
use aneforge::{compile, CompileOptions, DType, Precision};

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| (((i * 7919 + seed * 104729) % 2003) as f32 / 1001.5 - 1.0) * 0.5).collect()
}

/// relu(x · W) for x [m, k], W [k, n]: whether the program runs inline, and its error.
fn mlp(m: usize, k: usize, n: usize) -> (bool, f32) {
    let x = b::input(&[m, k], DType::F16, Some("x")).unwrap();
    let w = values(k * n, 1);
    let wc = b::constant(w.clone(), vec![k, n], DType::F16).unwrap();
    let y = b::relu(&b::matmul(&x, &wc).unwrap()).unwrap();
    let net = compile(&[y], CompileOptions { precision: Precision::Fp32, ..CompileOptions::default() }).unwrap();
    let p = &net.program;
    let mut st = p.new_state();
    let xv = values(m * k, 2);
    p.input_mut(&mut st, 0).copy_from_slice(&xv);
    p.run(&mut st);
    let got = p.output(&st, 0);
    let mut worst = 0.0f32;
    for i in 0..m {
        for j in 0..n {
            let want = (0..k).map(|p| xv[i * k + p] as f64 * w[p * n + j] as f64).sum::<f64>().max(0.0) as f32;
            worst = worst.max((got[i * n + j] - want).abs() / (1.0 + want.abs()));
        }
    }
    (p.runs_inline(), worst)
}

#[test]
fn small_programs_run_inline_and_large_ones_in_the_pool() {
    let (inline, err) = mlp(4, 32, 16);
    assert!(inline, "a 4x32x16 product should run on the caller's thread");
    assert!(err < 1e-5, "inline run off by {err}");
    let (inline, err) = mlp(197, 256, 256);
    assert!(!inline, "a 197x256x256 product should go to the pool");
    assert!(err < 1e-5, "pooled run off by {err}");
}
