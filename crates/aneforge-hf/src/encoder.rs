//! A sentence encoder ready to run: a model folder, its host embedding
//! tables, and a cache of compiled programs, one per (batch, sequence)
//! bucket.
//!
//! The engine runs static shapes, so every distinct input shape is a
//! compile. Sentence lengths vary call to call; padding each batch up to a
//! fixed set of lengths (and batch sizes up to powers of two) bounds the
//! number of programs, and caching them means a new sentence length reuses
//! an existing program. Padding is exact for BERT: padded keys get zero
//! attention weight and padded tokens are excluded from pooling by the mask.
//! Rows are sorted by length before batching, as sentence-transformers does,
//! so a long sentence does not drag a whole batch into a large bucket.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use aneforge::backend::sim::SimState;
use aneforge::{CompileOptions, Compiled};

use crate::bert::{BertGraph, Embeddings, INPUT_EMBEDDINGS, INPUT_MASK};
use crate::error::{Error, Result};
use crate::sentence::Pooling;
use crate::tokenizer::TokenBatch;
use crate::{LoadOptions, ModelFolder};

/// Sequence-length buckets below the model limit; the limit itself is always
/// the last bucket. Multiples of 8 at the short end, where most sentences
/// fall and padding waste is relatively largest.
const SEQ_BUCKETS: [usize; 10] = [8, 16, 24, 32, 48, 64, 96, 128, 192, 256];

/// Default number of sentences per program call.
pub const DEFAULT_BATCH_SIZE: usize = 32;

struct Program {
    compiled: Compiled,
    state: SimState,
    emb_port: usize,
    mask_port: usize,
}

/// A BERT-family sentence encoder on the sim backend.
pub struct Encoder {
    folder: ModelFolder,
    graph: BertGraph,
    embeddings: Embeddings,
    seq_buckets: Vec<usize>,
    programs: Mutex<BTreeMap<(usize, usize), Program>>,
    compiles: AtomicUsize,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("root", &self.folder.root())
            .field("dim", &self.dim())
            .field("max_length", &self.max_length())
            .field("compiled", &self.compile_count())
            .finish()
    }
}

impl Encoder {
    /// Open a folder and prepare the weights; nothing is compiled until the
    /// first batch of a given bucket arrives.
    pub fn open(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        let folder = ModelFolder::open_with(path, options)?;
        let sentence = folder.sentence();
        let graph = BertGraph::load(
            folder.config(),
            folder.weights(),
            sentence.pooling,
            sentence.normalize,
        )?;
        let embeddings = Embeddings::load(folder.config(), folder.weights())?;
        let limit = folder.max_length();
        let mut seq_buckets: Vec<usize> = SEQ_BUCKETS.iter().copied().filter(|&b| b < limit).collect();
        seq_buckets.push(limit);
        Ok(Encoder {
            folder,
            graph,
            embeddings,
            seq_buckets,
            programs: Mutex::new(BTreeMap::new()),
            compiles: AtomicUsize::new(0),
        })
    }

    /// The opened folder (config, tokenizer, settings).
    pub fn folder(&self) -> &ModelFolder {
        &self.folder
    }

    /// Width of a sentence vector.
    pub fn dim(&self) -> usize {
        self.graph.dim()
    }

    /// Truncation length for texts (special tokens included).
    pub fn max_length(&self) -> usize {
        self.folder.max_length()
    }

    /// Pooling baked into the programs.
    pub fn pooling(&self) -> Pooling {
        self.graph.pooling()
    }

    /// Whether outputs are L2-normalised.
    pub fn normalize(&self) -> bool {
        self.graph.normalize()
    }

    /// The sequence-length buckets programs are compiled for.
    pub fn seq_buckets(&self) -> &[usize] {
        &self.seq_buckets
    }

    /// How many programs have been compiled so far.
    pub fn compile_count(&self) -> usize {
        self.compiles.load(Ordering::Relaxed)
    }

    /// The (batch, seq_len) buckets compiled so far.
    pub fn compiled_buckets(&self) -> Vec<(usize, usize)> {
        match self.programs.lock() {
            Ok(p) => p.keys().copied().collect(),
            Err(p) => p.into_inner().keys().copied().collect(),
        }
    }

    /// Tokenise as sentence-transformers does, truncating at `max_length`.
    pub fn tokenize<S: AsRef<str>>(&self, texts: &[S]) -> Result<TokenBatch> {
        self.folder.tokenize(texts, None)
    }

    /// Sentence vectors for `texts`, `[texts.len(), dim]` row-major.
    pub fn encode<S: AsRef<str>>(&self, texts: &[S], batch_size: usize) -> Result<Vec<f32>> {
        if texts.is_empty() {
            return Ok(vec![]);
        }
        let batch = self.tokenize(texts)?;
        self.encode_batch(&batch, batch_size)
    }

    /// The smallest bucket holding `len` tokens.
    pub fn seq_bucket(&self, len: usize) -> Result<usize> {
        self.seq_buckets.iter().copied().find(|&b| b >= len).ok_or_else(|| Error::InvalidOption {
            option: "input_ids",
            message: format!(
                "a sequence of {len} tokens is longer than max_length {}; truncate it (enc.tokenize truncates) or load with a larger max_length",
                self.max_length()
            ),
        })
    }

    /// Sentence vectors for an already tokenised batch, `[batch.batch, dim]`.
    pub fn encode_batch(&self, batch: &TokenBatch, batch_size: usize) -> Result<Vec<f32>> {
        if batch_size == 0 {
            return Err(Error::InvalidOption { option: "batch_size", message: "must be at least 1".into() });
        }
        let n = batch.batch;
        let s = batch.seq_len;
        let expect = n.saturating_mul(s);
        if batch.input_ids.len() != expect || batch.attention_mask.len() != expect || batch.token_type_ids.len() != expect {
            return Err(Error::InvalidOption {
                option: "input_ids",
                message: format!("ids, mask and token types must each hold {n}×{s} values"),
            });
        }
        let dim = self.dim();
        let mut out = vec![0.0f32; n * dim];
        if n == 0 {
            return Ok(out);
        }
        // Length of a row = one past its last unmasked column (at least 1).
        let lengths: Vec<usize> = (0..n)
            .map(|r| {
                let m = &batch.attention_mask[r * s..(r + 1) * s];
                m.iter().rposition(|&v| v != 0).map_or(1, |p| p + 1).min(s.max(1))
            })
            .collect();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&r| std::cmp::Reverse(lengths[r]));

        let mut programs = self.programs.lock().map_err(|_| Error::InvalidOption {
            option: "encoder",
            message: "a previous call panicked while running; load the model again".into(),
        })?;
        for chunk in order.chunks(batch_size) {
            let cols = chunk.iter().map(|&r| lengths[r]).max().unwrap_or(1).min(s);
            let sb = self.seq_bucket(cols)?;
            let bb = batch_bucket(chunk.len(), batch_size);
            let p = match programs.entry((bb, sb)) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let p = self.compile(bb, sb)?;
                    self.compiles.fetch_add(1, Ordering::Relaxed);
                    e.insert(p)
                }
            };
            let prog = &p.compiled.program;
            {
                let x = prog.input_mut(&mut p.state, p.emb_port);
                x.fill(0.0);
                self.embeddings.embed_rows(batch, chunk, cols, sb, x)?;
                aneforge::numerics::round_f16_slice(x);
            }
            {
                let m = prog.input_mut(&mut p.state, p.mask_port);
                m.fill(0.0);
                for (i, &r) in chunk.iter().enumerate() {
                    for j in 0..cols {
                        m[i * sb + j] = (batch.attention_mask[r * s + j] != 0) as u32 as f32;
                    }
                }
            }
            prog.run(&mut p.state);
            let y = prog.output(&p.state, 0);
            for (i, &r) in chunk.iter().enumerate() {
                out[r * dim..(r + 1) * dim].copy_from_slice(&y[i * dim..(i + 1) * dim]);
            }
        }
        Ok(out)
    }

    fn compile(&self, batch: usize, seq_len: usize) -> Result<Program> {
        let y = self.graph.build(batch, seq_len)?;
        let compiled = aneforge::compile(&[y], CompileOptions::default())?;
        let port = |name: &str| -> Result<usize> {
            compiled.input_names.iter().position(|n| n == name).ok_or_else(|| Error::InvalidOption {
                option: "encoder",
                message: format!("internal: compiled encoder has no input {name:?}"),
            })
        };
        let (emb_port, mask_port) = (port(INPUT_EMBEDDINGS)?, port(INPUT_MASK)?);
        let state = compiled.program.new_state();
        Ok(Program { compiled, state, emb_port, mask_port })
    }
}

/// Powers of two up to `batch_size`, then `batch_size` itself: a handful of
/// programs serve every batch, wasting at most half of one.
fn batch_bucket(n: usize, batch_size: usize) -> usize {
    n.next_power_of_two().min(batch_size).max(n)
}

#[cfg(test)]
mod tests {
    use super::batch_bucket;

    #[test]
    fn batch_buckets_are_powers_of_two_capped_by_batch_size() {
        assert_eq!(batch_bucket(1, 32), 1);
        assert_eq!(batch_bucket(3, 32), 4);
        assert_eq!(batch_bucket(17, 32), 32);
        assert_eq!(batch_bucket(17, 20), 20);
        assert_eq!(batch_bucket(20, 20), 20);
    }
}
