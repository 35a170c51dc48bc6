//! A program whose constants fit the last-level cache tells its GEMMs
//! that weights are found there between calls; a larger one does not.

use aneforge::builder as b;
use aneforge::{compile, CompileOptions, DType};

fn weights_cached(k: usize, n: usize) -> bool {
    let x = b::input(&[8, k], DType::F16, Some("x")).unwrap();
    let w = b::constant(vec![0.5; k * n], vec![k, n], DType::F16).unwrap();
    let net = compile(&[b::matmul(&x, &w).unwrap()], CompileOptions::default()).unwrap();
    net.program.ctx.weights_cached
}

#[test]
fn only_programs_whose_weights_fit_the_cache_count_on_it() {
    assert!(weights_cached(256, 256), "256 KB of weights");
    // 64 MB as f32, more than half of any last-level cache one core sees.
    assert!(!weights_cached(4096, 4096), "64 MB of weights");
}
