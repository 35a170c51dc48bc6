//! Reading an ONNX file into memory and answering the questions the importer
//! asks before it looks at any node: which opset, which initializers, which
//! graph inputs with which static shapes.
//!
//! A model file is only ever parsed as protobuf: nothing in it is executed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::error::{OnnxError, Result};
use crate::proto::{GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};
use crate::tensor::{array_from_proto, Array, DType};

/// Lowest default-domain opset the importer implements.
///
/// 13 is where `Squeeze`/`Unsqueeze`/`Split`/`ReduceSum` took their axes as
/// inputs; starting there keeps one code path per op.
pub const MIN_OPSET: i64 = 13;
/// Highest default-domain opset the importer implements.
pub const MAX_OPSET: i64 = 21;

/// Files at least this large are mapped rather than read (see `load`).
const MAP_MIN_BYTES: u64 = 1 << 20;

/// A parsed ONNX model and where it came from.
///
/// Holding the path lets every later error name the file the user passed.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    path: PathBuf,
    proto: ModelProto,
    opset: i64,
}

/// One graph input that is not an initializer: something the caller feeds.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphInput {
    /// The input's name in the graph.
    pub name: String,
    /// Element type, or `None` if the model declares one we do not carry.
    pub dtype: Option<DType>,
    /// Declared dims, `None` if the model gives no shape at all; `None`
    /// entries are symbolic or unknown dims (`batch`, `?`).
    pub dims: Option<Vec<Option<usize>>>,
}

impl GraphInput {
    /// The shape if every dim is a fixed number; the importer needs static shapes.
    pub fn static_shape(&self) -> Option<Vec<usize>> {
        self.dims.as_ref()?.iter().copied().collect()
    }
}

impl OnnxModel {
    /// Reads and parses `path`. Only parses: opset range and graph
    /// completeness are separate checks ([`OnnxModel::check_opset`],
    /// [`OnnxModel::check_references`]) so a coverage report still works on a
    /// model the importer would refuse.
    pub fn load(path: impl AsRef<Path>) -> Result<OnnxModel> {
        let path = path.as_ref().to_path_buf();
        let io = |source| OnnxError::Io { path: path.clone(), source };
        let file = std::fs::File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        // A large model is mapped, not read: reading ResNet-18's 47 MB into
        // fresh memory took 35 ms on a VM, a third of its ONNX-to-package
        // time, and the weights are copied out of the buffer anyway.
        let bytes = if len < MAP_MIN_BYTES {
            bytes::Bytes::from(std::fs::read(&path).map_err(io)?)
        } else {
            // SAFETY: the map is read-only and private. Another process
            // truncating the file while it is mapped would fault, as with
            // any mmap-based loader (safetensors' included); model files
            // are not expected to change while they load.
            bytes::Bytes::from_owner(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?)
        };
        OnnxModel::from_bytes(bytes, path)
    }

    /// Parses an in-memory model; `origin` is what errors call it (a path or a label).
    pub fn from_bytes(bytes: impl Into<bytes::Bytes>, origin: impl Into<PathBuf>) -> Result<OnnxModel> {
        let path = origin.into();
        // Decoding from `Bytes` lets tensor `raw_data` borrow the buffer.
        let proto = ModelProto::decode(bytes.into())
            .map_err(|source| OnnxError::Decode { path: path.clone(), source })?;
        OnnxModel::from_proto(proto, path)
    }

    /// Wraps an already-built `ModelProto` (tests, or a caller that made one).
    pub fn from_proto(proto: ModelProto, origin: impl Into<PathBuf>) -> Result<OnnxModel> {
        let path = origin.into();
        let malformed = |reason: &str| OnnxError::Malformed { path: path.clone(), reason: reason.to_string() };
        if proto.graph.is_none() {
            // An empty or cut-short file often decodes to a ModelProto with no graph.
            return Err(malformed("it has no graph (empty, truncated, or not an ONNX model file)"));
        }
        let opset = default_opset(&proto).ok_or_else(|| {
            malformed("it imports no default-domain (ai.onnx) opset (truncated file, or not an ONNX model?)")
        })?;
        Ok(OnnxModel { path, proto, opset })
    }

    /// The file (or label) this model came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw protobuf, for anything this wrapper does not cover.
    pub fn proto(&self) -> &ModelProto {
        &self.proto
    }

    /// The main graph (its presence is checked at load).
    pub fn graph(&self) -> &GraphProto {
        // Presence is checked in `from_proto`; the fallback only keeps this total.
        static EMPTY: std::sync::LazyLock<GraphProto> = std::sync::LazyLock::new(GraphProto::default);
        self.proto.graph.as_ref().unwrap_or(&EMPTY)
    }

    /// The graph's nodes in file order (ONNX requires topological order).
    pub fn nodes(&self) -> &[NodeProto] {
        &self.graph().node
    }

    /// The default-domain opset version the model imports.
    pub fn opset(&self) -> i64 {
        self.opset
    }

    /// True when [`OnnxModel::opset`] is in `MIN_OPSET..=MAX_OPSET`.
    pub fn opset_supported(&self) -> bool {
        (MIN_OPSET..=MAX_OPSET).contains(&self.opset)
    }

    /// Refuses opsets outside the implemented range, naming the file and what to do.
    pub fn check_opset(&self) -> Result<i64> {
        if self.opset_supported() {
            Ok(self.opset)
        } else {
            Err(OnnxError::UnsupportedOpset {
                path: self.path.clone(),
                found: self.opset,
                min: MIN_OPSET,
                max: MAX_OPSET,
            })
        }
    }

    /// The exporter that wrote the model, e.g. `pytorch 2.5.0` (empty if unset).
    pub fn producer(&self) -> String {
        format!("{} {}", self.proto.producer_name, self.proto.producer_version).trim().to_string()
    }

    /// Checks that every node input is a graph input, an initializer or an
    /// earlier node's output, and that the graph outputs are produced.
    ///
    /// A file cut at a protobuf field boundary can decode cleanly yet be
    /// missing nodes or weights; this turns that into an error naming the
    /// first dangling value instead of a confusing failure deep in import.
    pub fn check_references(&self) -> Result<()> {
        let g = self.graph();
        let mut known: std::collections::HashSet<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
        known.extend(g.initializer.iter().map(|t| t.name.as_str()));
        known.extend(g.sparse_initializer.iter().filter_map(|s| s.values.as_ref()).map(|t| t.name.as_str()));
        for node in &g.node {
            for input in &node.input {
                // An empty name is ONNX's spelling of "optional input omitted".
                if !input.is_empty() && !known.contains(input.as_str()) {
                    return Err(OnnxError::Malformed {
                        path: self.path.clone(),
                        reason: format!(
                            "node {} reads \"{input}\", which no graph input, initializer or earlier \
                             node provides (truncated file, stripped weights, or nodes out of order)",
                            crate::attr::node_label(node)
                        ),
                    });
                }
            }
            for out in node.output.iter().filter(|o| !o.is_empty()) {
                if !known.insert(out.as_str()) {
                    return Err(OnnxError::Malformed {
                        path: self.path.clone(),
                        reason: format!(
                            "node {} writes \"{out}\", which is already defined (ONNX values are assigned once)",
                            crate::attr::node_label(node)
                        ),
                    });
                }
            }
        }
        if let Some(out) = g.output.iter().find(|o| !known.contains(o.name.as_str())) {
            return Err(OnnxError::Malformed {
                path: self.path.clone(),
                reason: format!("graph output \"{}\" is produced by no node", out.name),
            });
        }
        Ok(())
    }

    /// The initializer tensors by name, still encoded (cheap: no decoding).
    pub fn initializer_protos(&self) -> HashMap<&str, &TensorProto> {
        self.graph().initializer.iter().map(|t| (t.name.as_str(), t)).collect()
    }

    /// Decodes one initializer; `None` if the model has none by that name.
    pub fn initializer(&self, name: &str) -> Option<Result<Array>> {
        self.graph().initializer.iter().find(|t| t.name == name).map(array_from_proto)
    }

    /// Decodes every initializer. Sparse initializers are refused by name:
    /// no exporter we target writes them.
    pub fn initializers(&self) -> Result<HashMap<String, Array>> {
        let g = self.graph();
        if let Some(s) = g.sparse_initializer.first() {
            let name = s.values.as_ref().map(|v| v.name.clone()).unwrap_or_default();
            return Err(OnnxError::BadTensor { tensor: name, reason: "sparse initializers are not supported".into() });
        }
        g.initializer.iter().map(|t| Ok((t.name.clone(), array_from_proto(t)?))).collect()
    }

    /// The graph inputs a caller must feed (ONNX lists initializers as
    /// inputs too in older exports; those are left out).
    pub fn inputs(&self) -> Vec<GraphInput> {
        let g = self.graph();
        let inits: std::collections::HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        g.input.iter().filter(|v| !inits.contains(v.name.as_str())).map(value_info_to_input).collect()
    }

    /// The graph output names, in order.
    pub fn output_names(&self) -> Vec<&str> {
        self.graph().output.iter().map(|v| v.name.as_str()).collect()
    }

    /// Static shapes the exporter recorded for intermediate values (from
    /// `value_info`), which let `Shape` fold before the core has inferred them.
    pub fn value_info_shapes(&self) -> HashMap<String, Vec<usize>> {
        let g = self.graph();
        g.value_info
            .iter()
            .chain(g.input.iter())
            .chain(g.output.iter())
            .filter_map(|v| Some((v.name.clone(), value_info_to_input(v).static_shape()?)))
            .collect()
    }
}

/// The version of the default (`""` / `ai.onnx`) domain, or `None` if absent.
fn default_opset(m: &ModelProto) -> Option<i64> {
    m.opset_import.iter().filter(|o| o.domain.is_empty() || o.domain == "ai.onnx").map(|o| o.version).max()
}

fn value_info_to_input(v: &ValueInfoProto) -> GraphInput {
    use crate::proto::tensor_shape_proto::dimension::Value as Dim;
    use crate::proto::type_proto::Value as Ty;
    let tensor = v.r#type.as_ref().and_then(|t| match &t.value {
        Some(Ty::TensorType(tt)) => Some(tt),
        _ => None,
    });
    let dtype = tensor.and_then(|t| DType::from_onnx(t.elem_type));
    let dims = tensor
        .and_then(|t| t.shape.as_ref())
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(Dim::DimValue(n)) => usize::try_from(n).ok(),
                    _ => None,
                })
                .collect()
        });
    GraphInput { name: v.name.clone(), dtype, dims }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::ModelBuilder;
    use crate::proto::tensor_proto::DataLocation;
    use crate::proto::StringStringEntryProto;

    fn tiny(opset: i64) -> ModelBuilder {
        ModelBuilder::new(opset)
            .input("x", DType::F32, &[1, 4])
            .initializer("w", &Array::from_f32s(vec![1.0, 2.0, 3.0, 4.0]))
            .op("Mul", &["x", "w"], &["y"])
            .output("y")
    }

    #[test]
    fn round_trips_through_bytes_and_reports_basics() {
        let m = OnnxModel::from_bytes(tiny(17).to_bytes(), "tiny.onnx").expect("parses");
        assert_eq!(m.opset(), 17);
        assert_eq!(m.check_opset().expect("in range"), 17);
        assert_eq!(m.producer(), "aneforge-test");
        assert_eq!(m.nodes().len(), 1);
        assert_eq!(m.output_names(), ["y"]);
        assert_eq!(m.inputs()[0].static_shape(), Some(vec![1, 4]));
        assert_eq!(m.initializer("w").expect("present").expect("decodes").to_f32_vec(), [1.0, 2.0, 3.0, 4.0]);
        assert!(m.initializer("nope").is_none());
        assert_eq!(m.initializers().expect("all decode").len(), 1);
        m.check_references().expect("complete graph");
    }

    #[test]
    fn every_truncation_and_garbage_is_an_error_naming_the_file() {
        let bytes = tiny(17).to_bytes();
        for cut in 0..bytes.len() {
            let e = OnnxModel::from_bytes(bytes[..cut].to_vec(), "cut.onnx").expect_err("a strict prefix must not load");
            assert!(e.to_string().contains("cut.onnx"), "cut at {cut}: {e}");
        }
        let mut noisy = bytes.clone();
        for (i, b) in noisy.iter_mut().enumerate() {
            *b ^= (i as u8).wrapping_mul(37) | 1;
        }
        // Whatever the flipped bytes decode to, loading must not panic.
        let _ = OnnxModel::from_bytes(noisy, "noisy.onnx");
        let e = OnnxModel::from_bytes(b"PK\x03\x04 this is a zip, not onnx".to_vec(), "model.pt").expect_err("zip");
        assert!(e.to_string().contains("model.pt"), "{e}");
    }

    #[test]
    fn missing_file_is_an_io_error_with_the_path() {
        let e = OnnxModel::load("/nonexistent/dir/m.onnx").expect_err("missing");
        assert!(matches!(e, OnnxError::Io { .. }));
        assert!(e.to_string().contains("/nonexistent/dir/m.onnx"), "{e}");
    }

    #[test]
    fn opsets_outside_13_to_21_are_refused_with_advice() {
        for opset in [11, 12, 22] {
            let m = OnnxModel::from_bytes(tiny(opset).to_bytes(), "old.onnx").expect("still parses");
            assert!(!m.opset_supported());
            let e = m.check_opset().expect_err("refused");
            let msg = e.to_string();
            assert!(msg.contains(&format!("opset {opset}")) && msg.contains("13 to 21") && msg.contains("old.onnx"), "{msg}");
        }
        for opset in [13, 18, 21] {
            assert!(OnnxModel::from_bytes(tiny(opset).to_bytes(), "ok.onnx").expect("parses").opset_supported());
        }
        let mut proto = tiny(17).build();
        proto.opset_import[0].domain = "com.microsoft".into();
        let e = OnnxModel::from_proto(proto, "noopset.onnx").expect_err("no default opset");
        assert!(e.to_string().contains("ai.onnx"), "{e}");
    }

    #[test]
    fn external_data_and_dangling_references_are_named() {
        let mut proto = tiny(17).build();
        let t = &mut proto.graph.as_mut().expect("graph").initializer[0];
        t.raw_data = Default::default();
        t.data_location = DataLocation::External as i32;
        t.external_data.push(StringStringEntryProto { key: "location".into(), value: "w.bin".into() });
        let m = OnnxModel::from_proto(proto, "ext.onnx").expect("parses");
        let e = m.initializers().expect_err("external");
        assert!(e.to_string().contains("\"w\"") && e.to_string().contains("w.bin"), "{e}");

        let m = OnnxModel::from_proto(tiny(17).op("Relu", &["x"], &["w"]).build(), "twice.onnx").expect("parses");
        let e = m.check_references().expect_err("w written by a node and an initializer");
        assert!(e.to_string().contains("already defined"), "{e}");

        let mut proto = tiny(17).build();
        proto.graph.as_mut().expect("graph").initializer.clear();
        let m = OnnxModel::from_proto(proto, "stripped.onnx").expect("parses");
        let e = m.check_references().expect_err("w is gone");
        assert!(e.to_string().contains("\"w\"") && e.to_string().contains("stripped.onnx"), "{e}");
    }

    #[test]
    fn symbolic_dims_are_reported_not_guessed() {
        let m = ModelBuilder::new(17).input_dims("ids", DType::I64, &[None, Some(128)]).output("ids").build();
        let m = OnnxModel::from_proto(m, "sym.onnx").expect("parses");
        let input = &m.inputs()[0];
        assert_eq!(input.dims, Some(vec![None, Some(128)]));
        assert_eq!(input.static_shape(), None);
        assert_eq!(input.dtype, Some(DType::I64));
    }
}
