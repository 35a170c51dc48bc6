//! The BERT-family encoder as one engine program, plus the host-side
//! embedding lookup that feeds it.
//!
//! # Where the graph starts
//!
//! The embedding lookup is a gather whose indices are the token ids, known
//! only at run time. The engine has no runtime-indexed gather (its `gather`
//! takes constant indices), and a one-hot matmul against the 30k-row vocabulary
//! would cost more than the whole encoder. A lookup is a table read, so it is
//! done on the host: word + position + token-type rows are summed in f32 and
//! fed as the program's one fp16 activation input `[B, S, H]`. Everything after
//! it — the embedding LayerNorm, every attention block with its mask, the GELU
//! MLPs, pooling over the mask and the L2 normalisation — is one program, so a
//! batch is one dispatch.
//!
//! # fp16 choices (the engine stores every value in fp16)
//!
//! * **Mask.** The second input is the 0/1 attention mask `[B, S]`; the
//!   additive form `(mask − 1) · 10⁴` is computed in the graph. −10⁴ rather
//!   than −∞ or −65504: a score plus −65504 can round to −∞, and a row that
//!   is all −∞ (a padding row of a batch bucket) would make softmax 0/0 = NaN.
//!   With −10⁴ such a row is uniform and finite, and a masked key's weight
//!   `exp(−10⁴)` is exactly 0 in f32 and fp16 alike.
//! * **Score scaling.** `1/√d` is folded into the query weights and bias on
//!   the host (in f32, before fp16 rounding), so no [B, heads, S, S] multiply
//!   runs and scores never exist unscaled where they could overflow.
//! * **LayerNorm ε = 1e-12** is below fp16's smallest subnormal (6e-8). The
//!   sim adds ε to the variance in f32, where it is representable; on the
//!   engine the MIL lowering has to clamp it (it only matters for a
//!   zero-variance row, which real hidden states never are).
//! * **Pooling sums are matmuls.** `Σ_s h·mask` over up to 512 tokens is a
//!   `[B,1,S] × [B,S,H]` matmul, which accumulates in f32 on the engine, and
//!   the squared norm for L2 normalisation is `p · pᵀ` likewise; a `reduce_sum`
//!   would accumulate in fp16 (11-bit mantissa) and lose ~0.5 % on 384 terms.
//!   The token count comes from an fp16 `reduce_sum` of the 0/1 mask, exact up
//!   to 2048, and is clamped to ≥ 1 so an all-padding row gives 0, not NaN.

use std::sync::Arc;

use aneforge::builder as b;
use aneforge::ops::{Const, Op, ReduceKind};
use aneforge::{DType, Fact, Tensor};

use crate::config::{Architecture, BertConfig, HiddenAct};
use crate::error::{Error, Result};
use crate::layout::layer_param;
use crate::sentence::Pooling;
use crate::tokenizer::TokenBatch;
use crate::weights::Weights;

/// Port names of the encoder program, in input order.
pub const INPUT_EMBEDDINGS: &str = "embeddings";
/// The 0/1 attention mask port.
pub const INPUT_MASK: &str = "attention_mask";
/// The sentence-vector output port.
pub const OUTPUT_NAME: &str = "sentence_embedding";

/// Additive mask value for padding keys (see the module docs for why not −∞).
const MASK_NEG: f32 = -1.0e4;

/// A weight already rounded to fp16 values, shared (not copied) by every
/// bucket program built from it.
#[derive(Debug, Clone)]
struct Shared {
    data: Arc<Vec<f32>>,
    shape: Vec<usize>,
}

impl Shared {
    fn new(mut data: Vec<f32>, shape: Vec<usize>) -> Self {
        aneforge::numerics::round_f16_slice(&mut data);
        Shared {
            data: Arc::new(data),
            shape,
        }
    }

    /// A constant node over the shared buffer: building a second program
    /// costs no weight copy.
    fn tensor(&self) -> Result<Tensor> {
        let fact = Fact::new(self.shape.clone(), DType::F16);
        let c = Const {
            data: self.data.clone(),
            fact: fact.clone(),
        };
        Ok(Tensor::source(Op::Const(c), fact, None)?)
    }
}

#[derive(Debug, Clone)]
struct Linear {
    w: Shared,
    b: Shared,
}

impl Linear {
    fn load(weights: &Weights, prefix: &str, scale: f32) -> Result<Self> {
        let w = weights.get(&format!("{prefix}.weight"))?;
        let bias = weights.get(&format!("{prefix}.bias"))?;
        let scaled = |v: Vec<f32>| -> Vec<f32> {
            if scale == 1.0 {
                v
            } else {
                v.into_iter().map(|x| x * scale).collect()
            }
        };
        // Stored transposed, [in, out]: the sim's GEMM then reads the weight
        // in place instead of repacking the PyTorch [out, in] layout on every
        // call, which cost more than the multiply itself at batch 1.
        let (out_f, in_f) = match w.shape.as_slice() {
            [o, i] => (*o, *i),
            _ => {
                return Err(Error::ShapeMismatch {
                    path: weights.path().to_path_buf(),
                    name: format!("{prefix}.weight"),
                    expected: vec![0, 0],
                    actual: w.shape.clone(),
                })
            }
        };
        let mut wt = vec![0.0f32; w.data.len()];
        for o in 0..out_f {
            for i in 0..in_f {
                wt[i * out_f + o] = w.data[o * in_f + i] * scale;
            }
        }
        Ok(Linear {
            w: Shared::new(wt, vec![in_f, out_f]),
            b: Shared::new(scaled(bias.data), bias.shape),
        })
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(b::add(&b::matmul(x, &self.w.tensor()?)?, &self.b.tensor()?)?)
    }
}

#[derive(Debug, Clone)]
struct Norm {
    gamma: Shared,
    beta: Shared,
}

impl Norm {
    fn load(weights: &Weights, prefix: &str) -> Result<Self> {
        let g = weights.get(&format!("{prefix}.weight"))?;
        let bt = weights.get(&format!("{prefix}.bias"))?;
        Ok(Norm {
            gamma: Shared::new(g.data, g.shape),
            beta: Shared::new(bt.data, bt.shape),
        })
    }

    fn apply(&self, x: &Tensor, eps: f32) -> Result<Tensor> {
        Ok(b::layer_norm(
            x,
            &[-1],
            Some(&self.gamma.tensor()?),
            Some(&self.beta.tensor()?),
            eps,
        )?)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_norm: Norm,
}

/// The encoder's graph-side parameters (fp16-rounded, shared between bucket
/// programs) and the settings that shape its graph.
#[derive(Debug, Clone)]
pub struct BertGraph {
    hidden: usize,
    heads: usize,
    eps: f32,
    act: HiddenAct,
    pooling: Pooling,
    normalize: bool,
    emb_norm: Norm,
    layers: Vec<Layer>,
}

impl BertGraph {
    /// Read every graph weight once. `pooling`/`normalize` are baked into
    /// the programs this builds.
    pub fn load(
        config: &BertConfig,
        weights: &Weights,
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Self> {
        let q_scale = 1.0 / (config.head_dim() as f32).sqrt();
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = |s: &str| layer_param(l, s);
            layers.push(Layer {
                query: Linear::load(weights, &p("attention.self.query"), q_scale)?,
                key: Linear::load(weights, &p("attention.self.key"), 1.0)?,
                value: Linear::load(weights, &p("attention.self.value"), 1.0)?,
                attn_out: Linear::load(weights, &p("attention.output.dense"), 1.0)?,
                attn_norm: Norm::load(weights, &p("attention.output.LayerNorm"))?,
                ffn_in: Linear::load(weights, &p("intermediate.dense"), 1.0)?,
                ffn_out: Linear::load(weights, &p("output.dense"), 1.0)?,
                ffn_norm: Norm::load(weights, &p("output.LayerNorm"))?,
            });
        }
        Ok(BertGraph {
            hidden: config.hidden_size,
            heads: config.num_attention_heads,
            eps: config.layer_norm_eps as f32,
            act: config.hidden_act,
            pooling,
            normalize,
            emb_norm: Norm::load(weights, "embeddings.LayerNorm")?,
            layers,
        })
    }

    /// Width of the sentence vector.
    pub fn dim(&self) -> usize {
        self.hidden
    }

    /// The pooling baked into built programs.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Whether built programs L2-normalise their output.
    pub fn normalize(&self) -> bool {
        self.normalize
    }

    /// The graph for `batch` sequences of `seq_len` tokens: inputs
    /// [`INPUT_EMBEDDINGS`] `[B, S, H]` and [`INPUT_MASK`] `[B, S]` (fp16),
    /// output [`OUTPUT_NAME`] `[B, H]`.
    pub fn build(&self, batch: usize, seq_len: usize) -> Result<Tensor> {
        let (bsz, s, h, nh) = (batch, seq_len, self.hidden, self.heads);
        let dh = h / nh;
        let x = b::input(&[bsz, s, h], DType::F16, Some(INPUT_EMBEDDINGS))?;
        let mask = b::input(&[bsz, s], DType::F16, Some(INPUT_MASK))?;

        // (mask − 1)·10⁴ as [B, 1, 1, S], broadcast over heads and queries.
        let add_mask = b::mul_scalar(&b::add_scalar(&mask, -1.0)?, -MASK_NEG)?;
        let add_mask = b::reshape(&add_mask, &[bsz, 1, 1, s])?;

        // [B, S, H] → [B, heads, S, dh], or [B, heads, dh, S] for keys so the
        // score matmul reads both operands row-major.
        let heads = |t: &Tensor, perm: &[usize]| -> Result<Tensor> {
            let t = b::reshape(t, &[bsz, s, nh, dh])?;
            Ok(b::transpose(&t, perm)?)
        };

        let mut hs = self.emb_norm.apply(&x, self.eps)?;
        for layer in &self.layers {
            let q = heads(&layer.query.apply(&hs)?, &[0, 2, 1, 3])?;
            let kt = heads(&layer.key.apply(&hs)?, &[0, 2, 3, 1])?;
            let v = heads(&layer.value.apply(&hs)?, &[0, 2, 1, 3])?;
            let scores = b::matmul(&q, &kt)?;
            let probs = b::softmax(&b::add(&scores, &add_mask)?, -1)?;
            let ctx = b::matmul(&probs, &v)?;
            let ctx = b::reshape(&b::transpose(&ctx, &[0, 2, 1, 3])?, &[bsz, s, h])?;
            let attn = layer.attn_out.apply(&ctx)?;
            hs = layer.attn_norm.apply(&b::add(&attn, &hs)?, self.eps)?;

            let f = layer.ffn_in.apply(&hs)?;
            let f = match self.act {
                HiddenAct::GeluErf => b::gelu(&f, "exact")?,
                HiddenAct::GeluTanh => b::gelu(&f, "tanh")?,
                HiddenAct::Relu => b::relu(&f)?,
                HiddenAct::Silu => b::silu(&f)?,
            };
            let f = layer.ffn_out.apply(&f)?;
            hs = layer.ffn_norm.apply(&b::add(&f, &hs)?, self.eps)?;
        }

        let pooled = self.pool(&hs, &mask, bsz, s)?; // [B, 1, H]
        let out = if self.normalize {
            // Squared norm as a matmul: f32 accumulation (see module docs).
            let ss = b::matmul_t(&pooled, &pooled, false, true)?; // [B, 1, 1]
            let floor = b::scalar_like(1e-6, &ss)?;
            b::div(&pooled, &b::sqrt(&b::maximum(&ss, &floor)?)?)?
        } else {
            pooled
        };
        Ok(b::reshape(&out, &[bsz, h])?.named(OUTPUT_NAME))
    }

    /// Sentence vector `[B, 1, H]` from token vectors `hs [B, S, H]`.
    fn pool(&self, hs: &Tensor, mask: &Tensor, bsz: usize, s: usize) -> Result<Tensor> {
        let h = self.hidden;
        let m3 = b::reshape(mask, &[bsz, 1, s])?;
        let count = || -> Result<Tensor> {
            let c = b::reduce(mask, ReduceKind::Sum, Some(&[-1]), true)?; // [B, 1]
            let c = b::maximum(&c, &b::scalar_like(1.0, &c)?)?;
            Ok(b::reshape(&c, &[bsz, 1, 1])?)
        };
        Ok(match self.pooling {
            Pooling::Mean => b::div(&b::matmul(&m3, hs)?, &count()?)?,
            Pooling::MeanSqrtLen => b::div(&b::matmul(&m3, hs)?, &b::sqrt(&count()?)?)?,
            Pooling::Cls => b::slice_axis(hs, 1, 0, 1)?,
            Pooling::Max => {
                // Padding tokens are pushed far below any real value first.
                let mt = b::reshape(mask, &[bsz, s, 1])?;
                let shifted = b::add(hs, &b::mul_scalar(&b::add_scalar(&mt, -1.0)?, 6.0e4)?)?;
                let m = b::reduce(&shifted, ReduceKind::Max, Some(&[1]), true)?;
                b::reshape(&m, &[bsz, 1, h])?
            }
        })
    }
}

/// The host half of the model: the embedding tables in f32.
#[derive(Debug, Clone)]
pub struct Embeddings {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    hidden: usize,
    vocab: usize,
    positions: usize,
    types: usize,
    architecture: Architecture,
    position_offset: usize,
    pad_id: u32,
}

impl Embeddings {
    /// Read the three tables.
    pub fn load(config: &BertConfig, weights: &Weights) -> Result<Self> {
        let h = config.hidden_size;
        let word = weights.get_shaped("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position = weights.get_shaped(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_type = weights.get_shaped(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        Ok(Embeddings {
            word: word.data,
            position: position.data,
            token_type: token_type.data,
            hidden: h,
            vocab: config.vocab_size,
            positions: config.max_position_embeddings,
            types: config.type_vocab_size,
            architecture: config.architecture,
            position_offset: config.position_offset,
            pad_id: config.pad_token_id,
        })
    }

    /// Longest sequence the position table can number.
    pub fn max_positions(&self) -> usize {
        self.positions.saturating_sub(self.position_offset)
    }

    /// Write `word[id] + position[p] + type[t]` for the first `cols` tokens
    /// of each of `rows` (row indices into `batch`) into `out`, laid out as
    /// `[rows.len(), stride, H]`; columns `cols..stride` are left untouched.
    /// Ids come from the user, so every index is checked.
    pub fn embed_rows(
        &self,
        batch: &TokenBatch,
        rows: &[usize],
        cols: usize,
        stride: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let h = self.hidden;
        if cols > batch.seq_len || cols > stride || out.len() < rows.len() * stride * h {
            return Err(Error::InvalidOption {
                option: "seq_len",
                message: format!(
                    "internal: cannot embed {cols} columns of a batch of width {} into rows of {stride}",
                    batch.seq_len
                ),
            });
        }
        for (r, &row) in rows.iter().enumerate() {
            let base = row * batch.seq_len;
            let ids = batch.input_ids.get(base..base + cols);
            let types = batch.token_type_ids.get(base..base + cols);
            let mask = batch.attention_mask.get(base..base + cols);
            let (Some(ids), Some(types), Some(mask)) = (ids, types, mask) else {
                return Err(Error::InvalidOption {
                    option: "input_ids",
                    message: format!("row {row} is outside the batch of {}", batch.batch),
                });
            };
            // RoBERTa numbers real tokens from pad_id + 1 and gives padding
            // the pad row; BERT numbers every column from 0.
            let mut real_seen = 0usize;
            for j in 0..cols {
                let id = ids[j] as usize;
                if id >= self.vocab {
                    return Err(Error::InvalidOption {
                        option: "input_ids",
                        message: format!("id {id} at row {row}, column {j} is outside the vocabulary of {} tokens", self.vocab),
                    });
                }
                let t = types[j] as usize;
                if t >= self.types {
                    return Err(Error::InvalidOption {
                        option: "token_type_ids",
                        message: format!("type {t} at row {row}, column {j}; the model has {} token types", self.types),
                    });
                }
                let p = match self.architecture {
                    Architecture::Bert => j,
                    Architecture::Roberta => {
                        if mask[j] != 0 && ids[j] != self.pad_id {
                            real_seen += 1;
                            self.position_offset - 1 + real_seen
                        } else {
                            self.pad_id as usize
                        }
                    }
                };
                if p >= self.positions {
                    return Err(Error::InvalidOption {
                        option: "input_ids",
                        message: format!("sequence of {} tokens exceeds the model's {} positions", j + 1, self.max_positions()),
                    });
                }
                let at = (r * stride + j) * h;
                let dst = &mut out[at..at + h];
                let w = &self.word[id * h..(id + 1) * h];
                let pe = &self.position[p * h..(p + 1) * h];
                let te = &self.token_type[t * h..(t + 1) * h];
                for k in 0..h {
                    dst[k] = w[k] + pe[k] + te[k];
                }
            }
        }
        Ok(())
    }
}
