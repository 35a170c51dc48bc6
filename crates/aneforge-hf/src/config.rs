//! config.json of a BERT-family encoder, reduced to what a graph builder needs.
//!
//! Hugging Face configs carry dozens of training-only keys; only the ones that
//! change the forward pass are kept, and every key that would change it in a
//! way we do not implement (relative positions, decoder mode) is refused here
//! rather than silently ignored.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::files::read_json;

/// Which member of the BERT family the folder holds. They share one graph;
/// the differences are the weight-name prefix and position numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// BERT and everything saved as `model_type: bert` (MiniLM, BGE, E5, ...).
    Bert,
    /// RoBERTa and XLM-RoBERTa: positions start after the padding index.
    Roberta,
}

impl Architecture {
    /// The prefix a task head (e.g. `BertForMaskedLM`) puts before encoder
    /// weight names; bare `BertModel` checkpoints have none.
    pub fn weight_prefix(self) -> &'static str {
        match self {
            Architecture::Bert => "bert.",
            Architecture::Roberta => "roberta.",
        }
    }
}

/// The feed-forward activation. The two GELU variants differ by up to ~1e-3,
/// which is visible at cosine 0.9999, so they are kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenAct {
    /// Exact GELU, x·Φ(x) with the error function (`"gelu"`).
    GeluErf,
    /// The tanh approximation (`"gelu_new"`, `"gelu_pytorch_tanh"`, `"gelu_fast"`).
    GeluTanh,
    /// `"relu"`.
    Relu,
    /// `"silu"` / `"swish"`.
    Silu,
}

/// The forward-pass hyper-parameters of a BERT-family encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    /// Family member; decides name prefix and position offset.
    pub architecture: Architecture,
    /// `model_type` as written in config.json (e.g. `"bert"`, `"xlm-roberta"`).
    pub model_type: String,
    /// Width of every token vector.
    pub hidden_size: usize,
    /// Number of encoder blocks.
    pub num_hidden_layers: usize,
    /// Attention heads per block; `hidden_size / num_attention_heads` is the head size.
    pub num_attention_heads: usize,
    /// Width of the feed-forward hidden layer.
    pub intermediate_size: usize,
    /// Rows in the position-embedding table (including any offset rows).
    pub max_position_embeddings: usize,
    /// Rows in the token-type table (2 for BERT, 1 for RoBERTa).
    pub type_vocab_size: usize,
    /// Epsilon of every LayerNorm. Often 1e-12, which is below fp16's smallest
    /// subnormal: a graph builder should add it in f32 or clamp it.
    pub layer_norm_eps: f64,
    /// Feed-forward activation.
    pub hidden_act: HiddenAct,
    /// Rows in the word-embedding table.
    pub vocab_size: usize,
    /// Id of the padding token.
    pub pad_token_id: u32,
    /// First position id used for real tokens: 0 for BERT, `pad_token_id + 1`
    /// for RoBERTa (whose table reserves rows for padding).
    pub position_offset: usize,
}

impl BertConfig {
    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Longest sequence (special tokens included) the position table can
    /// number, after the RoBERTa offset.
    pub fn max_sequence_length(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.position_offset)
    }

    /// Read and check `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let raw: RawConfig = read_json(path, "the model's config.json")?;
        Self::from_raw(raw, path)
    }

    fn from_raw(raw: RawConfig, path: &Path) -> Result<Self> {
        let model_type =
            match raw.model_type.as_deref() {
                Some(t) => t.to_string(),
                None => return Err(Error::unsupported(
                    path,
                    "config.json has no `model_type`; expected one of bert, roberta, xlm-roberta",
                )),
            };
        let architecture = match model_type.as_str() {
            "bert" => Architecture::Bert,
            "roberta" | "xlm-roberta" => Architecture::Roberta,
            other => {
                let archs = raw.architectures.as_deref().unwrap_or(&[]).join(", ");
                return Err(Error::unsupported(
                    path,
                    format!(
                        "model_type `{other}`{} is not a BERT-family encoder; supported: bert, roberta, xlm-roberta",
                        if archs.is_empty() { String::new() } else { format!(" ({archs})") }
                    ),
                ));
            }
        };
        if let Some(pe) = raw.position_embedding_type.as_deref() {
            if pe != "absolute" {
                return Err(Error::unsupported(
                    path,
                    format!("position_embedding_type `{pe}`; only `absolute` is supported"),
                ));
            }
        }
        if raw.is_decoder == Some(true) {
            return Err(Error::unsupported(
                path,
                "is_decoder = true; only encoders are supported",
            ));
        }

        let need = |v: Option<usize>, key: &str| -> Result<usize> {
            match v {
                Some(0) => Err(Error::invalid_config(path, format!("`{key}` is 0"))),
                Some(v) => Ok(v),
                None => Err(Error::invalid_config(path, format!("missing `{key}`"))),
            }
        };
        let hidden_size = need(raw.hidden_size, "hidden_size")?;
        let num_attention_heads = need(raw.num_attention_heads, "num_attention_heads")?;
        if hidden_size % num_attention_heads != 0 {
            return Err(Error::invalid_config(
                path,
                format!(
                    "hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}"
                ),
            ));
        }
        let hidden_act = match raw.hidden_act.as_deref().unwrap_or("gelu") {
            "gelu" => HiddenAct::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => HiddenAct::GeluTanh,
            "relu" => HiddenAct::Relu,
            "silu" | "swish" => HiddenAct::Silu,
            other => {
                return Err(Error::unsupported(
                    path,
                    format!("hidden_act `{other}`; supported: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, silu"),
                ))
            }
        };
        let pad_token_id = match architecture {
            Architecture::Bert => raw.pad_token_id.unwrap_or(0),
            Architecture::Roberta => raw.pad_token_id.unwrap_or(1),
        };
        let position_offset = match architecture {
            Architecture::Bert => 0,
            Architecture::Roberta => pad_token_id as usize + 1,
        };
        let max_position_embeddings = need(raw.max_position_embeddings, "max_position_embeddings")?;
        if max_position_embeddings <= position_offset {
            return Err(Error::invalid_config(
                path,
                format!(
                    "max_position_embeddings {max_position_embeddings} leaves no positions after the offset {position_offset}"
                ),
            ));
        }
        let layer_norm_eps = raw.layer_norm_eps.unwrap_or(1e-12);
        if !(layer_norm_eps.is_finite() && layer_norm_eps >= 0.0) {
            return Err(Error::invalid_config(
                path,
                format!("layer_norm_eps {layer_norm_eps} is not a finite non-negative number"),
            ));
        }
        Ok(BertConfig {
            architecture,
            model_type,
            hidden_size,
            num_hidden_layers: need(raw.num_hidden_layers, "num_hidden_layers")?,
            num_attention_heads,
            intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
            max_position_embeddings,
            type_vocab_size: need(raw.type_vocab_size.or(Some(2)), "type_vocab_size")?,
            layer_norm_eps,
            hidden_act,
            vocab_size: need(raw.vocab_size, "vocab_size")?,
            pad_token_id,
            position_offset,
        })
    }
}

/// config.json as written; every field optional so a missing key becomes our
/// own error naming the key, not serde's.
#[derive(Debug, Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    intermediate_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    type_vocab_size: Option<usize>,
    layer_norm_eps: Option<f64>,
    hidden_act: Option<String>,
    vocab_size: Option<usize>,
    pad_token_id: Option<u32>,
    position_embedding_type: Option<String>,
    is_decoder: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<BertConfig> {
        let raw: RawConfig = serde_json::from_str(json).map_err(|source| Error::Json {
            path: "config.json".into(),
            source,
        })?;
        BertConfig::from_raw(raw, Path::new("config.json"))
    }

    const MINILM: &str = r#"{"architectures":["BertModel"],"hidden_act":"gelu","hidden_size":384,
        "intermediate_size":1536,"layer_norm_eps":1e-12,"max_position_embeddings":512,
        "model_type":"bert","num_attention_heads":12,"num_hidden_layers":6,"pad_token_id":0,
        "position_embedding_type":"absolute","type_vocab_size":2,"vocab_size":30522}"#;

    #[test]
    fn minilm_config_parses_to_bert_with_no_offset() {
        let c = parse(MINILM).expect("valid config");
        assert_eq!(c.architecture, Architecture::Bert);
        assert_eq!(
            (c.hidden_size, c.num_hidden_layers, c.num_attention_heads),
            (384, 6, 12)
        );
        assert_eq!(c.head_dim(), 32);
        assert_eq!(c.hidden_act, HiddenAct::GeluErf);
        assert_eq!(c.position_offset, 0);
        assert_eq!(c.max_sequence_length(), 512);
        assert_eq!(c.layer_norm_eps, 1e-12);
    }

    #[test]
    fn roberta_positions_start_after_padding_index() {
        let json = MINILM
            .replace("\"bert\"", "\"roberta\"")
            .replace("\"pad_token_id\":0", "\"pad_token_id\":1")
            .replace("512", "514");
        let c = parse(&json).expect("valid config");
        assert_eq!(c.architecture, Architecture::Roberta);
        assert_eq!(c.position_offset, 2);
        assert_eq!(c.max_sequence_length(), 512);
        assert_eq!(c.architecture.weight_prefix(), "roberta.");
    }

    #[test]
    fn unsupported_model_type_names_it_and_the_alternatives() {
        let json = MINILM.replace("\"bert\"", "\"gpt2\"");
        let err = parse(&json).expect_err("gpt2 must be refused");
        let msg = err.to_string();
        assert!(
            matches!(err, Error::UnsupportedArchitecture { .. }),
            "{msg}"
        );
        assert!(
            msg.contains("config.json") && msg.contains("gpt2") && msg.contains("bert"),
            "{msg}"
        );
    }

    #[test]
    fn relative_positions_are_refused_not_ignored() {
        let json = MINILM.replace("\"absolute\"", "\"relative_key\"");
        let err = parse(&json).expect_err("relative_key must be refused");
        assert!(err.to_string().contains("relative_key"));
    }

    #[test]
    fn missing_key_is_named() {
        let json = MINILM.replace("\"hidden_size\":384,", "");
        let err = parse(&json).expect_err("missing hidden_size");
        assert!(matches!(err, Error::InvalidConfig { .. }));
        assert!(err.to_string().contains("hidden_size"));
    }

    #[test]
    fn heads_must_divide_hidden_size() {
        let json = MINILM.replace("\"num_attention_heads\":12", "\"num_attention_heads\":7");
        assert!(parse(&json)
            .expect_err("7 does not divide 384")
            .to_string()
            .contains("divisible"));
    }

    #[test]
    fn tanh_gelu_is_kept_apart_from_erf_gelu() {
        let json = MINILM.replace("\"gelu\"", "\"gelu_new\"");
        assert_eq!(parse(&json).expect("valid").hidden_act, HiddenAct::GeluTanh);
    }
}
