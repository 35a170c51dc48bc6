//! The operator set. Each family file holds, per op: its attributes, shape
//! and dtype rule, sim kernel and cost. [`Op`] is the closed sum of them; the
//! `dispatch!` macro forwards the [`OpDef`] methods to the family.
//!
//! Composite ops (linear, group_norm, einsum, pixel_shuffle, …) are not
//! here: they are builder functions in `api` that reduce to these.

pub mod conv;
pub mod elementwise;
mod im2col;
pub mod linalg;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod shape;
pub mod source;
mod winograd;

use crate::error::Result;
use crate::fact::Fact;

pub use conv::{Conv, ConvTranspose, ConvWeightGrad};
pub use elementwise::{Binary, Cast, Unary, UnaryGrad, Where};
pub use linalg::MatMul;
pub use norm::{Norm, NormKind, Softmax};
pub use pool::{Pool, PoolGrad, PoolKind, Resize, ResizeMode};
pub use reduce::{CumSum, Reduce, ReduceKind};
pub use shape::{Concat, Expand, Gather, Pad, PadMode, Reshape, ScatterAdd, Slice, Tile, Transpose};
pub use source::{Const, Input, Param};

/// A read-only input of a kernel: contiguous row-major data and its shape.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub shape: &'a [usize],
}

/// How a kernel should compute (set once per compiled program).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalCtx {
    /// fp16 storage: reductions accumulate in fp16 like the engine does.
    pub fp16: bool,
    /// IEEE numerics for debugging: f32 accumulation everywhere.
    pub ieee: bool,
    /// The program's constants take at most half the host's last-level
    /// cache, so a weight is found there from one call to the next (set by
    /// the sim when it plans the program; it only steers how GEMMs share
    /// work).
    pub weights_cached: bool,
}

impl EvalCtx {
    /// Whether sum-like reductions round their accumulator to fp16 each step.
    pub fn fp16_accumulate(&self) -> bool {
        self.fp16 && !self.ieee
    }
}

/// Work an op does, for the estimator. Bytes are counted by the caller from
/// the facts; the op only knows its arithmetic.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    pub flops: f64,
}

/// What every op provides. Kernels are infallible: all checks happen in
/// `infer`, when the node is built.
pub trait OpDef {
    fn name(&self) -> String;
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact>;
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], scratch: &mut [f32], ctx: &EvalCtx);
    /// f32 scratch elements `eval` needs; preallocated once per program.
    fn scratch_len(&self, _ins: &[&Fact], _out: &Fact) -> usize {
        0
    }
    fn cost(&self, _ins: &[&Fact], out: &Fact) -> Cost {
        Cost { flops: out.numel() as f64 }
    }
    /// Whether `eval` rounds its own output to fp16 when `ctx.fp16` (a GEMM
    /// does it in its epilogue, while a tile is in registers), so the sim
    /// skips its rounding pass after the kernel.
    fn rounds_output(&self) -> bool {
        false
    }
    /// Work a kernel can do once, at compile time, from its constant inputs
    /// (`consts[i]` is input i's data when it is a constant). The sim passes
    /// the result to `eval` as one extra trailing input.
    fn prepare(&self, _ins: &[&Fact], _consts: &[Option<&[f32]>], _out: &Fact) -> Option<Vec<f32>> {
        None
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Input(Input),
    Const(Const),
    Param(Param),
    Unary(Unary),
    Binary(Binary),
    Where(Where),
    Cast(Cast),
    MatMul(MatMul),
    Conv(Conv),
    ConvTranspose(ConvTranspose),
    Pool(Pool),
    Resize(Resize),
    Reduce(Reduce),
    CumSum(CumSum),
    Softmax(Softmax),
    Norm(Norm),
    Reshape(Reshape),
    Transpose(Transpose),
    Concat(Concat),
    Slice(Slice),
    Tile(Tile),
    Pad(Pad),
    Gather(Gather),
    Expand(Expand),
    // Backward ops (built by autograd).
    UnaryGrad(UnaryGrad),
    PoolGrad(PoolGrad),
    ConvWeightGrad(ConvWeightGrad),
    ScatterAdd(ScatterAdd),
}

macro_rules! dispatch {
    ($self:expr, $x:ident => $e:expr) => {
        match $self {
            Op::Input($x) => $e,
            Op::Const($x) => $e,
            Op::Param($x) => $e,
            Op::Unary($x) => $e,
            Op::Binary($x) => $e,
            Op::Where($x) => $e,
            Op::Cast($x) => $e,
            Op::MatMul($x) => $e,
            Op::Conv($x) => $e,
            Op::ConvTranspose($x) => $e,
            Op::Pool($x) => $e,
            Op::Resize($x) => $e,
            Op::Reduce($x) => $e,
            Op::CumSum($x) => $e,
            Op::Softmax($x) => $e,
            Op::Norm($x) => $e,
            Op::Reshape($x) => $e,
            Op::Transpose($x) => $e,
            Op::Concat($x) => $e,
            Op::Slice($x) => $e,
            Op::Tile($x) => $e,
            Op::Pad($x) => $e,
            Op::Gather($x) => $e,
            Op::Expand($x) => $e,
            Op::UnaryGrad($x) => $e,
            Op::PoolGrad($x) => $e,
            Op::ConvWeightGrad($x) => $e,
            Op::ScatterAdd($x) => $e,
        }
    };
}

impl Op {
    pub fn name(&self) -> String {
        dispatch!(self, x => x.name())
    }
    pub fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        dispatch!(self, x => x.infer(inputs))
    }
    pub fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], scratch: &mut [f32], ctx: &EvalCtx) {
        dispatch!(self, x => x.eval(ins, out, out_shape, scratch, ctx))
    }
    pub fn rounds_output(&self) -> bool {
        dispatch!(self, x => x.rounds_output())
    }
    pub fn scratch_len(&self, ins: &[&Fact], out: &Fact) -> usize {
        dispatch!(self, x => x.scratch_len(ins, out))
    }
    pub fn cost(&self, ins: &[&Fact], out: &Fact) -> Cost {
        dispatch!(self, x => x.cost(ins, out))
    }
    pub fn prepare(&self, ins: &[&Fact], consts: &[Option<&[f32]>], out: &Fact) -> Option<Vec<f32>> {
        dispatch!(self, x => x.prepare(ins, consts, out))
    }
    /// Sources hold data instead of computing it.
    pub fn is_source(&self) -> bool {
        matches!(self, Op::Input(_) | Op::Const(_) | Op::Param(_))
    }
    pub fn as_const(&self) -> Option<&Const> {
        match self {
            Op::Const(c) => Some(c),
            _ => None,
        }
    }
}

/// Checks the number of inputs an op received.
pub(crate) fn expect_inputs(op: &str, inputs: &[&Fact], n: usize) -> Result<()> {
    if inputs.len() != n {
        return Err(crate::Error::value(op, format!("expects {n} input(s), got {}", inputs.len())));
    }
    Ok(())
}

/// Requires a floating-point input (the engine computes in fp16).
pub(crate) fn expect_float(op: &str, f: &Fact, what: &str) -> Result<()> {
    if !f.dtype.is_float() {
        return Err(crate::Error::dtype(
            op,
            format!("{what} is {} but {op} needs fp16 or fp32; cast it first with .cast(\"fp16\")", f),
        ));
    }
    Ok(())
}

impl Op {
    /// True when the output holds only values already present in the inputs
    /// (or exact integers), so fp16 storage needs no new rounding.
    pub fn is_exact(&self) -> bool {
        match self {
            Op::Unary(u) => u.is_exact(),
            Op::Binary(b) => b.is_exact(),
            Op::Pool(p) => p.is_exact(),
            Op::Reduce(r) => r.is_exact(),
            Op::Cast(c) => c.to != crate::DType::F16,
            Op::Where(_) => true,
            _ => self.is_movement(),
        }
    }

    /// Ops that only move, copy or select elements, with no arithmetic: the
    /// estimator prices them as data movement, and their outputs need no
    /// new fp16 rounding.
    pub fn is_movement(&self) -> bool {
        matches!(
            self,
            Op::Reshape(_) | Op::Transpose(_) | Op::Concat(_) | Op::Slice(_) | Op::Tile(_) | Op::Pad(_) | Op::Gather(_) | Op::Expand(_)
        )
    }
}
