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
    let texts: Vec<String> = args.collect();
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
