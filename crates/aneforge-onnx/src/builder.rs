//! A tiny builder for ONNX models, so tests (here and in the importer) read
//! as graphs rather than as pages of protobuf literals.
//!
//! It writes what a real exporter writes (typed attributes, raw_data
//! initializers, shaped graph inputs) and checks nothing: tests that want a
//! malformed model build one on purpose.

use prost::Message;

use crate::proto::attribute_proto::AttributeType;
use crate::proto::tensor_shape_proto::{dimension, Dimension};
use crate::proto::type_proto::{self, Tensor as TensorType};
use crate::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use crate::tensor::{array_to_proto, Array, DType};

/// Builds one `NodeProto`.
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    node: NodeProto,
}

impl NodeBuilder {
    /// A node of `op_type` reading `inputs` and writing `outputs` (use `""`
    /// for an omitted optional input).
    pub fn new(op_type: &str, inputs: &[&str], outputs: &[&str]) -> NodeBuilder {
        NodeBuilder {
            node: NodeProto {
                op_type: op_type.to_string(),
                input: inputs.iter().map(|s| s.to_string()).collect(),
                output: outputs.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        }
    }

    /// Sets the node name (exporters usually do; errors then use it).
    pub fn name(mut self, name: &str) -> Self {
        self.node.name = name.to_string();
        self
    }

    /// Sets the op domain (for custom-op tests).
    pub fn domain(mut self, domain: &str) -> Self {
        self.node.domain = domain.to_string();
        self
    }

    fn attr(mut self, name: &str, kind: AttributeType, fill: impl FnOnce(&mut AttributeProto)) -> Self {
        let mut a = AttributeProto { name: name.to_string(), r#type: kind as i32, ..Default::default() };
        fill(&mut a);
        self.node.attribute.push(a);
        self
    }

    /// Adds an `INT` attribute.
    pub fn attr_int(self, name: &str, v: i64) -> Self {
        self.attr(name, AttributeType::Int, |a| a.i = v)
    }
    /// Adds an `INTS` attribute.
    pub fn attr_ints(self, name: &str, v: &[i64]) -> Self {
        self.attr(name, AttributeType::Ints, |a| a.ints = v.to_vec())
    }
    /// Adds a `FLOAT` attribute.
    pub fn attr_float(self, name: &str, v: f32) -> Self {
        self.attr(name, AttributeType::Float, |a| a.f = v)
    }
    /// Adds a `FLOATS` attribute.
    pub fn attr_floats(self, name: &str, v: &[f32]) -> Self {
        self.attr(name, AttributeType::Floats, |a| a.floats = v.to_vec())
    }
    /// Adds a `STRING` attribute.
    pub fn attr_string(self, name: &str, v: &str) -> Self {
        self.attr(name, AttributeType::String, |a| a.s = v.as_bytes().to_vec())
    }
    /// Adds a `TENSOR` attribute.
    pub fn attr_tensor(self, name: &str, v: &Array) -> Self {
        self.attr(name, AttributeType::Tensor, |a| a.t = Some(array_to_proto("", v)))
    }

    /// The finished node.
    pub fn build(self) -> NodeProto {
        self.node
    }
}

/// Builds a `ModelProto` with one graph.
#[derive(Debug, Clone)]
pub struct ModelBuilder {
    graph: GraphProto,
    opset: i64,
}

/// A tensor value_info with fixed dims (`None` = symbolic).
pub fn tensor_value_info(name: &str, dtype: DType, dims: &[Option<usize>]) -> ValueInfoProto {
    let shape = TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d {
                    Some(n) => dimension::Value::DimValue(*n as i64),
                    None => dimension::Value::DimParam("N".into()),
                }),
                ..Default::default()
            })
            .collect(),
    };
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(TensorType { elem_type: dtype.to_onnx(), shape: Some(shape) })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl ModelBuilder {
    /// An empty model importing the default domain at `opset`.
    pub fn new(opset: i64) -> ModelBuilder {
        ModelBuilder { graph: GraphProto { name: "test".into(), ..Default::default() }, opset }
    }

    /// Declares a graph input with a static shape.
    pub fn input(self, name: &str, dtype: DType, shape: &[usize]) -> Self {
        let dims: Vec<Option<usize>> = shape.iter().map(|&d| Some(d)).collect();
        self.input_dims(name, dtype, &dims)
    }

    /// Declares a graph input whose dims may be symbolic (`None`).
    pub fn input_dims(mut self, name: &str, dtype: DType, dims: &[Option<usize>]) -> Self {
        self.graph.input.push(tensor_value_info(name, dtype, dims));
        self
    }

    /// Records an exporter-style shape annotation for an intermediate value.
    pub fn value_info(mut self, name: &str, dtype: DType, shape: &[usize]) -> Self {
        let dims: Vec<Option<usize>> = shape.iter().map(|&d| Some(d)).collect();
        self.graph.value_info.push(tensor_value_info(name, dtype, &dims));
        self
    }

    /// Declares a graph output (type left unset; tests rarely need it).
    pub fn output(mut self, name: &str) -> Self {
        self.graph.output.push(ValueInfoProto { name: name.to_string(), ..Default::default() });
        self
    }

    /// Adds an initializer.
    pub fn initializer(mut self, name: &str, value: &Array) -> Self {
        self.graph.initializer.push(array_to_proto(name, value));
        self
    }

    /// Appends a node.
    pub fn node(mut self, node: NodeBuilder) -> Self {
        self.graph.node.push(node.build());
        self
    }

    /// Appends an attribute-free node.
    pub fn op(self, op_type: &str, inputs: &[&str], outputs: &[&str]) -> Self {
        self.node(NodeBuilder::new(op_type, inputs, outputs))
    }

    /// The finished model (IR version 8, producer `aneforge-test`).
    pub fn build(self) -> ModelProto {
        ModelProto {
            ir_version: 8,
            producer_name: "aneforge-test".into(),
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: self.opset }],
            graph: Some(self.graph),
            ..Default::default()
        }
    }

    /// The finished model serialised, as it would be on disk.
    pub fn to_bytes(self) -> Vec<u8> {
        self.build().encode_to_vec()
    }
}
