//! Times the encoder on the sim at batch 1 and 32 for a quick look at
//! where the time goes (`perf record` this binary); the user-facing
//! benchmark is benches/encoder_throughput.py.
//!
//!     cargo run --release -p aneforge-hf --example encoder_timing -- MODEL_DIR

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(dir) = std::env::args().nth(1) else {
        return Err("usage: encoder_timing MODEL_DIR".into());
    };
    let enc = aneforge_hf::Encoder::open(&dir, &Default::default())?;
    let texts = [
        "The quick brown fox jumps over the lazy dog.",
        "Could you reserve a dinner table for two people this evening?",
        "The Apple Neural Engine is a fixed-function accelerator for fp16 tensors.",
        "How do I reset my password?",
    ];
    let many: Vec<&str> = texts.iter().cycle().take(32).copied().collect();
    for (label, batch, bs) in [("batch 1", &texts[..1], 1), ("batch 32", &many[..], 32)] {
        enc.encode(batch, bs)?;
        let reps = std::env::var("REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(50usize);
        let t = Instant::now();
        for _ in 0..reps {
            enc.encode(batch, bs)?;
        }
        let dt = t.elapsed().as_secs_f64() / reps as f64;
        println!("{label}: {:.2} ms per call, {:.0} sentences/s", dt * 1e3, batch.len() as f64 / dt);
    }
    Ok(())
}
