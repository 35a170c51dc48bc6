//! Argument conversion: user code locations, tensor-likes, numpy arrays.

use crate::errors::IntoPy;
use crate::tensor::PyTensor;
use aneforge::builder as b;
use aneforge::{DType, Tensor};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyFloat, PyInt};

static PKG_DIR: PyOnceLock<String> = PyOnceLock::new();

/// "file.py:12" of the innermost frame outside the aneforge package.
pub fn origin(py: Python<'_>) -> Option<String> {
    let pkg = PKG_DIR
        .get_or_try_init(py, || -> PyResult<String> {
            let f: String = py.import("aneforge")?.getattr("__file__")?.extract()?;
            Ok(std::path::Path::new(&f).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default())
        })
        .ok()?;
    let mut frame = py.import("sys").ok()?.getattr("_getframe").ok()?.call1((0,)).ok()?;
    for _ in 0..64 {
        let code = frame.getattr("f_code").ok()?;
        let file: String = code.getattr("co_filename").ok()?.extract().ok()?;
        if pkg.is_empty() || !file.starts_with(pkg.as_str()) {
            let line: i64 = frame.getattr("f_lineno").ok()?.extract().ok()?;
            return Some(format!("{file}:{line}"));
        }
        let back = frame.getattr("f_back").ok()?;
        if back.is_none() {
            return None;
        }
        frame = back;
    }
    None
}

/// Runs a core builder call with the user's code location recorded.
pub fn build<T>(py: Python<'_>, f: impl FnOnce() -> aneforge::Result<T>) -> PyResult<T> {
    aneforge::error::build_at(origin(py), f).py()
}

/// A numpy-convertible object as (f32 values, shape); non-numeric data is a TypeError.
pub fn array_f32(py: Python<'_>, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(Vec<f32>, Vec<usize>)> {
    let np = py.import("numpy")?;
    let arr = np.call_method1("asarray", (obj,))?;
    let kind: String = arr.getattr("dtype")?.getattr("kind")?.extract()?;
    if !matches!(kind.as_str(), "f" | "i" | "u" | "b") {
        let dt: String = arr.getattr("dtype")?.str()?.extract()?;
        return Err(PyTypeError::new_err(format!("{what} must be numeric, got an array of dtype {dt}")));
    }
    let arr = np.call_method1("ascontiguousarray", (arr, "float32"))?;
    let shape: Vec<usize> = arr.getattr("shape")?.extract()?;
    let flat = arr.call_method1("reshape", (-1,))?;
    let v: Vec<f32> = flat.call_method0("tolist")?.extract()?;
    Ok((v, shape))
}

/// Tensor, numpy array, or Python scalar → Tensor. Scalars take the dtype
/// of `like` (fp16 when there is none); arrays become fp16 constants.
pub fn tensor_like(py: Python<'_>, obj: &Bound<'_, PyAny>, like: Option<&Tensor>, what: &str) -> PyResult<Tensor> {
    if let Ok(t) = obj.cast::<PyTensor>() {
        return Ok(t.borrow().t.clone());
    }
    let dtype = like.map(|t| t.dtype()).unwrap_or(DType::F16);
    if obj.is_instance_of::<PyBool>() || obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyFloat>() {
        let v: f64 = obj.extract()?;
        let dtype = if dtype == DType::Bool { DType::F16 } else { dtype };
        // An integer tensor's scalar must be one of its values: `u8 + 0.5`
        // used to round 0.5 away silently.
        if let Some((lo, hi)) = dtype.int_range() {
            if v.fract() != 0.0 || v < lo as f64 || v > hi as f64 {
                return build(py, || {
                    Err(aneforge::Error::dtype(
                        what,
                        format!("the scalar {v} is not a {dtype} value; cast the tensor first with .cast(\"fp16\")"),
                    ))
                });
            }
        }
        return build(py, || b::constant(vec![v as f32], vec![], dtype));
    }
    let is_array_like = obj.hasattr("__array__")? || obj.hasattr("__len__")?;
    if !is_array_like {
        let tn = obj.get_type().name()?.to_string();
        return Err(PyTypeError::new_err(format!("{what} must be an af.Tensor, a numpy array or a number, got {tn}")));
    }
    let (v, shape) = array_f32(py, obj, what)?;
    build(py, || b::constant(v, shape, DType::F16))
}

/// Accepts an int or a sequence of two ints ("2" or "(2, 3)").
pub fn pair(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<[usize; 2]> {
    if let Ok(v) = obj.extract::<i64>() {
        return to_usize(v, what).map(|v| [v, v]);
    }
    let v: Vec<i64> = obj.extract().map_err(|_| PyTypeError::new_err(format!("{what} must be an int or a pair of ints")))?;
    match v.as_slice() {
        [a] => to_usize(*a, what).map(|a| [a, a]),
        [a, b] => Ok([to_usize(*a, what)?, to_usize(*b, what)?]),
        _ => Err(pyo3::exceptions::PyValueError::new_err(located(format!("{what} must have 1 or 2 entries, got {v:?}")))),
    }
}

pub fn to_usize(v: i64, what: &str) -> PyResult<usize> {
    usize::try_from(v).map_err(|_| pyo3::exceptions::PyValueError::new_err(located(format!("{what} must be >= 0, got {v}"))))
}

/// Appends the user's "(built at file:line)" to an argument error raised
/// here in the binding, as the core does for its own errors.
pub fn located(msg: String) -> String {
    match Python::attach(origin) {
        Some(o) => format!("{msg} (built at {o})"),
        None => msg,
    }
}

/// Axes given as None, an int, or a sequence of ints.
pub fn axes(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<i64>>> {
    match obj {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) => {
            if let Ok(a) = o.extract::<i64>() {
                return Ok(Some(vec![a]));
            }
            o.extract::<Vec<i64>>().map(Some).map_err(|_| PyTypeError::new_err("axes must be None, an int or a sequence of ints"))
        }
    }
}

/// A shape given as a sequence of ints (negative/zero checked by the core).
pub fn shape_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<i64>> {
    if let Ok(a) = obj.extract::<i64>() {
        return Ok(vec![a]);
    }
    obj.extract::<Vec<i64>>().map_err(|_| PyTypeError::new_err(format!("{what} must be a sequence of ints")))
}

pub fn dims(shape: &[i64], op: &str) -> PyResult<Vec<usize>> {
    shape
        .iter()
        .map(|&d| {
            if d <= 0 {
                Err(crate::errors::af_err(
                    "ShapeError",
                    located(format!("{op}: shape {shape:?} has a dimension {d}; every dimension must be >= 1")),
                ))
            } else {
                Ok(d as usize)
            }
        })
        .collect()
}
