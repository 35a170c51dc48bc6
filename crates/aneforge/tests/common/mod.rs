//! Graph pieces the integration tests share: deterministic values, fp16
//! constants made of them, and a conv with a constant weight and bias.

use aneforge::builder::{self as b, ConvArgs, PadSpec};
use aneforge::{DType, Tensor};

/// `n` values in about ±0.37, a different sequence per seed.
pub fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| (((i * 7919 + seed * 104729) % 2003) as f32 / 1001.5 - 1.0) * 0.37).collect()
}

pub fn konst(shape: &[usize], seed: usize) -> Tensor {
    b::constant(values(shape.iter().product(), seed), shape.to_vec(), DType::F16).unwrap()
}

/// A k×k conv of `c` to `o` channels, padded to keep the map (at stride 1).
pub fn conv(x: &Tensor, c: usize, o: usize, k: usize, stride: usize, groups: usize) -> Tensor {
    let pad = PadSpec::Explicit([k / 2; 4]);
    let args = ConvArgs { stride: [stride, stride], pad, groups, ..ConvArgs::default() };
    b::conv(x, &konst(&[o, c / groups, k, k], 1), Some(&konst(&[o], 2)), &args).unwrap()
}
