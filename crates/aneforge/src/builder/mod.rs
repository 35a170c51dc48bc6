//! The Rust builder: every op of OPS.md as a function over [`Tensor`]s.
//! Native ops wrap one [`Op`]; composites (linear, group_norm, einsum,
//! pixel_shuffle, …) reduce to native ops here, once, so every backend and
//! the gradient rules get them for free.

mod einsum;
mod movement;
mod nn;

pub use einsum::einsum;
pub use movement::*;
pub use nn::*;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::fact::Fact;
use crate::graph::Tensor;
use crate::ops::{Binary, Cast, Const, Input, Op, Param, Unary, Where};

/// A graph input port.
pub fn input(shape: &[usize], dtype: DType, name: Option<&str>) -> Result<Tensor> {
    if !dtype.is_input_port() {
        return Err(Error::dtype(
            "input",
            format!("{dtype} is not an engine I/O type; use fp16, uint8, int8, int16 or uint16 (cast inside the graph for fp32)"),
        ));
    }
    if shape.is_empty() {
        return Err(Error::shape("input", "an input needs at least one axis; use shape (1,) for a scalar"));
    }
    let fact = Fact::new(shape.to_vec(), dtype);
    let order = crate::graph::fresh_id();
    Tensor::source(Op::Input(Input { fact: fact.clone(), order }), fact, name.map(str::to_string))
}

/// uint8 image port → cast → scale → bias, all on the engine. `scale` and
/// `bias` are one value or one per channel (axis 1).
pub fn image_input(shape: &[usize], scale: &[f32], bias: &[f32], name: Option<&str>) -> Result<Tensor> {
    let x = input(shape, DType::U8, name)?;
    let per_channel = |v: &[f32], what: &str| -> Result<Tensor> {
        if v.len() == 1 {
            return constant(v.to_vec(), vec![], DType::F16);
        }
        if shape.len() < 2 || v.len() != shape[1] {
            return Err(Error::shape(
                "image_input",
                format!("{what} has {} values; give one value or one per channel ({})", v.len(), shape.get(1).copied().unwrap_or(0)),
            ));
        }
        let mut s = vec![v.len()];
        s.extend(std::iter::repeat_n(1, shape.len() - 2));
        constant(v.to_vec(), s, DType::F16)
    };
    let y = cast(&x, DType::F16)?;
    let y = mul(&y, &per_channel(scale, "scale")?)?;
    add(&y, &per_channel(bias, "bias")?)
}

/// A baked constant of the given dtype (values are given as f32).
pub fn constant(data: Vec<f32>, shape: Vec<usize>, dtype: DType) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    if n != data.len() {
        return Err(Error::shape("constant", format!("{} values do not fill shape {:?}", data.len(), shape)));
    }
    let c = Const::new(data, shape, dtype);
    let fact = c.fact.clone();
    Tensor::source(Op::Const(c), fact, None)
}

/// A trainable tensor (fp16 on the engine, values kept in f32 on the host).
pub fn parameter(data: Vec<f32>, shape: Vec<usize>, name: Option<&str>) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    if n != data.len() {
        return Err(Error::shape("parameter", format!("{} values do not fill shape {:?}", data.len(), shape)));
    }
    let p = Param::new(data, shape, name.map(str::to_string));
    let fact = p.cell.fact.clone();
    Tensor::source(Op::Param(p), fact, name.map(str::to_string))
}

/// Optimizer state (moments) kept resident like a parameter, in `dtype`.
pub fn state(data: Vec<f32>, shape: Vec<usize>, dtype: DType, name: Option<&str>) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    if n != data.len() {
        return Err(Error::shape("state", format!("{} values do not fill shape {:?}", data.len(), shape)));
    }
    if !dtype.is_float() {
        return Err(Error::dtype("state", format!("state must be fp16 or fp32, got {dtype}")));
    }
    let p = Param::with_dtype(data, shape, dtype, name.map(str::to_string));
    let fact = p.cell.fact.clone();
    Tensor::source(Op::Param(p), fact, name.map(str::to_string))
}

/// A scalar constant with the dtype of `like`.
pub fn scalar_like(v: f32, like: &Tensor) -> Result<Tensor> {
    constant(vec![v], vec![], like.dtype())
}

pub fn unary(x: &Tensor, u: Unary) -> Result<Tensor> {
    Tensor::build(Op::Unary(u), vec![x.clone()])
}

pub fn binary(a: &Tensor, b: &Tensor, op: Binary) -> Result<Tensor> {
    Tensor::build(Op::Binary(op), vec![a.clone(), b.clone()])
}

macro_rules! unary_fns {
    ($($name:ident => $v:expr),* $(,)?) => {
        $(
            #[doc = concat!("Elementwise `", stringify!($name), "`.")]
            pub fn $name(x: &Tensor) -> Result<Tensor> {
                unary(x, $v)
            }
        )*
    };
}

unary_fns! {
    relu => Unary::Relu, relu6 => Unary::Relu6, silu => Unary::Silu, sigmoid => Unary::Sigmoid,
    hard_swish => Unary::HardSwish, softplus => Unary::Softplus, softsign => Unary::Softsign,
    tanh => Unary::Tanh, exp => Unary::Exp, exp2 => Unary::Exp2, log => Unary::Log, sqrt => Unary::Sqrt,
    rsqrt => Unary::Rsqrt, reciprocal => Unary::Reciprocal, square => Unary::Square, abs => Unary::Abs,
    sign => Unary::Sign, neg => Unary::Neg, sin => Unary::Sin, cos => Unary::Cos, atan => Unary::Atan,
    erf => Unary::Erf, floor => Unary::Floor, ceil => Unary::Ceil, round => Unary::Round,
    logical_not => Unary::LogicalNot,
}

macro_rules! binary_fns {
    ($($name:ident => $v:expr),* $(,)?) => {
        $(
            #[doc = concat!("Broadcasting `", stringify!($name), "`.")]
            pub fn $name(a: &Tensor, b: &Tensor) -> Result<Tensor> {
                binary(a, b, $v)
            }
        )*
    };
}

binary_fns! {
    add => Binary::Add, sub => Binary::Sub, mul => Binary::Mul, div => Binary::Div, pow => Binary::Pow,
    maximum => Binary::Maximum, minimum => Binary::Minimum, equal => Binary::Equal,
    not_equal => Binary::NotEqual, less => Binary::Less, less_equal => Binary::LessEqual,
    greater => Binary::Greater, greater_equal => Binary::GreaterEqual,
}

pub fn add_scalar(x: &Tensor, v: f32) -> Result<Tensor> {
    add(x, &scalar_like(v, x)?)
}
pub fn mul_scalar(x: &Tensor, v: f32) -> Result<Tensor> {
    mul(x, &scalar_like(v, x)?)
}

pub fn where_(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Tensor::build(Op::Where(Where), vec![cond.clone(), a.clone(), b.clone()])
}

pub fn cast(x: &Tensor, to: DType) -> Result<Tensor> {
    if x.dtype() == to {
        return Ok(x.clone());
    }
    Tensor::build(Op::Cast(Cast { to }), vec![x.clone()])
}

pub fn leaky_relu(x: &Tensor, alpha: f32) -> Result<Tensor> {
    unary(x, Unary::LeakyRelu(alpha))
}
pub fn elu(x: &Tensor, alpha: f32) -> Result<Tensor> {
    unary(x, Unary::Elu(alpha))
}
pub fn hard_sigmoid(x: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
    unary(x, Unary::HardSigmoid { alpha, beta })
}
pub fn gelu(x: &Tensor, mode: &str) -> Result<Tensor> {
    let m = match mode {
        "exact" | "none" => crate::ops::elementwise::GeluMode::Exact,
        "tanh" => crate::ops::elementwise::GeluMode::Tanh,
        _ => return Err(Error::value("gelu", format!("mode {mode:?} is not one of \"exact\", \"tanh\""))),
    };
    unary(x, Unary::Gelu(m))
}
pub fn scaled_tanh(x: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
    unary(x, Unary::ScaledTanh { alpha, beta })
}
/// `max(x, alpha)` (MIL's threshold).
pub fn threshold(x: &Tensor, alpha: f32) -> Result<Tensor> {
    unary(x, Unary::Threshold(alpha))
}
pub fn clip(x: &Tensor, lo: f32, hi: f32) -> Result<Tensor> {
    unary(x, Unary::Clip { lo, hi })
}
/// `max(x, 0) + slope * min(x, 0)`, slope broadcast against x (per channel
/// when given with shape [C, 1, 1]).
pub fn prelu(x: &Tensor, slope: &Tensor) -> Result<Tensor> {
    let zero = scalar_like(0.0, x)?;
    add(&maximum(x, &zero)?, &mul(slope, &minimum(x, &zero)?)?)
}
