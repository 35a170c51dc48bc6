//! Checks against the real exporter output in `shared/models/` (structure-only
//! files, weights stripped): parsing, coverage, and that after folding every
//! shape-like input of Reshape and friends is a constant.
//!
//! A materialized (weights refilled) ResNet-18 is checked too when Python's
//! `onnx` and numpy are present to run `materialize.py`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use aneforge_onnx::{coverage, ConstFolder, OnnxModel};

/// `shared/models`, beside the repository checkout (override: `ANEFORGE_MODELS_DIR`).
fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ANEFORGE_MODELS_DIR") {
        return PathBuf::from(dir);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models");
    assert!(dir.join("resnet18.onnx").exists(), "reference models not found at {}", dir.display());
    dir
}

fn load(name: &str) -> OnnxModel {
    let path = models_dir().join(name);
    match OnnxModel::load(&path) {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    }
}

fn op_counts(m: &OnnxModel) -> BTreeMap<String, usize> {
    coverage(m).ops.into_iter().map(|o| (o.op_type, o.count)).collect()
}

#[test]
fn resnet18_parses_and_every_op_is_supported() {
    let m = load("resnet18.onnx");
    assert_eq!(m.check_opset().expect("opset"), 18);
    let c = coverage(&m);
    assert!(c.is_fully_supported(), "{c}");
    let expected = [("Conv", 20), ("Relu", 17), ("Add", 8), ("MaxPool", 1), ("ReduceMean", 1), ("Reshape", 1), ("Gemm", 1)];
    let expected: BTreeMap<String, usize> = expected.iter().map(|&(o, n)| (o.to_string(), n)).collect();
    assert_eq!(op_counts(&m), expected);
    assert_eq!(c.node_count, 49);
    let input = &m.inputs()[0];
    assert_eq!((input.name.as_str(), input.static_shape()), ("input", Some(vec![1, 3, 224, 224])));
    assert_eq!(m.output_names(), ["logits"]);
}

#[test]
fn vit_b_16_parses_and_every_op_is_supported() {
    let m = load("vit_b_16.onnx");
    assert_eq!(m.check_opset().expect("opset"), 18);
    let c = coverage(&m);
    assert!(c.is_fully_supported(), "{c}");
    let ops: Vec<String> = op_counts(&m).into_keys().collect();
    let mut expected = [
        "Conv", "Reshape", "Transpose", "Concat", "Add", "LayerNormalization", "MatMul", "Unsqueeze", "Squeeze", "Gather",
        "Mul", "Softmax", "Gemm", "Div", "Erf",
    ];
    expected.sort_unstable();
    assert_eq!(ops, expected);
}

#[test]
fn stripped_files_say_which_weights_are_missing() {
    let m = load("resnet18.onnx");
    let e = m.check_references().expect_err("weights were stripped");
    assert!(e.to_string().contains("conv1.weight") && e.to_string().contains("resnet18.onnx"), "{e}");
    // What is left (biases, shape vectors) decodes.
    let inits = m.initializers().expect("shipped initializers decode");
    assert_eq!(inits["conv1.weight_bias"].shape(), &[64]);
}

#[test]
fn after_folding_shape_inputs_are_constants() {
    for name in ["resnet18.onnx", "vit_b_16.onnx"] {
        let m = load(name);
        let mut folder = ConstFolder::from_model(&m).expect("initializers decode");
        let summary = folder.fold_graph(m.graph()).expect("folds");
        let mut checked = 0;
        for &i in &summary.remaining {
            let node = &m.nodes()[i];
            let shape_input = match node.op_type.as_str() {
                "Reshape" | "Expand" | "Tile" | "Unsqueeze" | "Squeeze" | "ReduceMean" | "ReduceSum" => 1,
                _ => continue,
            };
            if node.input.get(shape_input).is_some_and(|s| !s.is_empty()) {
                assert!(
                    folder.const_input(node, shape_input).is_some(),
                    "{name}: {} input {shape_input} is not constant after folding",
                    aneforge_onnx::node_label(node)
                );
                checked += 1;
            }
        }
        assert!(checked > 0, "{name}: no shape inputs seen");
    }
}

/// Runs `materialize.py` when Python has numpy and onnx; `None` (with a
/// note) when it cannot, so the structural tests above still run anywhere.
fn materialize(name: &str) -> Option<PathBuf> {
    let out = std::env::temp_dir().join(format!("aneforge-onnx-test-{}-{name}.onnx", std::process::id()));
    let status = Command::new("python3")
        .arg(models_dir().join("materialize.py"))
        .arg(name)
        .arg(&out)
        .output();
    match status {
        Ok(o) if o.status.success() => Some(out),
        Ok(o) => {
            eprintln!("skipping materialized check: {}", String::from_utf8_lossy(&o.stderr));
            None
        }
        Err(e) => {
            eprintln!("skipping materialized check: cannot run python3: {e}");
            None
        }
    }
}

#[test]
fn materialized_resnet18_is_complete_and_its_weights_decode() {
    let Some(path) = materialize("resnet18") else { return };
    let t = std::time::Instant::now();
    let m = OnnxModel::load(&path).expect("materialized model loads");
    m.check_references().expect("no dangling values once weights are back");
    let inits = m.initializers().expect("every weight decodes");
    let elapsed = t.elapsed();
    let _ = std::fs::remove_file(&path);
    let w = &inits["conv1.weight"];
    assert_eq!(w.shape(), &[64, 3, 7, 7]);
    let total: usize = inits.values().map(|a| a.len()).sum();
    assert!(total > 11_000_000, "ResNet-18 has ~11.7M parameters, got {total}");
    eprintln!("load + decode of materialized ResNet-18: {elapsed:?}");
}
