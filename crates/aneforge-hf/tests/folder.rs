//! `ModelFolder::open` end to end on a tiny synthetic BERT folder written by
//! the test itself, so the loading path and its error messages are checked
//! on every run, with or without the MiniLM package installed.

use std::path::{Path, PathBuf};

use aneforge_hf::{layout, Error, LoadOptions, ModelFolder, Pooling, SettingsSource};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

const HIDDEN: usize = 8;
const VOCAB: usize = 12;

struct Folder(PathBuf);

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(dir: &Path, rel: &str, content: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
    std::fs::write(p, content).expect("write");
}

fn config_json(model_type: &str) -> String {
    format!(
        r#"{{"architectures":["BertModel"],"hidden_act":"gelu","hidden_size":{HIDDEN},
        "intermediate_size":16,"layer_norm_eps":1e-12,"max_position_embeddings":32,
        "model_type":"{model_type}","num_attention_heads":2,"num_hidden_layers":2,"pad_token_id":0,
        "type_vocab_size":2,"vocab_size":{VOCAB}}}"#
    )
}

const TOKENIZER: &str = r###"{"version":"1.0","truncation":null,"padding":null,
  "added_tokens":[{"id":0,"special":true,"content":"[PAD]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false},
    {"id":1,"special":true,"content":"[UNK]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false},
    {"id":2,"special":true,"content":"[CLS]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false},
    {"id":3,"special":true,"content":"[SEP]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false}],
  "normalizer":{"type":"BertNormalizer","clean_text":true,"handle_chinese_chars":true,"strip_accents":null,"lowercase":true},
  "pre_tokenizer":{"type":"BertPreTokenizer"},
  "post_processor":{"type":"TemplateProcessing",
    "single":[{"SpecialToken":{"id":"[CLS]","type_id":0}},{"Sequence":{"id":"A","type_id":0}},{"SpecialToken":{"id":"[SEP]","type_id":0}}],
    "pair":[{"SpecialToken":{"id":"[CLS]","type_id":0}},{"Sequence":{"id":"A","type_id":0}},{"SpecialToken":{"id":"[SEP]","type_id":0}},{"Sequence":{"id":"B","type_id":1}},{"SpecialToken":{"id":"[SEP]","type_id":1}}],
    "special_tokens":{"[CLS]":{"id":"[CLS]","ids":[2],"tokens":["[CLS]"]},"[SEP]":{"id":"[SEP]","ids":[3],"tokens":["[SEP]"]}}},
  "decoder":{"type":"WordPiece","prefix":"##","cleanup":true},
  "model":{"type":"WordPiece","unk_token":"[UNK]","continuing_subword_prefix":"##","max_input_chars_per_word":100,
    "vocab":{"[PAD]":0,"[UNK]":1,"[CLS]":2,"[SEP]":3,"the":4,"fox":5,"run":6,"##s":7,"a":8,"dog":9,".":10,"quick":11}}}"###;

/// A complete folder in the sentence-transformers layout, with f16 weights
/// under the `bert.` prefix (both variations a loader must absorb).
fn tiny_folder(tag: &str) -> Folder {
    let dir = std::env::temp_dir().join(format!("aneforge-hf-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    write(&dir, "config.json", &config_json("bert"));
    write(&dir, "tokenizer.json", TOKENIZER);
    write(
        &dir,
        "modules.json",
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
            {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
    );
    write(
        &dir,
        "1_Pooling/config.json",
        r#"{"word_embedding_dimension":8,"pooling_mode_cls_token":true,"pooling_mode_mean_tokens":false,
            "pooling_mode_max_tokens":false,"pooling_mode_mean_sqrt_len_tokens":false}"#,
    );
    write(
        &dir,
        "sentence_bert_config.json",
        r#"{"max_seq_length":16,"do_lower_case":false}"#,
    );
    write_weights(&dir.join("model.safetensors"), &tensors_of(&dir), None);
    Folder(dir)
}

/// Expected tensors of the folder's config, computed by the crate's own
/// layout so the fixture and the check cannot drift apart.
fn tensors_of(dir: &Path) -> Vec<(String, Vec<usize>)> {
    let config = aneforge_hf::BertConfig::from_file(&dir.join("config.json")).expect("tiny config");
    layout::expected_tensors(&config)
}

/// Write every tensor as f16 with value `index / 64`, prefixed `bert.`;
/// `skip` leaves one out.
fn write_weights(path: &Path, tensors: &[(String, Vec<usize>)], skip: Option<&str>) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, shape)| {
            let n: usize = shape.iter().product();
            (0..n)
                .flat_map(|i| {
                    half::f16::from_f32((i % 64) as f32 / 64.0)
                        .to_bits()
                        .to_le_bytes()
                })
                .collect()
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .filter(|((name, _), _)| Some(name.as_str()) != skip)
        .map(|((name, shape), b)| {
            (
                format!("bert.{name}"),
                TensorView::new(Dtype::F16, shape.clone(), b).expect("view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).expect("write weights");
}

#[test]
fn tiny_folder_opens_with_its_declared_settings() {
    let f = tiny_folder("ok");
    let m = ModelFolder::open(&f.0).expect("open");
    assert_eq!(m.config().hidden_size, HIDDEN);
    assert_eq!(
        (m.sentence().pooling, m.sentence().normalize),
        (Pooling::Cls, true)
    );
    assert!(matches!(
        m.sentence().source,
        SettingsSource::SentenceTransformers { .. }
    ));
    assert_eq!(
        m.max_length(),
        16,
        "sentence_bert_config.json's max_seq_length wins over the 32 positions"
    );
    let emb = m
        .weights()
        .get("embeddings.word_embeddings.weight")
        .expect("f16 → f32");
    assert_eq!(emb.shape, vec![VOCAB, HIDDEN]);
    assert_eq!(emb.data[..3], [0.0, 1.0 / 64.0, 2.0 / 64.0]);
    let b = m
        .tokenize(&["The quick fox runs.", "a dog"], None)
        .expect("tokenize");
    assert_eq!(
        b.input_ids,
        vec![2, 4, 11, 5, 6, 7, 10, 3, 2, 8, 9, 3, 0, 0, 0, 0]
    );
}

#[test]
fn without_sentence_files_the_limit_is_the_position_table() {
    let f = tiny_folder("plain");
    for rel in [
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ] {
        std::fs::remove_file(f.0.join(rel)).expect("remove");
    }
    let m = ModelFolder::open(&f.0).expect("open");
    assert_eq!(
        (m.sentence().pooling, m.sentence().normalize),
        (Pooling::Mean, false)
    );
    assert_eq!(m.max_length(), 32);
    let m = ModelFolder::open_with(
        &f.0,
        &LoadOptions {
            max_length: Some(8),
            ..Default::default()
        },
    )
    .expect("open");
    assert_eq!(m.max_length(), 8);
}

fn open_err(f: &Folder) -> Error {
    ModelFolder::open(&f.0).expect_err("must fail")
}

#[test]
fn missing_files_are_named() {
    for (rel, variant) in [
        ("config.json", "MissingFile"),
        ("tokenizer.json", "MissingFile"),
        ("model.safetensors", "MissingFile"),
    ] {
        let f = tiny_folder(&format!("missing-{rel}"));
        std::fs::remove_file(f.0.join(rel)).expect("remove");
        let err = open_err(&f);
        assert!(format!("{err:?}").starts_with(variant), "{rel}: {err:?}");
        assert!(err.to_string().contains(rel), "{rel}: {err}");
    }
    let err = ModelFolder::open("/nonexistent/aneforge/model").expect_err("no folder");
    assert!(
        err.to_string().contains("/nonexistent/aneforge/model"),
        "{err}"
    );
}

#[test]
fn unsupported_architecture_is_named_with_the_file() {
    let f = tiny_folder("arch");
    write(&f.0, "config.json", &config_json("distilbert"));
    let err = open_err(&f);
    assert!(
        matches!(err, Error::UnsupportedArchitecture { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("config.json") && msg.contains("distilbert"),
        "{msg}"
    );
}

#[test]
fn corrupt_safetensors_is_named_with_the_file() {
    let f = tiny_folder("corrupt");
    let p = f.0.join("model.safetensors");
    let bytes = std::fs::read(&p).expect("read");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("truncate");
    let err = open_err(&f);
    assert!(matches!(err, Error::CorruptSafetensors { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn a_missing_encoder_tensor_is_named_with_near_names() {
    let f = tiny_folder("missing-tensor");
    write_weights(
        &f.0.join("model.safetensors"),
        &tensors_of(&f.0),
        Some("encoder.layer.1.attention.self.key.weight"),
    );
    let err = open_err(&f);
    let Error::TensorNotFound { name, near, .. } = &err else {
        panic!("wrong error: {err}")
    };
    assert_eq!(name, "encoder.layer.1.attention.self.key.weight");
    assert!(
        near.iter()
            .any(|n| n == "encoder.layer.1.attention.self.key.bias"),
        "{err}"
    );
}

#[test]
fn config_and_weights_that_disagree_fail_at_open() {
    let f = tiny_folder("mismatch");
    write(
        &f.0,
        "config.json",
        &config_json("bert").replace("\"intermediate_size\":16", "\"intermediate_size\":24"),
    );
    let err = open_err(&f);
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("intermediate.dense.weight"),
        "{err}"
    );
}

#[test]
fn max_length_beyond_positions_is_refused() {
    let f = tiny_folder("toolong");
    let err = ModelFolder::open_with(
        &f.0,
        &LoadOptions {
            max_length: Some(33),
            ..Default::default()
        },
    )
    .expect_err("33 > 32 positions");
    assert!(
        matches!(
            err,
            Error::InvalidOption {
                option: "max_length",
                ..
            }
        ),
        "{err}"
    );
}
