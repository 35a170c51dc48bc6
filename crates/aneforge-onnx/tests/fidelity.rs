//! The materialized reference models, imported, compiled and run on the sim,
//! against ONNX Runtime (fp32, the reference): cosine >= 0.9999 and the same
//! top-1 class on fixed random inputs (issue 5, point 3).
//!
//! ONNX Runtime runs through `python3` (numpy, onnx, onnxruntime); without
//! them these tests say so and pass vacuously, so `cargo test` works anywhere
//! the structural tests do.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use aneforge_onnx::{import_file, ImportOptions};

fn models_dir() -> PathBuf {
    match std::env::var_os("ANEFORGE_MODELS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models"),
    }
}

/// Materializes `name` and runs ORT on `count` seeded inputs; returns the
/// model path, the inputs and ORT's first output for each, or `None` (with
/// a note) if Python's stack is missing.
/// A materialized model with ORT's outputs on fixed inputs.
struct Reference {
    path: PathBuf,
    inputs: Vec<Vec<f32>>,
    expected: Vec<Vec<f32>>,
}

fn reference(name: &str, count: usize, dir: &Path) -> Option<Reference> {
    let script = r#"
import sys, importlib.util, numpy as np, onnxruntime as ort
models, name, count, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
spec = importlib.util.spec_from_file_location("m", models + "/materialize.py")
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
path = out + "/" + name + ".onnx"
m.materialize(models + "/" + name + ".onnx", path)
o = ort.SessionOptions(); o.intra_op_num_threads = 2; o.inter_op_num_threads = 1
s = ort.InferenceSession(path, sess_options=o, providers=["CPUExecutionProvider"])
inp = s.get_inputs()[0]
rng = np.random.default_rng(0)
for k in range(count):
    x = rng.standard_normal(inp.shape).astype(np.float32)
    x.tofile("%s/in%d.bin" % (out, k))
    s.run(None, {inp.name: x})[0].astype(np.float32).tofile("%s/out%d.bin" % (out, k))
"#;
    let res = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(models_dir())
        .arg(name)
        .arg(count.to_string())
        .arg(dir)
        .output();
    match res {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!("skipping {name} fidelity: {}", String::from_utf8_lossy(&o.stderr));
            return None;
        }
        Err(e) => {
            eprintln!("skipping {name} fidelity: cannot run python3: {e}");
            return None;
        }
    }
    let read = |f: String| -> Vec<f32> {
        let bytes = std::fs::read(dir.join(f)).expect("reference file written by python");
        bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    };
    let ins = (0..count).map(|k| read(format!("in{k}.bin"))).collect();
    let outs = (0..count).map(|k| read(format!("out{k}.bin"))).collect();
    Some(Reference { path: dir.join(format!("{name}.onnx")), inputs: ins, expected: outs })
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

fn check_model(name: &str, count: usize) {
    let dir = std::env::temp_dir().join(format!("aneforge-onnx-fidelity-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let Some(Reference { path, inputs, expected }) = reference(name, count, &dir) else { return };

    let t0 = Instant::now();
    let imported = match import_file(&path, &ImportOptions::default()) {
        Ok(i) => i,
        Err(e) => panic!("{e}"),
    };
    let t_import = t0.elapsed();
    let outputs: Vec<aneforge::Tensor> = imported.outputs.iter().map(|(_, t)| t.clone()).collect();
    let compiled = match aneforge::compile(&outputs, aneforge::CompileOptions::default()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let t_compile = t0.elapsed();
    let program = &compiled.program;
    let mut state = program.new_state();
    for (k, (x, want)) in inputs.iter().zip(&expected).enumerate() {
        // The engine's input port holds fp16.
        let port = program.input_mut(&mut state, 0);
        for (d, &s) in port.iter_mut().zip(x) {
            *d = half::f16::from_f32(s).to_f32();
        }
        let t = Instant::now();
        program.run(&mut state);
        let t_run = t.elapsed();
        let got = program.output(&state, 0);
        let cos = cosine(got, want);
        eprintln!(
            "{name} input {k}: cosine {cos:.6}, top-1 sim {} ort {}, sim run {t_run:?} (import {t_import:?}, +compile {t_compile:?})",
            argmax(got),
            argmax(want)
        );
        assert!(cos >= 0.9999, "{name} input {k}: cosine {cos} < 0.9999");
        assert_eq!(argmax(got), argmax(want), "{name} input {k}: top-1 differs");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resnet18_matches_onnxruntime() {
    check_model("resnet18", 2);
}

#[test]
fn vit_b_16_matches_onnxruntime() {
    check_model("vit_b_16", 1);
}
