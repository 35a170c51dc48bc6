//! `af.Tensor`: a lazy graph value. Methods and operators delegate to the
//! free functions in `functions.rs`, which delegate to the core builder.

use crate::convert::{build, shape_arg, tensor_like};
use crate::functions as f;
use aneforge::builder as b;
use aneforge::Tensor;
use pyo3::exceptions::{PyIndexError, PyTypeError};
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::{PyEllipsis, PySlice, PyTuple};

#[pyclass(name = "Tensor", module = "aneforge", frozen)]
pub struct PyTensor {
    pub t: Tensor,
}

impl PyTensor {
    pub fn new(t: Tensor) -> PyTensor {
        PyTensor { t }
    }
}

type R = PyResult<PyTensor>;

fn other(py: Python<'_>, me: &Tensor, o: &Bound<'_, PyAny>) -> PyResult<Tensor> {
    tensor_like(py, o, Some(me), "operand")
}

/// Collects `*shape` given either as separate ints or one sequence.
fn varargs_ints(args: &Bound<'_, PyTuple>, what: &str) -> PyResult<Vec<i64>> {
    if args.len() == 1 {
        return shape_arg(&args.get_item(0)?, what);
    }
    args.iter().map(|a| a.extract::<i64>().map_err(|_| PyTypeError::new_err(format!("{what} must be ints")))).collect()
}

#[pymethods]
impl PyTensor {
    /// `None` makes numpy defer binary operators to the Tensor, so
    /// `ndarray * x` and `ndarray @ x` build graph nodes instead of an object
    /// array of Tensors.
    #[classattr]
    fn __array_ufunc__() -> Option<()> {
        None
    }
    #[getter]
    fn shape(&self) -> Vec<usize> {
        self.t.shape().to_vec()
    }
    #[getter]
    fn dtype(&self) -> &'static str {
        self.t.dtype().name()
    }
    #[getter]
    fn name(&self) -> Option<String> {
        self.t.name().map(str::to_string)
    }
    #[getter]
    fn ndim(&self) -> usize {
        self.t.rank()
    }
    #[getter]
    fn op(&self) -> String {
        self.t.op().name()
    }
    /// Where the user's code built this tensor ("file.py:12"), if known.
    #[getter]
    fn origin(&self) -> Option<String> {
        self.t.node().origin.clone()
    }
    #[getter(T)]
    fn t_(&self) -> R {
        let r = self.t.rank();
        let perm: Vec<usize> = (0..r).rev().collect();
        Python::attach(|py| build(py, || b::transpose(&self.t, &perm))).map(PyTensor::new)
    }
    /// The values of a parameter (the trained ones, after training) or a
    /// constant, as a float32 array.
    fn numpy<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::train::values_of(py, &self.t)
    }
    fn __repr__(&self) -> String {
        let shape: Vec<String> = self.t.shape().iter().map(|d| d.to_string()).collect();
        format!(
            "Tensor(op={}, shape=({}{}), dtype={}{})",
            self.t.op().name(),
            shape.join(", "),
            if shape.len() == 1 { "," } else { "" },
            self.t.dtype(),
            self.t.name().map(|n| format!(", name={n:?}")).unwrap_or_default()
        )
    }
    fn __len__(&self) -> PyResult<usize> {
        self.t.shape().first().copied().ok_or_else(|| PyTypeError::new_err("len() of a 0-d tensor"))
    }
    fn __bool__(&self) -> PyResult<bool> {
        Err(PyTypeError::new_err(
            "an af.Tensor has no truth value while the graph is being built; compile it and inspect the numpy result",
        ))
    }
    fn __hash__(&self) -> u64 {
        self.t.id()
    }

    fn __add__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> R {
        let o = other(py, &self.t, o)?;
        build(py, || b::add(&self.t, &o)).map(PyTensor::new)
    }
    fn __radd__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> R {
        let o = other(py, &self.t, o)?;
        build(py, || b::add(&o, &self.t)).map(PyTensor::new)
    }
    fn __sub__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> R {
        let o = other(py, &self.t, o)?;
        build(py, || b::sub(&self.t, &o)).map(PyTensor::new)
    }
    fn __rsub__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> R {
        let o = other(py, &self.t, o)?;
        build(py, || b::sub(&o, &self.t)).map(PyTensor::new)
    }
    fn __mul__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> R {
        let o = other(py, &self.t, o)?;
        build(py, || b::mul(&self.t, &o)).map(PyTensor::new)
    }
    fn __rmul__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> R {
        let o = other(py, &self.t, o)?;
        build(py, || b::mul(&o, &self.t)).map(PyTensor::new)
    }
    fn __truediv__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> R {
        let o = other(py, &self.t, o)?;
        build(py, || b::div(&self.t, &o)).map(PyTensor::new)
    }
    fn __rtruediv__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> R {
        let o = other(py, &self.t, o)?;
        build(py, || b::div(&o, &self.t)).map(PyTensor::new)
    }
    fn __pow__(&self, py: Python<'_>, o: &Bound<'_, PyAny>, _m: Option<&Bound<'_, PyAny>>) -> R {
        // x ** 2 is a square (cheaper and exact for negative x on the engine).
        if let Ok(e) = o.extract::<f64>() {
            if e == 2.0 {
                return build(py, || b::square(&self.t)).map(PyTensor::new);
            }
        }
        let o = other(py, &self.t, o)?;
        build(py, || b::pow(&self.t, &o)).map(PyTensor::new)
    }
    fn __rpow__(&self, py: Python<'_>, o: &Bound<'_, PyAny>, _m: Option<&Bound<'_, PyAny>>) -> R {
        let o = other(py, &self.t, o)?;
        build(py, || b::pow(&o, &self.t)).map(PyTensor::new)
    }
    fn __matmul__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> R {
        let o = other(py, &self.t, o)?;
        build(py, || b::matmul(&self.t, &o)).map(PyTensor::new)
    }
    fn __rmatmul__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> R {
        let o = other(py, &self.t, o)?;
        build(py, || b::matmul(&o, &self.t)).map(PyTensor::new)
    }
    fn __neg__(&self, py: Python<'_>) -> R {
        build(py, || b::neg(&self.t)).map(PyTensor::new)
    }
    fn __pos__(&self) -> PyTensor {
        PyTensor::new(self.t.clone())
    }
    fn __abs__(&self, py: Python<'_>) -> R {
        build(py, || b::abs(&self.t)).map(PyTensor::new)
    }
    fn __invert__(&self, py: Python<'_>) -> R {
        build(py, || b::logical_not(&self.t)).map(PyTensor::new)
    }
    /// `<`, `<=`, `>`, `>=` build comparisons; `==` / `!=` keep Python's
    /// identity semantics (use `af.equal`) so tensors stay hashable.
    fn __richcmp__(&self, py: Python<'_>, o: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let f = match op {
            CompareOp::Lt => b::less,
            CompareOp::Le => b::less_equal,
            CompareOp::Gt => b::greater,
            CompareOp::Ge => b::greater_equal,
            CompareOp::Eq => {
                let same = o.cast::<PyTensor>().map(|t| t.get().t.ptr_eq(&self.t)).unwrap_or(false);
                return Ok(pyo3::types::PyBool::new(py, same).to_owned().into_any().unbind());
            }
            CompareOp::Ne => {
                let same = o.cast::<PyTensor>().map(|t| t.get().t.ptr_eq(&self.t)).unwrap_or(false);
                return Ok(pyo3::types::PyBool::new(py, !same).to_owned().into_any().unbind());
            }
        };
        let o = other(py, &self.t, o)?;
        let t = build(py, || f(&self.t, &o))?;
        Ok(Py::new(py, PyTensor::new(t))?.into_any())
    }

    /// numpy indexing with ints, slices, None and `...` (no tensor indices).
    fn __getitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> R {
        let items: Vec<Bound<'_, PyAny>> = match key.cast::<PyTuple>() {
            Ok(t) => t.iter().collect(),
            Err(_) => vec![key.clone()],
        };
        let rank = self.t.rank();
        let consumed = items.iter().filter(|i| !i.is_none() && !i.is_instance_of::<PyEllipsis>()).count();
        if consumed > rank {
            return Err(PyIndexError::new_err(format!("too many indices: {consumed} for a tensor of rank {rank}")));
        }
        let mut ranges = vec![];
        let mut squeeze_axes = vec![];
        let mut new_axes = vec![]; // positions in the output (after squeeze) where None inserts an axis
        let mut out_pos = 0usize;
        let mut ax = 0usize;
        for it in &items {
            if it.is_none() {
                new_axes.push(out_pos);
                out_pos += 1;
            } else if it.is_instance_of::<PyEllipsis>() {
                let n = rank - consumed;
                for _ in 0..n {
                    ranges.push((None, None, 1));
                    ax += 1;
                    out_pos += 1;
                }
            } else if let Ok(s) = it.cast::<PySlice>() {
                let get = |n: &str| -> PyResult<Option<i64>> {
                    let v = s.getattr(n)?;
                    if v.is_none() {
                        Ok(None)
                    } else {
                        v.extract::<i64>().map(Some).map_err(|_| PyTypeError::new_err("slice bounds must be ints"))
                    }
                };
                ranges.push((get("start")?, get("stop")?, get("step")?.unwrap_or(1)));
                ax += 1;
                out_pos += 1;
            } else if let Ok(i) = it.extract::<i64>() {
                let d = self.t.shape()[ax] as i64;
                let j = if i < 0 { i + d } else { i };
                if j < 0 || j >= d {
                    return Err(PyIndexError::new_err(format!("index {i} is out of bounds for axis {ax} with size {d}")));
                }
                ranges.push((Some(j), Some(j + 1), 1));
                squeeze_axes.push(ax as i64);
                ax += 1;
            } else {
                return Err(PyTypeError::new_err(
                    "tensors are indexed with ints, slices, None and ...; use af.gather for index arrays",
                ));
            }
        }
        let t = build(py, || {
            let mut y = b::slice(&self.t, &ranges)?;
            if !squeeze_axes.is_empty() {
                y = b::squeeze(&y, Some(&squeeze_axes))?;
            }
            for &p in &new_axes {
                y = b::expand_dims(&y, p as i64)?;
            }
            Ok(y)
        })?;
        Ok(PyTensor::new(t))
    }

    /// `x.reshape(2, -1)` or `x.reshape((2, -1))`.
    #[pyo3(signature = (*shape))]
    fn reshape(&self, py: Python<'_>, shape: &Bound<'_, PyTuple>) -> R {
        let s = varargs_ints(shape, "shape")?;
        build(py, || b::reshape_spec(&self.t, &s)).map(PyTensor::new)
    }
    /// `x.transpose()` reverses axes; `x.transpose(0, 2, 1)` or a tuple permutes.
    #[pyo3(signature = (*perm))]
    fn transpose(&self, py: Python<'_>, perm: &Bound<'_, PyTuple>) -> R {
        let p = if perm.is_empty() { None } else { Some(varargs_ints(perm, "perm")?) };
        build(py, || b::permute(&self.t, p.as_deref())).map(PyTensor::new)
    }
    #[pyo3(signature = (start=0, end=-1))]
    fn flatten(&self, py: Python<'_>, start: i64, end: i64) -> R {
        build(py, || b::flatten(&self.t, start, end)).map(PyTensor::new)
    }
    #[pyo3(signature = (axes=None))]
    fn squeeze(&self, py: Python<'_>, axes: Option<&Bound<'_, PyAny>>) -> R {
        f::squeeze(py, self, axes)
    }
    fn expand_dims(&self, py: Python<'_>, axis: i64) -> R {
        build(py, || b::expand_dims(&self.t, axis)).map(PyTensor::new)
    }
    fn cast(&self, py: Python<'_>, dtype: &str) -> R {
        f::cast(py, self, dtype)
    }
    fn astype(&self, py: Python<'_>, dtype: &str) -> R {
        f::cast(py, self, dtype)
    }
    fn broadcast_to(&self, py: Python<'_>, shape: Vec<usize>) -> R {
        build(py, || b::broadcast_to(&self.t, &shape)).map(PyTensor::new)
    }
    fn tile(&self, py: Python<'_>, reps: Vec<usize>) -> R {
        build(py, || b::tile(&self.t, &reps)).map(PyTensor::new)
    }
    #[pyo3(signature = (axis=-1))]
    fn softmax(&self, py: Python<'_>, axis: i64) -> R {
        build(py, || b::softmax(&self.t, axis)).map(PyTensor::new)
    }
    #[pyo3(signature = (axis=-1))]
    fn log_softmax(&self, py: Python<'_>, axis: i64) -> R {
        build(py, || b::log_softmax(&self.t, axis)).map(PyTensor::new)
    }
    #[pyo3(signature = (lo, hi))]
    fn clip(&self, py: Python<'_>, lo: f32, hi: f32) -> R {
        build(py, || b::clip(&self.t, lo, hi)).map(PyTensor::new)
    }
    #[pyo3(signature = (mode="exact"))]
    fn gelu(&self, py: Python<'_>, mode: &str) -> R {
        build(py, || b::gelu(&self.t, mode)).map(PyTensor::new)
    }
    #[pyo3(signature = (alpha=0.01))]
    fn leaky_relu(&self, py: Python<'_>, alpha: f32) -> R {
        build(py, || b::leaky_relu(&self.t, alpha)).map(PyTensor::new)
    }
    #[pyo3(signature = (alpha=1.0))]
    fn elu(&self, py: Python<'_>, alpha: f32) -> R {
        build(py, || b::elu(&self.t, alpha)).map(PyTensor::new)
    }
    fn matmul(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> R {
        self.__matmul__(py, o)
    }
    #[pyo3(signature = (axis=0, exclusive=false, reverse=false))]
    fn cumsum(&self, py: Python<'_>, axis: i64, exclusive: bool, reverse: bool) -> R {
        build(py, || b::cumsum(&self.t, axis, exclusive, reverse)).map(PyTensor::new)
    }
}

macro_rules! unary_methods {
    ($($name:ident),*) => {
        #[pymethods]
        impl PyTensor {
            $(
                fn $name(&self, py: Python<'_>) -> R {
                    build(py, || b::$name(&self.t)).map(PyTensor::new)
                }
            )*
        }
    };
}

unary_methods!(
    relu, relu6, silu, sigmoid, hard_swish, softplus, softsign, tanh, exp, exp2, log, sqrt, rsqrt, reciprocal,
    square, abs, sign, neg, sin, cos, atan, erf, floor, ceil, round, logical_not
);

macro_rules! reduce_methods {
    ($($name:ident => $kind:ident),*) => {
        #[pymethods]
        impl PyTensor {
            $(
                #[pyo3(signature = (axes=None, keepdims=false))]
                fn $name(&self, py: Python<'_>, axes: Option<&Bound<'_, PyAny>>, keepdims: bool) -> R {
                    let a = crate::convert::axes(axes)?;
                    build(py, || b::reduce(&self.t, aneforge::ops::ReduceKind::$kind, a.as_deref(), keepdims)).map(PyTensor::new)
                }
            )*
        }
    };
}

reduce_methods!(
    sum => Sum, mean => Mean, max => Max, min => Min, prod => Prod, l1_norm => L1Norm, l2_norm => L2Norm,
    sum_square => SumSquare, log_sum => LogSum, log_sum_exp => LogSumExp
);
