//! The weight names and shapes a BERT-family encoder must provide.
//!
//! Written down once so that the graph builder and the load-time check agree,
//! and so a wrong checkpoint fails at `af.load` with the offending tensor named
//! rather than as a shape error inside the graph.

use crate::config::BertConfig;
use crate::error::Result;
use crate::weights::Weights;

/// Canonical name of a parameter of encoder block `layer`, e.g.
/// `layer_param(0, "attention.self.query.weight")`.
pub fn layer_param(layer: usize, suffix: &str) -> String {
    format!("encoder.layer.{layer}.{suffix}")
}

/// Per-block parameter suffixes with their shapes as (rows, cols) in terms of
/// hidden size `h` and intermediate size `i`; linear weights are PyTorch
/// `[out, in]`, so `y = x · Wᵀ + b`.
pub const LAYER_PARAMS: [&str; 16] = [
    "attention.self.query.weight",
    "attention.self.query.bias",
    "attention.self.key.weight",
    "attention.self.key.bias",
    "attention.self.value.weight",
    "attention.self.value.bias",
    "attention.output.dense.weight",
    "attention.output.dense.bias",
    "attention.output.LayerNorm.weight",
    "attention.output.LayerNorm.bias",
    "intermediate.dense.weight",
    "intermediate.dense.bias",
    "output.dense.weight",
    "output.dense.bias",
    "output.LayerNorm.weight",
    "output.LayerNorm.bias",
];

/// Every tensor the encoder forward pass reads, with its required shape.
/// The pooler (`pooler.dense.*`) and the `embeddings.position_ids` buffer are
/// left out: sentence-transformers pooling never uses them.
pub fn expected_tensors(c: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let mut v = vec![
        (
            "embeddings.word_embeddings.weight".to_string(),
            vec![c.vocab_size, h],
        ),
        (
            "embeddings.position_embeddings.weight".to_string(),
            vec![c.max_position_embeddings, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".to_string(),
            vec![c.type_vocab_size, h],
        ),
        ("embeddings.LayerNorm.weight".to_string(), vec![h]),
        ("embeddings.LayerNorm.bias".to_string(), vec![h]),
    ];
    for layer in 0..c.num_hidden_layers {
        for suffix in LAYER_PARAMS {
            let shape = match suffix {
                "intermediate.dense.weight" => vec![i, h],
                "intermediate.dense.bias" => vec![i],
                "output.dense.weight" => vec![h, i],
                s if s.ends_with(".weight") && !s.contains("LayerNorm") => vec![h, h],
                _ => vec![h],
            };
            v.push((layer_param(layer, suffix), shape));
        }
    }
    v
}

/// Check that `weights` holds every tensor of [`expected_tensors`] with the
/// right shape; the first problem is returned as a typed error.
pub fn check_weights(c: &BertConfig, weights: &Weights) -> Result<()> {
    for (name, shape) in expected_tensors(c) {
        let actual = weights.shape(&name)?;
        if actual != shape {
            return Err(crate::Error::ShapeMismatch {
                path: weights.path().to_path_buf(),
                name,
                expected: shape,
                actual,
            });
        }
    }
    Ok(())
}
