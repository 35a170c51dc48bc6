//! Reading Hugging Face BERT-family model folders for ANEForge.
//!
//! `af.load(path)` needs four things from a folder before it can build a
//! graph: the architecture hyper-parameters (config.json), the weights
//! (safetensors, memory-mapped; pickle is refused), a tokenizer that
//! reproduces sentence-transformers' ids exactly (tokenizer.json), and the
//! sentence-level post-processing (modules.json, 1_Pooling/config.json,
//! sentence_bert_config.json). This crate gathers them into a
//! [`ModelFolder`] and turns every failure into an [`Error`] naming the file.
//!
//! On top of the folder, [`bert`] builds the encoder graph on the core
//! builder (everything after the host-side embedding lookup, in one
//! program) and [`Encoder`] runs it with a cache of per-bucket programs.

pub mod bert;
mod config;
mod encoder;
mod error;
mod files;
pub mod layout;
mod sentence;
mod tokenizer;
pub mod vision;
mod weights;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use config::{Architecture, BertConfig, HiddenAct};
pub use encoder::{Encoder, DEFAULT_BATCH_SIZE};
pub use error::{Error, Result};
pub use sentence::{Pooling, SentenceConfig, SettingsSource};
pub use tokenizer::{TokenBatch, Tokenizer};
pub use weights::{HostTensor, RawTensor, Weights};

/// The safetensors dtype enum, re-exported so [`RawTensor::dtype`] can be
/// matched without a direct dependency on `safetensors`.
pub use safetensors::Dtype;

/// Caller overrides of what the folder says, mirroring
/// `af.load(path, pooling=None, normalize=None, max_length=None)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadOptions {
    /// Pooling instead of the folder's.
    pub pooling: Option<Pooling>,
    /// L2 normalisation on or off instead of the folder's.
    pub normalize: Option<bool>,
    /// Truncation length (special tokens included) instead of the folder's;
    /// must not exceed the model's position table.
    pub max_length: Option<usize>,
}

/// Everything needed to build and feed a sentence encoder from one folder.
#[derive(Debug)]
pub struct ModelFolder {
    root: PathBuf,
    config: BertConfig,
    sentence: SentenceConfig,
    weights: Weights,
    tokenizer: Tokenizer,
}

impl ModelFolder {
    /// Open a folder with the settings it declares.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &LoadOptions::default())
    }

    /// Open a folder, letting `options` override pooling, normalisation and
    /// truncation length. Weights are mapped and checked against the config
    /// (names and shapes) before this returns.
    pub fn open_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        let root = path.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(Error::MissingFile {
                path: root,
                what: "expected a Hugging Face model folder holding config.json, model.safetensors and tokenizer.json".into(),
            });
        }
        let mut sentence = SentenceConfig::from_folder(&root)?;
        let model_dir = root.join(&sentence.transformer_dir);
        let config = BertConfig::from_file(&model_dir.join("config.json"))?;
        let weights = Weights::from_folder(&model_dir)?;
        layout::check_weights(&config, &weights)?;

        let limit = config.max_sequence_length();
        let max_length = match options.max_length {
            Some(m) if m > limit => {
                return Err(Error::InvalidOption {
                    option: "max_length",
                    message: format!(
                        "{m} exceeds the {limit} positions of {}",
                        model_dir.join("config.json").display()
                    ),
                })
            }
            Some(m) => m,
            None => {
                let declared = match sentence.max_seq_length {
                    Some(m) => Some(m),
                    None => tokenizer_config_limit(&model_dir)?,
                };
                declared.map_or(limit, |m| m.min(limit))
            }
        };
        let tokenizer = Tokenizer::from_file(
            &model_dir.join("tokenizer.json"),
            max_length,
            sentence.do_lower_case,
        )?;

        if let Some(p) = options.pooling {
            sentence.pooling = p;
        }
        if let Some(n) = options.normalize {
            sentence.normalize = n;
        }
        Ok(ModelFolder {
            root,
            config,
            sentence,
            weights,
            tokenizer,
        })
    }

    /// The folder passed to [`ModelFolder::open`].
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Architecture hyper-parameters.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Pooling, normalisation and sequence settings, overrides applied.
    pub fn sentence(&self) -> &SentenceConfig {
        &self.sentence
    }

    /// The memory-mapped weights.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The configured tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Default truncation length (special tokens included).
    pub fn max_length(&self) -> usize {
        self.tokenizer.max_length()
    }

    /// Tokenise a batch the way sentence-transformers does for this folder.
    pub fn tokenize<S: AsRef<str>>(
        &self,
        texts: &[S],
        max_length: Option<usize>,
    ) -> Result<TokenBatch> {
        if let Some(m) = max_length {
            let limit = self.config.max_sequence_length();
            if m > limit {
                return Err(Error::InvalidOption {
                    option: "max_length",
                    message: format!("{m} exceeds the model's {limit} positions"),
                });
            }
        }
        self.tokenizer.tokenize(texts, max_length)
    }
}

/// `model_max_length` from tokenizer_config.json, ignoring the 1e30 sentinel
/// transformers writes when there is no limit.
fn tokenizer_config_limit(dir: &Path) -> Result<Option<usize>> {
    #[derive(Deserialize)]
    struct Raw {
        model_max_length: Option<f64>,
    }
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let raw: Raw = files::read_json(&path, "the tokenizer's length limit")?;
    Ok(raw
        .model_max_length
        .filter(|m| m.is_finite() && *m >= 1.0 && *m < 1e9)
        .map(|m| m as usize))
}

#[cfg(test)]
mod thread_safety {
    /// A `#[pyclass]` must be `Send` (and `Sync` to be shared without a
    /// lock); this fails to compile if a field ever stops being either.
    #[test]
    fn model_folder_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::ModelFolder>();
        check::<super::Tokenizer>();
        check::<super::Weights>();
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static COUNTER: AtomicUsize = AtomicUsize::new(0);

    /// A scratch folder removed on drop; unique per test so tests can run in
    /// parallel.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let p =
                std::env::temp_dir().join(format!("aneforge-hf-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("create temp dir");
            TempDir(p)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }

        pub(crate) fn write(&self, rel: &str, content: &str) {
            let p = self.0.join(rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("create parent");
            }
            std::fs::write(p, content).expect("write fixture");
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
