//! Times ONNX → Net and the sim on one model, for `benches/onnx_models.py
//! --rust-sim` (and anyone comparing against ONNX Runtime before the Python
//! binding exposes `af.load_onnx`).
//!
//! ```text
//! cargo run --release -p aneforge-onnx --example sim_timing -- MODEL.onnx [RUNS] [WARMUP] [INPUT.bin]
//! ```
//!
//! Prints one JSON object: `import_s` (file → core graph), `compile_s`
//! (file → compiled sim program, import included), `median_s` and
//! `samples_s` (one sim call each). INPUT.bin is raw little-endian f32 for
//! the first input; without it the input is a fixed ramp.

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        return Err("usage: sim_timing MODEL.onnx [RUNS] [WARMUP] [INPUT.bin]".into());
    };
    let runs: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let warmup: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3);

    let t0 = Instant::now();
    let imported = aneforge_onnx::import_file(path, &aneforge_onnx::ImportOptions::default())?;
    let import_s = t0.elapsed().as_secs_f64();
    let outputs: Vec<aneforge::Tensor> = imported.outputs.iter().map(|(_, t)| t.clone()).collect();
    let compiled = aneforge::compile(&outputs, aneforge::CompileOptions::default())?;
    let compile_s = t0.elapsed().as_secs_f64();

    let program = &compiled.program;
    let mut state = program.new_state();
    let feed: Option<Vec<f32>> = match args.get(3) {
        Some(f) => Some(std::fs::read(f)?.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        None => None,
    };
    for k in 0..program.inputs.len() {
        let port = program.input_mut(&mut state, k);
        let n = port.len();
        for (i, v) in port.iter_mut().enumerate() {
            let x = match (&feed, k) {
                (Some(f), 0) => f.get(i).copied().unwrap_or(0.0),
                _ => (i as f32 / n.max(1) as f32) * 2.0 - 1.0,
            };
            *v = half::f16::from_f32(x).to_f32();
        }
    }
    for _ in 0..warmup {
        program.run(&mut state);
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        program.run(&mut state);
        samples.push(t.elapsed().as_secs_f64());
    }
    let mut sorted = samples.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median_s = match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    let list: Vec<String> = samples.iter().map(|s| format!("{s:.6}")).collect();
    println!(
        "{{\"import_s\": {import_s:.6}, \"compile_s\": {compile_s:.6}, \"median_s\": {median_s:.6}, \"samples_s\": [{}]}}",
        list.join(", ")
    );
    Ok(())
}
