//! tokenizer.json → padded id and mask matrices, the way sentence-transformers
//! builds them.
//!
//! The truncation and padding stored in tokenizer.json are not what
//! sentence-transformers uses (all-MiniLM-L6-v2 ships `Fixed(128)` padding and
//! 128-token truncation, but encodes with a 256 limit and pads to the longest
//! sentence in the batch). Both are therefore overridden here: truncation to
//! the resolved `max_length`, padding done by hand to the batch maximum.

use std::path::{Path, PathBuf};

use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result};

/// Ids, attention mask and token types for a batch, each `[batch, seq_len]`
/// row-major, right-padded to the longest sequence in the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// Token ids; padding positions hold the pad id.
    pub input_ids: Vec<u32>,
    /// 1 for real tokens (special tokens included), 0 for padding.
    pub attention_mask: Vec<u32>,
    /// Segment ids; all 0 for single sentences.
    pub token_type_ids: Vec<u32>,
    /// Number of sequences.
    pub batch: usize,
    /// Common padded length.
    pub seq_len: usize,
}

impl TokenBatch {
    /// Real-token count of every row (the sum of its mask).
    pub fn lengths(&self) -> Vec<usize> {
        if self.seq_len == 0 {
            return vec![0; self.batch];
        }
        self.attention_mask
            .chunks(self.seq_len)
            .map(|r| r.iter().filter(|&&m| m != 0).count())
            .collect()
    }

    /// Ids and mask of row `i`.
    pub fn row(&self, i: usize) -> Option<(&[u32], &[u32])> {
        let s = i.checked_mul(self.seq_len)?;
        let e = s.checked_add(self.seq_len)?;
        Some((self.input_ids.get(s..e)?, self.attention_mask.get(s..e)?))
    }

    /// Pad every row further to `seq_len` (e.g. up to a compiled bucket
    /// length) so one compiled program serves many sentence lengths.
    pub fn pad_to(&self, seq_len: usize, pad_id: u32) -> Result<TokenBatch> {
        if seq_len < self.seq_len {
            return Err(Error::InvalidOption {
                option: "seq_len",
                message: format!(
                    "cannot pad a batch of length {} down to {seq_len}",
                    self.seq_len
                ),
            });
        }
        let widen = |v: &[u32], fill: u32| -> Vec<u32> {
            let mut out = Vec::with_capacity(self.batch * seq_len);
            for r in 0..self.batch {
                out.extend_from_slice(&v[r * self.seq_len..(r + 1) * self.seq_len]);
                out.resize((r + 1) * seq_len, fill);
            }
            out
        };
        Ok(TokenBatch {
            input_ids: widen(&self.input_ids, pad_id),
            attention_mask: widen(&self.attention_mask, 0),
            token_type_ids: widen(&self.token_type_ids, 0),
            batch: self.batch,
            seq_len,
        })
    }
}

/// A Hugging Face fast tokenizer configured for encoder inference: special
/// tokens added, truncated at `max_length`, padded to the batch maximum.
#[derive(Clone)]
pub struct Tokenizer {
    path: PathBuf,
    inner: tokenizers::Tokenizer,
    max_length: usize,
    pad_id: u32,
    lowercase: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("max_length", &self.max_length)
            .field("pad_id", &self.pad_id)
            .field("lowercase", &self.lowercase)
            .finish()
    }
}

impl Tokenizer {
    /// Load `tokenizer.json`. `max_length` counts special tokens; `lowercase`
    /// mirrors sentence-transformers' `do_lower_case`, applied to the text
    /// before the tokenizer's own normaliser.
    pub fn from_file(path: &Path, max_length: usize, lowercase: bool) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile {
                path: path.to_path_buf(),
                what: "needed for the tokenizer; only tokenizer.json (the fast-tokenizer format) is read, not vocab.txt"
                    .into(),
            },
            _ => Error::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| Error::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| ["[PAD]", "<pad>"].iter().find_map(|t| inner.token_to_id(t)))
            .unwrap_or(0);
        let mut t = Tokenizer {
            path: path.to_path_buf(),
            inner,
            max_length,
            pad_id,
            lowercase,
        };
        t.inner.with_padding(None);
        t.set_max_length(max_length)?;
        Ok(t)
    }

    /// The truncation length used when a call passes none.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Id written into padding positions.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The tokenizer.json this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Change the default truncation length.
    pub fn set_max_length(&mut self, max_length: usize) -> Result<()> {
        let specials = self.inner.get_post_processor().map_or(0, |pp| {
            use tokenizers::PostProcessor;
            pp.added_tokens(false)
        });
        if max_length <= specials {
            return Err(Error::InvalidOption {
                option: "max_length",
                message: format!(
                    "{max_length} leaves no room for text after {specials} special tokens"
                ),
            });
        }
        let params = TruncationParams {
            direction: TruncationDirection::Right,
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        };
        self.inner
            .with_truncation(Some(params))
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        self.max_length = max_length;
        Ok(())
    }

    /// Encode `texts` with special tokens, truncated at `max_length` (the
    /// default when `None`) and right-padded to the longest row. Each text is
    /// trimmed (and lower-cased if configured) first, as sentence-transformers does.
    pub fn tokenize<S: AsRef<str>>(
        &self,
        texts: &[S],
        max_length: Option<usize>,
    ) -> Result<TokenBatch> {
        let tuned;
        let tok = match max_length {
            Some(m) if m != self.max_length => {
                let mut t = self.clone();
                t.set_max_length(m)?;
                tuned = t;
                &tuned
            }
            _ => self,
        };
        let inputs: Vec<String> = texts
            .iter()
            .map(|t| {
                // sentence-transformers strips each text before tokenising;
                // byte-level BPE (RoBERTa) would otherwise emit a token for
                // a leading space.
                let t = t.as_ref().trim();
                if tok.lowercase {
                    t.to_lowercase()
                } else {
                    t.to_string()
                }
            })
            .collect();
        let encodings = tok
            .inner
            .encode_batch(inputs, true)
            .map_err(|e| Error::Tokenizer {
                path: tok.path.clone(),
                message: e.to_string(),
            })?;
        let batch = encodings.len();
        let seq_len = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        let mut out = TokenBatch {
            input_ids: Vec::with_capacity(batch * seq_len),
            attention_mask: Vec::with_capacity(batch * seq_len),
            token_type_ids: Vec::with_capacity(batch * seq_len),
            batch,
            seq_len,
        };
        for e in &encodings {
            let pad = seq_len - e.len();
            out.input_ids.extend_from_slice(e.get_ids());
            out.input_ids.extend(std::iter::repeat_n(tok.pad_id, pad));
            out.attention_mask.extend_from_slice(e.get_attention_mask());
            out.attention_mask.extend(std::iter::repeat_n(0, pad));
            out.token_type_ids.extend_from_slice(e.get_type_ids());
            out.token_type_ids.extend(std::iter::repeat_n(0, pad));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;

    /// A tiny BERT tokenizer.json written by hand: lower-casing normaliser,
    /// BERT pre-tokeniser, WordPiece over a 12-word vocabulary, and the
    /// [CLS] A [SEP] template. Padding/truncation are set to values that the
    /// loader must override.
    fn tiny_tokenizer() -> TempDir {
        let d = TempDir::new("tokenizer-tiny");
        d.write(
            "tokenizer.json",
            r###"{"version":"1.0",
            "truncation":{"max_length":4,"strategy":"LongestFirst","stride":0},
            "padding":{"strategy":{"Fixed":16},"direction":"Right","pad_to_multiple_of":null,"pad_id":0,"pad_type_id":0,"pad_token":"[PAD]"},
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
              "vocab":{"[PAD]":0,"[UNK]":1,"[CLS]":2,"[SEP]":3,"the":4,"fox":5,"run":6,"##s":7,"a":8,"dog":9,".":10,"quick":11}}}"###,
        );
        d
    }

    #[test]
    fn pads_to_batch_longest_not_the_files_fixed_length() {
        let d = tiny_tokenizer();
        let t = Tokenizer::from_file(&d.path().join("tokenizer.json"), 8, false).expect("load");
        let b = t
            .tokenize(&["The fox runs.", "A dog"], None)
            .expect("encode");
        assert_eq!((b.batch, b.seq_len), (2, 7));
        let (ids0, mask0) = b.row(0).expect("row 0");
        let (ids1, mask1) = b.row(1).expect("row 1");
        assert_eq!(ids0, &[2, 4, 5, 6, 7, 10, 3][..]);
        assert_eq!(mask0, &[1, 1, 1, 1, 1, 1, 1][..]);
        assert_eq!(ids1, &[2, 8, 9, 3, 0, 0, 0][..]);
        assert_eq!(mask1, &[1, 1, 1, 1, 0, 0, 0][..]);
        assert_eq!(b.token_type_ids, vec![0; 14]);
        assert_eq!(b.lengths(), vec![7, 4]);
    }

    #[test]
    fn truncation_keeps_cls_and_sep_within_max_length() {
        let d = tiny_tokenizer();
        let t = Tokenizer::from_file(&d.path().join("tokenizer.json"), 5, false).expect("load");
        let b = t
            .tokenize(&["the quick fox runs the dog"], None)
            .expect("encode");
        assert_eq!(b.seq_len, 5);
        assert_eq!(b.input_ids, vec![2, 4, 11, 5, 3]);
        let b = t
            .tokenize(&["the quick fox runs the dog"], Some(4))
            .expect("encode");
        assert_eq!(b.input_ids, vec![2, 4, 11, 3]);
        assert_eq!(
            t.max_length(),
            5,
            "a per-call limit must not change the default"
        );
    }

    #[test]
    fn max_length_without_room_for_text_is_refused() {
        let d = tiny_tokenizer();
        let err = Tokenizer::from_file(&d.path().join("tokenizer.json"), 2, false)
            .expect_err("2 = only specials");
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

    #[test]
    fn surrounding_whitespace_and_lowercase_option() {
        let d = tiny_tokenizer();
        let t = Tokenizer::from_file(&d.path().join("tokenizer.json"), 8, true).expect("load");
        let a = t.tokenize(&["  \tA DOG \n"], None).expect("encode");
        let b = t.tokenize(&["a dog"], None).expect("encode");
        assert_eq!(a, b);
    }

    #[test]
    fn empty_batch_and_empty_string() {
        let d = tiny_tokenizer();
        let t = Tokenizer::from_file(&d.path().join("tokenizer.json"), 8, false).expect("load");
        let none: [&str; 0] = [];
        let b = t.tokenize(&none, None).expect("empty batch");
        assert_eq!((b.batch, b.seq_len), (0, 0));
        let b = t.tokenize(&[""], None).expect("empty text");
        assert_eq!(b.input_ids, vec![2, 3]);
    }

    #[test]
    fn pad_to_bucket_extends_rows() {
        let d = tiny_tokenizer();
        let t = Tokenizer::from_file(&d.path().join("tokenizer.json"), 8, false).expect("load");
        let b = t
            .tokenize(&["a dog", "fox"], None)
            .expect("encode")
            .pad_to(6, t.pad_id())
            .expect("pad");
        assert_eq!(b.input_ids, vec![2, 8, 9, 3, 0, 0, 2, 5, 3, 0, 0, 0]);
        assert_eq!(b.attention_mask, vec![1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0]);
        assert!(b.pad_to(3, 0).is_err());
    }

    #[test]
    fn missing_and_corrupt_tokenizer_files_name_the_file() {
        let d = TempDir::new("tokenizer-bad");
        let p = d.path().join("tokenizer.json");
        let err = Tokenizer::from_file(&p, 8, false).expect_err("missing");
        assert!(
            matches!(err, Error::MissingFile { .. }) && err.to_string().contains("tokenizer.json"),
            "{err}"
        );
        d.write("tokenizer.json", "{\"model\": 3}");
        let err = Tokenizer::from_file(&p, 8, false).expect_err("corrupt");
        assert!(
            matches!(err, Error::Tokenizer { .. }) && err.to_string().contains("tokenizer.json"),
            "{err}"
        );
    }
}
