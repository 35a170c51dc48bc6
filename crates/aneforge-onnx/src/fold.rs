//! Import-time evaluation of shape subgraphs.
//!
//! Exporters compute shapes in the graph: `Shape → Gather → Unsqueeze →
//! Concat → Reshape`, `ConstantOfShape`, `Range`, a little int64 arithmetic.
//! The engine runs static programs, so these must become constants before
//! the real ops are built: after folding, `Reshape`, `Expand`, `Slice`,
//! `Tile`… find their shape-like inputs in [`ConstFolder::constant`].
//!
//! The importer walks the nodes in order and, for each one, first asks
//! [`ConstFolder::fold_node`]; only nodes that do not fold become graph ops,
//! and the importer reports their static output shapes back with
//! [`ConstFolder::set_shape`] so that a later `Shape` of them folds too.
//!
//! Folding is deliberately limited to small values ([`MAX_FOLD_ELEMENTS`]):
//! arithmetic on large weights is the core's `fold_constants` pass's job,
//! where it runs with the engine's numerics.

use std::collections::HashMap;

use half::f16;

use crate::attr::{attrs, node_label, normalize_axis};
use crate::error::{OnnxError, Result};
use crate::model::OnnxModel;
use crate::proto::{GraphProto, NodeProto};
use crate::tensor::{numel, Array, ArrayData, DType};

/// Largest result (in elements) an ordinary op is folded to; above it the
/// node is left for the graph, where the core decides.
pub const MAX_FOLD_ELEMENTS: usize = 1 << 16;

/// Largest tensor a fold-only op (`ConstantOfShape`, `Range`) may produce,
/// so a hostile file cannot make import allocate without bound.
pub const MAX_MATERIALIZED_ELEMENTS: usize = 1 << 28;

/// What the folder knows about one node input.
#[derive(Debug, Clone, Copy)]
pub enum Known<'a> {
    /// An omitted optional input (empty name).
    Absent,
    /// A constant value.
    Const(&'a Array),
    /// A runtime value whose static shape is known.
    Shape(&'a [usize]),
    /// Nothing known: the node cannot fold.
    Unknown,
}

impl<'a> Known<'a> {
    fn constant(self) -> Option<&'a Array> {
        match self {
            Known::Const(a) => Some(a),
            _ => None,
        }
    }

    fn shape(self) -> Option<&'a [usize]> {
        match self {
            Known::Const(a) => Some(a.shape()),
            Known::Shape(s) => Some(s),
            _ => None,
        }
    }
}

/// The set of op types [`eval_node`] can evaluate.
pub const FOLDABLE_OPS: &[&str] = &[
    "Add", "Cast", "Concat", "Constant", "ConstantOfShape", "Div", "Equal", "Expand", "Gather", "Greater",
    "Identity", "Less", "Max", "Min", "Mul", "Neg", "Range", "Reshape", "Shape", "Size", "Slice", "Squeeze",
    "Sub", "Unsqueeze", "Where",
];

/// Constants and static shapes known so far during an import, and the
/// evaluator that extends them node by node.
#[derive(Debug, Clone, Default)]
pub struct ConstFolder {
    consts: HashMap<String, Array>,
    shapes: HashMap<String, Vec<usize>>,
}

/// What [`ConstFolder::fold_graph`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FoldSummary {
    /// Indices (into `graph.node`) of the nodes that became constants.
    pub folded: Vec<usize>,
    /// Indices of the nodes left to build as graph ops, in order.
    pub remaining: Vec<usize>,
}

impl ConstFolder {
    /// An empty folder.
    pub fn new() -> ConstFolder {
        ConstFolder::default()
    }

    /// A folder seeded with a model's initializers (decoded) and every static
    /// shape the file declares (graph inputs, outputs and `value_info`).
    pub fn from_model(model: &OnnxModel) -> Result<ConstFolder> {
        Ok(ConstFolder { consts: model.initializers()?, shapes: model.value_info_shapes() })
    }

    /// Records a constant value (an initializer or anything the importer made).
    pub fn insert_constant(&mut self, name: impl Into<String>, value: Array) {
        self.consts.insert(name.into(), value);
    }

    /// Records the static shape of a runtime value the importer built.
    pub fn set_shape(&mut self, name: impl Into<String>, shape: Vec<usize>) {
        self.shapes.insert(name.into(), shape);
    }

    /// The constant named `name`, if known.
    pub fn constant(&self, name: &str) -> Option<&Array> {
        self.consts.get(name)
    }

    /// Removes and returns a constant (to hand large weights to the core without a copy).
    pub fn take_constant(&mut self, name: &str) -> Option<Array> {
        self.consts.remove(name)
    }

    /// The static shape of `name`, from a constant or a recorded shape.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.consts.get(name).map(Array::shape).or_else(|| self.shapes.get(name).map(Vec::as_slice))
    }

    /// What is known about `name` (empty name = omitted optional input).
    pub fn known(&self, name: &str) -> Known<'_> {
        if name.is_empty() {
            Known::Absent
        } else if let Some(a) = self.consts.get(name) {
            Known::Const(a)
        } else if let Some(s) = self.shapes.get(name) {
            Known::Shape(s)
        } else {
            Known::Unknown
        }
    }

    /// The constant feeding input `index` of `node`, if that input is constant.
    pub fn const_input(&self, node: &NodeProto, index: usize) -> Option<&Array> {
        node.input.get(index).and_then(|n| self.consts.get(n))
    }

    /// Tries to evaluate `node` now. On success its outputs become constants
    /// and it returns `true`; `false` means "not foldable, build it".
    /// Errors are for nodes whose inputs are known but inconsistent.
    pub fn fold_node(&mut self, node: &NodeProto) -> Result<bool> {
        let inputs: Vec<Known<'_>> = node.input.iter().map(|n| self.known(n)).collect();
        let Some(outputs) = eval_node(node, &inputs)? else {
            return Ok(false);
        };
        for (name, value) in node.output.iter().zip(outputs) {
            if !name.is_empty() {
                self.consts.insert(name.clone(), value);
            }
        }
        Ok(true)
    }

    /// Folds every foldable node of `graph` in order, using only what the
    /// file itself declares (no shape inference of runtime ops): the whole
    /// import-time story for graphs whose shape math starts from constants,
    /// graph inputs or annotated values.
    pub fn fold_graph(&mut self, graph: &GraphProto) -> Result<FoldSummary> {
        let mut summary = FoldSummary::default();
        for (i, node) in graph.node.iter().enumerate() {
            if self.fold_node(node)? {
                summary.folded.push(i);
            } else {
                summary.remaining.push(i);
            }
        }
        Ok(summary)
    }
}

/// Evaluates one node from what is known about its inputs.
///
/// `Ok(None)` means the node cannot (or should not) be folded: an input is
/// not constant, the op is not in [`FOLDABLE_OPS`], or the result would be
/// larger than [`MAX_FOLD_ELEMENTS`]. Errors name the node.
pub fn eval_node(node: &NodeProto, inputs: &[Known<'_>]) -> Result<Option<Vec<Array>>> {
    let ev = Eval { node, inputs };
    let out = match node.op_type.as_str() {
        _ if !(node.domain.is_empty() || node.domain == "ai.onnx") => None,
        "Constant" => Some(ev.constant()?),
        "Shape" => ev.shape_op()?,
        "Size" => ev.input_shape(0).map(|s| Array::scalar_i64(numel(s) as i64)),
        "Identity" => ev.all_const(1).map(|c| c[0].clone()),
        "Gather" => ev.gather()?,
        "Concat" => ev.concat()?,
        "ConstantOfShape" => ev.constant_of_shape()?,
        "Range" => ev.range()?,
        "Unsqueeze" => ev.unsqueeze()?,
        "Squeeze" => ev.squeeze()?,
        "Cast" => ev.cast()?,
        "Slice" => ev.slice()?,
        "Reshape" => ev.reshape()?,
        "Expand" => ev.expand()?,
        "Neg" => ev.unary()?,
        "Add" | "Sub" | "Mul" | "Div" | "Min" | "Max" => ev.arith()?,
        "Equal" | "Less" | "Greater" => ev.compare()?,
        "Where" => ev.where_op()?,
        _ => None,
    };
    Ok(out.map(|a| vec![a]))
}

/// Two broadcast operands: their shared dtype, the output shape, and each
/// operand's values laid out at that shape.
type Operands = (DType, Vec<usize>, Vals, Vals);

/// One node being evaluated, with its inputs.
struct Eval<'n, 'k> {
    node: &'n NodeProto,
    inputs: &'n [Known<'k>],
}

impl<'k> Eval<'_, 'k> {
    fn err(&self, reason: impl Into<String>) -> OnnxError {
        OnnxError::Fold { node: node_label(self.node), reason: reason.into() }
    }

    fn input(&self, i: usize) -> Known<'k> {
        self.inputs.get(i).copied().unwrap_or(Known::Absent)
    }

    fn input_const(&self, i: usize) -> Option<&'k Array> {
        self.input(i).constant()
    }

    fn input_shape(&self, i: usize) -> Option<&'k [usize]> {
        self.input(i).shape()
    }

    /// The first `n` inputs, if all are constant.
    fn all_const(&self, n: usize) -> Option<Vec<&'k Array>> {
        (0..n).map(|i| self.input_const(i)).collect()
    }

    /// An int-typed constant input as i64s (`Ok(None)` if not constant).
    fn ints_input(&self, i: usize, what: &str) -> Result<Option<Vec<i64>>> {
        match self.input_const(i) {
            None => Ok(None),
            Some(a) => a.to_i64_vec().map(Some).ok_or_else(|| self.err(format!("{what} must be an integer tensor"))),
        }
    }

    fn small(&self, shape: &[usize]) -> bool {
        checked_numel(shape).is_some_and(|n| n <= MAX_FOLD_ELEMENTS)
    }

    fn constant(&self) -> Result<Array> {
        let a = attrs(self.node);
        if let Some(t) = a.opt_tensor("value")? {
            return Ok(t);
        }
        if let Some(v) = a.opt_float("value_float")? {
            return Ok(Array::scalar_f32(v));
        }
        if let Some(v) = a.opt_floats("value_floats")? {
            return Ok(Array::from_f32s(v.to_vec()));
        }
        if let Some(v) = a.opt_int("value_int")? {
            return Ok(Array::scalar_i64(v));
        }
        if let Some(v) = a.opt_ints("value_ints")? {
            return Ok(Array::from_i64s(v.to_vec()));
        }
        match a.names().next() {
            Some(other) => Err(a.invalid(other, "this Constant form (strings or sparse tensors) is not supported")),
            None => Err(self.err("Constant has no value attribute")),
        }
    }

    fn shape_op(&self) -> Result<Option<Array>> {
        let Some(shape) = self.input_shape(0) else { return Ok(None) };
        let a = attrs(self.node);
        let r = shape.len() as i64;
        // Shape-15 start/end: negative counts from the back, then clamped.
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let start = clamp(a.int_or("start", 0)?);
        let end = clamp(a.int_or("end", r)?);
        let dims = shape.get(start..end.max(start)).unwrap_or(&[]);
        Ok(Some(Array::from_i64s(dims.iter().map(|&d| d as i64).collect())))
    }

    fn gather(&self) -> Result<Option<Array>> {
        let (Some(data), Some(idx)) = (self.input_const(0), self.input_const(1)) else { return Ok(None) };
        let axis = attrs(self.node).axis("axis", 0, data.rank())?;
        let indices = idx.to_i64_vec().ok_or_else(|| self.err("indices must be an integer tensor"))?;
        let dim = data.shape()[axis];
        let mut out_shape = data.shape()[..axis].to_vec();
        out_shape.extend_from_slice(idx.shape());
        out_shape.extend_from_slice(&data.shape()[axis + 1..]);
        if !self.small(&out_shape) {
            return Ok(None);
        }
        let resolved: Vec<usize> = indices
            .iter()
            .map(|&i| {
                normalize_axis(i, dim).ok_or_else(|| self.err(format!("index {i} out of range for axis of size {dim}")))
            })
            .collect::<Result<_>>()?;
        let outer: usize = data.shape()[..axis].iter().product();
        let inner: usize = data.shape()[axis + 1..].iter().product();
        let mut src = Vec::with_capacity(numel(&out_shape));
        for o in 0..outer {
            for &i in &resolved {
                let base = (o * dim + i) * inner;
                src.extend(base..base + inner);
            }
        }
        Ok(Some(self.build(out_shape, take(data.data(), &src))?))
    }

    fn concat(&self) -> Result<Option<Array>> {
        let Some(parts) = self.all_const(self.inputs.len()) else { return Ok(None) };
        let Some(first) = parts.first() else { return Err(self.err("Concat has no inputs")) };
        let rank = first.rank();
        if parts.iter().any(|p| p.dtype() != first.dtype() || p.rank() != rank) {
            return Err(self.err("inputs differ in element type or rank"));
        }
        if rank == 0 {
            return Err(self.err("cannot concatenate scalars"));
        }
        let a = attrs(self.node);
        let raw_axis = a.int("axis")?;
        let axis = normalize_axis(raw_axis, rank)
            .ok_or_else(|| a.invalid("axis", format!("axis {raw_axis} is out of range for rank {rank}")))?;
        let mut out_shape = first.shape().to_vec();
        out_shape[axis] = 0;
        for p in &parts {
            let (s, f) = (p.shape(), first.shape());
            if s[..axis] != f[..axis] || s[axis + 1..] != f[axis + 1..] {
                return Err(self.err(format!("shapes {:?} and {:?} differ off axis {axis}", f, s)));
            }
            out_shape[axis] += s[axis];
        }
        if !self.small(&out_shape) {
            return Ok(None);
        }
        // Flat indices into the parts laid end to end.
        let outer: usize = out_shape[..axis].iter().product();
        let mut offsets = Vec::with_capacity(parts.len());
        let mut total = 0;
        for p in &parts {
            offsets.push(total);
            total += p.len();
        }
        let mut src = Vec::with_capacity(numel(&out_shape));
        for o in 0..outer {
            for (p, &off) in parts.iter().zip(&offsets) {
                let chunk: usize = p.shape()[axis..].iter().product();
                src.extend(off + o * chunk..off + (o + 1) * chunk);
            }
        }
        let joined = join(&parts.iter().map(|p| p.data()).collect::<Vec<_>>());
        Ok(Some(self.build(out_shape, take(&joined, &src))?))
    }

    fn constant_of_shape(&self) -> Result<Option<Array>> {
        let Some(dims) = self.ints_input(0, "shape")? else { return Ok(None) };
        let shape = self.dims_from(&dims)?;
        let n = checked_numel(&shape)
            .filter(|&n| n <= MAX_MATERIALIZED_ELEMENTS)
            .ok_or_else(|| self.err(format!("shape {shape:?} is too large to materialise")))?;
        let value = attrs(self.node).opt_tensor("value")?.unwrap_or_else(|| Array::from_f32s(vec![0.0]));
        if value.len() != 1 {
            return Err(attrs(self.node).invalid("value", "must hold exactly one element"));
        }
        let fill = take(value.data(), &vec![0; n]);
        Ok(Some(self.build(shape, fill)?))
    }

    fn range(&self) -> Result<Option<Array>> {
        let Some([start, limit, delta]) = self.all_const(3).and_then(|v| <[&Array; 3]>::try_from(v).ok()) else {
            return Ok(None);
        };
        if start.len() != 1 || limit.len() != 1 || delta.len() != 1 {
            return Err(self.err("start, limit and delta must be scalars"));
        }
        let dtype = start.dtype();
        let (s, l, d) = (start.to_f32_vec()[0] as f64, limit.to_f32_vec()[0] as f64, delta.to_f32_vec()[0] as f64);
        let vals = match (start.to_i64_vec(), limit.to_i64_vec(), delta.to_i64_vec()) {
            (Some(s), Some(l), Some(d)) => {
                let (s, l, d) = (s[0], l[0], d[0]);
                if d == 0 {
                    return Err(self.err("delta is zero"));
                }
                let span = l.saturating_sub(s);
                let n = if (span > 0) == (d > 0) && span != 0 { (span.unsigned_abs()).div_ceil(d.unsigned_abs()) } else { 0 };
                self.materialize_len(n)?;
                Vals::I((0..n as i64).map(|k| s + k * d).collect())
            }
            _ => {
                if d == 0.0 || !(s.is_finite() && l.is_finite() && d.is_finite()) {
                    return Err(self.err("delta is zero or a bound is not finite"));
                }
                let n = ((l - s) / d).ceil().max(0.0) as u64;
                self.materialize_len(n)?;
                Vals::F((0..n).map(|k| s + k as f64 * d).collect())
            }
        };
        let n = vals.len();
        Ok(Some(self.array_of(dtype, vec![n], vals)?))
    }

    fn materialize_len(&self, n: u64) -> Result<()> {
        if n > MAX_MATERIALIZED_ELEMENTS as u64 {
            return Err(self.err(format!("{n} elements is too large to materialise")));
        }
        Ok(())
    }

    fn unsqueeze(&self) -> Result<Option<Array>> {
        let Some(data) = self.input_const(0) else { return Ok(None) };
        let Some(axes) = self.ints_input(1, "axes")? else { return Ok(None) };
        let out_rank = data.rank() + axes.len();
        let mut norm = self.axes(&axes, out_rank)?;
        norm.sort_unstable();
        let mut shape = Vec::with_capacity(out_rank);
        let mut rest = data.shape().iter();
        for i in 0..out_rank {
            if norm.binary_search(&i).is_ok() {
                shape.push(1);
            } else if let Some(&d) = rest.next() {
                shape.push(d);
            }
        }
        self.reshaped(data, shape)
    }

    fn squeeze(&self) -> Result<Option<Array>> {
        let Some(data) = self.input_const(0) else { return Ok(None) };
        let axes = match self.input(1) {
            Known::Absent => None,
            _ => match self.ints_input(1, "axes")? {
                Some(a) => Some(a),
                None => return Ok(None),
            },
        };
        let shape = match axes {
            None => data.shape().iter().copied().filter(|&d| d != 1).collect(),
            Some(axes) => {
                let norm = self.axes(&axes, data.rank())?;
                if let Some(&bad) = norm.iter().find(|&&a| data.shape()[a] != 1) {
                    return Err(self.err(format!("axis {bad} of shape {:?} is not 1", data.shape())));
                }
                data.shape().iter().enumerate().filter(|(i, _)| !norm.contains(i)).map(|(_, &d)| d).collect()
            }
        };
        self.reshaped(data, shape)
    }

    fn cast(&self) -> Result<Option<Array>> {
        let Some(x) = self.input_const(0) else { return Ok(None) };
        let to = attrs(self.node).int("to")?;
        let Some(dtype) = i32::try_from(to).ok().and_then(DType::from_onnx) else { return Ok(None) };
        if !self.small(x.shape()) {
            return Ok(None);
        }
        let vals = match (x.data(), dtype) {
            // Float → bool is "non-zero", not truncation.
            (ArrayData::F32(_) | ArrayData::F16(_), DType::Bool) => {
                Vals::I(x.to_f32_vec().iter().map(|&v| (v != 0.0) as i64).collect())
            }
            _ => vals_of(x),
        };
        Ok(Some(self.array_of(dtype, x.shape().to_vec(), vals)?))
    }

    fn slice(&self) -> Result<Option<Array>> {
        let Some(data) = self.input_const(0) else { return Ok(None) };
        let Some(starts) = self.ints_input(1, "starts")? else { return Ok(None) };
        let Some(ends) = self.ints_input(2, "ends")? else { return Ok(None) };
        let optional = |i: usize, what: &str| -> Result<Option<Option<Vec<i64>>>> {
            match self.input(i) {
                Known::Absent => Ok(Some(None)),
                _ => Ok(self.ints_input(i, what)?.map(Some)),
            }
        };
        let Some(axes) = optional(3, "axes")? else { return Ok(None) };
        let Some(steps) = optional(4, "steps")? else { return Ok(None) };
        let rank = data.rank();
        let axes = match axes {
            Some(a) => self.axes(&a, rank)?,
            None => (0..starts.len()).collect(),
        };
        let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
        if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
            return Err(self.err("starts, ends, axes and steps differ in length"));
        }
        if axes.iter().any(|&a| a >= rank) {
            return Err(self.err(format!("axes out of range for rank {rank}")));
        }
        // Per axis: first index, step, count.
        let mut plan: Vec<(i64, i64, usize)> = data.shape().iter().map(|&d| (0, 1, d)).collect();
        for (k, &axis) in axes.iter().enumerate() {
            let dim = data.shape()[axis] as i64;
            let step = steps[k];
            if step == 0 {
                return Err(self.err("a step is zero"));
            }
            let adj = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
            let (start, end) = if step > 0 {
                (adj(starts[k]).clamp(0, dim), adj(ends[k]).clamp(0, dim))
            } else {
                (adj(starts[k]).clamp(0, dim - 1), adj(ends[k]).clamp(-1, dim - 1))
            };
            let span = if step > 0 { end - start } else { start - end };
            let count = if span > 0 { (span as u64).div_ceil(step.unsigned_abs()) as usize } else { 0 };
            plan[axis] = (start, step, count);
        }
        let out_shape: Vec<usize> = plan.iter().map(|p| p.2).collect();
        if !self.small(&out_shape) {
            return Ok(None);
        }
        let strides = strides(data.shape());
        let src = for_each_index(&out_shape, |idx| {
            idx.iter().zip(&plan).zip(&strides).map(|((&i, &(s, st, _)), &str)| (s + i as i64 * st) as usize * str).sum()
        });
        Ok(Some(self.build(out_shape, take(data.data(), &src))?))
    }

    fn reshape(&self) -> Result<Option<Array>> {
        let Some(data) = self.input_const(0) else { return Ok(None) };
        let Some(spec) = self.ints_input(1, "shape")? else { return Ok(None) };
        let allowzero = attrs(self.node).int_or("allowzero", 0)? != 0;
        let shape = resolve_reshape(data.shape(), &spec, allowzero).map_err(|e| self.err(e))?;
        self.reshaped(data, shape)
    }

    fn expand(&self) -> Result<Option<Array>> {
        let Some(data) = self.input_const(0) else { return Ok(None) };
        let Some(dims) = self.ints_input(1, "shape")? else { return Ok(None) };
        let target = self.dims_from(&dims)?;
        let out_shape = broadcast_shapes(&[data.shape(), &target]).ok_or_else(|| {
            self.err(format!("cannot expand shape {:?} to {:?}", data.shape(), target))
        })?;
        if !self.small(&out_shape) {
            return Ok(None);
        }
        let src = broadcast_index(data.shape(), &out_shape);
        Ok(Some(self.build(out_shape, take(data.data(), &src))?))
    }

    fn unary(&self) -> Result<Option<Array>> {
        let Some(x) = self.input_const(0) else { return Ok(None) };
        if !self.small(x.shape()) || x.dtype() == DType::Bool {
            return Ok(None);
        }
        let vals = match vals_of(x) {
            Vals::I(v) => Vals::I(v.iter().map(|&a| a.wrapping_neg()).collect()),
            Vals::F(v) => Vals::F(v.iter().map(|&a| -a).collect()),
        };
        Ok(Some(self.array_of(x.dtype(), x.shape().to_vec(), vals)?))
    }

    /// Both inputs constant, same dtype, broadcast: the shared front of the
    /// binary ops. Returns the output shape and each operand's values at it.
    fn binary_operands(&self) -> Result<Option<Operands>> {
        let (Some(a), Some(b)) = (self.input_const(0), self.input_const(1)) else { return Ok(None) };
        if self.inputs.len() != 2 {
            return Ok(None);
        }
        if a.dtype() != b.dtype() {
            return Err(self.err(format!("operand types differ: {:?} and {:?}", a.dtype(), b.dtype())));
        }
        let shape = broadcast_shapes(&[a.shape(), b.shape()])
            .ok_or_else(|| self.err(format!("shapes {:?} and {:?} do not broadcast", a.shape(), b.shape())))?;
        if !self.small(&shape) {
            return Ok(None);
        }
        let va = vals_of(a).take(&broadcast_index(a.shape(), &shape));
        let vb = vals_of(b).take(&broadcast_index(b.shape(), &shape));
        Ok(Some((a.dtype(), shape, va, vb)))
    }

    fn arith(&self) -> Result<Option<Array>> {
        let Some((dtype, shape, a, b)) = self.binary_operands()? else { return Ok(None) };
        if dtype == DType::Bool {
            return Err(self.err("arithmetic on bool tensors"));
        }
        let op = self.node.op_type.as_str();
        let vals = match (a, b) {
            (Vals::I(a), Vals::I(b)) => {
                let f = |x: i64, y: i64| -> Option<i64> {
                    match op {
                        "Add" => x.checked_add(y),
                        "Sub" => x.checked_sub(y),
                        "Mul" => x.checked_mul(y),
                        // Integer Div truncates toward zero, as ONNX Runtime does.
                        "Div" => x.checked_div(y),
                        "Min" => Some(x.min(y)),
                        _ => Some(x.max(y)),
                    }
                };
                let out: Option<Vec<i64>> = a.iter().zip(&b).map(|(&x, &y)| f(x, y)).collect();
                Vals::I(out.ok_or_else(|| self.err("integer overflow or division by zero"))?)
            }
            (Vals::F(a), Vals::F(b)) => Vals::F(
                a.iter()
                    .zip(&b)
                    .map(|(&x, &y)| match op {
                        "Add" => x + y,
                        "Sub" => x - y,
                        "Mul" => x * y,
                        "Div" => x / y,
                        // ONNX Min/Max propagate NaN.
                        "Min" => if x.is_nan() || y.is_nan() { f64::NAN } else { x.min(y) },
                        _ => if x.is_nan() || y.is_nan() { f64::NAN } else { x.max(y) },
                    })
                    .collect(),
            ),
            _ => return Err(self.err("mixed operand kinds")),
        };
        Ok(Some(self.array_of(dtype, shape, vals)?))
    }

    fn compare(&self) -> Result<Option<Array>> {
        let Some((_, shape, a, b)) = self.binary_operands()? else { return Ok(None) };
        let op = self.node.op_type.as_str();
        let cmp = |o: std::cmp::Ordering| match op {
            "Equal" => o.is_eq(),
            "Less" => o.is_lt(),
            _ => o.is_gt(),
        };
        let out: Vec<bool> = match (a, b) {
            (Vals::I(a), Vals::I(b)) => a.iter().zip(&b).map(|(x, y)| cmp(x.cmp(y))).collect(),
            // NaN compares false to everything, Equal included.
            (Vals::F(a), Vals::F(b)) => a.iter().zip(&b).map(|(x, y)| x.partial_cmp(y).is_some_and(cmp)).collect(),
            _ => return Err(self.err("mixed operand kinds")),
        };
        Ok(Some(self.build(shape, ArrayData::Bool(out))?))
    }

    fn where_op(&self) -> Result<Option<Array>> {
        let Some(parts) = self.all_const(3) else { return Ok(None) };
        let (c, x, y) = (parts[0], parts[1], parts[2]);
        let ArrayData::Bool(cond) = c.data() else { return Err(self.err("condition must be bool")) };
        if x.dtype() != y.dtype() {
            return Err(self.err("X and Y differ in element type"));
        }
        let shape = broadcast_shapes(&[c.shape(), x.shape(), y.shape()])
            .ok_or_else(|| self.err("condition, X and Y do not broadcast"))?;
        if !self.small(&shape) {
            return Ok(None);
        }
        let (ci, xi, yi) =
            (broadcast_index(c.shape(), &shape), broadcast_index(x.shape(), &shape), broadcast_index(y.shape(), &shape));
        // Pick from X and Y laid end to end.
        let src: Vec<usize> = (0..ci.len()).map(|k| if cond[ci[k]] { xi[k] } else { x.len() + yi[k] }).collect();
        Ok(Some(self.build(shape, take(&join(&[x.data(), y.data()]), &src))?))
    }

    // ---- helpers ----

    fn axes(&self, axes: &[i64], rank: usize) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(axes.len());
        for &a in axes {
            let n = normalize_axis(a, rank).ok_or_else(|| self.err(format!("axis {a} out of range for rank {rank}")))?;
            if out.contains(&n) {
                return Err(self.err(format!("axis {a} repeated")));
            }
            out.push(n);
        }
        Ok(out)
    }

    fn dims_from(&self, dims: &[i64]) -> Result<Vec<usize>> {
        dims.iter()
            .map(|&d| usize::try_from(d).map_err(|_| self.err(format!("negative dimension {d} in {dims:?}"))))
            .collect()
    }

    fn reshaped(&self, data: &Array, shape: Vec<usize>) -> Result<Option<Array>> {
        if !self.small(&shape) {
            return Ok(None);
        }
        data.clone().reshaped(shape).map(Some).map_err(|e| self.err(e.to_string()))
    }

    fn build(&self, shape: Vec<usize>, data: ArrayData) -> Result<Array> {
        Array::new(shape, data).map_err(|e| self.err(e.to_string()))
    }

    fn array_of(&self, dtype: DType, shape: Vec<usize>, vals: Vals) -> Result<Array> {
        self.build(shape, vals.into_data(dtype))
    }
}

/// Resolves an ONNX Reshape shape spec (`0` copies the input dim unless
/// `allowzero`, one `-1` is inferred) against an input shape.
pub fn resolve_reshape(input: &[usize], spec: &[i64], allowzero: bool) -> std::result::Result<Vec<usize>, String> {
    let total = numel(input);
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer.is_some() => return Err(format!("shape {spec:?} has more than one -1")),
            -1 => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => {
                let d = *input.get(i).ok_or_else(|| format!("shape {spec:?} copies dim {i}, which {input:?} lacks"))?;
                out.push(d);
            }
            d if d < 0 => return Err(format!("shape {spec:?} has a negative dim")),
            d => out.push(d as usize),
        }
    }
    if let Some(i) = infer {
        let others: Vec<usize> = out.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, &d)| d).collect();
        let known = numel(&others);
        if known == 0 || total % known != 0 {
            return Err(format!("cannot reshape {input:?} ({total} elements) to {spec:?}"));
        }
        out[i] = total / known;
    }
    if numel(&out) != total {
        return Err(format!("cannot reshape {input:?} ({total} elements) to {spec:?}"));
    }
    Ok(out)
}

/// Numpy-style broadcast of several shapes, `None` if incompatible.
pub fn broadcast_shapes(shapes: &[&[usize]]) -> Option<Vec<usize>> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        let off = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return None;
            }
        }
    }
    Some(out)
}

fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Calls `f` with every multi-index of `shape` in row-major order.
fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize]) -> usize) -> Vec<usize> {
    let n = numel(shape);
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        out.push(f(&idx));
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// For each element of `out` (row-major), the flat index of the element of
/// an input of shape `input` that broadcasting maps to it.
fn broadcast_index(input: &[usize], out: &[usize]) -> Vec<usize> {
    let off = out.len() - input.len();
    let st = strides(input);
    for_each_index(out, |idx| {
        input.iter().enumerate().map(|(i, &d)| if d == 1 { 0 } else { idx[off + i] * st[i] }).sum()
    })
}

macro_rules! each_variant {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            ArrayData::F32($v) => ArrayData::F32($body),
            ArrayData::F16($v) => ArrayData::F16($body),
            ArrayData::I64($v) => ArrayData::I64($body),
            ArrayData::I32($v) => ArrayData::I32($body),
            ArrayData::I8($v) => ArrayData::I8($body),
            ArrayData::U8($v) => ArrayData::U8($body),
            ArrayData::Bool($v) => ArrayData::Bool($body),
        }
    };
}

/// Elements at flat indices `src` (all in range by construction).
fn take(data: &ArrayData, src: &[usize]) -> ArrayData {
    each_variant!(data, v => src.iter().map(|&i| v[i]).collect())
}

/// Several same-typed buffers laid end to end (callers check the types agree).
fn join(parts: &[&ArrayData]) -> ArrayData {
    let mut out = match parts.first() {
        Some(first) => each_variant!(first, v => Vec::with_capacity(v.len())),
        None => return ArrayData::I64(Vec::new()),
    };
    for p in parts {
        match (&mut out, p) {
            (ArrayData::F32(o), ArrayData::F32(v)) => o.extend_from_slice(v),
            (ArrayData::F16(o), ArrayData::F16(v)) => o.extend_from_slice(v),
            (ArrayData::I64(o), ArrayData::I64(v)) => o.extend_from_slice(v),
            (ArrayData::I32(o), ArrayData::I32(v)) => o.extend_from_slice(v),
            (ArrayData::I8(o), ArrayData::I8(v)) => o.extend_from_slice(v),
            (ArrayData::U8(o), ArrayData::U8(v)) => o.extend_from_slice(v),
            (ArrayData::Bool(o), ArrayData::Bool(v)) => o.extend_from_slice(v),
            _ => {}
        }
    }
    out
}

/// Values widened for arithmetic: integers (and bools) as i64, floats as f64
/// (exact for f32/f16 inputs; one rounding back gives IEEE results).
enum Vals {
    I(Vec<i64>),
    F(Vec<f64>),
}

impl Vals {
    fn len(&self) -> usize {
        match self {
            Vals::I(v) => v.len(),
            Vals::F(v) => v.len(),
        }
    }

    fn take(self, src: &[usize]) -> Vals {
        match self {
            Vals::I(v) => Vals::I(src.iter().map(|&i| v[i]).collect()),
            Vals::F(v) => Vals::F(src.iter().map(|&i| v[i]).collect()),
        }
    }

    /// Narrows to `dtype` the way a C cast (ONNX Cast) does: floats to ints
    /// truncate toward zero (saturating), ints wrap, anything to bool is `!= 0`.
    fn into_data(self, dtype: DType) -> ArrayData {
        match (self, dtype) {
            (Vals::I(v), DType::I64) => ArrayData::I64(v),
            (Vals::I(v), DType::I32) => ArrayData::I32(v.iter().map(|&x| x as i32).collect()),
            (Vals::I(v), DType::I8) => ArrayData::I8(v.iter().map(|&x| x as i8).collect()),
            (Vals::I(v), DType::U8) => ArrayData::U8(v.iter().map(|&x| x as u8).collect()),
            (Vals::I(v), DType::Bool) => ArrayData::Bool(v.iter().map(|&x| x != 0).collect()),
            (Vals::I(v), DType::F32) => ArrayData::F32(v.iter().map(|&x| x as f32).collect()),
            (Vals::I(v), DType::F16) => ArrayData::F16(v.iter().map(|&x| f16::from_f64(x as f64)).collect()),
            (Vals::F(v), DType::F32) => ArrayData::F32(v.iter().map(|&x| x as f32).collect()),
            (Vals::F(v), DType::F16) => ArrayData::F16(v.iter().map(|&x| f16::from_f64(x)).collect()),
            (Vals::F(v), DType::Bool) => ArrayData::Bool(v.iter().map(|&x| x != 0.0).collect()),
            (Vals::F(v), int) => Vals::I(v.iter().map(|&x| x as i64).collect()).into_data(int),
        }
    }
}

fn vals_of(a: &Array) -> Vals {
    match a.data() {
        ArrayData::F32(v) => Vals::F(v.iter().map(|&x| x as f64).collect()),
        ArrayData::F16(v) => Vals::F(v.iter().map(|&x| x.to_f64()).collect()),
        // Integer and bool arrays always widen.
        _ => Vals::I(a.to_i64_vec().unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{ModelBuilder, NodeBuilder};

    fn i64s(v: &[i64]) -> Array {
        Array::from_i64s(v.to_vec())
    }

    fn eval1(node: NodeBuilder, inputs: &[Known<'_>]) -> Result<Option<Array>> {
        Ok(eval_node(&node.build(), inputs)?.map(|mut v| v.remove(0)))
    }

    fn ok(node: NodeBuilder, inputs: &[Known<'_>]) -> Array {
        match eval1(node, inputs) {
            Ok(Some(a)) => a,
            other => panic!("expected a folded value, got {other:?}"),
        }
    }

    fn c(a: &Array) -> Known<'_> {
        Known::Const(a)
    }

    fn ints(a: &Array) -> Vec<i64> {
        a.to_i64_vec().expect("integer array")
    }

    #[test]
    fn shape_honours_start_and_end() {
        let s = [1usize, 3, 224, 224];
        assert_eq!(ints(&ok(NodeBuilder::new("Shape", &["x"], &["s"]), &[Known::Shape(&s)])), [1, 3, 224, 224]);
        let n = NodeBuilder::new("Shape", &["x"], &["s"]).attr_int("start", 1).attr_int("end", -1);
        assert_eq!(ints(&ok(n, &[Known::Shape(&s)])), [3, 224]);
        let n = NodeBuilder::new("Shape", &["x"], &["s"]).attr_int("start", -10).attr_int("end", 10);
        assert_eq!(ints(&ok(n, &[Known::Shape(&s)])), [1, 3, 224, 224]);
        assert!(eval1(NodeBuilder::new("Shape", &["x"], &["s"]), &[Known::Unknown]).expect("ok").is_none());
    }

    #[test]
    fn gather_on_shapes_and_with_negative_indices() {
        let shape = i64s(&[1, 197, 768]);
        let idx = Array::scalar_i64(1);
        let g = ok(NodeBuilder::new("Gather", &["s", "i"], &["d"]), &[c(&shape), c(&idx)]);
        assert_eq!((g.shape(), ints(&g)), (&[][..], vec![197]));
        let idx = i64s(&[-1, 0]);
        assert_eq!(ints(&ok(NodeBuilder::new("Gather", &["s", "i"], &["d"]), &[c(&shape), c(&idx)])), [768, 1]);

        // axis 1 of a 2x3 matrix.
        let m = Array::new(vec![2, 3], ArrayData::I64(vec![0, 1, 2, 3, 4, 5])).expect("m");
        let idx = Array::new(vec![1, 2], ArrayData::I64(vec![2, 0])).expect("idx");
        let g = ok(NodeBuilder::new("Gather", &["m", "i"], &["g"]).attr_int("axis", 1), &[c(&m), c(&idx)]);
        assert_eq!((g.shape(), ints(&g)), (&[2, 1, 2][..], vec![2, 0, 5, 3]));

        let idx = Array::scalar_i64(5);
        let e = eval1(NodeBuilder::new("Gather", &["s", "i"], &["d"]), &[c(&shape), c(&idx)]).expect_err("oob");
        assert!(e.to_string().contains("out of range"), "{e}");
    }

    #[test]
    fn concat_unsqueeze_squeeze_build_shape_vectors() {
        let a = Array::scalar_i64(1);
        let ua = ok(NodeBuilder::new("Unsqueeze", &["a", "ax"], &["u"]), &[c(&a), c(&i64s(&[0]))]);
        assert_eq!(ua.shape(), &[1]);
        let b = i64s(&[-1, 768]);
        let cat = ok(NodeBuilder::new("Concat", &["u", "b"], &["c"]).attr_int("axis", 0), &[c(&ua), c(&b)]);
        assert_eq!(ints(&cat), [1, -1, 768]);

        let m = Array::new(vec![2, 2], ArrayData::F32(vec![1.0, 2.0, 3.0, 4.0])).expect("m");
        let n = Array::new(vec![2, 1], ArrayData::F32(vec![5.0, 6.0])).expect("n");
        let cat = ok(NodeBuilder::new("Concat", &["m", "n"], &["c"]).attr_int("axis", -1), &[c(&m), c(&n)]);
        assert_eq!((cat.shape(), cat.to_f32_vec()), (&[2, 3][..], vec![1.0, 2.0, 5.0, 3.0, 4.0, 6.0]));

        let x = Array::new(vec![1, 3, 1], ArrayData::I64(vec![1, 2, 3])).expect("x");
        let s = ok(NodeBuilder::new("Squeeze", &["x"], &["y"]), &[c(&x)]);
        assert_eq!(s.shape(), &[3]);
        let s = ok(NodeBuilder::new("Squeeze", &["x", "a"], &["y"]), &[c(&x), c(&i64s(&[-1]))]);
        assert_eq!(s.shape(), &[1, 3]);
        assert!(eval1(NodeBuilder::new("Squeeze", &["x", "a"], &["y"]), &[c(&x), c(&i64s(&[1]))]).is_err());
        let u = ok(NodeBuilder::new("Unsqueeze", &["x", "a"], &["y"]), &[c(&x), c(&i64s(&[-1, 0]))]);
        assert_eq!(u.shape(), &[1, 1, 3, 1, 1]);
    }

    #[test]
    fn constant_forms_and_constant_of_shape_and_range() {
        let n = NodeBuilder::new("Constant", &[], &["c"]).attr_ints("value_ints", &[2, 3]);
        assert_eq!(ints(&ok(n, &[])), [2, 3]);
        let n = NodeBuilder::new("Constant", &[], &["c"]).attr_float("value_float", 0.5);
        assert_eq!(ok(n, &[]), Array::scalar_f32(0.5));
        let n = NodeBuilder::new("Constant", &[], &["c"]).attr_tensor("value", &i64s(&[7]));
        assert_eq!(ok(n, &[]), i64s(&[7]));
        let n = NodeBuilder::new("Constant", &[], &["c"]).attr_string("value_string", "hi");
        assert!(eval1(n, &[]).is_err());

        let shape = i64s(&[2, 3]);
        let z = ok(NodeBuilder::new("ConstantOfShape", &["s"], &["z"]), &[c(&shape)]);
        assert_eq!((z.shape(), z.to_f32_vec()), (&[2, 3][..], vec![0.0; 6]));
        let n = NodeBuilder::new("ConstantOfShape", &["s"], &["z"]).attr_tensor("value", &i64s(&[1]));
        assert_eq!(ok(n, &[c(&shape)]).data(), &ArrayData::I64(vec![1; 6]));
        let huge = i64s(&[1 << 20, 1 << 20]);
        assert!(eval1(NodeBuilder::new("ConstantOfShape", &["s"], &["z"]), &[c(&huge)]).is_err());

        let r = |s: Array, l: Array, d: Array| ok(NodeBuilder::new("Range", &["s", "l", "d"], &["r"]), &[c(&s), c(&l), c(&d)]);
        assert_eq!(ints(&r(Array::scalar_i64(0), Array::scalar_i64(5), Array::scalar_i64(2))), [0, 2, 4]);
        assert_eq!(ints(&r(Array::scalar_i64(5), Array::scalar_i64(0), Array::scalar_i64(-2))), [5, 3, 1]);
        assert_eq!(ints(&r(Array::scalar_i64(3), Array::scalar_i64(3), Array::scalar_i64(1))), Vec::<i64>::new());
        let f = r(Array::scalar_f32(0.0), Array::scalar_f32(1.0), Array::scalar_f32(0.25));
        assert_eq!(f.to_f32_vec(), [0.0, 0.25, 0.5, 0.75]);
    }

    #[test]
    fn cast_slice_reshape_expand() {
        let f = Array::from_f32s(vec![1.9, -1.9, 0.0]);
        let n = NodeBuilder::new("Cast", &["x"], &["y"]).attr_int("to", DType::I64.to_onnx() as i64);
        assert_eq!(ints(&ok(n, &[c(&f)])), [1, -1, 0]);
        let n = NodeBuilder::new("Cast", &["x"], &["y"]).attr_int("to", DType::Bool.to_onnx() as i64);
        assert_eq!(ok(n, &[c(&f)]).data(), &ArrayData::Bool(vec![true, true, false]));

        let s = i64s(&[1, 3, 224, 224]);
        let sl = |st: &[i64], en: &[i64], ax: &[i64], stp: &[i64]| {
            let (st, en, ax, stp) = (i64s(st), i64s(en), i64s(ax), i64s(stp));
            ints(&ok(NodeBuilder::new("Slice", &["x", "s", "e", "a", "t"], &["y"]), &[c(&s), c(&st), c(&en), c(&ax), c(&stp)]))
        };
        assert_eq!(sl(&[2], &[i64::MAX], &[0], &[1]), [224, 224]);
        assert_eq!(sl(&[-1], &[i64::MIN], &[0], &[-1]), [224, 224, 3, 1]);
        assert_eq!(sl(&[0], &[-1], &[0], &[2]), [1, 224]);
        let (st, en) = (i64s(&[0]), i64s(&[2]));
        assert_eq!(ints(&ok(NodeBuilder::new("Slice", &["x", "s", "e"], &["y"]), &[c(&s), c(&st), c(&en)])), [1, 3]);
        let m = Array::new(vec![2, 3], ArrayData::I64(vec![0, 1, 2, 3, 4, 5])).expect("m");
        let (st, en, ax) = (i64s(&[1]), i64s(&[3]), i64s(&[1]));
        let y = ok(NodeBuilder::new("Slice", &["m", "s", "e", "a"], &["y"]), &[c(&m), c(&st), c(&en), c(&ax)]);
        assert_eq!((y.shape(), ints(&y)), (&[2, 2][..], vec![1, 2, 4, 5]));

        let x = Array::new(vec![2, 3, 4], ArrayData::I64((0..24).collect())).expect("x");
        let y = ok(NodeBuilder::new("Reshape", &["x", "s"], &["y"]), &[c(&x), c(&i64s(&[0, -1]))]);
        assert_eq!(y.shape(), &[2, 12]);
        assert!(eval1(NodeBuilder::new("Reshape", &["x", "s"], &["y"]), &[c(&x), c(&i64s(&[5, -1]))]).is_err());
        assert_eq!(resolve_reshape(&[2, 0], &[0, 0], true), Ok(vec![0, 0]));

        let v = Array::new(vec![3, 1], ArrayData::I64(vec![1, 2, 3])).expect("v");
        let y = ok(NodeBuilder::new("Expand", &["v", "s"], &["y"]), &[c(&v), c(&i64s(&[2, 1, 2]))]);
        assert_eq!((y.shape(), ints(&y)), (&[2, 3, 2][..], vec![1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3]));
    }

    #[test]
    fn arithmetic_comparison_and_where_broadcast() {
        let a = i64s(&[8, 9, 10]);
        let b = Array::scalar_i64(3);
        let run = |op: &str, a: &Array, b: &Array| ok(NodeBuilder::new(op, &["a", "b"], &["y"]), &[c(a), c(b)]);
        assert_eq!(ints(&run("Add", &a, &b)), [11, 12, 13]);
        assert_eq!(ints(&run("Sub", &a, &b)), [5, 6, 7]);
        assert_eq!(ints(&run("Mul", &a, &b)), [24, 27, 30]);
        assert_eq!(ints(&run("Div", &a, &b)), [2, 3, 3]);
        assert_eq!(ints(&run("Div", &i64s(&[-7]), &b)), [-2]);
        assert!(eval1(NodeBuilder::new("Div", &["a", "b"], &["y"]), &[c(&a), c(&Array::scalar_i64(0))]).is_err());
        assert_eq!(run("Equal", &a, &Array::scalar_i64(9)).data(), &ArrayData::Bool(vec![false, true, false]));
        assert_eq!(run("Less", &a, &Array::scalar_i64(9)).data(), &ArrayData::Bool(vec![true, false, false]));
        let f = run("Div", &Array::from_f32s(vec![1.0]), &Array::scalar_f32(3.0));
        assert_eq!(f.to_f32_vec(), [1.0f32 / 3.0]);
        assert!(eval1(NodeBuilder::new("Add", &["a", "b"], &["y"]), &[c(&a), c(&Array::scalar_f32(1.0))]).is_err());

        let cond = Array::new(vec![3], ArrayData::Bool(vec![true, false, true])).expect("cond");
        let y = ok(NodeBuilder::new("Where", &["c", "x", "y"], &["o"]), &[c(&cond), c(&a), c(&i64s(&[-1]))]);
        assert_eq!(ints(&y), [8, -1, 10]);
    }

    #[test]
    fn big_or_unknown_values_are_left_to_the_graph() {
        let big = Array::new(vec![1 << 17], ArrayData::F32(vec![0.0; 1 << 17])).expect("big");
        assert!(eval1(NodeBuilder::new("Neg", &["x"], &["y"]), &[c(&big)]).expect("ok").is_none());
        assert!(eval1(NodeBuilder::new("Relu", &["x"], &["y"]), &[c(&Array::scalar_f32(1.0))]).expect("ok").is_none());
        assert!(eval1(NodeBuilder::new("Add", &["x", "y"], &["z"]), &[Known::Unknown, c(&big)]).expect("ok").is_none());
        let custom = NodeBuilder::new("Constant", &[], &["c"]).domain("com.example").attr_int("value_int", 1);
        assert!(eval1(custom, &[]).expect("ok").is_none());
    }

    /// The pattern exporters emit for `x.view(x.size(0), -1)` and a
    /// position-ids `Range`: every shape input ends up constant.
    #[test]
    fn whole_shape_subgraph_folds_to_constant_reshape_and_expand_inputs() {
        let model = ModelBuilder::new(17)
            .input("x", DType::F32, &[2, 8, 4, 4])
            .op("Shape", &["x"], &["shape"])
            .node(NodeBuilder::new("Constant", &[], &["zero"]).attr_tensor("value", &Array::scalar_i64(0)))
            .op("Gather", &["shape", "zero"], &["n"])
            .node(NodeBuilder::new("Constant", &[], &["axes"]).attr_ints("value_ints", &[0]))
            .op("Unsqueeze", &["n", "axes"], &["n1"])
            .node(NodeBuilder::new("Constant", &[], &["minus1"]).attr_ints("value_ints", &[-1]))
            .node(NodeBuilder::new("Concat", &["n1", "minus1"], &["target"]).attr_int("axis", 0))
            .op("Reshape", &["x", "target"], &["flat"])
            .op("Shape", &["flat"], &["fshape"])
            .node(NodeBuilder::new("Constant", &[], &["one"]).attr_tensor("value", &Array::scalar_i64(1)))
            .op("Gather", &["fshape", "one"], &["len"])
            .node(NodeBuilder::new("Constant", &[], &["step"]).attr_tensor("value", &Array::scalar_i64(1)))
            .node(NodeBuilder::new("Constant", &[], &["start"]).attr_tensor("value", &Array::scalar_i64(0)))
            .op("Range", &["start", "len", "step"], &["pos"])
            .op("Expand", &["flat", "fshape"], &["out"])
            .value_info("flat", DType::F32, &[2, 128])
            .output("out")
            .build();
        let model = OnnxModel::from_proto(model, "shapes.onnx").expect("model");
        let mut folder = ConstFolder::from_model(&model).expect("folder");
        let summary = folder.fold_graph(model.graph()).expect("folds");
        let ops: Vec<&str> = summary.remaining.iter().map(|&i| model.nodes()[i].op_type.as_str()).collect();
        assert_eq!(ops, ["Reshape", "Expand"], "only the real ops remain");
        assert_eq!(ints(folder.constant("target").expect("target")), [2, -1]);
        assert_eq!(ints(folder.constant("fshape").expect("fshape")), [2, 128]);
        assert_eq!(folder.constant("pos").expect("pos").len(), 128);
        let reshape = &model.nodes()[summary.remaining[0]];
        assert_eq!(folder.const_input(reshape, 1).map(ints), Some(vec![2, -1]));
    }

    #[test]
    fn importer_reported_shapes_let_shape_fold() {
        let mut folder = ConstFolder::new();
        let shape = NodeBuilder::new("Shape", &["h"], &["s"]).build();
        assert!(!folder.fold_node(&shape).expect("ok"));
        folder.set_shape("h", vec![1, 197, 768]);
        assert!(folder.fold_node(&shape).expect("ok"));
        assert_eq!(ints(folder.constant("s").expect("s")), [1, 197, 768]);
    }
}
