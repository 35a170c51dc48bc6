//! Elementwise ops: unary maps, broadcasting binaries, `where`, `cast`.

use super::{expect_float, expect_inputs, Cost, EvalCtx, OpDef, View};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::fact::{broadcast_shapes, Fact};
use crate::numerics::{erf, exp, round_int, sigmoid, tanh};
use crate::parallel::{per_thread, SPLIT_MIN};
use rayon::prelude::*;

/// Values per task of a split elementwise loop: one part per thread (see
/// [`crate::parallel`]), whole 16-lane vectors.
fn part(len: usize) -> usize {
    per_thread(len).next_multiple_of(16)
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GeluMode {
    Exact,
    Tanh,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    Relu,
    Relu6,
    LeakyRelu(f32),
    Elu(f32),
    Silu,
    Sigmoid,
    HardSigmoid { alpha: f32, beta: f32 },
    HardSwish,
    Gelu(GeluMode),
    Softplus,
    Softsign,
    Tanh,
    ScaledTanh { alpha: f32, beta: f32 },
    /// `max(x, alpha)`, MIL's `threshold`.
    Threshold(f32),
    Clip { lo: f32, hi: f32 },
    Exp,
    Exp2,
    Log,
    Sqrt,
    Rsqrt,
    Reciprocal,
    Square,
    Abs,
    Sign,
    Neg,
    Sin,
    Cos,
    Atan,
    Erf,
    Floor,
    Ceil,
    Round,
    LogicalNot,
}

impl Unary {
    /// Parses the Python spelling (`"relu"`, `"hard_swish"`); attribute-carrying
    /// ops get their defaults.
    pub fn parse(name: &str) -> Option<Unary> {
        use Unary::*;
        Some(match name {
            "relu" => Relu,
            "relu6" => Relu6,
            "leaky_relu" => LeakyRelu(0.01),
            "elu" => Elu(1.0),
            "silu" => Silu,
            "sigmoid" => Sigmoid,
            "hard_sigmoid" => HardSigmoid { alpha: 0.2, beta: 0.5 },
            "hard_swish" => HardSwish,
            "gelu" => Gelu(GeluMode::Exact),
            "softplus" => Softplus,
            "softsign" => Softsign,
            "tanh" => Tanh,
            "exp" => Exp,
            "exp2" => Exp2,
            "log" => Log,
            "sqrt" => Sqrt,
            "rsqrt" => Rsqrt,
            "reciprocal" => Reciprocal,
            "square" => Square,
            "abs" => Abs,
            "sign" => Sign,
            "neg" => Neg,
            "sin" => Sin,
            "cos" => Cos,
            "atan" => Atan,
            "erf" => Erf,
            "floor" => Floor,
            "ceil" => Ceil,
            "round" => Round,
            "logical_not" => LogicalNot,
            _ => return None,
        })
    }

    pub fn op_name(&self) -> &'static str {
        use Unary::*;
        match self {
            Relu => "relu",
            Relu6 => "relu6",
            LeakyRelu(_) => "leaky_relu",
            Elu(_) => "elu",
            Silu => "silu",
            Sigmoid => "sigmoid",
            HardSigmoid { .. } => "hard_sigmoid",
            HardSwish => "hard_swish",
            Gelu(_) => "gelu",
            Softplus => "softplus",
            Softsign => "softsign",
            Tanh => "tanh",
            ScaledTanh { .. } => "scaled_tanh",
            Threshold(_) => "threshold",
            Clip { .. } => "clip",
            Exp => "exp",
            Exp2 => "exp2",
            Log => "log",
            Sqrt => "sqrt",
            Rsqrt => "rsqrt",
            Reciprocal => "reciprocal",
            Square => "square",
            Abs => "abs",
            Sign => "sign",
            Neg => "neg",
            Sin => "sin",
            Cos => "cos",
            Atan => "atan",
            Erf => "erf",
            Floor => "floor",
            Ceil => "ceil",
            Round => "round",
            LogicalNot => "logical_not",
        }
    }

    /// The scalar function, in f32. `ieee` selects NaN-propagating min/max;
    /// the engine's min/max units return the other operand instead.
    #[inline(always)]
    pub fn apply(&self, x: f32, ieee: bool) -> f32 {
        use Unary::*;
        let max = |a: f32, b: f32| if ieee && a.is_nan() { a } else { a.max(b) };
        let min = |a: f32, b: f32| if ieee && a.is_nan() { a } else { a.min(b) };
        match *self {
            Relu => max(x, 0.0),
            Relu6 => min(max(x, 0.0), 6.0),
            LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Elu(a) => {
                if x > 0.0 {
                    x
                } else {
                    a * (exp(x) - 1.0)
                }
            }
            Silu => x * sigmoid(x),
            Sigmoid => sigmoid(x),
            HardSigmoid { alpha, beta } => min(max(alpha * x + beta, 0.0), 1.0),
            HardSwish => x * min(max(x + 3.0, 0.0), 6.0) / 6.0,
            Gelu(GeluMode::Exact) => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
            Gelu(GeluMode::Tanh) => {
                let c = (2.0f32 / std::f32::consts::PI).sqrt();
                0.5 * x * (1.0 + tanh(c * (x + 0.044715 * x * x * x)))
            }
            Softplus => {
                // log1p(exp(x)) without overflow for large x.
                if x > 20.0 {
                    x
                } else {
                    exp(x).ln_1p()
                }
            }
            Softsign => x / (1.0 + x.abs()),
            Tanh => tanh(x),
            ScaledTanh { alpha, beta } => alpha * tanh(beta * x),
            Threshold(a) => max(x, a),
            Clip { lo, hi } => min(max(x, lo), hi),
            Exp => exp(x),
            Exp2 => x.exp2(),
            Log => x.ln(),
            Sqrt => x.sqrt(),
            Rsqrt => 1.0 / x.sqrt(),
            Reciprocal => 1.0 / x,
            Square => x * x,
            Abs => x.abs(),
            Sign => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    x * 0.0
                }
            }
            Neg => -x,
            Sin => x.sin(),
            Cos => x.cos(),
            Atan => x.atan(),
            Erf => erf(x),
            Floor => x.floor(),
            Ceil => x.ceil(),
            Round => x.round_ties_even(),
            LogicalNot => (x == 0.0) as u8 as f32,
        }
    }

    /// Outputs are a subset of the inputs' values (no new rounding needed).
    fn exact(&self) -> bool {
        use Unary::*;
        matches!(self, Relu | Relu6 | Threshold(_) | Clip { .. } | Abs | Neg | Floor | Ceil | Round | Sign | LogicalNot)
    }

    fn flops_per_elem(&self) -> f64 {
        use Unary::*;
        match self {
            Relu | Relu6 | Abs | Neg | Threshold(_) | Clip { .. } | Sign | Floor | Ceil | Round | LogicalNot => 1.0,
            Square | LeakyRelu(_) | HardSigmoid { .. } | Reciprocal => 2.0,
            _ => 8.0,
        }
    }
}

impl OpDef for Unary {
    fn name(&self) -> String {
        self.op_name().into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        let op = self.op_name();
        expect_inputs(op, inputs, 1)?;
        let x = inputs[0];
        if *self == Unary::LogicalNot {
            return Ok(Fact::new(x.shape.clone(), DType::Bool));
        }
        expect_float(op, x, "x")?;
        if let Unary::Clip { lo, hi } = self {
            if lo > hi {
                return Err(Error::value(op, format!("lo={lo} is greater than hi={hi}; swap them")));
            }
        }
        Ok(x.clone())
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &mut [f32], ctx: &EvalCtx) {
        self.apply_slice(ins[0].data, out, ctx.ieee);
    }
    fn cost(&self, _: &[&Fact], out: &Fact) -> Cost {
        Cost { flops: out.numel() as f64 * self.flops_per_elem() }
    }
}

impl Unary {
    pub fn is_exact(&self) -> bool {
        self.exact()
    }

    /// `out[i] = f(x[i])`.
    pub fn apply_slice(&self, x: &[f32], out: &mut [f32], ieee: bool) {
        self.with_kernel(ieee, IntoSlice { x, out });
    }

    /// `buf[i] = f(buf[i])` (a fused activation over a kernel's output).
    pub fn apply_in_place(&self, buf: &mut [f32], ieee: bool) {
        self.with_kernel(ieee, InPlace(buf));
    }

    /// The clamp bounds of relu, relu6 and clip, which GEMM kernels apply
    /// in registers. Not under IEEE numerics: a register clamp maps NaN to
    /// the bound, where `apply` propagates it.
    pub fn as_clamp(&self, ieee: bool) -> Option<(f32, f32)> {
        match *self {
            _ if ieee => None,
            Unary::Relu => Some((0.0, f32::INFINITY)),
            Unary::Relu6 => Some((0.0, 6.0)),
            Unary::Clip { lo, hi } => Some((lo, hi)),
            _ => None,
        }
    }

    /// Runs `m` with this op's scalar function. The match happens once,
    /// outside the loop, so each op gets its own monomorphised loop that
    /// the compiler can vectorise.
    fn with_kernel(&self, ieee: bool, m: impl SliceMap) {
        // Each arm names its variant as a constant so that, once `apply` is
        // inlined, the inner match folds away and the loop vectorises.
        macro_rules! arms {
            ($($v:ident $(($($f:ident),*))? $({$($g:ident),*})?),* $(,)?) => {
                match *self {
                    $(Unary::$v $(($($f),*))? $({$($g),*})? => m.run(move |a| Unary::$v $(($($f),*))? $({$($g),*})?.apply(a, ieee)),)*
                }
            };
        }
        arms!(
            Relu, Relu6, LeakyRelu(p), Elu(p), Silu, Sigmoid, HardSigmoid { alpha, beta }, HardSwish, Gelu(m),
            Softplus, Softsign, Tanh, ScaledTanh { alpha, beta }, Threshold(p), Clip { lo, hi }, Exp, Exp2, Log,
            Sqrt, Rsqrt, Reciprocal, Square, Abs, Sign, Neg, Sin, Cos, Atan, Erf, Floor, Ceil, Round, LogicalNot,
        )
    }
}

/// Where a unary kernel reads and writes (see [`Unary::with_kernel`]).
trait SliceMap {
    fn run(self, f: impl Fn(f32) -> f32 + Sync + Send + Copy);
}

struct IntoSlice<'a> {
    x: &'a [f32],
    out: &'a mut [f32],
}

impl SliceMap for IntoSlice<'_> {
    #[inline(always)]
    fn run(self, f: impl Fn(f32) -> f32 + Sync + Send + Copy) {
        map_slice(self.x, self.out, f)
    }
}

struct InPlace<'a>(&'a mut [f32]);

impl SliceMap for InPlace<'_> {
    #[inline(always)]
    fn run(self, f: impl Fn(f32) -> f32 + Sync + Send + Copy) {
        let run = |o: &mut [f32]| o.iter_mut().for_each(|v| *v = f(*v));
        if self.0.len() >= SPLIT_MIN {
            self.0.par_chunks_mut(part(self.0.len())).for_each(run);
        } else {
            run(self.0);
        }
    }
}

/// Applies `f` elementwise, in parallel chunks for large slices.
#[inline(always)]
pub(crate) fn map_slice(x: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32 + Sync + Send + Copy) {
    let run = |o: &mut [f32], i: &[f32]| {
        for (o, &v) in o.iter_mut().zip(i) {
            *o = f(v);
        }
    };
    if out.len() >= SPLIT_MIN {
        let part = part(out.len());
        out.par_chunks_mut(part).zip(x.par_chunks(part)).for_each(|(o, i)| run(o, i));
    } else {
        run(out, x);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Maximum,
    Minimum,
    Equal,
    NotEqual,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
}

impl Binary {
    pub fn parse(name: &str) -> Option<Binary> {
        use Binary::*;
        Some(match name {
            "add" => Add,
            "sub" => Sub,
            "mul" => Mul,
            "div" => Div,
            "pow" => Pow,
            "maximum" => Maximum,
            "minimum" => Minimum,
            "equal" => Equal,
            "not_equal" => NotEqual,
            "less" => Less,
            "less_equal" => LessEqual,
            "greater" => Greater,
            "greater_equal" => GreaterEqual,
            _ => return None,
        })
    }

    pub fn op_name(&self) -> &'static str {
        use Binary::*;
        match self {
            Add => "add",
            Sub => "sub",
            Mul => "mul",
            Div => "div",
            Pow => "pow",
            Maximum => "maximum",
            Minimum => "minimum",
            Equal => "equal",
            NotEqual => "not_equal",
            Less => "less",
            LessEqual => "less_equal",
            Greater => "greater",
            GreaterEqual => "greater_equal",
        }
    }

    pub fn is_comparison(&self) -> bool {
        use Binary::*;
        matches!(self, Equal | NotEqual | Less | LessEqual | Greater | GreaterEqual)
    }

    #[inline(always)]
    pub fn apply(&self, a: f32, b: f32, ieee: bool) -> f32 {
        use Binary::*;
        match *self {
            Add => a + b,
            Sub => a - b,
            Mul => a * b,
            Div => a / b,
            Pow => a.powf(b),
            Maximum => {
                if ieee && (a.is_nan() || b.is_nan()) {
                    f32::NAN
                } else {
                    a.max(b)
                }
            }
            Minimum => {
                if ieee && (a.is_nan() || b.is_nan()) {
                    f32::NAN
                } else {
                    a.min(b)
                }
            }
            Equal => (a == b) as u8 as f32,
            NotEqual => (a != b) as u8 as f32,
            Less => (a < b) as u8 as f32,
            LessEqual => (a <= b) as u8 as f32,
            Greater => (a > b) as u8 as f32,
            GreaterEqual => (a >= b) as u8 as f32,
        }
    }
}

/// Dtype of an elementwise result over same-typed operands.
fn common_dtype(op: &str, fs: &[&Fact]) -> Result<DType> {
    let d = fs[0].dtype;
    for f in &fs[1..] {
        if f.dtype != d {
            let list: Vec<String> = fs.iter().map(|f| f.to_string()).collect();
            return Err(Error::dtype(
                op,
                format!("operands have different dtypes ({}); cast one with .cast(\"{}\")", list.join(", "), d),
            ));
        }
    }
    Ok(d)
}

impl OpDef for Binary {
    fn name(&self) -> String {
        self.op_name().into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        let op = self.op_name();
        expect_inputs(op, inputs, 2)?;
        let d = common_dtype(op, inputs)?;
        if d == DType::Bool && !self.is_comparison() {
            return Err(Error::dtype(op, "operands are bool; cast them to fp16 first with .cast(\"fp16\")"));
        }
        let shape = broadcast_shapes(op, &inputs[0].shape, &inputs[1].shape)?;
        Ok(Fact::new(shape, if self.is_comparison() { DType::Bool } else { d }))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &mut [f32], ctx: &EvalCtx) {
        let ieee = ctx.ieee;
        // As for Unary: a constant variant per arm lets each loop vectorise.
        macro_rules! arms {
            ($($v:ident),*) => {
                match *self {
                    $(Binary::$v => binary_loop(ins[0], ins[1], out, out_shape, move |a, b| Binary::$v.apply(a, b, ieee)),)*
                }
            };
        }
        arms!(Add, Sub, Mul, Div, Pow, Maximum, Minimum, Equal, NotEqual, Less, LessEqual, Greater, GreaterEqual)
    }
    fn cost(&self, _: &[&Fact], out: &Fact) -> Cost {
        Cost { flops: out.numel() as f64 * if *self == Binary::Pow { 8.0 } else { 1.0 } }
    }
}

impl Binary {
    pub fn is_exact(&self) -> bool {
        matches!(self, Binary::Maximum | Binary::Minimum) || self.is_comparison()
    }
}

/// Two-input elementwise loop with flat fast paths (same shape, scalar on
/// either side, a row vector over the last axis) before the general walk.
#[inline(always)]
fn binary_loop(a: View, b: View, out: &mut [f32], out_shape: &[usize], f: impl Fn(f32, f32) -> f32 + Sync + Send + Copy) {
    let n = out.len();
    let par = n >= SPLIT_MIN;
    macro_rules! run {
        ($body:expr) => {
            if par {
                let part = part(n);
                out.par_chunks_mut(part).enumerate().for_each(|(c, o)| {
                    let start = c * part;
                    for (j, o) in o.iter_mut().enumerate() {
                        *o = $body(start + j);
                    }
                });
            } else {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = $body(i);
                }
            }
        };
    }
    let (ad, bd) = (a.data, b.data);
    match (ad.len() == n, bd.len() == n, ad.len() == 1, bd.len() == 1) {
        (true, true, _, _) => run!(|i: usize| f(ad[i], bd[i])),
        (true, false, _, true) => {
            let bv = bd[0];
            run!(|i: usize| f(ad[i], bv))
        }
        (false, true, true, _) => {
            let av = ad[0];
            run!(|i: usize| f(av, bd[i]))
        }
        _ => {
            let last = *out_shape.last().unwrap_or(&1);
            // x [.., N] op row [N]: the common bias-add shape.
            if ad.len() == n && bd.len() == last && b.shape.iter().rev().skip(1).all(|&d| d == 1) {
                let body = |o: &mut [f32], x: &[f32]| {
                    for ((o, &xv), &bv) in o.iter_mut().zip(x).zip(bd) {
                        *o = f(xv, bv);
                    }
                };
                if par {
                    out.par_chunks_mut(last).zip(ad.par_chunks(last)).with_min_len(per_thread(n / last)).for_each(|(o, x)| body(o, x));
                } else {
                    out.chunks_mut(last).zip(ad.chunks(last)).for_each(|(o, x)| body(o, x));
                }
            } else {
                map_broadcast::<2>([a, b], out, out_shape, move |v| f(v[0], v[1]));
            }
        }
    }
}

/// `where(cond, a, b)`: picks `a` where `cond` is non-zero.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Where;

impl OpDef for Where {
    fn name(&self) -> String {
        "where".into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        expect_inputs("where", inputs, 3)?;
        let d = common_dtype("where", &inputs[1..])?;
        let s = broadcast_shapes("where", &inputs[0].shape, &inputs[1].shape)?;
        let s = broadcast_shapes("where", &s, &inputs[2].shape)?;
        Ok(Fact::new(s, d))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &mut [f32], _: &EvalCtx) {
        map_broadcast::<3>([ins[0], ins[1], ins[2]], out, out_shape, |v| if v[0] != 0.0 { v[1] } else { v[2] });
    }
}

/// Type conversion. To integers: round half to even and saturate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cast {
    pub to: DType,
}

impl OpDef for Cast {
    fn name(&self) -> String {
        "cast".into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        expect_inputs("cast", inputs, 1)?;
        Ok(Fact::new(inputs[0].shape.clone(), self.to))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &mut [f32], _: &EvalCtx) {
        let x = ins[0].data;
        match self.to {
            DType::Bool => out.iter_mut().zip(x).for_each(|(o, &v)| *o = (v != 0.0) as u8 as f32),
            t => match t.int_range() {
                Some((lo, hi)) => out.iter_mut().zip(x).for_each(|(o, &v)| *o = round_int(v, lo, hi)),
                None => out.copy_from_slice(x),
            },
        }
    }
}

/// Per-input strides over the output shape (0 on broadcast axes).
pub(crate) fn broadcast_strides(in_shape: &[usize], out_shape: &[usize]) -> crate::fact::Dims<usize> {
    let r = out_shape.len();
    let off = r - in_shape.len();
    let mut strides = crate::fact::Dims::zeros(r);
    let mut s = 1usize;
    for i in (0..in_shape.len()).rev() {
        if in_shape[i] != 1 {
            strides[i + off] = s;
        }
        s *= in_shape[i];
    }
    strides
}

/// Applies `f` elementwise over N broadcast inputs into the contiguous `out`.
/// Common cases (equal shapes, scalars) take flat loops the compiler
/// vectorises; the general case walks rows of the last axis.
pub(crate) fn map_broadcast<const N: usize>(
    ins: [View; N],
    out: &mut [f32],
    out_shape: &[usize],
    f: impl Fn([f32; N]) -> f32 + Sync + Send + Copy,
) {
    let n = out.len();
    if n == 0 {
        return;
    }
    let flat: [bool; N] = std::array::from_fn(|k| ins[k].data.len() == n);
    let scalar: [bool; N] = std::array::from_fn(|k| ins[k].data.len() == 1);
    if (0..N).all(|k| flat[k] || scalar[k]) {
        let run = |o: &mut [f32], start: usize| {
            for (j, o) in o.iter_mut().enumerate() {
                let v: [f32; N] =
                    std::array::from_fn(|k| if flat[k] { ins[k].data[start + j] } else { ins[k].data[0] });
                *o = f(v);
            }
        };
        if n >= SPLIT_MIN {
            let part = part(n);
            out.par_chunks_mut(part).enumerate().for_each(|(c, o)| run(o, c * part));
        } else {
            run(out, 0);
        }
        return;
    }
    let r = out_shape.len();
    let strides: [crate::fact::Dims<usize>; N] = std::array::from_fn(|k| broadcast_strides(ins[k].shape, out_shape));
    let inner = out_shape[r - 1];
    let rows = n / inner;
    let row_fn = |row: usize, o: &mut [f32]| {
        // Decompose the row index into the outer multi-index.
        let mut base = [0usize; N];
        let mut rem = row;
        for ax in (0..r - 1).rev() {
            let i = rem % out_shape[ax];
            rem /= out_shape[ax];
            for k in 0..N {
                base[k] += i * strides[k][ax];
            }
        }
        let st: [usize; N] = std::array::from_fn(|k| strides[k][r - 1]);
        for (j, o) in o.iter_mut().enumerate() {
            let v: [f32; N] = std::array::from_fn(|k| ins[k].data[base[k] + j * st[k]]);
            *o = f(v);
        }
    };
    if n >= SPLIT_MIN && rows > 1 {
        out.par_chunks_mut(inner).enumerate().for_each(|(row, o)| row_fn(row, o));
    } else {
        for (row, o) in out.chunks_mut(inner).enumerate() {
            row_fn(row, o);
        }
    }
}

impl Unary {
    /// `f'(x)`, the local derivative used by [`UnaryGrad`]. `None` for ops
    /// whose derivative is zero almost everywhere (floor, sign, …): autograd
    /// then sends no gradient through them instead of a tensor of zeros.
    pub fn derivative(&self, x: f32) -> Option<f32> {
        use Unary::*;
        let step = |c: bool| if c { 1.0 } else { 0.0 };
        Some(match *self {
            Relu => step(x > 0.0),
            Relu6 => step(x > 0.0 && x < 6.0),
            LeakyRelu(a) => {
                if x >= 0.0 {
                    1.0
                } else {
                    a
                }
            }
            Elu(a) => {
                if x > 0.0 {
                    1.0
                } else {
                    a * exp(x)
                }
            }
            Silu => {
                let s = sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            }
            Sigmoid => {
                let s = sigmoid(x);
                s * (1.0 - s)
            }
            HardSigmoid { alpha, beta } => {
                let v = alpha * x + beta;
                if v > 0.0 && v < 1.0 {
                    alpha
                } else {
                    0.0
                }
            }
            HardSwish => {
                if x <= -3.0 {
                    0.0
                } else if x >= 3.0 {
                    1.0
                } else {
                    (2.0 * x + 3.0) / 6.0
                }
            }
            Gelu(GeluMode::Exact) => {
                let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
                let pdf = (-0.5 * x * x).exp() / (2.0 * std::f32::consts::PI).sqrt();
                cdf + x * pdf
            }
            Gelu(GeluMode::Tanh) => {
                let c = (2.0f32 / std::f32::consts::PI).sqrt();
                let u = c * (x + 0.044715 * x * x * x);
                let t = tanh(u);
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x)
            }
            Softplus => sigmoid(x),
            Softsign => {
                let d = 1.0 + x.abs();
                1.0 / (d * d)
            }
            Tanh => {
                let t = tanh(x);
                1.0 - t * t
            }
            ScaledTanh { alpha, beta } => {
                let t = tanh(beta * x);
                alpha * beta * (1.0 - t * t)
            }
            Threshold(a) => step(x > a),
            Clip { lo, hi } => step(x > lo && x < hi),
            Exp => exp(x),
            Exp2 => x.exp2() * std::f32::consts::LN_2,
            Log => 1.0 / x,
            Sqrt => 0.5 / x.sqrt(),
            Rsqrt => -0.5 / (x * x.sqrt()),
            Reciprocal => -1.0 / (x * x),
            Square => 2.0 * x,
            Abs => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
            Neg => -1.0,
            Sin => x.cos(),
            Cos => -x.sin(),
            Atan => 1.0 / (1.0 + x * x),
            Erf => 2.0 / std::f32::consts::PI.sqrt() * (-x * x).exp(),
            Sign | Floor | Ceil | Round | LogicalNot => return None,
        })
    }

    /// Whether the gradient of this op is zero almost everywhere.
    pub fn is_piecewise_constant(&self) -> bool {
        self.derivative(0.5).is_none()
    }
}

/// The backward of a unary map, `dx = dy * f'(x)`, as one kernel: composing
/// f' from primitives would cost several passes and extra fp16 roundings
/// per activation in every training step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnaryGrad {
    pub of: Unary,
}

impl OpDef for UnaryGrad {
    fn name(&self) -> String {
        format!("{}_grad", self.of.op_name())
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        let op = self.name();
        expect_inputs(&op, inputs, 2)?;
        expect_float(&op, inputs[0], "x")?;
        expect_float(&op, inputs[1], "dy")?;
        if inputs[0].shape != inputs[1].shape {
            return Err(Error::shape(&op, format!("x {} and dy {} must have the same shape", inputs[0], inputs[1])));
        }
        if self.of.is_piecewise_constant() {
            return Err(Error::value(&op, format!("{} has a zero gradient almost everywhere", self.of.op_name())));
        }
        Ok(inputs[1].clone())
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &mut [f32], _: &EvalCtx) {
        let u = self.of;
        match u {
            // The common activation gets its own loop (a select the
            // compiler vectorises) instead of the generic derivative match.
            Unary::Relu => map_broadcast::<2>([ins[0], ins[1]], out, out_shape, |v| if v[0] > 0.0 { v[1] } else { 0.0 }),
            _ => map_broadcast::<2>([ins[0], ins[1]], out, out_shape, move |v| v[1] * u.derivative(v[0]).unwrap_or(0.0)),
        }
    }
    fn cost(&self, _: &[&Fact], out: &Fact) -> Cost {
        Cost { flops: out.numel() as f64 * (self.of.flops_per_elem() + 1.0) }
    }
}

// ---- MIL lowering (driver and conventions: backend/mil) ----

use crate::backend::mil::{repr, LowerMil, MilCtx, Val};
use aneforge_mil::{Argument, DType as MDType};

impl Unary {
    /// Appends this map of `x` to the program under `out`. Shared by the
    /// fused epilogues of conv and matmul.
    pub(crate) fn lower_to(&self, cx: &mut MilCtx, x: &str, d: MDType, shape: &[usize], out: &str) -> Result<String> {
        use Unary::*;
        let xa = || Argument::name(x);
        let one = |cx: &mut MilCtx, op: &str| cx.op(op, vec![("x", Argument::name(x))], out, d, shape);
        Ok(match *self {
            Relu => one(cx, "relu"),
            Relu6 => one(cx, "relu6"),
            Silu => one(cx, "silu"),
            Sigmoid => one(cx, "sigmoid"),
            Softplus => one(cx, "softplus"),
            Softsign => one(cx, "softsign"),
            Tanh => one(cx, "tanh"),
            Exp => one(cx, "exp"),
            Exp2 => one(cx, "exp2"),
            Sqrt => one(cx, "sqrt"),
            Abs => one(cx, "abs"),
            Sign => one(cx, "sign"),
            Sin => one(cx, "sin"),
            Cos => one(cx, "cos"),
            Atan => one(cx, "atan"),
            Erf => one(cx, "erf"),
            Floor => one(cx, "floor"),
            Ceil => one(cx, "ceil"),
            Round => one(cx, "round"),
            LeakyRelu(a) | Elu(a) | Threshold(a) => {
                let alpha = cx.scalar("alpha", d, a)?;
                let op = match self {
                    LeakyRelu(_) => "leaky_relu",
                    Elu(_) => "elu",
                    _ => "threshold",
                };
                cx.op(op, vec![("alpha", alpha), ("x", xa())], out, d, shape)
            }
            HardSigmoid { alpha, beta } | ScaledTanh { alpha, beta } => {
                let (a, b) = (cx.scalar("alpha", d, alpha)?, cx.scalar("beta", d, beta)?);
                let op = if matches!(self, HardSigmoid { .. }) { "sigmoid_hard" } else { "scaled_tanh" };
                cx.op(op, vec![("alpha", a), ("beta", b), ("x", xa())], out, d, shape)
            }
            // x·relu6(x+3)/6 = x·sigmoid_hard(x; 1/6, 1/2): one LUT op and a mul.
            HardSwish => {
                let (a, b) = (cx.scalar("alpha", d, 1.0 / 6.0)?, cx.scalar("beta", d, 0.5)?);
                let h = cx.tmp("sigmoid_hard", vec![("alpha", a), ("beta", b), ("x", xa())], d, shape);
                cx.op("mul", vec![("x", xa()), ("y", Argument::name(h))], out, d, shape)
            }
            // The mode is always spelled out: gelu without one is refused
            // by some compilers (ane-anchors §5).
            Gelu(m) => {
                let mode = cx.string("mode", if m == GeluMode::Exact { "EXACT" } else { "TANH_APPROXIMATION" })?;
                cx.op("gelu", vec![("mode", mode), ("x", xa())], out, d, shape)
            }
            Clip { lo, hi } => {
                let (a, b) = (cx.scalar("alpha", d, lo)?, cx.scalar("beta", d, hi)?);
                cx.op("clip", vec![("alpha", a), ("beta", b), ("x", xa())], out, d, shape)
            }
            // log/rsqrt/inverse take an epsilon added to x; the defaults
            // (1e-45, 1e-12, 1e-4) are subnormal or wrong in fp16, so an
            // explicit 0 states the sim's exact semantics.
            Log | Rsqrt | Reciprocal => {
                let eps = cx.scalar("epsilon", d, 0.0)?;
                let op = match self {
                    Log => "log",
                    Rsqrt => "rsqrt",
                    _ => "inverse",
                };
                cx.op(op, vec![("epsilon", eps), ("x", xa())], out, d, shape)
            }
            // Native `square` fused with a nonlinearity miscompiles when
            // W % 128 > 64; mul(x, x) is the same value.
            Square => cx.op("mul", vec![("x", xa()), ("y", xa())], out, d, shape),
            Neg => {
                let m = cx.scalar("neg_one", d, -1.0)?;
                cx.op("mul", vec![("x", xa()), ("y", m)], out, d, shape)
            }
            LogicalNot => {
                if d == MDType::Bool {
                    cx.op("logical_not", vec![("x", xa())], out, MDType::Bool, shape)
                } else {
                    let z = cx.scalar("zero", d, 0.0)?;
                    cx.op("equal", vec![("x", xa()), ("y", z)], out, MDType::Bool, shape)
                }
            }
        })
    }
}

impl LowerMil for Unary {
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let r = cx.result();
        self.lower_to(cx, &ins[0].name, ins[0].mil_dtype(), &out.shape, &r)
    }
}

impl LowerMil for Binary {
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        use Binary::*;
        let r = cx.result();
        let (a, b) = (&ins[0], &ins[1]);
        let mut d = a.mil_dtype();
        let (mut xa, mut ya) = (a.name.clone(), b.name.clone());
        // MIL compares numbers only; bool operands go through fp16.
        if d == MDType::Bool {
            xa = cx.cast_to(&xa, MDType::Bool, MDType::Fp16, &a.fact.shape, None)?;
            ya = cx.cast_to(&ya, MDType::Bool, MDType::Fp16, &b.fact.shape, None)?;
            d = MDType::Fp16;
        }
        // `mul(reduce(..), 0)` fails in the engine's compiler. x·0 and
        // x − x agree on every input (0, or NaN for ±inf and NaN), so a
        // multiply by an all-zero constant becomes a subtraction.
        if *self == Mul {
            let zero = |v: &Val| v.konst.is_some_and(|c| !c.is_empty() && c.iter().all(|&z| z == 0.0));
            let other = if zero(b) { Some(&xa) } else if zero(a) { Some(&ya) } else { None };
            if let Some(o) = other {
                let o = o.clone();
                let of = if zero(b) { a.fact } else { b.fact };
                cx.note("mul by a zero constant lowered as sub(x, x) (mul(reduce, 0) fails in the engine's compiler)".into());
                if of.shape == out.shape {
                    return Ok(cx.op("sub", vec![("x", Argument::name(&o)), ("y", Argument::name(&o))], &r, d, &out.shape));
                }
                let s = cx.tmp("sub", vec![("x", Argument::name(&o)), ("y", Argument::name(&o))], d, &of.shape);
                let zeros = vec![0.0; out.numel()];
                let z = cx.tensor("zeros", d, &out.shape, &zeros)?;
                return Ok(cx.op("add", vec![("x", Argument::name(s)), ("y", z)], &r, d, &out.shape));
            }
        }
        let op = match self {
            Add => "add",
            Sub => "sub",
            Mul => "mul",
            Div => "real_div",
            Pow => "pow",
            Maximum => "maximum",
            Minimum => "minimum",
            Equal => "equal",
            NotEqual => "not_equal",
            Less => "less",
            LessEqual => "less_equal",
            Greater => "greater",
            GreaterEqual => "greater_equal",
        };
        let od = if self.is_comparison() { MDType::Bool } else { d };
        Ok(cx.op(op, vec![("x", Argument::name(xa)), ("y", Argument::name(ya))], &r, od, &out.shape))
    }
}

impl LowerMil for Where {
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let r = cx.result();
        let cond = cx.truthy(&ins[0])?;
        let d = repr(out.dtype);
        // MIL's select takes its shape from a and b only (the condition must
        // broadcast to it), so when the condition is what widens the
        // result, `a` is broadcast to the full shape first.
        let ab = crate::fact::broadcast_shapes("where", &ins[1].fact.shape, &ins[2].fact.shape)?;
        let a = if ab != out.shape { cx.broadcast_to(&ins[1].name, &ins[1].fact.shape, &out.shape, d, None)? } else { ins[1].name.clone() };
        Ok(cx.op("select", vec![("a", Argument::name(a)), ("b", Argument::name(&ins[2].name)), ("cond", Argument::name(cond))], &r, d, &out.shape))
    }
}

impl LowerMil for Cast {
    /// Integers are integer-valued fp16 inside the program (backend/mil
    /// docs), so a cast to an integer type is `round` (half to even, as
    /// the sim) then `clip` to the type's range; between integer types it
    /// is only the clip.
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let x = &ins[0];
        let (from, to) = (x.fact.dtype, self.to);
        let (fd, td) = (repr(from), repr(to));
        let shape = &out.shape;
        let r = cx.result();
        if to == DType::Bool {
            return cx.truthy(x);
        }
        if from == DType::Bool {
            return cx.cast_to(&x.name, MDType::Bool, td, shape, Some(&r));
        }
        let Some((lo, hi)) = to.int_range() else {
            // To fp16 / fp32.
            return if fd == td { Ok(x.name.clone()) } else { cx.cast_to(&x.name, fd, td, shape, Some(&r)) };
        };
        let mut v = x.name.clone();
        if from.is_float() {
            v = cx.tmp("round", vec![("x", Argument::name(v))], fd, shape);
        }
        // Clip only where the source can leave the target's range; bounds
        // beyond fp16's range are left to the cast's saturation.
        let src = from.int_range().unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let (lo, hi) = (lo.max(-65504.0), hi.min(65504.0));
        if src.0 < lo || src.1 > hi {
            let (a, b) = (cx.scalar("alpha", fd, lo)?, cx.scalar("beta", fd, hi)?);
            let name = if fd == MDType::Fp16 { r.clone() } else { cx.fresh("clip") };
            v = cx.op("clip", vec![("alpha", a), ("beta", b), ("x", Argument::name(v))], &name, fd, shape);
        }
        if fd != MDType::Fp16 {
            v = cx.cast_to(&v, fd, MDType::Fp16, shape, Some(&r))?;
        }
        Ok(v)
    }
}

impl LowerMil for UnaryGrad {
    /// `dy · f'(x)` composed from MIL ops for the activations training
    /// uses; the rest are refused with a clear error (the sim runs them).
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        use Unary::*;
        let (x, dy) = (&ins[0].name, &ins[1].name);
        let d = ins[1].mil_dtype();
        let s = &out.shape;
        let r = cx.result();
        let n = |v: &str| Argument::name(v);
        let mask = |cx: &mut MilCtx, cond: String| -> Result<String> {
            let z = cx.scalar("zero", d, 0.0)?;
            Ok(cx.op("select", vec![("a", n(dy)), ("b", z), ("cond", n(&cond))], &r, d, s))
        };
        let times = |cx: &mut MilCtx, g: String| cx.op("mul", vec![("x", n(dy)), ("y", n(&g))], &r, d, s);
        match self.of {
            Relu | Threshold(_) => {
                let a = if let Threshold(a) = self.of { a } else { 0.0 };
                let c = cx.scalar("thr", d, a)?;
                let g = cx.tmp("greater", vec![("x", n(x)), ("y", c)], MDType::Bool, s);
                mask(cx, g)
            }
            Relu6 | Clip { .. } => {
                let (lo, hi) = if let Clip { lo, hi } = self.of { (lo, hi) } else { (0.0, 6.0) };
                let (l, h) = (cx.scalar("lo", d, lo)?, cx.scalar("hi", d, hi)?);
                let g = cx.tmp("greater", vec![("x", n(x)), ("y", l)], MDType::Bool, s);
                let le = cx.tmp("less", vec![("x", n(x)), ("y", h)], MDType::Bool, s);
                // Nested selects: logical_and does not compile on any engine.
                let z = cx.scalar("zero", d, 0.0)?;
                let inner = cx.tmp("select", vec![("a", n(dy)), ("b", z.clone()), ("cond", n(&le))], d, s);
                Ok(cx.op("select", vec![("a", n(&inner)), ("b", z), ("cond", n(&g))], &r, d, s))
            }
            Sigmoid | Tanh | Softplus => {
                let op = if self.of == Tanh { "tanh" } else { "sigmoid" };
                let y = cx.tmp(op, vec![("x", n(x))], d, s);
                if self.of == Softplus {
                    return Ok(times(cx, y));
                }
                let yy = cx.tmp("mul", vec![("x", n(&y)), ("y", n(&y))], d, s);
                // sigmoid: y − y²; tanh: 1 − y²
                let g = if self.of == Tanh {
                    let one = cx.scalar("one", d, 1.0)?;
                    cx.tmp("sub", vec![("x", one), ("y", n(&yy))], d, s)
                } else {
                    cx.tmp("sub", vec![("x", n(&y)), ("y", n(&yy))], d, s)
                };
                Ok(times(cx, g))
            }
            Silu => {
                // σ(x)·(1 + x·(1 − σ(x)))
                let sg = cx.tmp("sigmoid", vec![("x", n(x))], d, s);
                let one = cx.scalar("one", d, 1.0)?;
                let om = cx.tmp("sub", vec![("x", one.clone()), ("y", n(&sg))], d, s);
                let xo = cx.tmp("mul", vec![("x", n(x)), ("y", n(&om))], d, s);
                let p1 = cx.tmp("add", vec![("x", n(&xo)), ("y", one)], d, s);
                let g = cx.tmp("mul", vec![("x", n(&sg)), ("y", n(&p1))], d, s);
                Ok(times(cx, g))
            }
            Exp => {
                let g = cx.tmp("exp", vec![("x", n(x))], d, s);
                Ok(times(cx, g))
            }
            Log | Reciprocal => {
                // 1/x, or −1/x² for the reciprocal.
                let eps = cx.scalar("epsilon", d, 0.0)?;
                let inv = cx.tmp("inverse", vec![("epsilon", eps), ("x", n(x))], d, s);
                if self.of == Log {
                    return Ok(times(cx, inv));
                }
                let sq = cx.tmp("mul", vec![("x", n(&inv)), ("y", n(&inv))], d, s);
                let g = cx.scale(&sq, d, s, -1.0)?;
                Ok(times(cx, g))
            }
            Sqrt => {
                let eps = cx.scalar("epsilon", d, 0.0)?;
                let rs = cx.tmp("rsqrt", vec![("epsilon", eps), ("x", n(x))], d, s);
                let g = cx.scale(&rs, d, s, 0.5)?;
                Ok(times(cx, g))
            }
            Square => {
                let g = cx.scale(x, d, s, 2.0)?;
                Ok(times(cx, g))
            }
            Neg => {
                let m = cx.scalar("neg_one", d, -1.0)?;
                Ok(cx.op("mul", vec![("x", n(dy)), ("y", m)], &r, d, s))
            }
            Abs => {
                let g = cx.tmp("sign", vec![("x", n(x))], d, s);
                Ok(times(cx, g))
            }
            LeakyRelu(a) => {
                let z = cx.scalar("zero", d, 0.0)?;
                let ge = cx.tmp("greater_equal", vec![("x", n(x)), ("y", z)], MDType::Bool, s);
                // select(x ≥ 0, dy, a·dy): both branches full-shape, as MIL's
                // select takes its shape from them.
                let ady = cx.scale(dy, d, s, a)?;
                Ok(cx.op("select", vec![("a", n(dy)), ("b", n(&ady)), ("cond", n(&ge))], &r, d, s))
            }
            Elu(a) => {
                // x > 0 ? 1 : a·exp(x)
                let z = cx.scalar("zero", d, 0.0)?;
                let gt = cx.tmp("greater", vec![("x", n(x)), ("y", z)], MDType::Bool, s);
                let e = cx.tmp("exp", vec![("x", n(x))], d, s);
                let ae = cx.scale(&e, d, s, a)?;
                let one = cx.scalar("one", d, 1.0)?;
                let g = cx.tmp("select", vec![("a", one), ("b", n(&ae)), ("cond", n(&gt))], d, s);
                Ok(times(cx, g))
            }
            Gelu(mode) => {
                // exact: Φ(x) + x·φ(x) = ½(1 + erf(x/√2)) + x·exp(−x²/2)/√(2π)
                // tanh:  ½(1 + t) + ½x(1 − t²)·c(1 + 3k x²), t = tanh(c(x + k x³))
                let half = cx.scalar("half", d, 0.5)?;
                let one = cx.scalar("one", d, 1.0)?;
                let xx = cx.tmp("mul", vec![("x", n(x)), ("y", n(x))], d, s);
                let g = if mode == GeluMode::Exact {
                    let xs = cx.scale(x, d, s, std::f32::consts::FRAC_1_SQRT_2)?;
                    let er = cx.tmp("erf", vec![("x", n(&xs))], d, s);
                    let p1 = cx.tmp("add", vec![("x", n(&er)), ("y", one)], d, s);
                    let cdf = cx.tmp("mul", vec![("x", n(&p1)), ("y", half)], d, s);
                    let m = cx.scale(&xx, d, s, -0.5)?;
                    let e = cx.tmp("exp", vec![("x", n(&m))], d, s);
                    let pdf = cx.scale(&e, d, s, 1.0 / (2.0 * std::f32::consts::PI).sqrt())?;
                    let xp = cx.tmp("mul", vec![("x", n(x)), ("y", n(&pdf))], d, s);
                    cx.tmp("add", vec![("x", n(&cdf)), ("y", n(&xp))], d, s)
                } else {
                    let c = (2.0f32 / std::f32::consts::PI).sqrt();
                    let k = 0.044715f32;
                    let kxx = cx.scale(&xx, d, s, k)?;
                    let inner1 = cx.tmp("add", vec![("x", n(&kxx)), ("y", one.clone())], d, s);
                    let u0 = cx.tmp("mul", vec![("x", n(x)), ("y", n(&inner1))], d, s);
                    let u = cx.scale(&u0, d, s, c)?;
                    let t = cx.tmp("tanh", vec![("x", n(&u))], d, s);
                    let tp1 = cx.tmp("add", vec![("x", n(&t)), ("y", one.clone())], d, s);
                    let a = cx.tmp("mul", vec![("x", n(&tp1)), ("y", half.clone())], d, s);
                    let tt = cx.tmp("mul", vec![("x", n(&t)), ("y", n(&t))], d, s);
                    let omt = cx.tmp("sub", vec![("x", one.clone()), ("y", n(&tt))], d, s);
                    let k3 = cx.scale(&xx, d, s, 3.0 * k)?;
                    let du0 = cx.tmp("add", vec![("x", n(&k3)), ("y", one)], d, s);
                    let du = cx.scale(&du0, d, s, 0.5 * c)?;
                    let xo = cx.tmp("mul", vec![("x", n(x)), ("y", n(&omt))], d, s);
                    let b = cx.tmp("mul", vec![("x", n(&xo)), ("y", n(&du))], d, s);
                    cx.tmp("add", vec![("x", n(&a)), ("y", n(&b))], d, s)
                };
                Ok(times(cx, g))
            }
            other => Err(Error::unsupported(
                self.name(),
                format!("the gradient of {} has no MIL lowering yet; train with backend=\"sim\"", other.op_name()),
            )),
        }
    }
}
