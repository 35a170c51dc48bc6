//! sentence-transformers' extra files: which pooling turns token vectors into
//! one sentence vector, whether it is L2-normalised, and the sequence limit.
//!
//! These decide the output as much as the weights do: mean pooling instead of
//! CLS pooling on MiniLM gives cosine ~0.8 to the reference, so they are read
//! from the folder rather than guessed.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::files::read_json;

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Average of the token vectors where the attention mask is 1.
    Mean,
    /// The vector of the first token (`[CLS]` / `<s>`).
    Cls,
    /// Element-wise maximum over the tokens where the mask is 1.
    Max,
    /// Sum over masked tokens divided by sqrt(number of tokens).
    MeanSqrtLen,
}

impl Pooling {
    /// Parse the names users pass to `af.load(pooling=...)`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "max" => Ok(Pooling::Max),
            "mean_sqrt_len" | "mean_sqrt_len_tokens" => Ok(Pooling::MeanSqrtLen),
            other => Err(Error::InvalidOption {
                option: "pooling",
                message: format!("`{other}`; expected one of mean, cls, max, mean_sqrt_len"),
            }),
        }
    }

    /// The canonical lower-case name, the inverse of [`Pooling::from_name`].
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Max => "max",
            Pooling::MeanSqrtLen => "mean_sqrt_len",
        }
    }
}

/// Where the sentence-level settings came from, so `Encoder.__repr__` and
/// error messages can say whether they were read or assumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsSource {
    /// Read from modules.json and the pooling module's config.json.
    SentenceTransformers {
        /// The modules.json that was read.
        modules_json: PathBuf,
    },
    /// The folder is a plain Hugging Face model; sentence-transformers'
    /// own defaults for such a folder (mean pooling, no normalisation) apply.
    Defaults,
}

/// The sentence-level post-processing of an encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceConfig {
    /// Pooling over tokens.
    pub pooling: Pooling,
    /// Whether the pooled vector is divided by its L2 norm.
    pub normalize: bool,
    /// `max_seq_length` from sentence_bert_config.json, the truncation length
    /// sentence-transformers uses (256 for all-MiniLM-L6-v2, below the 512
    /// positions the model has).
    pub max_seq_length: Option<usize>,
    /// `do_lower_case` from sentence_bert_config.json: sentence-transformers
    /// lower-cases the text itself before tokenising when true.
    pub do_lower_case: bool,
    /// Sub-folder holding the transformer (config.json, weights, tokenizer);
    /// empty for the usual layout where it is the folder itself.
    pub transformer_dir: PathBuf,
    /// Provenance of these settings.
    pub source: SettingsSource,
}

impl SentenceConfig {
    /// Read modules.json and the files it points to under `root`. A folder
    /// without modules.json gets the defaults sentence-transformers applies
    /// to a bare Hugging Face model.
    pub fn from_folder(root: &Path) -> Result<Self> {
        let modules_path = root.join("modules.json");
        if !modules_path.is_file() {
            let (max_seq_length, do_lower_case) = read_sbert_config(root)?;
            return Ok(SentenceConfig {
                pooling: Pooling::Mean,
                normalize: false,
                max_seq_length,
                do_lower_case,
                transformer_dir: PathBuf::new(),
                source: SettingsSource::Defaults,
            });
        }
        let modules: Vec<RawModule> =
            read_json(&modules_path, "sentence-transformers' module list")?;
        let mut transformer_dir: Option<PathBuf> = None;
        let mut pooling: Option<Pooling> = None;
        let mut normalize = false;
        for m in &modules {
            let kind = m.kind.rsplit('.').next().unwrap_or(&m.kind);
            match kind {
                "Transformer" => {
                    if transformer_dir.is_some() {
                        return Err(Error::unsupported(&modules_path, "more than one Transformer module"));
                    }
                    transformer_dir = Some(PathBuf::from(&m.path));
                }
                "Pooling" => {
                    if pooling.is_some() {
                        return Err(Error::unsupported(&modules_path, "more than one Pooling module"));
                    }
                    pooling = Some(read_pooling(&root.join(&m.path).join("config.json"))?);
                }
                "Normalize" => normalize = true,
                _ => {
                    return Err(Error::unsupported(
                        &modules_path,
                        format!(
                            "module `{}` of type `{}` is not supported; supported: Transformer, Pooling, Normalize",
                            m.path, m.kind
                        ),
                    ))
                }
            }
        }
        let transformer_dir = transformer_dir.ok_or_else(|| {
            Error::unsupported(
                &modules_path,
                "no sentence_transformers.models.Transformer module",
            )
        })?;
        let pooling = pooling.ok_or_else(|| {
            Error::unsupported(
                &modules_path,
                "no Pooling module; the sentence vector would be undefined",
            )
        })?;
        let (max_seq_length, do_lower_case) = read_sbert_config(&root.join(&transformer_dir))?;
        Ok(SentenceConfig {
            pooling,
            normalize,
            max_seq_length,
            do_lower_case,
            transformer_dir,
            source: SettingsSource::SentenceTransformers {
                modules_json: modules_path,
            },
        })
    }
}

#[derive(Debug, Deserialize)]
struct RawModule {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize)]
struct RawPooling {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

fn read_pooling(path: &Path) -> Result<Pooling> {
    let raw: RawPooling = read_json(path, "the Pooling module's settings")?;
    let mut on = Vec::new();
    if raw.pooling_mode_mean_tokens {
        on.push(Pooling::Mean);
    }
    if raw.pooling_mode_cls_token {
        on.push(Pooling::Cls);
    }
    if raw.pooling_mode_max_tokens {
        on.push(Pooling::Max);
    }
    if raw.pooling_mode_mean_sqrt_len_tokens {
        on.push(Pooling::MeanSqrtLen);
    }
    if raw.pooling_mode_weightedmean_tokens || raw.pooling_mode_lasttoken {
        return Err(Error::unsupported(
            path,
            "weighted-mean and last-token pooling are not supported",
        ));
    }
    match on.as_slice() {
        [one] => Ok(*one),
        [] => Err(Error::invalid_config(
            path,
            "no pooling_mode_* flag is true",
        )),
        many => {
            Err(Error::unsupported(
                path,
                format!(
                "several pooling modes at once ({}) concatenate vectors, which is not supported",
                many.iter().map(|p| p.name()).collect::<Vec<_>>().join(" + ")
            ),
            ))
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawSbertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

/// sentence_bert_config.json is optional even in sentence-transformers folders.
fn read_sbert_config(dir: &Path) -> Result<(Option<usize>, bool)> {
    let path = dir.join("sentence_bert_config.json");
    if !path.is_file() {
        return Ok((None, false));
    }
    let raw: RawSbertConfig = read_json(&path, "sentence-transformers' sequence limit")?;
    if raw.max_seq_length == Some(0) {
        return Err(Error::invalid_config(&path, "max_seq_length is 0"));
    }
    Ok((raw.max_seq_length, raw.do_lower_case))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;

    const MODULES: &str = r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
        {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
        {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#;

    fn pooling_json(mean: bool, cls: bool, max: bool) -> String {
        format!(
            r#"{{"word_embedding_dimension":384,"pooling_mode_cls_token":{cls},
            "pooling_mode_mean_tokens":{mean},"pooling_mode_max_tokens":{max},
            "pooling_mode_mean_sqrt_len_tokens":false}}"#
        )
    }

    #[test]
    fn minilm_layout_gives_mean_pooling_normalised_256() {
        let d = TempDir::new("sentence-minilm");
        d.write("modules.json", MODULES);
        d.write("1_Pooling/config.json", &pooling_json(true, false, false));
        d.write(
            "sentence_bert_config.json",
            r#"{"max_seq_length":256,"do_lower_case":false}"#,
        );
        let s = SentenceConfig::from_folder(d.path()).expect("valid folder");
        assert_eq!(s.pooling, Pooling::Mean);
        assert!(s.normalize);
        assert_eq!(s.max_seq_length, Some(256));
        assert!(!s.do_lower_case);
        assert_eq!(s.transformer_dir, PathBuf::new());
        assert!(matches!(
            s.source,
            SettingsSource::SentenceTransformers { .. }
        ));
    }

    #[test]
    fn no_normalize_module_means_no_normalisation() {
        let d = TempDir::new("sentence-cls");
        d.write(
            "modules.json",
            r#"[{"path":"","type":"sentence_transformers.models.Transformer"},
            {"path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#,
        );
        d.write("1_Pooling/config.json", &pooling_json(false, true, false));
        let s = SentenceConfig::from_folder(d.path()).expect("valid folder");
        assert_eq!(s.pooling, Pooling::Cls);
        assert!(!s.normalize);
        assert_eq!(s.max_seq_length, None);
    }

    #[test]
    fn plain_hf_folder_gets_mean_unnormalised_defaults() {
        let d = TempDir::new("sentence-plain");
        let s = SentenceConfig::from_folder(d.path()).expect("defaults");
        assert_eq!(
            (s.pooling, s.normalize, s.source),
            (Pooling::Mean, false, SettingsSource::Defaults)
        );
    }

    #[test]
    fn missing_pooling_config_names_the_file() {
        let d = TempDir::new("sentence-missing");
        d.write("modules.json", MODULES);
        let err = SentenceConfig::from_folder(d.path()).expect_err("pooling config absent");
        assert!(matches!(err, Error::MissingFile { .. }), "{err}");
        assert!(err.to_string().contains("1_Pooling"), "{err}");
    }

    #[test]
    fn concatenated_pooling_modes_are_refused() {
        let d = TempDir::new("sentence-concat");
        d.write("modules.json", MODULES);
        d.write("1_Pooling/config.json", &pooling_json(true, true, false));
        let err = SentenceConfig::from_folder(d.path()).expect_err("mean + cls");
        assert!(err.to_string().contains("mean + cls"), "{err}");
    }

    #[test]
    fn dense_module_is_refused_by_name() {
        let d = TempDir::new("sentence-dense");
        d.write(
            "modules.json",
            &MODULES.replace("models.Normalize", "models.Dense"),
        );
        d.write("1_Pooling/config.json", &pooling_json(true, false, false));
        let err = SentenceConfig::from_folder(d.path()).expect_err("Dense is unsupported");
        assert!(matches!(err, Error::UnsupportedArchitecture { .. }));
        assert!(err.to_string().contains("Dense"), "{err}");
    }

    #[test]
    fn corrupt_modules_json_is_a_json_error_naming_the_file() {
        let d = TempDir::new("sentence-corrupt");
        d.write("modules.json", "[{\"path\": ");
        let err = SentenceConfig::from_folder(d.path()).expect_err("truncated JSON");
        assert!(matches!(err, Error::Json { .. }));
        assert!(err.to_string().contains("modules.json"), "{err}");
    }

    #[test]
    fn pooling_names_round_trip() {
        for p in [
            Pooling::Mean,
            Pooling::Cls,
            Pooling::Max,
            Pooling::MeanSqrtLen,
        ] {
            assert_eq!(Pooling::from_name(p.name()).expect("known name"), p);
        }
        assert!(Pooling::from_name("median").is_err());
    }
}
