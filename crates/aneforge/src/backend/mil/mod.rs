//! The `mil` backend: an optimised [`Graph`] lowered to one
//! [`aneforge_mil::Program`], written as MIL text, weight blobs and an
//! `.mlpackage`, plus the engine's I/O plan ([`io`]).
//!
//! # Where the lowering lives
//!
//! Each op family implements [`LowerMil`] in its own file under `ops/`,
//! next to its shape rule and sim kernel ("one op, one place"): adding an
//! op touches that file, and a reviewer sees the op's numerics and its MIL
//! spelling side by side. This module is only the driver: it walks the
//! graph, names values, places constants (inline or blob, as coremltools
//! does), picks the dialect for the target, and applies the port rules.
//! The core depends on `aneforge-mil`, not the other way round, so the MIL
//! crate stays a plain writer that knows nothing of graphs.
//!
//! # Dialect
//!
//! H15 and later (and no target): `program(1.3)` / `func main<ios18>`.
//! H13/H14: the verbose `program(1.0)` / `func main<ios16>` that M1/M2's
//! compiler needs (ane-anchors §2).
//!
//! # Value types inside the program
//!
//! The engine computes in fp16 and has no integer arithmetic, so graph
//! values are carried as: fp16 → fp16, fp32 → fp32 (an explicit
//! intermediate, reached by `cast`), bool → bool (comparisons, `select`
//! conditions), and every integer type → *integer-valued fp16* (exact to
//! ±2048, the engine's own integer range, all of int8/uint8). A cast to an
//! integer type lowers to `round` + `clip` to the type's range, which is
//! what the sim computes (round half to even, saturate). This keeps every
//! MIL op inside its type domain in both opsets without int32 tensors,
//! which the engine rejects.
//!
//! # Ports
//!
//! Every port of the program is fp16 (the engine's only dependable I/O
//! type; fp32 and int32 ports are rejected on M1/M2 and by e5rt). An
//! integer input port is fed as integer-valued fp16 (ANEForge converts on
//! the way in: exact for int8/uint8, and for int16/uint16 within ±2048); a
//! bool or fp32 output is cast to fp16 inside the program and converted
//! back on the way out. Names are the graph's port names made into MIL
//! identifiers; the engine binds surfaces in their alphabetical order
//! ([`io::IoPlan`]).

pub mod io;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use aneforge_mil as mil;
use aneforge_mil::{Argument, DType as MDType, Dialect, Function, NamedType, Opset, Program, Tensor as MTensor, TensorType, WeightLayout};
use half::f16;

use crate::compile::{CompileOptions, Compiled, CompiledGraph};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::fact::Fact;
use crate::graph::Graph;
use crate::ops::Op;

pub use io::{IoPlan, PortPlan};

/// The smallest positive normal fp16 (2^-14). Epsilons below it are
/// subnormal in fp16, and the engine flushes subnormal constants to zero
/// (ane-anchors §6), so the lowering never emits one (see [`safe_eps`]).
pub const FP16_MIN_NORMAL: f32 = 6.103_515_6e-5;

/// Most inputs one `concat` gets. Reports disagree (2 per the system that
/// ships this path, 6 seen working on M4, "none" per two others), so the
/// lowering uses the most conservative bound and builds a balanced tree.
pub const MAX_CONCAT_INPUTS: usize = 2;

/// The MIL program for one compiled graph, with what the writers and the
/// runtime need beside it.
#[derive(Debug, Clone)]
pub struct MilProgram {
    pub program: Program,
    pub dialect: Dialect,
    pub plan: IoPlan,
    /// Lowering decisions the user may want to know about (an epsilon
    /// clamped, a concat split into a tree), one line each.
    pub notes: Vec<String>,
}

impl MilProgram {
    /// The MIL text the engine compiles. One weight file per blob: the
    /// portable layout (several blobs in one file failed on M1).
    pub fn text(&self) -> Result<String> {
        mil::to_mil_text(&self.program, self.dialect, WeightLayout::FilePerBlob).map_err(mil_err)
    }

    /// The weight files that go with [`MilProgram::text`]: `(name inside
    /// weights/, bytes)`.
    pub fn weights(&self) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(mil::write_weights(&self.program, WeightLayout::FilePerBlob).map_err(mil_err)?.files)
    }

    /// Writes an `.mlpackage` at `path` (coremltools-compatible: one
    /// `weight.bin`), and beside it `<stem>.mil` plus `<stem>.weights/`
    /// holding the text and weights in the form the engine's in-memory
    /// compiler takes, so both can be inspected.
    ///
    /// The package and the text form are written at the same time, one per
    /// core: each is mostly the kernel copying tens of MB of weights into
    /// files (ResNet-18 from ONNX to files on an Ice Lake VM went from
    /// 150-165 ms to 130-150 when written one after the other; both are
    /// now streamed from the tensors, 43-45 ms in all).
    pub fn save(&self, path: &Path, with_text: bool) -> Result<()> {
        // Nothing is written beside a path the package would refuse.
        mil::check_replaceable(path).map_err(mil_err)?;
        let package = || mil::write_mlpackage(&self.program, path, &mil::PackageOptions::default()).map_err(mil_err);
        let text = || if with_text { self.save_text(path) } else { Ok(()) };
        let (package, text) = rayon::join(package, text);
        package.and(text)
    }

    /// `<stem>.mil` and `<stem>.weights/` beside the package at `path`.
    fn save_text(&self, path: &Path) -> Result<()> {
        let stem = path.with_extension("");
        let text_path = stem.with_extension("mil");
        std::fs::write(&text_path, self.text()?).map_err(|e| file_err(&text_path, e))?;
        let dir = stem.with_extension("weights");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
        }
        if self.program.blobs().is_empty() {
            return Ok(());
        }
        std::fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
        mil::write_weight_files(&self.program, WeightLayout::FilePerBlob, &dir).map_err(mil_err)
    }
}

fn file_err(p: &Path, e: std::io::Error) -> Error {
    Error::File { path: p.display().to_string(), msg: e.to_string() }
}

/// MIL writer errors are compile errors: the graph was valid, the program
/// built from it is not (a lowering bug), or a file could not be written.
pub fn mil_err(e: mil::Error) -> Error {
    match e {
        mil::Error::Io { path, source } => Error::File { path, msg: source.to_string() },
        other => Error::Compile(format!("MIL lowering: {other}")),
    }
}

/// Opset and dialect for a target tier (None: no target, the default).
pub fn dialect_for(tier: Option<u8>) -> (Opset, Dialect) {
    match tier {
        Some(t) if t < 15 => (Opset::Ios16, Dialect::Verbose),
        _ => (Opset::Ios18, Dialect::Concise),
    }
}

/// A value already in the program: its MIL name, the graph fact, and the
/// constant data when the graph node is a constant (weights, gather
/// indices and layer-norm gammas must be compile-time constants in MIL).
#[derive(Clone, Debug)]
pub struct Val<'a> {
    pub name: String,
    pub fact: &'a Fact,
    pub konst: Option<&'a [f32]>,
}

impl Val<'_> {
    /// The MIL element type this value is carried as.
    pub fn mil_dtype(&self) -> MDType {
        repr(self.fact.dtype)
    }
    pub fn rank(&self) -> usize {
        self.fact.rank()
    }
}

/// How a graph dtype is carried inside the program (module docs).
pub fn repr(d: DType) -> MDType {
    match d {
        DType::F32 => MDType::Fp32,
        DType::Bool => MDType::Bool,
        _ => MDType::Fp16,
    }
}

/// The lowering context an op writes into.
pub struct MilCtx<'p> {
    pub program: &'p mut Program,
    pub f: Function,
    pub opset: Opset,
    /// Target tier, when compiled for one.
    pub tier: Option<u8>,
    used: HashSet<String>,
    /// Name reserved for the current node's result.
    result: String,
    pub notes: Vec<String>,
    /// Constants not yet emitted: a graph constant becomes a `const` op only
    /// when some op reads it by name, so a weight a lowering re-lays out
    /// (linear's transposed weight) is neither stored twice nor converted
    /// for nothing.
    pending: HashMap<String, Pending>,
    /// The first pending constant that could not be made a MIL tensor.
    failed: Option<Error>,
}

impl MilCtx<'_> {
    /// A fresh SSA name starting with `base`.
    pub fn fresh(&mut self, base: &str) -> String {
        let base = ident(base);
        let mut n = self.used.len();
        loop {
            let cand = format!("{base}_{n}");
            if self.used.insert(cand.clone()) {
                return cand;
            }
            n += 1;
        }
    }

    /// The name the current node's final op must carry.
    pub fn result(&self) -> String {
        self.result.clone()
    }

    /// Appends one op with one output and returns the output's name.
    pub fn op(&mut self, op_type: &str, inputs: Vec<(&str, Argument)>, out: &str, dtype: MDType, shape: &[usize]) -> String {
        for (_, a) in &inputs {
            for b in a.bindings() {
                if let mil::Binding::Name(n) = b {
                    self.materialize(n);
                }
            }
        }
        self.f.op(op_type, inputs, NamedType::new(out, TensorType::new(dtype, shape.to_vec())))
    }

    /// Appends an op named with a fresh name derived from its type.
    pub fn tmp(&mut self, op_type: &str, inputs: Vec<(&str, Argument)>, dtype: MDType, shape: &[usize]) -> String {
        let name = self.fresh(op_type);
        self.op(op_type, inputs, &name, dtype, shape)
    }

    fn constant(&mut self, base: &str, t: MTensor) -> Result<String> {
        let name = self.fresh(base);
        let v = self.program.auto_value(t).map_err(mil_err)?;
        Ok(self.f.constant(name, v))
    }

    /// An int32 list parameter (`axes`, `perm`, `shape`, ...).
    pub fn ints(&mut self, base: &str, v: &[i64]) -> Result<Argument> {
        let vals: Vec<i32> = v.iter().map(|&x| i32::try_from(x).map_err(|_| Error::Compile(format!("{base}: {x} does not fit int32")))).collect::<Result<_>>()?;
        // Parameters stay inline even when long: they are read by the
        // compiler, not streamed, and coremltools types them from the text.
        let name = self.fresh(base);
        let t = MTensor::int32([vals.len()], vals).map_err(mil_err)?;
        Ok(Argument::name(self.f.constant(name, mil::Value::Immediate(t))))
    }
    pub fn int(&mut self, base: &str, v: i64) -> Result<Argument> {
        let v = i32::try_from(v).map_err(|_| Error::Compile(format!("{base}: {v} does not fit int32")))?;
        let name = self.fresh(base);
        Ok(Argument::name(self.f.constant(name, mil::Value::Immediate(MTensor::scalar_int32(v)))))
    }
    pub fn boolean(&mut self, base: &str, v: bool) -> Result<Argument> {
        let name = self.fresh(base);
        Ok(Argument::name(self.f.constant(name, mil::Value::Immediate(MTensor::scalar_bool(v)))))
    }
    pub fn string(&mut self, base: &str, v: &str) -> Result<Argument> {
        let name = self.fresh(base);
        Ok(Argument::name(self.f.constant(name, mil::Value::Immediate(MTensor::scalar_string(v)))))
    }
    /// A scalar of element type `d` (fp16 or fp32; the type of the tensor
    /// it combines with, as MIL's binary ops require).
    pub fn scalar(&mut self, base: &str, d: MDType, v: f32) -> Result<Argument> {
        let t = match d {
            MDType::Fp32 => MTensor::scalar_fp32(v),
            _ => MTensor::scalar_fp16(f16::from_f32(v)),
        };
        let name = self.fresh(base);
        Ok(Argument::name(self.f.constant(name, mil::Value::Immediate(t))))
    }
    /// A constant tensor of element type `d` from f32 data (blob-placed
    /// when large).
    pub fn tensor(&mut self, base: &str, d: MDType, shape: &[usize], data: &[f32]) -> Result<Argument> {
        let t = mil_tensor(d, shape.to_vec(), data)?;
        Ok(Argument::name(self.constant(base, t)?))
    }

    /// `mul(x, s)` with a scalar constant; returns x itself for s == 1.
    pub fn scale(&mut self, x: &str, d: MDType, shape: &[usize], s: f32) -> Result<String> {
        if s == 1.0 {
            return Ok(x.to_string());
        }
        let c = self.scalar("scale", d, s)?;
        Ok(self.tmp("mul", vec![("x", Argument::name(x)), ("y", c)], d, shape))
    }

    /// Casts a value to the MIL type `to` (no op when it already is).
    pub fn cast_to(&mut self, x: &str, from: MDType, to: MDType, shape: &[usize], out: Option<&str>) -> Result<String> {
        if from == to && out.is_none() {
            return Ok(x.to_string());
        }
        let name = out.map(str::to_string).unwrap_or_else(|| self.fresh("cast"));
        if from == to {
            return Ok(self.op("identity", vec![("x", Argument::name(x))], &name, to, shape));
        }
        let dt = self.string("dtype", to.mil_name())?;
        Ok(self.op("cast", vec![("dtype", dt), ("x", Argument::name(x))], &name, to, shape))
    }

    /// `x` (of shape `from`) broadcast to `to`: MIL has no broadcast_to, so
    /// a reshape adds leading axes of size 1 and `tile` repeats the
    /// broadcast axes. `out` names the final op (else a fresh name); no op
    /// when the shapes already agree.
    pub fn broadcast_to(&mut self, x: &str, from: &[usize], to: &[usize], d: MDType, out: Option<&str>) -> Result<String> {
        let mut xin = x.to_string();
        let mut s = from.to_vec();
        if s.len() < to.len() {
            let mut full = vec![1; to.len() - s.len()];
            full.extend(&s);
            s = full;
            let sa = self.ints("shape", &i64s(&s))?;
            xin = self.tmp("reshape", vec![("shape", sa), ("x", Argument::name(xin))], d, &s);
        }
        let reps: Vec<i64> = s.iter().zip(to).map(|(&a, &b)| (b / a.max(1)) as i64).collect();
        if reps.iter().all(|&k| k == 1) {
            return Ok(xin);
        }
        let ra = self.ints("reps", &reps)?;
        let name = out.map(str::to_string).unwrap_or_else(|| self.fresh("tile"));
        Ok(self.op("tile", vec![("reps", ra), ("x", Argument::name(xin))], &name, d, to))
    }

    /// A bool view of `v`: itself if bool, else `not_equal(v, 0)`.
    pub fn truthy(&mut self, v: &Val) -> Result<String> {
        let d = v.mil_dtype();
        if d == MDType::Bool {
            return Ok(v.name.clone());
        }
        let z = self.scalar("zero", d, 0.0)?;
        Ok(self.tmp("not_equal", vec![("x", Argument::name(&v.name)), ("y", z)], MDType::Bool, &v.fact.shape))
    }

    /// Emits a pending graph constant the first time it is read.
    fn materialize(&mut self, name: &str) {
        if let Some(Pending { data, dtype: d, shape }) = self.pending.remove(name) {
            // `op` returns no Result: a failure is kept for `lower` to report.
            let t = match mil_tensor(d, shape, &data) {
                Ok(t) => t,
                Err(e) => {
                    self.failed.get_or_insert(e);
                    return;
                }
            };
            // auto_value only fails for dtypes blobs cannot hold: those stay
            // inline, decided up front so that the tensor is not cloned in
            // case of a fallback.
            let v = if t.dtype().blob_code().is_none() {
                mil::Value::Immediate(t)
            } else {
                match self.program.auto_value(t) {
                    Ok(v) => v,
                    Err(e) => {
                        self.failed.get_or_insert(mil_err(e));
                        return;
                    }
                }
            };
            self.f.constant(name.to_string(), v);
        }
    }

    /// Records a lowering decision for the compile notes.
    pub fn note(&mut self, s: String) {
        if !self.notes.contains(&s) {
            self.notes.push(s);
        }
    }
}

/// An epsilon the engine will not flush: `(k, eps')` such that normalising
/// `k·x` with `eps'` equals normalising `x` with `eps` (norms are scale
/// invariant: (kx)/sqrt(k²v + k²e) = x/sqrt(v + e)). k is a power of two
/// (exact in fp16) up to 16; an eps too small even for that (1e-12) is
/// clamped to the smallest normal fp16, which changes the result only when
/// the variance itself is below ~6e-5. Returns whether it clamped.
pub fn safe_eps(eps: f32) -> (f32, f32, bool) {
    if eps == 0.0 || eps >= FP16_MIN_NORMAL {
        return (1.0, eps, false);
    }
    let mut k = 1.0f32;
    while k < 16.0 && eps * k * k < FP16_MIN_NORMAL {
        k *= 2.0;
    }
    if eps * k * k >= FP16_MIN_NORMAL {
        (k, eps * k * k, false)
    } else {
        (1.0, FP16_MIN_NORMAL, true)
    }
}

/// How an op family spells itself in MIL. `ins` are the node's inputs
/// (already in the program), `out` its fact; the implementation appends
/// ops and returns the name holding the result, normally
/// [`MilCtx::result`]. It may return an input's name when the op is a
/// no-op in MIL (a cast between two integer types carried as fp16).
pub trait LowerMil {
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String>;
}

/// Makes `s` a MIL identifier (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn ident(s: &str) -> String {
    let mut out: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Lowers a compiled program (its optimised graph and port names) for
/// `tier` (the target's family number; None: the default dialect).
pub fn lower_compiled(c: &Compiled) -> Result<MilProgram> {
    lower(&c.graph, &c.input_names, &c.output_names, tier_of(&c.options))
}

/// [`lower_compiled`] for a compile that skipped the sim plan.
pub fn lower_compiled_graph(c: &CompiledGraph) -> Result<MilProgram> {
    lower(&c.graph, &c.input_names, &c.output_names, tier_of(&c.options))
}

fn tier_of(options: &CompileOptions) -> Option<u8> {
    options.target.as_ref().map(|t| t.tier)
}

/// Lowers `g` to one MIL program (module docs for the rules).
pub fn lower(g: &Graph, input_names: &[String], output_names: &[String], tier: Option<u8>) -> Result<MilProgram> {
    let (opset, dialect) = dialect_for(tier);
    let mut program = Program::new(opset);
    let mut used = HashSet::new();
    // Port names first, so internal names never take them.
    let port_mil = |n: &str, used: &mut HashSet<String>| {
        let base = ident(n);
        let mut cand = base.clone();
        let mut k = 1;
        while !used.insert(cand.clone()) {
            cand = format!("{base}_{k}");
            k += 1;
        }
        cand
    };
    let in_ids = g.inputs();
    let in_mil: Vec<String> = input_names.iter().map(|n| port_mil(n, &mut used)).collect();
    let out_mil: Vec<String> = output_names.iter().map(|n| port_mil(n, &mut used)).collect();
    let mut cx = MilCtx { program: &mut program, f: Function::new(), opset, tier, used, result: String::new(), notes: vec![], pending: HashMap::new(), failed: None };

    // Graph node → MIL name of its value.
    let mut names: Vec<Option<String>> = vec![None; g.nodes.len()];
    for (k, &i) in in_ids.iter().enumerate() {
        let n = &g.nodes[i];
        if !n.fact.dtype.is_input_port() && n.fact.dtype != DType::F32 && n.fact.dtype != DType::Bool {
            return Err(Error::dtype("mil", format!("input {:?} is {}; engine ports are fp16 or 8/16-bit integers", input_names[k], n.fact)));
        }
        // Every port is fp16 on the engine; fp32 and bool inputs are fed as
        // fp16 and cast to their declared type inside the program.
        let port = in_mil[k].clone();
        cx.f.input(port.clone(), TensorType::new(MDType::Fp16, n.fact.shape.clone()));
        let inner = repr(n.fact.dtype);
        names[i] = Some(if inner == MDType::Fp16 {
            port
        } else if inner == MDType::Bool {
            let v = Val { name: port, fact: &n.fact, konst: None };
            let f16fact = Fact::new(n.fact.shape.clone(), DType::F16);
            let v = Val { fact: &f16fact, ..v };
            cx.truthy(&v)?
        } else {
            cx.cast_to(&port, MDType::Fp16, inner, &n.fact.shape, None)?
        });
    }
    // Outputs: which nodes can take the port name directly.
    let mut direct: HashMap<usize, String> = HashMap::new();
    let mut seen = HashSet::new();
    for (k, &o) in g.outputs.iter().enumerate() {
        let n = &g.nodes[o];
        if seen.insert(o) && !matches!(n.op, Op::Input(_)) && repr(n.fact.dtype) == MDType::Fp16 {
            direct.insert(o, out_mil[k].clone());
        }
    }
    let uses = g.use_counts();
    for (i, node) in g.nodes.iter().enumerate() {
        if names[i].is_some() || uses[i] == 0 {
            continue;
        }
        let consts: Vec<Option<Arc<Vec<f32>>>> = node.inputs.iter().map(|&j| const_data(&g.nodes[j].op)).collect();
        let ins: Vec<Val> = node
            .inputs
            .iter()
            .zip(&consts)
            .map(|(&j, c)| {
                let name = names[j].clone().ok_or_else(|| Error::Compile(format!("MIL lowering: node {j} used before it was lowered")))?;
                Ok(Val { name, fact: &g.nodes[j].fact, konst: c.as_ref().map(|v| v.as_slice()) })
            })
            .collect::<Result<_>>()?;
        cx.result = match direct.get(&i) {
            Some(n) => n.clone(),
            None => cx.fresh(&node.op.name()),
        };
        let got = node.op.lower_mil(&mut cx, &ins, &node.fact).map_err(|e| at_node(e, node))?;
        if direct.contains_key(&i) {
            cx.materialize(&got);
        }
        if direct.contains_key(&i) && got != cx.result {
            // Aliased result (a no-op in MIL) on an output: name it.
            let r = cx.result.clone();
            cx.cast_to(&got, MDType::Fp16, MDType::Fp16, &node.fact.shape, Some(&r))?;
            names[i] = Some(r);
        } else {
            names[i] = Some(got);
        }
    }
    for (k, &o) in g.outputs.iter().enumerate() {
        let n = &g.nodes[o];
        let v = names[o].clone().ok_or_else(|| Error::Compile("MIL lowering: an output was not lowered".into()))?;
        cx.materialize(&v);
        if v != out_mil[k] {
            cx.cast_to(&v, repr(n.fact.dtype), MDType::Fp16, &n.fact.shape, Some(&out_mil[k]))?;
        }
        cx.f.output(out_mil[k].clone());
    }
    if let Some(e) = cx.failed.take() {
        return Err(e);
    }
    let notes = std::mem::take(&mut cx.notes);
    let f = std::mem::take(&mut cx.f);
    program.add_function("main", f);
    program.validate().map_err(mil_err)?;
    let ins: Vec<(String, String, Fact)> =
        in_ids.iter().enumerate().map(|(k, &i)| (input_names[k].clone(), in_mil[k].clone(), g.nodes[i].fact.clone())).collect();
    let outs: Vec<(String, String, Fact)> =
        g.outputs.iter().enumerate().map(|(k, &o)| (output_names[k].clone(), out_mil[k].clone(), g.nodes[o].fact.clone())).collect();
    let plan = IoPlan::new(&ins, &outs)?;
    Ok(MilProgram { program, dialect, plan, notes })
}

fn at_node(e: Error, node: &crate::graph::Node) -> Error {
    match (&e, &node.origin) {
        (Error::UnsupportedOp { op, msg }, Some(o)) => Error::UnsupportedOp { op: op.clone(), msg: format!("{msg} (built at {o})") },
        _ => e,
    }
}

/// Constant data of a source node, for lowerings that need compile-time
/// values. A parameter is baked with its current value: a MIL export is an
/// inference snapshot.
fn const_data(op: &Op) -> Option<Arc<Vec<f32>>> {
    match op {
        Op::Const(c) => Some(c.data.clone()),
        Op::Param(p) => Some(Arc::new(p.values())),
        _ => None,
    }
}

/// Sources: inputs are lowered by the driver; constants and parameters
/// become `const` ops (in the weight file when large).
impl LowerMil for Op {
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        match self {
            Op::Input(_) => Err(Error::Compile("MIL lowering: an input reached the op walk".into())),
            Op::Const(c) => lower_const(cx, c.data.clone(), out),
            Op::Param(p) => lower_const(cx, Arc::new(p.values()), out),
            Op::Unary(x) => x.lower_mil(cx, ins, out),
            Op::Binary(x) => x.lower_mil(cx, ins, out),
            Op::Where(x) => x.lower_mil(cx, ins, out),
            Op::Cast(x) => x.lower_mil(cx, ins, out),
            Op::MatMul(x) => x.lower_mil(cx, ins, out),
            Op::Conv(x) => x.lower_mil(cx, ins, out),
            Op::ConvTranspose(x) => x.lower_mil(cx, ins, out),
            Op::Pool(x) => x.lower_mil(cx, ins, out),
            Op::Resize(x) => x.lower_mil(cx, ins, out),
            Op::Reduce(x) => x.lower_mil(cx, ins, out),
            Op::CumSum(x) => x.lower_mil(cx, ins, out),
            Op::Softmax(x) => x.lower_mil(cx, ins, out),
            Op::Norm(x) => x.lower_mil(cx, ins, out),
            Op::Reshape(x) => x.lower_mil(cx, ins, out),
            Op::Transpose(x) => x.lower_mil(cx, ins, out),
            Op::Concat(x) => x.lower_mil(cx, ins, out),
            Op::Slice(x) => x.lower_mil(cx, ins, out),
            Op::Tile(x) => x.lower_mil(cx, ins, out),
            Op::Pad(x) => x.lower_mil(cx, ins, out),
            Op::Gather(x) => x.lower_mil(cx, ins, out),
            Op::Expand(x) => x.lower_mil(cx, ins, out),
            Op::UnaryGrad(x) => x.lower_mil(cx, ins, out),
            Op::ScatterAdd(x) => x.lower_mil(cx, ins, out),
            Op::PoolGrad(_) | Op::ConvWeightGrad(_) => Err(Error::unsupported(
                self.name(),
                "this backward op has no MIL lowering yet; export the forward graph, or train with backend=\"sim\"",
            )),
        }
    }
}

/// A graph constant waiting to be emitted (see `MilCtx::pending`).
struct Pending {
    data: Arc<Vec<f32>>,
    dtype: MDType,
    shape: Vec<usize>,
}

fn lower_const(cx: &mut MilCtx, data: Arc<Vec<f32>>, out: &Fact) -> Result<String> {
    let name = cx.result();
    cx.pending.insert(name.clone(), Pending { data, dtype: repr(out.dtype), shape: out.shape.clone() });
    Ok(name)
}

/// A MIL tensor of element type `d` from f32 values (fp16 for every
/// narrower float, converted with the vector routine: the scalar one was a
/// tenth of ResNet-18's export).
fn mil_tensor(d: MDType, shape: Vec<usize>, data: &[f32]) -> Result<MTensor> {
    match d {
        MDType::Fp32 => MTensor::fp32(shape, data.to_vec()),
        MDType::Bool => MTensor::new(MDType::Bool, shape, mil::TensorData::Bool(data.iter().map(|&v| v != 0.0).collect())),
        MDType::Int32 => MTensor::int32(shape, data.iter().map(|&v| v as i32).collect()),
        _ => {
            let mut h = vec![f16::ZERO; data.len()];
            crate::numerics::f32_to_f16(data, &mut h);
            MTensor::fp16(shape, h)
        }
    }
    .map_err(mil_err)
}

/// Shape as i64s for `ints`.
pub fn i64s(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

#[cfg(test)]
mod tests;
