//! The torchvision model zoo built natively on the core builder: ResNet-18,
//! -34, -50 and ViT-B/16, from a safetensors file holding torchvision's
//! state-dict names, or from seeded random weights.
//!
//! Why native rather than through ONNX import: the graph is written once in
//! the engine's own terms (BatchNorm folded into the conv on the host, the
//! attention scale folded into the query weights, linear weights stored
//! `[in, out]` so the sim's GEMM reads them in place), with no exporter
//! patterns (5-D transposes, Gather/Squeeze chains) to undo.
//!
//! Every program takes `input` `[N, 3, 224, 224]` (fp16, already normalised
//! as torchvision expects) and returns `logits` `[N, 1000]`.

use std::path::Path;

use aneforge::builder::{self as b, ConvArgs, PadSpec};
use aneforge::{DType, Tensor};

use crate::error::{Error, Result};
use crate::weights::Weights;

/// The models of the zoo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionArch {
    /// torchvision `resnet18`: BasicBlocks [2, 2, 2, 2].
    ResNet18,
    /// torchvision `resnet34`: BasicBlocks [3, 4, 6, 3].
    ResNet34,
    /// torchvision `resnet50` (v1.5, stride on the 3×3): Bottlenecks [3, 4, 6, 3].
    ResNet50,
    /// torchvision `vit_b_16`: 16×16 patches, 12 layers of width 768, 12 heads.
    VitB16,
}

impl VisionArch {
    /// Parse `"resnet18"`, `"resnet34"`, `"resnet50"`, `"vit_b_16"`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().replace('-', "_").as_str() {
            "resnet18" => Ok(VisionArch::ResNet18),
            "resnet34" => Ok(VisionArch::ResNet34),
            "resnet50" => Ok(VisionArch::ResNet50),
            "vit_b_16" | "vit_b16" => Ok(VisionArch::VitB16),
            other => Err(Error::InvalidOption {
                option: "model",
                message: format!("`{other}`; expected one of resnet18, resnet34, resnet50, vit_b_16"),
            }),
        }
    }

    /// Output classes.
    pub const NUM_CLASSES: usize = 1000;
    /// Input side length.
    pub const IMAGE_SIZE: usize = 224;
}

/// Where parameters come from: a torchvision state dict in safetensors, or
/// a seeded generator (shapes are then taken from the architecture).
enum Source {
    File(Weights),
    Random { seed: u64 },
}

struct Params {
    source: Source,
}

impl Params {
    /// Tensor `name` with the shape the architecture needs. Random
    /// weights follow torchvision's init families: `fan_in`-scaled normal for
    /// conv/linear weights, BatchNorm identity statistics, small biases.
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        match &mut self.source {
            Source::File(w) => Ok(w.get_shaped(name, shape)?.data),
            Source::Random { seed } => {
                let n: usize = shape.iter().product();
                // One stream per tensor name (FNV-1a), so a tensor's values do
                // not depend on the order tensors are read in.
                let stream = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, c| (h ^ c as u64).wrapping_mul(0x100_0000_01b3));
                let mut rng = SplitMix(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream);
                let last = name.rsplit('.').next().unwrap_or(name);
                let v = match last {
                    "running_mean" => (0..n).map(|_| 0.1 * rng.normal()).collect(),
                    "running_var" => (0..n).map(|_| 0.5 + rng.uniform()).collect(),
                    "weight" if shape.len() == 1 => (0..n).map(|_| 0.8 + 0.4 * rng.uniform()).collect(),
                    "bias" | "in_proj_bias" => (0..n).map(|_| 0.02 * rng.normal()).collect(),
                    _ => {
                        let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
                        let std = if shape.len() >= 2 { (1.0 / fan_in as f32).sqrt() } else { 0.02 };
                        (0..n).map(|_| std * rng.normal()).collect()
                    }
                };
                Ok(v)
            }
        }
    }
}

/// A small, dependency-free generator: the same seed gives the same model
/// on every machine.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
}

fn konst(data: Vec<f32>, shape: Vec<usize>) -> Result<Tensor> {
    Ok(b::constant(data, shape, DType::F16)?)
}

/// `x @ W.T + b` with the PyTorch `[out, in]` weight stored transposed (see
/// the module docs).
fn linear(x: &Tensor, w: &[f32], bias: Option<Vec<f32>>, out_f: usize, in_f: usize, scale: f32) -> Result<Tensor> {
    let mut wt = vec![0.0f32; w.len()];
    for o in 0..out_f {
        for i in 0..in_f {
            wt[i * out_f + o] = w[o * in_f + i] * scale;
        }
    }
    let y = b::matmul(x, &konst(wt, vec![in_f, out_f])?)?;
    match bias {
        Some(bv) => Ok(b::add(&y, &konst(bv.into_iter().map(|v| v * scale).collect(), vec![out_f])?)?),
        None => Ok(y),
    }
}

/// Build `arch` for `batch` images. `weights`: a safetensors file with
/// torchvision state-dict names, or `None` for random weights from `seed`.
pub fn build(arch: VisionArch, weights: Option<&Path>, batch: usize, seed: u64) -> Result<Tensor> {
    if batch == 0 {
        return Err(Error::InvalidOption { option: "batch", message: "must be at least 1".into() });
    }
    let source = match weights {
        Some(p) => Source::File(Weights::open(p)?),
        None => Source::Random { seed },
    };
    let mut params = Params { source };
    let s = VisionArch::IMAGE_SIZE;
    let x = b::input(&[batch, 3, s, s], DType::F16, Some("input"))?;
    let logits = match arch {
        VisionArch::ResNet18 => resnet(&mut params, &x, Block::Basic, [2, 2, 2, 2])?,
        VisionArch::ResNet34 => resnet(&mut params, &x, Block::Basic, [3, 4, 6, 3])?,
        VisionArch::ResNet50 => resnet(&mut params, &x, Block::Bottleneck, [3, 4, 6, 3])?,
        VisionArch::VitB16 => vit_b_16(&mut params, &x)?,
    };
    Ok(logits.named("logits"))
}

#[derive(Clone, Copy, PartialEq)]
enum Block {
    Basic,
    Bottleneck,
}

/// conv (no bias) followed by BatchNorm, folded on the host into one conv
/// with bias: `w·s`, `β − μ·s`, `s = γ/√(σ² + 1e-5)`, in f64.
/// `dims` is (in channels, out channels, kernel size, stride).
fn conv_bn(p: &mut Params, x: &Tensor, conv: &str, bn: &str, dims: (usize, usize, usize, usize)) -> Result<Tensor> {
    let (cin, cout, k, stride) = dims;
    let w = p.get(&format!("{conv}.weight"), &[cout, cin, k, k])?;
    let gamma = p.get(&format!("{bn}.weight"), &[cout])?;
    let beta = p.get(&format!("{bn}.bias"), &[cout])?;
    let mean = p.get(&format!("{bn}.running_mean"), &[cout])?;
    let var = p.get(&format!("{bn}.running_var"), &[cout])?;
    let per = cin * k * k;
    let mut wf = vec![0.0f32; w.len()];
    let mut bf = vec![0.0f32; cout];
    for o in 0..cout {
        let s = gamma[o] as f64 / (var[o] as f64 + 1e-5).sqrt();
        for i in 0..per {
            wf[o * per + i] = (w[o * per + i] as f64 * s) as f32;
        }
        bf[o] = (beta[o] as f64 - mean[o] as f64 * s) as f32;
    }
    let args = ConvArgs { stride: [stride, stride], pad: PadSpec::Explicit([k / 2; 4]), dilation: [1, 1], groups: 1 };
    Ok(b::conv(x, &konst(wf, vec![cout, cin, k, k])?, Some(&konst(bf, vec![cout])?), &args)?)
}

fn resnet(p: &mut Params, x: &Tensor, block: Block, depths: [usize; 4]) -> Result<Tensor> {
    let expansion = if block == Block::Basic { 1 } else { 4 };
    let mut h = b::relu(&conv_bn(p, x, "conv1", "bn1", (3, 64, 7, 2))?)?;
    h = b::max_pool(&h, [3, 3], Some([2, 2]), &PadSpec::Explicit([1; 4]), false)?;
    let mut cin = 64;
    for (stage, &depth) in depths.iter().enumerate() {
        let width = 64 << stage;
        for j in 0..depth {
            let stride = if j == 0 && stage > 0 { 2 } else { 1 };
            let pre = format!("layer{}.{j}", stage + 1);
            let cout = width * expansion;
            let identity = if j == 0 && (stride != 1 || cin != cout) {
                conv_bn(p, &h, &format!("{pre}.downsample.0"), &format!("{pre}.downsample.1"), (cin, cout, 1, stride))?
            } else {
                h.clone()
            };
            let y = match block {
                Block::Basic => {
                    let y = b::relu(&conv_bn(p, &h, &format!("{pre}.conv1"), &format!("{pre}.bn1"), (cin, width, 3, stride))?)?;
                    conv_bn(p, &y, &format!("{pre}.conv2"), &format!("{pre}.bn2"), (width, width, 3, 1))?
                }
                Block::Bottleneck => {
                    let y = b::relu(&conv_bn(p, &h, &format!("{pre}.conv1"), &format!("{pre}.bn1"), (cin, width, 1, 1))?)?;
                    let y = b::relu(&conv_bn(p, &y, &format!("{pre}.conv2"), &format!("{pre}.bn2"), (width, width, 3, stride))?)?;
                    conv_bn(p, &y, &format!("{pre}.conv3"), &format!("{pre}.bn3"), (width, cout, 1, 1))?
                }
            };
            h = b::relu(&b::add(&y, &identity)?)?;
            cin = cout;
        }
    }
    let n = x.shape()[0];
    let pooled = b::reshape(&b::global_avg_pool(&h)?, &[n, cin])?;
    let classes = VisionArch::NUM_CLASSES;
    let w = p.get("fc.weight", &[classes, cin])?;
    let bias = p.get("fc.bias", &[classes])?;
    linear(&pooled, &w, Some(bias), classes, cin, 1.0)
}

fn vit_b_16(p: &mut Params, x: &Tensor) -> Result<Tensor> {
    let (d, heads, layers, mlp, patch) = (768usize, 12usize, 12usize, 3072usize, 16usize);
    let n = x.shape()[0];
    let grid = VisionArch::IMAGE_SIZE / patch;
    let tokens = grid * grid + 1;
    let dh = d / heads;
    let eps = 1e-6;

    let w = p.get("conv_proj.weight", &[d, 3, patch, patch])?;
    let bias = p.get("conv_proj.bias", &[d])?;
    let args = ConvArgs { stride: [patch, patch], ..Default::default() };
    let e = b::conv(x, &konst(w, vec![d, 3, patch, patch])?, Some(&konst(bias, vec![d])?), &args)?;
    let e = b::transpose(&b::reshape(&e, &[n, d, grid * grid])?, &[0, 2, 1])?; // [N, 196, D]
    let cls = p.get("class_token", &[1, 1, d])?;
    let cls_n: Vec<f32> = cls.iter().copied().cycle().take(n * d).collect();
    let mut h = b::concat(&[konst(cls_n, vec![n, 1, d])?, e], 1)?;
    let pos = p.get("encoder.pos_embedding", &[1, tokens, d])?;
    h = b::add(&h, &konst(pos, vec![1, tokens, d])?)?;

    let ln = |p: &mut Params, x: &Tensor, name: &str| -> Result<Tensor> {
        let g = konst(p.get(&format!("{name}.weight"), &[d])?, vec![d])?;
        let bt = konst(p.get(&format!("{name}.bias"), &[d])?, vec![d])?;
        Ok(b::layer_norm(x, &[-1], Some(&g), Some(&bt), eps)?)
    };
    let split_heads = |t: &Tensor, perm: &[usize]| -> Result<Tensor> {
        Ok(b::transpose(&b::reshape(t, &[n, tokens, heads, dh])?, perm)?)
    };
    for l in 0..layers {
        let pre = format!("encoder.layers.encoder_layer_{l}");
        let y = ln(p, &h, &format!("{pre}.ln_1"))?;
        let in_w = p.get(&format!("{pre}.self_attention.in_proj_weight"), &[3 * d, d])?;
        let in_b = p.get(&format!("{pre}.self_attention.in_proj_bias"), &[3 * d])?;
        let part = |k: usize| (in_w[k * d * d..(k + 1) * d * d].to_vec(), in_b[k * d..(k + 1) * d].to_vec());
        let scale = 1.0 / (dh as f32).sqrt();
        let (qw, qb) = part(0);
        let (kw, kb) = part(1);
        let (vw, vb) = part(2);
        let q = split_heads(&linear(&y, &qw, Some(qb), d, d, scale)?, &[0, 2, 1, 3])?;
        let kt = split_heads(&linear(&y, &kw, Some(kb), d, d, 1.0)?, &[0, 2, 3, 1])?;
        let v = split_heads(&linear(&y, &vw, Some(vb), d, d, 1.0)?, &[0, 2, 1, 3])?;
        let probs = b::softmax(&b::matmul(&q, &kt)?, -1)?;
        let ctx = b::reshape(&b::transpose(&b::matmul(&probs, &v)?, &[0, 2, 1, 3])?, &[n, tokens, d])?;
        let ow = p.get(&format!("{pre}.self_attention.out_proj.weight"), &[d, d])?;
        let ob = p.get(&format!("{pre}.self_attention.out_proj.bias"), &[d])?;
        h = b::add(&h, &linear(&ctx, &ow, Some(ob), d, d, 1.0)?)?;

        let y = ln(p, &h, &format!("{pre}.ln_2"))?;
        let (w1, b1) = mlp_param(p, &pre, 0, 1, [mlp, d])?;
        let (w2, b2) = mlp_param(p, &pre, 3, 2, [d, mlp])?;
        let f = b::gelu(&linear(&y, &w1, Some(b1), mlp, d, 1.0)?, "exact")?;
        h = b::add(&h, &linear(&f, &w2, Some(b2), d, mlp, 1.0)?)?;
    }
    let h = ln(p, &h, "encoder.ln")?;
    let first = b::reshape(&b::slice_axis(&h, 1, 0, 1)?, &[n, d])?;
    let classes = VisionArch::NUM_CLASSES;
    let w = p.get("heads.head.weight", &[classes, d])?;
    let bias = p.get("heads.head.bias", &[classes])?;
    linear(&first, &w, Some(bias), classes, d, 1.0)
}

/// The MLP's linear layers are `mlp.0`/`mlp.3` in current torchvision and
/// `mlp.linear_1`/`mlp.linear_2` in checkpoints saved before 0.13.
fn mlp_param(p: &mut Params, pre: &str, seq: usize, old: usize, shape: [usize; 2]) -> Result<(Vec<f32>, Vec<f32>)> {
    let new_name = format!("{pre}.mlp.{seq}");
    let name = match &p.source {
        Source::File(w) if !w.contains(&format!("{new_name}.weight")) && w.contains(&format!("{pre}.mlp.linear_{old}.weight")) => {
            format!("{pre}.mlp.linear_{old}")
        }
        _ => new_name,
    };
    Ok((p.get(&format!("{name}.weight"), &shape)?, p.get(&format!("{name}.bias"), &[shape[0]])?))
}
