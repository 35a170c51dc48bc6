//! Print what aneforge-hf reads from a model folder: config, sentence
//! settings, and every weight with its dtype and shape. Useful when writing a
//! graph builder for a new checkpoint, or when `af.load` refuses one.
//!
//! `cargo run -p aneforge-hf --example inspect_folder -- <folder> [text ...]`

use aneforge_hf::ModelFolder;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: inspect_folder <model folder> [text ...]");
        std::process::exit(2);
    };
    let folder = match ModelFolder::open(&dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    println!("config: {:#?}", folder.config());
    println!("sentence: {:#?}", folder.sentence());
    println!("max_length: {}", folder.max_length());
    let w = folder.weights();
    println!("weights: {} tensors in {}", w.len(), w.path().display());
    for name in w.names() {
        match w.raw(name) {
            Ok(r) => println!("  {name}  {:?}  {:?}", r.dtype, r.shape),
            Err(e) => println!("  {name}  error: {e}"),
        }
    }
    let t = std::time::Instant::now();
    let mut values = 0usize;
    for name in w.names() {
        if let Ok(h) = w.get(name) {
            values += h.data.len();
        }
    }
    println!("converted {values} values to f32 in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let texts: Vec<String> = args.collect();
    let sample: Vec<&str> = ["The quick brown fox jumps over the lazy dog."; 32].to_vec();
    let t = std::time::Instant::now();
    for _ in 0..10 {
        let _ = folder.tokenize(&sample, None);
    }
    println!("tokenized 10 x 32 short sentences in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    if !texts.is_empty() {
        match folder.tokenize(&texts, None) {
            Ok(b) => {
                for i in 0..b.batch {
                    if let Some((ids, mask)) = b.row(i) {
                        println!("ids  {ids:?}\nmask {mask:?}");
                    }
                }
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
}
