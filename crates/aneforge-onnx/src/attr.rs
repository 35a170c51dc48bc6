//! Typed access to node attributes.
//!
//! Each op importer asks for exactly the attributes it understands
//! (`attrs.int_or("group", 1)?`); a missing required attribute or one stored
//! with the wrong kind becomes an [`OnnxError::Attribute`] that names the node
//! and the attribute, instead of a default silently standing in.

use crate::error::{AttrProblem, OnnxError, Result};
use crate::proto::attribute_proto::AttributeType;
use crate::proto::{AttributeProto, GraphProto, NodeProto};
use crate::tensor::{array_from_proto, Array};

/// How errors refer to a node: its name if the exporter gave one, else its op
/// type and first output (names are optional in ONNX, outputs are not).
pub fn node_label(node: &NodeProto) -> String {
    let out = node.output.first().map(String::as_str).unwrap_or("");
    if node.name.is_empty() {
        format!("{} -> \"{out}\"", node.op_type)
    } else {
        format!("\"{}\" ({})", node.name, node.op_type)
    }
}

/// Read-only view of one node's attributes.
#[derive(Debug, Clone, Copy)]
pub struct Attrs<'a> {
    node: &'a NodeProto,
}

/// Builds the attribute view for `node`.
pub fn attrs(node: &NodeProto) -> Attrs<'_> {
    Attrs { node }
}

/// The kind an attribute actually holds. Old exporters leave `type` unset
/// (UNDEFINED), so fall back to which field is populated.
fn kind_of(a: &AttributeProto) -> AttributeType {
    match AttributeType::try_from(a.r#type) {
        Ok(t) if t != AttributeType::Undefined => t,
        _ => {
            if a.t.is_some() {
                AttributeType::Tensor
            } else if a.g.is_some() {
                AttributeType::Graph
            } else if !a.floats.is_empty() {
                AttributeType::Floats
            } else if !a.ints.is_empty() {
                AttributeType::Ints
            } else if !a.strings.is_empty() {
                AttributeType::Strings
            } else if !a.s.is_empty() {
                AttributeType::String
            } else if a.f != 0.0 {
                AttributeType::Float
            } else {
                AttributeType::Int
            }
        }
    }
}

impl<'a> Attrs<'a> {
    /// The node these attributes belong to.
    pub fn node(&self) -> &'a NodeProto {
        self.node
    }

    /// True if the attribute is present (whatever its kind).
    pub fn has(&self, name: &str) -> bool {
        self.raw(name).is_some()
    }

    /// The raw attribute, for the rare op that needs more than the accessors.
    pub fn raw(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    /// Names of all attributes present, so an importer can refuse ones it
    /// does not implement rather than ignore them.
    pub fn names(&self) -> impl Iterator<Item = &'a str> {
        self.node.attribute.iter().map(|a| a.name.as_str())
    }

    /// An error about attribute `name` of this node.
    pub fn error(&self, name: &str, problem: AttrProblem) -> OnnxError {
        OnnxError::Attribute { node: node_label(self.node), attr: name.to_string(), problem }
    }

    /// Shorthand for an [`AttrProblem::Invalid`] error, for value checks in op importers.
    pub fn invalid(&self, name: &str, why: impl Into<String>) -> OnnxError {
        self.error(name, AttrProblem::Invalid(why.into()))
    }

    fn typed(&self, name: &str, want: AttributeType) -> Result<Option<&'a AttributeProto>> {
        match self.raw(name) {
            None => Ok(None),
            Some(a) => {
                let found = kind_of(a);
                if found == want {
                    Ok(Some(a))
                } else {
                    Err(self.error(
                        name,
                        AttrProblem::WrongType { expected: want.as_str_name(), found: found.as_str_name().to_string() },
                    ))
                }
            }
        }
    }

    fn required<T>(&self, name: &str, v: Result<Option<T>>) -> Result<T> {
        v?.ok_or_else(|| self.error(name, AttrProblem::Missing))
    }

    /// Optional `INT` attribute.
    pub fn opt_int(&self, name: &str) -> Result<Option<i64>> {
        Ok(self.typed(name, AttributeType::Int)?.map(|a| a.i))
    }
    /// Required `INT` attribute.
    pub fn int(&self, name: &str) -> Result<i64> {
        self.required(name, self.opt_int(name))
    }
    /// `INT` attribute with the op's documented default.
    pub fn int_or(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.opt_int(name)?.unwrap_or(default))
    }

    /// Optional `FLOAT` attribute.
    pub fn opt_float(&self, name: &str) -> Result<Option<f32>> {
        Ok(self.typed(name, AttributeType::Float)?.map(|a| a.f))
    }
    /// Required `FLOAT` attribute.
    pub fn float(&self, name: &str) -> Result<f32> {
        self.required(name, self.opt_float(name))
    }
    /// `FLOAT` attribute with the op's documented default.
    pub fn float_or(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self.opt_float(name)?.unwrap_or(default))
    }

    /// Optional `INTS` attribute.
    pub fn opt_ints(&self, name: &str) -> Result<Option<&'a [i64]>> {
        Ok(self.typed(name, AttributeType::Ints)?.map(|a| a.ints.as_slice()))
    }
    /// Required `INTS` attribute.
    pub fn ints(&self, name: &str) -> Result<&'a [i64]> {
        self.required(name, self.opt_ints(name))
    }

    /// Optional `FLOATS` attribute.
    pub fn opt_floats(&self, name: &str) -> Result<Option<&'a [f32]>> {
        Ok(self.typed(name, AttributeType::Floats)?.map(|a| a.floats.as_slice()))
    }
    /// Required `FLOATS` attribute.
    pub fn floats(&self, name: &str) -> Result<&'a [f32]> {
        self.required(name, self.opt_floats(name))
    }

    /// Optional `STRING` attribute, which must be UTF-8 (ONNX strings are bytes).
    pub fn opt_string(&self, name: &str) -> Result<Option<&'a str>> {
        match self.typed(name, AttributeType::String)? {
            None => Ok(None),
            Some(a) => std::str::from_utf8(&a.s)
                .map(Some)
                .map_err(|_| self.invalid(name, "string is not valid UTF-8")),
        }
    }
    /// Required `STRING` attribute.
    pub fn string(&self, name: &str) -> Result<&'a str> {
        self.required(name, self.opt_string(name))
    }
    /// `STRING` attribute with the op's documented default.
    pub fn string_or(&self, name: &str, default: &'a str) -> Result<&'a str> {
        Ok(self.opt_string(name)?.unwrap_or(default))
    }

    /// Optional `STRINGS` attribute (e.g. `Einsum` has none, but custom ops do).
    pub fn opt_strings(&self, name: &str) -> Result<Option<Vec<&'a str>>> {
        match self.typed(name, AttributeType::Strings)? {
            None => Ok(None),
            Some(a) => a
                .strings
                .iter()
                .map(|s| std::str::from_utf8(s).map_err(|_| self.invalid(name, "string is not valid UTF-8")))
                .collect::<Result<Vec<_>>>()
                .map(Some),
        }
    }

    /// Optional `TENSOR` attribute, decoded (e.g. `Constant.value`).
    pub fn opt_tensor(&self, name: &str) -> Result<Option<Array>> {
        match self.typed(name, AttributeType::Tensor)? {
            None => Ok(None),
            Some(a) => match &a.t {
                Some(t) => array_from_proto(t).map(Some),
                None => Err(self.invalid(name, "TENSOR attribute holds no tensor")),
            },
        }
    }
    /// Required `TENSOR` attribute, decoded.
    pub fn tensor(&self, name: &str) -> Result<Array> {
        self.required(name, self.opt_tensor(name))
    }

    /// Optional `GRAPH` attribute (control-flow bodies).
    pub fn opt_graph(&self, name: &str) -> Result<Option<&'a GraphProto>> {
        Ok(self.typed(name, AttributeType::Graph)?.and_then(|a| a.g.as_ref()))
    }

    /// Normalises an axis attribute against a rank (negative counts from the
    /// end), with an error naming the node if it is out of range.
    pub fn axis(&self, name: &str, default: i64, rank: usize) -> Result<usize> {
        let axis = self.int_or(name, default)?;
        normalize_axis(axis, rank).ok_or_else(|| self.invalid(name, format!("axis {axis} is out of range for rank {rank}")))
    }
}

/// `axis` in `-rank..rank` mapped to `0..rank`; `None` if out of range.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::NodeBuilder;

    #[test]
    fn accessors_read_each_kind_and_apply_defaults() {
        let n = NodeBuilder::new("Conv", &["x", "w"], &["y"])
            .attr_int("group", 2)
            .attr_ints("pads", &[1, 1, 1, 1])
            .attr_float("alpha", 0.5)
            .attr_floats("scales", &[1.0, 2.0])
            .attr_string("auto_pad", "NOTSET")
            .attr_tensor("value", &Array::from_i64s(vec![4, 5]))
            .build();
        let a = attrs(&n);
        assert_eq!(a.int("group").expect("group"), 2);
        assert_eq!(a.int_or("missing", 7).expect("default"), 7);
        assert_eq!(a.ints("pads").expect("pads"), &[1, 1, 1, 1]);
        assert_eq!(a.float("alpha").expect("alpha"), 0.5);
        assert_eq!(a.floats("scales").expect("scales"), &[1.0, 2.0]);
        assert_eq!(a.string("auto_pad").expect("auto_pad"), "NOTSET");
        assert_eq!(a.tensor("value").expect("value"), Array::from_i64s(vec![4, 5]));
        assert_eq!(a.opt_ints("strides").expect("absent"), None);
        assert!(a.has("group") && !a.has("strides"));
    }

    #[test]
    fn errors_name_node_attribute_and_problem() {
        let n = NodeBuilder::new("Gemm", &["a", "b"], &["c"]).name("fc").attr_float("transB", 1.0).build();
        let a = attrs(&n);
        let e = a.int("transB").expect_err("wrong kind");
        assert!(matches!(
            &e,
            OnnxError::Attribute { attr, problem: AttrProblem::WrongType { expected: "INT", .. }, .. } if attr == "transB"
        ));
        let msg = e.to_string();
        assert!(msg.contains("\"fc\" (Gemm)") && msg.contains("transB") && msg.contains("FLOAT"), "{msg}");

        let e = a.ints("perm").expect_err("missing");
        assert!(matches!(e, OnnxError::Attribute { problem: AttrProblem::Missing, .. }));

        let unnamed = NodeBuilder::new("Transpose", &["x"], &["y"]).build();
        let msg = attrs(&unnamed).ints("perm").expect_err("missing").to_string();
        assert!(msg.contains("Transpose -> \"y\""), "{msg}");
    }

    #[test]
    fn untyped_attributes_from_old_exporters_are_inferred() {
        let mut n = NodeBuilder::new("Flatten", &["x"], &["y"]).attr_int("axis", 1).build();
        n.attribute[0].r#type = AttributeType::Undefined as i32;
        assert_eq!(attrs(&n).int("axis").expect("inferred INT"), 1);
    }

    #[test]
    fn axis_normalisation_checks_range() {
        let n = NodeBuilder::new("Softmax", &["x"], &["y"]).attr_int("axis", -1).build();
        assert_eq!(attrs(&n).axis("axis", 1, 3).expect("ok"), 2);
        let n = NodeBuilder::new("Softmax", &["x"], &["y"]).attr_int("axis", 3).build();
        assert!(attrs(&n).axis("axis", 1, 3).is_err());
        assert_eq!(normalize_axis(-4, 3), None);
    }
}
