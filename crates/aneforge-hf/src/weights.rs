//! Memory-mapped safetensors weights, looked up by their encoder-relative name.
//!
//! The same BERT weight is called `encoder.layer.0.output.dense.weight` in a
//! bare `BertModel` checkpoint, `bert.encoder.layer.0...` under a task head,
//! and may end in `LayerNorm.gamma` in old TF-converted files. A graph builder
//! should not care, so names are canonicalised once at open time and every
//! lookup goes through that table. Pickle (`pytorch_model.bin`) is never read.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata};
use safetensors::SafeTensors;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::files::read_json;

/// Prefixes that task heads put before the encoder's own weight names.
const KNOWN_PREFIXES: [&str; 3] = ["bert.", "roberta.", "model."];

/// A tensor converted to f32, row-major, ready to be handed to a graph builder.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first (PyTorch `nn.Linear` weights are `[out, in]`).
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

/// A borrowed view of a tensor's bytes straight from the mapping, for callers
/// that want to convert without an intermediate f32 copy (e.g. straight to fp16).
#[derive(Debug, Clone, Copy)]
pub struct RawTensor<'a> {
    /// Element type as stored.
    pub dtype: Dtype,
    /// Dimensions, outermost first.
    pub shape: &'a [usize],
    /// Little-endian element bytes.
    pub bytes: &'a [u8],
}

/// One memory-mapped safetensors file with its parsed header.
struct Shard {
    path: PathBuf,
    mmap: Mmap,
    /// Offset of the data section: 8-byte length + JSON header.
    data_start: usize,
    metadata: Metadata,
}

/// The weights of a model folder: one `model.safetensors`, or the shards named
/// by `model.safetensors.index.json`, mapped read-only (no copy until a tensor
/// is asked for).
pub struct Weights {
    /// The file named in errors (the single file, or the index for shards).
    path: PathBuf,
    shards: Vec<Shard>,
    /// Stored name → shard index.
    stored: HashMap<String, usize>,
    /// Canonical name → stored name.
    canonical: BTreeMap<String, String>,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("path", &self.path)
            .field("shards", &self.shards.len())
            .field("tensors", &self.stored.len())
            .finish()
    }
}

impl Weights {
    /// Find and map the weights in a transformer folder: `model.safetensors`,
    /// else a sharded `model.safetensors.index.json`. A folder holding only a
    /// pickle checkpoint gets [`Error::PickleRefused`].
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        if single.is_file() {
            return Self::open(&single);
        }
        let index = dir.join("model.safetensors.index.json");
        if index.is_file() {
            return Self::open_sharded(&index);
        }
        for pickle in ["pytorch_model.bin", "pytorch_model.bin.index.json"] {
            let p = dir.join(pickle);
            if p.is_file() {
                return Err(Error::PickleRefused { path: p });
            }
        }
        Err(Error::MissingFile {
            path: single,
            what: "needed for the model weights (model.safetensors, or model.safetensors.index.json with its shards)".into(),
        })
    }

    /// Map one safetensors file.
    pub fn open(path: &Path) -> Result<Self> {
        let shard = map_shard(path)?;
        let stored = shard
            .metadata
            .tensors()
            .into_keys()
            .map(|name| (name, 0))
            .collect();
        Ok(Self::index(path.to_path_buf(), vec![shard], stored))
    }

    /// Map every shard named in a `model.safetensors.index.json`.
    pub fn open_sharded(index_path: &Path) -> Result<Self> {
        #[derive(Deserialize)]
        struct Index {
            weight_map: BTreeMap<String, String>,
        }
        let index: Index = read_json(index_path, "the list of weight shards")?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut files: Vec<String> = index.weight_map.values().cloned().collect();
        files.sort();
        files.dedup();
        let mut shards = Vec::with_capacity(files.len());
        for f in &files {
            if f.contains("..") || Path::new(f).is_absolute() {
                return Err(Error::invalid_config(
                    index_path,
                    format!("shard path `{f}` leaves the folder"),
                ));
            }
            shards.push(map_shard(&dir.join(f))?);
        }
        let mut stored = HashMap::new();
        for (name, file) in &index.weight_map {
            // `files` is sorted and holds every value, so the search succeeds.
            let Ok(i) = files.binary_search(file) else {
                continue;
            };
            if shards[i].metadata.info(name).is_none() {
                return Err(Error::CorruptSafetensors {
                    path: shards[i].path.clone(),
                    message: format!(
                        "index {} says it holds `{name}`, but it does not",
                        index_path.display()
                    ),
                });
            }
            stored.insert(name.clone(), i);
        }
        Ok(Self::index(index_path.to_path_buf(), shards, stored))
    }

    fn index(path: PathBuf, shards: Vec<Shard>, stored: HashMap<String, usize>) -> Self {
        let mut canonical = BTreeMap::new();
        // Exact names win over names that only match after canonicalisation:
        // insert stripped aliases first, then overwrite with exact ones.
        for name in stored.keys() {
            let c = canonicalize(name);
            if c != *name {
                canonical.entry(c).or_insert_with(|| name.clone());
            }
        }
        for name in stored.keys() {
            if canonicalize(name) == *name {
                canonical.insert(name.clone(), name.clone());
            }
        }
        Weights {
            path,
            shards,
            stored,
            canonical,
        }
    }

    /// The file errors are reported against.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of tensors stored.
    pub fn len(&self) -> usize {
        self.stored.len()
    }

    /// Whether the file holds no tensors at all.
    pub fn is_empty(&self) -> bool {
        self.stored.is_empty()
    }

    /// Canonical names (task-head prefix removed, `gamma`/`beta` spelled
    /// `weight`/`bias`), sorted. These are the names [`Weights::get`] expects.
    pub fn names(&self) -> Vec<&str> {
        self.canonical.keys().map(String::as_str).collect()
    }

    /// Whether `name` resolves to a stored tensor.
    pub fn contains(&self, name: &str) -> bool {
        self.resolve(name).is_some()
    }

    /// The stored (on-disk) name a lookup of `name` resolves to, if any.
    pub fn resolve(&self, name: &str) -> Option<&str> {
        if self.stored.contains_key(name) {
            return self.stored.get_key_value(name).map(|(k, _)| k.as_str());
        }
        self.canonical.get(&canonicalize(name)).map(String::as_str)
    }

    /// Dtype, shape and bytes of a tensor, borrowed from the mapping.
    pub fn raw(&self, name: &str) -> Result<RawTensor<'_>> {
        let stored = self.resolve(name).ok_or_else(|| self.not_found(name))?;
        let shard = self
            .stored
            .get(stored)
            .and_then(|&i| self.shards.get(i))
            .ok_or_else(|| self.not_found(name))?;
        let info = shard
            .metadata
            .info(stored)
            .ok_or_else(|| self.not_found(name))?;
        let (start, end) = info.data_offsets;
        // read_metadata validated the offsets against the file length, but a
        // range check here costs nothing and keeps this path panic-free.
        let bytes = shard
            .mmap
            .get(shard.data_start + start..shard.data_start + end)
            .ok_or_else(|| Error::CorruptSafetensors {
                path: shard.path.clone(),
                message: format!("tensor `{stored}` lies outside the file"),
            })?;
        Ok(RawTensor {
            dtype: info.dtype,
            shape: &info.shape,
            bytes,
        })
    }

    /// Shape of a tensor without converting its data.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.raw(name)?.shape.to_vec())
    }

    /// A tensor converted to f32 (from f32, f16, bf16, f64, or an integer type).
    pub fn get(&self, name: &str) -> Result<HostTensor> {
        let raw = self.raw(name)?;
        let data = to_f32(&raw).ok_or_else(|| Error::UnsupportedDtype {
            path: self.path.clone(),
            name: name.to_string(),
            dtype: format!("{:?}", raw.dtype),
        })?;
        Ok(HostTensor {
            shape: raw.shape.to_vec(),
            data,
        })
    }

    /// Like [`Weights::get`], but fails with [`Error::ShapeMismatch`] unless
    /// the shape is `expected`: a wrong config and the wrong checkpoint are
    /// caught at load time instead of as a shape error deep in the graph.
    pub fn get_shaped(&self, name: &str, expected: &[usize]) -> Result<HostTensor> {
        let shape = self.shape(name)?;
        if shape != expected {
            return Err(Error::ShapeMismatch {
                path: self.path.clone(),
                name: name.to_string(),
                expected: expected.to_vec(),
                actual: shape,
            });
        }
        self.get(name)
    }

    fn not_found(&self, name: &str) -> Error {
        Error::TensorNotFound {
            path: self.path.clone(),
            name: name.to_string(),
            near: self.nearest(name, 5),
        }
    }

    /// The `k` canonical names closest to `name` by edit distance.
    fn nearest(&self, name: &str, k: usize) -> Vec<String> {
        let target = canonicalize(name);
        let mut scored: Vec<(usize, &String)> = self
            .canonical
            .keys()
            .map(|n| (edit_distance(&target, n), n))
            .collect();
        scored.sort();
        scored.into_iter().take(k).map(|(_, n)| n.clone()).collect()
    }
}

fn map_shard(path: &Path) -> Result<Shard> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and private to this process. Another
    // process truncating the file while it is mapped would fault, as with any
    // mmap-based loader (safetensors' own Python loader shares the risk);
    // model folders are not expected to change under a running encoder.
    let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let (header_len, metadata) =
        SafeTensors::read_metadata(&mmap).map_err(|e| Error::CorruptSafetensors {
            path: path.to_path_buf(),
            message: describe(&e, mmap.len()),
        })?;
    Ok(Shard {
        path: path.to_path_buf(),
        mmap,
        data_start: 8 + header_len,
        metadata,
    })
}

/// Turn safetensors' terse errors into something a user can act on.
fn describe(e: &safetensors::SafeTensorError, file_len: usize) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall => format!("only {file_len} bytes, too short to hold a header"),
        E::InvalidHeaderLength => {
            "header length field points past the end of the file (truncated?)".into()
        }
        E::MetadataIncompleteBuffer => {
            format!("tensor data does not exactly fill the file ({file_len} bytes); it is truncated or has trailing bytes")
        }
        other => other.to_string(),
    }
}

/// Strip one task-head prefix and spell old LayerNorm parameter names the
/// modern way.
fn canonicalize(name: &str) -> String {
    let mut n = name;
    for p in KNOWN_PREFIXES {
        if let Some(rest) = n.strip_prefix(p) {
            n = rest;
            break;
        }
    }
    if let Some(base) = n.strip_suffix("LayerNorm.gamma") {
        return format!("{base}LayerNorm.weight");
    }
    if let Some(base) = n.strip_suffix("LayerNorm.beta") {
        return format!("{base}LayerNorm.bias");
    }
    n.to_string()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Convert little-endian element bytes to f32; `None` for dtypes with no
/// sensible f32 reading (bool, fp8/fp4, complex).
fn to_f32(raw: &RawTensor<'_>) -> Option<Vec<f32>> {
    fn each<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect()
    }
    let b = raw.bytes;
    Some(match raw.dtype {
        Dtype::F32 => each(b, f32::from_le_bytes),
        Dtype::F16 => each(b, |a| f16::from_bits(u16::from_le_bytes(a)).to_f32()),
        Dtype::BF16 => each(b, |a| bf16::from_bits(u16::from_le_bytes(a)).to_f32()),
        Dtype::F64 => each(b, |a| f64::from_le_bytes(a) as f32),
        Dtype::I64 => each(b, |a| i64::from_le_bytes(a) as f32),
        Dtype::I32 => each(b, |a| i32::from_le_bytes(a) as f32),
        Dtype::I16 => each(b, |a| f32::from(i16::from_le_bytes(a))),
        Dtype::I8 => each(b, |a: [u8; 1]| f32::from(a[0] as i8)),
        Dtype::U8 => each(b, |a: [u8; 1]| f32::from(a[0])),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;
    use safetensors::tensor::TensorView;

    /// Write a safetensors file from (name, dtype, shape, bytes) tuples.
    fn write_st(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, s, b)| {
                (
                    n.to_string(),
                    TensorView::new(*d, s.clone(), b).expect("valid view"),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, path).expect("write safetensors");
    }

    fn le_f32(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn f16_bf16_f32_and_i64_convert_to_f32() {
        let d = TempDir::new("weights-dtypes");
        let vals = [1.0f32, -2.5, 0.333_251_95, 65504.0];
        let f16b: Vec<u8> = vals
            .iter()
            .flat_map(|&x| f16::from_f32(x).to_bits().to_le_bytes())
            .collect();
        let bf16b: Vec<u8> = vals
            .iter()
            .flat_map(|&x| bf16::from_f32(x).to_bits().to_le_bytes())
            .collect();
        let i64b: Vec<u8> = [0i64, 1, 511]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let p = d.path().join("model.safetensors");
        write_st(
            &p,
            &[
                ("a32", Dtype::F32, vec![2, 2], le_f32(&vals)),
                ("a16", Dtype::F16, vec![4], f16b),
                ("abf", Dtype::BF16, vec![4], bf16b),
                ("pos", Dtype::I64, vec![1, 3], i64b),
            ],
        );
        let w = Weights::from_folder(d.path()).expect("open");
        assert_eq!(
            w.get("a32").expect("f32"),
            HostTensor {
                shape: vec![2, 2],
                data: vals.to_vec()
            }
        );
        let h = w.get("a16").expect("f16");
        let expect16: Vec<f32> = vals.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
        assert_eq!(h.data, expect16);
        let b = w.get("abf").expect("bf16");
        let expectbf: Vec<f32> = vals.iter().map(|&x| bf16::from_f32(x).to_f32()).collect();
        assert_eq!(b.data, expectbf);
        assert_eq!(w.get("pos").expect("i64").data, vec![0.0, 1.0, 511.0]);
    }

    #[test]
    fn bert_prefix_and_gamma_beta_are_optional_in_lookups() {
        let d = TempDir::new("weights-prefix");
        write_st(
            &d.path().join("model.safetensors"),
            &[
                (
                    "bert.embeddings.LayerNorm.gamma",
                    Dtype::F32,
                    vec![2],
                    le_f32(&[1.0, 2.0]),
                ),
                (
                    "bert.embeddings.LayerNorm.beta",
                    Dtype::F32,
                    vec![2],
                    le_f32(&[3.0, 4.0]),
                ),
                ("cls.predictions.bias", Dtype::F32, vec![1], le_f32(&[5.0])),
            ],
        );
        let w = Weights::from_folder(d.path()).expect("open");
        assert_eq!(
            w.get("embeddings.LayerNorm.weight")
                .expect("canonical")
                .data,
            vec![1.0, 2.0]
        );
        assert_eq!(
            w.get("bert.embeddings.LayerNorm.bias")
                .expect("prefixed")
                .data,
            vec![3.0, 4.0]
        );
        assert_eq!(
            w.get("bert.embeddings.LayerNorm.beta")
                .expect("stored name")
                .data,
            vec![3.0, 4.0]
        );
        assert_eq!(
            w.names(),
            vec![
                "cls.predictions.bias",
                "embeddings.LayerNorm.bias",
                "embeddings.LayerNorm.weight"
            ]
        );
    }

    #[test]
    fn miss_lists_near_names_and_the_file() {
        let d = TempDir::new("weights-miss");
        write_st(
            &d.path().join("model.safetensors"),
            &[
                (
                    "encoder.layer.0.attention.self.query.weight",
                    Dtype::F32,
                    vec![1],
                    le_f32(&[0.0]),
                ),
                (
                    "encoder.layer.0.attention.self.key.weight",
                    Dtype::F32,
                    vec![1],
                    le_f32(&[0.0]),
                ),
                ("pooler.dense.weight", Dtype::F32, vec![1], le_f32(&[0.0])),
            ],
        );
        let w = Weights::from_folder(d.path()).expect("open");
        let err = w
            .get("encoder.layer.0.attention.self.querry.weight")
            .expect_err("typo");
        let Error::TensorNotFound { near, .. } = &err else {
            panic!("wrong error: {err}")
        };
        assert_eq!(near[0], "encoder.layer.0.attention.self.query.weight");
        assert!(err.to_string().contains("model.safetensors"), "{err}");
    }

    #[test]
    fn shape_check_reports_both_shapes() {
        let d = TempDir::new("weights-shape");
        write_st(
            &d.path().join("model.safetensors"),
            &[("w", Dtype::F32, vec![2, 1], le_f32(&[0.0, 1.0]))],
        );
        let w = Weights::from_folder(d.path()).expect("open");
        assert!(w.get_shaped("w", &[2, 1]).is_ok());
        let err = w.get_shaped("w", &[1, 2]).expect_err("transposed");
        assert!(
            err.to_string().contains("[2, 1]") && err.to_string().contains("[1, 2]"),
            "{err}"
        );
    }

    #[test]
    fn corrupt_files_are_typed_errors_naming_the_file() {
        let d = TempDir::new("weights-corrupt");
        let p = d.path().join("model.safetensors");
        write_st(
            &p,
            &[("w", Dtype::F32, vec![4], le_f32(&[0.0, 1.0, 2.0, 3.0]))],
        );
        let good = std::fs::read(&p).expect("read back");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", good[..good.len() - 3].to_vec()),
            ("tiny", vec![1, 2, 3]),
            ("empty", vec![]),
            ("garbage header", {
                let mut v = good.clone();
                v[9] = b'#';
                v
            }),
            ("huge header length", {
                let mut v = good.clone();
                v[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                v
            }),
        ];
        for (what, bytes) in cases {
            std::fs::write(&p, &bytes).expect("write corrupt file");
            let err = Weights::from_folder(d.path()).expect_err(what);
            assert!(
                matches!(err, Error::CorruptSafetensors { .. }),
                "{what}: {err}"
            );
            assert!(
                err.to_string().contains("model.safetensors"),
                "{what}: {err}"
            );
        }
    }

    #[test]
    fn pickle_only_folder_is_refused_not_read() {
        let d = TempDir::new("weights-pickle");
        d.write("pytorch_model.bin", "not really a pickle");
        let err = Weights::from_folder(d.path()).expect_err("pickle");
        assert!(matches!(err, Error::PickleRefused { .. }), "{err}");
        assert!(err.to_string().contains("pytorch_model.bin"));
    }

    #[test]
    fn empty_folder_reports_missing_weights() {
        let d = TempDir::new("weights-none");
        let err = Weights::from_folder(d.path()).expect_err("no weights");
        assert!(matches!(err, Error::MissingFile { .. }), "{err}");
        assert!(err.to_string().contains("model.safetensors"));
    }

    #[test]
    fn sharded_index_maps_names_to_files() {
        let d = TempDir::new("weights-shards");
        write_st(
            &d.path().join("a.safetensors"),
            &[("x", Dtype::F32, vec![1], le_f32(&[1.0]))],
        );
        write_st(
            &d.path().join("b.safetensors"),
            &[("bert.y", Dtype::F32, vec![1], le_f32(&[2.0]))],
        );
        d.write(
            "model.safetensors.index.json",
            r#"{"metadata":{},"weight_map":{"x":"a.safetensors","bert.y":"b.safetensors"}}"#,
        );
        let w = Weights::from_folder(d.path()).expect("open shards");
        assert_eq!(w.get("x").expect("x").data, vec![1.0]);
        assert_eq!(w.get("y").expect("y").data, vec![2.0]);
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
