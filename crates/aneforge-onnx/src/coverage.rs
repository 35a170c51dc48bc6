//! Which ops a model uses and which of them ANEForge imports.
//!
//! [`SUPPORTED_OPS`] is the single list of importable ops: the coverage
//! report reads it, and the importer is held to it (a test there checks that
//! every entry has an implementation), so the report can never promise more
//! than an import delivers.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use crate::error::{OnnxError, Result};
use crate::model::{OnnxModel, MAX_OPSET, MIN_OPSET};
use crate::proto::GraphProto;

/// One op the importer accepts, with the limits a user should know about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupportedOp {
    /// The ONNX op type in the default domain.
    pub op_type: &'static str,
    /// A restriction on the supported form, shown in reports; `None` when the
    /// op is supported as the ONNX spec defines it for opsets 13–21.
    pub limit: Option<&'static str>,
}

const fn op(op_type: &'static str) -> SupportedOp {
    SupportedOp { op_type, limit: None }
}

const fn limited(op_type: &'static str, limit: &'static str) -> SupportedOp {
    SupportedOp { op_type, limit: Some(limit) }
}

/// Every op type the importer handles, sorted by byte order (`PRelu` before
/// `Pow`) so lookups can binary-search.
pub const SUPPORTED_OPS: &[SupportedOp] = &[
    op("Abs"),
    op("Add"),
    limited("AveragePool", "2-D, static shapes"),
    op("BatchNormalization"),
    limited("Cast", "to fp32, fp16, int64, int32, int8, uint8, bool"),
    op("Clip"),
    op("Concat"),
    limited("Constant", "tensor and scalar/list values; no strings or sparse"),
    limited("ConstantOfShape", "folded at import: shape must be constant"),
    limited("Conv", "1-D and 2-D"),
    limited("ConvTranspose", "2-D"),
    op("DepthToSpace"),
    op("Div"),
    limited("Dropout", "inference: identity"),
    op("Einsum"),
    op("Elu"),
    op("Equal"),
    op("Erf"),
    op("Exp"),
    limited("Expand", "shape must fold to a constant"),
    op("Flatten"),
    limited("Gather", "constant indices, or folded shape math"),
    op("Gelu"),
    op("Gemm"),
    op("GlobalAveragePool"),
    op("Greater"),
    op("HardSigmoid"),
    op("HardSwish"),
    op("Identity"),
    op("InstanceNormalization"),
    op("LayerNormalization"),
    op("LeakyRelu"),
    op("Less"),
    op("Log"),
    op("LogSoftmax"),
    op("MatMul"),
    op("Max"),
    limited("MaxPool", "2-D; no indices output"),
    op("Min"),
    op("Mul"),
    op("Neg"),
    op("PRelu"),
    limited("Pad", "constant, reflect and edge modes; pads must fold to a constant"),
    op("Pow"),
    limited("Range", "folded at import: inputs must be constant"),
    op("Reciprocal"),
    op("ReduceL2"),
    op("ReduceMax"),
    op("ReduceMean"),
    op("ReduceMin"),
    op("ReduceSum"),
    op("Relu"),
    limited("Reshape", "shape must fold to a constant"),
    limited("Resize", "nearest and linear modes"),
    limited("Shape", "folded at import: input shape must be static"),
    op("Sigmoid"),
    limited("Slice", "starts/ends/axes/steps must fold to constants"),
    op("Softmax"),
    op("SpaceToDepth"),
    limited("Split", "split sizes must fold to a constant"),
    op("Sqrt"),
    limited("Squeeze", "axes must fold to a constant"),
    op("Sub"),
    op("Tanh"),
    limited("Tile", "repeats must fold to a constant"),
    op("Transpose"),
    limited("Unsqueeze", "axes must fold to a constant"),
    op("Where"),
];

/// The table entry for `op_type` in `domain`, if the importer handles it.
/// Only the default ONNX domain (`""` or `"ai.onnx"`) is supported.
pub fn supported_op(domain: &str, op_type: &str) -> Option<&'static SupportedOp> {
    if !(domain.is_empty() || domain == "ai.onnx") {
        return None;
    }
    SUPPORTED_OPS.binary_search_by(|o| o.op_type.cmp(op_type)).ok().map(|i| &SUPPORTED_OPS[i])
}

/// True when the importer handles `op_type` in `domain`.
pub fn is_supported(domain: &str, op_type: &str) -> bool {
    supported_op(domain, op_type).is_some()
}

/// One op type as used by a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpUse {
    /// ONNX op type, e.g. `Conv`.
    pub op_type: String,
    /// Its domain; empty for the default ONNX domain.
    pub domain: String,
    /// How many nodes use it (subgraphs of control-flow ops included).
    pub count: usize,
    /// Whether the importer handles it.
    pub supported: bool,
    /// The restriction on the supported form, if any.
    pub limit: Option<&'static str>,
}

impl OpUse {
    /// `Op` for the default domain, `domain::Op` otherwise: how reports and
    /// errors name it.
    pub fn qualified_name(&self) -> String {
        if self.domain.is_empty() || self.domain == "ai.onnx" {
            self.op_type.clone()
        } else {
            format!("{}::{}", self.domain, self.op_type)
        }
    }
}

/// What a model uses and whether it can be imported: what `aneforge info`
/// prints and `af.onnx_coverage` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    /// The file the report is about.
    pub path: String,
    /// Exporter name and version, e.g. `pytorch 2.5.0`.
    pub producer: String,
    /// ONNX IR version of the file.
    pub ir_version: i64,
    /// Default-domain opset the model imports.
    pub opset: i64,
    /// Whether that opset is in the importable range.
    pub opset_supported: bool,
    /// Total node count (subgraphs included).
    pub node_count: usize,
    /// One entry per op type, most used first, then by name.
    pub ops: Vec<OpUse>,
}

impl Coverage {
    /// The op types the importer does not handle.
    pub fn unsupported(&self) -> impl Iterator<Item = &OpUse> {
        self.ops.iter().filter(|o| !o.supported)
    }

    /// True when the opset and every op are importable.
    pub fn is_fully_supported(&self) -> bool {
        self.opset_supported && self.ops.iter().all(|o| o.supported)
    }

    /// The one error an import of this model raises for missing ops (all of
    /// them listed), or `None` if every op is supported.
    pub fn unsupported_error(&self) -> Option<OnnxError> {
        let ops: Vec<(String, usize)> = self.unsupported().map(|o| (o.qualified_name(), o.count)).collect();
        (!ops.is_empty()).then(|| OnnxError::UnsupportedOps { path: self.path.clone().into(), ops })
    }
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.path)?;
        if !self.producer.is_empty() {
            writeln!(f, "  producer: {}", self.producer)?;
        }
        let opset_note = if self.opset_supported {
            String::new()
        } else {
            format!("  (unsupported: ANEForge imports {MIN_OPSET}-{MAX_OPSET})")
        };
        writeln!(f, "  ir_version {}, opset {}{}", self.ir_version, self.opset, opset_note)?;
        writeln!(f, "  {} nodes, {} op types", self.node_count, self.ops.len())?;
        let width = self.ops.iter().map(|o| o.qualified_name().len()).max().unwrap_or(2).max(2);
        writeln!(f, "  {:<width$}  {:>5}  supported", "op", "count")?;
        for o in &self.ops {
            let mark = if o.supported { "yes" } else { "NO" };
            write!(f, "  {:<width$}  {:>5}  {mark}", o.qualified_name(), o.count)?;
            if let Some(limit) = o.limit {
                write!(f, " ({limit})")?;
            }
            writeln!(f)?;
        }
        let missing: Vec<String> = self.unsupported().map(OpUse::qualified_name).collect();
        if missing.is_empty() && self.opset_supported {
            write!(f, "  all ops supported")
        } else if missing.is_empty() {
            write!(f, "  all ops supported, but the opset is not")
        } else {
            write!(f, "  unsupported: {}", missing.join(", "))
        }
    }
}

/// Builds the coverage report for a loaded model.
pub fn coverage(model: &OnnxModel) -> Coverage {
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    let mut node_count = 0;
    count_ops(model.graph(), &mut counts, &mut node_count);
    let mut ops: Vec<OpUse> = counts
        .into_iter()
        .map(|((domain, op_type), count)| {
            let entry = supported_op(&domain, &op_type);
            OpUse { supported: entry.is_some(), limit: entry.and_then(|e| e.limit), op_type, domain, count }
        })
        .collect();
    ops.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.qualified_name().cmp(&b.qualified_name())));
    Coverage {
        path: model.path().display().to_string(),
        producer: model.producer(),
        ir_version: model.proto().ir_version,
        opset: model.opset(),
        opset_supported: model.opset_supported(),
        node_count,
        ops,
    }
}

/// Loads `path` and reports its coverage; fails only if the file cannot be
/// read or parsed (an out-of-range opset is reported, not refused).
pub fn coverage_of_file(path: impl AsRef<Path>) -> Result<Coverage> {
    Ok(coverage(&OnnxModel::load(path)?))
}

fn count_ops(g: &GraphProto, counts: &mut HashMap<(String, String), usize>, nodes: &mut usize) {
    for n in &g.node {
        *nodes += 1;
        *counts.entry((n.domain.clone(), n.op_type.clone())).or_default() += 1;
        // Control-flow bodies hide ops too; a user should see those gaps as well.
        for a in &n.attribute {
            if let Some(sub) = &a.g {
                count_ops(sub, counts, nodes);
            }
            for sub in &a.graphs {
                count_ops(sub, counts, nodes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{ModelBuilder, NodeBuilder};
    use crate::tensor::DType;

    #[test]
    fn table_is_sorted_unique_and_covers_issue_list() {
        for w in SUPPORTED_OPS.windows(2) {
            assert!(w[0].op_type < w[1].op_type, "{} before {}", w[0].op_type, w[1].op_type);
        }
        // The list in issue 5, point 1, plus the folded shape ops.
        let required = "Conv ConvTranspose Gemm MatMul BatchNormalization LayerNormalization \
            InstanceNormalization Softmax LogSoftmax Gelu Erf Relu LeakyRelu PRelu Elu Sigmoid HardSigmoid \
            HardSwish Tanh Clip Add Sub Mul Div Pow Sqrt Reciprocal Exp Log Neg Abs Min Max Where Cast Equal \
            Less Greater MaxPool AveragePool GlobalAveragePool Resize Concat Split Slice Reshape Transpose \
            Squeeze Unsqueeze Flatten Expand Tile Pad Gather ReduceMean ReduceSum ReduceMax ReduceMin ReduceL2 \
            Einsum DepthToSpace SpaceToDepth Identity Dropout Shape Constant ConstantOfShape Range";
        for op in required.split_whitespace() {
            assert!(is_supported("", op), "{op} missing from SUPPORTED_OPS");
        }
        assert_eq!(SUPPORTED_OPS.len(), required.split_whitespace().count());
    }

    #[test]
    fn only_the_default_domain_counts() {
        assert!(is_supported("ai.onnx", "Relu"));
        assert!(!is_supported("com.microsoft", "Relu"));
        assert!(!is_supported("", "LSTM"));
    }

    #[test]
    fn report_counts_ops_flags_gaps_and_lists_them_in_one_error() {
        let body = crate::proto::GraphProto {
            node: vec![NodeBuilder::new("Relu", &["a"], &["b"]).build()],
            ..Default::default()
        };
        let mut if_node = NodeBuilder::new("If", &["c"], &["d"]).build();
        if_node.attribute.push(crate::proto::AttributeProto {
            name: "then_branch".into(),
            r#type: crate::proto::attribute_proto::AttributeType::Graph as i32,
            g: Some(body),
            ..Default::default()
        });
        let mut proto = ModelBuilder::new(17)
            .input("x", DType::F32, &[1, 4])
            .op("Relu", &["x"], &["r"])
            .op("Relu", &["r"], &["r2"])
            .op("LSTM", &["r2"], &["l"])
            .node(NodeBuilder::new("FusedGemm", &["l"], &["y"]).domain("com.microsoft"))
            .output("y")
            .build();
        proto.graph.as_mut().expect("graph").node.push(if_node);
        let model = OnnxModel::from_proto(proto, "m.onnx").expect("model");
        let c = coverage(&model);
        assert_eq!(c.node_count, 6);
        assert_eq!(c.ops[0].op_type, "Relu");
        assert_eq!(c.ops[0].count, 3, "Relu inside the If body is counted");
        let missing: Vec<String> = c.unsupported().map(OpUse::qualified_name).collect();
        assert_eq!(missing, ["If", "LSTM", "com.microsoft::FusedGemm"]);
        assert!(!c.is_fully_supported());
        let msg = c.unsupported_error().expect("gaps").to_string();
        assert!(msg.contains("m.onnx") && msg.contains("LSTM (x1)") && msg.contains("com.microsoft::FusedGemm"), "{msg}");
        let text = c.to_string();
        assert!(text.contains("LSTM") && text.contains("NO") && text.contains("opset 17"), "{text}");
    }

    #[test]
    fn out_of_range_opset_is_reported_not_refused() {
        let m = ModelBuilder::new(11).input("x", DType::F32, &[1]).op("Relu", &["x"], &["y"]).output("y").build();
        let c = coverage(&OnnxModel::from_proto(m, "old.onnx").expect("parses"));
        assert!(!c.opset_supported && !c.is_fully_supported());
        assert!(c.unsupported_error().is_none());
        assert!(c.to_string().contains("unsupported: ANEForge imports 13-21"));
    }
}
