//! ONNX graph → ANEForge core graph.
//!
//! The walk is the one [`crate::fold`] describes: nodes in file order; each
//! node first tries to fold (shape math, constants); the rest become core
//! builder calls, whose inferred shapes are fed back to the folder so later
//! `Shape` nodes fold too. Every op in [`crate::SUPPORTED_OPS`] has an arm
//! in [`build_node`]; a test holds the two together.
//!
//! Before building anything the model's coverage is checked, so an
//! unsupported model fails once, listing every missing op.

use std::collections::HashMap;
use std::path::Path;

use aneforge::builder as b;
use aneforge::builder::{ConvArgs, PadSpec};
use aneforge::ops::{PadMode, ReduceKind, ResizeMode};
use aneforge::{DType as CoreDType, Tensor};

use crate::attr::{attrs, node_label, normalize_axis, Attrs};
use crate::coverage::coverage;
use crate::error::{OnnxError, Result};
use crate::fold::{broadcast_shapes, resolve_reshape, ConstFolder, MAX_FOLD_ELEMENTS};
use crate::model::OnnxModel;
use crate::proto::NodeProto;
use crate::tensor::{Array, DType};

/// Choices the caller makes about an import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Static shapes for graph inputs whose declared dims are symbolic
    /// (e.g. `batch`), by input name.
    pub input_shapes: HashMap<String, Vec<usize>>,
}

/// The result of an import: named core tensors ready for `aneforge::compile`.
#[derive(Debug, Clone)]
pub struct Imported {
    /// Graph inputs (engine ports), in the model's order.
    pub inputs: Vec<(String, Tensor)>,
    /// Graph outputs, named as in the model, in its order.
    pub outputs: Vec<(String, Tensor)>,
}

/// Reads `path` and imports it (see [`import_model`]).
pub fn import_file(path: impl AsRef<Path>, options: &ImportOptions) -> Result<Imported> {
    import_model(&OnnxModel::load(path)?, options)
}

/// Builds the core graph for a loaded model.
///
/// Refuses, before building anything: an opset outside 13–21, any op not in
/// [`crate::SUPPORTED_OPS`] (all listed in one [`OnnxError::UnsupportedOps`]),
/// and a graph with dangling references (a truncated or stripped file).
pub fn import_model(model: &OnnxModel, options: &ImportOptions) -> Result<Imported> {
    model.check_opset()?;
    if let Some(e) = coverage(model).unsupported_error() {
        return Err(e);
    }
    model.check_references()?;

    let mut cx = Importer { folder: ConstFolder::from_model(model)?, values: HashMap::new() };

    let mut inputs = Vec::new();
    for gi in model.inputs() {
        let shape = match options.input_shapes.get(&gi.name) {
            Some(s) => s.clone(),
            None => gi.static_shape().ok_or_else(|| OnnxError::Import {
                node: format!("graph input \"{}\"", gi.name),
                reason: format!(
                    "has symbolic or unknown dims {:?}; pass a static shape for it (input_shapes)",
                    gi.dims.clone().unwrap_or_default()
                ),
            })?,
        };
        let dtype = match gi.dtype {
            // The engine's ports carry fp16; fp32 callers are converted at the port.
            Some(DType::F32) | Some(DType::F16) => CoreDType::F16,
            Some(DType::U8) => CoreDType::U8,
            Some(DType::I8) => CoreDType::I8,
            other => {
                return Err(OnnxError::Import {
                    node: format!("graph input \"{}\"", gi.name),
                    reason: format!("has element type {other:?}; engine inputs are float, uint8 or int8"),
                })
            }
        };
        let t = b::input(&shape, dtype, Some(&gi.name))
            .map_err(|source| OnnxError::Core { node: format!("graph input \"{}\"", gi.name), source })?;
        cx.folder.set_shape(gi.name.clone(), shape);
        cx.values.insert(gi.name.clone(), t.clone());
        inputs.push((gi.name.clone(), t));
    }

    for node in model.nodes() {
        if cx.folder.fold_node(node)? {
            continue;
        }
        let outs = build_node(&mut cx, node)?;
        for (name, t) in node.output.iter().zip(outs) {
            if name.is_empty() {
                continue;
            }
            cx.folder.set_shape(name.clone(), t.shape().to_vec());
            cx.values.insert(name.clone(), t);
        }
    }

    let mut outputs = Vec::new();
    for name in model.output_names() {
        let mut t = cx.tensor(name, "graph output")?;
        if inputs.iter().any(|(_, i)| i.ptr_eq(&t)) {
            // Naming an input node would rename the input port; give the
            // output a node of its own.
            t = b::mul_scalar(&t, 1.0).map_err(|source| OnnxError::Core { node: format!("graph output \"{name}\""), source })?;
        }
        outputs.push((name.to_string(), t.named(name)));
    }
    Ok(Imported { inputs, outputs })
}

/// The state of one import.
struct Importer {
    folder: ConstFolder,
    values: HashMap<String, Tensor>,
}

impl Importer {
    /// The core tensor for value `name`, materialising a constant on first use.
    fn tensor(&mut self, name: &str, user: &str) -> Result<Tensor> {
        if let Some(t) = self.values.get(name) {
            return Ok(t.clone());
        }
        let Some(len) = self.folder.constant(name).map(Array::len) else {
            return Err(OnnxError::Import { node: user.to_string(), reason: format!("value \"{name}\" is not defined") });
        };
        // Weights are too big to fold anyway: move them into the core instead
        // of copying (the folder keeps their shape for later `Shape` nodes).
        let built = if len > MAX_FOLD_ELEMENTS {
            match self.folder.take_constant(name) {
                Some(a) => {
                    self.folder.set_shape(name, a.shape().to_vec());
                    const_tensor(a)
                }
                None => unreachable_constant(name),
            }
        } else {
            match self.folder.constant(name) {
                Some(a) => const_tensor(a.clone()),
                None => unreachable_constant(name),
            }
        };
        let t = built.map_err(|source| OnnxError::Core { node: user.to_string(), source })?;
        self.values.insert(name.to_string(), t.clone());
        Ok(t)
    }
}

/// A folded or initializer value as a core constant: floats in fp16 (the
/// engine's type), integers as int32, bools as bool. Takes the array by
/// value so fp32 weights move into the core without a copy.
fn const_tensor(a: Array) -> aneforge::Result<Tensor> {
    let dtype = match a.dtype() {
        DType::F32 | DType::F16 => CoreDType::F16,
        DType::Bool => CoreDType::Bool,
        DType::I64 | DType::I32 => CoreDType::I32,
        DType::I8 => CoreDType::I8,
        DType::U8 => CoreDType::U8,
    };
    let (shape, data) = a.into_f32_parts();
    b::constant(data, shape, dtype)
}

/// Only reachable if the folder changed between two lines of `tensor`.
fn unreachable_constant(name: &str) -> aneforge::Result<Tensor> {
    Err(aneforge::Error::value("onnx import", format!("constant \"{name}\" vanished during import")))
}

/// Per-node context: the node, its attributes, and helpers that name it in errors.
struct Node<'a> {
    node: &'a NodeProto,
    a: Attrs<'a>,
}

impl<'a> Node<'a> {
    fn label(&self) -> String {
        node_label(self.node)
    }

    fn fail(&self, reason: impl Into<String>) -> OnnxError {
        OnnxError::Import { node: self.label(), reason: reason.into() }
    }

    fn core<T>(&self, r: aneforge::Result<T>) -> Result<T> {
        r.map_err(|source| OnnxError::Core { node: self.label(), source })
    }

    fn has_input(&self, i: usize) -> bool {
        self.node.input.get(i).is_some_and(|s| !s.is_empty())
    }

    fn input(&self, cx: &mut Importer, i: usize) -> Result<Tensor> {
        match self.node.input.get(i).filter(|s| !s.is_empty()) {
            Some(name) => cx.tensor(name, &self.label()),
            None => Err(self.fail(format!("input {i} is required"))),
        }
    }

    fn opt_input(&self, cx: &mut Importer, i: usize) -> Result<Option<Tensor>> {
        if self.has_input(i) {
            self.input(cx, i).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A shape-like input that must have folded to a constant.
    fn const_input<'c>(&self, cx: &'c Importer, i: usize, what: &str) -> Result<Option<&'c Array>> {
        if !self.has_input(i) {
            return Ok(None);
        }
        match cx.folder.const_input(self.node, i) {
            Some(a) => Ok(Some(a)),
            None => Err(self.fail(format!(
                "{what} (input {i}) must be a constant or fold to one at import; it depends on runtime data"
            ))),
        }
    }

    fn const_ints(&self, cx: &Importer, i: usize, what: &str) -> Result<Option<Vec<i64>>> {
        match self.const_input(cx, i, what)? {
            None => Ok(None),
            Some(a) => a.to_i64_vec().map(Some).ok_or_else(|| self.fail(format!("{what} must be integers"))),
        }
    }

    fn const_scalar_f32(&self, cx: &Importer, i: usize, what: &str) -> Result<Option<f32>> {
        match self.const_input(cx, i, what)? {
            None => Ok(None),
            Some(a) if a.len() == 1 => Ok(a.to_f32_vec().first().copied()),
            Some(_) => Err(self.fail(format!("{what} must be a single value"))),
        }
    }

    /// Axes from the `axes` attribute or, in newer opsets, input `i`.
    fn axes(&self, cx: &Importer, i: usize) -> Result<Option<Vec<i64>>> {
        if let Some(a) = self.a.opt_ints("axes")? {
            return Ok(Some(a.to_vec()));
        }
        self.const_ints(cx, i, "axes")
    }

    fn spatial2(&self, name: &str, default: usize, rank: usize) -> Result<[usize; 2]> {
        let Some(v) = self.a.opt_ints(name)? else { return Ok([default; 2]) };
        let v: Vec<usize> = v
            .iter()
            .map(|&x| usize::try_from(x).map_err(|_| self.a.invalid(name, "must be non-negative")))
            .collect::<Result<_>>()?;
        match (rank, v.as_slice()) {
            (1, [w]) => Ok([1, *w]),
            (2, [h, w]) => Ok([*h, *w]),
            _ => Err(self.a.invalid(name, format!("{v:?} does not fit a {rank}-D window"))),
        }
    }

    /// Padding for a conv/pool with `rank` spatial dims, as the core's [t, l, b, r].
    fn pads(&self, rank: usize) -> Result<PadSpec> {
        match self.a.string_or("auto_pad", "NOTSET")? {
            "NOTSET" => {}
            "VALID" => return Ok(PadSpec::Explicit([0; 4])),
            "SAME_UPPER" => return Ok(PadSpec::Same),
            other => return Err(self.a.invalid("auto_pad", format!("{other} is not supported (NOTSET, VALID, SAME_UPPER)"))),
        }
        let Some(p) = self.a.opt_ints("pads")? else { return Ok(PadSpec::Explicit([0; 4])) };
        let p: Vec<usize> = p
            .iter()
            .map(|&x| usize::try_from(x).map_err(|_| self.a.invalid("pads", "negative padding")))
            .collect::<Result<_>>()?;
        match (rank, p.as_slice()) {
            (1, [l, r]) => Ok(PadSpec::Explicit([0, *l, 0, *r])),
            (2, [t, l, bo, r]) => Ok(PadSpec::Explicit([*t, *l, *bo, *r])),
            _ => Err(self.a.invalid("pads", format!("{p:?} does not fit a {rank}-D window"))),
        }
    }

    fn one_output(&self, t: Tensor) -> Result<Vec<Tensor>> {
        if self.node.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(self.fail("only the first output is supported (the others are training statistics or indices)"));
        }
        Ok(vec![t])
    }
}

fn core_dtype(to: i64, n: &Node<'_>) -> Result<CoreDType> {
    match i32::try_from(to).ok().and_then(DType::from_onnx) {
        Some(DType::F32 | DType::F16) => Ok(CoreDType::F16),
        Some(DType::I64 | DType::I32) => Ok(CoreDType::I32),
        Some(DType::I8) => Ok(CoreDType::I8),
        Some(DType::U8) => Ok(CoreDType::U8),
        Some(DType::Bool) => Ok(CoreDType::Bool),
        None => Err(n.a.invalid("to", format!("cast to {} is not supported", crate::tensor::onnx_dtype_name(to as i32)))),
    }
}

/// Builds the core ops for one node that did not fold.
fn build_node(cx: &mut Importer, node: &NodeProto) -> Result<Vec<Tensor>> {
    let n = Node { node, a: attrs(node) };
    let op = node.op_type.as_str();
    let t = match op {
        // ---- elementwise ----
        "Relu" | "Sigmoid" | "Tanh" | "Exp" | "Log" | "Sqrt" | "Reciprocal" | "Neg" | "Abs" | "Erf" | "HardSwish" => {
            let x = n.input(cx, 0)?;
            let f = match op {
                "Relu" => b::relu,
                "Sigmoid" => b::sigmoid,
                "Tanh" => b::tanh,
                "Exp" => b::exp,
                "Log" => b::log,
                "Sqrt" => b::sqrt,
                "Reciprocal" => b::reciprocal,
                "Neg" => b::neg,
                "Abs" => b::abs,
                "Erf" => b::erf,
                _ => b::hard_swish,
            };
            n.core(f(&x))?
        }
        "LeakyRelu" => {
            let x = n.input(cx, 0)?;
            n.core(b::leaky_relu(&x, n.a.float_or("alpha", 0.01)?))?
        }
        "Elu" => {
            let x = n.input(cx, 0)?;
            n.core(b::elu(&x, n.a.float_or("alpha", 1.0)?))?
        }
        "HardSigmoid" => {
            let x = n.input(cx, 0)?;
            n.core(b::hard_sigmoid(&x, n.a.float_or("alpha", 0.2)?, n.a.float_or("beta", 0.5)?))?
        }
        "Gelu" => {
            let x = n.input(cx, 0)?;
            n.core(b::gelu(&x, n.a.string_or("approximate", "none")?))?
        }
        "PRelu" => {
            let (x, s) = (n.input(cx, 0)?, n.input(cx, 1)?);
            n.core(b::prelu(&x, &s))?
        }
        "Clip" => {
            let x = n.input(cx, 0)?;
            let lo = n.const_scalar_f32(cx, 1, "min")?.unwrap_or(f32::NEG_INFINITY);
            let hi = n.const_scalar_f32(cx, 2, "max")?.unwrap_or(f32::INFINITY);
            n.core(b::clip(&x, lo, hi))?
        }
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Equal" | "Less" | "Greater" => {
            let (x, y) = (n.input(cx, 0)?, n.input(cx, 1)?);
            let f = match op {
                "Add" => b::add,
                "Sub" => b::sub,
                "Mul" => b::mul,
                "Div" => b::div,
                "Pow" => b::pow,
                "Equal" => b::equal,
                "Less" => b::less,
                _ => b::greater,
            };
            n.core(f(&x, &y))?
        }
        "Min" | "Max" => {
            let f = if op == "Min" { b::minimum } else { b::maximum };
            let mut acc = n.input(cx, 0)?;
            for i in 1..node.input.len() {
                let y = n.input(cx, i)?;
                acc = n.core(f(&acc, &y))?;
            }
            acc
        }
        "Where" => {
            let (c, x, y) = (n.input(cx, 0)?, n.input(cx, 1)?, n.input(cx, 2)?);
            n.core(b::where_(&c, &x, &y))?
        }
        "Cast" => {
            let x = n.input(cx, 0)?;
            let to = core_dtype(n.a.int("to")?, &n)?;
            n.core(b::cast(&x, to))?
        }
        "Identity" | "Dropout" => {
            if op == "Dropout" && node.output.get(1).is_some_and(|o| !o.is_empty()) {
                return Err(n.fail("the mask output of Dropout is not supported (inference only)"));
            }
            n.input(cx, 0)?
        }

        // ---- linear algebra and convolution ----
        "MatMul" => {
            let (x, y) = (n.input(cx, 0)?, n.input(cx, 1)?);
            n.core(b::matmul(&x, &y))?
        }
        "Gemm" => {
            let (x, y) = (n.input(cx, 0)?, n.input(cx, 1)?);
            let (ta, tb) = (n.a.int_or("transA", 0)? != 0, n.a.int_or("transB", 0)? != 0);
            let (alpha, beta) = (n.a.float_or("alpha", 1.0)?, n.a.float_or("beta", 1.0)?);
            let mut out = n.core(b::matmul_t(&x, &y, ta, tb))?;
            if alpha != 1.0 {
                out = n.core(b::mul_scalar(&out, alpha))?;
            }
            if let Some(c) = n.opt_input(cx, 2)? {
                let c = if beta != 1.0 { n.core(b::mul_scalar(&c, beta))? } else { c };
                out = n.core(b::add(&out, &c))?;
            }
            out
        }
        "Conv" | "ConvTranspose" => {
            let (x, w) = (n.input(cx, 0)?, n.input(cx, 1)?);
            let bias = n.opt_input(cx, 2)?;
            let rank = x.rank().saturating_sub(2);
            if !(1..=2).contains(&rank) {
                return Err(n.fail(format!("{rank}-D convolution is not supported (1-D and 2-D are)")));
            }
            let args = ConvArgs {
                stride: n.spatial2("strides", 1, rank)?,
                pad: n.pads(rank)?,
                dilation: n.spatial2("dilations", 1, rank)?,
                groups: usize::try_from(n.a.int_or("group", 1)?).map_err(|_| n.a.invalid("group", "must be positive"))?,
            };
            if op == "Conv" {
                n.core(b::conv(&x, &w, bias.as_ref(), &args))?
            } else {
                if n.a.has("output_shape") {
                    return Err(n.a.invalid("output_shape", "is not supported; give pads and output_padding"));
                }
                let op_pad = n.spatial2("output_padding", 0, rank)?;
                n.core(b::conv_transpose(&x, &w, bias.as_ref(), &args, op_pad))?
            }
        }

        // ---- pooling and resizing ----
        "MaxPool" | "AveragePool" => {
            let x = n.input(cx, 0)?;
            let rank = x.rank().saturating_sub(2);
            if !(1..=2).contains(&rank) {
                return Err(n.fail(format!("{rank}-D pooling is not supported (1-D and 2-D are)")));
            }
            if n.spatial2("dilations", 1, rank)? != [1, 1] {
                return Err(n.a.invalid("dilations", "dilated pooling is not supported"));
            }
            let kernel = n.spatial2("kernel_shape", 0, rank)?;
            if !n.a.has("kernel_shape") {
                return Err(n.error_missing("kernel_shape"));
            }
            let stride = Some(n.spatial2("strides", 1, rank)?);
            let pad = n.pads(rank)?;
            let ceil = n.a.int_or("ceil_mode", 0)? != 0;
            let y = if op == "MaxPool" {
                b::max_pool(&x, kernel, stride, &pad, ceil)
            } else {
                b::avg_pool(&x, kernel, stride, &pad, ceil, n.a.int_or("count_include_pad", 0)? != 0)
            };
            return n.one_output(n.core(y)?);
        }
        "GlobalAveragePool" => {
            let x = n.input(cx, 0)?;
            n.core(b::global_avg_pool(&x))?
        }
        "Resize" => resize(cx, &n)?,

        // ---- reductions and normalisation ----
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceL2" => {
            let x = n.input(cx, 0)?;
            let kind = match op {
                "ReduceMean" => ReduceKind::Mean,
                "ReduceSum" => ReduceKind::Sum,
                "ReduceMax" => ReduceKind::Max,
                "ReduceMin" => ReduceKind::Min,
                _ => ReduceKind::L2Norm,
            };
            let keep = n.a.int_or("keepdims", 1)? != 0;
            let axes = n.axes(cx, 1)?.filter(|a| !a.is_empty());
            if axes.is_none() && n.a.int_or("noop_with_empty_axes", 0)? != 0 {
                x
            } else {
                n.core(b::reduce(&x, kind, axes.as_deref(), keep))?
            }
        }
        "Softmax" | "LogSoftmax" => {
            let x = n.input(cx, 0)?;
            let axis = n.a.int_or("axis", -1)?;
            n.core(if op == "Softmax" { b::softmax(&x, axis) } else { b::log_softmax(&x, axis) })?
        }
        "LayerNormalization" => {
            let x = n.input(cx, 0)?;
            let (g, bias) = (n.opt_input(cx, 1)?, n.opt_input(cx, 2)?);
            let axis = n.a.axis("axis", -1, x.rank())?;
            let axes: Vec<i64> = (axis..x.rank()).map(|a| a as i64).collect();
            let t = n.core(b::layer_norm(&x, &axes, g.as_ref(), bias.as_ref(), n.a.float_or("epsilon", 1e-5)?))?;
            return n.one_output(t);
        }
        "BatchNormalization" => {
            if n.a.int_or("training_mode", 0)? != 0 {
                return Err(n.a.invalid("training_mode", "training-mode batch norm is not supported (inference only)"));
            }
            let x = n.input(cx, 0)?;
            let (g, bias, mean, var) = (n.input(cx, 1)?, n.input(cx, 2)?, n.input(cx, 3)?, n.input(cx, 4)?);
            let t = n.core(b::batch_norm(&x, &mean, &var, Some(&g), Some(&bias), n.a.float_or("epsilon", 1e-5)?))?;
            return n.one_output(t);
        }
        "InstanceNormalization" => {
            let x = n.input(cx, 0)?;
            let (g, bias) = (n.input(cx, 1)?, n.input(cx, 2)?);
            n.core(b::instance_norm(&x, Some(&g), Some(&bias), n.a.float_or("epsilon", 1e-5)?))?
        }

        // ---- shape and data movement ----
        "Reshape" => {
            let x = n.input(cx, 0)?;
            let spec = n.const_ints(cx, 1, "shape")?.ok_or_else(|| n.fail("shape (input 1) is required"))?;
            let shape = resolve_reshape(x.shape(), &spec, n.a.int_or("allowzero", 0)? != 0).map_err(|e| n.fail(e))?;
            n.core(b::reshape(&x, &shape))?
        }
        "Flatten" => {
            let x = n.input(cx, 0)?;
            let r = x.rank();
            let raw = n.a.int_or("axis", 1)?;
            // Flatten's axis lies in [-r, r]; negative counts from r, not r + 1.
            let axis = if raw < 0 { raw + r as i64 } else { raw };
            if !(0..=r as i64).contains(&axis) {
                return Err(n.a.invalid("axis", format!("{raw} is out of range for rank {r}")));
            }
            let axis = axis as usize;
            let outer: usize = x.shape()[..axis].iter().product();
            let inner: usize = x.shape()[axis..].iter().product();
            n.core(b::reshape(&x, &[outer, inner]))?
        }
        "Transpose" => {
            let x = n.input(cx, 0)?;
            n.core(b::permute(&x, n.a.opt_ints("perm")?))?
        }
        "Squeeze" => {
            let x = n.input(cx, 0)?;
            let axes = n.axes(cx, 1)?;
            n.core(b::squeeze(&x, axes.as_deref()))?
        }
        "Unsqueeze" => {
            let x = n.input(cx, 0)?;
            let axes = n.axes(cx, 1)?.ok_or_else(|| n.fail("axes are required"))?;
            let out_rank = x.rank() + axes.len();
            let mut norm: Vec<usize> = axes
                .iter()
                .map(|&a| normalize_axis(a, out_rank).ok_or_else(|| n.fail(format!("axis {a} out of range"))))
                .collect::<Result<_>>()?;
            norm.sort_unstable();
            if norm.windows(2).any(|w| w[0] == w[1]) {
                return Err(n.fail(format!("axes {axes:?} repeat an axis")));
            }
            let mut shape = x.shape().to_vec();
            for a in norm {
                shape.insert(a, 1);
            }
            n.core(b::reshape(&x, &shape))?
        }
        "Concat" => {
            let xs: Vec<Tensor> = (0..node.input.len()).map(|i| n.input(cx, i)).collect::<Result<_>>()?;
            n.core(b::concat(&xs, n.a.int("axis")?))?
        }
        "Split" => return split(cx, &n),
        "Slice" => slice(cx, &n)?,
        "Gather" => {
            let x = n.input(cx, 0)?;
            let idx = n.const_input(cx, 1, "indices")?.ok_or_else(|| n.fail("indices are required"))?;
            let values = idx.to_i64_vec().ok_or_else(|| n.fail("indices must be integers"))?;
            let shape = idx.shape().to_vec();
            n.core(b::gather(&x, &values, &shape, n.a.int_or("axis", 0)?))?
        }
        "Expand" => {
            let x = n.input(cx, 0)?;
            let dims = n.const_ints(cx, 1, "shape")?.ok_or_else(|| n.fail("shape is required"))?;
            let dims: Vec<usize> =
                dims.iter().map(|&d| usize::try_from(d).map_err(|_| n.fail("negative dim in shape"))).collect::<Result<_>>()?;
            let target = broadcast_shapes(&[x.shape(), &dims])
                .ok_or_else(|| n.fail(format!("cannot expand {:?} to {dims:?}", x.shape())))?;
            n.core(b::broadcast_to(&x, &target))?
        }
        "Tile" => {
            let x = n.input(cx, 0)?;
            let reps = n.const_ints(cx, 1, "repeats")?.ok_or_else(|| n.fail("repeats are required"))?;
            let reps: Vec<usize> =
                reps.iter().map(|&r| usize::try_from(r).map_err(|_| n.fail("negative repeat"))).collect::<Result<_>>()?;
            let tiled: Option<Vec<usize>> = x.shape().iter().zip(&reps).map(|(&d, &r)| d.checked_mul(r)).collect();
            if tiled.as_deref().map(crate::tensor::numel).is_none_or(|total| total == usize::MAX) {
                return Err(n.fail(format!("repeats {reps:?} give an impossibly large tensor")));
            }
            n.core(b::tile(&x, &reps))?
        }
        "Pad" => pad(cx, &n)?,
        "DepthToSpace" => {
            let x = n.input(cx, 0)?;
            let bs = n.blocksize(&x)?;
            match n.a.string_or("mode", "DCR")? {
                "DCR" => n.core(b::depth_to_space(&x, bs))?,
                "CRD" => n.core(b::pixel_shuffle(&x, bs))?,
                other => return Err(n.a.invalid("mode", format!("{other} is not DCR or CRD"))),
            }
        }
        "SpaceToDepth" => {
            let x = n.input(cx, 0)?;
            let bs = n.blocksize(&x)?;
            n.core(b::space_to_depth(&x, bs))?
        }
        "Einsum" => {
            let xs: Vec<Tensor> = (0..node.input.len()).map(|i| n.input(cx, i)).collect::<Result<_>>()?;
            n.core(b::einsum(n.a.string("equation")?, &xs))?
        }

        // Shape ops are supported only by folding; reaching here means they could not fold.
        "Shape" | "Size" | "Constant" | "ConstantOfShape" | "Range" => {
            return Err(n.fail("could not be folded at import: an input's shape or value is not static"));
        }
        other => return Err(n.fail(format!("{other} is not supported"))),
    };
    n.one_output(t)
}

impl Node<'_> {
    /// `blocksize`, checked against the tensor so the core never sees an
    /// absurd value (its squares would overflow).
    fn blocksize(&self, x: &Tensor) -> Result<usize> {
        let bs = self.a.int("blocksize")?;
        let limit = x.shape().iter().copied().max().unwrap_or(1).max(1);
        match usize::try_from(bs) {
            Ok(v) if (1..=limit).contains(&v) => Ok(v),
            _ => Err(self.a.invalid("blocksize", format!("{bs} must be between 1 and {limit}"))),
        }
    }

    fn error_missing(&self, name: &str) -> OnnxError {
        self.a.error(name, crate::error::AttrProblem::Missing)
    }
}

fn split(cx: &mut Importer, n: &Node<'_>) -> Result<Vec<Tensor>> {
    let x = n.input(cx, 0)?;
    let axis = n.a.int_or("axis", 0)?;
    let outputs = n.node.output.len();
    let sizes = match n.const_ints(cx, 1, "split")? {
        Some(s) => {
            let sizes: Vec<usize> =
                s.iter().map(|&v| usize::try_from(v).map_err(|_| n.fail("negative split size"))).collect::<Result<_>>()?;
            // The core checks the sum; make sure computing it cannot overflow.
            if sizes.iter().try_fold(0usize, |a, &v| a.checked_add(v)).is_none() {
                return Err(n.fail(format!("split sizes {s:?} overflow")));
            }
            sizes
        }
        None => {
            let ax = normalize_axis(axis, x.rank()).ok_or_else(|| n.a.invalid("axis", "out of range"))?;
            let parts = n.a.opt_int("num_outputs")?.map(|v| v as usize).unwrap_or(outputs).max(1);
            let d = x.shape()[ax];
            // Split-18: the last chunk is smaller when d does not divide evenly.
            let chunk = d.div_ceil(parts);
            let mut s = vec![chunk; d / chunk];
            if d % chunk != 0 {
                s.push(d % chunk);
            }
            s
        }
    };
    n.core(b::split(&x, &sizes, axis))
}

fn slice(cx: &mut Importer, n: &Node<'_>) -> Result<Tensor> {
    let x = n.input(cx, 0)?;
    let starts = n.const_ints(cx, 1, "starts")?.ok_or_else(|| n.fail("starts are required"))?;
    let ends = n.const_ints(cx, 2, "ends")?.ok_or_else(|| n.fail("ends are required"))?;
    let axes = n.const_ints(cx, 3, "axes")?.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = n.const_ints(cx, 4, "steps")?.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(n.fail("starts, ends, axes and steps differ in length"));
    }
    let r = x.rank();
    let mut ranges: Vec<(Option<i64>, Option<i64>, i64)> = vec![(None, None, 1); r];
    for k in 0..starts.len() {
        let ax = normalize_axis(axes[k], r).ok_or_else(|| n.fail(format!("axis {} out of range", axes[k])))?;
        let d = x.shape()[ax] as i64;
        let step = steps[k];
        // ONNX clamps out-of-range bounds; pass the core only in-range ones
        // (an end before the first element, for a negative step, is `None`).
        let adj = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (s, e) = if step > 0 {
            (Some(adj(starts[k]).clamp(0, d)), Some(adj(ends[k]).clamp(0, d)))
        } else {
            let e = adj(ends[k]);
            (Some(adj(starts[k]).clamp(0, d - 1)), if e < 0 { None } else { Some(e.min(d - 1)) })
        };
        ranges[ax] = (s, e, step);
    }
    n.core(b::slice(&x, &ranges))
}

fn pad(cx: &mut Importer, n: &Node<'_>) -> Result<Tensor> {
    let x = n.input(cx, 0)?;
    let r = x.rank();
    let pads = n.const_ints(cx, 1, "pads")?.ok_or_else(|| n.fail("pads are required"))?;
    let value = n.const_scalar_f32(cx, 2, "constant_value")?.unwrap_or(0.0);
    let axes: Vec<usize> = match n.const_ints(cx, 3, "axes")? {
        Some(a) => a
            .iter()
            .map(|&v| normalize_axis(v, r).ok_or_else(|| n.fail(format!("axis {v} out of range"))))
            .collect::<Result<_>>()?,
        None => (0..r).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(n.fail(format!("{} pads for {} axes", pads.len(), axes.len())));
    }
    let mut full = vec![(0usize, 0usize); r];
    for (k, &ax) in axes.iter().enumerate() {
        let (lo, hi) = (pads[k], pads[k + axes.len()]);
        let to = |v: i64| usize::try_from(v).map_err(|_| n.fail("negative pads (cropping) are not supported"));
        full[ax] = (to(lo)?, to(hi)?);
    }
    // Refuse padded shapes that do not fit in memory arithmetic at all.
    let padded: Option<Vec<usize>> =
        x.shape().iter().zip(&full).map(|(&d, &(lo, hi))| d.checked_add(lo)?.checked_add(hi)).collect();
    if padded.as_deref().map(crate::tensor::numel).is_none_or(|total| total == usize::MAX) {
        return Err(n.fail(format!("pads {pads:?} give an impossibly large tensor")));
    }
    let mode = match n.a.string_or("mode", "constant")? {
        "constant" => PadMode::Constant(value),
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Replicate,
        other => return Err(n.a.invalid("mode", format!("{other} is not supported (constant, reflect, edge)"))),
    };
    n.core(b::pad(&x, &full, mode))
}

/// Largest spatial side a `Resize` may produce: far beyond any real model,
/// small enough that a corrupt scale cannot ask for an impossible tensor.
const MAX_RESIZE_DIM: usize = 1 << 16;

fn resize(cx: &mut Importer, n: &Node<'_>) -> Result<Tensor> {
    let x = n.input(cx, 0)?;
    if x.rank() != 4 {
        return Err(n.fail(format!("only 4-D [N, C, H, W] inputs are supported, got rank {}", x.rank())));
    }
    let s = x.shape().to_vec();
    let size: [usize; 2] = if let Some(sizes) = n.const_ints(cx, 3, "sizes")? {
        match sizes.as_slice() {
            [a, c, h, w] if *a as usize == s[0] && *c as usize == s[1] && *h > 0 && *w > 0 => [*h as usize, *w as usize],
            _ => return Err(n.fail(format!("sizes {sizes:?} must keep N and C of {s:?}"))),
        }
    } else {
        let scales = n
            .const_input(cx, 2, "scales")?
            .map(Array::to_f32_vec)
            .ok_or_else(|| n.fail("either scales or sizes must be given"))?;
        match scales.as_slice() {
            [1.0, 1.0, h, w] if h.is_finite() && w.is_finite() && *h > 0.0 && *w > 0.0 => {
                // ONNX: output size = floor(input size * scale).
                let out = |d: usize, k: f32| (d as f64 * k as f64).floor();
                let (oh, ow) = (out(s[2], *h), out(s[3], *w));
                if !(1.0..=MAX_RESIZE_DIM as f64).contains(&oh) || !(1.0..=MAX_RESIZE_DIM as f64).contains(&ow) {
                    return Err(n.fail(format!("scales {scales:?} give an output of {oh} x {ow}")));
                }
                [oh as usize, ow as usize]
            }
            _ => return Err(n.fail(format!("scales {scales:?} must be 1 on N and C and positive on H and W"))),
        }
    };
    if size.iter().any(|&d| d > MAX_RESIZE_DIM) {
        return Err(n.fail(format!("output size {size:?} exceeds {MAX_RESIZE_DIM} per side")));
    }
    if n.a.int_or("antialias", 0)? != 0 {
        return Err(n.a.invalid("antialias", "antialiased resize is not supported"));
    }
    if n.a.has("axes") {
        return Err(n.a.invalid("axes", "is not supported; give scales or sizes for all four axes"));
    }
    if n.a.string_or("keep_aspect_ratio_policy", "stretch")? != "stretch" {
        return Err(n.a.invalid("keep_aspect_ratio_policy", "only \"stretch\" is supported"));
    }
    let ctm = n.a.string_or("coordinate_transformation_mode", "half_pixel")?;
    let mode = match n.a.string_or("mode", "nearest")? {
        "nearest" => {
            let nm = n.a.string_or("nearest_mode", "round_prefer_floor")?;
            if ctm != "asymmetric" || nm != "floor" {
                return Err(n.fail(format!(
                    "nearest resize with coordinate_transformation_mode={ctm}, nearest_mode={nm} is not supported \
                     (asymmetric + floor, PyTorch's default, is)"
                )));
            }
            ResizeMode::Nearest
        }
        "linear" => match ctm {
            "half_pixel" | "pytorch_half_pixel" => ResizeMode::Bilinear { align_corners: false },
            "align_corners" => ResizeMode::Bilinear { align_corners: true },
            other => return Err(n.fail(format!("linear resize with coordinate_transformation_mode={other} is not supported"))),
        },
        other => return Err(n.a.invalid("mode", format!("{other} is not supported (nearest, linear)"))),
    };
    n.core(b::resize(&x, size, mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{ModelBuilder, NodeBuilder};
    use crate::coverage::SUPPORTED_OPS;

    /// Every op the coverage table promises has an arm in `build_node` or folds.
    #[test]
    fn every_supported_op_has_an_importer() {
        let full = include_str!("import.rs");
        let src = full.split("#[cfg(test)]").next().unwrap_or(full);
        for op in SUPPORTED_OPS {
            let quoted = format!("\"{}\"", op.op_type);
            assert!(src.contains(&quoted), "{} has no importer arm", op.op_type);
        }
    }

    #[test]
    fn unsupported_ops_are_listed_together_before_building() {
        let m = ModelBuilder::new(17)
            .input("x", DType::F32, &[1, 4])
            .op("LSTM", &["x"], &["a"])
            .op("NonMaxSuppression", &["a"], &["y"])
            .output("y")
            .build();
        let e = import_model(&OnnxModel::from_proto(m, "m.onnx").expect("model"), &ImportOptions::default())
            .expect_err("unsupported");
        let msg = e.to_string();
        assert!(msg.contains("LSTM") && msg.contains("NonMaxSuppression"), "{msg}");
    }

    #[test]
    fn shape_math_folds_and_the_graph_builds() {
        let m = ModelBuilder::new(17)
            .input("x", DType::F32, &[2, 3, 4])
            .op("Shape", &["x"], &["s"])
            .node(NodeBuilder::new("Constant", &[], &["i"]).attr_tensor("value", &Array::scalar_i64(0)))
            .op("Gather", &["s", "i"], &["n"])
            .node(NodeBuilder::new("Constant", &[], &["ax"]).attr_ints("value_ints", &[0]))
            .op("Unsqueeze", &["n", "ax"], &["n1"])
            .node(NodeBuilder::new("Constant", &[], &["m1"]).attr_ints("value_ints", &[-1]))
            .node(NodeBuilder::new("Concat", &["n1", "m1"], &["t"]).attr_int("axis", 0))
            .op("Reshape", &["x", "t"], &["r"])
            .op("Relu", &["r"], &["y"])
            .output("y")
            .build();
        let imp = import_model(&OnnxModel::from_proto(m, "m.onnx").expect("model"), &ImportOptions::default())
            .expect("imports");
        assert_eq!(imp.outputs[0].1.shape(), &[2, 12]);
        assert_eq!(imp.inputs[0].1.shape(), &[2, 3, 4]);
    }

    #[test]
    fn runtime_shape_inputs_are_refused_with_the_node_named() {
        let m = ModelBuilder::new(17)
            .input("x", DType::F32, &[2, 3])
            .input("s", DType::F32, &[2])
            .op("Reshape", &["x", "s"], &["y"])
            .output("y")
            .build();
        let e = import_model(&OnnxModel::from_proto(m, "m.onnx").expect("model"), &ImportOptions::default())
            .expect_err("runtime shape");
        assert!(e.to_string().contains("Reshape") && e.to_string().contains("runtime"), "{e}");
    }
}
