//! The free functions of `import aneforge as af`, one per op.

use crate::convert::{array_f32, axes, build, dims, pair, shape_arg, tensor_like, to_usize};
use crate::tensor::PyTensor;
use aneforge::builder::{self as b, ConvArgs, PadSpec};
use aneforge::ops::{PadMode, ReduceKind, ResizeMode};
use aneforge::{DType, Tensor};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;

type R = PyResult<PyTensor>;

fn t(py: Python<'_>, o: &Bound<'_, PyAny>, what: &str) -> PyResult<Tensor> {
    tensor_like(py, o, None, what)
}

fn t_like(py: Python<'_>, o: &Bound<'_, PyAny>, like: &Tensor, what: &str) -> PyResult<Tensor> {
    tensor_like(py, o, Some(like), what)
}

fn opt_t(py: Python<'_>, o: Option<&Bound<'_, PyAny>>, like: &Tensor, what: &str) -> PyResult<Option<Tensor>> {
    match o {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) => t_like(py, o, like, what).map(Some),
    }
}

/// A graph input port. dtype: fp16 (default), uint8, int8, int16, uint16.
#[pyfunction]
#[pyo3(signature = (shape, dtype="fp16", name=None))]
pub fn input(py: Python<'_>, shape: &Bound<'_, PyAny>, dtype: &str, name: Option<&str>) -> R {
    let s = dims(&shape_arg(shape, "shape")?, "input")?;
    // dtype parsed inside `build` so its error names the user's line too
    build(py, || b::input(&s, DType::parse(dtype)?, name)).map(PyTensor::new)
}

/// A uint8 image port dequantised on the engine: `x * scale + bias`.
#[pyfunction]
#[pyo3(signature = (shape, scale=None, bias=None, name=None))]
pub fn image_input(py: Python<'_>, shape: &Bound<'_, PyAny>, scale: Option<&Bound<'_, PyAny>>, bias: Option<&Bound<'_, PyAny>>, name: Option<&str>) -> R {
    let s = dims(&shape_arg(shape, "shape")?, "image_input")?;
    let vec_of = |o: &Bound<'_, PyAny>, what: &str| -> PyResult<Vec<f32>> {
        if let Ok(v) = o.extract::<f32>() {
            return Ok(vec![v]);
        }
        Ok(array_f32(py, o, what)?.0)
    };
    let sc = match scale {
        Some(o) if !o.is_none() => vec_of(o, "scale")?,
        _ => vec![1.0 / 255.0],
    };
    let bi = match bias {
        Some(o) if !o.is_none() => vec_of(o, "bias")?,
        _ => vec![0.0],
    };
    build(py, || b::image_input(&s, &sc, &bi, name)).map(PyTensor::new)
}

/// A constant baked into the program (fp16 unless dtype says otherwise).
#[pyfunction]
#[pyo3(signature = (array, dtype="fp16"))]
pub fn constant(py: Python<'_>, array: &Bound<'_, PyAny>, dtype: &str) -> R {
    let (v, shape) = array_f32(py, array, "array")?;
    build(py, || b::constant(v, shape, DType::parse(dtype)?)).map(PyTensor::new)
}

#[pyfunction]
pub fn cast(py: Python<'_>, x: &PyTensor, dtype: &str) -> R {
    build(py, || b::cast(&x.t, DType::parse(dtype)?)).map(PyTensor::new)
}

macro_rules! unary_fns {
    ($($name:ident),*) => {
        $(
            #[pyfunction]
            pub fn $name(py: Python<'_>, x: &Bound<'_, PyAny>) -> R {
                let x = t(py, x, "x")?;
                build(py, || b::$name(&x)).map(PyTensor::new)
            }
        )*
        pub fn add_unary(m: &Bound<'_, PyModule>) -> PyResult<()> {
            $( m.add_function(wrap_pyfunction!($name, m)?)?; )*
            Ok(())
        }
    };
}

unary_fns!(
    relu, relu6, silu, sigmoid, hard_swish, softplus, softsign, tanh, exp, exp2, log, sqrt, rsqrt, reciprocal,
    square, abs, sign, neg, sin, cos, atan, erf, floor, ceil, round, logical_not
);

macro_rules! binary_fns {
    ($($name:ident),*) => {
        $(
            #[pyfunction]
            pub fn $name(py: Python<'_>, a: &Bound<'_, PyAny>, b_: &Bound<'_, PyAny>) -> R {
                // A scalar operand takes the dtype of the tensor operand.
                let (a, b2) = if a.cast::<PyTensor>().is_ok() {
                    let a = t(py, a, "a")?;
                    let b2 = t_like(py, b_, &a, "b")?;
                    (a, b2)
                } else {
                    let b2 = t(py, b_, "b")?;
                    (t_like(py, a, &b2, "a")?, b2)
                };
                build(py, || b::$name(&a, &b2)).map(PyTensor::new)
            }
        )*
        pub fn add_binary(m: &Bound<'_, PyModule>) -> PyResult<()> {
            $( m.add_function(wrap_pyfunction!($name, m)?)?; )*
            Ok(())
        }
    };
}

binary_fns!(add, sub, mul, div, pow, maximum, minimum, equal, not_equal, less, less_equal, greater, greater_equal);

#[pyfunction]
#[pyo3(name = "where")]
pub fn where_(py: Python<'_>, cond: &Bound<'_, PyAny>, a: &Bound<'_, PyAny>, b_: &Bound<'_, PyAny>) -> R {
    let c = t(py, cond, "cond")?;
    let (a, b2) = if a.cast::<PyTensor>().is_ok() {
        let a = t(py, a, "a")?;
        let b2 = t_like(py, b_, &a, "b")?;
        (a, b2)
    } else {
        let b2 = t(py, b_, "b")?;
        (t_like(py, a, &b2, "a")?, b2)
    };
    build(py, || b::where_(&c, &a, &b2)).map(PyTensor::new)
}

#[pyfunction]
#[pyo3(signature = (x, alpha=0.01))]
pub fn leaky_relu(py: Python<'_>, x: &PyTensor, alpha: f32) -> R {
    build(py, || b::leaky_relu(&x.t, alpha)).map(PyTensor::new)
}
#[pyfunction]
#[pyo3(signature = (x, alpha=1.0))]
pub fn elu(py: Python<'_>, x: &PyTensor, alpha: f32) -> R {
    build(py, || b::elu(&x.t, alpha)).map(PyTensor::new)
}
#[pyfunction]
#[pyo3(signature = (x, alpha=0.2, beta=0.5))]
pub fn hard_sigmoid(py: Python<'_>, x: &PyTensor, alpha: f32, beta: f32) -> R {
    build(py, || b::hard_sigmoid(&x.t, alpha, beta)).map(PyTensor::new)
}
#[pyfunction]
#[pyo3(signature = (x, mode="exact"))]
pub fn gelu(py: Python<'_>, x: &PyTensor, mode: &str) -> R {
    build(py, || b::gelu(&x.t, mode)).map(PyTensor::new)
}
#[pyfunction]
#[pyo3(signature = (x, alpha=1.0, beta=1.0))]
pub fn scaled_tanh(py: Python<'_>, x: &PyTensor, alpha: f32, beta: f32) -> R {
    build(py, || b::scaled_tanh(&x.t, alpha, beta)).map(PyTensor::new)
}
#[pyfunction]
#[pyo3(signature = (x, alpha=0.0))]
pub fn threshold(py: Python<'_>, x: &PyTensor, alpha: f32) -> R {
    build(py, || b::threshold(&x.t, alpha)).map(PyTensor::new)
}
#[pyfunction]
pub fn clip(py: Python<'_>, x: &PyTensor, lo: f32, hi: f32) -> R {
    build(py, || b::clip(&x.t, lo, hi)).map(PyTensor::new)
}
#[pyfunction]
pub fn prelu(py: Python<'_>, x: &PyTensor, slope: &Bound<'_, PyAny>) -> R {
    let mut s = t_like(py, slope, &x.t, "slope")?;
    // A per-channel slope vector broadcasts over axis 1.
    if s.rank() == 1 && x.t.rank() >= 3 && s.shape()[0] == x.t.shape()[1] && s.shape()[0] > 1 {
        let mut shape = vec![s.shape()[0]];
        shape.extend(std::iter::repeat_n(1, x.t.rank() - 2));
        s = build(py, || b::reshape(&s, &shape))?;
    }
    build(py, || b::prelu(&x.t, &s)).map(PyTensor::new)
}

#[pyfunction]
#[pyo3(signature = (a, b, transpose_a=false, transpose_b=false))]
pub fn matmul(py: Python<'_>, a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>, transpose_a: bool, transpose_b: bool) -> R {
    let a = t(py, a, "a")?;
    let b2 = t(py, b, "b")?;
    build(py, || b::matmul_t(&a, &b2, transpose_a, transpose_b)).map(PyTensor::new)
}

/// `x @ W.T + b`, W [out, in] as in PyTorch.
#[pyfunction]
#[pyo3(signature = (x, W, b=None))]
#[allow(non_snake_case)]
pub fn linear(py: Python<'_>, x: &PyTensor, W: &Bound<'_, PyAny>, b: Option<&Bound<'_, PyAny>>) -> R {
    let w = t_like(py, W, &x.t, "W")?;
    let bias = opt_t(py, b, &x.t, "b")?;
    build(py, || b::linear(&x.t, &w, bias.as_ref())).map(PyTensor::new)
}

#[pyfunction]
#[pyo3(signature = (equation, *operands))]
pub fn einsum(py: Python<'_>, equation: &str, operands: &Bound<'_, pyo3::types::PyTuple>) -> R {
    let ops: Vec<Tensor> = operands.iter().map(|o| t(py, &o, "operand")).collect::<PyResult<_>>()?;
    build(py, || b::einsum(equation, &ops)).map(PyTensor::new)
}

fn pad_spec(pad: &Bound<'_, PyAny>) -> PyResult<PadSpec> {
    if let Ok(s) = pad.extract::<String>() {
        return match s.as_str() {
            "same" => Ok(PadSpec::Same),
            "valid" => Ok(PadSpec::Explicit([0; 4])),
            _ => Err(PyValueError::new_err(format!("pad {s:?} is not \"same\", \"valid\", an int or a tuple"))),
        };
    }
    if let Ok(v) = pad.extract::<i64>() {
        let v = to_usize(v, "pad")?;
        return Ok(PadSpec::Explicit([v; 4]));
    }
    let v: Vec<i64> = pad.extract().map_err(|_| PyTypeError::new_err("pad must be an int, (ph, pw), (top, left, bottom, right) or \"same\""))?;
    let u: Vec<usize> = v.iter().map(|&x| to_usize(x, "pad")).collect::<PyResult<_>>()?;
    match u.as_slice() {
        [p] => Ok(PadSpec::Explicit([*p; 4])),
        [ph, pw] => Ok(PadSpec::Explicit([*ph, *pw, *ph, *pw])),
        [t, l, b, r] => Ok(PadSpec::Explicit([*t, *l, *b, *r])),
        _ => Err(PyValueError::new_err(format!("pad must have 1, 2 or 4 entries, got {v:?}"))),
    }
}

/// The shared geometry arguments of conv and conv_transpose.
fn conv_args(stride: Option<&Bound<'_, PyAny>>, pad: Option<&Bound<'_, PyAny>>, dilation: Option<&Bound<'_, PyAny>>, groups: usize) -> PyResult<ConvArgs> {
    Ok(ConvArgs {
        stride: stride.map(|s| pair(s, "stride")).transpose()?.unwrap_or([1, 1]),
        pad: pad.map(pad_spec).transpose()?.unwrap_or(PadSpec::Explicit([0; 4])),
        dilation: dilation.map(|s| pair(s, "dilation")).transpose()?.unwrap_or([1, 1]),
        groups,
    })
}

/// Convolution, 2-D (x [N, C, H, W]) or 1-D (x [N, C, L]).
#[pyfunction]
#[pyo3(signature = (x, W, b=None, stride=None, pad=None, dilation=None, groups=1))]
#[allow(non_snake_case, clippy::too_many_arguments)]
pub fn conv(
    py: Python<'_>,
    x: &PyTensor,
    W: &Bound<'_, PyAny>,
    b: Option<&Bound<'_, PyAny>>,
    stride: Option<&Bound<'_, PyAny>>,
    pad: Option<&Bound<'_, PyAny>>,
    dilation: Option<&Bound<'_, PyAny>>,
    groups: usize,
) -> R {
    let w = t_like(py, W, &x.t, "W")?;
    let bias = opt_t(py, b, &x.t, "b")?;
    let args = conv_args(stride, pad, dilation, groups)?;
    build(py, || b::conv(&x.t, &w, bias.as_ref(), &args)).map(PyTensor::new)
}

/// Transposed convolution; W [C, O/groups, kh, kw] as in PyTorch.
#[pyfunction]
#[pyo3(signature = (x, W, b=None, stride=None, pad=None, output_pad=None, groups=1, dilation=None))]
#[allow(non_snake_case, clippy::too_many_arguments)]
pub fn conv_transpose(
    py: Python<'_>,
    x: &PyTensor,
    W: &Bound<'_, PyAny>,
    b: Option<&Bound<'_, PyAny>>,
    stride: Option<&Bound<'_, PyAny>>,
    pad: Option<&Bound<'_, PyAny>>,
    output_pad: Option<&Bound<'_, PyAny>>,
    groups: usize,
    dilation: Option<&Bound<'_, PyAny>>,
) -> R {
    let w = t_like(py, W, &x.t, "W")?;
    let bias = opt_t(py, b, &x.t, "b")?;
    let args = conv_args(stride, pad, dilation, groups)?;
    let op_ = output_pad.map(|s| pair(s, "output_pad")).transpose()?.unwrap_or([0, 0]);
    build(py, || b::conv_transpose(&x.t, &w, bias.as_ref(), &args, op_)).map(PyTensor::new)
}

/// The shared window arguments of max_pool and avg_pool: the kernel, the
/// stride (None, also when given as None: the builder's default, the kernel)
/// and the padding.
fn pool_args(kernel: &Bound<'_, PyAny>, stride: Option<&Bound<'_, PyAny>>, pad: Option<&Bound<'_, PyAny>>) -> PyResult<([usize; 2], Option<[usize; 2]>, PadSpec)> {
    let k = pair(kernel, "kernel")?;
    let s = stride.filter(|s| !s.is_none()).map(|s| pair(s, "stride")).transpose()?;
    let p = pad.map(pad_spec).transpose()?.unwrap_or(PadSpec::Explicit([0; 4]));
    Ok((k, s, p))
}

#[pyfunction]
#[pyo3(signature = (x, kernel, stride=None, pad=None, ceil_mode=false))]
pub fn max_pool(py: Python<'_>, x: &PyTensor, kernel: &Bound<'_, PyAny>, stride: Option<&Bound<'_, PyAny>>, pad: Option<&Bound<'_, PyAny>>, ceil_mode: bool) -> R {
    let (k, s, p) = pool_args(kernel, stride, pad)?;
    build(py, || b::max_pool(&x.t, k, s, &p, ceil_mode)).map(PyTensor::new)
}

#[pyfunction]
#[pyo3(signature = (x, kernel, stride=None, pad=None, ceil_mode=false, count_include_pad=false))]
pub fn avg_pool(
    py: Python<'_>,
    x: &PyTensor,
    kernel: &Bound<'_, PyAny>,
    stride: Option<&Bound<'_, PyAny>>,
    pad: Option<&Bound<'_, PyAny>>,
    ceil_mode: bool,
    count_include_pad: bool,
) -> R {
    let (k, s, p) = pool_args(kernel, stride, pad)?;
    build(py, || b::avg_pool(&x.t, k, s, &p, ceil_mode, count_include_pad)).map(PyTensor::new)
}

#[pyfunction]
pub fn global_avg_pool(py: Python<'_>, x: &PyTensor) -> R {
    build(py, || b::global_avg_pool(&x.t)).map(PyTensor::new)
}

#[pyfunction]
#[pyo3(signature = (x, scale=None))]
pub fn upsample_nearest(py: Python<'_>, x: &PyTensor, scale: Option<&Bound<'_, PyAny>>) -> R {
    let s = scale.map(|s| pair(s, "scale")).transpose()?.unwrap_or([2, 2]);
    build(py, || b::upsample_nearest(&x.t, s)).map(PyTensor::new)
}

#[pyfunction]
#[pyo3(signature = (x, size, align_corners=false))]
pub fn resize_bilinear(py: Python<'_>, x: &PyTensor, size: &Bound<'_, PyAny>, align_corners: bool) -> R {
    let s = pair(size, "size")?;
    build(py, || b::resize(&x.t, s, ResizeMode::Bilinear { align_corners })).map(PyTensor::new)
}

/// Crops (before, after) from each trailing axis: `crop(x, [(1, 1), (2, 2)])`.
#[pyfunction]
pub fn crop(py: Python<'_>, x: &PyTensor, crops: Vec<(usize, usize)>) -> R {
    build(py, || b::crop(&x.t, &crops)).map(PyTensor::new)
}

macro_rules! reduce_fns {
    ($($name:ident => $kind:ident),*) => {
        $(
            #[pyfunction]
            #[pyo3(signature = (x, axes=None, keepdims=false))]
            pub fn $name(py: Python<'_>, x: &PyTensor, axes: Option<&Bound<'_, PyAny>>, keepdims: bool) -> R {
                let a = crate::convert::axes(axes)?;
                build(py, || b::reduce(&x.t, ReduceKind::$kind, a.as_deref(), keepdims)).map(PyTensor::new)
            }
        )*
        pub fn add_reduce(m: &Bound<'_, PyModule>) -> PyResult<()> {
            $( m.add_function(wrap_pyfunction!($name, m)?)?; )*
            Ok(())
        }
    };
}

reduce_fns!(
    sum => Sum, mean => Mean, max => Max, min => Min, prod => Prod, l1_norm => L1Norm, l2_norm => L2Norm,
    sum_square => SumSquare, log_sum => LogSum, log_sum_exp => LogSumExp
);

#[pyfunction]
#[pyo3(signature = (x, axis=0, exclusive=false, reverse=false))]
pub fn cumsum(py: Python<'_>, x: &PyTensor, axis: i64, exclusive: bool, reverse: bool) -> R {
    build(py, || b::cumsum(&x.t, axis, exclusive, reverse)).map(PyTensor::new)
}

#[pyfunction]
#[pyo3(signature = (x, axis=-1))]
pub fn softmax(py: Python<'_>, x: &PyTensor, axis: i64) -> R {
    build(py, || b::softmax(&x.t, axis)).map(PyTensor::new)
}

#[pyfunction]
#[pyo3(signature = (x, axis=-1))]
pub fn log_softmax(py: Python<'_>, x: &PyTensor, axis: i64) -> R {
    build(py, || b::log_softmax(&x.t, axis)).map(PyTensor::new)
}

fn axes_or(o: Option<&Bound<'_, PyAny>>, default: &[i64]) -> PyResult<Vec<i64>> {
    Ok(axes(o)?.unwrap_or_else(|| default.to_vec()))
}

#[pyfunction]
#[pyo3(signature = (x, axes=None, gamma=None, beta=None, eps=1e-5))]
pub fn layer_norm(py: Python<'_>, x: &PyTensor, axes: Option<&Bound<'_, PyAny>>, gamma: Option<&Bound<'_, PyAny>>, beta: Option<&Bound<'_, PyAny>>, eps: f32) -> R {
    let a = axes_or(axes, &[-1])?;
    let g = opt_t(py, gamma, &x.t, "gamma")?;
    let bt = opt_t(py, beta, &x.t, "beta")?;
    build(py, || b::layer_norm(&x.t, &a, g.as_ref(), bt.as_ref(), eps)).map(PyTensor::new)
}

#[pyfunction]
#[pyo3(signature = (x, axes=None, gamma=None, eps=1e-6))]
pub fn rms_norm(py: Python<'_>, x: &PyTensor, axes: Option<&Bound<'_, PyAny>>, gamma: Option<&Bound<'_, PyAny>>, eps: f32) -> R {
    let a = axes_or(axes, &[-1])?;
    let g = opt_t(py, gamma, &x.t, "gamma")?;
    build(py, || b::rms_norm(&x.t, &a, g.as_ref(), eps)).map(PyTensor::new)
}

#[pyfunction]
#[pyo3(signature = (x, groups, gamma=None, beta=None, eps=1e-5))]
pub fn group_norm(py: Python<'_>, x: &PyTensor, groups: usize, gamma: Option<&Bound<'_, PyAny>>, beta: Option<&Bound<'_, PyAny>>, eps: f32) -> R {
    let g = opt_t(py, gamma, &x.t, "gamma")?;
    let bt = opt_t(py, beta, &x.t, "beta")?;
    build(py, || b::group_norm(&x.t, groups, g.as_ref(), bt.as_ref(), eps)).map(PyTensor::new)
}

#[pyfunction]
#[pyo3(signature = (x, gamma=None, beta=None, eps=1e-5))]
pub fn instance_norm(py: Python<'_>, x: &PyTensor, gamma: Option<&Bound<'_, PyAny>>, beta: Option<&Bound<'_, PyAny>>, eps: f32) -> R {
    let g = opt_t(py, gamma, &x.t, "gamma")?;
    let bt = opt_t(py, beta, &x.t, "beta")?;
    build(py, || b::instance_norm(&x.t, g.as_ref(), bt.as_ref(), eps)).map(PyTensor::new)
}

/// Inference batch norm over axis 1 with the given statistics.
#[pyfunction]
#[pyo3(signature = (x, mean, var, gamma=None, beta=None, eps=1e-5))]
pub fn batch_norm(
    py: Python<'_>,
    x: &PyTensor,
    mean: &Bound<'_, PyAny>,
    var: &Bound<'_, PyAny>,
    gamma: Option<&Bound<'_, PyAny>>,
    beta: Option<&Bound<'_, PyAny>>,
    eps: f32,
) -> R {
    let m = t_like(py, mean, &x.t, "mean")?;
    let v = t_like(py, var, &x.t, "var")?;
    let g = opt_t(py, gamma, &x.t, "gamma")?;
    let bt = opt_t(py, beta, &x.t, "beta")?;
    build(py, || b::batch_norm(&x.t, &m, &v, g.as_ref(), bt.as_ref(), eps)).map(PyTensor::new)
}

#[pyfunction]
#[pyo3(signature = (x, axes=None, eps=1e-12))]
pub fn l2_normalize(py: Python<'_>, x: &PyTensor, axes: Option<&Bound<'_, PyAny>>, eps: f32) -> R {
    let a = axes_or(axes, &[-1])?;
    build(py, || b::l2_normalize(&x.t, &a, eps)).map(PyTensor::new)
}

#[pyfunction]
#[pyo3(signature = (x, size, alpha=1e-4, beta=0.75, k=1.0))]
pub fn local_response_norm(py: Python<'_>, x: &PyTensor, size: usize, alpha: f32, beta: f32, k: f32) -> R {
    build(py, || b::local_response_norm(&x.t, size, alpha, beta, k)).map(PyTensor::new)
}

#[pyfunction]
pub fn reshape(py: Python<'_>, x: &PyTensor, shape: &Bound<'_, PyAny>) -> R {
    let s = shape_arg(shape, "shape")?;
    build(py, || b::reshape_spec(&x.t, &s)).map(PyTensor::new)
}

#[pyfunction]
#[pyo3(signature = (x, perm=None))]
pub fn transpose(py: Python<'_>, x: &PyTensor, perm: Option<Vec<i64>>) -> R {
    build(py, || b::permute(&x.t, perm.as_deref())).map(PyTensor::new)
}

#[pyfunction]
#[pyo3(signature = (x, start=0, end=-1))]
pub fn flatten(py: Python<'_>, x: &PyTensor, start: i64, end: i64) -> R {
    build(py, || b::flatten(&x.t, start, end)).map(PyTensor::new)
}

#[pyfunction]
#[pyo3(signature = (x, axes=None))]
pub fn squeeze(py: Python<'_>, x: &PyTensor, axes: Option<&Bound<'_, PyAny>>) -> R {
    let a = crate::convert::axes(axes)?;
    build(py, || b::squeeze(&x.t, a.as_deref())).map(PyTensor::new)
}

#[pyfunction]
pub fn expand_dims(py: Python<'_>, x: &PyTensor, axis: i64) -> R {
    build(py, || b::expand_dims(&x.t, axis)).map(PyTensor::new)
}

fn tensor_list(py: Python<'_>, xs: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<Tensor>> {
    let items: Vec<Bound<'_, PyAny>> = xs.try_iter().map_err(|_| PyTypeError::new_err(format!("{what} must be a list of tensors")))?.collect::<PyResult<_>>()?;
    let first = items.iter().find_map(|o| o.cast::<PyTensor>().ok().map(|t| t.get().t.clone()));
    items.iter().map(|o| tensor_like(py, o, first.as_ref(), what)).collect()
}

#[pyfunction]
#[pyo3(signature = (tensors, axis=0))]
pub fn concat(py: Python<'_>, tensors: &Bound<'_, PyAny>, axis: i64) -> R {
    let ts = tensor_list(py, tensors, "tensors")?;
    build(py, || b::concat(&ts, axis)).map(PyTensor::new)
}

#[pyfunction]
#[pyo3(signature = (tensors, axis=0))]
pub fn stack(py: Python<'_>, tensors: &Bound<'_, PyAny>, axis: i64) -> R {
    let ts = tensor_list(py, tensors, "tensors")?;
    build(py, || b::stack(&ts, axis)).map(PyTensor::new)
}

/// Splits into `n` equal parts (an int) or parts of the given sizes (a list).
#[pyfunction]
#[pyo3(signature = (x, sizes_or_n, axis=0))]
pub fn split<'py>(py: Python<'py>, x: &PyTensor, sizes_or_n: &Bound<'py, PyAny>, axis: i64) -> PyResult<Bound<'py, PyList>> {
    let parts = if let Ok(n) = sizes_or_n.extract::<i64>() {
        let n = to_usize(n, "n")?;
        build(py, || b::split_n(&x.t, n, axis))?
    } else {
        let sizes: Vec<usize> = sizes_or_n.extract().map_err(|_| PyTypeError::new_err("sizes_or_n must be an int or a list of ints"))?;
        build(py, || b::split(&x.t, &sizes, axis))?
    };
    let objs: Vec<PyTensor> = parts.into_iter().map(PyTensor::new).collect();
    PyList::new(py, objs)
}

/// `slice(x, begin, end, stride=None)`: per-axis bounds like numpy's.
#[pyfunction]
#[pyo3(signature = (x, begin, end, stride=None))]
pub fn slice(py: Python<'_>, x: &PyTensor, begin: Vec<Option<i64>>, end: Vec<Option<i64>>, stride: Option<Vec<i64>>) -> R {
    if begin.len() != end.len() || stride.as_ref().is_some_and(|s| s.len() != begin.len()) {
        return Err(PyValueError::new_err("slice: begin, end and stride must have the same length"));
    }
    let st = stride.unwrap_or_else(|| vec![1; begin.len()]);
    let ranges: Vec<_> = begin.iter().zip(&end).zip(&st).map(|((&b0, &e), &s)| (b0, e, s)).collect();
    build(py, || b::slice(&x.t, &ranges)).map(PyTensor::new)
}

#[pyfunction]
pub fn reverse(py: Python<'_>, x: &PyTensor, axes: &Bound<'_, PyAny>) -> R {
    let a = crate::convert::axes(Some(axes))?.unwrap_or_default();
    build(py, || b::reverse(&x.t, &a)).map(PyTensor::new)
}

#[pyfunction]
pub fn tile(py: Python<'_>, x: &PyTensor, reps: Vec<usize>) -> R {
    build(py, || b::tile(&x.t, &reps)).map(PyTensor::new)
}

#[pyfunction]
pub fn broadcast_to(py: Python<'_>, x: &PyTensor, shape: Vec<usize>) -> R {
    build(py, || b::broadcast_to(&x.t, &shape)).map(PyTensor::new)
}

/// Pads trailing axes; `pads` is a list of (before, after), last axes last.
#[pyfunction]
#[pyo3(signature = (x, pads, mode="constant", value=0.0))]
pub fn pad(py: Python<'_>, x: &PyTensor, pads: Vec<(usize, usize)>, mode: &str, value: f32) -> R {
    let m = match mode {
        "constant" => PadMode::Constant(value),
        "reflect" => PadMode::Reflect,
        "replicate" | "edge" => PadMode::Replicate,
        _ => return Err(PyValueError::new_err(format!("pad: mode {mode:?} is not \"constant\", \"reflect\" or \"replicate\""))),
    };
    build(py, || b::pad(&x.t, &pads, m)).map(PyTensor::new)
}

#[pyfunction]
pub fn pixel_shuffle(py: Python<'_>, x: &PyTensor, r: usize) -> R {
    build(py, || b::pixel_shuffle(&x.t, r)).map(PyTensor::new)
}
#[pyfunction]
pub fn pixel_unshuffle(py: Python<'_>, x: &PyTensor, r: usize) -> R {
    build(py, || b::pixel_unshuffle(&x.t, r)).map(PyTensor::new)
}
#[pyfunction]
pub fn space_to_depth(py: Python<'_>, x: &PyTensor, block: usize) -> R {
    build(py, || b::space_to_depth(&x.t, block)).map(PyTensor::new)
}
#[pyfunction]
pub fn depth_to_space(py: Python<'_>, x: &PyTensor, block: usize) -> R {
    build(py, || b::depth_to_space(&x.t, block)).map(PyTensor::new)
}

/// Gather with constant indices (an int array of any shape) along `axis`.
#[pyfunction]
#[pyo3(signature = (x, indices, axis=0))]
pub fn gather(py: Python<'_>, x: &PyTensor, indices: &Bound<'_, PyAny>, axis: i64) -> R {
    if indices.cast::<PyTensor>().is_ok() {
        return Err(crate::errors::af_err(
            "UnsupportedOpError",
            "gather: indices must be constant (a numpy array or list); the engine cannot gather at run-time indices",
        ));
    }
    let np = py.import("numpy")?;
    let arr = np.call_method1("asarray", (indices,))?;
    let kind: String = arr.getattr("dtype")?.getattr("kind")?.extract()?;
    if !matches!(kind.as_str(), "i" | "u") {
        return Err(PyTypeError::new_err("gather: indices must be integers"));
    }
    let shape: Vec<usize> = arr.getattr("shape")?.extract()?;
    let flat: Vec<i64> = arr.call_method1("reshape", (-1,))?.call_method0("tolist")?.extract()?;
    build(py, || b::gather(&x.t, &flat, &shape, axis)).map(PyTensor::new)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    add_unary(m)?;
    add_binary(m)?;
    add_reduce(m)?;
    macro_rules! add {
        ($($f:ident),*) => { $( m.add_function(wrap_pyfunction!($f, m)?)?; )* };
    }
    add!(
        input, image_input, constant, cast, where_, leaky_relu, elu, hard_sigmoid, gelu, scaled_tanh, threshold, clip,
        prelu, matmul, linear, einsum, conv, conv_transpose, max_pool, avg_pool, global_avg_pool, upsample_nearest,
        resize_bilinear, crop, cumsum, softmax, log_softmax, layer_norm, rms_norm, group_norm, instance_norm,
        batch_norm, l2_normalize, local_response_norm, reshape, transpose, flatten, squeeze, expand_dims, concat,
        stack, split, slice, reverse, tile, broadcast_to, pad, pixel_shuffle, pixel_unshuffle, space_to_depth,
        depth_to_space, gather
    );
    Ok(())
}
